"""GGUF: llama.cpp's file format, run by llama.cpp (llama-cpp-python's bindings)."""

from __future__ import annotations

import ctypes
import importlib.util
from collections import Counter
from pathlib import Path

from edgekit.errors import EdgekitError
from edgekit.formats import ModelFacts
from edgekit.formats.gguf_header import header_of
from edgekit.runners.llamacpp import LlamaCppRunner
from edgekit.runtimes import LLAMA_CPP

MAGIC = b"GGUF"


class _InitParams(ctypes.Structure):
    _fields_ = [("no_alloc", ctypes.c_bool), ("ctx", ctypes.c_void_p)]


def _ggml_gguf():
    """ggml's own GGUF reader (libggml-base, shipped with llama-cpp-python): it reads the
    header and tensor infos in C, where gguf-py's reader walks every token string in Python."""
    spec = importlib.util.find_spec("llama_cpp")  # its folder only: importing it would load libllama too
    if spec is None or not spec.origin:
        return None
    libs = sorted((Path(spec.origin).parent / "lib").glob("*ggml-base.*"))
    if not libs:
        return None
    lib = ctypes.CDLL(str(libs[0]))
    lib.gguf_init_from_file.argtypes = [ctypes.c_char_p, _InitParams]
    lib.gguf_init_from_file.restype = ctypes.c_void_p
    lib.gguf_get_data_offset.argtypes = [ctypes.c_void_p]
    lib.gguf_get_data_offset.restype = ctypes.c_size_t
    lib.gguf_get_n_tensors.argtypes = [ctypes.c_void_p]
    lib.gguf_get_n_tensors.restype = ctypes.c_int64
    for fn in (lib.gguf_get_tensor_offset, lib.gguf_get_tensor_size):
        fn.argtypes = [ctypes.c_void_p, ctypes.c_int64]
        fn.restype = ctypes.c_size_t
    lib.gguf_free.argtypes = [ctypes.c_void_p]
    return lib


def file_type_name(ftype: int) -> str:
    import gguf

    try:
        return gguf.LlamaFileType(ftype).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    except ValueError:
        return f"ftype-{ftype}"


class GGUFFormat:
    name = "gguf"
    runtime = LLAMA_CPP.name
    library = LLAMA_CPP.label
    one_model_per_folder = False
    reads_header_only = True

    def sniff(self, path: Path) -> bool:
        try:
            with open(path, "rb") as f:
                return f.read(4) == MAGIC
        except OSError:
            return False

    def find_in(self, folder: Path) -> list[Path]:
        return sorted(Path(folder).glob("*.gguf"))

    def check(self, path: Path) -> None:
        """A GGUF whose header parses and whose every tensor lies inside the file."""
        self._header(Path(path))

    def _header(self, path: Path):
        """The header (formats/gguf_header.py: bounds-checked Python, no vocabulary built, no native
        code on a possibly hostile file), once it is known to parse and every tensor lies inside the file."""
        with open(path, "rb") as f:
            magic = f.read(4)
        if magic != MAGIC:
            raise EdgekitError(f"{path} is not a GGUF file (starts with {magic!r})", "pass a .gguf file")
        try:
            header = header_of(path)
        except Exception as e:  # a lying length, an unknown type, a cut file
            raise EdgekitError(f"{path} is truncated or corrupt (its header does not parse: "
                               f"{' '.join(str(e).split())[:120]})",
                               "re-create it with edgekit export, or download it again") from None
        end = max((t.data_offset + t.n_bytes for t in header.tensors), default=0)
        if end > path.stat().st_size:
            raise EdgekitError(f"{path} is truncated: its tensors end at byte {end}, the file has "
                               f"{path.stat().st_size}", "re-create it with edgekit export, or download it again")
        return header

    def inspect(self, path: Path) -> dict:
        path = Path(path)
        return inspect_header(path, self._header(path))

    def facts(self, path: Path) -> ModelFacts:
        d = self.inspect(path)
        return ModelFacts(format=self.name, path=Path(path), quant=d["quant"], size_bytes=d["size_bytes"],
                          n_params=d["n_params"], architecture=d["architecture"],
                          weight_bytes_per_token=d["weight_bytes_per_token"],
                          kv_bytes_per_position=d["kv_bytes_per_position"], n_layers=d["block_count"],
                          context_length=d.get("context_length"), n_vocab=d["tokenizer"]["n_tokens"] or None,
                          details=d)

    def context_length(self, path: Path) -> int | None:
        return self.facts(path).context_length

    def make_runner(self, path: Path, settings, spec):
        o = settings.llama_cpp
        gpu_layers = spec.default_gpu_layers if o.gpu_layers is None else o.gpu_layers
        return LlamaCppRunner(path, threads=settings.threads, gpu_layers=gpu_layers, ctx=settings.ctx,
                              n_batch=o.n_batch, n_ubatch=o.n_ubatch, flash_attn=o.flash_attn)

    def runtime_version(self) -> str:
        return LLAMA_CPP.version_text()


def inspect_header(path: Path, reader) -> dict:
    """inspect's dict from a header (GGUFHeader, or gguf-py's reader as a PyHeader)."""
    arch = reader.get("general.architecture", "unknown")
    a = lambda key, default=None: reader.get(f"{arch}.{key}", default)  # noqa: E731
    n_tokens = reader.array_len("tokenizer.ggml.tokens")
    bos, eos = reader.get("tokenizer.ggml.bos_token_id"), reader.get("tokenizer.ggml.eos_token_id")
    token_text = (lambda i: reader.array_item("tokenizer.ggml.tokens", i)  # noqa: E731
                  if i is not None and i < n_tokens else None)
    ftype = reader.get("general.file_type")
    types = Counter(t.type_name for t in reader.tensors)
    names = {t.name for t in reader.tensors}
    n_layer, n_embd = int(a("block_count") or 0), int(a("embedding_length") or 0)
    n_head = int(a("attention.head_count") or 1)
    n_kv = int(a("attention.head_count_kv", n_head))
    k_len = int(a("attention.key_length", n_embd // n_head))
    v_len = int(a("attention.value_length", n_embd // n_head))
    return {
        "kind": "gguf",
        "path": str(path),
        "size_bytes": path.stat().st_size,
        "architecture": arch,
        "name": reader.get("general.name"),
        "quant": file_type_name(ftype) if ftype is not None else None,
        # rope_freqs holds precomputed rope scaling factors, not parameters
        "n_params": int(sum(int(t.n_elements) for t in reader.tensors if not t.name.startswith("rope_freqs"))),
        "n_tensors": len(reader.tensors),
        "tensor_types": dict(types.most_common()),
        # what one generated token reads: every weight but the embedding table (one row is looked
        # up) unless it doubles as the output layer, and not the rope factors
        "weight_bytes_per_token": int(sum(int(t.n_bytes) for t in reader.tensors
                                          if not (t.name == "token_embd.weight" and "output.weight" in names)
                                          and not t.name.startswith("rope_freqs"))),
        # llama.cpp's cache is F16 unless told otherwise
        "kv_bytes_per_position": int(n_layer * n_kv * (k_len + v_len) * 2),
        "context_length": a("context_length"),
        "embedding_length": a("embedding_length"),
        "block_count": a("block_count"),
        "feed_forward_length": a("feed_forward_length"),
        "head_count": a("attention.head_count"),
        "head_count_kv": a("attention.head_count_kv"),
        "rope_freq_base": a("rope.freq_base"),
        "tokenizer": {
            "model": reader.get("tokenizer.ggml.model"),
            "pre": reader.get("tokenizer.ggml.pre"),
            "n_tokens": n_tokens,
            "bos_token_id": bos,
            "bos_token": token_text(bos),
            "eos_token_id": eos,
            "eos_token": token_text(eos),
            "add_bos": reader.get("tokenizer.ggml.add_bos_token"),
            "chat_template": reader.has("tokenizer.chat_template"),
        },
        "gguf_version": reader.get("GGUF.version"),
    }


FORMAT = GGUFFormat()
