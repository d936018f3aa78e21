"""TensorRT Edge-LLM's commands and outputs (edgekit.edgellm): its device tools never ran
here, so their outputs below are composed from their sources (docs/tensorrt.md says which)."""

from __future__ import annotations

import pytest

from edgekit.edgellm import (
    bench_csv_name,
    export_command,
    llm_bench_command,
    llm_build_command,
    parse_llm_bench_csv,
    parse_llm_build_log,
    support_problem,
)
from edgekit.errors import EdgekitError

# llm_bench's E2E CSV as its benchLogger writes it (std::fixed, 4 decimals): header, one row
DECODE = "mode,batch_size,osl,e2e_time_ms,per_token_ms,throughput_tps,past_kv_len\ndecode,1,1,13.7363,13.7363,72.8000,2048\n"
PREFILL = "mode,batch_size,osl,e2e_time_ms,per_token_ms,throughput_tps,input_len\nprefill,1,1,64.0000,0.1250,8000.0000,512\n"
BUILD_LOG = """[10:00:00.001] [INFO] [llm_build.cpp:120:main] Using TRT_VERSION=10.3.0
[10:00:00.002] [INFO] [llmBuilder.cpp:88:build] Parsing ONNX model: /e/onnx/llm/model.onnx
[10:03:10.500] [INFO] [llmBuilder.cpp:301:build] Engine saved to /e/engines/llm/llm.engine
[10:03:10.600] [INFO] [llm_build.cpp:160:main] LLM engine built successfully.
"""


def test_commands():
    assert export_command("/v", "ckpt", "out") == ["/v/bin/tensorrt-edgellm-export", "ckpt", "out"]
    assert export_command("/v", "c", "o", externalize_int4_ffn=True)[-2:] == ["--externalize-weights", "int4_ffn"]
    assert llm_build_command("llm_build", "o/llm", "e", max_input_len=512, max_kv_cache=4096) == [
        "llm_build", "--onnxDir", "o/llm", "--engineDir", "e", "--maxBatchSize", "1", "--maxInputLen", "512",
        "--maxKVCacheCapacity", "4096"]
    with pytest.raises(EdgekitError, match="make no engine"):
        llm_build_command("llm_build", "o", "e", max_input_len=5000, max_kv_cache=4096)
    argv = llm_bench_command("llm_bench", "e", "decode", 2048, "out")
    assert argv[3:7] == ["--mode", "decode", "--pastKVLen", "2048"] and argv[-2:] == ["--outputDir", "out"]
    assert llm_bench_command("llm_bench", "e", "prefill", 512, "o")[5:7] == ["--inputLen", "512"]
    assert bench_csv_name("decode", 2048) == "e2e_decode_pastkvlen2048.csv"


def test_build_log():
    facts = parse_llm_build_log(BUILD_LOG)
    assert (facts.tensorrt_version, facts.succeeded, facts.engine) == ("10.3.0", True, "/e/engines/llm/llm.engine")
    failed = parse_llm_build_log(BUILD_LOG.replace("LLM engine built successfully.", "Failed to build LLM engine."))
    assert not failed.succeeded


def test_bench_csv_rows_are_checked():
    d = parse_llm_bench_csv(DECODE)
    assert (d.mode, d.length, d.e2e_time_ms, d.throughput_tps) == ("decode", 2048, 13.7363, 72.8)
    p = parse_llm_bench_csv(PREFILL)
    assert p.mode == "prefill" and p.length == 512 and p.throughput_tps == 8000.0
    bad = {
        DECODE.replace("13.7363,13.7363,72.8000", "nan,nan,nan"): "e2e_time_ms is nan",
        DECODE.replace(",72.8000,", ",-1.0,"): "throughput_tps is -1.0",
        DECODE.replace(",72.8000,", ",900.0,"): "its times disagree",
        DECODE.replace("decode,1", "spec_verify,1"): "is not prefill or decode",
        DECODE + "decode,1,1,13.7,13.7,72.9,2048\n": "holds 2 data rows",
        DECODE.replace(",past_kv_len", ",ctx"): "lacks the columns past_kv_len",
    }
    for text, why in bad.items():
        with pytest.raises(EdgekitError, match=why):
            parse_llm_bench_csv(text)


def test_support_matrix():
    assert support_problem("R38.2.0", "0.11.0", "int4") is None
    assert "JetPack 7.2 only" in support_problem("R36.4.3", "0.11.0", "fp16")
    assert support_problem("R36.4.3", "0.10.0", "fp16") is None
    assert "JetPack 5" in support_problem("R35.5.0", "0.10.0", "fp16")
    assert "not fp8" in support_problem("R38.2.0", "0.11.0", "fp8")
    assert support_problem(None, "0.11.0", "int4") is None
