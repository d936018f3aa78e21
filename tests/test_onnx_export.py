"""ONNX export (FP32/FP16/INT4), its parity checks, the ONNX Runtime runner and bad input."""

from __future__ import annotations

import json
import os
import shutil
import stat

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import assert_one_line_error

from edgekit.cli import cli
from edgekit.converters import onnx as onnx_conv
from edgekit.converters import onnx_graph, onnx_int4
from edgekit.errors import EdgekitError

pytest.importorskip("onnxruntime")
pytest.importorskip("optimum.exporters.onnx")


# ---------------------------------------------------------------- exports and parity


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int4"])
def test_export_writes_a_complete_genai_folder(onnx_export, tiny_qwen2, precision):
    out, manifest = onnx_export(tiny_qwen2, precision)
    names = {p.name for p in out.iterdir()}
    assert {"model.onnx", "genai_config.json", "tokenizer.json", "tokenizer_config.json", "manifest.json"} <= names
    assert not any(n.startswith(".") for n in names), names  # no work folder left behind
    assert manifest.format == "onnx" and manifest.opset == 18
    assert manifest.files[0].quant == {"fp32": "F32", "fp16": "F16", "int4": "INT4"}[precision]
    genai = json.loads((out / "genai_config.json").read_text())["model"]
    assert genai["decoder"]["num_hidden_layers"] == 2 and genai["decoder"]["num_key_value_heads"] == 2
    assert genai["decoder"]["head_size"] == 64 and genai["type"] == "qwen2" and genai["vocab_size"] == 1088
    assert json.loads((out / "genai_config.json").read_text())["search"]["past_present_share_buffer"] is False
    from edgekit.inspect import inspect_onnx

    facts = inspect_onnx(out / "model.onnx")
    assert facts["quant"] == manifest.files[0].quant
    assert facts["kv_cache"]["dtype_bytes"] == (2 if precision == "fp16" else 4)
    assert (facts["contrib_ops"].get("MatMulNBits", 0) > 0) == (precision == "int4")
    assert abs(facts["n_params"] - manifest.n_params) / manifest.n_params < 0.01
    assert facts["logits"] == "last position" and manifest.files[0].options["logits"] == "last"
    assert facts["attention"] == "cache read as stored" and manifest.files[0].options["grouped_attention_layers"] == 2


@pytest.mark.parametrize("ckpt_name", ["tiny_qwen2", "tiny_llama"])
def test_fuse_turns_rotary_and_residual_norms_into_ort_ops(onnx_export, request, ckpt_name):
    import onnx

    ckpt = request.getfixturevalue(ckpt_name)
    out, manifest = onnx_export(ckpt, "int4", fuse=True)
    layers = json.loads((ckpt / "config.json").read_text())["num_hidden_layers"]
    # q and k rotated in each layer; each layer's two RMSNorms but the very first take the residual add
    assert manifest.files[0].options["fused"] == {"RotaryEmbedding": 2 * layers,
                                                  "SkipSimplifiedLayerNormalization": 2 * layers}
    ops = {n.op_type for n in onnx.load(str(out / "model.onnx"), load_external_data=False).graph.node}
    assert {"RotaryEmbedding", "SkipSimplifiedLayerNormalization", "MatMulNBits"} <= ops
    assert {"vs_dequantized", "vs_fp32"} <= set(manifest.files[0].verify)  # the INT4 checks passed on the fused graph
    assert not any(p.name.startswith(".") for p in out.iterdir())
    plain, plain_manifest = onnx_export(ckpt, "int4")
    assert plain_manifest.files[0].options["fused"] == {}
    assert "RotaryEmbedding" not in {n.op_type for n in onnx.load(str(plain / "model.onnx")).graph.node}


@pytest.mark.parametrize("ckpt_name", ["tiny_qwen2", "tiny_llama"])
def test_attention_reads_the_cache_as_stored_not_repeated_per_head(onnx_export, request, ckpt_name):
    import onnx

    from edgekit.converters.onnx_graph import group_attention

    ckpt = request.getfixturevalue(ckpt_name)
    out, manifest = onnx_export(ckpt, "fp32")
    config = json.loads((ckpt / "config.json").read_text())
    layers = config["num_hidden_layers"]
    assert config["num_attention_heads"] > config["num_key_value_heads"]  # grouped-query attention
    assert manifest.files[0].options["grouped_attention_layers"] == layers
    graph = onnx.load(str(out / "model.onnx"), load_external_data=False).graph
    producer = {o: n for n in graph.node for o in n.output}
    # no Expand repeats a present key/value any more; each layer's two attention matmuls read them directly
    for node in graph.node:
        if node.op_type == "Expand":
            src = producer.get(node.input[0])
            assert not (src is not None and src.op_type == "Unsqueeze" and src.input[0].startswith("present."))
    value_matmuls = [n for n in graph.node if n.op_type == "MatMul" and n.input[1].startswith("present.")]
    key_transposes = [n for n in graph.node if n.op_type == "Transpose" and n.input[0].startswith("present.")]
    assert len(value_matmuls) == len(key_transposes) == layers
    assert manifest.files[0].verify["passed"]  # and still within FP32 tolerance of transformers
    # nothing left to group: a second pass changes nothing and says so
    before = (out / "model.onnx").read_bytes()
    assert group_attention(out / "model.onnx", config["num_attention_heads"], config["num_key_value_heads"],
                           config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"]) == 0
    assert (out / "model.onnx").read_bytes() == before


def test_grouped_attention_equals_the_repeated_graph_and_skips_what_it_cannot_prove(tiny_qwen2, tmp_path):
    import onnx
    from onnx import numpy_helper

    config = json.loads((tiny_qwen2 / "config.json").read_text())
    heads, kv = config["num_attention_heads"], config["num_key_value_heads"]
    dim = config["hidden_size"] // heads
    raw = onnx_conv.torch_export(tiny_qwen2, tmp_path / "raw", fp16=False)  # optimum's graph, repeat_kv and all
    ids = list(range(3, 40))
    want = onnx_graph.onnx_logits(raw, ids, threads=2)

    grouped = tmp_path / "grouped"
    shutil.copytree(raw.parent, grouped)
    assert onnx_graph.group_attention(grouped / "model.onnx", heads, kv, dim) == config["num_hidden_layers"]
    got = onnx_graph.onnx_logits(grouped / "model.onnx", ids, threads=2)
    assert np.abs(got - want).max() < 1e-5 * float(np.std(want))  # same weights, same maths, one pass per KV head

    # a layer whose repeated key also feeds its head count (Shape -> Gather index 1) stays as exported
    odd = tmp_path / "odd"
    shutil.copytree(raw.parent, odd)
    model = onnx.load(str(odd / "model.onnx"), load_external_data=False)
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    expand = next(n for n in model.graph.node if n.op_type == "Expand"
                  and list(producer[n.input[0]].input[:1]) == ["present.0.key"])
    reshape = consumers[expand.output[0]][0]
    gather = next(g for s in consumers[reshape.output[0]] if s.op_type == "Shape" for g in consumers[s.output[0]])
    index = producer[gather.input[1]]
    index.attribute[0].t.CopyFrom(numpy_helper.from_array(np.array(1, np.int64)))
    onnx.save_model(model, str(odd / "model.onnx"))
    assert onnx_graph.group_attention(odd / "model.onnx", heads, kv, dim) == config["num_hidden_layers"] - 1


def test_fuse_that_finds_nothing_is_one_line_and_writes_nothing(tiny_qwen2, tmp_path, monkeypatch):
    import onnx
    import onnxruntime.transformers.optimizer as ort_optimizer

    class Unfused:  # what the optimizer returns for a graph none of its patterns match
        def __init__(self, path, **_kwargs):
            self.model = onnx.load(path)

    monkeypatch.setattr(ort_optimizer, "optimize_model", Unfused)
    out = tmp_path / "fused"
    res = CliRunner().invoke(cli, ["export", "onnx", str(tiny_qwen2), "-o", str(out), "--precision", "fp32",
                                   "--fuse", "--no-verify"])
    assert_one_line_error(res, "found nothing to fuse")
    assert not out.exists() and not any(tmp_path.iterdir())


def test_fused_fp32_matches_the_plain_graph_and_loads_in_genai(onnx_export, tiny_qwen2):
    ids = [3, 17, 300, 2, 99, 1000, 45, 7, 12]
    fused, _ = onnx_export(tiny_qwen2, "fp32", logits="all", fuse=True)
    plain, _ = onnx_export(tiny_qwen2, "fp32", logits="all")
    a = onnx_graph.onnx_logits(plain / "model.onnx", ids)
    b = onnx_graph.onnx_logits(fused / "model.onnx", ids)
    assert np.abs(a - b).max() < 1e-4 * a.std()  # same math, other kernels (measured 2.5e-6)
    assert_genai_and_edgekit_agree(fused, ids, 8)


def test_logits_all_keeps_every_position_and_last_matches_it(onnx_export, tiny_llama):
    from edgekit.inspect import inspect_onnx
    from edgekit.runners.onnxruntime import OrtRunner

    full, _ = onnx_export(tiny_llama, "fp32", logits="all")
    last, _ = onnx_export(tiny_llama, "fp32")
    assert inspect_onnx(full / "model.onnx")["logits"] == "every position"
    ids = np.array([5, 17, 300, 2, 99, 1000, 45, 7])
    with OrtRunner(full, threads=2) as a, OrtRunner(last, threads=2) as b:
        every, only = a.logits(ids), b.logits(ids)
    assert every.shape == (8, 1088) and only.shape == (1, 1088)
    np.testing.assert_allclose(only[0], every[-1], rtol=1e-5, atol=1e-5)


def test_fp32_matches_transformers(onnx_export, tiny_ckpt):
    _out, manifest = onnx_export(tiny_ckpt, "fp32")
    v = manifest.files[0].verify
    assert v["passed"] and v["max_abs_diff"] < 1e-4 and v["top1_agreement"] == 1.0


def test_fp16_matches_transformers_within_fp16_rounding(onnx_export, tiny_ckpt):
    _out, manifest = onnx_export(tiny_ckpt, "fp16")
    v = manifest.files[0].verify
    assert v["passed"] and 1e-6 < v["max_abs_diff"] < 1e-2  # really fp16 (not 0), and close


def test_int4_checks_against_dequantized_reference_and_fp32(onnx_export, tiny_ckpt):
    out, manifest = onnx_export(tiny_ckpt, "int4")
    v = manifest.files[0].verify
    assert v["vs_dequantized"]["passed"] and v["vs_dequantized"]["accuracy_level"] == 4
    assert v["fp32_vs_transformers"]["passed"]
    w = v["weights_vs_fp32"]
    assert w["passed"] and w["weights"] == w["compared_to_fp32"] == 15  # 7 per layer x 2 + lm_head
    assert 0.5 < w["max_error_steps"] <= 1.0  # symmetric round-to-nearest: the +7 side clamps
    assert v["weights_vs_dequantized"]["rel_max_diff"] < 1e-4
    assert 0 < v["vs_fp32"]["kl_mean"] < 0.05 and v["vs_fp32"]["finite"]
    assert manifest.files[0].options == {"logits": "last", "fused": {}, "grouped_attention_layers": 2,
                                         "block_size": 32, "symmetric": True,
                                         "accuracy_level": 4, "quantize_embedding": False, "form": "matmulnbits"}
    fp32_out, _ = onnx_export(tiny_ckpt, "fp32")
    # embedding stays fp32 by default; every MatMul weight shrinks ~7x
    assert model_bytes(out) < 0.5 * model_bytes(fp32_out)


def model_bytes(folder) -> int:
    """The graph and its weights (model.onnx_data)."""
    return sum(p.stat().st_size for p in folder.iterdir() if p.name.startswith("model.onnx"))


def test_int4_fp32_compute_equals_its_dequantized_weights(onnx_export, tiny_qwen2):
    """accuracy_level 1 computes in fp32: the INT4 model must equal the FP32 graph with the
    dequantized weights to float rounding, which pins both the quantizer output and our
    reading of the MatMulNBits layout."""
    _out, manifest = onnx_export(tiny_qwen2, "int4", accuracy_level=1, block_size=64, symmetric=False,
                                 quantize_embedding=True)
    v = manifest.files[0].verify["vs_dequantized"]
    assert v["rel_max_diff"] < 1e-4, v
    w = manifest.files[0].verify["weights_vs_fp32"]
    assert w["weights"] == 16 and w["compared_to_fp32"] == 16  # the embedding too
    assert w["max_error_steps"] <= 0.5 * 1.001 and w["bound_steps"] == 0.5  # zero points: half a step


def test_corrupted_int4_weights_fail_the_check(tiny_qwen2, tmp_path, monkeypatch):
    """Flip the nibbles of one packed weight after quantization: the logits barely move on a
    random checkpoint, but the weights are no longer the FP32 weights rounded, and nothing is written."""
    import onnx
    from onnx import numpy_helper

    real = onnx_int4.quantize_int4

    def corrupting(src, dst, opts, **kw):
        real(src, dst, opts, **kw)
        model = onnx.load(str(dst))
        t = next(t for t in model.graph.initializer if t.name.endswith("_Q4"))
        packed = numpy_helper.to_array(t)
        t.CopyFrom(numpy_helper.from_array(((packed & 0x0F) << 4) | (packed >> 4), t.name))
        onnx.save_model(model, str(dst))

    monkeypatch.setattr(onnx_conv, "quantize_int4", corrupting)
    out = tmp_path / "out"
    with pytest.raises(EdgekitError, match="INT4 ONNX check failed .*weights_vs_fp32"):
        onnx_conv.export_onnx(str(tiny_qwen2), out, "int4", verify=True, threads=2)
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("k,block", [(96, 64), (256, 256), (100, 32)])  # padded last block; one block; odd K
def test_dequantize_matmul_nbits_matches_onnxruntime(tmp_path, k, block):
    """Quantize one MatMul with onnxruntime's quantizer and read it back: every weight within
    half a quantization step of the original with zero points; symmetric blocks map the
    largest magnitude to -8, so the other side clamps at +7: within one step. And the
    MatMulNBits kernel at fp32 compute equals x @ our dequantized weights."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    n = 40
    w = rng.normal(size=(k, n)).astype(np.float32)
    x = rng.normal(size=(1, k)).astype(np.float32)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
                              [numpy_helper.from_array(w, "w")])
    src = tmp_path / "m.onnx"
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), src)
    for symmetric in (True, False):
        dst = tmp_path / f"q{symmetric}.onnx"
        onnx_int4.quantize_int4(src, dst, onnx_int4.Int4Options(block_size=block, symmetric=symmetric,
                                                                accuracy_level=1))
        q = onnx.load(dst)
        node = next(nd for nd in q.graph.node if nd.op_type == "MatMulNBits")
        init = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
        zp = init.get(node.input[3]) if len(node.input) > 3 and node.input[3] else None
        assert (zp is None) == symmetric
        scales = init[node.input[2]].reshape(n, -1)
        deq = onnx_int4.dequantize_matmul_nbits(init[node.input[1]], init[node.input[2]], zp, k, n, block)
        assert deq.shape == (k, n)
        bound = 1.0 if symmetric else 0.5
        assert onnx_int4.quantization_error_steps(w, deq, scales, 0, block) <= bound * 1.001
        y = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
        np.testing.assert_allclose(y, x @ deq, rtol=1e-4, atol=1e-4)
        # swapping the nibbles (a wrong layout) is caught by the same bound
        packed = init[node.input[1]]
        swapped = ((packed & 0x0F) << 4) | (packed >> 4)
        bad = onnx_int4.dequantize_matmul_nbits(swapped, init[node.input[2]], zp, k, n, block)
        assert onnx_int4.quantization_error_steps(w, bad, scales, 0, block) > bound * 1.5


@pytest.mark.parametrize("cols", [128, 96])  # a whole number of blocks; a short last block
def test_dequantize_gather_block_matches_onnxruntime(tmp_path, cols):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    rows = 10
    table = rng.normal(size=(rows, cols)).astype(np.float32)
    ids = np.array([[3, 0, 9]], dtype=np.int64)
    graph = helper.make_graph([helper.make_node("Gather", ["table", "input_ids"], ["y"], axis=0)], "g",
                              [helper.make_tensor_value_info("input_ids", TensorProto.INT64, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, cols])],
                              [numpy_helper.from_array(table, "table")])
    src = tmp_path / "g.onnx"
    onnx.save_model(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), src)
    for symmetric in (True, False):
        dst = tmp_path / f"gq{symmetric}.onnx"
        onnx_int4.quantize_int4(src, dst, onnx_int4.Int4Options(block_size=64, symmetric=symmetric,
                                                                quantize_embedding=True))
        q = onnx.load(dst)
        node = next(nd for nd in q.graph.node if nd.op_type == "GatherBlockQuantized")
        init = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
        zp = init.get(node.input[3]) if len(node.input) > 3 and node.input[3] else None
        deq = onnx_int4.dequantize_gather_block(init[node.input[0]], init[node.input[2]], zp, 64)
        y = ort.InferenceSession(str(dst), providers=["CPUExecutionProvider"]).run(None, {"input_ids": ids})[0]
        np.testing.assert_allclose(y[0], deq[ids[0]], rtol=1e-5, atol=1e-6)
        steps = onnx_int4.quantization_error_steps(table, deq, init[node.input[2]].reshape(rows, -1), 1, 64)
        assert steps <= (1.0 if symmetric else 0.5) * 1.001


# ---------------------------------------------------------------- runner


def test_greedy_decode_equals_transformers(onnx_export, tiny_ckpt):
    import torch
    from transformers import AutoModelForCausalLM

    out, _ = onnx_export(tiny_ckpt, "fp32")
    prompt = [5, 17, 300, 2, 99, 1000, 45, 7]
    model = AutoModelForCausalLM.from_pretrained(str(tiny_ckpt), dtype=torch.float32)
    with torch.no_grad():
        ref = model.generate(torch.tensor([prompt]), max_new_tokens=24, do_sample=False, eos_token_id=None,
                             pad_token_id=0)[0, len(prompt):].tolist()
    from edgekit.runners.onnxruntime import OrtRunner

    with OrtRunner(out, threads=2) as runner:
        got = runner.generate_greedy(prompt, 24)
        # a cache with room for the prompt only (8 tokens), grown to 16 and 32 on the way
        runner.kv_start_tokens = 1
        grown = runner.generate_greedy(prompt, 24)
        # a prompt in small chunks through the cache gives the same logits as one pass
        runner.n_batch = 3
        logits, _cache, _pos = runner.run(np.array(prompt))
        chunked_last = runner.last_row(logits)
        whole = runner.logits(np.array(prompt))[-1]
    assert got == ref and grown == ref
    np.testing.assert_allclose(chunked_last, whole, atol=1e-4)


def test_public_iobinding_methods_give_the_same_tokens(onnx_export, tiny_qwen2, monkeypatch):
    """Where onnxruntime has no C++ binding object to reach, the public methods bind the same."""
    from edgekit.runners import onnxruntime as ort_runner

    out, _ = onnx_export(tiny_qwen2, "int4")
    prompt = [5, 17, 300, 2, 99, 1000, 45, 7]
    with ort_runner.OrtRunner(out, threads=2) as runner:
        fast = runner.generate_greedy(prompt, 12)
    monkeypatch.setattr(ort_runner, "_raw_iobinding", lambda binding: None)
    with ort_runner.OrtRunner(out, threads=2) as runner:
        assert runner._bind_cpu_input == runner._binding.bind_cpu_input  # the public path is the one taken
        assert runner.generate_greedy(prompt, 12) == fast


def test_decode_steps_reuse_two_cache_buffers(onnx_export, tiny_qwen2):
    """With room in the cache, every step reads one buffer set and writes the other: two sets in all."""
    from edgekit.runners.onnxruntime import OrtRunner

    out, _ = onnx_export(tiny_qwen2, "int4")
    with OrtRunner(out, threads=2) as runner:
        cache = runner.empty_cache(40)
        logits, cache, pos = runner.run(np.array([5, 17, 300, 2]), cache)
        seen = set()
        for _ in range(30):
            token = int(runner.last_row(logits).argmax())
            logits, cache = runner.forward(np.array([token]), cache, pos)
            pos += 1
            seen.add(tuple(cache.front_ptrs))
        assert len(seen) == 2 and cache.tokens == pos == 34
        with pytest.raises(ValueError, match="holds 34 tokens, not 3"):
            runner.forward(np.array([1]), cache, 3)


def assert_genai_and_edgekit_agree(folder, prompt: list[int], n_new: int) -> None:
    """onnxruntime-genai's greedy tokens from the folder as it is, then edgekit's runner's: the same."""
    og = pytest.importorskip("onnxruntime_genai")
    model = og.Model(str(folder))
    params = og.GeneratorParams(model)
    params.set_search_options(max_length=len(prompt) + n_new, do_sample=False)
    gen = og.Generator(model, params)
    gen.append_tokens(np.array(prompt, dtype=np.int32))
    theirs = []
    while not gen.is_done():
        gen.generate_next_token()
        theirs.append(int(gen.get_next_tokens()[0]))
    from edgekit.runners.onnxruntime import OrtRunner

    with OrtRunner(folder, threads=2) as runner:
        assert runner.generate_greedy(prompt, len(theirs)) == theirs


def test_onnxruntime_genai_loads_the_export_unchanged(onnx_export, tiny_qwen2):
    out, _ = onnx_export(tiny_qwen2, "int4")
    assert_genai_and_edgekit_agree(out, [5, 17, 300, 2, 99, 1000, 45, 7], 12)


def test_cli_bench_onnx_folder(onnx_export, tiny_qwen2, tmp_path):
    out, _ = onnx_export(tiny_qwen2, "int4")
    res = CliRunner().invoke(cli, ["bench", str(out), "-p", "16", "-n", "8", "-r", "2", "--threads", "2",
                                   "--json", "--power", "none", "-o", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    r = json.loads(res.stdout)
    assert r["artifact"]["format"] == "onnx" and r["artifact"]["quant"] == "INT4"
    assert r["runtime"]["name"] == "onnxruntime" and r["runtime"]["backend"] == "CPU"
    ort = r["settings"]["onnxruntime"]
    assert ort["providers"] == ["CPUExecutionProvider"] and ort["graph_optimization"] == "all"
    assert r["settings"]["llama_cpp"] is None  # runtime fields live in their runtime's part only
    m = r["metrics"]
    for key in ("pp_tok_s", "tg_tok_s", "ttft_s"):
        assert len(m[key]["samples"]) == 2 and all(v > 0 and np.isfinite(v) for v in m[key]["samples"])
    assert m["peak_rss_bytes"] > model_bytes(out)
    assert r["roofline"]["bytes_per_token"] > 0
    from edgekit.results import BenchResult

    assert BenchResult.load(tmp_path / "r.json").artifact.format == "onnx"


def test_prompt_runs_the_whole_prompt_and_pick_reads_its_last_row(onnx_export, tiny_qwen2, monkeypatch):
    """What bench's TTFT times on ONNX Runtime: the full prompt in one run, then the greedy pick
    (checked by what runs, not by timing; bench's own order is tested with a FakeRunner)."""
    from edgekit.runners.onnxruntime import OrtRunner

    out, _ = onnx_export(tiny_qwen2, "int4")
    seen = []
    with OrtRunner(out, threads=2) as runner:
        real_run, real_row = runner.run, runner.last_row

        def run(tokens, *args, **kwargs):
            seen.append(("run", len(tokens)))
            return real_run(tokens, *args, **kwargs)

        def last_row(logits):
            seen.append(("pick",))
            return real_row(logits)

        monkeypatch.setattr(runner, "run", run)
        monkeypatch.setattr(runner, "last_row", last_row)
        runner.start(16)
        runner.prompt(runner.random_tokens(16))
        assert 0 <= runner.pick() < runner.n_vocab
    assert seen == [("run", 16), ("pick",)]


def test_cli_bench_onnx_bad_provider(onnx_export, tiny_qwen2):
    out, _ = onnx_export(tiny_qwen2, "int4")
    res = CliRunner().invoke(cli, ["bench", str(out), "-p", "8", "-n", "4", "--providers", "warp"])
    assert_one_line_error(res, "unknown execution provider 'warp'", "cuda")
    res = CliRunner().invoke(cli, ["bench", str(out), "-p", "8", "-n", "4", "--providers", "cuda"])
    assert_one_line_error(res, "CUDAExecutionProvider is not in this onnxruntime build", "onnxruntime-gpu")


# ---------------------------------------------------------------- external data, modes, bad input


def test_external_data_is_world_readable_and_checked(tiny_qwen2, tmp_path, monkeypatch):
    """The weights are in model.onnx_data (the traced export too: forced to external data here, as
    above 2 GB); onnx writes it 0600, the export leaves it as the umask says, and a missing or
    truncated data file is one clear line."""
    monkeypatch.setattr(onnx_graph, "PROTOBUF_LIMIT", 0)
    old = os.umask(0o022)
    try:
        out = tmp_path / "ext"
        manifest = onnx_conv.export_onnx(str(tiny_qwen2), out, "int4", verify=False, threads=2)
    finally:
        os.umask(old)
    data = out / "model.onnx_data"
    assert data.is_file() and [f.file for f in manifest.files] == ["model.onnx", "model.onnx_data"]
    for p in (out / "model.onnx", data):
        assert stat.S_IMODE(p.stat().st_mode) == 0o644
    res = CliRunner().invoke(cli, ["bench", str(out), "-p", "8", "-n", "4", "-r", "1", "--json", "--power", "none"])
    assert res.exit_code == 0, res.output
    with open(data, "r+b") as f:
        f.truncate(data.stat().st_size // 2)
    res = CliRunner().invoke(cli, ["bench", str(out), "-p", "8", "-n", "4"])
    assert_one_line_error(res, "model.onnx_data is truncated")
    data.unlink()
    for args in (["bench", str(out)], ["inspect", str(out)]):
        res = CliRunner().invoke(cli, args)
        assert_one_line_error(res, "external data file model.onnx_data of model.onnx is missing", "copy")


def _export_fails(args, out, *fragments):
    res = CliRunner().invoke(cli, ["export", "onnx", *args, "-o", str(out)])
    assert_one_line_error(res, *fragments)
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


def test_checkpoint_without_tokenizer(tiny_qwen2, tmp_path):
    ckpt = tmp_path / "no-tok"
    shutil.copytree(tiny_qwen2, ckpt)
    (ckpt / "tokenizer.json").unlink()
    _export_fails([str(ckpt)], tmp_path / "out", "no tokenizer.json", "tokenizer.save_pretrained")


def test_unsupported_architecture(tiny_qwen2, tmp_path):
    ckpt = tmp_path / "gpt2"
    shutil.copytree(tiny_qwen2, ckpt)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["architectures"] = ["GPT2LMHeadModel"]
    (ckpt / "config.json").write_text(json.dumps(cfg))
    _export_fails([str(ckpt)], tmp_path / "out", "unsupported architecture 'GPT2LMHeadModel'",
                  "LlamaForCausalLM, Qwen2ForCausalLM")


def test_bad_int4_options_and_existing_output(tiny_qwen2, tmp_path):
    _export_fails([str(tiny_qwen2), "--block-size", "48"], tmp_path / "out", "block size 48", "32")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("x")
    res = CliRunner().invoke(cli, ["export", "onnx", str(tiny_qwen2), "-o", str(taken)])
    assert_one_line_error(res, "already exists", "--force")
    assert (taken / "keep.txt").read_text() == "x"
    with pytest.raises(EdgekitError, match="unknown precision 'int8'"):
        onnx_conv.export_onnx(str(tiny_qwen2), tmp_path / "o2", "int8")


def test_failure_after_export_leaves_nothing(tiny_qwen2, tmp_path, monkeypatch):
    def broken(*_a, **_k):
        raise EdgekitError("INT4 quantization broke", "test")

    monkeypatch.setattr(onnx_conv, "quantize_int4", broken)
    out = tmp_path / "out"
    with pytest.raises(EdgekitError, match="broke"):
        onnx_conv.export_onnx(str(tiny_qwen2), out, "int4", verify=False)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_export_child_failure_is_one_line(tiny_qwen2, tmp_path, monkeypatch):
    """A crash inside the export child (here: a config torch cannot build) becomes one error line."""
    ckpt = tmp_path / "broken"
    shutil.copytree(tiny_qwen2, ckpt)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["hidden_act"] = "no-such-activation"
    (ckpt / "config.json").write_text(json.dumps(cfg))
    _export_fails([str(ckpt), "--no-verify"], tmp_path / "out", "the ONNX export failed")


def test_memory_check_refuses_what_cannot_fit():
    meminfo = "MemTotal:       25000000 kB\nMemAvailable:   23000000 kB\nSwapFree:              0 kB\n"
    onnx_conv.check_memory(1_777_088_000, "fp32", meminfo)  # 1.5B: ~15 GB, fits in 23.5 GB
    with pytest.raises(EdgekitError, match=r"7\.6B parameters to ONNX fp32 needs about 64 GB .* 24 GB are available"):
        onnx_conv.check_memory(7_615_616_512, "fp32", meminfo)
    with pytest.raises(EdgekitError, match="needs about 35 GB"):
        onnx_conv.check_memory(7_615_616_512, "fp16", meminfo)
    swap = meminfo.replace("SwapFree:              0 kB", "SwapFree:       64000000 kB")
    onnx_conv.check_memory(7_615_616_512, "fp32", swap)
    onnx_conv.check_memory(7_615_616_512, "fp32", "no such fields")  # unknown: go ahead
