"""ONNX decoder -> TensorRT engine: optimisation profiles, the builder (Python API or trtexec),
and what trtexec says about the engine it built.

An engine is bound to the GPU and the TensorRT version that built it, so it is built where it
runs (a Jetson: `edgekit export tensorrt --on DEST`); this module is the part that is the same
wherever that is.

Contract:
- `decoder_inputs(onnx_path)`: the graph's inputs (name, dims: int or a symbolic name or sum of
  names, element type), read without the weights.
- `decoder_dims(genai_config)`: layers, KV heads, head size of the model (edgekit's export writes
  genai_config.json beside model.onnx). `check_dims(inputs, dims)` says where the graph and the
  config disagree.
- `derive_profiles(inputs, max_prompt, max_context)`: two profiles, "prefill" (batch 1, a prompt
  of 1..max_prompt tokens, an empty cache) and "decode" (batch 1, one token, a cache of
  0..max_context-1 positions), for every dynamic input, from the graph's own symbolic dims:
  batch_size, sequence_length, past_sequence_length and sums of them (the attention mask's
  `past_sequence_length + sequence_length`). An input whose dims name anything else is refused.
- `trtexec_command(...)`: the argv of a trtexec build with those profiles.
- `parse_trtexec_log(text)`: TensorRT's version, the GPU's name and compute capability, and
  whether the engine was written, from trtexec's own lines.
- `build_engine(trt, ...)`: the same build through the Python API of a `tensorrt` module
  (TensorRT, or TensorRT-RTX's `tensorrt_rtx`, whose builder, network and OnnxParser are the
  same API): a strongly typed network (each tensor's type is the ONNX graph's: FP16 from an FP16
  export, INT4 weights from blocked INT4 DequantizeLinear), written under a temporary name and
  renamed.
Pure but for `decoder_inputs` (reads the file) and `build_engine` (runs the builder).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from edgekit.errors import EdgekitError
from edgekit.options import TENSORRT_BUILDERS, TENSORRT_PRECISIONS
from edgekit.runners.onnxruntime import load_graph
from edgekit.tensorrt_profiles import (
    GraphInput,
    Profile,
    graph_inputs,
    shapes_arg,
)

# the symbolic dims of edgekit's (optimum's) decoder graph, and what each is in a profile
PRECISIONS = TENSORRT_PRECISIONS


@dataclass(frozen=True)
class DecoderDims:
    layers: int
    kv_heads: int
    head_size: int
    vocab_size: int | None = None
    context_length: int | None = None


def decoder_inputs(onnx_path: Path) -> list[GraphInput]:
    """The inputs of the ONNX graph at `onnx_path` (its weights are not read)."""
    return graph_inputs(load_graph(Path(onnx_path)))


def decoder_dims(genai_config: dict) -> DecoderDims:
    """The model's own dims from genai_config.json (model.decoder: num_hidden_layers,
    num_key_value_heads, head_size)."""
    try:
        model = genai_config["model"]
        dec = model["decoder"]
        return DecoderDims(int(dec["num_hidden_layers"]), int(dec["num_key_value_heads"]), int(dec["head_size"]),
                           model.get("vocab_size"), model.get("context_length"))
    except (KeyError, TypeError, ValueError) as e:
        raise EdgekitError(f"genai_config.json lacks the decoder's dims ({e})",
                           "re-export the ONNX with edgekit export onnx") from None


def _past_inputs(inputs: list[GraphInput]) -> list[GraphInput]:
    return [i for i in inputs if re.fullmatch(r"past_key_values\.\d+\.(key|value)", i.name)]


def check_dims(inputs: list[GraphInput], dims: DecoderDims) -> None:
    """EdgekitError where the graph's cache inputs disagree with the model's dims: one key and one
    value per layer, each [batch, kv_heads, past, head_size]."""
    past = _past_inputs(inputs)
    if len(past) != 2 * dims.layers:
        raise EdgekitError(f"the graph has {len(past)} past key/value inputs, the model {dims.layers} layers "
                           f"(needs {2 * dims.layers})", "re-export the ONNX from the checkpoint")
    for i in past:
        if len(i.dims) != 4 or i.dims[1] != dims.kv_heads or i.dims[3] != dims.head_size:
            raise EdgekitError(f"{i.name} is {list(i.dims)}, the model's cache is [batch, {dims.kv_heads}, past, "
                               f"{dims.head_size}]", "re-export the ONNX from the checkpoint")


def trtexec_command(trtexec: str, onnx_path: str, engine_path: str, profiles: list[Profile], *,
                    workspace_mib: int | None = None, timing_cache: str | None = None) -> list[str]:
    """The argv of a trtexec build: a strongly typed network (the graph's own types), one
    `--profile=N` triple of min/opt/max shapes per profile, --skipInference."""
    argv = [trtexec, f"--onnx={onnx_path}", f"--saveEngine={engine_path}", "--stronglyTyped", "--skipInference"]
    for n, p in enumerate(profiles):
        argv += [f"--profile={n}", f"--minShapes={shapes_arg(p, 0)}", f"--optShapes={shapes_arg(p, 1)}",
                 f"--maxShapes={shapes_arg(p, 2)}"]
    if workspace_mib:
        argv.append(f"--memPoolSize=workspace:{workspace_mib}M")
    if timing_cache:
        argv.append(f"--timingCacheFile={timing_cache}")
    return argv


@dataclass
class TrtexecFacts:
    tensorrt_version: str | None = None   # "10.3.0"
    device: str | None = None             # "Orin"
    compute_capability: str | None = None  # "8.7"
    passed: bool = False                  # trtexec's final "&&&& PASSED" line
    engine_built: bool = False            # "Engine built in <s> sec."
    errors: list[str] = field(default_factory=list)


def _trt_version(code: str) -> str:
    """trtexec's [TensorRT v100300] -> 10.3.0 (major*10000 + minor*100 + patch since TensorRT 10)."""
    n = int(code)
    if n >= 10000:
        return f"{n // 10000}.{n // 100 % 100}.{n % 100}"
    return f"{n // 1000}.{n // 100 % 10}.{n % 100}"  # TensorRT 8: v8601 -> 8.6.1


def parse_trtexec_log(text: str) -> TrtexecFacts:
    """What trtexec printed about itself, the GPU and the build. Pure; unknown lines are ignored."""
    facts = TrtexecFacts()
    for line in text.splitlines():
        m = re.search(r"\[TensorRT v(\d+)\]", line)
        if m and facts.tensorrt_version is None:
            facts.tensorrt_version = _trt_version(m.group(1))
        m = re.search(r"Selected Device:\s*(.+?)\s*$", line)
        if m:
            facts.device = m.group(1)
        m = re.search(r"Compute Capability:\s*(\d+\.\d+)", line)
        if m:
            facts.compute_capability = m.group(1)
        if re.search(r"Engine built in [\d.]+ sec", line):
            facts.engine_built = True
        if line.startswith("&&&& PASSED"):
            facts.passed = True
        if "[E]" in line or "Error[" in line:
            facts.errors.append(line.strip())
    return facts


def genai_dims_of(onnx_path: Path) -> DecoderDims:
    """decoder_dims of the genai_config.json beside an ONNX decoder."""
    cfg = Path(onnx_path).parent / "genai_config.json"
    try:
        return decoder_dims(json.loads(cfg.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        raise EdgekitError(f"{cfg} is missing or unreadable", "pass an edgekit ONNX export folder") from None


# onnx TensorProto element types
FLOAT, FLOAT16, UINT4, INT4 = 1, 10, 21, 22


def int4_block_size(model) -> int | None:
    """The block_size attribute of the graph's INT4 DequantizeLinear weights (the first one), or None."""
    from onnx import helper

    init = {t.name: t.data_type for t in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type == "DequantizeLinear" and init.get(n.input[0]) == INT4:
            for a in n.attribute:
                if a.name == "block_size":
                    return int(helper.get_attribute_value(a))
    return None


def graph_precision(model) -> tuple[str, list[str]]:
    """("fp32" | "fp16" | "int4", problems) of an ONNX decoder for TensorRT: int4 when its
    MatMul weights are blocked INT4 DequantizeLinear, else the type of its largest float weight.
    `problems` name what TensorRT's parser refuses: ONNX Runtime's MatMulNBits and other
    com.microsoft ops (edgekit's default INT4 export, --fuse), UINT4 weights (asymmetric blocks)
    and non-zero zero points."""
    import numpy as np
    from onnx import numpy_helper

    graph = model.graph
    init = {t.name: t for t in graph.initializer}
    problems = []
    contrib = sorted({n.op_type for n in graph.node if n.domain == "com.microsoft"})
    if contrib:
        problems.append(f"the graph uses ONNX Runtime's own ops ({', '.join(contrib)}), which TensorRT's parser lacks")
    dq = [n for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in init]
    int4 = False
    for n in dq:
        w = init[n.input[0]]
        if w.data_type == UINT4:
            problems.append(f"{w.name} is UINT4 (asymmetric blocks): TensorRT takes signed INT4 without zero points")
            break
        if w.data_type == INT4:
            int4 = True
            if len(n.input) > 2 and n.input[2] in init and np.any(numpy_helper.to_array(init[n.input[2]]) != 0):
                problems.append(f"{w.name} has non-zero zero points: TensorRT takes symmetric INT4 only")
                break
    floats = [t for t in init.values() if t.data_type in (FLOAT, FLOAT16)]
    big = max(floats, key=lambda t: int(np.prod(t.dims)) if t.dims else 0, default=None)
    if int4 or any(n.op_type == "MatMulNBits" for n in graph.node):
        return "int4", problems
    return ("fp16" if big is not None and big.data_type == FLOAT16 else "fp32"), problems


BUILDER_MODULES = {name: name.replace("-", "_") for name in TENSORRT_BUILDERS}  # builder -> its import name


def plan_accelerators(plan: bytes) -> list[str]:
    """The GPU architectures a TensorRT-RTX plan holds code for (its `accelerators={sm86 }`
    field), or [] (a TensorRT plan, which is for the GPU that built it)."""
    m = re.search(rb"accelerators=\{([a-z0-9 ]*)\}", bytes(plan[:1 << 20]))
    return m.group(1).decode().split() if m else []


def build_engine(trt, onnx_path: Path, engine_path: Path, profiles: list[Profile], *,
                 workspace_bytes: int | None = None, target_sm: str | None = None,
                 log_lines: list[str] | None = None) -> dict:
    """Build and write an engine with the Python API of `trt` (the tensorrt or tensorrt_rtx
    module): a strongly typed network, the profiles given, into engine_path (temporary name,
    then rename). TensorRT builds for the GPU it runs on; TensorRT-RTX builds without one, for
    `target_sm` ("SM86"; its default is SM80), and has no Jetson (SM87) target.
    Returns {"tensorrt_version", "engine_bytes", "profiles", "accelerators", "log"}; an
    EdgekitError names the parser's or builder's first error."""
    lines = log_lines if log_lines is not None else []

    class Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)

        def log(self, severity, msg):
            lines.append(f"[{getattr(severity, 'name', str(severity).rsplit('.', 1)[-1])}] {msg}")

    logger = Logger()
    builder = trt.Builder(logger)
    if builder is None:
        raise EdgekitError("TensorRT could not start its builder (no usable NVIDIA GPU or driver?)",
                           "build on the device (--on DEST), or check `nvidia-smi`")
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(Path(onnx_path).absolute())):  # it finds model.onnx_data beside it
        errors = [parser.get_error(n).desc() for n in range(parser.num_errors)]
        raise EdgekitError(f"TensorRT's ONNX parser refused {onnx_path}: {(errors or ['no error given'])[0][:300]}",
                           "export with edgekit export onnx (never --fuse: its contrib ops are ONNX Runtime's)")
    config = builder.create_builder_config()
    if workspace_bytes:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    if target_sm:
        capability = getattr(getattr(trt, "ComputeCapability", None), target_sm.upper(), None)
        if capability is None:
            known = [n for n in dir(getattr(trt, "ComputeCapability", object)) if n.startswith("SM")]
            raise EdgekitError(f"this builder cannot target {target_sm}" + (f" (it knows {', '.join(known)})"
                                                                              if known else ""),
                               "leave the target out: TensorRT builds for the GPU it runs on")
        config.num_compute_capabilities = 1
        config.set_compute_capability(capability, 0)
    names = {network.get_input(n).name for n in range(network.num_inputs)}
    for p in profiles:
        profile = builder.create_optimization_profile()
        for name, (lo, opt, hi) in p.shapes.items():
            if name not in names:
                raise EdgekitError(f"profile {p.name} names {name}, which the network has no input of",
                                   "derive the profiles from this graph (derive_profiles)")
            profile.set_shape(name, lo, opt, hi)
        if config.add_optimization_profile(profile) < 0:
            raise EdgekitError(f"TensorRT refused the {p.name} profile", "check --max-prompt / --max-context")
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        errors = [ln for ln in lines if ln.startswith(("[ERROR]", "[INTERNAL_ERROR]"))]
        raise EdgekitError(f"TensorRT could not build {onnx_path}: {(errors or ['no error logged'])[0][:300]}",
                           "read the build log; a larger --workspace or a smaller --max-context may help")
    data = memoryview(plan)
    engine_path = Path(engine_path)
    tmp = engine_path.with_name(f".{engine_path.name}.partial-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, engine_path)
    finally:
        tmp.unlink(missing_ok=True)
    return {"tensorrt_version": getattr(trt, "__version__", None), "engine_bytes": engine_path.stat().st_size,
            "profiles": [p.name for p in profiles], "accelerators": plan_accelerators(data)}
