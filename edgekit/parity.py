"""Numerical parity of exported models against their source.

Unquantized exports are compared with transformers' logits on a fixed probe
prompt (max |diff| and top-1 agreement per position). Quantized exports are
compared with the unquantized export: KL divergence of the next-token
distributions and top-1 agreement. With random weights top-1 alone says
little (logits are nearly flat), which is why KL and max |diff| carry the
decision.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit import native
from edgekit.errors import EdgekitError
from edgekit.runners.llamacpp import LlamaCppRunner, quiet_llama_logs

PROBE_TEXT = (
    "Edge devices measure tokens per second. Die Messung zählt. "
    "Le modèle tourne sur une petite carte. 在边缘设备上运行模型。 "
    "<think>2 + 2 = 4</think> It's 42 W."
)

# The rule for unquantized exports: the export may differ from float32 transformers by what the
# format's own precision explains, not by a constant. `reference_logits` runs transformers twice on
# the same weights: once in float32 (the reference), once emulating the runtime's rounding (weights,
# matmul inputs and the KV cache at the format's types: `PRECISIONS`). How far the emulation lands
# from the reference (`precision_rel_p999`, per logit std) is what rounding alone does to this
# checkpoint; the export passes when its own distance is within PRECISION_FACTOR times that, plus
# FLOOR_REL for accumulation order. Measured (p99.9 |diff| / std, tiny Qwen2 and Llama written by
# transformers at initializer_range 0.02-0.5, tests/test_verify_rule.py): correct F16 GGUFs land
# at 1.0-1.3x their emulation's distance (0.002-0.10 x std, growing with the weight scale), while a
# missing rotary permutation or swapped norms land at 47-350x. 3x leaves 2x margin on both sides.
PRECISION_FACTOR = 3.0
FLOOR_REL = 0.002
MIN_TOP1 = 0.9          # top-1 agreement, lowered by what the emulation itself flips (near-ties)


class Precision:
    """How a runtime rounds, emulated on float32 transformers. `weights`: dtype of every matrix
    (1-D norms and biases stay float32, as GGUF writes them); `activations`: dtype every Linear's
    input is rounded to (llama.cpp converts a matmul's input to its weight's vec-dot type);
    `kv_cache`: dtype of the K/V projections' outputs (llama.cpp's cache is F16 by default);
    `whole_model`: run the whole model in this dtype instead (an FP16 ONNX graph)."""

    def __init__(self, name: str, weights=None, activations=None, kv_cache=None, whole_model=None):
        self.name, self.weights, self.activations = name, weights, activations
        self.kv_cache, self.whole_model = kv_cache, whole_model


def _precisions() -> dict[str, Precision]:
    import torch

    f16, bf16 = torch.float16, torch.bfloat16
    return {
        "gguf-F16": Precision("llama.cpp F16", weights=f16, activations=f16, kv_cache=f16),
        "gguf-BF16": Precision("llama.cpp BF16", weights=bf16, activations=bf16, kv_cache=f16),
        "gguf-F32": Precision("llama.cpp F32", kv_cache=f16),
        "onnx-fp32": Precision("ONNX Runtime FP32"),
        "onnx-fp16": Precision("ONNX Runtime FP16", whole_model=f16),
    }


def probe_ids(ckpt_path: Path) -> list[int]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(ckpt_path))
    return list(tok(PROBE_TEXT, add_special_tokens=True)["input_ids"])


def _load_model(ckpt_path: Path, threads: int | None, dtype=None):
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading checkpoint shards" would break the progress bars
    if threads:
        torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(str(ckpt_path), dtype=dtype or torch.float32)
    model.eval()
    return model


def _forward(model, ids: list[int]) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def transformers_logits(ckpt_path: Path, ids: list[int], threads: int | None = None) -> np.ndarray:
    return reference_logits(ckpt_path, ids, threads)[0]


def reference_logits(ckpt_path: Path, ids: list[int], threads: int | None = None,
                     precision: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """float32 transformers logits, and (with `precision`, a key of PRECISIONS) the same model's
    logits with the runtime's rounding emulated; one model load for both."""

    model = _load_model(ckpt_path, threads)
    ref = _forward(model, ids)
    emulated = None
    if precision is not None:
        p = _precisions()[precision]
        if p.whole_model is not None:
            model = model.to(p.whole_model)
        else:
            _emulate(model, p)
        emulated = _forward(model, ids)
        if p.whole_model is not None and not np.isfinite(emulated).all():
            raise EdgekitError(f"transformers in {p.whole_model} overflows on this checkpoint",
                               "its activations exceed the format's range: export in fp32, or pass --no-verify")
    del model
    return ref, emulated


def _emulate(model, p: Precision) -> None:
    import torch

    def rnd(dtype):
        return lambda t: t.to(dtype).to(torch.float32)

    with torch.no_grad():
        if p.weights is not None:
            for param in model.parameters():
                if param.dim() >= 2:  # matrices and the embedding; GGUF keeps 1-D tensors in F32
                    param.copy_(rnd(p.weights)(param))
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        if p.activations is not None:
            module.register_forward_pre_hook(lambda _m, args, r=rnd(p.activations): (r(args[0]), *args[1:]))
        if p.kv_cache is not None and name.endswith(("k_proj", "v_proj")):
            module.register_forward_hook(lambda _m, _args, out, r=rnd(p.kv_cache): r(out))


def llamacpp_logits(gguf_path: Path, ids: list[int], threads: int | None = None) -> np.ndarray:
    """llama.cpp's logits for every position of `ids`, computed in a child process: a crash
    inside llama.cpp (an AMX build, a wheel for another CPU) is one error line, not a dead CLI."""
    return native.call("edgekit.parity:llamacpp_logits_here", str(gguf_path), list(ids), threads,
                       library="llama.cpp", what=f"decode of {Path(gguf_path).name} (logits check)")


def llamacpp_logits_here(gguf_path: str, ids: list[int], threads: int | None = None) -> np.ndarray:
    """The same, in this process (what the child runs), through the bench's own runner: one batch,
    every position's logits, flash attention off."""
    errors = quiet_llama_logs()
    n = max(32, len(ids))
    runner = LlamaCppRunner(Path(gguf_path), threads=threads or 1, gpu_layers=0, ctx=max(64, len(ids) + 8),
                            n_batch=n, n_ubatch=n, flash_attn="off")
    try:
        runner.load()
    except EdgekitError as e:
        detail = errors[-1] if errors else e.problem
        raise EdgekitError(f"llama.cpp cannot load {Path(gguf_path).name} ({detail})",
                           "nothing was written; please report this checkpoint") from None
    try:
        return runner.logits(ids)
    finally:
        runner.close()


def compare_to_reference(ref: np.ndarray, got: np.ndarray, rel_tol: float | None = None,
                         emulated: np.ndarray | None = None) -> dict:
    """An export's logits vs a reference. Passes when the 99.9th percentile of |diff| per logit std
    is within the tolerance and top-1 agrees. The tolerance is `rel_tol` when given (a reference
    that should match to float rounding), else derived from `emulated`, the reference with the
    format's rounding emulated: PRECISION_FACTOR x its own distance + FLOOR_REL."""
    if ref.shape != got.shape:
        raise EdgekitError(f"logit shapes differ: reference {ref.shape}, export {got.shape}",
                           "the export's vocabulary does not match the checkpoint")
    diff = np.abs(ref - got)
    scale = float(np.std(ref)) or 1.0
    top1 = float(np.mean(ref.argmax(-1) == got.argmax(-1)))
    max_diff = float(diff.max())
    p999 = float(np.quantile(diff, 0.999))
    out = {"positions": int(ref.shape[0]), "max_abs_diff": max_diff, "p999_abs_diff": p999,
           "mean_abs_diff": float(diff.mean()), "logit_std": scale, "rel_max_diff": max_diff / scale,
           "rel_p999_diff": p999 / scale}
    min_top1 = MIN_TOP1
    if rel_tol is None:
        if emulated is None:
            raise ValueError("compare_to_reference needs rel_tol or emulated")
        noise = float(np.quantile(np.abs(ref - emulated), 0.999)) / scale
        emulated_top1 = float(np.mean(ref.argmax(-1) == emulated.argmax(-1)))
        rel_tol = PRECISION_FACTOR * noise + FLOOR_REL
        min_top1 = min(MIN_TOP1, emulated_top1 - 0.05)
        out.update(precision_rel_p999=noise, precision_top1=emulated_top1,
                   rel_p999_vs_emulated=float(np.quantile(np.abs(got - emulated), 0.999)) / scale,
                   rule=f"{PRECISION_FACTOR:g} x precision_rel_p999 + {FLOOR_REL:g}")
    # The decision uses the 99.9th percentile of |diff| (a real model's few activation outliers,
    # rounded inside the runtime, can move single logits more than this) and top-1 agreement; a
    # conversion bug moves most logits by about the logits' own spread.
    out.update(rel_tol=rel_tol, top1_agreement=top1, min_top1=min_top1,
               passed=bool(np.isfinite(got).all() and p999 / scale <= rel_tol and top1 >= min_top1))
    return out


def disagreement(what: str, v: dict) -> str:
    """One sentence for a failed compare_to_reference: by how much, against what."""
    text = (f"{what} disagrees with transformers: 99.9th percentile |logit diff| {v['p999_abs_diff']:.4g} = "
            f"{v['rel_p999_diff']:.3g} x logit std, tolerance {v['rel_tol']:.3g}")
    if "precision_rel_p999" in v:
        text += (f" (= {v['rule']}, where {v['precision_rel_p999']:.3g} is how far transformers moves when "
                 f"the format's rounding is emulated)")
    return text + f"; top-1 agreement {v['top1_agreement']:.0%} (minimum {v['min_top1']:.0%})"


def log_softmax(x: np.ndarray) -> np.ndarray:
    """log softmax over the last axis, in float64 (a new array; `x` is left as it is)."""
    x = x.astype(np.float64)
    x -= x.max(-1, keepdims=True)
    x -= np.log(np.exp(x).sum(-1, keepdims=True))
    return x


def compare_quantized(base: np.ndarray, quant: np.ndarray) -> dict:
    """Quantized vs unquantized export: KL(base || quant) per position and top-1 agreement."""
    lp, lq = log_softmax(base), log_softmax(quant)
    kl = (np.exp(lp) * (lp - lq)).sum(-1)
    return {
        "positions": int(base.shape[0]),
        "kl_mean": float(kl.mean()),
        "kl_max": float(kl.max()),
        "top1_agreement": float(np.mean(base.argmax(-1) == quant.argmax(-1))),
        "finite": bool(np.isfinite(quant).all()),
    }
