"""TensorRT engines: profiles from the model's own dims, trtexec's command and output, the INT4
form TensorRT's parser takes, and real builds with TensorRT-RTX (which needs no GPU; its
engines run on RTX GPUs only, never here). No engine runs in these tests: nothing here has a GPU."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import assert_one_line_error

from edgekit.cli import cli
from edgekit.converters.onnx_int4 import quantize_int4_qdq
from edgekit.converters.tensorrt import (
    check_dims,
    decoder_inputs,
    genai_dims_of,
    graph_precision,
    parse_trtexec_log,
    plan_accelerators,
    trtexec_command,
)
from edgekit.errors import EdgekitError
from edgekit.runners.onnxruntime import load_graph
from edgekit.tensorrt_profiles import GraphInput, derive_profiles, ort_tensorrt_options

FIXTURES = Path(__file__).parent / "fixtures" / "tensorrt"
try:
    import tensorrt_rtx as trt_rtx
except ImportError:  # the pure tests still run; the builds need it
    trt_rtx = None
needs_rtx = pytest.mark.skipif(trt_rtx is None, reason="pip install tensorrt-rtx (make test installs it)")


def invoke(args):
    return CliRunner().invoke(cli, args)


# ---------------------------------------------------------------- profiles


def test_profiles_follow_each_models_own_dims(onnx_export, tiny_qwen2, tmp_path, monkeypatch):
    """The tiny Qwen2 and a Llama of other layer, kv-head and head-dim counts (3 layers, 1 KV
    head of 32): each graph's cache inputs get that model's shapes, in both profiles; the
    prefill has an empty cache, the decode one token."""
    from edgekit import synth

    other = tmp_path / "llama-3x1x32"
    monkeypatch.setitem(synth.PRESETS, "llama-3x1x32", synth.Preset("llama-3x1x32", "llama3", synth._l(
        hidden_size=128, intermediate_size=256, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=1,
        head_dim=32, vocab_size=None), tokenizer_vocab=1024))
    synth.synthesize("llama-3x1x32", other, seed=3)
    seen = {}
    for ckpt in (tiny_qwen2, other):
        folder, _ = onnx_export(ckpt, "fp16")
        inputs = decoder_inputs(folder / "model.onnx")
        dims = genai_dims_of(folder / "model.onnx")
        check_dims(inputs, dims)
        prefill, decode = derive_profiles(inputs, max_prompt=48, max_context=300)
        past = [n for n in prefill.shapes if n.startswith("past_key_values.")]
        assert len(past) == 2 * dims.layers
        assert prefill.shapes["input_ids"] == ((1, 1), (1, 48), (1, 48))
        assert prefill.shapes["attention_mask"] == ((1, 1), (1, 48), (1, 48))  # past + sequence, past 0
        assert prefill.shapes[past[0]] == ((1, dims.kv_heads, 0, dims.head_size),) * 3
        assert decode.shapes["input_ids"] == ((1, 1),) * 3
        assert decode.shapes["attention_mask"] == ((1, 1), (1, 151), (1, 300))
        kv, hd = dims.kv_heads, dims.head_size
        assert decode.shapes[past[-1]] == ((1, kv, 0, hd), (1, kv, 150, hd), (1, kv, 299, hd))
        seen[ckpt.name] = (dims.layers, kv, hd)
    assert seen == {"tiny-qwen2": (2, 2, 64), "llama-3x1x32": (3, 1, 32)}


def test_profiles_refuse_what_they_cannot_size():
    ids = GraphInput("input_ids", ("batch_size", "sequence_length"), 7)
    odd = GraphInput("past_key_values.0.key", ("batch_size", 2, "cache_len", 64), 10)
    with pytest.raises(EdgekitError, match="dim 'cache_len'"):
        derive_profiles([ids, odd], 16, 64)
    with pytest.raises(EdgekitError, match="--max-prompt 65 and --max-context 64"):
        derive_profiles([ids], 65, 64)
    with pytest.raises(EdgekitError, match="no dynamic input_ids"):
        derive_profiles([GraphInput("x", (1, 4), 1)], 16, 64)


def test_a_graph_that_disagrees_with_its_model_is_refused(onnx_export, tiny_qwen2):
    from dataclasses import replace

    folder, _ = onnx_export(tiny_qwen2, "fp16")
    inputs, dims = decoder_inputs(folder / "model.onnx"), genai_dims_of(folder / "model.onnx")
    with pytest.raises(EdgekitError, match=f"the model {dims.layers + 1} layers"):
        check_dims(inputs, replace(dims, layers=dims.layers + 1))
    with pytest.raises(EdgekitError, match=f"cache is \\[batch, {dims.kv_heads + 1}, past"):
        check_dims(inputs, replace(dims, kv_heads=dims.kv_heads + 1))


# ---------------------------------------------------------------- trtexec


def test_trtexec_command_has_one_triple_per_profile():
    ids = GraphInput("input_ids", ("batch_size", "sequence_length"), 7)
    mask = GraphInput("attention_mask", ("batch_size", "past_sequence_length + sequence_length"), 7)
    k = GraphInput("past_key_values.0.key", ("batch_size", 2, "past_sequence_length", 64), 10)
    argv = trtexec_command("/usr/src/tensorrt/bin/trtexec", "m.onnx", "m.engine",
                           derive_profiles([ids, mask, k], 8, 32), workspace_mib=2048)
    assert argv[:5] == ["/usr/src/tensorrt/bin/trtexec", "--onnx=m.onnx", "--saveEngine=m.engine", "--stronglyTyped",
                        "--skipInference"]
    i = argv.index("--profile=1")
    assert argv[argv.index("--profile=0") + 1:i] == [
        "--minShapes=input_ids:1x1,attention_mask:1x1,past_key_values.0.key:1x2x0x64",
        "--optShapes=input_ids:1x8,attention_mask:1x8,past_key_values.0.key:1x2x0x64",
        "--maxShapes=input_ids:1x8,attention_mask:1x8,past_key_values.0.key:1x2x0x64"]
    assert argv[i + 3] == "--maxShapes=input_ids:1x1,attention_mask:1x32,past_key_values.0.key:1x2x31x64"
    assert argv[-1] == "--memPoolSize=workspace:2048M"


def test_trtexec_output_names_the_version_gpu_and_result():
    text = (FIXTURES / "trtexec-10.3-orin-build.txt").read_text()
    facts = parse_trtexec_log(text)
    assert (facts.tensorrt_version, facts.device, facts.compute_capability) == ("10.3.0", "Orin", "8.7")
    assert facts.passed and facts.engine_built and facts.errors == []
    failed = parse_trtexec_log(text.replace("&&&& PASSED", "&&&& FAILED").replace(
        "[I] Engine built in 273.506 sec.", "[E] Error[4]: [network.cpp::validate::3111] profile has no past"))
    assert not failed.passed and failed.errors and "profile has no past" in failed.errors[0]
    assert parse_trtexec_log("&&&& RUNNING TensorRT.trtexec [TensorRT v8601] # trtexec").tensorrt_version == "8.6.1"
    assert parse_trtexec_log("no banner").tensorrt_version is None


def test_onnx_runtimes_tensorrt_ep_gets_both_profiles_and_caches(tmp_path):
    """ORT's format: one string per bound, each profile's inputs in turn (an input named again
    starts the next profile); the prefill may continue a cache (ORT's runner feeds prompts in
    n_batch chunks). Other providers pass unchanged."""
    from edgekit.runners.onnxruntime import provider_options

    ids = GraphInput("input_ids", ("batch_size", "sequence_length"), 7)
    mask = GraphInput("attention_mask", ("batch_size", "total_sequence_length"), 7)  # GenAI's builder's name
    k = GraphInput("past_key_values.0.key", ("batch_size", 2, "past_sequence_length", 64), 10)
    got = provider_options(["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
                           [ids, mask, k], max_context=1024, n_batch=256, cache_dir=tmp_path)
    (name, opts), cuda, cpu = got
    assert (name, cuda, cpu) == ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
    assert opts["trt_profile_min_shapes"] == ("input_ids:1x1,attention_mask:1x1,past_key_values.0.key:1x2x0x64,"
                                              "input_ids:1x1,attention_mask:1x1,past_key_values.0.key:1x2x0x64")
    assert opts["trt_profile_max_shapes"] == ("input_ids:1x256,attention_mask:1x1024,past_key_values.0.key:1x2x768x64,"
                                              "input_ids:1x1,attention_mask:1x1024,past_key_values.0.key:1x2x1023x64")
    assert opts["trt_profile_opt_shapes"].split(",")[3:] == ["input_ids:1x1", "attention_mask:1x513",
                                                             "past_key_values.0.key:1x2x512x64"]
    assert opts["trt_engine_cache_enable"] == "True" and opts["trt_engine_cache_path"] == str(tmp_path)
    assert ort_tensorrt_options(derive_profiles([ids], 4, 8))["trt_profile_max_shapes"] == "input_ids:1x4,input_ids:1x1"
    assert provider_options(["CPUExecutionProvider"], [ids], 64, 16, tmp_path) == ["CPUExecutionProvider"]


# ---------------------------------------------------------------- the INT4 form TensorRT takes


def test_int4_form_tensorrt_takes_and_the_ones_it_refuses(onnx_export, tiny_qwen2, tmp_path):
    """Blocked signed INT4 DequantizeLinear without zero points is int4; ONNX Runtime's
    MatMulNBits (edgekit's default INT4 export), --fuse's contrib ops and asymmetric (UINT4)
    blocks are each named."""
    fp16, _ = onnx_export(tiny_qwen2, "fp16")
    assert graph_precision(load_graph(fp16 / "model.onnx")) == ("fp16", [])
    qdq = tmp_path / "qdq.onnx"
    quantize_int4_qdq(fp16 / "model.onnx", qdq, 32)
    assert graph_precision(load_graph(qdq)) == ("int4", [])
    nbits, _ = onnx_export(tiny_qwen2, "int4")
    precision, problems = graph_precision(load_graph(nbits / "model.onnx"))
    assert precision == "int4" and "ONNX Runtime's own ops (MatMulNBits)" in problems[0]
    asym, _ = onnx_export(tiny_qwen2, "int4", symmetric=False)
    import onnx
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    q = MatMulNBitsQuantizer(onnx.load(str(fp16 / "model.onnx")), algo_config=DefaultWeightOnlyQuantConfig(
        block_size=32, is_symmetric=False, quant_format=QuantFormat.QDQ, op_types_to_quantize=("MatMul",)))
    q.process()
    assert "is UINT4 (asymmetric blocks)" in graph_precision(q.model.model)[1][0]


# ---------------------------------------------------------------- real builds (TensorRT-RTX)


@pytest.fixture(scope="module")
def rtx_builds(onnx_export, tiny_qwen2, tmp_path_factory):
    """`edgekit export tensorrt` of the tiny Qwen2's FP16 export at fp16 and int4, by TensorRT-RTX for SM86."""
    fp16, _ = onnx_export(tiny_qwen2, "fp16")
    out = tmp_path_factory.mktemp("trt")
    for precision in ("fp16", "int4"):
        r = invoke(["export", "tensorrt", str(fp16), "-o", str(out / precision), "--precision", precision,
                    "--builder", "tensorrt-rtx", "--sm", "SM86", "--max-prompt", "32", "--max-context", "128"])
        assert r.exit_code == 0, r.output
        assert "runs only with TensorRT-RTX" in r.output
    return fp16, out


@needs_rtx
def test_rtx_builds_fp16_and_int4_engines_with_their_manifest(rtx_builds):
    from edgekit.manifest import ExportManifest, sha256_of

    fp16_onnx, out = rtx_builds
    sizes = {}
    for precision in ("fp16", "int4"):
        folder = out / precision
        m = ExportManifest.read(folder)
        engine = folder / "model.engine"
        assert m.format == "tensorrt" and m.files[0].file == "model.engine" and m.files[0].sha256 == sha256_of(engine)
        assert engine.read_bytes()[:4] == b"vtrt"  # TensorRT-RTX's plan magic
        assert plan_accelerators(engine.read_bytes()) == m.engine.accelerators == ["sm86"]
        assert m.engine.precision == precision and m.engine.max_context == 128
        # the graph and its weights (model.onnx_data), as built from
        assert m.engine.source_onnx_sha256 == sha256_of(fp16_onnx / "model.onnx", 8 << 20,
                                                        fp16_onnx / "model.onnx_data")
        assert [p["name"] for p in m.engine.profiles] == ["prefill", "decode"]
        assert m.engine.tensorrt_version == trt_rtx.__version__ and "never on a Jetson" in m.engine.runs_only_on
        assert (folder / "tokenizer.json").is_file() and (folder / "genai_config.json").is_file()
        assert "[INFO]" in (folder / "build.log").read_text()
        assert not list(out.glob(f".{precision}*"))  # no partial folder left
        sizes[precision] = engine.stat().st_size
    assert sizes["int4"] < 0.8 * sizes["fp16"]  # INT4 weights, stored once; FP16 ones once per profile
    from edgekit.formats import get_format

    m = ExportManifest.read(out / "fp16")
    facts = get_format("tensorrt").facts(out / "fp16" / "model.engine")
    embedding = m.vocab_size * 256  # the tiny Qwen2's hidden size: a lookup, not read whole per token
    assert facts.weight_bytes_per_token == 2 * (m.n_params - embedding)
    assert facts.kv_bytes_per_position == 2 * 2 * 2 * 64 * 2 and facts.context_length == 128
    assert ExportManifest.read(out / "int4").engine.block_size == 32


@needs_rtx
def test_inspect_reads_an_engine_folder(rtx_builds):
    _, out = rtx_builds
    r = invoke(["inspect", str(out / "int4"), "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    model = d["model"]
    assert model["format"] == "tensorrt" and model["quant"] == "INT4" and model["max_context"] == 128
    assert model["profiles"]["decode"]["attention_mask"] == "1x1..1x128 (opt 1x65)"
    assert model["profiles"]["prefill"]["past_key_values.* (4)"] == "1x2x0x64..1x2x0x64 (opt 1x2x0x64)"
    assert "runs only with TensorRT-RTX" in model["runs_only_on"] and "profiles" not in d["engine"]
    # a truncated engine is caught by its recorded size
    engine = out / "int4" / "model.engine"
    data = engine.read_bytes()
    engine.write_bytes(data[:-10])
    try:
        assert_one_line_error(invoke(["inspect", str(out / "int4")]), "is not the engine the manifest names")
    finally:
        engine.write_bytes(data)


@needs_rtx
def test_a_profile_naming_a_missing_input_fails_the_build(onnx_export, tiny_qwen2, tmp_path):
    """The builder checks every profile input against the network (the check can fail)."""
    from edgekit.converters.tensorrt import build_engine
    from edgekit.tensorrt_profiles import Profile

    fp16, _ = onnx_export(tiny_qwen2, "fp16")
    bad = Profile("prefill", {"input_ids": ((1, 1), (1, 4), (1, 8)), "no_such_input": ((1,), (1,), (1,))})
    with pytest.raises(EdgekitError, match="names no_such_input"):
        build_engine(trt_rtx, fp16 / "model.onnx", tmp_path / "x.engine", [bad])
    assert not (tmp_path / "x.engine").exists()
    with pytest.raises(EdgekitError, match="cannot target SM87"):  # TensorRT-RTX has no Jetson target
        build_engine(trt_rtx, fp16 / "model.onnx", tmp_path / "x.engine",
                     derive_profiles(decoder_inputs(fp16 / "model.onnx"), 8, 32), target_sm="SM87")


@needs_rtx
def test_what_tensorrt_cannot_build_is_one_line_and_nothing_is_written(onnx_export, tiny_qwen2, tmp_path, monkeypatch):
    fp16, _ = onnx_export(tiny_qwen2, "fp16")
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # no TensorRT here, whatever this machine has
    out = tmp_path / "engine"
    assert_one_line_error(invoke(["export", "tensorrt", str(fp16), "-o", str(out)]),
                          "TensorRT is not installed here")
    assert not out.exists() and not list(tmp_path.iterdir())
    nbits, _ = onnx_export(tiny_qwen2, "int4")
    line = assert_one_line_error(invoke(["export", "tensorrt", str(nbits), "-o", str(out), "--builder",
                                         "tensorrt-rtx"]), "TensorRT cannot import")
    assert "MatMulNBits" in line and "--precision fp16" in line and not out.exists()
    fp32, _ = onnx_export(tiny_qwen2, "fp32")
    assert_one_line_error(invoke(["export", "tensorrt", str(fp32), "-o", str(out), "--builder", "tensorrt-rtx",
                                  "--precision", "fp16"]), "is FP32; a TensorRT FP16 engine is built from an FP16 ONNX")
    assert_one_line_error(invoke(["export", "tensorrt", str(fp16), "-o", str(out), "--builder", "tensorrt-rtx",
                                  "--max-context", "100000"]), "beyond the model's trained context")
    assert not out.exists()


# ---------------------------------------------------------------- building on the device (trtexec)


@pytest.fixture
def fake_trtexec(tmp_path, monkeypatch):
    path = tmp_path / "bin" / "trtexec"
    path.parent.mkdir()
    path.write_text(f'#!/bin/sh\nexec {sys.executable} {FIXTURES / "fake_trtexec.py"} "$@"\n')
    path.chmod(0o755)
    calls = tmp_path / "calls.txt"
    calls.write_text("")
    monkeypatch.setenv("FAKE_TRTEXEC_CALLS", str(calls))
    monkeypatch.setenv("PATH", f"{path.parent}:{__import__('os').environ['PATH']}")
    return path, calls


def test_a_device_build_is_cached_by_what_the_engine_depends_on(fake_trtexec, onnx_export, tiny_qwen2, tmp_path,
                                                                 monkeypatch):
    from edgekit.device.tensorrt_build import build_with_trtexec, find_trtexec
    from edgekit.manifest import sha256_of

    trtexec, calls = fake_trtexec
    assert find_trtexec() == str(trtexec)
    fp16, _ = onnx_export(tiny_qwen2, "fp16")
    onnx = fp16 / "model.onnx"
    profiles = derive_profiles(decoder_inputs(onnx), 32, 128)
    cache = tmp_path / "engines"
    lines = []
    kw = dict(onnx_sha256=sha256_of(onnx), precision="fp16", workspace_mib=1024)
    first = build_with_trtexec(str(trtexec), onnx, cache, profiles, on_line=lines.append, **kw)
    assert not first["cached"] and (first["tensorrt_version"], first["device"], first["compute_capability"]) == \
        ("10.3.0", "Orin", "8.7")
    assert any("Selected Device: Orin" in ln for ln in lines)  # streamed as trtexec prints
    folder = Path(first["folder"])
    assert folder.parent == cache and (folder / "model.engine").is_file() and (folder / "build.log").is_file()
    (argv,) = calls.read_text().splitlines()
    assert "--stronglyTyped" in argv and "--profile=1" in argv and "--memPoolSize=workspace:1024M" in argv
    again = build_with_trtexec(str(trtexec), onnx, cache, profiles, **kw)
    assert again["cached"] and again["engine_sha256"] == first["engine_sha256"]
    assert len(calls.read_text().splitlines()) == 1  # skipped: nothing ran
    # an engine changed since is not trusted; other profiles are another engine
    (folder / "model.engine").write_bytes(b"changed")
    assert not build_with_trtexec(str(trtexec), onnx, cache, profiles, **kw)["cached"]
    other = build_with_trtexec(str(trtexec), onnx, cache, derive_profiles(decoder_inputs(onnx), 16, 128), **kw)
    assert not other["cached"] and other["key"] != first["key"] and len(calls.read_text().splitlines()) == 3
    # a failed build: the one line names trtexec's error and the kept log; no cache folder appears
    monkeypatch.setenv("FAKE_TRTEXEC_FAIL", "[network.cpp::validate] past_key_values.0.key: dims out of range")
    with pytest.raises(EdgekitError, match=r"trtexec could not build the engine: .*dims out of range.*failed-build.log"):
        build_with_trtexec(str(trtexec), onnx, cache, derive_profiles(decoder_inputs(onnx), 8, 128), **kw)
    assert sorted(p.name for p in cache.iterdir() if not p.name.endswith(".log")) == sorted(
        [first["key"], other["key"]])
    monkeypatch.delenv("FAKE_TRTEXEC_FAIL")
    monkeypatch.setenv("FAKE_TRTEXEC_HANG", "1")  # silent after its banner: the timeout still ends it
    import time
    t0 = time.monotonic()
    with pytest.raises(EdgekitError, match=r"within 1 s \(log: .*failed-build.log"):
        build_with_trtexec(str(trtexec), onnx, cache, derive_profiles(decoder_inputs(onnx), 4, 128), timeout_s=1, **kw)
    assert time.monotonic() - t0 < 30


def test_a_devices_build_result_is_checked_field_by_field():
    """What the device prints back is untrusted: each field must be what edgekit's builder prints,
    and the engine must lie where its key says, in the remote folder deploy made."""
    from edgekit.device.tensorrt_remote import parse_build_result

    good = {"key": "0123456789abcdef0123", "engine_sha256": "ab" * 32, "engine_bytes": 1234, "tensorrt_version": "10.3.0",
            "device": "Orin", "compute_capability": "8.7", "cached": False, "build_s": 12.5, "builder": "trtexec",
            "folder": "/r/engines/0123456789abcdef0123"}
    out = "build: [I] ...\nresult " + json.dumps(good) + "\n"
    assert parse_build_result(out, "/r")["engine_bytes"] == 1234
    assert parse_build_result("result " + json.dumps({**good, "device": "Orin\x1b]0;pwned\x07"}), "/r")["device"] == "Orin"
    bad = {"key": "../../etc", "engine_sha256": "zz", "engine_bytes": -1, "tensorrt_version": "10.3; rm -rf",
           "compute_capability": "x", "cached": "yes", "build_s": float("inf"), "folder": "/elsewhere/engines/x",
           "builder": "tensorrt; rm -rf ~"}
    for field, value in bad.items():
        with pytest.raises(EdgekitError, match=f"bad {field}"):
            parse_build_result("result " + json.dumps({**good, field: value}), "/r")
    with pytest.raises(EdgekitError, match="no result line"):
        parse_build_result("build: done\n", "/r")


def test_trtexec_does_not_outlive_a_killed_builder(fake_trtexec, onnx_export, tiny_qwen2, tmp_path, monkeypatch):
    """kill -9 of the device-side builder mid-build: its trtexec goes with it (PR_SET_PDEATHSIG)."""
    import os
    import signal
    import subprocess
    import time

    from edgekit.manifest import sha256_of

    fp16, _ = onnx_export(tiny_qwen2, "fp16")
    onnx = fp16 / "model.onnx"
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"onnx_sha256": sha256_of(onnx), "precision": "fp16",
                                   "profiles": [p.to_dict() for p in derive_profiles(decoder_inputs(onnx), 8, 64)]}))
    pid_file = tmp_path / "trtexec.pid"
    monkeypatch.setenv("FAKE_TRTEXEC_HANG", "1")
    monkeypatch.setenv("FAKE_TRTEXEC_PID", str(pid_file))
    builder = subprocess.Popen([sys.executable, "-m", "edgekit.device.tensorrt_build", str(onnx),
                                str(tmp_path / "engines"), str(request)], stdout=subprocess.PIPE, text=True)
    assert builder.stdout.readline().startswith("build: &&&& RUNNING")  # trtexec is running, silent now
    trtexec = int(pid_file.read_text())
    builder.send_signal(signal.SIGKILL)
    builder.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(trtexec, 0)
        except ProcessLookupError:
            break
        try:  # reaped by init once it died; a zombie of ours it is not (its parent was the builder)
            if open(f"/proc/{trtexec}/stat").read().split()[2] == "Z":
                break
        except OSError:
            break
        time.sleep(0.1)
    else:
        os.kill(trtexec, signal.SIGKILL)
        raise AssertionError("trtexec outlived its killed builder")


# ---------------------------------------------------------------- the runner (a host-memory CUDA and an engine stand-in)


def _engine_folder(onnx_export, tiny_qwen2, tmp_path, max_prompt=16, max_context=64):
    """An engine folder as `export tensorrt` writes it, whose model.engine the stand-in reads as
    "run this ONNX"; the profiles are the ones a real build gets."""
    from edgekit.converters.tensorrt_export import copy_beside, engine_manifest, prepare

    fp16, _ = onnx_export(tiny_qwen2, "fp16")
    p = prepare(fp16, "fp16", tmp_path / "work", max_prompt=max_prompt, max_context=max_context, block_size=32)
    folder = tmp_path / "engine"
    folder.mkdir()
    (folder / "model.engine").write_bytes(b"stand-in engine")
    copy_beside(p.src_onnx, folder)
    engine_manifest(p, "fp16", builder="trtexec", tensorrt_version="10.3.0", engine_bytes=15, engine_sha256="0" * 64,
                    seconds=0.0, options={}, built_on="this machine", max_prompt=max_prompt,
                    max_context=max_context).write(folder)
    return fp16, folder, p.profiles


def test_choose_profile_takes_the_profile_that_holds_the_step():
    from edgekit.runners.tensorrt import choose_profile

    profiles = [{"input_ids": ((1, 1), (1, 16)), "past": ((1, 2, 0, 64), (1, 2, 0, 64))},
                {"input_ids": ((1, 1), (1, 1)), "past": ((1, 2, 0, 64), (1, 2, 63, 64))}]
    assert choose_profile(profiles, 16, 0) == 0 and choose_profile(profiles, 1, 0) == 0
    assert choose_profile(profiles, 1, 5) == 1 and choose_profile(profiles, 1, 63) == 1
    assert choose_profile(profiles, 17, 0) is None  # a prompt beyond the prefill profile
    assert choose_profile(profiles, 4, 4) is None   # a second prompt chunk: no profile continues a cache
    assert choose_profile(profiles, 1, 64) is None  # past the decode profile's cache


def test_the_tensorrt_runner_generates_what_onnx_runtime_generates(onnx_export, tiny_qwen2, tmp_path):
    """Greedy tokens and logits through the runner (named tensors, two contexts, the cache in two
    device buffer sets swapped per step) equal ONNX Runtime's on the same graph; steps allocate
    nothing; only the logits row a pick needs comes back."""
    from fake_tensorrt import HostCuda, module

    from edgekit.runners.onnxruntime import OrtRunner
    from edgekit.runners.tensorrt import TensorRTRunner

    fp16, folder, profiles = _engine_folder(onnx_export, tiny_qwen2, tmp_path)
    cuda = HostCuda()
    trt = module(fp16 / "model.onnx", profiles, cuda)
    prompt = [5, 17, 300, 2, 9, 44, 1023, 7]
    with OrtRunner(fp16, threads=1) as ort_runner:
        want = ort_runner.generate_greedy(prompt, 12)
        want_logits = ort_runner.logits(np.array(prompt))
    with TensorRTRunner(folder, trt=trt, cuda=cuda) as r:
        assert (r.kv_heads, r.head_dim, len(r.past_names), r.max_prompt, r.max_context) == (2, 64, 4, 16, 64)
        assert r.generate_greedy(prompt, 12) == want
        np.testing.assert_allclose(r.logits(prompt)[-1], want_logits[-1], atol=2e-2)
        r.start(40)
        before = cuda.mallocs
        r.prompt(np.array(prompt))
        first = r.pick()
        for t in range(20):
            r.step(t)
        assert cuda.mallocs == before  # the cache and every buffer were there before the steps
        assert first == want[0]
        row = r.n_vocab * 2  # FP16 logits
        downs = [n for kind, n in cuda.copies if kind == 2]
        assert max(downs) <= len(prompt) * row  # logits(prompt)'s rows at most; a pick: one row
        assert r.result_settings()["tensorrt"]["engine"] == "generic" and r.backend() == "CUDA"
        # a prompt beyond the prefill profile: its second chunk (4 tokens on 16) has no profile,
        # refused in one line, never run out of the engine's bounds
        r.start(40)
        with pytest.raises(EdgekitError, match="no profile for 4 tokens on a cache of 16"):
            r.prompt(np.arange(20))
    assert not cuda.buffers  # close freed everything


def test_a_device_without_tensorrts_bindings_is_told_how_to_run_its_engine(monkeypatch):
    from edgekit.runners.tensorrt import bindings_module

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(EdgekitError, match="can build TensorRT engines .trtexec. but not run them") as e:
        bindings_module("trtexec")
    assert "python3-libnvinfer" in e.value.fix and "--system-site-packages" in e.value.fix


def test_a_device_too_small_for_the_build_is_refused_by_plans_rule():
    """The device build and plan's TRT rows share one rule (edgekit.tensorrt_rules): Edge-LLM's
    builder at 3 bytes a parameter, TensorRT's at least the graph and the engine."""
    from edgekit.device.tensorrt_remote import check_build_memory
    from edgekit.tensorrt_rules import build_peak_bytes, device_build_problem

    nano = {"meminfo": "MemTotal:        7802000 kB\n"}  # an 8 GB Orin Nano's MemTotal
    agx = {"meminfo": "MemTotal:       65000000 kB\n"}
    with pytest.raises(EdgekitError, match=r"cannot build this engine: .*needs about 21\.3 GiB .*3-4 bytes a param"):
        check_build_memory(nano, "edgellm", 7_615_616_512, 15_300_000_000, "orin-nano")
    check_build_memory(agx, "edgellm", 7_615_616_512, 15_300_000_000, "agx")
    check_build_memory({}, "edgellm", 7_615_616_512, 15_300_000_000, "unknown RAM")  # not refused
    check_build_memory(nano, "edgellm", 1_777_088_000, 3_550_000_000, "orin-nano")  # the 1.5B builds there
    assert build_peak_bytes("generic", 10**9, 2 * 10**9, 2 * 10**9) == 4 * 10**9
    assert device_build_problem("generic", 4 * 2**30, 4 * 2**30) is not None  # 90 % of RAM at most


@needs_rtx
def test_a_device_with_tensorrts_bindings_builds_with_them(onnx_export, tiny_qwen2, tmp_path, monkeypatch, request):
    """The bindings come first where Python finds them (here TensorRT-RTX's, behind a `tensorrt`
    name, as a device's JetPack module would be): a real build in a child, cached like trtexec's;
    with tool "trtexec" asked for and no trtexec, the device says it has neither."""
    from edgekit.device import tensorrt_build
    from edgekit.manifest import sha256_of

    shim = tmp_path / "shim"
    (shim / "tensorrt").mkdir(parents=True)
    (shim / "tensorrt" / "__init__.py").write_text("from tensorrt_rtx import *  # noqa\nfrom tensorrt_rtx import "
                                                   "__version__, ILogger, Builder, OnnxParser  # noqa\n")
    monkeypatch.syspath_prepend(str(shim))
    # the build's child (python -I) finds it as a device venv finds JetPack's: through a .pth
    import sysconfig

    pth = Path(sysconfig.get_paths()["purelib"]) / "edgekit-test-tensorrt-shim.pth"
    pth.write_text(str(shim) + "\n")
    request.addfinalizer(pth.unlink)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # and no trtexec
    fp16, _ = onnx_export(tiny_qwen2, "fp16")
    onnx = fp16 / "model.onnx"
    assert tensorrt_build.choose_tool(None) == "python" and tensorrt_build.choose_tool("trtexec") is None
    profiles = derive_profiles(decoder_inputs(onnx), 16, 64)
    kw = dict(onnx_sha256=sha256_of(onnx), precision="fp16")
    lines = []
    first = tensorrt_build.build_with_python_api(onnx, tmp_path / "engines", profiles, on_line=lines.append, **kw)
    assert not first["cached"] and first["builder"] == f"tensorrt {trt_rtx.__version__}"
    engine = Path(first["folder"]) / "model.engine"
    assert engine.read_bytes()[:4] == b"vtrt" and any("[INFO]" in ln for ln in lines)
    assert tensorrt_build.build_with_python_api(onnx, tmp_path / "engines", profiles, **kw)["cached"]
    asked = tmp_path / "request.json"
    asked.write_text(json.dumps({**kw, "profiles": [p.to_dict() for p in profiles], "tool": "trtexec"}))
    assert tensorrt_build.main([str(onnx), str(tmp_path / "engines"), str(asked)]) == 2
