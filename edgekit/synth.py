"""Write real Hugging Face checkpoint folders with random, seeded weights.

The presets carry the exact shapes of the DeepSeek-R1 distills, so benchmarks
and conversions see the same tensor sizes as the real models; the tiny ones
exist for tests and the small one for the demo. The tokenizer is a byte-level
BPE trained with `tokenizers` on text shipped in this package, with the
family's split regex, the R1 special tokens and an R1-style chat template.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable

from edgekit import pretokenizers as pt
from edgekit.architectures import tensor_shapes
from edgekit.atomic import atomic_dir
from edgekit.errors import EdgekitError

SHARD_MAX_BYTES = 2 * 10**9  # shard above 2 GB, as the real checkpoints do (at ~4-5 GB)

CHAT_TEMPLATE = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] }}"
    "{% elif message['role'] == 'user' %}{{ '<｜User｜>' + message['content'] }}"
    "{% elif message['role'] == 'assistant' %}"
    "{% set content = message['content'] %}"
    "{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{ '<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<｜Assistant｜><think>\\n' }}{% endif %}"
)

_QWEN2 = {
    "architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_act": "silu",
    "initializer_range": 0.02, "attention_dropout": 0.0, "use_cache": True,
    "use_sliding_window": False, "sliding_window": 4096, "max_window_layers": 21,
    "rope_theta": 10000.0, "rope_scaling": None, "rms_norm_eps": 1e-6,
    "max_position_embeddings": 131072, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
}
_LLAMA = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
    "initializer_range": 0.02, "attention_bias": False, "attention_dropout": 0.0, "mlp_bias": False,
    "pretraining_tp": 1, "use_cache": True, "rope_theta": 500000.0, "rms_norm_eps": 1e-5,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
    "max_position_embeddings": 131072, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
}


@dataclass(frozen=True)
class Preset:
    name: str
    family: str                 # tokenizer family: key of pretokenizers.SPLIT_PATTERNS
    config: dict = field(hash=False)  # vocab_size None: the trained tokenizer's size rounded up to 64
    tokenizer_vocab: int = 4096  # BPE training target (the corpus bounds what is reached)
    description: str = ""


def _q(**kw) -> dict:
    return {**_QWEN2, **kw}


def _l(**kw) -> dict:
    return {**_LLAMA, **kw}


PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("r1-distill-qwen-1.5b", "qwen2", _q(
        hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
        num_key_value_heads=2, vocab_size=151936),
        description="DeepSeek-R1-Distill-Qwen-1.5B shapes (1.78B params)"),
    Preset("r1-distill-qwen-7b", "qwen2", _q(
        hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
        num_key_value_heads=4, vocab_size=152064),
        description="DeepSeek-R1-Distill-Qwen-7B shapes (7.6B params)"),
    Preset("r1-distill-llama-8b", "llama3", _l(
        hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
        num_key_value_heads=8, head_dim=128, vocab_size=128256),
        description="DeepSeek-R1-Distill-Llama-8B shapes (8.0B params)"),
    Preset("small-qwen2", "qwen2", _q(
        hidden_size=768, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=12,
        num_key_value_heads=2, vocab_size=None, max_position_embeddings=32768),
        description="~85M-param Qwen2 for the demo"),
    Preset("tiny-qwen2", "qwen2", _q(
        hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, vocab_size=None, max_position_embeddings=4096),
        tokenizer_vocab=1024, description="tiny Qwen2 for tests"),
    Preset("tiny-llama", "llama3", _l(
        hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=64, vocab_size=None),
        tokenizer_vocab=1024, description="tiny Llama (llama3 rope scaling) for tests"),
]}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise EdgekitError(f"unknown preset '{name}'", f"choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]


def corpus_lines() -> list[str]:
    text = resources.files("edgekit").joinpath("data/corpus.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


def train_tokenizer(family: str, vocab_size: int):
    """A byte-level BPE with the family's split regex and the R1 special tokens."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    tok = Tokenizer(models.BPE())
    if family == "qwen2":
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pt.SPLIT_PATTERNS[family]), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=1, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[])
    tok.train_from_iterator(corpus_lines(), trainer=trainer)
    tok.add_special_tokens([AddedToken(pt.R1_EOS, special=True, normalized=False)])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in (pt.R1_USER, pt.R1_ASSISTANT)])
    tok.add_special_tokens([AddedToken(pt.R1_BOS, special=True, normalized=False)])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in (pt.R1_THINK, pt.R1_END_THINK)])
    bos = tok.token_to_id(pt.R1_BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{pt.R1_BOS}:0 $A:0", pair=f"{pt.R1_BOS}:0 $A:0 $B:1",
        special_tokens=[(pt.R1_BOS, bos)])
    return tok


def write_tokenizer(tok, out: Path, max_length: int) -> None:
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=pt.R1_BOS, eos_token=pt.R1_EOS, pad_token=pt.R1_EOS,
        model_max_length=max_length, clean_up_tokenization_spaces=False)
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(str(out))
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    cfg.update(add_bos_token=True, add_eos_token=False, chat_template=CHAT_TEMPLATE)
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "chat_template.jinja").unlink(missing_ok=True)  # keep the template in one place


def _seed_for(seed: int, name: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(name.encode())) % (2**63)


def random_tensor(name: str, shape: tuple[int, ...], seed: int, std: float):
    """bf16 weights: N(0, std) for matrices and biases, 1 + N(0, 0.1) for norms.

    Norm weights are not all ones on purpose: a converter that swapped two
    norms would then change the logits, and the parity check would see it.
    """
    import torch

    g = torch.Generator().manual_seed(_seed_for(seed, name))
    x = torch.randn(shape, generator=g, dtype=torch.float32)
    if name.endswith("norm.weight"):
        x = 1.0 + 0.1 * x
    else:
        x = x * std
    return x.to(torch.bfloat16)


def shard_plan(shapes: dict[str, tuple[int, ...]], max_bytes: int = SHARD_MAX_BYTES) -> list[list[str]]:
    shards: list[list[str]] = [[]]
    size = 0
    for name, shape in shapes.items():
        n = 2 * _numel(shape)
        if shards[-1] and size + n > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += n
    return shards


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def synthesize(preset_name: str, out_dir: Path, seed: int = 0, force: bool = False,
               progress: Callable[[str, float, float], None] | None = None, overrides: dict | None = None) -> dict:
    """Write the preset's checkpoint folder; returns a summary dict. `overrides` replace config.json
    keys of the preset (a slice of a big one: num_hidden_layers, say)."""
    from safetensors.torch import save_file

    preset = get_preset(preset_name)
    with atomic_dir(Path(out_dir), force=force) as tmp:
        tok = train_tokenizer(preset.family, preset.tokenizer_vocab)
        n_tok = tok.get_vocab_size(with_added_tokens=True)
        config = {**preset.config, **(overrides or {})}
        if config.get("vocab_size") is None:
            config["vocab_size"] = -(-n_tok // 64) * 64
        if n_tok > config["vocab_size"]:
            raise EdgekitError(f"tokenizer has {n_tok} tokens, more than vocab_size {config['vocab_size']}")
        config["bos_token_id"] = tok.token_to_id(pt.R1_BOS)
        config["eos_token_id"] = tok.token_to_id(pt.R1_EOS)
        config["transformers_version"] = "4.57.6"
        write_tokenizer(tok, tmp, max_length=min(config["max_position_embeddings"], 16384))
        _write_json(tmp / "config.json", config)
        _write_json(tmp / "generation_config.json", {
            "_from_model_config": True, "bos_token_id": config["bos_token_id"],
            "eos_token_id": config["eos_token_id"], "do_sample": True, "temperature": 0.6,
            "top_p": 0.95, "transformers_version": "4.57.6"})

        shapes = tensor_shapes(config)
        plan = shard_plan(shapes, SHARD_MAX_BYTES)
        std = float(config.get("initializer_range", 0.02))
        expected_bytes = sum(2 * _numel(s) for s in shapes.values())
        total_bytes = 0
        weight_map: dict[str, str] = {}
        for i, names in enumerate(plan):
            fname = "model.safetensors" if len(plan) == 1 else f"model-{i + 1:05d}-of-{len(plan):05d}.safetensors"
            tensors = {}
            for name in names:
                tensors[name] = random_tensor(name, shapes[name], seed, std)
                total_bytes += tensors[name].numel() * 2
                weight_map[name] = fname
                if progress:
                    progress(f"synth {preset.name}", total_bytes, expected_bytes)
            save_file(tensors, str(tmp / fname), metadata={"format": "pt"})
            del tensors
        if len(plan) > 1:
            _write_json(tmp / "model.safetensors.index.json",
                        {"metadata": {"total_size": total_bytes}, "weight_map": weight_map})
    n_params = sum(_numel(s) for s in shapes.values())
    return {"preset": preset.name, "path": str(out_dir), "n_params": n_params, "bytes": total_bytes,
            "shards": len(plan), "tokenizer_tokens": n_tok, "vocab_size": config["vocab_size"]}


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
