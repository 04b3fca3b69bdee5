"""The safetensors file format, read and written by hand (no dependency on the `safetensors` package).

Layout: an 8-byte little-endian u64 N, then N bytes of UTF-8 JSON (padded with spaces to a multiple
of 8) mapping each tensor name to {"dtype", "shape", "data_offsets": [begin, end]} plus an optional
"__metadata__" {str: str}; then the raw little-endian bytes of the tensors, back to back, with the
offsets counted from the end of the header. Files written here load with safetensors.numpy /
safetensors.torch, and files they write load here (BF16 too, widened to float32). read_tensor_infos
checks a header without reading data, and iter_file reads a file one tensor at a time, for loaders that
must not hold a whole multi-gigabyte shard in memory (models/hf_folder.py).

Writes are atomic: a temp file in the same directory, flushed and fsynced, then os.replace, then the
directory fsynced; a reader sees the old file or the new one, never a part.
"""
from __future__ import annotations

import json
import os

import numpy as np

from .. import backend
from .atomic import atomic_write, fsync_dir  # noqa: F401  (re-exported for callers of this module)

# safetensors dtype name -> numpy dtype of the bytes on disk (little-endian)
_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
# numpy dtype kind+itemsize -> safetensors name, for saving (BF16 is load-only: numpy has no bfloat16)
_NAMES = {("f", 8): "F64", ("f", 4): "F32", ("f", 2): "F16",
          ("i", 8): "I64", ("i", 4): "I32", ("i", 2): "I16", ("i", 1): "I8",
          ("u", 8): "U64", ("u", 4): "U32", ("u", 2): "U16", ("u", 1): "U8", ("b", 1): "BOOL"}

MAX_HEADER_BYTES = 100 * 1024 * 1024   # the reference implementation's limit too


class SafetensorsError(ValueError):
    """A file that is not valid safetensors; the message names the file and the problem."""


# ---------------------------------------------------------------- writing
def _to_numpy(name: str, value) -> np.ndarray:
    from ..tensor import Tensor
    data = value.data if isinstance(value, Tensor) else value
    if not isinstance(data, np.ndarray) and backend.get_array_module(data) is not np:
        data = backend.to_device(data, "cpu")               # a cupy array: copy to the host
    arr = np.asarray(data)
    if (arr.dtype.kind, arr.dtype.itemsize) not in _NAMES:
        raise TypeError(f"safetensors: tensor {name!r} has dtype {arr.dtype}, which cannot be saved "
                        f"(supported: {sorted(set(_NAMES.values()))})")
    return np.asarray(arr, dtype=arr.dtype.newbyteorder("<"), order="C")   # (ascontiguousarray makes 0-d 1-d)


def _header(arrays: dict, metadata) -> bytes:
    header = {}
    if metadata is not None:
        if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                     for k, v in metadata.items()):
            raise TypeError(f"safetensors: metadata must be a dict of str to str, got {metadata!r}")
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name, arr in arrays.items():
        header[name] = {"dtype": _NAMES[(arr.dtype.kind, arr.dtype.itemsize)], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return raw + b" " * (-len(raw) % 8)


def _write_array(f, arr: np.ndarray) -> None:
    """Write one tensor's bytes (a module-level seam: tests interrupt saves here)."""
    if arr.size:
        f.write(arr.reshape(-1).view(np.uint8).data)


def save_file(tensors: dict, path, metadata: dict | None = None) -> None:
    """Write {name: array} (numpy, cupy or Tensor) to `path` in safetensors format, atomically."""
    if not isinstance(tensors, dict):
        raise TypeError(f"safetensors: save_file takes a dict of name -> array, got {type(tensors).__name__}")
    arrays = {}
    for name, value in tensors.items():
        if not isinstance(name, str) or name == "__metadata__":
            raise ValueError(f"safetensors: invalid tensor name {name!r}")
        arrays[name] = _to_numpy(name, value)
    header = _header(arrays, metadata)

    def write(f):
        f.write(len(header).to_bytes(8, "little"))
        f.write(header)
        for arr in arrays.values():
            _write_array(f, arr)

    atomic_write(path, write)


# ---------------------------------------------------------------- reading
def _read_header(path, f, file_size: int):
    def bad(problem):
        return SafetensorsError(f"safetensors file {os.fspath(path)!r}: {problem}")

    if file_size < 8:
        raise bad(f"truncated: {file_size} bytes, too short for the 8-byte header length")
    n = int.from_bytes(f.read(8), "little")
    if n > file_size - 8:
        raise bad(f"header length {n} is beyond the file size ({file_size} bytes): truncated or not safetensors")
    if n > MAX_HEADER_BYTES:
        raise bad(f"header length {n} exceeds the limit of {MAX_HEADER_BYTES} bytes")
    raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise bad(f"invalid JSON header ({e})") from None
    if not isinstance(header, dict):
        raise bad(f"the JSON header must be an object, got {type(header).__name__}")
    metadata = header.pop("__metadata__", None)
    if metadata is not None and not (isinstance(metadata, dict)
                                     and all(isinstance(v, str) for v in metadata.values())):
        raise bad(f"__metadata__ must be an object of strings, got {metadata!r}")
    data_size = file_size - 8 - n
    entries = []
    for name, info in header.items():
        if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
            raise bad(f"tensor {name!r}: entry must have dtype, shape and data_offsets, got {info!r}")
        dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
        if dtype not in _DTYPES:
            raise bad(f"tensor {name!r}: unknown dtype {dtype!r} (supported: {sorted(_DTYPES)})")
        if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)):
            raise bad(f"tensor {name!r}: shape must be a list of non-negative integers, got {shape!r}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(type(o) is int for o in offsets)
                and 0 <= offsets[0] <= offsets[1]):
            raise bad(f"tensor {name!r}: data_offsets must be [begin, end] with 0 <= begin <= end, got {offsets!r}")
        begin, end = offsets
        expected = int(np.prod(shape, dtype=np.int64)) * _DTYPES[dtype].itemsize
        if end - begin != expected:
            raise bad(f"tensor {name!r}: data_offsets {offsets} span {end - begin} bytes but shape {shape} "
                      f"of {dtype} needs {expected}")
        if end > data_size:
            raise bad(f"tensor {name!r}: data_offsets {offsets} are out of range: the data section has only "
                      f"{data_size} bytes (file truncated?)")
        entries.append((begin, end, name, dtype, tuple(shape)))
    prev_end, prev_name = 0, None
    for begin, end, name, _, _ in sorted(entries):
        if begin < prev_end:
            raise bad(f"tensor {name!r}: data_offsets overlap those of tensor {prev_name!r}")
        if begin > prev_end:
            raise bad(f"tensor {name!r}: a gap of {begin - prev_end} bytes before its data (offsets must be "
                      "contiguous)")
        prev_end, prev_name = end, name
    if prev_end != data_size:
        raise bad(f"the tensors cover {prev_end} bytes of data but the file holds {data_size} after the header")
    return metadata, entries, 8 + n


def read_metadata(path) -> dict | None:
    """The "__metadata__" dict of a safetensors file (None when it has none); validates the header."""
    with open(path, "rb") as f:
        metadata, _, _ = _read_header(path, f, os.fstat(f.fileno()).st_size)
    return metadata


def _decode(buf, offset: int, dtype: str, shape: tuple, nbytes: int) -> np.ndarray:
    """The array of one tensor whose bytes lie at buf[offset:offset + nbytes], in native byte order
    (BF16 widened to float32)."""
    disk = _DTYPES[dtype]
    arr = np.frombuffer(buf, dtype=disk, count=nbytes // disk.itemsize, offset=offset).reshape(shape)
    if dtype == "BF16":
        return (arr.astype(np.uint32) << 16).view(np.float32)
    if not arr.dtype.isnative or offset % disk.itemsize:
        return arr.astype(disk.newbyteorder("="))        # native byte order, aligned copy
    return arr


def load_file(path) -> dict:
    """{name: numpy array} from a safetensors file, in header order; arrays are writable.
    BF16 tensors come back as float32 (exact: bfloat16 is the top half of a float32)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        metadata, entries, start = _read_header(path, f, size)
        f.seek(0)
        buf = bytearray(size)
        got = f.readinto(buf)
    if got != size:
        raise SafetensorsError(f"safetensors file {os.fspath(path)!r}: truncated while reading "
                               f"({got} of {size} bytes)")
    return {name: _decode(buf, start + begin, dtype, shape, end - begin)      # header order
            for begin, end, name, dtype, shape in entries}


def read_tensor_infos(path) -> dict:
    """{name: (safetensors dtype name, shape)} from a file's header, in header order, without reading
    any tensor data. The header is validated as load_file does (offsets, sizes against the file size),
    so a truncated or corrupt file fails here."""
    with open(path, "rb") as f:
        _, entries, _ = _read_header(path, f, os.fstat(f.fileno()).st_size)
    return {name: (dtype, shape) for _, _, name, dtype, shape in entries}


def iter_file(path, names=None):
    """Yield (name, array) one tensor at a time, in the order of the data in the file, reading only
    that tensor's bytes: a caller that keeps what it needs and drops the rest holds one tensor, not
    the file. names: only these tensors (all by default). Arrays are writable, BF16 as float32."""
    with open(path, "rb") as f:
        _, entries, start = _read_header(path, f, os.fstat(f.fileno()).st_size)
        for begin, end, name, dtype, shape in sorted(entries):
            if names is not None and name not in names:
                continue
            f.seek(start + begin)
            buf = bytearray(end - begin)
            got = f.readinto(buf)
            if got != end - begin:
                raise SafetensorsError(f"safetensors file {os.fspath(path)!r}: tensor {name!r}: truncated while "
                                       f"reading ({got} of {end - begin} bytes)")
            yield name, _decode(buf, 0, dtype, shape, end - begin)
