"""edgekit.formats: one table of formats; each sniffs, resolves, checks and describes its own
files, and foreign, empty or truncated files are told apart from real ones."""

from __future__ import annotations

import pytest

from edgekit.errors import EdgekitError
from edgekit.formats import ModelFacts, all_formats, get_format, resolve_artifact


@pytest.fixture(scope="module")
def gguf_file(exported, tiny_qwen2):
    out, manifest = exported(tiny_qwen2)
    return out / next(f.file for f in manifest.files if f.quant == "Q4_0")


def test_every_format_in_the_table_has_the_protocol():
    names = [f.name for f in all_formats()]
    assert names == ["gguf", "onnx", "tensorrt", "edgellm-onnx"]
    for fmt in all_formats():
        for member in ("sniff", "find_in", "check", "inspect", "facts", "make_runner", "runtime_version"):
            assert callable(getattr(fmt, member)), (fmt.name, member)
        assert fmt.runtime and fmt.library
    with pytest.raises(EdgekitError, match="no format 'openvino'"):
        get_format("openvino")


def test_sniff_tells_real_files_from_foreign_empty_and_short_ones(gguf_file, tmp_path):
    gguf, onnx = get_format("gguf"), get_format("onnx")
    foreign = {"empty.gguf": b"", "short.gguf": b"GG", "text.gguf": b"not a model", "zip.gguf": b"PK\x03\x04...",
               "model.onnx.txt": b"GGUF"}
    for name, data in foreign.items():
        (tmp_path / name).write_bytes(data)
    assert gguf.sniff(gguf_file) and not onnx.sniff(gguf_file)
    assert not any(gguf.sniff(tmp_path / n) for n in foreign if n != "model.onnx.txt")
    assert gguf.sniff(tmp_path / "model.onnx.txt")  # by its magic, whatever the name
    assert not gguf.sniff(tmp_path / "missing.gguf") and not onnx.sniff(tmp_path / "missing.onnx")
    with pytest.raises(EdgekitError, match=r"is not a GGUF file \(starts with b'not '\) and not an .onnx file"):
        resolve_artifact(tmp_path / "text.gguf")


def test_check_and_facts_of_a_gguf(gguf_file, tmp_path):
    fmt = get_format("gguf")
    facts = fmt.facts(gguf_file)
    assert isinstance(facts, ModelFacts) and facts.format == "gguf" and facts.quant == "Q4_0"
    d = facts.details
    # the weights a token reads: all but the embedding table (untied here), and no rope factors
    assert 0 < facts.weight_bytes_per_token < facts.size_bytes
    assert facts.kv_bytes_per_position == d["block_count"] * d["head_count_kv"] * 2 * (256 // 4) * 2
    assert facts.bytes_per_token(10) == facts.weight_bytes_per_token + 10 * facts.kv_bytes_per_position
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(gguf_file.read_bytes()[:-1000])
    with pytest.raises(EdgekitError, match="is truncated: its tensors end at byte"):
        fmt.check(cut)
    head = tmp_path / "head.gguf"
    head.write_bytes(gguf_file.read_bytes()[:64])
    with pytest.raises(EdgekitError, match="truncated or corrupt"):
        fmt.check(head)


def test_resolve_folders(gguf_file, tmp_path):
    one = tmp_path / "one"
    one.mkdir()
    (one / "m.gguf").write_bytes(gguf_file.read_bytes())
    model, fmt = resolve_artifact(one)
    assert model == one / "m.gguf" and fmt.name == "gguf"
    (tmp_path / "empty").mkdir()
    with pytest.raises(EdgekitError, match="holds no .gguf or .onnx file"):
        resolve_artifact(tmp_path / "empty")
    two = tmp_path / "two"
    two.mkdir()
    for name in ("a.gguf", "b.gguf"):
        (two / name).write_bytes(gguf_file.read_bytes())
    with pytest.raises(EdgekitError, match=r"holds 2 model files \(a.gguf, b.gguf\)"):
        resolve_artifact(two)
    with pytest.raises(EdgekitError, match="does not exist"):
        resolve_artifact(tmp_path / "nope")
