"""INT4 (weight-only) ONNX: onnxruntime.quantization's MatMulNBits quantizer and the checks of what it wrote.

quantize_int4 packs every MatMul weight (blockwise round-to-nearest, the MatMulNBits contrib op;
optionally the embedding as GatherBlockQuantized) of the FP32 graph. To check the result,
build_dequantized_reference turns the INT4 graph back into an FP32 one on its dequantized
weights (dequantize_matmul_nbits, dequantize_gather_block), with_accuracy_level and
with_activation_rounding give the kernels' arithmetic at an accuracy level, and verify_int4
runs those checks for the export.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit import parity
from edgekit.converters.onnx_graph import onnx_logits, quiet, save_model
from edgekit.converters.onnx_stream import ExternalData, Streamed, onnx_reader, streamed_file, write_model
from edgekit.errors import EdgekitError

ACCURACY_LEVELS = {0: "unset (the EP's default)", 1: "fp32", 2: "fp16", 3: "bf16", 4: "int8"}


@dataclass(frozen=True)
class Int4Options:
    """MatMulNBits settings. Smaller blocks: more scales (bigger file, closer to FP32);
    asymmetric: a zero point per block (closer, bigger, slower); accuracy_level 4 lets CPU
    kernels quantize activations to int8 per block (fastest on CPU, a little less exact);
    quantize_embedding also packs the token embedding (GatherBlockQuantized, opset 21)."""

    block_size: int = 32
    symmetric: bool = True
    accuracy_level: int = 4
    quantize_embedding: bool = False
    form: str = "matmulnbits"  # or "qdq": DequantizeLinear + MatMul (TensorRT's form; symmetric only)

    def check(self) -> None:
        if self.block_size not in (16, 32, 64, 128, 256):
            raise EdgekitError(f"INT4 block size {self.block_size} is not supported",
                               "choose 16, 32, 64, 128 or 256 (32 is the default)")
        if self.form not in ("matmulnbits", "qdq"):
            raise EdgekitError(f"unknown INT4 form '{self.form}'", "choose matmulnbits or qdq")
        if self.form == "qdq" and (not self.symmetric or self.quantize_embedding):
            raise EdgekitError("the QDQ INT4 form is symmetric MatMul weights only (TensorRT takes no zero points)",
                               "drop --asymmetric and --quantize-embedding")
        if self.accuracy_level not in ACCURACY_LEVELS:
            raise EdgekitError(f"accuracy level {self.accuracy_level} is not one of 0-4",
                               "choose 0 (unset), 1 (fp32), 2 (fp16), 3 (bf16) or 4 (int8, default)")


# ---------------------------------------------------------------- quantization


def quantize_int4(src, dst: Path, opts: Int4Options, progress=None) -> None:
    """onnxruntime's weight-only INT4 quantizer over every MatMul weight (and optionally the
    embedding Gather), in `opts.form`: "matmulnbits" (the MatMulNBits contrib op, ONNX Runtime's
    kernels) or "qdq" (blocked INT4 DequantizeLinear in front of each MatMul, opset 21, axis 0 of
    the [K, N] weight, scales in the graph's float type: the form TensorRT's parser imports as
    weight-only INT4; from an FP16 graph the activations stay FP16).

    `src` is an ONNX file (its weights memory-mapped) or a converters.onnx_stream.Streamed model
    (weights read from the checkpoint); either way one weight is in memory at a time, quantized by
    onnxruntime's own per-node quantizer into the nodes and bytes its whole-model quantizer writes
    (converters/onnx_stream.write_model), and `dst` gets its weights in `<dst>_data`."""
    opts.check()
    with quiet():
        write_model(src if isinstance(src, Streamed) else streamed_file(Path(src)), Path(dst), int4=opts,
                    progress=progress)


def quantize_int4_qdq(src: Path, dst: Path, block_size: int = 32) -> None:
    """quantize_int4 in the form TensorRT takes: QDQ, symmetric (signed INT4, no zero points),
    MatMul weights only."""
    quantize_int4(src, dst, Int4Options(block_size=block_size, symmetric=True, form="qdq"))


# ---------------------------------------------------------------- INT4 reference


def dequantize_matmul_nbits(packed: np.ndarray, scales: np.ndarray, zero_points: np.ndarray | None,
                            k: int, n: int, block_size: int) -> np.ndarray:
    """MatMulNBits' 4-bit B (N x blocks x block_size/2 bytes, low nibble first) -> float32 [K, N],
    the layout of the MatMul weight it replaced."""
    n_blocks = packed.shape[1]
    q = np.empty((n, n_blocks, block_size), dtype=np.float32)
    q[..., 0::2] = packed & 0x0F
    q[..., 1::2] = packed >> 4
    scales = scales.reshape(n, n_blocks).astype(np.float32)
    if zero_points is None:
        zp = np.full((n, n_blocks), 8.0, dtype=np.float32)
    elif zero_points.dtype == np.uint8:  # 4-bit zero points, two per byte: [N, ceil(blocks / 2)]
        zb = zero_points.reshape(n, -1)
        zp = np.stack([zb & 0x0F, zb >> 4], axis=-1).reshape(n, -1)[:, :n_blocks].astype(np.float32)
    else:
        zp = zero_points.reshape(n, n_blocks).astype(np.float32)
    w = (q - zp[..., None]) * scales[..., None]
    return np.ascontiguousarray(w.reshape(n, n_blocks * block_size)[:, :k].T)


def dequantize_gather_block(data: np.ndarray, scales: np.ndarray, zero_points: np.ndarray | None,
                            block_size: int) -> np.ndarray:
    """GatherBlockQuantized's int4/uint4 table [rows, cols] (blocks along cols, the last one
    possibly short) -> float32."""
    rows, cols = data.shape
    padded = -(-cols // block_size) * block_size
    q = np.zeros((rows, padded), dtype=np.float32)
    q[:, :cols] = data.astype(np.float32)
    q = q.reshape(rows, -1, block_size)
    zp = 0.0 if zero_points is None else zero_points.astype(np.float32).reshape(rows, -1)[..., None]
    w = (q - zp) * scales.astype(np.float32).reshape(rows, -1)[..., None]
    return w.reshape(rows, padded)[:, :cols]


def fp32_weight_reader(fp32_path: Path):
    """name -> the FP32 graph's initializer as an array, external data memory-mapped (not loaded)."""
    import onnx

    model = onnx.load(str(fp32_path), load_external_data=False)
    index = {t.name: t for t in model.graph.initializer}
    read_tensor = onnx_reader(fp32_path)

    def read(name: str) -> np.ndarray | None:
        t = index.get(name)
        return read_tensor(t) if t is not None and t.data_type == onnx.TensorProto.FLOAT else None

    return read


def quantization_error_steps(w: np.ndarray, deq: np.ndarray, scales: np.ndarray, block_axis: int,
                             block_size: int) -> float:
    """max |dequantized - original| in units of each block's step (|scale|)."""
    step = np.abs(np.repeat(scales.astype(np.float32), block_size, axis=1))  # [rows, blocks*bs]
    step = step[:, : (w.shape[0] if block_axis == 0 else w.shape[1])]
    if block_axis == 0:  # MatMul weights [K, N], blocks along K; scales [N, blocks]
        step = step.T
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.abs(np.asarray(deq, dtype=np.float32) - np.asarray(w, dtype=np.float32)) / np.maximum(step, 1e-30)
    return float(np.nanmax(ratio)) if ratio.size else 0.0


def build_dequantized_reference(int4_path: Path, out_path: Path, fp32_path: Path | None = None) -> dict:
    """The INT4 graph with every MatMulNBits turned back into a MatMul (and GatherBlockQuantized into
    a Gather) on its dequantized FP32 weights: what the INT4 model computes, up to kernel arithmetic.

    Weights stream to one external data file as they are dequantized, so building it needs the
    INT4 model plus one FP32 weight in RAM (the 1.5B reference is 7 GB on disk, not in memory).
    With `fp32_path`, each dequantized weight is also compared with its FP32 original: round to
    nearest keeps every weight within half a step (with zero points) or one step (symmetric:
    the largest magnitude maps to -8, the other side clamps at +7).
    Returns {"weights": replaced, "max_error_steps": ..., "bound_steps": ..., "passed": ...}.
    """
    import onnx
    from onnx import helper, numpy_helper

    original = fp32_weight_reader(fp32_path) if fp32_path else None
    worst, bound, compared = 0.0, 0.5, 0

    model = onnx.load(str(int4_path))
    graph = model.graph
    init = {t.name: t for t in graph.initializer}
    arr = lambda name: numpy_helper.to_array(init[name]) if name in init else None  # noqa: E731
    data_name = out_path.name + "_data"
    new_nodes, dropped, added = [], set(), []
    data = ExternalData(out_path.parent / data_name)
    try:
        def external(name: str, w: np.ndarray):
            added.append(data.add_array(onnx.TensorProto(name=name, data_type=onnx.TensorProto.FLOAT),
                                        np.asarray(w, dtype=np.float32)))

        for node in graph.node:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if node.op_type == "MatMulNBits" and attrs.get("bits", 4) == 4:
                zp = arr(node.input[3]) if len(node.input) > 3 and node.input[3] else None
                scales = arr(node.input[2])
                w = dequantize_matmul_nbits(arr(node.input[1]), scales, zp, attrs["K"], attrs["N"],
                                            attrs["block_size"])
                src = original(_source_name(node.input[1])) if original else None
                if src is not None:
                    bound = max(bound, 1.0 if zp is None else 0.5)
                    worst = max(worst, quantization_error_steps(src, w, scales.reshape(attrs["N"], -1), 0,
                                                                attrs["block_size"]))
                    compared += 1
                name = _source_name(node.input[1]) + "_dequantized"
                external(name, w)
                dropped.update(i for i in node.input[1:] if i)
                out = node.output[0]
                if len(node.input) > 5 and node.input[5]:  # bias
                    mid = out + "_nobias"
                    new_nodes += [helper.make_node("MatMul", [node.input[0], name], [mid], name=node.name),
                                  helper.make_node("Add", [mid, node.input[5]], [out], name=node.name + "_bias")]
                    dropped.discard(node.input[5])
                else:
                    new_nodes.append(helper.make_node("MatMul", [node.input[0], name], [out], name=node.name))
            elif node.op_type == "GatherBlockQuantized":
                zp = arr(node.input[3]) if len(node.input) > 3 and node.input[3] else None
                scales = arr(node.input[2])
                w = dequantize_gather_block(arr(node.input[0]), scales, zp, attrs["block_size"])
                src = original(_source_name(node.input[0])) if original else None
                if src is not None:
                    bound = max(bound, 1.0 if zp is None else 0.5)
                    worst = max(worst, quantization_error_steps(src, w, scales.reshape(w.shape[0], -1), 1,
                                                                attrs["block_size"]))
                    compared += 1
                name = _source_name(node.input[0]) + "_dequantized"
                external(name, w)
                dropped.update(i for i in (node.input[0], *node.input[2:]) if i)
                new_nodes.append(helper.make_node("Gather", [name, node.input[1]], list(node.output),
                                                  name=node.name, axis=attrs.get("gather_axis", 0)))
            else:
                new_nodes.append(node)
        replaced = len(added)
        kept = []
        for t in graph.initializer:  # big unquantized weights (an FP32 embedding) too: the proto stays < 2 GB
            if t.name in dropped:
                continue
            if t.data_type == onnx.TensorProto.FLOAT and t.ByteSize() > (1 << 20):
                external(t.name, numpy_helper.to_array(t))
            else:
                kept.append(t)
    finally:
        data.close()
    del graph.node[:]
    graph.node.extend(new_nodes)
    del graph.initializer[:]
    graph.initializer.extend(kept + added)
    onnx.save_model(model, str(out_path))
    return {"weights": replaced, "compared_to_fp32": compared, "max_error_steps": worst,
            "bound_steps": bound, "passed": compared == replaced and worst <= bound * 1.001 + 1e-4}


# accuracy level -> how MatMulNBits' CPU kernels round the activations (MLAS: 1 fp32, 2 fp16,
# 3 bf16, 4 int8 per block of block_size along K, symmetric, scale = max |x| / 127)
ACTIVATION_ROUNDING = {2: "fp16", 3: "bf16", 4: "int8"}


def with_activation_rounding(ref_path: Path, dst: Path, mode: str, block_size: int) -> int:
    """A copy of the dequantized reference (`build_dequantized_reference`) whose every MatMul on a
    dequantized weight first rounds its input the way MatMulNBits' kernels at an accuracy level do
    (`mode`: fp16, bf16 or int8). `dst` sits beside `ref_path` and shares its external data file.
    Returns the number of MatMuls changed."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(ref_path), load_external_data=False)
    graph = model.graph
    consts = [numpy_helper.from_array(np.array([0, 0, -1, block_size], dtype=np.int64), "_rnd_blocks"),
              numpy_helper.from_array(np.array([-1], dtype=np.int64), "_rnd_last"),
              numpy_helper.from_array(np.array(127.0, dtype=np.float32), "_rnd_127"),
              numpy_helper.from_array(np.array(1e-30, dtype=np.float32), "_rnd_tiny")]
    nodes, changed = [], 0
    for node in graph.node:
        if node.op_type == "MatMul" and node.input[1].endswith("_dequantized"):
            x, y = node.input[0], f"{node.name}_rounded_input"
            p = f"{node.name}_rnd"
            if mode in ("fp16", "bf16"):
                to = TensorProto.FLOAT16 if mode == "fp16" else TensorProto.BFLOAT16
                nodes += [helper.make_node("Cast", [x], [p + "_low"], to=to),
                          helper.make_node("Cast", [p + "_low"], [y], to=TensorProto.FLOAT)]
            else:  # int8 per block: blocks on a new last axis, scale per block, round, scale back
                nodes += [helper.make_node("Shape", [x], [p + "_shape"]),
                          helper.make_node("Reshape", [x, "_rnd_blocks"], [p + "_b"]),
                          helper.make_node("Abs", [p + "_b"], [p + "_abs"]),
                          helper.make_node("ReduceMax", [p + "_abs", "_rnd_last"], [p + "_max"], keepdims=1),
                          helper.make_node("Div", [p + "_max", "_rnd_127"], [p + "_s0"]),
                          helper.make_node("Max", [p + "_s0", "_rnd_tiny"], [p + "_s"]),
                          helper.make_node("Div", [p + "_b", p + "_s"], [p + "_q0"]),
                          helper.make_node("Round", [p + "_q0"], [p + "_q"]),
                          helper.make_node("Mul", [p + "_q", p + "_s"], [p + "_dq"]),
                          helper.make_node("Reshape", [p + "_dq", p + "_shape"], [y])]
            node.input[0] = y
            changed += 1
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    graph.initializer.extend(consts)
    onnx.save_model(model, str(dst))
    return changed


def _source_name(quantized_name: str) -> str:
    for suffix in ("_Q4G", "_Q4"):
        if quantized_name.endswith(suffix):
            return quantized_name[: -len(suffix)]
    return quantized_name


# ---------------------------------------------------------------- parity

# INT4 is checked twice against the FP32 graph run on its own dequantized weights:
# - the weights: the model with every MatMulNBits set to accuracy_level 1 (fp32 compute) must
#   match to float rounding (what it measured: docs/benchmarks.md). This pins the packed
#   weights and our reading of them; a wrong packing moves logits by O(1) x std.
# - the shipped kernels at the chosen accuracy level: against the same reference, with the
#   tolerance derived as for unquantized exports (parity.compare_to_reference): the reference
#   once more with the level's activation rounding emulated (with_activation_rounding) says how
#   far rounding alone moves this checkpoint's logits (more, the larger the weights: a deep stack
#   of large weights amplifies every rounding; docs/benchmarks.md). Level 1 must match to float
#   rounding; level 0 lets the provider choose, so only a gross bound applies.
INT4_WEIGHTS_REL_TOL = 0.002
INT4_LEVEL0_REL_TOL = 0.5


def with_accuracy_level(src: Path, dst: Path, level: int) -> None:
    """A copy of an INT4 model with every MatMulNBits at `level` (same weights)."""
    import onnx

    model = onnx.load(str(src))
    for node in model.graph.node:
        if node.op_type == "MatMulNBits":
            for attr in node.attribute:
                if attr.name == "accuracy_level":
                    attr.i = level
                    break
            else:
                node.attribute.append(onnx.helper.make_attribute("accuracy_level", level))
    save_model(model, dst)


def verify_int4(final: Path, fp32: Path, work: Path, ref: np.ndarray, got: np.ndarray, ids: list[int],
                threads: int | None, accuracy_level: int, block_size: int) -> dict:
    """FP32 graph vs transformers, INT4 weights and kernels vs the dequantized reference, KL vs FP32."""
    base = onnx_logits(fp32, ids, threads)
    qdq_path = work / "reference.onnx"
    weights = build_dequantized_reference(final, qdq_path, fp32)
    qdq = onnx_logits(qdq_path, ids, threads)
    if accuracy_level == 1:
        exact = got
    else:
        with_accuracy_level(final, work / "fp32-compute.onnx", 1)
        exact = onnx_logits(work / "fp32-compute.onnx", ids, threads)
    mode = ACTIVATION_ROUNDING.get(accuracy_level)
    if mode:
        with_activation_rounding(qdq_path, work / "reference-rounded.onnx", mode, block_size)
        kernels = parity.compare_to_reference(qdq, got, emulated=onnx_logits(work / "reference-rounded.onnx", ids,
                                                                             threads))
    else:
        kernels = parity.compare_to_reference(qdq, got, INT4_WEIGHTS_REL_TOL if accuracy_level == 1
                                              else INT4_LEVEL0_REL_TOL)
    tol = kernels["rel_tol"]
    # top-1 is not asked of the kernels: with int8 activations near-ties flip on random weights
    kernels["passed"] = bool(np.isfinite(got).all() and kernels["rel_p999_diff"] <= tol)
    info = {"weights_vs_fp32": weights,
            "weights_vs_dequantized": parity.compare_to_reference(qdq, exact, INT4_WEIGHTS_REL_TOL),
            "vs_dequantized": {**kernels, "accuracy_level": accuracy_level},
            "vs_fp32": {**parity.compare_quantized(base, got), "vs": "F32"},
            "fp32_vs_transformers": parity.compare_to_reference(ref, base, parity.FLOOR_REL)}
    bad = [k for k in ("fp32_vs_transformers", "weights_vs_fp32", "weights_vs_dequantized", "vs_dequantized")
           if not info[k]["passed"]]
    if not info["vs_fp32"]["finite"]:
        bad.append("non-finite logits")
    if bad:
        w, k, f = info["weights_vs_dequantized"], info["vs_dequantized"], info["fp32_vs_transformers"]
        raise EdgekitError(
            f"INT4 ONNX check failed ({', '.join(bad)}): INT4 weights within {weights['max_error_steps']:.3g} "
            f"quantization steps of FP32 (bound {weights['bound_steps']}, {weights['compared_to_fp32']} of "
            f"{weights['weights']} compared); 99.9th pct |logit diff| / logit std: FP32 graph vs "
            f"transformers {f['rel_p999_diff']:.3g} (tolerance {f['rel_tol']}), INT4 weights vs dequantized "
            f"reference {w['rel_p999_diff']:.3g} (tolerance {INT4_WEIGHTS_REL_TOL}), INT4 at accuracy level "
            f"{accuracy_level} {k['rel_p999_diff']:.3g} (tolerance {tol:.3g}"
            + (f" = {k['rule']}, where {k['precision_rel_p999']:.3g} is what the level's rounding alone does"
               if "rule" in k else "") + ")",
            "nothing was written; please report this checkpoint, or pass --no-verify")
    return info
