"""Our safetensors reader/writer: round trips, interop with the reference package both ways,
atomic writes, and clear errors on corrupt files."""
import json
import os

import numpy as np
import pytest

from tinygrad_reason.io import safetensors as st
from tinygrad_reason.io.safetensors import SafetensorsError

ALL_DTYPES = [np.float64, np.float32, np.float16, np.int64, np.int32, np.int16, np.int8,
              np.uint64, np.uint32, np.uint16, np.uint8, np.bool_]


def _sample(dtype, shape, rng) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        return np.asarray(rng.random(shape) < 0.5)
    if dtype.kind == "f":
        return np.asarray(rng.standard_normal(shape) * 100, dtype=dtype)
    info = np.iinfo(dtype)
    return np.asarray(rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True))


def _tensors():
    rng = np.random.default_rng(0)
    out = {}
    for dt in ALL_DTYPES:
        name = np.dtype(dt).name
        out[f"{name}.mat"] = _sample(dt, (3, 5), rng)
        out[f"{name}.scalar"] = _sample(dt, (), rng)          # 0-d
        out[f"{name}.empty"] = _sample(dt, (0, 4), rng)       # size 0
        out[f"{name}.odd"] = _sample(dt, (7,), rng)           # leaves later tensors unaligned
    out["f32.extremes"] = np.array([np.inf, -np.inf, np.finfo(np.float32).max, np.finfo(np.float32).tiny,
                                    -0.0, 1e-45], dtype=np.float32)
    out["f32.nan"] = np.array([np.nan], dtype=np.float32)
    return out


def _assert_same(got: dict, want: dict):
    assert list(got) == list(want)
    for k, w in want.items():
        g = np.asarray(got[k])
        assert g.dtype == w.dtype, k
        assert g.shape == w.shape, k
        assert g.tobytes() == w.tobytes(), k          # bit-exact (NaN payloads, -0.0 included)


def _write_raw(path, header: dict | bytes, data: bytes = b"", length=None):
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    n = len(raw) if length is None else length
    with open(path, "wb") as f:
        f.write(n.to_bytes(8, "little") + raw + data)


# ---------------------------------------------------------------- round trips
def test_round_trip_every_dtype(tmp_path):
    tensors = _tensors()
    path = tmp_path / "all.safetensors"
    st.save_file(tensors, path, metadata={"format": "pt", "note": "héllo"})
    got = st.load_file(path)
    _assert_same(got, tensors)
    assert st.read_metadata(path) == {"format": "pt", "note": "héllo"}
    # the arrays we return are ordinary writable arrays in native byte order
    for arr in got.values():
        assert arr.flags.writeable and arr.dtype.isnative
    got["float32.mat"][0, 0] = 123.0
    assert st.load_file(path)["float32.mat"][0, 0] == tensors["float32.mat"][0, 0]


def test_file_layout_matches_the_spec(tmp_path):
    a = np.arange(3, dtype=np.int16)
    b = np.array([[1.5, -2.0]], dtype=np.float32)
    path = tmp_path / "x.safetensors"
    st.save_file({"a": a, "b": b}, path)
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert n % 8 == 0
    header = json.loads(raw[8:8 + n])
    assert header == {"a": {"dtype": "I16", "shape": [3], "data_offsets": [0, 6]},
                      "b": {"dtype": "F32", "shape": [1, 2], "data_offsets": [6, 14]}}
    assert raw[8 + n:] == a.astype("<i2").tobytes() + b.astype("<f4").tobytes()
    assert st.read_metadata(path) is None


def test_non_contiguous_big_endian_and_tensor_inputs(tmp_path):
    import tinygrad_reason as tg
    x = np.arange(12.0).reshape(3, 4)
    tensors = {"t": x.T, "be": np.arange(5, dtype=">i4"), "tensor": tg.tensor([1.0, 2.0])}
    path = tmp_path / "x.safetensors"
    st.save_file(tensors, path)
    got = st.load_file(path)
    np.testing.assert_array_equal(got["t"], x.T)
    assert got["be"].dtype == np.int32 and got["be"].tolist() == [0, 1, 2, 3, 4]
    assert got["tensor"].dtype == np.float32 and got["tensor"].tolist() == [1.0, 2.0]


def test_save_rejects_bad_input(tmp_path):
    with pytest.raises(TypeError, match="'c'.*complex128"):
        st.save_file({"c": np.zeros(2, np.complex128)}, tmp_path / "x.safetensors")
    with pytest.raises(TypeError, match="metadata"):
        st.save_file({"a": np.zeros(2)}, tmp_path / "x.safetensors", metadata={"a": 1})
    with pytest.raises(ValueError, match="__metadata__"):
        st.save_file({"__metadata__": np.zeros(2)}, tmp_path / "x.safetensors")
    assert os.listdir(tmp_path) == []


def test_write_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "w.safetensors"
    st.save_file({"a": np.ones(4, np.float32)}, path)
    before = path.read_bytes()

    def boom(f, arr):
        f.write(b"partial")
        raise RuntimeError("disk full")
    monkeypatch.setattr(st, "_write_array", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        st.save_file({"a": np.zeros(4, np.float32)}, path)
    assert path.read_bytes() == before                      # the old file untouched
    assert os.listdir(tmp_path) == ["w.safetensors"]        # and the temp file removed


# ---------------------------------------------------------------- interop with the reference package
def test_reference_numpy_reads_our_files(tmp_path):
    sn = pytest.importorskip("safetensors.numpy")
    tensors = _tensors()
    path = tmp_path / "ours.safetensors"
    st.save_file(tensors, path)
    got = sn.load_file(str(path))
    assert set(got) == set(tensors)
    _assert_same({k: got[k] for k in tensors}, tensors)


def test_reference_torch_reads_our_files(tmp_path):
    torch = pytest.importorskip("torch")
    stt = pytest.importorskip("safetensors.torch")
    tensors = {k: v for k, v in _tensors().items() if not k.startswith(("uint16", "uint32", "uint64"))}
    path = tmp_path / "ours.safetensors"
    st.save_file(tensors, path, metadata={"format": "pt"})
    got = stt.load_file(str(path))
    assert set(got) == set(tensors)
    for k, want in tensors.items():
        t = got[k]
        assert isinstance(t, torch.Tensor) and tuple(t.shape) == want.shape, k
        assert t.numpy().dtype == want.dtype and t.numpy().tobytes() == want.tobytes(), k


def test_we_read_reference_numpy_files(tmp_path):
    sn = pytest.importorskip("safetensors.numpy")
    tensors = _tensors()
    path = tmp_path / "ref.safetensors"
    sn.save_file(tensors, str(path), metadata={"k": "v"})
    got = st.load_file(path)
    assert set(got) == set(tensors)
    _assert_same({k: got[k] for k in tensors}, tensors)
    assert st.read_metadata(path) == {"k": "v"}


def test_we_read_reference_torch_files_with_bfloat16(tmp_path):
    torch = pytest.importorskip("torch")
    stt = pytest.importorskip("safetensors.torch")
    g = torch.Generator().manual_seed(0)
    tensors = {
        "bf16": torch.randn(4, 3, generator=g).to(torch.bfloat16),
        "bf16.special": torch.tensor([0.0, -0.0, 1.0, -2.5, 3.0e38, float("inf"), -float("inf")],
                                     dtype=torch.bfloat16),
        "bf16.scalar": torch.tensor(1.5, dtype=torch.bfloat16),
        "bf16.empty": torch.zeros(0, 2, dtype=torch.bfloat16),
        "f16": torch.randn(5, generator=g).half(),
        "f32": torch.randn(2, 2, 2, generator=g),
        "f64": torch.randn(3, generator=g, dtype=torch.float64),
        "i64": torch.arange(-3, 3),
        "i32": torch.arange(4, dtype=torch.int32),
        "i16": torch.tensor([-32768, 32767], dtype=torch.int16),
        "i8": torch.tensor([-128, 127], dtype=torch.int8),
        "u8": torch.tensor([0, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
    }
    path = tmp_path / "torch.safetensors"
    stt.save_file(tensors, str(path))
    got = st.load_file(path)
    assert set(got) == set(tensors)
    for k, t in tensors.items():
        if t.dtype == torch.bfloat16:
            want = t.float().numpy()        # bf16 -> f32 is exact
            assert got[k].dtype == np.float32
        else:
            want = t.numpy()
            assert got[k].dtype == want.dtype
        assert got[k].shape == want.shape and got[k].tobytes() == want.tobytes(), k
    nan = torch.tensor([float("nan")], dtype=torch.bfloat16)
    stt.save_file({"nan": nan}, str(path))
    assert np.isnan(st.load_file(path)["nan"]).all()


# ---------------------------------------------------------------- corrupt files
def _good_file(tmp_path):
    path = tmp_path / "good.safetensors"
    st.save_file({"a": np.arange(4, dtype=np.float32), "b": np.arange(3, dtype=np.int64)}, path)
    return path


def test_truncated_files(tmp_path):
    path = _good_file(tmp_path)
    raw = path.read_bytes()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(raw[:5])
    with pytest.raises(SafetensorsError, match=r"bad\.safetensors.*truncated.*too short"):
        st.load_file(bad)
    bad.write_bytes(raw[:20])                                  # cut inside the header
    with pytest.raises(SafetensorsError, match=r"bad\.safetensors.*header length \d+ is beyond the file size"):
        st.load_file(bad)
    bad.write_bytes(raw[:-3])                                  # cut inside the data
    with pytest.raises(SafetensorsError, match=r"bad\.safetensors.*'b'.*out of range.*truncated"):
        st.load_file(bad)
    with pytest.raises(SafetensorsError, match="truncated"):
        st.read_metadata(bad)
    bad.write_bytes(raw + b"\0" * 8)                           # trailing bytes no tensor claims
    with pytest.raises(SafetensorsError, match="cover 40 bytes.*holds 48"):
        st.load_file(bad)


def test_header_length_beyond_file_size(tmp_path):
    bad = tmp_path / "bad.safetensors"
    _write_raw(bad, {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4, length=10**12)
    with pytest.raises(SafetensorsError, match="header length 1000000000000 is beyond the file size"):
        st.load_file(bad)


@pytest.mark.parametrize("header, match", [
    (b"{not json", "invalid JSON"),
    (b"\xff\xfe{}", "invalid JSON"),
    (b"[1, 2]", "must be an object"),
    ({"a": {"dtype": "F8", "shape": [1], "data_offsets": [0, 1]}}, "'a'.*unknown dtype 'F8'"),
    ({"a": {"dtype": "F32", "shape": [2]}}, "'a'.*must have dtype, shape and data_offsets"),
    ({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, "'a'.*shape must be"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, "'a'.*data_offsets must be"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 12]}}, "'a'.*span 12 bytes.*needs 8"),
    ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}, "'a'.*out of range"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, "'b'.*overlap.*'a'"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}}, "'b'.*gap of 4 bytes"),
    ({"__metadata__": {"a": 1}}, "__metadata__ must be an object of strings"),
])
def test_corrupt_headers(tmp_path, header, match):
    bad = tmp_path / "bad.safetensors"
    _write_raw(bad, header, b"\0" * 16)
    with pytest.raises(SafetensorsError, match=r"bad\.safetensors.*" + match):
        st.load_file(bad)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        st.load_file(tmp_path / "nope.safetensors")
