"""The GGUF file format (llama.cpp's model files), read by hand.

Layout (little-endian; versions 2 and 3):
  magic b"GGUF", u32 version, u64 tensor count, u64 metadata count;
  metadata: key (u64 length + UTF-8), u32 value type, value (arrays: u32 element type, u64 count, items);
  tensor infos: name, u32 n_dims, n_dims x u64 ne (fastest axis first), u32 ggml type, u64 offset;
  padding to `general.alignment` (default 32), then the tensor data, each tensor at its offset
  (a multiple of the alignment) from the start of the data section.

A GGUFFile keeps the file memory-mapped and dequantizes a tensor only when asked (ggml_quants.py), so
reading the metadata of a 100 MB model is instant. Every inconsistency (bad magic, truncated header,
a tensor outside the file, an unsupported type) is a GGUFError naming the file, and the tensor or
metadata key.
"""
from __future__ import annotations

import mmap
import os
import struct
from dataclasses import dataclass

import numpy as np

from .ggml_quants import GGMLType, ggml_type

MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
# value type id -> (struct format, size) for the scalar types
_SCALARS = {0: ("<B", 1), 1: ("<b", 1), 2: ("<H", 2), 3: ("<h", 2), 4: ("<I", 4), 5: ("<i", 4),
            6: ("<f", 4), 7: ("<?", 1), 10: ("<Q", 8), 11: ("<q", 8), 12: ("<d", 8)}
_NUMPY = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "<u1", 10: "<u8", 11: "<i8",
          12: "<f8"}
STRING, ARRAY = 8, 9


class GGUFError(ValueError):
    """A file that is not a valid GGUF file; the message names the file and the problem."""


@dataclass(frozen=True)
class GGUFTensor:
    name: str
    shape: tuple          # numpy order (slowest axis first): ne reversed
    type: GGMLType
    offset: int           # absolute byte offset in the file
    n_bytes: int


class _Cursor:
    """Reads GGUF values from a buffer, raising GGUFError (with what was being read) past its end."""

    def __init__(self, buf, path: str):
        self.buf, self.pos, self.path = buf, 0, path

    def fail(self, problem: str):
        raise GGUFError(f"GGUF file {self.path!r}: {problem}")

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            self.fail(f"truncated while reading {what} at byte {self.pos} (needs {n} bytes, file has "
                      f"{len(self.buf)})")
        view = memoryview(self.buf)[self.pos:self.pos + n]
        self.pos += n
        return view

    def scalar(self, type_id: int, what: str):
        fmt, size = _SCALARS[type_id]
        return struct.unpack(fmt, self.take(size, what))[0]

    def string(self, what: str) -> str:
        n = self.scalar(10, what)
        raw = self.take(n, what)
        try:
            return str(raw, "utf-8")
        except UnicodeDecodeError as e:
            self.fail(f"{what} is not valid UTF-8 ({e})")

    def value(self, type_id: int, what: str):
        if type_id in _SCALARS:
            return self.scalar(type_id, what)
        if type_id == STRING:
            return self.string(what)
        if type_id == ARRAY:
            item_type, count = self.scalar(4, what), self.scalar(10, what)
            if item_type in _NUMPY:     # numbers in one read; lists keep the metadata plain Python
                size = _SCALARS[item_type][1]
                values = np.frombuffer(self.take(count * size, what), dtype=_NUMPY[item_type]).tolist()
                return [bool(v) for v in values] if item_type == 7 else values
            return [self.value(item_type, f"{what}[{i}]") for i in range(count)]
        self.fail(f"{what} has unknown value type {type_id}")


class GGUFFile:
    """A memory-mapped GGUF file: `metadata` (key -> str / int / float / bool / list), `tensors`
    (name -> GGUFTensor in file order), `load(name)` -> a float32 array of the tensor's shape."""

    def __init__(self, path):
        self.path = os.fspath(path)
        try:
            self._file = open(self.path, "rb")
        except IsADirectoryError:
            raise GGUFError(f"GGUF file {self.path!r}: is a directory") from None
        try:
            size = os.fstat(self._file.fileno()).st_size
            if size < 24:
                raise GGUFError(f"GGUF file {self.path!r}: {size} bytes, too short for a GGUF header")
            self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
            self._parse()
        except BaseException:
            self.close()
            raise

    def _parse(self) -> None:
        cur = _Cursor(self._map, self.path)
        magic = bytes(cur.take(4, "the magic"))
        if magic != MAGIC:
            cur.fail(f"bad magic {magic!r} (expected {MAGIC!r}): not a GGUF file")
        self.version = cur.scalar(4, "the version")
        if self.version not in (2, 3):
            cur.fail(f"GGUF version {self.version} is not supported (2 and 3 are)")
        n_tensors, n_kv = cur.scalar(10, "the tensor count"), cur.scalar(10, "the metadata count")
        self.metadata = {}
        for i in range(n_kv):
            key = cur.string(f"metadata key {i}")
            type_id = cur.scalar(4, f"the type of metadata {key!r}")
            self.metadata[key] = cur.value(type_id, f"metadata {key!r}")
        alignment = self.metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0 or alignment % 8:
            cur.fail(f"metadata 'general.alignment' = {alignment!r} must be a positive multiple of 8")
        infos = []
        for i in range(n_tensors):
            name = cur.string(f"the name of tensor {i}")
            n_dims = cur.scalar(4, f"tensor {name!r} n_dims")
            if not 1 <= n_dims <= 4:
                cur.fail(f"tensor {name!r}: n_dims {n_dims} (GGML tensors have 1 to 4)")
            ne = [cur.scalar(10, f"tensor {name!r} dims") for _ in range(n_dims)]
            type_id = cur.scalar(4, f"tensor {name!r} type")
            offset = cur.scalar(10, f"tensor {name!r} offset")
            infos.append((name, ne, type_id, offset))
        data_start = -(-cur.pos // alignment) * alignment
        self.tensors = {}
        for name, ne, type_id, offset in infos:
            if name in self.tensors:
                cur.fail(f"tensor {name!r} is listed twice")
            try:
                kind = ggml_type(type_id)
            except ValueError as e:
                cur.fail(f"tensor {name!r}: {e}")
            n_values = int(np.prod(ne, dtype=np.int64))
            if ne[0] % kind.block_values:
                cur.fail(f"tensor {name!r}: row length {ne[0]} is not a multiple of {kind.name}'s block of "
                         f"{kind.block_values}")
            n_bytes = kind.n_bytes(n_values)
            if offset % alignment:
                cur.fail(f"tensor {name!r}: offset {offset} is not a multiple of the alignment {alignment}")
            start = data_start + offset
            if start + n_bytes > len(self._map):
                cur.fail(f"tensor {name!r}: its {n_bytes} bytes at {start} run past the end of the file "
                         f"({len(self._map)} bytes): truncated?")
            self.tensors[name] = GGUFTensor(name, tuple(reversed(ne)), kind, start, n_bytes)

    def raw(self, name: str) -> memoryview:
        """The tensor's bytes as stored (quantized blocks or plain values)."""
        t = self._tensor(name)
        return memoryview(self._map)[t.offset:t.offset + t.n_bytes]

    def load(self, name: str) -> np.ndarray:
        """The tensor dequantized to a new float32 array of its numpy shape."""
        t = self._tensor(name)
        return t.type.dequantize(self.raw(name)).reshape(t.shape)

    def _tensor(self, name: str) -> GGUFTensor:
        if name not in self.tensors:
            raise KeyError(f"GGUF file {self.path!r} has no tensor {name!r}")
        return self.tensors[name]

    def close(self) -> None:
        if getattr(self, "_map", None) is not None:
            try:
                self._map.close()
            except BufferError:     # a raw() view is still alive; the map closes when it is released
                pass
            self._map = None
        if getattr(self, "_file", None) is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> "GGUFFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_metadata(path) -> dict:
    """The metadata dict of a GGUF file (tensor data is not read)."""
    with GGUFFile(path) as f:
        return dict(f.metadata)
