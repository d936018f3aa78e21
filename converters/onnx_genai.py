"""onnxruntime-genai's side of an ONNX export: the genai_config.json that lets the export
folder load in onnxruntime-genai unchanged (written by converters/onnx.py's export_onnx)."""

from __future__ import annotations

from edgekit.architectures import head_dim, n_kv_heads


def genai_config(config: dict, model_type: str, model_file: str, generation: dict,
                 providers: list[dict] | None = None) -> dict:
    """onnxruntime-genai's genai_config.json for an optimum-layout decoder.

    past_present_share_buffer must be false: optimum's graph concatenates the new
    keys onto past (present grows by one per step) instead of writing into a
    preallocated buffer as the GroupQueryAttention graphs of genai's builder do.
    """
    eos = generation.get("eos_token_id", config.get("eos_token_id"))
    pad = generation.get("pad_token_id", config.get("pad_token_id"))
    if pad is None:
        pad = eos[0] if isinstance(eos, list) else eos
    ctx = int(config["max_position_embeddings"])
    return {
        "model": {
            "bos_token_id": generation.get("bos_token_id", config.get("bos_token_id", 1)),
            "context_length": ctx,
            "decoder": {
                "session_options": {"log_id": "onnxruntime-genai", "provider_options": providers or []},
                "filename": model_file,
                "head_size": head_dim(config),
                "hidden_size": int(config["hidden_size"]),
                "inputs": {"input_ids": "input_ids", "attention_mask": "attention_mask",
                           "position_ids": "position_ids", "past_key_names": "past_key_values.%d.key",
                           "past_value_names": "past_key_values.%d.value"},
                "outputs": {"logits": "logits", "present_key_names": "present.%d.key",
                            "present_value_names": "present.%d.value"},
                "num_attention_heads": int(config["num_attention_heads"]),
                "num_hidden_layers": int(config["num_hidden_layers"]),
                "num_key_value_heads": n_kv_heads(config),
            },
            "eos_token_id": eos,
            "pad_token_id": pad,
            "type": model_type,
            "vocab_size": int(config["vocab_size"]),
        },
        "search": {
            "diversity_penalty": 0.0, "do_sample": False, "early_stopping": True, "length_penalty": 1.0,
            "max_length": ctx, "min_length": 0, "no_repeat_ngram_size": 0, "num_beams": 1,
            "num_return_sequences": 1, "past_present_share_buffer": False, "repetition_penalty": 1.0,
            "temperature": generation.get("temperature", 1.0), "top_k": generation.get("top_k", 50),
            "top_p": generation.get("top_p", 1.0),
        },
    }
