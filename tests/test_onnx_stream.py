"""The streamed ONNX export (converters/onnx_stream.py) against optimum's trace of the whole model.

The checkpoints have 6 layers, so the template (4 layers) is really repeated: layer 0, the middle
pattern for layers 1..4, the last layer. Everything is compared with the traced export: nodes,
initializers, inputs and outputs, FP32 logits, and INT4 bytes against onnxruntime's whole-model
quantizer on the traced FP32 graph.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from helpers import assert_one_line_error

from edgekit.cli import cli
from edgekit.converters import onnx as onnx_conv
from edgekit.converters import onnx_stream
from edgekit.converters.onnx_graph import onnx_logits
from edgekit.converters.onnx_int4 import Int4Options
from edgekit.errors import EdgekitError
from edgekit.synth import synthesize

pytest.importorskip("onnxruntime")
pytest.importorskip("optimum.exporters.onnx")

LAYERS = 6
IDS = [5, 17, 250, 3, 999, 42, 7, 1000, 64, 12, 600, 31]


def _deep(tmp_path_factory, preset: str):
    out = tmp_path_factory.mktemp("deep") / f"{preset}-{LAYERS}"
    synthesize(preset, out, seed=7, overrides={"num_hidden_layers": LAYERS})
    return out


@pytest.fixture(scope="module", params=["tiny-qwen2", "tiny-llama"])
def deep(request, tmp_path_factory):
    """Both architectures: for what the issue asks of each (the trace's graph, the INT4 bytes)."""
    return _deep(tmp_path_factory, request.param)


@pytest.fixture(scope="module")
def deep_qwen(tmp_path_factory):
    """One architecture, for the checks whose code does not depend on it."""
    return _deep(tmp_path_factory, "tiny-qwen2")


@pytest.fixture(scope="module")
def qwen_template(deep_qwen, tmp_path_factory):
    """The 6-layer Qwen2's template traced once: (checkpoint, template ModelProto, weight map)."""
    from edgekit.checkpoint import open_checkpoint

    ckpt = open_checkpoint(str(deep_qwen))
    template, weight_map = onnx_conv.trace_template(ckpt, tmp_path_factory.mktemp("template"), "fp32")
    return ckpt, template, weight_map


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    cache = {}

    def get(ckpt, precision, method, **kw):
        key = (ckpt, precision, method, tuple(sorted(kw.items())))
        if key not in cache:
            out = tmp_path_factory.mktemp("exp") / f"{ckpt.name}-{precision}-{method}"
            onnx_conv.export_onnx(str(ckpt), out, precision, verify=False, threads=2, method=method, **kw)
            cache[key] = out
        return cache[key]

    return get


def graph_facts(path):
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph
    nodes = [(n.op_type, n.domain, n.name, list(n.input), list(n.output),
              [a.SerializeToString(deterministic=True) for a in n.attribute]) for n in g.node]
    inits = {t.name: (list(t.dims), t.data_type) for t in g.initializer}
    io = [v.SerializeToString(deterministic=True) for v in [*g.input, *g.output]]
    return nodes, inits, io


def initializer_arrays(path) -> dict[str, bytes]:
    import onnx

    model = onnx.load(str(path))
    out = {}
    for t in model.graph.initializer:
        out[t.name] = t.raw_data if t.HasField("raw_data") else onnx.numpy_helper.to_array(t).tobytes()
    return out


def whole_model_quantized(src, dst, opts: Int4Options):
    """onnxruntime's MatMulNBitsQuantizer over the whole model at once: the reference."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    _, config = onnx_stream.int4_quantizer(opts)
    q = MatMulNBitsQuantizer(onnx.load(str(src)), algo_config=config)
    q.process()
    onnx.save_model(q.model.model, str(dst))
    return dst


# ---------------------------------------------------------------- equal to the trace


def test_streamed_fp32_equals_the_traced_export(deep, exports):
    traced, streamed = exports(deep, "fp32", "trace"), exports(deep, "fp32", "stream")
    t_nodes, t_inits, t_io = graph_facts(traced / "model.onnx")
    s_nodes, s_inits, s_io = graph_facts(streamed / "model.onnx")
    assert len({n[2] for n in s_nodes}) == len(s_nodes)  # every node named, once
    assert not any(n[2].startswith("Constant_") or any(v.startswith("onnx::") for v in n[3] + n[4]) for n in s_nodes)
    assert s_nodes == t_nodes and s_inits == t_inits and s_io == t_io
    assert f"model.layers.{LAYERS - 1}.mlp.down_proj.MatMul.weight" in s_inits
    assert (streamed / "model.onnx_data").is_file()
    t, s = onnx_logits(traced / "model.onnx", IDS, 2), onnx_logits(streamed / "model.onnx", IDS, 2)
    assert np.abs(t - s).max() <= 1e-5 * max(1.0, float(np.abs(t).max()))
    # every weight the same bytes as the trace's, and the same files beside the model
    assert initializer_arrays(streamed / "model.onnx") == initializer_arrays(traced / "model.onnx")
    for name in ("config.json", "generation_config.json", "genai_config.json", "tokenizer.json",
                 "tokenizer_config.json"):
        assert (streamed / name).read_bytes() == (traced / name).read_bytes(), name


def test_streamed_int4_bytes_equal_onnxruntimes_whole_model_quantizer(deep, exports, tmp_path):
    opts = Int4Options()
    streamed = exports(deep, "int4", "stream")
    reference = whole_model_quantized(exports(deep, "fp32", "trace") / "model.onnx", tmp_path / "ref.onnx", opts)
    assert graph_facts(streamed / "model.onnx")[:2] == graph_facts(reference)[:2]
    got, want = initializer_arrays(streamed / "model.onnx"), initializer_arrays(reference)
    packed = [n for n in want if n.endswith("_Q4")]
    assert len(packed) == 7 * LAYERS + 1  # q k v o gate up down per layer, and the lm_head
    assert got == want


def test_weights_too_big_for_protobuf_reach_the_quantizer_as_files(deep_qwen, exports, tmp_path, monkeypatch):
    """A weight of 2 GB or more cannot be a protobuf message (a 7B model's FP32 lm_head): from
    PROTO_WEIGHT_LIMIT on it goes to the quantizer as external data. Forced here for every weight, with
    the embedding quantized too (GatherBlockQuantized): the same bytes as the whole-model quantizer."""
    monkeypatch.setattr(onnx_stream, "PROTO_WEIGHT_LIMIT", 1024)
    opts = Int4Options(quantize_embedding=True)
    out = tmp_path / "streamed"
    onnx_conv.export_onnx(str(deep_qwen), out, "int4", opts, verify=False, threads=2)
    reference = whole_model_quantized(exports(deep_qwen, "fp32", "trace") / "model.onnx", tmp_path / "ref.onnx", opts)
    assert graph_facts(out / "model.onnx")[:2] == graph_facts(reference)[:2]
    got = initializer_arrays(out / "model.onnx")
    assert "model.embed_tokens.weight_Q4" in got and got == initializer_arrays(reference)
    assert not [p for p in tmp_path.rglob(".edgekit-weight-*")]  # the scratch files are gone
    # from an ONNX file, the file's own bytes are handed over
    quantize_int4_file = tmp_path / "from-file.onnx"
    from edgekit.converters.onnx_int4 import quantize_int4

    quantize_int4(exports(deep_qwen, "fp32", "stream") / "model.onnx", quantize_int4_file, Int4Options())
    reference = whole_model_quantized(exports(deep_qwen, "fp32", "stream") / "model.onnx", tmp_path / "ref2.onnx",
                                      Int4Options())
    assert initializer_arrays(quantize_int4_file) == initializer_arrays(reference)


def test_per_node_qdq_equals_the_whole_model_quantizer(deep_qwen, exports, tmp_path):
    """TensorRT's INT4 form made from an FP16 export, one weight at a time, as the whole model at once."""
    from edgekit.converters.onnx_int4 import quantize_int4_qdq

    fp16 = exports(deep_qwen, "fp16", "stream") / "model.onnx"
    quantize_int4_qdq(fp16, tmp_path / "qdq.onnx", 32)
    reference = whole_model_quantized(fp16, tmp_path / "ref.onnx", Int4Options(form="qdq"))
    assert graph_facts(tmp_path / "qdq.onnx") == graph_facts(reference)
    assert initializer_arrays(tmp_path / "qdq.onnx") == initializer_arrays(reference)


def test_wrong_layer_weights_are_caught_by_the_logits(qwen_template, tmp_path):
    """Break the assembly on purpose (layers 2 and 3 get each other's attention output weights):
    the graph is the same, the logits are not, so the comparison above can fail."""
    import onnx

    ckpt, template, weight_map = qwen_template
    source, _ = onnx_conv.from_template(template, weight_map, ckpt, "fp32")
    a, b = (f"model.layers.{i}.self_attn.o_proj.MatMul.weight" for i in (2, 3))
    sources = {**source.sources, a: source.sources[b], b: source.sources[a]}
    swapped = onnx_stream.streamed_checkpoint(source.header, onnx_stream.Assembly(source.graph, sources), ckpt, "fp32")
    good, bad = tmp_path / "good.onnx", tmp_path / "bad.onnx"
    onnx_stream.write_model(source, good)
    onnx_stream.write_model(swapped, bad)
    assert onnx.load(str(good), load_external_data=False).graph.node == onnx.load(str(bad), load_external_data=False).graph.node
    g, w = onnx_logits(good, IDS, 2), onnx_logits(bad, IDS, 2)
    assert np.abs(g - w).max() > 100 * 1e-5 * max(1.0, float(np.abs(g).max()))


# ---------------------------------------------------------------- what is refused


def test_a_template_whose_middle_layers_differ_is_refused(qwen_template):
    import onnx

    ckpt, traced, weight_map = qwen_template
    template = onnx.ModelProto()
    template.CopyFrom(traced)
    onnx_stream.assemble(template, weight_map, LAYERS, ckpt.config["vocab_size"])  # as traced: fine
    node = next(n for n in template.graph.node if n.name.startswith("/model/layers.1/") and n.op_type == "Softmax")
    node.attribute[0].i = 1  # layer 1 no longer equals the middle pattern
    with pytest.raises(EdgekitError, match="not one repeated block"):
        onnx_stream.assemble(template, weight_map, LAYERS, ckpt.config["vocab_size"])


def test_unused_or_missing_checkpoint_tensors_are_refused(qwen_template):
    ckpt, template, weight_map = qwen_template
    source, _ = onnx_conv.from_template(template, weight_map, ckpt, "fp32")
    sources = dict(source.sources)
    dropped = next(k for k, v in sources.items() if v[0] == "model.layers.4.mlp.up_proj.weight")
    with pytest.raises(EdgekitError, match="leaves model.layers.4.mlp.up_proj.weight of the checkpoint unused"):
        onnx_stream.check_sources(onnx_stream.Assembly(source.graph, {k: v for k, v in sources.items()
                                                                      if k != dropped}), ckpt)
    sources[dropped] = ("model.layers.9.mlp.up_proj.weight", True)
    with pytest.raises(EdgekitError, match="needs model.layers.9.mlp.up_proj.weight, which the checkpoint lacks"):
        onnx_stream.check_sources(onnx_stream.Assembly(source.graph, sources), ckpt)


def test_sliding_window_checkpoint_is_refused_in_one_line(tiny_qwen2, tmp_path):
    ckpt = tmp_path / "swa"
    shutil.copytree(tiny_qwen2, ckpt)
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["use_sliding_window"] = True
    (ckpt / "config.json").write_text(json.dumps(cfg))
    res = CliRunner().invoke(cli, ["export", "onnx", str(ckpt), "-o", str(tmp_path / "out"), "--no-verify"])
    assert_one_line_error(res, "cannot be exported layer by layer", "--method trace")
    assert not (tmp_path / "out").exists()


def test_anonymous_names_collision_is_one_line():
    import onnx
    from onnx import helper

    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["onnx::C_1"], name="Constant_1", value=helper.make_tensor("v", 7, [1], [0])),
         helper.make_node("Unsqueeze", ["x", "onnx::C_1"], ["/m/Unsqueeze_output_0"], name="/m/Unsqueeze"),
         helper.make_node("Identity", ["x"], ["/m/Unsqueeze/Constant_input1_output_0"], name="/m/Unsqueeze/Constant_input1")],
        "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("/m/Unsqueeze_output_0", onnx.TensorProto.FLOAT, None)])
    with pytest.raises(EdgekitError, match="is taken"):
        onnx_stream.name_anonymous(graph)


def test_memory_rule_of_both_methods():
    meminfo = "MemTotal:       25000000 kB\nMemAvailable:   23000000 kB\nSwapFree:              0 kB\n"
    seven_b, lm_head = 7_615_616_512, 152_064 * 3584
    with pytest.raises(EdgekitError, match="needs about 35 GB.*--method stream"):
        onnx_conv.check_memory(seven_b, "fp16", meminfo, method="trace")
    onnx_conv.check_memory(seven_b, "fp16", meminfo, method="stream", largest_params=lm_head)
    onnx_conv.check_memory(seven_b, "int4", meminfo, method="stream", largest_params=lm_head)
    small = meminfo.replace("23000000", "4000000")
    with pytest.raises(EdgekitError, match="layer by layer needs about .* GB .*545M values"):
        onnx_conv.check_memory(seven_b, "int4", small, method="stream", largest_params=lm_head)
    # the default check on a slice (3 layers, 8192 rows: 758M parameters at 7B) is counted too
    eight = meminfo.replace("23000000", "7000000")
    onnx_conv.check_memory(seven_b, "int4", eight, method="stream", largest_params=lm_head)
    with pytest.raises(EdgekitError, match="the check on a slice of 758M parameters.*--no-verify"):
        onnx_conv.check_memory(seven_b, "int4", eight, method="stream", largest_params=lm_head,
                               slice_params=757_897_216)


# ---------------------------------------------------------------- the check on a slice


@pytest.mark.parametrize("precision", ["fp16", "int4"])
def test_too_big_for_the_whole_check_is_checked_on_a_slice(deep_qwen, tmp_path, monkeypatch, precision):
    """Above the whole-model default (3B), the same checks run on the first layers and vocabulary rows."""
    monkeypatch.setattr(onnx_conv, "verify_decision", lambda v, n: (False, "not verified: over 3B"))
    monkeypatch.setattr(onnx_conv, "SLICE_VOCAB", 512)
    manifest = onnx_conv.export_onnx(str(deep_qwen), tmp_path / "out", precision, threads=2)
    v = manifest.files[0].verify
    assert manifest.verified and manifest.verify_skipped is None
    assert v["slice"] == {"layers": 3, "of_layers": LAYERS, "vocab_rows": 512, "of_vocab": 1088}
    assert (v["vs_dequantized"] if precision == "int4" else v)["passed"]


def test_the_slice_check_fails_on_wrong_weights(deep_qwen, tmp_path, monkeypatch):
    """One weight read scaled: the slice's logits leave transformers', and nothing is written."""
    monkeypatch.setattr(onnx_conv, "verify_decision", lambda v, n: (False, "not verified: over 3B"))
    monkeypatch.setattr(onnx_conv, "SLICE_VOCAB", 512)
    real = onnx_stream.checkpoint_reader

    def scaling(ckpt, sources, dtype):
        read = real(ckpt, sources, dtype)
        return lambda proto: read(proto) * (3.0 if ".layers.1.mlp.down_proj" in proto.name else 1.0)

    monkeypatch.setattr(onnx_stream, "checkpoint_reader", scaling)
    with pytest.raises(EdgekitError, match="FP32 ONNX"):
        onnx_conv.export_onnx(str(deep_qwen), tmp_path / "out", "fp32", threads=2)
    assert list(tmp_path.iterdir()) == []


def test_optimums_ort_model_generates_from_the_streamed_export(deep_qwen, exports):
    """optimum's own ONNX Runtime model class loads the streamed folder and generates transformers' tokens."""
    import torch
    from optimum.onnxruntime import ORTModelForCausalLM
    from transformers import AutoModelForCausalLM

    folder = exports(deep_qwen, "fp32", "stream")
    prompt = torch.tensor([IDS[:6]])
    ort_model = ORTModelForCausalLM.from_pretrained(str(folder), use_cache=True, use_io_binding=False)
    got = ort_model.generate(prompt, max_new_tokens=8, do_sample=False)
    want = AutoModelForCausalLM.from_pretrained(str(deep_qwen), dtype=torch.float32).generate(
        prompt, max_new_tokens=8, do_sample=False)
    assert got.tolist() == want.tolist()
