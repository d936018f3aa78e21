from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit import parity
from edgekit.checkpoint import open_checkpoint
from edgekit.converters import gguf as conv
from edgekit.converters.gguf_vocab import identify_pre
from edgekit.errors import EdgekitError
from edgekit.manifest import sha256_of

MULTILINGUAL = (
    "Hello, world! It's 2026 and we've measured 1234567 tokens.\n"
    "Größenordnung: Überprüfung der Übersetzung. Ça coûte 3,50 €.\n"
    "在边缘设备上运行大语言模型。エッジデバイスで実行する。한국어 문장입니다.\n"
    "Привет, мир! Γειά σου κόσμε. مرحبا بالعالم. नमस्ते दुनिया\n"
    "def f(x):\n\treturn x ** 2  # 🚀 done\n   spaces   and\n\n\nnewlines <think>why?</think>"
)


def _files(manifest):
    return {f.quant: f for f in manifest.files}


def test_f16_export_matches_transformers(tiny_ckpt, exported):
    out, manifest = exported(tiny_ckpt)
    f16 = _files(manifest)["F16"]
    assert f16.verify["passed"] and f16.verify["top1_agreement"] == 1.0
    # an independent prompt, not the one the exporter checked
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(tiny_ckpt)(MULTILINGUAL)["input_ids"]
    ref, emulated = parity.reference_logits(tiny_ckpt, ids, threads=2, precision="gguf-F16")
    got = parity.llamacpp_logits(out / f16.file, ids, threads=2)
    result = parity.compare_to_reference(ref, got, emulated=emulated)
    assert result["passed"] and result["top1_agreement"] == 1.0
    assert result["rel_max_diff"] < 0.02, result  # synth's narrow weights: F16 rounding is tiny


def test_tokenization_identical_to_transformers(tiny_ckpt, exported):
    from llama_cpp import Llama
    from transformers import AutoTokenizer

    out, manifest = exported(tiny_ckpt)
    hf = AutoTokenizer.from_pretrained(tiny_ckpt)
    llm = Llama(model_path=str(out / _files(manifest)["Q4_K_M"].file), vocab_only=True, verbose=False)
    try:
        for text in MULTILINGUAL.split("\n") + [MULTILINGUAL]:
            assert llm.tokenize(text.encode(), add_bos=False, special=False) == \
                hf.encode(text, add_special_tokens=False), text
        # BOS is added the same way
        assert llm.tokenize(b"hello", add_bos=True) == hf.encode("hello")
        assert llm.detokenize(hf.encode(MULTILINGUAL, add_special_tokens=False)).decode() == MULTILINGUAL
    finally:
        llm.close()


def test_quantized_files_load_and_generate(tiny_ckpt, exported):
    from llama_cpp import Llama

    out, manifest = exported(tiny_ckpt)
    for quant in ("Q4_K_M", "Q4_0"):
        f = _files(manifest)[quant]
        from edgekit.inspect import inspect_gguf

        facts = inspect_gguf(out / f.file)
        assert facts["quant"] == quant
        assert facts["n_params"] == manifest.n_params
        assert f.verify["finite"] and 0 <= f.verify["kl_mean"] < 0.05
        llm = Llama(model_path=str(out / f.file), n_ctx=128, n_threads=2, verbose=False, seed=1)
        try:
            prompt = llm.tokenize(b"Edge devices", add_bos=True)
            tokens = []
            for tok in llm.generate(prompt, temp=0.0):
                tokens.append(tok)
                if len(tokens) == 8:
                    break
            assert len(tokens) == 8 and all(0 <= t < llm.n_vocab() for t in tokens)
        finally:
            llm.close()


def _dequantized_state_dict(gguf_path, ckpt_path):
    import torch
    from gguf import GGUFReader
    from gguf.quants import dequantize

    plans = {p.gguf_name: p for p in conv.plan_tensors(open_checkpoint(str(ckpt_path)), "F16")}
    state = {}
    for t in GGUFReader(gguf_path).tensors:
        p = plans[t.name]
        if p.hf_name is None:
            continue
        w = dequantize(t.data, t.tensor_type).astype(np.float32).reshape(p.shape)
        if p.permute_heads:  # undo the rotary interleave
            n = p.permute_heads
            w = w.reshape(n, w.shape[0] // n // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(p.shape)
        state[p.hf_name] = torch.from_numpy(np.ascontiguousarray(w))
    return state


@pytest.mark.parametrize("quant", ["Q4_K_M", "Q4_0"])
def test_quantized_logits_match_a_dequantized_reference(tiny_ckpt, exported, quant):
    """llama.cpp on the quantized file ~= transformers on the file's own dequantized weights.

    With random weights top-1 is nearly flat, so the check is: the dequantized
    reference explains llama.cpp's quantized logits several times better than
    the original weights do. A wrong block layout or scale would not.
    """
    import torch
    from transformers import AutoModelForCausalLM

    out, manifest = exported(tiny_ckpt)
    path = out / _files(manifest)[quant].file
    ids = parity.probe_ids(tiny_ckpt)
    model = AutoModelForCausalLM.from_pretrained(tiny_ckpt, dtype=torch.float32)
    with torch.no_grad():
        original = model(torch.tensor([ids])).logits[0].numpy()
        model.load_state_dict(_dequantized_state_dict(path, tiny_ckpt), strict=True)
        dequant_ref = model(torch.tensor([ids])).logits[0].numpy()
    got = parity.llamacpp_logits(path, ids, threads=2)
    err_ref = np.abs(got - dequant_ref).max()
    err_orig = np.abs(got - original).max()
    # measured on tiny-qwen2 Q4_K_M: max 0.022 vs 0.23, mean 0.004 vs 0.042 (the rest is
    # llama.cpp quantizing activations to 8 bits inside its dot products)
    assert err_ref < 0.25 * err_orig, (err_ref, err_orig)
    assert np.abs(got - dequant_ref).mean() < 0.2 * np.abs(got - original).mean()


def test_rope_factors_match_transformers_llama3(tiny_llama):
    import torch
    from transformers import AutoConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    config = AutoConfig.from_pretrained(tiny_llama)
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](config, torch.device("cpu"))
    cfg = json.loads((tiny_llama / "config.json").read_text())
    dim, base = 64, cfg["rope_theta"]
    plain = 1.0 / base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    ours = conv.llama3_rope_factors(cfg)
    np.testing.assert_allclose(ours, (plain / scaled.double()).numpy(), rtol=1e-5)
    assert ours.min() == 1.0 and ours.max() == 8.0  # both ends of the band are reached
    assert conv.llama3_rope_factors({**cfg, "rope_scaling": None}) is None


def test_permutation_bug_is_caught_and_nothing_is_written(tiny_llama, tmp_path, monkeypatch):
    monkeypatch.setattr(conv, "permute_rotary", lambda w, n_head: w)  # a converter that forgets to permute
    out = tmp_path / "bad"
    with pytest.raises(EdgekitError, match="disagrees with transformers"):
        conv.export_gguf(str(tiny_llama), out, ["Q4_0"], verify=True, threads=2)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # no temporary folder left behind either


@pytest.mark.parametrize("wide", [False, True], ids=["synth", "transformers-init-0.2"])
def test_swapped_norms_are_caught(tiny_qwen2, hf_checkpoint, tmp_path, monkeypatch, wide):
    """Also on a wide checkpoint written by transformers, where the derived tolerance is larger."""
    ckpt = hf_checkpoint("tiny-qwen2", 0.2) if wide else tiny_qwen2
    original = conv.TensorPlan.load

    def swapped(self, ckpt):
        if self.hf_name and "input_layernorm" in self.hf_name:
            self.hf_name = self.hf_name.replace("input_layernorm", "post_attention_layernorm")
        return original(self, ckpt)

    monkeypatch.setattr(conv.TensorPlan, "load", swapped)
    with pytest.raises(EdgekitError, match="disagrees"):
        conv.export_gguf(str(ckpt), tmp_path / "bad", ["F16"], verify=True, threads=2)


def test_manifest_describes_the_files(tiny_qwen2, exported):
    out, manifest = exported(tiny_qwen2)
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk["format"] == "gguf" and on_disk["architecture"] == "Qwen2ForCausalLM"
    assert {f["quant"] for f in on_disk["files"]} == {"F16", "Q4_K_M", "Q4_0"}
    for f in manifest.files:
        assert sha256_of(out / f.file) == f.sha256
        assert (out / f.file).stat().st_size == f.size_bytes
    assert on_disk["tokenizer"]["tokenizer_pre"] == "deepseek-r1-qwen"
    assert {"gguf", "llama-cpp-python", "transformers", "edgekit"} <= set(on_disk["tools"])
    assert on_disk["n_params"] == manifest.n_params > 0
    assert sorted(p.name for p in out.iterdir()) == sorted(["manifest.json"] + [f.file for f in manifest.files])


def test_intermediate_f16_is_not_kept_unless_asked(tiny_qwen2, tmp_path):
    manifest = conv.export_gguf(str(tiny_qwen2), tmp_path / "q", ["Q8_0"], verify=False, threads=2)
    assert sorted(p.name for p in (tmp_path / "q").iterdir()) == ["manifest.json", "tiny-qwen2-Q8_0.gguf"]
    assert manifest.files[0].verify is None


def test_bf16_export_is_exact_for_bf16_weights(tiny_qwen2, tmp_path):
    from gguf import GGUFReader

    conv.export_gguf(str(tiny_qwen2), tmp_path / "b", ["BF16"], verify=False, threads=2)
    ckpt = open_checkpoint(str(tiny_qwen2))
    reader = GGUFReader(tmp_path / "b" / "tiny-qwen2-BF16.gguf")
    t = next(t for t in reader.tensors if t.name == "blk.0.ffn_up.weight")
    import torch

    src = ckpt.read_tensor("model.layers.0.mlp.up_proj.weight").view(torch.int16).numpy().view(np.uint16)
    assert np.array_equal(np.asarray(t.data).view(np.uint16).reshape(src.shape), src)


def _tokenizer_json(regex: str, added=()):
    return {"pre_tokenizer": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]},
        "added_tokens": [{"id": i, "content": c, "special": True} for i, c in enumerate(added)],
        "model": {"type": "BPE", "vocab": {}}}


def test_pre_tokenizer_name_comes_from_the_tokenizer():
    from edgekit.pretokenizers import R1_BOS, SPLIT_PATTERNS

    assert identify_pre(_tokenizer_json(SPLIT_PATTERNS["qwen2"], ["<|endoftext|>"])) == "qwen2"
    assert identify_pre(_tokenizer_json(SPLIT_PATTERNS["qwen2"], [R1_BOS])) == "deepseek-r1-qwen"
    assert identify_pre(_tokenizer_json(SPLIT_PATTERNS["llama3"], [R1_BOS])) == "llama-bpe"
    with pytest.raises(EdgekitError, match="unrecognised pre-tokenizer.*supported: qwen2"):
        identify_pre(_tokenizer_json(r"\p{N}{1,2}|\s+"))
    with pytest.raises(EdgekitError, match="unrecognised"):
        identify_pre({"pre_tokenizer": {"type": "Metaspace"}, "model": {"type": "BPE"}})


def test_vocab_is_padded_with_unused_tokens(tiny_qwen2, exported):
    from gguf import GGUFReader, TokenType

    out, manifest = exported(tiny_qwen2)
    reader = GGUFReader(out / _files(manifest)["F16"].file)
    types = reader.fields["tokenizer.ggml.token_type"].contents()
    tokens = reader.fields["tokenizer.ggml.tokens"].contents()
    used = manifest.tokenizer["n_tokens_used"]
    assert len(tokens) == manifest.vocab_size > used
    assert all(t == TokenType.UNUSED for t in types[used:])
    assert tokens[-1] == f"[PAD{manifest.vocab_size - 1}]"
    assert types[manifest.tokenizer["special_token_ids"]["bos"]] == TokenType.CONTROL


def test_rope_settings_from_both_config_schemas(tmp_path):
    import gguf

    cfg4 = {"rope_theta": 1e6, "rope_scaling": {"type": "yarn", "factor": 4.0,
                                                 "original_max_position_embeddings": 32768}}
    cfg5 = {"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e6, "factor": 4.0,
                                "original_max_position_embeddings": 32768, "beta_fast": 32.0}}
    for cfg in (cfg4, cfg5):
        assert conv.rope_params(cfg)["rope_theta"] == 1e6 and conv.rope_params(cfg)["rope_type"] == "yarn"
        w = gguf.GGUFWriter(tmp_path / "x.gguf", "qwen2")
        conv.add_rope_scaling(w, cfg)
        kv = w.kv_data[0]
        assert kv["qwen2.rope.scaling.type"].value == "yarn"
        assert kv["qwen2.rope.scaling.factor"].value == 4.0
        assert kv["qwen2.rope.scaling.original_context_length"].value == 32768
    # transformers 5 keeps Llama-3's theta inside rope_parameters: the factors must use it
    llama5 = {"hidden_size": 256, "num_attention_heads": 4, "rope_parameters": {
        "rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}}
    llama4 = {"hidden_size": 256, "num_attention_heads": 4, "rope_theta": 500000.0,
              "rope_scaling": {**llama5["rope_parameters"]}}
    np.testing.assert_array_equal(conv.llama3_rope_factors(llama5), conv.llama3_rope_factors(llama4))
    assert conv.rope_params({"rope_scaling": {"rope_type": "default"}})["rope_type"] is None
    with pytest.raises(EdgekitError, match="rope scaling type 'dynamic' is not supported"):
        conv.add_rope_scaling(gguf.GGUFWriter(tmp_path / "y.gguf", "llama"),
                              {"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}})


def test_chat_markers_are_control_tokens_think_is_not():
    from gguf import TokenType

    from edgekit.converters.gguf_vocab import vocab_tables

    tj = {"model": {"type": "BPE", "vocab": {"a": 0}}, "added_tokens": [
        {"id": 1, "content": "<｜User｜>", "special": False},
        {"id": 2, "content": "<|im_start|>", "special": False},
        {"id": 3, "content": "<think>", "special": False},
        {"id": 4, "content": "<｜end▁of▁sentence｜>", "special": True}]}
    tokens, types = vocab_tables(tj, 6)
    assert types == [TokenType.NORMAL, TokenType.CONTROL, TokenType.CONTROL, TokenType.USER_DEFINED,
                     TokenType.CONTROL, TokenType.UNUSED]
    assert tokens[5] == "[PAD5]"


def test_tied_embeddings_and_wide_heads_convert_exactly(tmp_path, monkeypatch):
    """Qwen2.5-0.5B/Llama-3.2-1B style: no lm_head (tied), and head_dim != hidden / heads."""
    from gguf import GGUFReader

    import edgekit.synth as synth

    base = synth.PRESETS["tiny-llama"]
    variant = synth.Preset("tiny-llama-tied", base.family, {**base.config, "tie_word_embeddings": True,
                                                            "head_dim": 96, "attention_bias": True},
                           tokenizer_vocab=512)
    monkeypatch.setitem(synth.PRESETS, variant.name, variant)
    synth.synthesize(variant.name, tmp_path / "ckpt", seed=4)
    manifest = conv.export_gguf(str(tmp_path / "ckpt"), tmp_path / "out", ["F16"], verify=True, threads=2)
    v = manifest.files[0].verify
    assert v["passed"] and v["top1_agreement"] == 1.0
    reader = GGUFReader(tmp_path / "out" / manifest.files[0].file)
    names = {t.name for t in reader.tensors}
    assert "output.weight" not in names and "blk.0.attn_q.bias" in names
    assert reader.fields["llama.attention.key_length"].contents() == 96
