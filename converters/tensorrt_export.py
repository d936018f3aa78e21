"""`edgekit export tensorrt` on this machine: an ONNX export (or a checkpoint, exported to FP16
ONNX first) -> a TensorRT engine folder.

The folder: model.engine, manifest.json (format "tensorrt", the engine's file and sha256, and an
`engine` record: what it is bound to, its profiles, precision, the source ONNX's sha256),
genai_config.json and the tokenizer files (what a runner needs beside the engine), build.log.
Built in a hidden folder beside the output and renamed into place only when the build succeeded.

Precision comes from the graph (every network is strongly typed): FP16 from an FP16 export;
INT4 weight-only from blocked INT4 DequantizeLinear weights, which an FP16 export is quantized to
here (converters.onnx_int4.quantize_int4_qdq) when it has none. What TensorRT's parser refuses
(MatMulNBits, --fuse's contrib ops, asymmetric INT4) and FP32 graphs are refused with the export
command that makes a graph it takes.

The builder runs in a child process (edgekit.native): a crash inside TensorRT is one error line.
"""

from __future__ import annotations

import importlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edgekit import native
from edgekit.atomic import atomic_dir, check_output_dir
from edgekit.converters.onnx import export_onnx
from edgekit.converters.onnx_int4 import quantize_int4_qdq
from edgekit.converters.tensorrt import (
    BUILDER_MODULES,
    PRECISIONS,
    DecoderDims,
    build_engine,
    check_dims,
    decoder_inputs,
    genai_dims_of,
    graph_precision,
    int4_block_size,
)
from edgekit.errors import EdgekitError
from edgekit.llamacpp_build import cache_root
from edgekit.manifest import ArtifactFile, EngineInfo, ExportManifest, sha256_of, tool_versions
from edgekit.runners.onnxruntime import load_graph
from edgekit.targets.host import host_facts
from edgekit.tensorrt_profiles import Profile, derive_profiles

Progress = Callable[[str, float, float], None]

ENGINE_FILE = "model.engine"
BUILD_LOG = "build.log"
QUANT_NAME = {"fp16": "F16", "int4": "INT4"}
# files of an ONNX export a runner of the engine reads (its dims, the tokenizer)
BESIDE = ("genai_config.json", "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
          "special_tokens_map.json", "chat_template.jinja", "tokenizer.model")


def import_builder(builder: str):
    """The Python module of `builder` ("tensorrt" or "tensorrt-rtx"), or an EdgekitError naming
    what is missing and the way round it (building on the device)."""
    if builder not in BUILDER_MODULES:
        raise EdgekitError(f"unknown builder '{builder}'", f"choose one of: {', '.join(BUILDER_MODULES)}")
    try:
        return importlib.import_module(BUILDER_MODULES[builder])
    except ImportError:
        if builder == "tensorrt":
            raise EdgekitError("TensorRT is not installed here (no `tensorrt` Python module), and an engine runs "
                               "only on the GPU and TensorRT version that built it",
                               "build it on the device it will run on: --on DEST (its trtexec; a Jetson: JetPack's); "
                               "for an RTX GPU: --builder tensorrt-rtx (pip install tensorrt-rtx), which needs no GPU") from None
        raise EdgekitError("TensorRT-RTX is not installed here (no `tensorrt_rtx` module)",
                           "pip install tensorrt-rtx") from None


def source_onnx(src: Path) -> Path:
    """model.onnx of an edgekit ONNX export folder (genai_config.json beside it), or an EdgekitError."""
    src = Path(src)
    model = src / "model.onnx" if src.is_dir() else src
    if model.suffix != ".onnx" or not model.is_file() or not (model.parent / "genai_config.json").is_file():
        raise EdgekitError(f"{src} is not an edgekit ONNX export (model.onnx with genai_config.json beside it)",
                           "pass an export folder (edgekit export onnx CHECKPOINT -o DIR --precision fp16) "
                           "or a checkpoint")
    return model


def _is_checkpoint(src: Path) -> bool:
    return Path(src).is_dir() and (Path(src) / "config.json").is_file() and not (Path(src) / "model.onnx").exists()


def onnx_sha256(onnx_path: Path) -> str:
    """sha256 of an ONNX model and its external data file(s), in name order: what its engine is
    built from (edgekit's exports keep the weights in model.onnx_data, not in the graph)."""
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    graph = load_graph(onnx_path)
    data = sorted({ExternalDataInfo(t).location for t in graph.graph.initializer if uses_external_data(t)})
    return sha256_of(onnx_path, 8 << 20, *(Path(onnx_path).parent / d for d in data))


def _trained_context(src: Path) -> int | None:
    """The context the model was trained for: genai_config.json of an ONNX export, config.json's
    max_position_embeddings of a checkpoint; None when neither says."""
    folder = Path(src) if Path(src).is_dir() else Path(src).parent
    for name, keys in (("genai_config.json", ("model", "context_length")), ("config.json", ("max_position_embeddings",))):
        try:
            value = json.loads((folder / name).read_text(encoding="utf-8"))
            for k in keys:
                value = value[k]
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if isinstance(value, int) and value > 0:
            return value
    return None


def graph_for(onnx_path: Path, precision: str, work: Path, block_size: int) -> Path:
    """The ONNX TensorRT builds for `precision`: the export itself when its graph already is of
    that precision, an FP16 export quantized to INT4 QDQ for int4, else an EdgekitError."""
    have, problems = graph_precision(load_graph(onnx_path))
    if problems:
        raise EdgekitError(f"TensorRT cannot import {onnx_path}: {problems[0]}",
                           "export it again without --fuse, at --precision fp16 (edgekit export tensorrt quantizes "
                           "an FP16 export to TensorRT's INT4 form itself)")
    if have == precision:
        return onnx_path
    if precision == "int4" and have == "fp16":
        work.mkdir(parents=True, exist_ok=True)
        for name in BESIDE:
            if (onnx_path.parent / name).is_file():
                shutil.copy2(onnx_path.parent / name, work / name)
        out = work / "model.onnx"
        quantize_int4_qdq(onnx_path, out, block_size)
        return out
    raise EdgekitError(f"{onnx_path} is {have.upper()}; a TensorRT {precision.upper()} engine is built from an "
                       f"FP16 ONNX" + (" (or an INT4 QDQ one)" if precision == "int4" else ""),
                       "export it with --precision fp16 (edgekit export onnx CHECKPOINT -o DIR --precision fp16)")


def build_log_path(out_dir: Path) -> Path:
    """Where an engine build's log goes while it runs: edgekit's log folder, so that a failed
    build (whose output folder is never made) leaves it for the error line to name."""
    logs = cache_root() / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    return logs / f"{time.strftime('%Y%m%dT%H%M%S')}-tensorrt-{Path(out_dir).name}.log"


def build_in_child(builder: str, onnx_path: str, engine_path: str, profiles: list[dict], workspace_bytes: int | None,
                   target_sm: str | None, log_path: str) -> dict:
    """converters.tensorrt.build_engine in an edgekit.native child; the builder's log goes to log_path."""
    trt = import_builder(builder)
    lines: list[str] = []
    try:
        return build_engine(trt, Path(onnx_path), Path(engine_path), [Profile.from_dict(p) for p in profiles],
                            workspace_bytes=workspace_bytes, target_sm=target_sm, log_lines=lines)
    except EdgekitError as e:
        raise EdgekitError(f"{e.problem} (build log: {log_path})", e.fix) from None
    finally:
        Path(log_path).write_text("\n".join(lines) + "\n", encoding="utf-8")


def runs_only_on(builder: str, version: str | None, accelerators: list[str], device: str | None,
                 compute_capability: str | None) -> str:
    """The sentence a TensorRT engine's manifest and inspect give about where it runs."""
    if builder == "tensorrt-rtx":
        return (f"runs only with TensorRT-RTX {version} on an RTX GPU of {', '.join(accelerators) or 'sm80'} "
                "(never on a Jetson)")
    gpu = f"{device or 'the GPU that built it'}" + (f" (compute capability {compute_capability})"
                                                     if compute_capability else "")
    return f"runs only on {gpu} with TensorRT {version}"


def check_request(src: Path, out_dir: Path, precision: str, max_prompt: int, max_context: int,
                  force: bool) -> None:
    """What an engine export can be refused for before any work (here or on a device)."""
    if precision not in PRECISIONS:
        raise EdgekitError(f"unknown precision '{precision}'", f"choose from: {', '.join(PRECISIONS)}")
    check_output_dir(Path(out_dir), force, inputs=(Path(src),))
    if not Path(src).exists():
        raise EdgekitError(f"{src} does not exist", "pass an ONNX export folder or a checkpoint folder")
    if max_prompt > max_context:
        raise EdgekitError(f"--max-prompt {max_prompt} is longer than --max-context {max_context}",
                           "pass --max-prompt <= --max-context")
    trained = _trained_context(Path(src))
    if trained and max_context > trained:
        raise EdgekitError(f"--max-context {max_context} is beyond the model's trained context ({trained})",
                           f"pass --max-context {trained} or less")


@dataclass
class Prepared:
    """What an engine build is made from: the source ONNX export, the graph TensorRT is given
    (the source itself, or its INT4 QDQ form), and the profiles derived from it."""

    src_onnx: Path
    graph: Path
    source: ExportManifest
    dims: DecoderDims
    source_sha256: str
    block_size: int | None
    profiles: list[Profile]


def prepare(src: Path, precision: str, work: Path, *, max_prompt: int, max_context: int, block_size: int,
            progress: Progress | None = None) -> Prepared:
    """The ONNX (exported from a checkpoint into `work` first), its graph for `precision` (an INT4
    QDQ one written into `work`, with a manifest of its own so that deploy can send it), checked
    against the model's dims, and the prefill/decode profiles."""
    src = Path(src)
    if _is_checkpoint(src):
        export_onnx(str(src), work / "onnx", precision="fp16", logits="last", progress=progress)
        src_onnx = work / "onnx" / "model.onnx"
    else:
        src_onnx = source_onnx(src)
    source = ExportManifest.read(src_onnx.parent)
    dims = genai_dims_of(src_onnx)
    graph = graph_for(src_onnx, precision, work / "int4", block_size)
    block = (int4_block_size(load_graph(graph)) or block_size) if precision == "int4" else None
    if graph != src_onnx:
        source.model_copy(update={"files": [ArtifactFile(
            file=graph.name, format="onnx", quant="INT4", size_bytes=graph.stat().st_size, sha256=sha256_of(graph),
            seconds=0.0, options={"form": "qdq", "block_size": block})]}).write(graph.parent)
    inputs = decoder_inputs(graph)
    check_dims(inputs, dims)
    return Prepared(src_onnx, graph, source, dims, onnx_sha256(src_onnx), block,
                    derive_profiles(inputs, max_prompt, max_context))


def engine_manifest(p: Prepared, precision: str, *, builder: str, tensorrt_version: str | None,
                    engine_bytes: int, engine_sha256: str, seconds: float, options: dict, built_on: str,
                    max_prompt: int, max_context: int, accelerators: list[str] = (), device: str | None = None,
                    compute_capability: str | None = None, location: str | None = None,
                    total_s: float = 0.0) -> ExportManifest:
    """The manifest of an engine folder, wherever the engine was built."""
    name = builder.split()[0]
    info = EngineInfo(
        engine="generic", builder=builder, tensorrt_version=tensorrt_version, accelerators=list(accelerators),
        device=device, compute_capability=compute_capability, built_on=built_on, location=location,
        precision=precision, max_prompt=max_prompt, max_context=max_context,
        profiles=[q.to_dict() for q in p.profiles],
        dims={"layers": p.dims.layers, "kv_heads": p.dims.kv_heads, "head_size": p.dims.head_size},
        source_onnx_sha256=p.source_sha256, block_size=p.block_size,
        runs_only_on=runs_only_on(name, tensorrt_version, list(accelerators), device, compute_capability))
    s = p.source
    return ExportManifest(
        format="tensorrt", source=s.source, architecture=s.architecture, n_params=s.n_params,
        vocab_size=s.vocab_size, context_length=s.context_length, tokenizer=s.tokenizer, name=s.name,
        files=[ArtifactFile(file=ENGINE_FILE, format="tensorrt", quant=QUANT_NAME[precision], size_bytes=engine_bytes,
                            sha256=engine_sha256, seconds=round(seconds, 3), options=options)],
        verified=None, verify_skipped="an engine runs only on its GPU: bench it there",
        tools={**tool_versions(), name: tensorrt_version or "unknown"}, host=host_facts(),
        total_s=round(total_s, 3), engine=info)


def copy_beside(src_onnx: Path, folder: Path) -> None:
    """genai_config.json and the tokenizer files of the source export, into an engine folder."""
    for name in BESIDE:
        if (src_onnx.parent / name).is_file():
            shutil.copy2(src_onnx.parent / name, folder / name)


def export_tensorrt(src: Path, out_dir: Path, precision: str = "fp16", *, max_prompt: int = 512,
                    max_context: int = 4096, builder: str = "tensorrt", target_sm: str | None = None,
                    workspace_mib: int | None = None, block_size: int = 32, force: bool = False,
                    progress: Progress | None = None) -> ExportManifest:
    """Build a TensorRT engine folder at `out_dir` from `src` (an ONNX export folder, or a
    checkpoint exported to FP16 ONNX first) on this machine; returns its manifest."""
    t_start = time.perf_counter()
    out_dir, src = Path(out_dir), Path(src)
    check_request(src, out_dir, precision, max_prompt, max_context, force)
    import_builder(builder)  # before minutes of ONNX export: say what is missing now
    if target_sm and builder != "tensorrt-rtx":
        raise EdgekitError("--sm chooses TensorRT-RTX's target GPU; TensorRT builds for the GPU it runs on",
                           "leave --sm out, or pass --builder tensorrt-rtx")
    with atomic_dir(out_dir, force=force, inputs=(src,)) as tmp:
        work = tmp / ".work"
        p = prepare(src, precision, work, max_prompt=max_prompt, max_context=max_context, block_size=block_size,
                    progress=progress)
        if progress:
            progress(f"tensorrt {precision}: building the engine ({builder})", 0, 1)
        t0 = time.perf_counter()
        log = build_log_path(out_dir)
        built = native.call("edgekit.converters.tensorrt_export:build_in_child", builder, str(p.graph),
                            str(tmp / ENGINE_FILE), [q.to_dict() for q in p.profiles],
                            workspace_mib * 2**20 if workspace_mib else None, target_sm, str(log),
                            library="TensorRT", what="the engine build")
        shutil.copyfile(log, tmp / BUILD_LOG)
        seconds = time.perf_counter() - t0
        if progress:
            progress(f"tensorrt {precision}: building the engine ({builder})", 1, 1)
        copy_beside(p.src_onnx, tmp)
        shutil.rmtree(work, ignore_errors=True)
        engine = tmp / ENGINE_FILE
        version = built["tensorrt_version"]
        manifest = engine_manifest(
            p, precision, builder=f"{builder} {version}", tensorrt_version=version,
            engine_bytes=engine.stat().st_size, engine_sha256=sha256_of(engine), seconds=seconds,
            options={"builder": builder, "target_sm": target_sm, "workspace_mib": workspace_mib},
            built_on="this machine", max_prompt=max_prompt, max_context=max_context,
            accelerators=built["accelerators"], total_s=time.perf_counter() - t_start)
        manifest.write(tmp)
    return manifest
