"""A GGUF file's header, read without materialising its arrays.

gguf-py's GGUFReader builds a numpy view for every part of every field: a 262k-token vocabulary
is over a million small objects and seconds of Python before the first fact (9 s for `edgekit
inspect` of Gemma-3-270M on 2 cores). The facts edgekit needs are scalars, strings, the length of
the vocabulary, two of its tokens and the tensor table, so this reader walks the header once:
scalars and strings are decoded, numeric arrays are skipped by their byte size, string arrays
(the vocabulary, the merges) by their lengths only, keeping each item's offset so one token can be
read when asked. Value and tensor types are gguf-py's own enums (GGUFValueType,
GGMLQuantizationType, GGML_QUANT_SIZES), so the spec lives in one place.

Contract: `read_header(path)` returns a GGUFHeader with the same facts gguf-py's reader gives
(`PyHeader` wraps that reader behind the same methods: tests/test_gguf_header.py compares the two
on every fixture and on a real Gemma GGUF), or raises ValueError on a file that is not a
little-endian GGUF or whose header runs past the end of the file. Big-endian files are left to
gguf-py (`header_of` falls back).
"""

from __future__ import annotations

import mmap
import struct
from array import array
from dataclasses import dataclass, field
from pathlib import Path

SMALL_ARRAY = 4096  # arrays up to this many items are decoded (tags, languages); longer ones only counted


@dataclass(frozen=True)
class TensorInfo:
    name: str
    type_name: str     # GGMLQuantizationType's name: Q4_K, F16, ...
    n_elements: int
    n_bytes: int
    data_offset: int   # from the start of the file


@dataclass
class GGUFHeader:
    version: int
    fields: dict = field(default_factory=dict)        # key -> decoded value (long arrays: absent)
    array_lengths: dict = field(default_factory=dict)  # key -> item count, for every array
    tensors: list = field(default_factory=list)
    _string_items: dict = field(default_factory=dict)  # key -> offsets of each item of a long string array
    _number_items: dict = field(default_factory=dict)  # key -> (offset, struct code) of a long numeric array
    _path: Path | None = None

    def get(self, key: str, default=None):
        return self.fields.get(key, default)

    def has(self, key: str) -> bool:
        return key in self.fields or key in self.array_lengths

    def array_len(self, key: str) -> int:
        return self.array_lengths.get(key, 0)

    def array_item(self, key: str, i: int):
        """Item `i` of an array field (a long string array's item is read from the file now)."""
        if key in self.fields:
            return self.fields[key][i]
        if key in self._number_items:
            start, code = self._number_items[key]
            with open(self._path, "rb") as f:
                f.seek(start + i * struct.calcsize("<" + code))
                return struct.unpack("<" + code, f.read(struct.calcsize("<" + code)))[0]
        offsets = self._string_items[key]
        with open(self._path, "rb") as f:
            f.seek(offsets[i])
            (n,) = struct.unpack("<Q", f.read(8))
            return f.read(n).decode("utf-8", errors="replace")


def read_header(path: Path) -> GGUFHeader:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

    scalar = {GGUFValueType.UINT8: "B", GGUFValueType.INT8: "b", GGUFValueType.UINT16: "H",
              GGUFValueType.INT16: "h", GGUFValueType.UINT32: "I", GGUFValueType.INT32: "i",
              GGUFValueType.FLOAT32: "f", GGUFValueType.BOOL: "?", GGUFValueType.UINT64: "Q",
              GGUFValueType.INT64: "q", GGUFValueType.FLOAT64: "d"}
    sizes = {t: struct.calcsize("<" + c) for t, c in scalar.items()}
    path = Path(path)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        end = len(m)
        pos = 0

        def take(fmt: str):
            nonlocal pos
            n = struct.calcsize(fmt)
            if pos + n > end:
                raise ValueError("the header runs past the end of the file")
            out = struct.unpack_from(fmt, m, pos)
            pos += n
            return out

        def string() -> str:
            nonlocal pos
            (n,) = take("<Q")
            if pos + n > end:
                raise ValueError("a string runs past the end of the file")
            s = bytes(m[pos:pos + n]).decode("utf-8", errors="replace")
            pos += n
            return s

        def skip_string() -> int:
            nonlocal pos
            start = pos
            (n,) = take("<Q")
            pos += n
            if pos > end:
                raise ValueError("a string runs past the end of the file")
            return start

        def value(vtype):
            if vtype == GGUFValueType.STRING:
                return string()
            if vtype in scalar:
                return take("<" + scalar[vtype])[0]
            raise ValueError(f"unknown GGUF value type {vtype}")

        magic = bytes(m[0:4])
        if magic != b"GGUF":
            raise ValueError(f"not a GGUF file (starts with {magic!r})")
        pos = 4
        (version,) = take("<I")
        if version & 0xFFFF == 0:  # 0x03000000: a big-endian file
            raise ValueError("a big-endian GGUF")
        n_tensors, n_kv = take("<QQ")
        header = GGUFHeader(version=version, _path=path)
        header.fields.update({"GGUF.version": version, "GGUF.tensor_count": n_tensors, "GGUF.kv_count": n_kv})
        for _ in range(n_kv):
            key = string()
            (vtype,) = take("<I")
            vtype = GGUFValueType(vtype)
            if vtype != GGUFValueType.ARRAY:
                header.fields[key] = value(vtype)
                continue
            (itype,), (count,) = take("<I"), take("<Q")
            itype = GGUFValueType(itype)
            header.array_lengths[key] = count
            if itype == GGUFValueType.STRING:
                if count <= SMALL_ARRAY:
                    header.fields[key] = [string() for _ in range(count)]
                else:
                    offsets = array("Q")
                    for _ in range(count):
                        offsets.append(skip_string())
                    header._string_items[key] = offsets
            elif itype in scalar:
                if pos + count * sizes[itype] > end:
                    raise ValueError(f"the array {key} runs past the end of the file")
                if count <= SMALL_ARRAY:
                    header.fields[key] = list(struct.unpack_from(f"<{count}{scalar[itype]}", m, pos))
                else:
                    header._number_items[key] = (pos, scalar[itype])
                pos += count * sizes[itype]
            else:
                raise ValueError(f"{key}: arrays of {itype.name} are not read here")
        infos = []
        for _ in range(n_tensors):
            name = string()
            (n_dims,) = take("<I")
            dims = take(f"<{n_dims}Q")
            (ttype,), (offset,) = take("<I"), take("<Q")
            qtype = GGMLQuantizationType(ttype)
            n_elements = 1
            for d in dims:
                n_elements *= int(d)
            block, type_size = GGML_QUANT_SIZES[qtype]
            infos.append((name, qtype.name, n_elements, n_elements * type_size // block, offset))
        alignment = int(header.fields.get("general.alignment", 32))
        data_start = -(-pos // alignment) * alignment
        header.tensors = [TensorInfo(n, t, e, b, data_start + o) for n, t, e, b, o in infos]
    return header


class PyHeader:
    """gguf-py's GGUFReader behind GGUFHeader's methods: the fallback, and the reference the fast
    reader is tested against."""

    def __init__(self, reader):
        self.reader = reader
        self.version = int(reader.fields["GGUF.version"].contents())
        self.tensors = [TensorInfo(t.name, t.tensor_type.name, int(t.n_elements), int(t.n_bytes),
                                   int(t.data_offset)) for t in reader.tensors]

    def get(self, key: str, default=None):
        f = self.reader.fields.get(key)
        if f is None:
            return default
        try:
            return f.contents()
        except Exception:
            return default

    def has(self, key: str) -> bool:
        return key in self.reader.fields

    def array_len(self, key: str) -> int:
        f = self.reader.fields.get(key)
        return len(f.data) if f is not None else 0

    def array_item(self, key: str, i: int):
        return self.get(key, [])[i]


def header_of(path: Path):
    """The fast header where this reader can read the file, else gguf-py's (big-endian files)."""
    try:
        return read_header(path)
    except ValueError as e:
        if "big-endian" not in str(e):
            raise
    import gguf

    return PyHeader(gguf.GGUFReader(path))
