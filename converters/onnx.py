"""Hugging Face checkpoint -> ONNX decoder with KV cache (FP32, FP16, INT4 weight-only).

The graph is optimum-onnx's (`text-generation-with-past`: inputs input_ids,
attention_mask, position_ids, past_key_values.N.key/value; outputs logits and
present.N.key/value). By default (`method="stream"`) optimum traces only a small template of
the model and the graph is assembled layer by layer with the weights streamed from the
checkpoint (converters/onnx_stream.py): a 7B or 8B model exports in a few GB. `method="trace"`
traces the whole model (about 2x its weights in RAM); both write the same graph, name for name.
edgekit then points each layer's attention at the cache as stored instead of a copy repeated to
every query head (group_attention). INT4 is onnxruntime.quantization's weight-only quantizer
(blockwise round-to-nearest, the MatMulNBits contrib op), run one weight at a time on the FP32
weights. Beside the model go genai_config.json and the tokenizer files, so the folder loads in
onnxruntime-genai unchanged, and manifest.json.

Checks: up to 3B parameters, the export's logits against transformers' on the whole model; above,
by default, the same checks on a slice (its first layers and vocabulary rows, check_on_slice),
which fits where the whole FP32 reference does not.

As for GGUF, everything is built in a hidden folder beside the output and renamed
into place only after the checks passed.

This module is the export itself (export_onnx, the optimum export in a child, the
memory check, the checks, the manifest); the steps it runs live beside it:
converters/onnx_stream.py (the template, the assembly, the streamed writer),
converters/onnx_graph.py (saving models, the graph rewrites), converters/onnx_int4.py
(quantization and its checks), converters/onnx_genai.py (genai_config.json).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np

from edgekit import native, parity
from edgekit.architectures import head_dim, n_kv_heads
from edgekit.atomic import atomic_dir, check_output_dir
from edgekit.checkpoint import model_basename, open_checkpoint
from edgekit.converters.onnx_genai import genai_config
from edgekit.converters.onnx_graph import (
    OPSET,
    TOKENIZER_FILES,
    fuse_for_onnxruntime,
    group_attention,
    group_attention_graph,
    move_model,
    onnx_logits,
    slice_logits_to_last,
)
from edgekit.converters.onnx_int4 import Int4Options, quantize_int4, verify_int4
from edgekit.converters.onnx_stream import (
    WEIGHT_MAP_FILE,
    Streamed,
    assemble,
    check_sources,
    layer_index,
    name_graph,
    streamable_problem,
    streamed_checkpoint,
    write_model,
)
from edgekit.errors import EdgekitError
from edgekit.hf_schema import check_tokenizer_fits, read_tokenizer_json
from edgekit.manifest import ArtifactFile, ExportManifest, SourceInfo, sha256_of, tool_versions, verify_decision
from edgekit.runners.onnxruntime import check_onnx_complete
from edgekit.targets.host import host_facts, parse_meminfo_bytes

Progress = Callable[[str, float, float], None]

PRECISIONS = ("fp32", "fp16", "int4")
METHODS = ("stream", "trace")
LOGITS_MODES = ("last", "all")
QUANT_NAME = {"fp32": "F32", "fp16": "F16", "int4": "INT4"}  # manifest spelling, as llama.cpp's F32/F16
MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx_data"  # optimum's name for the external weights


# ---------------------------------------------------------------- memory

# Peak RSS of the traced export's child per byte of weights in the export dtype (the model plus the
# exporter's folded, transposed copies of every Linear weight); the measurement: docs/benchmarks.md.
TRACE_PEAK_PER_WEIGHT_BYTE = {"fp32": 2.1, "fp16": 2.3}
# The streamed export holds the template's trace (small: 4 layers, a 72-wide MLP, 136 tokens), then
# one tensor at a time: the largest (the lm_head or the embedding) read and converted (the source
# and the result), for INT4 memory-mapped from a scratch file and copied once more by onnxruntime's
# quantizer. Peak = base + copies x the largest tensor in the export's float type. Measured on
# whole exports here (2-core EPYC, 24 GB; benchmarks/onnx_export_memory.py; docs/benchmarks.md):
# 7B INT4 5.29 GB, FP16 3.24 GB; 8B INT4 5.57 GB, where this rule says 5.9, 3.7 and 5.7.
STREAM_BASE_BYTES = 1_500_000_000
STREAM_LARGEST_COPIES = {"fp32": 2.0, "fp16": 2.0, "int4": 2.0}


# The check on a slice holds transformers' FP32 model of the slice, then ONNX Runtime's sessions on it
# (FP32: ONNX Runtime's graph optimizations may hold a second copy of the weights). Measured: the 7B
# INT4 export with its default check peaked at 7.65 GB for a slice of 758M parameters (this rule: 7.9).
SLICE_COPIES = 2.1


def export_memory_bytes(n_params: int, precision: str, method: str = "trace", largest_params: int = 0,
                        slice_params: int = 0) -> int:
    """The peak RAM an export needs: the traced one grows with the model, the streamed one with its
    largest tensor, or with the slice it is checked on (`slice_params`, 0: none)."""
    dtype = "fp16" if precision == "fp16" else "fp32"  # INT4 quantizes the FP32 graph
    width = 2 if dtype == "fp16" else 4
    if method == "stream":
        return int(STREAM_BASE_BYTES + max(STREAM_LARGEST_COPIES[precision] * largest_params * width,
                                           SLICE_COPIES * slice_params * 4))
    return int(n_params * width * TRACE_PEAK_PER_WEIGHT_BYTE[dtype])


def largest_tensor_params(ckpt) -> int:
    return max((math.prod(shape) for shape, _ in ckpt.tensor_info.values()), default=0)


def check_memory(n_params: int, precision: str, meminfo: str | None = None, method: str = "trace",
                 largest_params: int = 0, slice_params: int = 0) -> None:
    """Refuse up front an export that cannot fit, instead of meeting the OOM killer minutes later."""
    if meminfo is None:
        try:
            meminfo = Path("/proc/meminfo").read_text()
        except OSError:
            return  # not Linux: no reliable figure, go ahead
    avail = parse_meminfo_bytes(meminfo, "MemAvailable")
    if avail is None:
        return
    avail += parse_meminfo_bytes(meminfo, "SwapFree") or 0
    need = export_memory_bytes(n_params, precision, method, largest_params, slice_params)
    if need <= avail:
        return
    if method == "stream":
        checked = export_memory_bytes(n_params, precision, method, largest_params) < need
        raise EdgekitError(
            f"exporting to ONNX {precision} layer by layer needs about {need / 1e9:.1f} GB of RAM "
            + (f"(the check on a slice of {slice_params / 1e6:.0f}M parameters in FP32)" if checked else
               f"(its largest tensor, {largest_params / 1e6:.0f}M values, converted one at a time)")
            + f"; {avail / 1e9:.1f} GB are available",
            ("pass --no-verify to skip the check, " if checked else "") + "free memory, or pass --no-memory-check "
            "to try anyway")
    dtype = "FP16" if precision == "fp16" else "FP32"
    raise EdgekitError(
        f"exporting {n_params / 1e9:.1f}B parameters to ONNX {precision} needs about {need / 1e9:.0f} GB of RAM "
        f"(the trace holds about {TRACE_PEAK_PER_WEIGHT_BYTE[dtype.lower()]}x the {dtype} weights); "
        f"{avail / 1e9:.0f} GB are available",
        "use --method stream (the default: one tensor at a time), export on a machine with more memory, "
        "free memory, or pass --no-memory-check to try anyway")


# ---------------------------------------------------------------- steps


def torch_export(ckpt_path: Path, out: Path, fp16: bool) -> Path:
    """optimum-onnx's exporter (decoder with past, opset 18) in a child interpreter.

    The child holds torch, the model and the traced graph (about twice the FP32
    weights at its peak); running it apart keeps that peak out of the later steps
    and turns a crash (or the OOM killer) into one error line. Returns the model path.
    """
    native.call("edgekit.converters.onnx_graph:run_optimum_export", str(ckpt_path), str(out),
                "fp16" if fp16 else "fp32", library="optimum-onnx (torch)", what="the ONNX export",
                fixes={"SIGKILL": "nothing was written; the export was killed, usually by the OOM killer: it needs "
                                  "about 2x the FP32 weights in RAM (15 GB for 1.5B parameters)"})
    model = out / MODEL_FILE
    if not model.is_file():
        raise EdgekitError("optimum-onnx wrote no model.onnx", "please report this checkpoint")
    return model


# ---------------------------------------------------------------- the export


def trace_template(ckpt, work: Path, dtype: str):
    """The template block traced in a child (converters/onnx_stream.run_template_export): its ModelProto
    (small, weights inline) and its weight map; the checkpoint's config and tokenizer files land in
    `work/template` beside it."""
    import onnx

    native.call("edgekit.converters.onnx_stream:run_template_export", str(ckpt.path), str(work), dtype,
                library="optimum-onnx (torch)", what="the ONNX export",
                fixes={"SIGKILL": "nothing was written; the template trace was killed, usually by the OOM killer"})
    template_dir = work / "template"
    return (onnx.load(str(template_dir / MODEL_FILE)),
            json.loads((template_dir / WEIGHT_MAP_FILE).read_text()))


def from_template(template, weight_map: dict, ckpt, dtype: str) -> tuple[Streamed, int]:
    """The checkpoint's graph assembled from the template, its attention grouped, its weights still in
    the checkpoint: a Streamed model to write, and how many layers group_attention rewrote."""
    import onnx

    cfg = ckpt.config
    assembly = assemble(template, weight_map, int(cfg["num_hidden_layers"]), int(cfg["vocab_size"]))
    check_sources(assembly, ckpt)
    grouped = group_attention_graph(assembly.graph, int(cfg["num_attention_heads"]), n_kv_heads(cfg), head_dim(cfg))
    header = onnx.ModelProto()
    header.CopyFrom(template)
    header.graph.Clear()
    return streamed_checkpoint(header, assembly, ckpt, dtype), grouped


# ---------------------------------------------------------------- checks


def check_logits(precision: str, ref, emulated, final: Path, exported: Path, work: Path, ids: list[int],
                 threads: int, int4: Int4Options) -> tuple[dict, np.ndarray]:
    """The export's parity checks against transformers' logits `ref` (FP32/FP16: the logits, with the
    precision's rounding `emulated`; INT4: verify_int4 against its dequantized reference and the FP32
    graph `exported`); returns the record and the export's logits. Raises when a check fails."""
    got = onnx_logits(final, ids, threads)
    if precision == "int4":
        return verify_int4(final, exported, work, ref, got, ids, threads, int4.accuracy_level, int4.block_size), got
    info = parity.compare_to_reference(ref, got, parity.FLOOR_REL if precision == "fp32" else None, emulated=emulated)
    if not info["passed"]:
        raise EdgekitError(parity.disagreement(f"{precision.upper()} ONNX", info),
                           "nothing was written; please report this checkpoint, or pass --no-verify")
    return info, got


def write_slice(ckpt, out: Path, layers: int, vocab: int) -> Path:
    """A checkpoint of the first `layers` layers and the first `vocab` rows of the embedding and
    lm_head of `ckpt`, as stored (one tensor read at a time): what transformers can run beside the
    export when the whole model does not fit. No tokenizer: its ids are the caller's."""
    from safetensors.torch import save_file

    out.mkdir(parents=True)
    tensors = {}
    for name in ckpt.tensor_info:
        layer = layer_index(name)
        if layer is not None and layer >= layers:
            continue
        t = ckpt.read_tensor(name)
        if name in ("model.embed_tokens.weight", "lm_head.weight"):
            t = t[:vocab].clone()
        tensors[name] = t
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = {**ckpt.config, "num_hidden_layers": layers, "vocab_size": vocab}
    if isinstance(config.get("layer_types"), list):
        config["layer_types"] = config["layer_types"][:layers]
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if isinstance(config.get(key), int) and config[key] >= vocab:
            config.pop(key)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return out


def slice_params(ckpt) -> int:
    """How many parameters the slice check_on_slice runs holds."""
    layers = min(SLICE_LAYERS, int(ckpt.config["num_hidden_layers"]))
    vocab = min(SLICE_VOCAB, int(ckpt.config["vocab_size"]))
    total = 0
    for name, (shape, _) in ckpt.tensor_info.items():
        layer = layer_index(name)
        if layer is not None and layer >= layers:
            continue
        n = math.prod(shape)
        total += n * vocab // shape[0] if name in ("model.embed_tokens.weight", "lm_head.weight") else n
    return total


# A model too big for transformers' FP32 reference is checked on a slice: its first SLICE_LAYERS layers
# (layer 0, one repeated middle layer, the last: every part of the assembly) and SLICE_VOCAB rows of
# its embedding and lm_head, assembled from the same template, with the same checks. 5 layers of the
# 7B peaked at 9.1 GB (ONNX Runtime's sessions on the FP32 slice); 3 fit the 8 GB budget.
SLICE_LAYERS = 3
SLICE_VOCAB = 8192


def check_on_slice(ckpt, template, weight_map: dict, work: Path, precision: str, int4: Int4Options,
                   threads: int) -> dict:
    """The export's checks run on a slice of the checkpoint (write_slice), within about the memory of
    SLICE_LAYERS layers in FP32; the record says which slice."""
    layers = min(SLICE_LAYERS, int(ckpt.config["num_hidden_layers"]))
    vocab = min(SLICE_VOCAB, int(ckpt.config["vocab_size"]))
    folder = work / "slice"
    sliced = open_checkpoint(str(write_slice(ckpt, folder / "checkpoint", layers, vocab)))
    dtype = "fp16" if precision == "fp16" else "fp32"
    source, _ = from_template(template, weight_map, sliced, dtype)
    exported = folder / f"{dtype}.onnx"
    write_model(source, exported)
    final = exported
    if precision == "int4":
        final = folder / "int4.onnx"
        quantize_int4(source, final, int4)
    ids = [i % vocab for i in parity.probe_ids(ckpt.path)]
    ref, emulated = parity.reference_logits(sliced.path, ids, threads,
                                            precision="onnx-fp16" if precision == "fp16" else None)
    info, _ = check_logits(precision, ref, emulated, final, exported, folder, ids, threads, int4)
    shutil.rmtree(folder)
    return {**info, "slice": {"layers": layers, "of_layers": int(ckpt.config["num_hidden_layers"]),
                              "vocab_rows": vocab, "of_vocab": int(ckpt.config["vocab_size"])}}


def export_onnx(checkpoint: str, out_dir: Path, precision: str = "int4", int4: Int4Options | None = None,
                verify: bool | None = None, threads: int | None = None, force: bool = False,
                memory_check: bool = True, logits: str = "last", fuse: bool = False,
                progress: Progress | None = None, method: str = "stream"):
    """Export CHECKPOINT to an ONNX folder at `out_dir`; returns the ExportManifest.

    method "stream" (default) assembles the graph from a traced template block and streams the
    weights (converters/onnx_stream.py: peak about the largest tensor, not the model); "trace" is
    optimum-onnx's export of the whole model (about 2x the weights in RAM). Both write the same
    graph, name for name."""
    t_start = time.perf_counter()
    precision = precision.lower()
    if precision not in PRECISIONS:
        raise EdgekitError(f"unknown precision '{precision}'", f"choose from: {', '.join(PRECISIONS)}")
    if method not in METHODS:
        raise EdgekitError(f"unknown export method '{method}'", f"choose from: {', '.join(METHODS)}")
    int4 = int4 or Int4Options()
    int4.check()
    if logits not in LOGITS_MODES:
        raise EdgekitError(f"unknown logits mode '{logits}'", "choose last (default) or all")
    out_dir = Path(out_dir)
    check_output_dir(out_dir, force)
    ckpt = open_checkpoint(checkpoint)
    check_output_dir(out_dir, force, inputs=(ckpt.path,))
    # no tokenizer, or one that does not fit the model: no runnable export; say so before minutes of work
    check_tokenizer_fits(read_tokenizer_json(ckpt.path), int(ckpt.config["vocab_size"]))
    if method == "stream":
        problem = streamable_problem(ckpt.config)
        if problem:
            raise EdgekitError(f"this checkpoint cannot be exported layer by layer: {problem}",
                               "export it with --method trace (the whole model in memory)")
    asked = verify
    verify, verify_skipped = verify_decision(verify, ckpt.n_params)
    # too big for the whole-model check by default, and streamed: the same checks on a slice
    on_slice = asked is None and not verify and method == "stream"
    if on_slice:
        verify_skipped = None
    if memory_check:
        check_memory(ckpt.n_params, precision, method=method, largest_params=largest_tensor_params(ckpt),
                     slice_params=slice_params(ckpt) if on_slice else 0)
    threads = threads or os.cpu_count() or 1
    name = model_basename(ckpt)
    step = {"n": 0}
    steps = 2 + (precision == "int4") + bool(verify) + on_slice + bool(fuse) + (
        method == "stream" and (precision != "int4" or bool(verify)))

    def tick(label: str) -> None:
        step["n"] += 1
        if progress:
            progress(f"onnx {precision}: {label}", step["n"], steps)

    def weights_progress(done: int, total: int) -> None:
        if progress:
            progress(f"onnx {precision}: weights, one tensor at a time", done, total)

    with atomic_dir(out_dir, force=force, inputs=(ckpt.path,)) as tmp:
        work = tmp / ".export"
        t0 = time.perf_counter()
        final = tmp / MODEL_FILE
        dtype = "fp16" if precision == "fp16" else "fp32"  # INT4 quantizes the FP32 graph
        if method == "trace":
            tick("torch export")
            exported = torch_export(ckpt.path, work, fp16=precision == "fp16")
            name_graph(exported)
            grouped = group_attention(exported, int(ckpt.config["num_attention_heads"]), n_kv_heads(ckpt.config),
                                      head_dim(ckpt.config))
            files_from = work
        else:
            tick("template trace")
            template, weight_map = trace_template(ckpt, work, dtype)
            source, grouped = from_template(template, weight_map, ckpt, dtype)
            files_from = work / "template"
            exported = work / MODEL_FILE
            if precision != "int4" or verify:  # the float graph: the export, or INT4's reference
                tick(f"{dtype.upper()} weights")
                write_model(source, exported if precision == "int4" else final, progress=weights_progress)
        for f in TOKENIZER_FILES:
            if (files_from / f).is_file():
                shutil.move(str(files_from / f), str(tmp / f))
        verify_info = None
        ids = ref = emulated = None
        if on_slice:
            tick("parity check on a slice")
            verify_info = check_on_slice(ckpt, template, weight_map, work, precision, int4, threads)
        if verify:
            ids = parity.probe_ids(ckpt.path)
            ref, emulated = parity.reference_logits(ckpt.path, ids, threads,
                                                    precision="onnx-fp16" if precision == "fp16" else None)
        if precision == "int4":
            tick("INT4 quantization")
            quantize_int4(exported if method == "trace" else source, final, int4, progress=weights_progress)
        elif method == "trace":
            move_model(exported, final)
        if fuse:
            tick("fusing for ONNX Runtime")
        fused = fuse_for_onnxruntime(final) if fuse else {}
        check_onnx_complete(final)
        seconds = time.perf_counter() - t0
        if verify:
            tick("parity check")
            verify_info, got = check_logits(precision, ref, emulated, final, exported, work, ids, threads, int4)
        if logits == "last":
            slice_logits_to_last(final)
            if verify:  # the sliced graph's only row is the full graph's last row
                last = onnx_logits(final, ids, threads)
                if last.shape[0] != 1 or not np.allclose(last[0], got[-1], rtol=1e-4, atol=1e-4 * float(np.std(got))):
                    raise EdgekitError("the last-position logits graph disagrees with the full graph",
                                       "nothing was written; export with --logits all and please report this")
            check_onnx_complete(final)
        shutil.rmtree(work)
        tick("genai_config.json")
        generation = _read_json(tmp / "generation_config.json")
        (tmp / "genai_config.json").write_text(
            json.dumps(genai_config(ckpt.config, ckpt.arch.model_type, MODEL_FILE, generation), indent=2) + "\n",
            encoding="utf-8")
        files = [ArtifactFile(file=MODEL_FILE, format="onnx", quant=QUANT_NAME[precision],
                              size_bytes=final.stat().st_size, sha256=sha256_of(final), seconds=round(seconds, 3),
                              verify=verify_info,
                              options={"logits": logits, "fused": fused, "grouped_attention_layers": grouped,
                                       **(asdict(int4) if precision == "int4" else {})})]
        data = tmp / DATA_FILE
        if data.exists():
            files.append(ArtifactFile(file=DATA_FILE, format="onnx", quant=QUANT_NAME[precision],
                                      size_bytes=data.stat().st_size, sha256=sha256_of(data), seconds=0.0))
        cfg = ckpt.config
        manifest = ExportManifest(
            format="onnx",
            source=SourceInfo(spec=checkpoint, path=str(ckpt.path), hub_id=ckpt.hub_id, dtype=ckpt.source_dtype),
            architecture=ckpt.arch.hf_class, n_params=ckpt.n_params, vocab_size=int(cfg["vocab_size"]),
            context_length=int(cfg["max_position_embeddings"]), tokenizer={"files": sorted(
                f for f in TOKENIZER_FILES if (tmp / f).is_file())},
            files=files, verified=verify or on_slice, verify_skipped=verify_skipped, tools=tool_versions(),
            host=host_facts(),
            total_s=round(time.perf_counter() - t_start, 3),
            name=name, opset=OPSET)
        manifest.write(tmp)
    return manifest


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
