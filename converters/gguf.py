"""Hugging Face checkpoint -> GGUF, written with gguf-py and quantized by llama.cpp.

The base file (F16, BF16 or F32) is written tensor by tensor: the tensor infos
are declared first, then each tensor is read from safetensors, converted and
written before the next one is read, so peak memory is one tensor, not the
model. Quantized files are produced from the base file by llama.cpp's own
`llama_model_quantize` (through llama-cpp-python), never re-implemented here.
"""

from __future__ import annotations

import ctypes
import math
import os
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from edgekit import native, parity
from edgekit.architectures import Architecture, head_dim, n_kv_heads
from edgekit.atomic import atomic_dir, check_output_dir
from edgekit.checkpoint import Checkpoint, model_basename, open_checkpoint
from edgekit.converters.gguf_vocab import add_tokenizer
from edgekit.errors import EdgekitError
from edgekit.formats.gguf import FORMAT
from edgekit.llamacpp_log import GGML_LOG_LEVEL_ERROR, route_llama_log
from edgekit.manifest import ArtifactFile, ExportManifest, SourceInfo, sha256_of, tool_versions, verify_decision
from edgekit.targets.host import host_facts

if TYPE_CHECKING:  # annotations only: gguf is imported where it is used
    import gguf

Progress = Callable[[str, float, float], None]  # (label, done, total)

# name -> its gguf.LlamaFileType member (file_type() reads it; gguf is imported on use)
BASE_TYPES = {"F32": "ALL_F32", "F16": "MOSTLY_F16", "BF16": "MOSTLY_BF16"}
# Quantizations llama.cpp makes without an importance matrix, in llama.cpp's spelling.
QUANT_TYPES = {name: f"MOSTLY_{name}" for name in (
    "Q8_0", "Q6_K", "Q5_K_M", "Q5_K_S", "Q5_1", "Q5_0", "Q4_K_M", "Q4_K_S", "Q4_1", "Q4_0",
    "IQ4_NL", "IQ4_XS", "Q3_K_L", "Q3_K_M", "Q3_K_S", "Q2_K")}
ALL_TYPES = {**BASE_TYPES, **QUANT_TYPES}


def file_type(name: str) -> int:
    """llama.cpp's file type (general.file_type, llama_ftype) of a quant name of ALL_TYPES."""
    import gguf

    
    return int(gguf.LlamaFileType[ALL_TYPES[name]])


def parse_quants(text: str) -> list[str]:
    names = [q.strip().upper() for q in text.split(",") if q.strip()]
    if not names:
        raise EdgekitError("--quant is empty", f"name one or more of: {', '.join(ALL_TYPES)}")
    for q in names:
        if q not in ALL_TYPES:
            raise EdgekitError(f"unknown quantization '{q}'", f"choose from: {', '.join(ALL_TYPES)}")
    return list(dict.fromkeys(names))


def base_type_for(quants: list[str]) -> str:
    """The unquantized type to write first: one the user asked for, else F16."""
    for t in ("F32", "BF16", "F16"):
        if t in quants:
            return t
    return "F16"


# ---------------------------------------------------------------- tensors


def permute_rotary(w, n_head: int):
    """HF stores each head's rotary pairs as two halves; llama.cpp's LLAMA arch
    expects them interleaved. Reorder rows (or bias entries) per head."""
    shape = w.shape
    return w.reshape(n_head, 2, shape[0] // n_head // 2, *shape[1:]).swapaxes(1, 2).reshape(shape)


def rope_params(config: dict) -> dict:
    """Rope settings wherever the config keeps them: transformers 4.x `rope_theta` + `rope_scaling`,
    or transformers 5's `rope_parameters` (theta and scaling in one dict)."""
    params = dict(config.get("rope_parameters") or {})
    params = dict(params.get("full_attention", params))
    scaling = config.get("rope_scaling") or {}
    merged = {**scaling, **params}
    merged.setdefault("rope_theta", config.get("rope_theta", 10000.0))
    rtype = merged.get("rope_type", merged.get("type"))
    merged["rope_type"] = None if rtype in (None, "default") else rtype
    return merged


SUPPORTED_ROPE = ("llama3", "linear", "yarn")


def add_rope_scaling(w: gguf.GGUFWriter, config: dict) -> None:
    import gguf

    rp = rope_params(config)
    rtype = rp["rope_type"]
    if rtype is None or rtype == "llama3":  # llama3: the rope_freqs tensor carries it
        return
    if rtype not in SUPPORTED_ROPE or "factor" not in rp:
        raise EdgekitError(f"rope scaling type '{rtype}' is not supported (or has no factor)",
                           f"supported: {', '.join(SUPPORTED_ROPE)}; remove rope_scaling from config.json to "
                           "convert with plain rope")
    if rtype == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(float(rp["factor"]))
        return
    w.add_rope_scaling_type(gguf.RopeScalingType.YARN)
    w.add_rope_scaling_factor(float(rp["factor"]))
    w.add_rope_scaling_orig_ctx_len(int(rp["original_max_position_embeddings"]))
    for key, add in (("extrapolation_factor", w.add_rope_scaling_yarn_ext_factor),
                     ("attention_factor", w.add_rope_scaling_yarn_attn_factor),
                     ("beta_fast", w.add_rope_scaling_yarn_beta_fast),
                     ("beta_slow", w.add_rope_scaling_yarn_beta_slow)):
        if rp.get(key) is not None:
            add(float(rp[key]))


def llama3_rope_factors(config: dict) -> np.ndarray | None:
    """Per-frequency divisors for Llama-3 rope scaling (llama.cpp's rope_freqs tensor).

    Wavelengths shorter than original_ctx/high_freq_factor keep their frequency,
    longer than original_ctx/low_freq_factor are slowed by `factor`, and the band
    between is interpolated smoothly, as in the Llama 3.1 reference.
    """
    rs = rope_params(config)
    if rs["rope_type"] != "llama3":
        return None
    dim = head_dim(config)
    base = float(rs["rope_theta"])
    factor = float(rs.get("factor", 8.0))
    low, high = float(rs.get("low_freq_factor", 1.0)), float(rs.get("high_freq_factor", 4.0))
    old_ctx = float(rs.get("original_max_position_embeddings", 8192))
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    factors = []
    for i in range(0, dim, 2):
        freq = 1.0 / base ** (i / dim)
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            factors.append(1.0)
        elif wavelen > low_wavelen:
            factors.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            factors.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.asarray(factors, dtype=np.float32)


class TensorPlan:
    """One GGUF tensor: where it comes from and how it is transformed."""

    def __init__(self, gguf_name: str, hf_name: str | None, shape: tuple[int, ...], out: str,
                 permute_heads: int | None = None, data: np.ndarray | None = None):
        self.gguf_name, self.hf_name, self.shape = gguf_name, hf_name, shape
        self.out = out  # "F32", "F16" or "BF16"
        self.permute_heads = permute_heads
        self.data = data

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * (4 if self.out == "F32" else 2)

    def np_dtype(self):
        return {"F32": np.float32, "F16": np.float16, "BF16": np.uint16}[self.out]

    def raw_dtype(self):
        import gguf

        return gguf.GGMLQuantizationType.BF16 if self.out == "BF16" else None

    def load(self, ckpt: Checkpoint) -> np.ndarray:
        import torch

        if self.data is not None:
            return self.data
        t = ckpt.read_tensor(self.hf_name)
        if self.permute_heads:
            t = permute_rotary(t, self.permute_heads)
        if self.out == "F32":
            return t.to(torch.float32).numpy()
        if self.out == "F16":
            return t.to(torch.float16).numpy()
        return t.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)


def plan_tensors(ckpt: Checkpoint, base: str) -> list[TensorPlan]:
    """The GGUF tensors of a checkpoint: plan_tensors_from_shapes on its tensor names and shapes."""
    shapes = {hf_name: shape for hf_name, (shape, _dtype) in ckpt.tensor_info.items()}
    return plan_tensors_from_shapes(ckpt.config, ckpt.arch, shapes, base)


def plan_tensors_from_shapes(cfg: dict, arch: Architecture, shapes: dict[str, tuple[int, ...]],
                             base: str) -> list[TensorPlan]:
    """The GGUF tensors for Hugging Face tensors of these names and shapes, in their order (no
    checkpoint needed: `edgekit plan` plans a config's shapes). 1-D tensors stay F32, the rest `base`."""
    import gguf

    
    n_layers = int(cfg["num_hidden_layers"])
    arch_enum = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}[arch.gguf_arch]
    name_map = gguf.TensorNameMap(arch_enum, n_layers)
    n_head, n_kv = int(cfg["num_attention_heads"]), n_kv_heads(cfg)
    plans: list[TensorPlan] = []
    for hf_name, shape in shapes.items():
        if hf_name.endswith(("rotary_emb.inv_freq",)):
            continue  # recomputed by llama.cpp
        gname = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gname is None:
            raise EdgekitError(f"tensor {hf_name} has no GGUF name for {arch.gguf_arch}",
                               "the checkpoint holds tensors this architecture does not have")
        permute = None
        if arch.permute_qk:
            if re.search(r"self_attn\.q_proj\.(weight|bias)$", hf_name):
                permute = n_head
            elif re.search(r"self_attn\.k_proj\.(weight|bias)$", hf_name):
                permute = n_kv
        out = "F32" if len(shape) == 1 else base
        plans.append(TensorPlan(gname, hf_name, tuple(shape), out, permute))
    factors = llama3_rope_factors(cfg)
    if factors is not None:
        plans.append(TensorPlan(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", None,
                                factors.shape, "F32", data=factors))
    return plans


def add_hparams(w: gguf.GGUFWriter, cfg: dict, model_name: str, base: str) -> None:
    w.add_name(model_name)
    w.add_context_length(int(cfg["max_position_embeddings"]))
    w.add_embedding_length(int(cfg["hidden_size"]))
    w.add_block_count(int(cfg["num_hidden_layers"]))
    w.add_feed_forward_length(int(cfg["intermediate_size"]))
    w.add_head_count(int(cfg["num_attention_heads"]))
    w.add_head_count_kv(n_kv_heads(cfg))
    w.add_rope_freq_base(float(rope_params(cfg)["rope_theta"]))
    add_rope_scaling(w, cfg)
    w.add_layer_norm_rms_eps(float(cfg["rms_norm_eps"]))
    hd = head_dim(cfg)
    w.add_rope_dimension_count(hd)
    if hd != int(cfg["hidden_size"]) // int(cfg["num_attention_heads"]):
        w.add_key_length(hd)
        w.add_value_length(hd)
    w.add_vocab_size(int(cfg["vocab_size"]))
    w.add_file_type(file_type(base))


def write_base_gguf(ckpt: Checkpoint, path: Path, base: str = "F16", model_name: str = "model",
                    progress: Progress | None = None) -> dict:
    """Write the unquantized GGUF; returns facts about the tokenizer written."""
    import gguf

    
    plans = plan_tensors(ckpt, base)
    w = gguf.GGUFWriter(path=None, arch=ckpt.arch.gguf_arch)
    add_hparams(w, ckpt.config, model_name, base)
    vocab_facts = add_tokenizer(w, ckpt.path, int(ckpt.config["vocab_size"]))
    for p in plans:
        w.add_tensor_info(p.gguf_name, p.shape, np.dtype(p.np_dtype()), p.nbytes, raw_dtype=p.raw_dtype())
    total = sum(p.nbytes for p in plans)
    label = f"convert → {path.name}"
    done = 0
    try:
        w.write_header_to_file(path)
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        for p in plans:
            arr = p.load(ckpt)
            if arr.nbytes != p.nbytes:
                raise EdgekitError(f"tensor {p.hf_name} converted to {arr.nbytes} bytes, expected {p.nbytes}")
            w.write_tensor_data(arr)
            done += p.nbytes
            if progress:
                progress(label, done, total)
            del arr
    finally:
        w.close()
    return vocab_facts


# ---------------------------------------------------------------- quantize


_STEP = re.compile(rb"\[\s*(\d+)/\s*(\d+)\]")


def quantize_gguf(src: Path, dst: Path, quant: str, threads: int | None = None,
                  progress: Progress | None = None) -> None:
    """llama.cpp's llama_model_quantize, run in a child interpreter (edgekit.native).

    The child imports only llama_cpp, so its peak memory is llama.cpp's own (the
    converter's torch and transformers are not loaded there), a crash inside
    llama.cpp becomes an error message instead of killing the CLI, and progress
    comes back through the child's progress callback.
    """
    if quant not in QUANT_TYPES:
        raise EdgekitError(f"unknown quantization '{quant}'", f"choose from: {', '.join(QUANT_TYPES)}")
    label = f"quantize → {dst.name}"
    report = (lambda _label, done, total: progress(label, done, total)) if progress else None
    native.call("edgekit.converters.gguf:quantize_here", str(src), str(dst), quant, threads or 0,
                library="llama.cpp", what=f"quantize to {quant}", progress=report)


def quantize_here(src: str, dst: str, quant: str, nthread: int, progress: Progress | None = None) -> None:
    """The quantization in this process (what quantize_gguf's child runs)."""
    import llama_cpp

    errors: list[str] = []

    def on_log(level: int, text: bytes) -> None:
        m = _STEP.search(text)
        if m and progress:
            progress("quantize", int(m.group(1)), int(m.group(2)))
        elif level == GGML_LOG_LEVEL_ERROR and text.strip():
            errors.append(text.decode("utf-8", "replace").strip())

    route_llama_log(on_log)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = file_type(quant)
    params.nthread = nthread
    if llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params)) != 0:
        detail = errors[-1] if errors else "llama_model_quantize returned an error"
        raise EdgekitError(f"llama.cpp failed to quantize {Path(src).name} to {quant}: {detail}",
                           "check free disk space and that the base GGUF loads (edgekit inspect)")


# ---------------------------------------------------------------- checks


def check_gguf_complete(path: Path) -> None:
    """A GGUF whose header parses and whose every tensor lies inside the file."""
    FORMAT.check(path)


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


# ---------------------------------------------------------------- export


def export_gguf(checkpoint: str, out_dir: Path, quants: list[str], verify: bool | None = None,
                threads: int | None = None, force: bool = False, progress: Progress | None = None):
    """Convert a checkpoint to GGUF and quantize it; returns the ExportManifest.

    Everything is built in a temporary folder beside `out_dir` and renamed into
    place only after every file was checked (and, with verify, agreed with
    transformers), so a failure leaves no half-written export behind.
    `verify=None` verifies models up to 3B parameters.
    """
    t_start = time.perf_counter()
    quants = [q.upper() for q in quants]
    for q in quants:
        if q not in ALL_TYPES:
            raise EdgekitError(f"unknown quantization '{q}'", f"choose from: {', '.join(ALL_TYPES)}")
    out_dir = Path(out_dir)
    check_output_dir(out_dir, force)
    ckpt = open_checkpoint(checkpoint)
    check_output_dir(out_dir, force, inputs=(ckpt.path,))  # never replace the checkpoint, nor a folder above it
    verify, verify_skipped = verify_decision(verify, ckpt.n_params)
    threads = threads or os.cpu_count() or 1
    base = base_type_for(quants)
    name = model_basename(ckpt)
    files: list[ArtifactFile] = []

    with atomic_dir(out_dir, force=force, inputs=(ckpt.path,)) as tmp:
        base_path = tmp / f"{name}-{base}.gguf"
        vocab_facts, base_s = timed(write_base_gguf, ckpt, base_path, base, name, progress)
        check_gguf_complete(base_path)
        base_verify = ids = base_logits = None
        if verify:
            ids = parity.probe_ids(ckpt.path)
            ref, emulated = parity.reference_logits(ckpt.path, ids, threads, precision=f"gguf-{base}")
            base_logits = parity.llamacpp_logits(base_path, ids, threads)
            base_verify = parity.compare_to_reference(ref, base_logits, emulated=emulated)
            del ref, emulated
            if not base_verify["passed"]:
                raise EdgekitError(parity.disagreement(f"{base} GGUF", base_verify),
                                   "nothing was written; please report this checkpoint, or pass --no-verify to keep "
                                   "the files anyway")
        if base in quants:
            files.append(ArtifactFile(file=base_path.name, format="gguf", quant=base,
                                      size_bytes=base_path.stat().st_size, sha256=sha256_of(base_path),
                                      seconds=round(base_s, 3), verify=base_verify))
        for q in quants:
            if q in BASE_TYPES:
                if q != base:  # a second unquantized type: convert again
                    path = tmp / f"{name}-{q}.gguf"
                    _, secs = timed(write_base_gguf, ckpt, path, q, name, progress)
                    check_gguf_complete(path)
                    files.append(ArtifactFile(file=path.name, format="gguf", quant=q, size_bytes=path.stat().st_size,
                                              sha256=sha256_of(path), seconds=round(secs, 3)))
                continue
            path = tmp / f"{name}-{q}.gguf"
            _, secs = timed(quantize_gguf, base_path, path, q, threads, progress)
            check_gguf_complete(path)
            qverify = None
            if verify:
                qverify = parity.compare_quantized(base_logits, parity.llamacpp_logits(path, ids, threads))
                qverify["vs"] = base
                if not qverify["finite"]:
                    raise EdgekitError(f"{q} GGUF produces non-finite logits", "nothing was written; please report this")
            files.append(ArtifactFile(file=path.name, format="gguf", quant=q, size_bytes=path.stat().st_size,
                                      sha256=sha256_of(path), seconds=round(secs, 3), verify=qverify))
        if base not in quants:
            base_path.unlink()
        cfg = ckpt.config
        manifest = ExportManifest(
            format="gguf",
            source=SourceInfo(spec=checkpoint, path=str(ckpt.path), hub_id=ckpt.hub_id, dtype=ckpt.source_dtype),
            architecture=ckpt.arch.hf_class, n_params=ckpt.n_params, vocab_size=int(cfg["vocab_size"]),
            context_length=int(cfg["max_position_embeddings"]), tokenizer=vocab_facts, files=files,
            verified=verify, verify_skipped=verify_skipped, tools=tool_versions(), host=host_facts(),
            total_s=round(time.perf_counter() - t_start, 3))
        manifest.write(tmp)
    return manifest
