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

from edgekit.errors import EdgekitError

PROBE_TEXT = (
    "Edge devices measure tokens per second. Die Messung zählt. "
    "Le modèle tourne sur une petite carte. 在边缘设备上运行模型。 "
    "<think>2 + 2 = 4</think> It's 42 W."
)

# F16 weights and F16 activations in llama.cpp's matmuls against float32 transformers:
# differences are a few 1e-3 of the logit scale on random checkpoints. A converter bug
# (a swapped tensor, a missing permutation, a wrong rope) moves logits by O(scale).
F16_REL_TOL = 0.02      # max |diff| / std(reference logits)
BF16_REL_TOL = 0.05
F32_REL_TOL = 0.002
MIN_TOP1 = 0.9          # random weights gave 100 %; near-ties may flip a few positions


def probe_ids(ckpt_path: Path) -> list[int]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(ckpt_path))
    return list(tok(PROBE_TEXT, add_special_tokens=True)["input_ids"])


def transformers_logits(ckpt_path: Path, ids: list[int], threads: int | None = None) -> np.ndarray:
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # "Loading checkpoint shards" would break the progress bars
    if threads:
        torch.set_num_threads(threads)
    model = AutoModelForCausalLM.from_pretrained(str(ckpt_path), dtype=torch.float32)
    model.eval()
    with torch.no_grad():
        logits = model(torch.tensor([ids])).logits[0].float().numpy()
    del model
    return logits


def llamacpp_logits(gguf_path: Path, ids: list[int], threads: int | None = None) -> np.ndarray:
    from llama_cpp import Llama

    from edgekit.runners.llamacpp import quiet_llama_logs

    errors = quiet_llama_logs()
    try:
        llm = Llama(model_path=str(gguf_path), n_ctx=max(64, len(ids) + 8), n_batch=max(32, len(ids)),
                    n_ubatch=max(32, len(ids)), logits_all=True, n_threads=threads, n_gpu_layers=0,
                    verbose=False)
    except (ValueError, RuntimeError) as e:
        detail = errors[-1] if errors else str(e)
        raise EdgekitError(f"llama.cpp cannot load {Path(gguf_path).name} ({detail})",
                           "nothing was written; please report this checkpoint") from None
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)], dtype=np.float32)
    except RuntimeError as e:
        raise EdgekitError(f"llama.cpp failed to evaluate {Path(gguf_path).name} ({e})",
                           "nothing was written; please report this checkpoint") from None
    finally:
        llm.close()


def compare_to_reference(ref: np.ndarray, got: np.ndarray, rel_tol: float) -> dict:
    """Unquantized export vs transformers: pass when max |diff| is small against the logit scale."""
    if ref.shape != got.shape:
        raise EdgekitError(f"logit shapes differ: reference {ref.shape}, export {got.shape}",
                           "the export's vocabulary does not match the checkpoint")
    diff = np.abs(ref - got)
    scale = float(np.std(ref)) or 1.0
    top1 = float(np.mean(ref.argmax(-1) == got.argmax(-1)))
    max_diff = float(diff.max())
    p999 = float(np.quantile(diff, 0.999))
    # The decision uses the 99.9th percentile of |diff| (a real model's few activation outliers,
    # rounded to F16 inside llama.cpp, can move single logits more than this) and top-1
    # agreement; a conversion bug moves most logits by about the logits' own spread.
    return {
        "positions": int(ref.shape[0]),
        "max_abs_diff": max_diff,
        "p999_abs_diff": p999,
        "mean_abs_diff": float(diff.mean()),
        "logit_std": scale,
        "rel_max_diff": max_diff / scale,
        "rel_p999_diff": p999 / scale,
        "rel_tol": rel_tol,
        "top1_agreement": top1,
        "passed": bool(np.isfinite(got).all() and p999 / scale <= rel_tol and top1 >= MIN_TOP1),
    }


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


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
