"""A Hugging Face byte-level BPE tokenizer -> GGUF tokenizer metadata.

llama.cpp chooses its pre-tokenizer (the split regex applied before BPE) from
`tokenizer.ggml.pre`. A wrong name loads silently and tokenizes wrongly, so the
name is derived from the tokenizer's own split regex and special tokens, and an
unknown tokenizer is refused rather than guessed.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import TYPE_CHECKING

from edgekit import pretokenizers as pt
from edgekit.errors import EdgekitError
from edgekit.hf_schema import check_tokenizer_fits, read_tokenizer_json
from edgekit.pretokenizers import SUPPORTED_PRE

if TYPE_CHECKING:  # annotations only: gguf is imported where it is used
    import gguf


def identify_pre(tokenizer_json: dict) -> str:
    """The llama.cpp pre-tokenizer name for this tokenizer, or a clear error."""
    family = pt.family_of(tokenizer_json)
    added = {t.get("content") for t in tokenizer_json.get("added_tokens", [])}
    if family == "qwen2":
        return "deepseek-r1-qwen" if pt.R1_BOS in added else "qwen2"
    if family == "llama3":
        return "llama-bpe"
    raise EdgekitError("unrecognised pre-tokenizer in tokenizer.json (its split regex matches no known family)",
                       f"supported: {SUPPORTED_PRE}")


LOOKS_SPECIAL = re.compile(r"^(<\|.*\|>|<｜.*｜>|<pad>|<unused\d*>|<mask>)$")


def looks_special(content: str) -> bool:
    """Added tokens shaped like chat markers (`<|im_start|>`, `<｜User｜>`) are CONTROL tokens for
    llama.cpp even when the tokenizer marks them non-special, as llama.cpp's converter treats them:
    otherwise user text could spell a turn marker. `<think>` stays user-defined."""
    return bool(LOOKS_SPECIAL.match(content))


def vocab_tables(tokenizer_json: dict, vocab_size: int) -> tuple[list[str], list[int]]:
    """Token strings and llama.cpp token types for ids 0..vocab_size-1.

    Added tokens marked special become CONTROL (parsed only on request), other
    added tokens USER_DEFINED (always matched, as transformers does), ids the
    tokenizer does not use are padded as UNUSED `[PAD<id>]`.
    """
    import gguf

    model = tokenizer_json["model"]
    if model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
        raise EdgekitError(f"tokenizer model type {model.get('type')!r} is not supported",
                           f"byte-level BPE tokenizers are supported: {SUPPORTED_PRE}")
    check_tokenizer_fits(tokenizer_json, vocab_size)
    by_id: dict[int, tuple[str, int]] = {i: (tok, gguf.TokenType.NORMAL) for tok, i in model["vocab"].items()}
    for t in tokenizer_json.get("added_tokens", []):
        special = t.get("special") or looks_special(t["content"])
        kind = gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED
        by_id[int(t["id"])] = (t["content"], kind)
    tokens, types = [], []
    for i in range(vocab_size):
        tok, kind = by_id.get(i, (f"[PAD{i}]", gguf.TokenType.UNUSED))
        tokens.append(tok)
        types.append(int(kind))
    return tokens, types


def add_tokenizer(writer: gguf.GGUFWriter, path: Path, vocab_size: int) -> dict:
    import gguf

    tj = read_tokenizer_json(path)
    pre = identify_pre(tj)
    tokens, types = vocab_tables(tj, vocab_size)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    gguf_log = logging.getLogger("gguf")
    level = gguf_log.level
    gguf_log.setLevel(logging.ERROR)  # its warnings about unusual templates are not the user's business
    try:
        special = gguf.SpecialVocab(path, load_merges=True, n_vocab=len(tokens))
    except (ValueError, OSError, KeyError, TypeError) as e:  # json.JSONDecodeError is a ValueError
        raise EdgekitError(f"tokenizer files in {path} are corrupt ({' '.join(str(e).split())[:160]})",
                           "re-download or re-save the tokenizer (tokenizer_config.json, tokenizer.json)") from None
    finally:
        gguf_log.setLevel(level)
    if not special.merges:
        raise EdgekitError(f"tokenizer.json in {path} has no BPE merges", "re-download or re-save the tokenizer")
    special.add_to_gguf(writer, quiet=True)
    return {"tokenizer_pre": pre, "n_tokens_used": len(tj["model"]["vocab"]) + len(tj.get("added_tokens", [])),
            "vocab_size": vocab_size, "special_token_ids": dict(special.special_token_ids),
            "add_bos": special.add_special_token.get("bos")}
