"""Hugging Face checkpoint -> ONNX decoder with KV cache (FP32, FP16, INT4 weight-only).

The graph comes from optimum-onnx (`text-generation-with-past`: inputs input_ids,
attention_mask, position_ids, past_key_values.N.key/value; outputs logits and
present.N.key/value); edgekit then points each layer's attention at the cache as
stored instead of a copy repeated to every query head (group_attention). INT4 is
onnxruntime.quantization's MatMulNBitsQuantizer
(blockwise round-to-nearest, MatMulNBits contrib op) applied to the FP32 graph.
Beside the model go genai_config.json and the tokenizer files, so the folder
loads in onnxruntime-genai unchanged, and manifest.json.

As for GGUF, everything is built in a hidden folder beside the output and renamed
into place only after the checks passed.

This module is the export itself (export_onnx, the optimum export in a child, the
memory check, the manifest); the steps it runs live beside it: converters/onnx_graph.py
(saving models, the graph rewrites), converters/onnx_int4.py (quantization and its
checks), converters/onnx_genai.py (genai_config.json).
"""

from __future__ import annotations

import json
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
    fuse_for_onnxruntime,
    group_attention,
    move_model,
    onnx_logits,
    quiet,
    slice_logits_to_last,
)
from edgekit.converters.onnx_int4 import Int4Options, quantize_int4, verify_int4
from edgekit.errors import EdgekitError
from edgekit.hf_schema import check_tokenizer_fits, read_tokenizer_json
from edgekit.manifest import ArtifactFile, ExportManifest, SourceInfo, sha256_of, tool_versions, verify_decision
from edgekit.runners.onnxruntime import check_onnx_complete
from edgekit.targets.host import host_facts, parse_meminfo_bytes

Progress = Callable[[str, float, float], None]

PRECISIONS = ("fp32", "fp16", "int4")
LOGITS_MODES = ("last", "all")
QUANT_NAME = {"fp32": "F32", "fp16": "F16", "int4": "INT4"}  # manifest spelling, as llama.cpp's F32/F16
OPSET = 18
MODEL_FILE = "model.onnx"
DATA_FILE = "model.onnx_data"  # optimum's name for the external weights
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "generation_config.json", "config.json")


# ---------------------------------------------------------------- memory

# Peak RSS of the export child per byte of weights in the export dtype (the model plus the
# exporter's folded, transposed copies of every Linear weight); the measurement: docs/benchmarks.md.
TRACE_PEAK_PER_WEIGHT_BYTE = {"fp32": 2.1, "fp16": 2.3}


def export_memory_bytes(n_params: int, precision: str) -> int:
    dtype = "fp16" if precision == "fp16" else "fp32"  # INT4 quantizes the FP32 graph
    return int(n_params * (2 if dtype == "fp16" else 4) * TRACE_PEAK_PER_WEIGHT_BYTE[dtype])


def check_memory(n_params: int, precision: str, meminfo: str | None = None) -> None:
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
    need = export_memory_bytes(n_params, precision)
    if need > avail:
        dtype = "FP16" if precision == "fp16" else "FP32"
        raise EdgekitError(
            f"exporting {n_params / 1e9:.1f}B parameters to ONNX {precision} needs about {need / 1e9:.0f} GB of RAM "
            f"(the trace holds about {TRACE_PEAK_PER_WEIGHT_BYTE[dtype.lower()]}x the {dtype} weights); "
            f"{avail / 1e9:.0f} GB are available",
            "export on a machine with more memory (the folder then runs anywhere), free memory, or pass "
            "--no-memory-check to try anyway; GGUF export streams and needs far less")


# ---------------------------------------------------------------- steps


def torch_export(ckpt_path: Path, out: Path, fp16: bool) -> Path:
    """optimum-onnx's exporter (decoder with past, opset 18) in a child interpreter.

    The child holds torch, the model and the traced graph (about twice the FP32
    weights at its peak); running it apart keeps that peak out of the later steps
    and turns a crash (or the OOM killer) into one error line. Returns the model path.
    """
    native.call("edgekit.converters.onnx:run_optimum_export", str(ckpt_path), str(out),
                "fp16" if fp16 else "fp32", library="optimum-onnx (torch)", what="the ONNX export",
                fixes={"SIGKILL": "nothing was written; the export was killed, usually by the OOM killer: it needs "
                                  "about 2x the FP32 weights in RAM (15 GB for 1.5B parameters)"})
    model = out / MODEL_FILE
    if not model.is_file():
        raise EdgekitError("optimum-onnx wrote no model.onnx", "please report this checkpoint")
    return model


def run_optimum_export(ckpt_path: str, out: str, precision: str) -> None:
    """optimum-onnx's main_export in this process (what torch_export's child runs)."""
    try:
        from optimum.exporters.onnx import main_export
    except ImportError:
        raise EdgekitError("ONNX export needs optimum-onnx", "pip install 'edgekit[onnx]'") from None
    with quiet():
        main_export(ckpt_path, out, task="text-generation-with-past", opset=OPSET,
                    dtype="fp16" if precision == "fp16" else None, do_validation=False, local_files_only=True,
                    library_name="transformers", device="cpu")


# ---------------------------------------------------------------- the export


def export_onnx(checkpoint: str, out_dir: Path, precision: str = "int4", int4: Int4Options | None = None,
                verify: bool | None = None, threads: int | None = None, force: bool = False,
                memory_check: bool = True, logits: str = "last", fuse: bool = False,
                progress: Progress | None = None):
    """Export CHECKPOINT to an ONNX folder at `out_dir`; returns the ExportManifest."""
    t_start = time.perf_counter()
    precision = precision.lower()
    if precision not in PRECISIONS:
        raise EdgekitError(f"unknown precision '{precision}'", f"choose from: {', '.join(PRECISIONS)}")
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
    if memory_check:
        check_memory(ckpt.n_params, precision)
    verify, verify_skipped = verify_decision(verify, ckpt.n_params)
    threads = threads or os.cpu_count() or 1
    name = model_basename(ckpt)
    step = {"n": 0}
    steps = 2 + (precision == "int4") + bool(verify) + bool(fuse)

    def tick(label: str) -> None:
        step["n"] += 1
        if progress:
            progress(f"onnx {precision}: {label}", step["n"], steps)

    with atomic_dir(out_dir, force=force, inputs=(ckpt.path,)) as tmp:
        work = tmp / ".export"
        t0 = time.perf_counter()
        tick("torch export")
        exported = torch_export(ckpt.path, work, fp16=precision == "fp16")
        grouped = group_attention(exported, int(ckpt.config["num_attention_heads"]), n_kv_heads(ckpt.config),
                                  head_dim(ckpt.config))
        for f in TOKENIZER_FILES:
            if (work / f).is_file():
                shutil.move(str(work / f), str(tmp / f))
        final = tmp / MODEL_FILE
        verify_info = None
        ids = ref = None
        if verify:
            ids = parity.probe_ids(ckpt.path)
            ref, emulated = parity.reference_logits(ckpt.path, ids, threads,
                                                    precision="onnx-fp16" if precision == "fp16" else None)
        if precision == "int4":
            tick("INT4 quantization")
            quantize_int4(exported, final, int4)
        else:
            move_model(exported, final)
        if fuse:
            tick("fusing for ONNX Runtime")
        fused = fuse_for_onnxruntime(final) if fuse else {}
        check_onnx_complete(final)
        seconds = time.perf_counter() - t0
        if verify:
            tick("parity check")
            got = onnx_logits(final, ids, threads)
            if precision == "int4":
                verify_info = verify_int4(final, exported, work, ref, got, ids, threads, int4.accuracy_level,
                                          int4.block_size)
            else:
                verify_info = parity.compare_to_reference(
                    ref, got, parity.FLOOR_REL if precision == "fp32" else None, emulated=emulated)
                if not verify_info["passed"]:
                    raise EdgekitError(parity.disagreement(f"{precision.upper()} ONNX", verify_info),
                                       "nothing was written; please report this checkpoint, or pass --no-verify")
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
            files=files, verified=verify, verify_skipped=verify_skipped, tools=tool_versions(), host=host_facts(),
            total_s=round(time.perf_counter() - t_start, 3),
            name=name, opset=OPSET)
        manifest.write(tmp)
    return manifest


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
