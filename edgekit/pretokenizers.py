"""Byte-level BPE pre-tokenizer split patterns, by tokenizer family.

These are the split regexes that Qwen2 and Llama-3 tokenizer.json files carry
(they differ only in how digits are grouped). The synthesizer writes them and
the GGUF converter recognises them, so both agree on what each family is.
"""

from __future__ import annotations

SPLIT_PATTERNS: dict[str, str] = {
    # Qwen2 (and the DeepSeek-R1 Qwen distills): one digit per piece.
    "qwen2": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
    # Llama-3 (and the DeepSeek-R1 Llama distill): up to three digits per piece.
    "llama3": r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
}

# the llama.cpp pre-tokenizer names edgekit's GGUF converter writes, for error lines
SUPPORTED_PRE = "qwen2 (Qwen2 split regex), deepseek-r1-qwen (Qwen2 regex + R1 special tokens), llama-bpe (Llama-3 regex)"

# DeepSeek-R1 special tokens, in the order the R1 distills add them.
R1_BOS = "<｜begin▁of▁sentence｜>"
R1_EOS = "<｜end▁of▁sentence｜>"
R1_USER = "<｜User｜>"
R1_ASSISTANT = "<｜Assistant｜>"
R1_THINK = "<think>"
R1_END_THINK = "</think>"


def family_of(tokenizer_json: dict) -> str | None:
    """Which family's split regex a tokenizer.json's pre-tokenizer uses, if any."""
    patterns = list(_split_patterns(tokenizer_json.get("pre_tokenizer")))
    if len(patterns) != 1:
        return None
    for family, pattern in SPLIT_PATTERNS.items():
        if patterns[0] == pattern:
            return family
    return None


def _split_patterns(node):
    if not isinstance(node, dict):
        return
    if node.get("type") == "Sequence":
        for child in node.get("pretokenizers", []):
            yield from _split_patterns(child)
    elif node.get("type") == "Split":
        pattern = node.get("pattern", {})
        yield pattern.get("Regex", pattern.get("String"))
