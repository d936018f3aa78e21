"""The CLI through Click's CliRunner: happy paths and every bad input -> one line, exit 1."""

from __future__ import annotations

import errno
import json
import shutil

import pytest
from click.testing import CliRunner
from helpers import assert_one_line_error

from edgekit.cli import cli


def run(*args, env=None):
    return CliRunner().invoke(cli, [str(a) for a in args], env=env)


def test_synth_export_inspect_round_trip(tmp_path):
    r = run("synth", "tiny-llama", tmp_path / "ckpt", "--seed", 5)
    assert r.exit_code == 0, r.output
    assert "tokenizer" in r.output and (tmp_path / "ckpt" / "config.json").is_file()
    r = run("export", "gguf", tmp_path / "ckpt", "-o", tmp_path / "out", "--quant", "q4_k_m,Q8_0", "--threads", 2)
    assert r.exit_code == 0, r.output
    assert "ckpt-Q4_K_M.gguf" in r.output and "ckpt-Q8_0.gguf" in r.output
    r = run("inspect", tmp_path / "out" / "ckpt-Q8_0.gguf", "--json")
    assert r.exit_code == 0, r.output
    facts = json.loads(r.output)
    assert facts["quant"] == "Q8_0" and facts["architecture"] == "llama"
    assert facts["tokenizer"]["pre"] == "llama-bpe" and facts["block_count"] == 2
    r = run("inspect", tmp_path / "out")
    assert r.exit_code == 0 and "Q4_K_M" in r.output


def test_export_json_output(tiny_qwen2, tmp_path):
    r = run("export", "gguf", tiny_qwen2, "-o", tmp_path / "o", "--quant", "Q4_0", "--no-verify", "--json")
    assert r.exit_code == 0, r.output
    manifest = json.loads(r.stdout)
    assert [f["quant"] for f in manifest["files"]] == ["Q4_0"]


def test_synth_list_and_unknown_preset(tmp_path):
    r = run("synth", "--list")
    assert r.exit_code == 0 and "r1-distill-llama-8b" in r.output
    assert_one_line_error(run("synth", "gpt-5", tmp_path / "x"), "unknown preset 'gpt-5'", "tiny-qwen2")
    assert not (tmp_path / "x").exists()


@pytest.fixture
def ckpt_copy(tiny_qwen2, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(tiny_qwen2, dst)
    return dst


def _edit_config(ckpt, **changes):
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg.update(changes)
    (ckpt / "config.json").write_text(json.dumps(cfg))


def export_fails(ckpt, out, *fragments, extra=()):
    line = assert_one_line_error(run("export", "gguf", ckpt, "-o", out, "--threads", 2, *extra), *fragments)
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")], "temporary files left"
    return line


def test_unknown_architecture_names_supported_ones(ckpt_copy, tmp_path):
    _edit_config(ckpt_copy, architectures=["GPT2LMHeadModel"])
    export_fails(ckpt_copy, tmp_path / "out", "unsupported architecture 'GPT2LMHeadModel'",
                 "LlamaForCausalLM, Qwen2ForCausalLM")


def test_missing_config(ckpt_copy, tmp_path):
    (ckpt_copy / "config.json").unlink()
    export_fails(ckpt_copy, tmp_path / "out", "no config.json")


def test_corrupt_config(ckpt_copy, tmp_path):
    (ckpt_copy / "config.json").write_text('{"architectures": ["Qwen2ForCausalLM"], ')
    export_fails(ckpt_copy, tmp_path / "out", "config.json is not valid JSON")


def test_incomplete_config(ckpt_copy, tmp_path):
    cfg = json.loads((ckpt_copy / "config.json").read_text())
    del cfg["hidden_size"]
    (ckpt_copy / "config.json").write_text(json.dumps(cfg))
    export_fails(ckpt_copy, tmp_path / "out", "config.json lacks hidden_size")


def test_missing_tokenizer(ckpt_copy, tmp_path):
    (ckpt_copy / "tokenizer.json").unlink()
    export_fails(ckpt_copy, tmp_path / "out", "no tokenizer.json")


def test_corrupt_tokenizer(ckpt_copy, tmp_path):
    (ckpt_copy / "tokenizer.json").write_text("{not json")
    export_fails(ckpt_copy, tmp_path / "out", "tokenizer.json is not valid JSON")


def test_unknown_pre_tokenizer(ckpt_copy, tmp_path):
    tj = json.loads((ckpt_copy / "tokenizer.json").read_text())
    tj["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\w+|\s+"
    (ckpt_copy / "tokenizer.json").write_text(json.dumps(tj))
    export_fails(ckpt_copy, tmp_path / "out", "unrecognised pre-tokenizer", "llama-bpe")


def test_truncated_safetensors(ckpt_copy, tmp_path):
    weights = ckpt_copy / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    export_fails(ckpt_copy, tmp_path / "out", "model.safetensors is truncated or corrupt")


def test_missing_weights(ckpt_copy, tmp_path):
    (ckpt_copy / "model.safetensors").unlink()
    (ckpt_copy / "pytorch_model.bin").write_bytes(b"x")
    export_fails(ckpt_copy, tmp_path / "out", "no safetensors weights", "pytorch_model.bin")


def test_weights_do_not_match_config(ckpt_copy, tmp_path):
    _edit_config(ckpt_copy, num_hidden_layers=3)
    export_fails(ckpt_copy, tmp_path / "out", "tensor model.layers.2.", "missing")


def test_unknown_quant(tiny_qwen2, tmp_path):
    export_fails(tiny_qwen2, tmp_path / "out", "unknown quantization 'Q4_K_X'", "Q4_K_M", extra=("--quant", "Q4_K_X"))


def test_missing_checkpoint_and_offline_hub_id(tmp_path, monkeypatch):
    import huggingface_hub.constants

    export_fails(tmp_path / "nope" / "a" / "b", tmp_path / "out", "not found")
    # the cache path is fixed when huggingface_hub is imported: point it at an empty folder
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    line = assert_one_line_error(run("export", "gguf", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "-o",
                                     tmp_path / "out", env=env), "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B")
    assert "HF_HUB_OFFLINE" in line and "local" in line


def test_output_exists_needs_force(tiny_qwen2, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    assert_one_line_error(run("export", "gguf", tiny_qwen2, "-o", out, "--no-verify"), "already exists", "--force")
    assert (out / "keep.txt").read_text() == "precious"
    r = run("export", "gguf", tiny_qwen2, "-o", out, "--no-verify", "--quant", "Q4_0", "--force")
    assert r.exit_code == 0, r.output
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "tiny-qwen2-Q4_0.gguf"]


def test_force_never_replaces_the_checkpoint_itself(ckpt_copy, tmp_path):
    for out in (ckpt_copy, tmp_path, ckpt_copy / "inside"):  # the checkpoint, above it, inside it
        assert_one_line_error(run("export", "gguf", ckpt_copy, "-o", out, "--force", "--no-verify"),
                              "is, holds or lies inside the input")
    assert (ckpt_copy / "model.safetensors").is_file()


def test_corrupt_tokenizer_config(ckpt_copy, tmp_path):
    (ckpt_copy / "tokenizer_config.json").write_text("{oops")
    export_fails(ckpt_copy, tmp_path / "out", "tokenizer files", "corrupt")


def test_stale_partial_folders_of_killed_runs_are_removed(tiny_qwen2, tmp_path):
    stale = tmp_path / ".out.partial-999999"  # no such process
    stale.mkdir()
    (stale / "half.gguf").write_bytes(b"GGUF")
    r = run("export", "gguf", tiny_qwen2, "-o", tmp_path / "out", "--quant", "Q4_0", "--no-verify")
    assert r.exit_code == 0, r.output
    assert not stale.exists()


def test_disk_full_leaves_nothing(tiny_qwen2, tmp_path, monkeypatch):
    import gguf

    calls = {"n": 0}
    real = gguf.GGUFWriter.write_tensor_data

    def filling(self, tensor, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 5:
            raise OSError(errno.ENOSPC, "No space left on device", "tiny-qwen2-F16.gguf")
        return real(self, tensor, *a, **kw)

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensor_data", filling)
    export_fails(tiny_qwen2, tmp_path / "out", "disk full")


def test_inspect_bad_inputs(tmp_path, tiny_qwen2, exported):
    assert_one_line_error(run("inspect", tmp_path / "missing.gguf"), "does not exist")
    (tmp_path / "notes.txt").write_text("hello")
    assert_one_line_error(run("inspect", tmp_path / "notes.txt"), "not a GGUF file")
    out, manifest = exported(tiny_qwen2)
    data = (out / manifest.files[0].file).read_bytes()
    for cut in (20, len(data) // 2, len(data) - 100):
        (tmp_path / "cut.gguf").write_bytes(data[:cut])
        assert_one_line_error(run("inspect", tmp_path / "cut.gguf"), "truncated")
    assert_one_line_error(run("inspect", tmp_path), "no manifest.json")
