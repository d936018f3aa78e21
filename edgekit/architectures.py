"""One small description per supported decoder architecture.

Everything that differs between Qwen2 and Llama lives here, in one place that
the checkpoint synthesizer, the GGUF converter and the parity check all read.
An unsupported architecture names the supported ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from edgekit.errors import EdgekitError
from edgekit.hf_schema import validate_config


@dataclass(frozen=True)
class Architecture:
    hf_class: str          # config.json "architectures"[0]
    model_type: str        # config.json "model_type"
    gguf_arch: str         # general.architecture in GGUF (gguf.MODEL_ARCH_NAMES value)
    qkv_bias: bool         # Qwen2 has q/k/v biases; Llama has none (unless attention_bias)
    permute_qk: bool       # llama.cpp's LLAMA arch uses interleaved rotary pairs; HF stores halves


ARCHITECTURES: dict[str, Architecture] = {
    "Qwen2ForCausalLM": Architecture("Qwen2ForCausalLM", "qwen2", "qwen2", qkv_bias=True, permute_qk=False),
    "LlamaForCausalLM": Architecture("LlamaForCausalLM", "llama", "llama", qkv_bias=False, permute_qk=True),
}

REQUIRED_CONFIG_KEYS = (
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "vocab_size", "rms_norm_eps", "max_position_embeddings",
)


def supported() -> str:
    return ", ".join(sorted(ARCHITECTURES))


def architecture_of(config: dict) -> Architecture:
    names = config.get("architectures") or []
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise EdgekitError(f"config.json: architectures must be a list of class names (got {json.dumps(names)[:60]})",
                           f"a causal LM checkpoint names one of: {supported()}")
    if not names:
        raise EdgekitError("config.json has no 'architectures' entry",
                           f"a causal LM checkpoint names one of: {supported()}")
    name = names[0]
    if name not in ARCHITECTURES:
        raise EdgekitError(f"unsupported architecture '{name}'", f"supported: {supported()}")
    missing = [k for k in REQUIRED_CONFIG_KEYS if k not in config]
    if missing:
        raise EdgekitError(f"config.json lacks {', '.join(missing)}",
                           "the checkpoint's config.json is incomplete; re-download or re-save it")
    validate_config(config)  # types and ranges
    arch = ARCHITECTURES[name]
    if config["model_type"] != arch.model_type:
        raise EdgekitError(f"config.json names the class {arch.hf_class} but model_type '{config['model_type']}'",
                           f"make them agree: {arch.hf_class} has model_type '{arch.model_type}'")
    return arch


def head_dim(config: dict) -> int:
    return int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])


def n_kv_heads(config: dict) -> int:
    return int(config.get("num_key_value_heads") or config["num_attention_heads"])


def has_qkv_bias(config: dict) -> bool:
    arch = architecture_of(config)
    return arch.qkv_bias or bool(config.get("attention_bias", False))


def tensor_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """The Hugging Face tensor names and shapes a checkpoint of this config holds."""
    hidden = int(config["hidden_size"])
    inter = int(config["intermediate_size"])
    n_head = int(config["num_attention_heads"])
    n_kv = n_kv_heads(config)
    hd = head_dim(config)
    vocab = int(config["vocab_size"])
    bias = has_qkv_bias(config)
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, hidden)}
    for i in range(int(config["num_hidden_layers"])):
        p = f"model.layers.{i}."
        shapes[p + "input_layernorm.weight"] = (hidden,)
        shapes[p + "self_attn.q_proj.weight"] = (n_head * hd, hidden)
        shapes[p + "self_attn.k_proj.weight"] = (n_kv * hd, hidden)
        shapes[p + "self_attn.v_proj.weight"] = (n_kv * hd, hidden)
        if bias:
            shapes[p + "self_attn.q_proj.bias"] = (n_head * hd,)
            shapes[p + "self_attn.k_proj.bias"] = (n_kv * hd,)
            shapes[p + "self_attn.v_proj.bias"] = (n_kv * hd,)
        shapes[p + "self_attn.o_proj.weight"] = (hidden, n_head * hd)
        shapes[p + "post_attention_layernorm.weight"] = (hidden,)
        shapes[p + "mlp.gate_proj.weight"] = (inter, hidden)
        shapes[p + "mlp.up_proj.weight"] = (inter, hidden)
        shapes[p + "mlp.down_proj.weight"] = (hidden, inter)
    shapes["model.norm.weight"] = (hidden,)
    if not config.get("tie_word_embeddings", False):
        shapes["lm_head.weight"] = (vocab, hidden)
    return shapes
