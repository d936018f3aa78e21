from __future__ import annotations

import hashlib
import json
import math

import pytest

from edgekit import pretokenizers as pt
from edgekit.architectures import tensor_shapes
from edgekit.synth import PRESETS, shard_plan, synthesize

# Published parameter counts of the real checkpoints these presets mirror.
REAL_PARAMS = {
    "r1-distill-qwen-1.5b": 1_777_088_000,
    "r1-distill-qwen-7b": 7_615_616_512,
    "r1-distill-llama-8b": 8_030_261_248,
}


@pytest.mark.parametrize("name", sorted(REAL_PARAMS))
def test_r1_presets_have_the_real_models_shapes(name):
    cfg = PRESETS[name].config
    assert sum(math.prod(s) for s in tensor_shapes(cfg).values()) == REAL_PARAMS[name]


def test_r1_preset_configs_match_the_issue():
    q15 = PRESETS["r1-distill-qwen-1.5b"].config
    assert (q15["hidden_size"], q15["intermediate_size"], q15["num_hidden_layers"], q15["num_attention_heads"],
            q15["num_key_value_heads"], q15["vocab_size"], q15["rope_theta"], q15["rms_norm_eps"],
            q15["max_position_embeddings"], q15["tie_word_embeddings"]) == (
        1536, 8960, 28, 12, 2, 151936, 10000.0, 1e-6, 131072, False)
    llama = PRESETS["r1-distill-llama-8b"].config
    assert llama["rope_scaling"] == {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                     "original_max_position_embeddings": 8192, "rope_type": "llama3"}
    assert llama["rope_theta"] == 500000.0 and llama["rms_norm_eps"] == 1e-5


def test_shard_plan_splits_above_the_limit_and_keeps_order():
    shapes = {f"t{i}": (1000, 1000) for i in range(5)}  # 2 MB each in bf16
    plan = shard_plan(shapes, max_bytes=4_500_000)
    assert plan == [["t0", "t1"], ["t2", "t3"], ["t4"]]
    assert shard_plan(shapes, max_bytes=10**12) == [list(shapes)]


def _digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.glob("*.safetensors")):
        h.update(p.read_bytes())
    return h.hexdigest()


def test_same_seed_same_weights_other_seed_other_weights(tiny_qwen2, tmp_path):
    again = synthesize("tiny-qwen2", tmp_path / "again", seed=1)
    other = synthesize("tiny-qwen2", tmp_path / "other", seed=7)
    assert _digest(tiny_qwen2) == _digest(tmp_path / "again")
    assert _digest(tiny_qwen2) != _digest(tmp_path / "other")
    assert again["n_params"] == other["n_params"]


def test_checkpoint_loads_in_transformers_with_r1_tokenizer(tiny_qwen2):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    cfg = AutoConfig.from_pretrained(tiny_qwen2)
    assert cfg.model_type == "qwen2" and cfg.torch_dtype == torch.bfloat16
    model = AutoModelForCausalLM.from_pretrained(tiny_qwen2)
    shapes = tensor_shapes(json.loads((tiny_qwen2 / "config.json").read_text()))
    assert sum(p.numel() for p in model.parameters()) == sum(math.prod(s) for s in shapes.values())
    tok = AutoTokenizer.from_pretrained(tiny_qwen2)
    for special in (pt.R1_BOS, pt.R1_EOS, pt.R1_USER, pt.R1_ASSISTANT, pt.R1_THINK, pt.R1_END_THINK):
        assert len(tok.encode(special, add_special_tokens=False)) == 1, special
    ids = tok("hello world")["input_ids"]
    assert ids[0] == tok.convert_tokens_to_ids(pt.R1_BOS) == cfg.bos_token_id
    text = "Größe 42 — 模型 ✅"
    assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert chat == f"{pt.R1_BOS}{pt.R1_USER}hi{pt.R1_ASSISTANT}{pt.R1_THINK}\n"
    tj = json.loads((tiny_qwen2 / "tokenizer.json").read_text())
    assert pt.family_of(tj) == "qwen2"


def test_llama_preset_uses_llama3_split(tiny_llama):
    tj = json.loads((tiny_llama / "tokenizer.json").read_text())
    assert pt.family_of(tj) == "llama3"
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_llama)
    # the Llama-3 split keeps up to three digits together, Qwen2 splits every digit
    pieces = tok.tokenize("12345")
    assert all(len(p) <= 3 for p in pieces) and len(pieces) >= 2


def test_sharded_checkpoint_has_index_and_loads(tmp_path, monkeypatch):
    from transformers import AutoModelForCausalLM

    import edgekit.synth as synth

    monkeypatch.setattr(synth, "SHARD_MAX_BYTES", 1_000_000)
    summary = synthesize("tiny-llama", tmp_path / "sharded", seed=3)
    assert summary["shards"] > 1
    index = json.loads((tmp_path / "sharded" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"].values()) == {p.name for p in (tmp_path / "sharded").glob("*.safetensors")}
    assert index["metadata"]["total_size"] == summary["bytes"]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "sharded")
    assert sum(p.numel() for p in model.parameters()) == summary["n_params"]


def test_synth_files_get_the_umask_modes(tiny_qwen2):
    import os

    umask = os.umask(0)
    os.umask(umask)
    for p in tiny_qwen2.iterdir():  # safetensors alone would leave model.safetensors at 0600
        assert p.stat().st_mode & 0o777 == 0o666 & ~umask, p
