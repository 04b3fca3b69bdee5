"""blas.matmul2d: MKL by ctypes for 2-d products when switched on, NumPy otherwise.

The MKL tests need the optional extra (pip install 'tinygrad_reason[mkl]') and skip without it,
saying so; the switch's error and the NumPy fallback are tested everywhere.
"""
from __future__ import annotations

import numpy as np
import pytest

import tinygrad_reason as tg
from tinygrad_reason import Tensor, backend, blas, functional as F  # noqa: F401


def _mkl_available() -> bool:
    try:
        blas.use_mkl()
    except RuntimeError:
        return False
    finally:
        blas.use_numpy_blas()
    return True


needs_mkl = pytest.mark.skipif(not _mkl_available(),
                               reason="MKL not installed (pip install 'tinygrad_reason[mkl]')")


@pytest.fixture
def mkl(monkeypatch):
    monkeypatch.setattr(blas, "MIN_SIDE", 0)      # every shape through MKL, skinny ones included
    blas.use_mkl()
    yield
    blas.use_numpy_blas()


def test_skinny_products_stay_on_numpy_with_mkl_on(monkeypatch):
    calls = []
    monkeypatch.setattr(blas, "_gemm", {np.dtype(np.float64): lambda *a: calls.append(a)})
    monkeypatch.setattr(blas, "_lib", object())
    a, b = np.ones((16, 8)), np.ones((8, 300))
    np.testing.assert_array_equal(blas.matmul2d(a, b), a @ b)
    assert calls == []


def test_use_mkl_with_a_bad_path_is_a_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match="could not load MKL.*not found.*pip install"):
        blas.use_mkl(str(tmp_path / "libmkl_rt.so"))
    assert not blas.mkl_enabled()


def test_numpy_path_when_mkl_is_off():
    a, b = np.arange(6.0).reshape(2, 3), np.arange(12.0).reshape(3, 4)
    assert not blas.mkl_enabled()
    np.testing.assert_array_equal(blas.matmul2d(a, b), a @ b)


LAYOUTS = {
    "C,C": lambda a, b: (a, b),
    "F,C": lambda a, b: (np.asfortranarray(a), b),
    "C,F": lambda a, b: (a, np.asfortranarray(b)),
    "F,F": lambda a, b: (np.asfortranarray(a), np.asfortranarray(b)),
    "T,T": lambda a, b: (np.ascontiguousarray(a.T).T, np.ascontiguousarray(b.T).T),
    "strided": lambda a, b: (np.repeat(a, 2, axis=1)[:, ::2], b),            # neither order: NumPy
}


@needs_mkl
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("shape", [(7, 5, 3), (1, 4, 6), (6, 4, 1), (5, 1, 5), (64, 33, 17)])
def test_mkl_matches_numpy(mkl, layout, dtype, shape):
    m, k, n = shape
    rng = np.random.default_rng(0)
    a, b = LAYOUTS[layout](rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype))
    got = blas.matmul2d(a, b)
    assert got.dtype == dtype and got.shape == (m, n) and got.flags.c_contiguous
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(got, a @ b, rtol=tol, atol=tol)


@needs_mkl
def test_linear_with_mkl_equals_linear_without(mkl):
    """Every product of Linear (forward, d/dx, d/dW) through MKL, against the NumPy path."""
    rng = np.random.default_rng(1)
    x, w, b = (rng.standard_normal(s) for s in [(4, 70, 24), (40, 24), (40,)])
    g = rng.standard_normal((4, 70, 40))

    def run():
        ins = [Tensor(a.copy(), requires_grad=True) for a in (x, w, b)]
        out = F.linear(*ins)
        out.backward(Tensor(g))
        return [out.numpy()] + [t.grad.numpy() for t in ins]

    with_mkl = run()
    blas.use_numpy_blas()
    for a, c in zip(with_mkl, run()):
        np.testing.assert_allclose(a, c, rtol=1e-12, atol=1e-12)
    assert tg.mkl_enabled() is False


@needs_mkl
@pytest.mark.parametrize("layout", ["C,C", "F,C", "C,F", "F,F"])
def test_mkl_rows_split_over_threads_match_numpy(mkl, layout, monkeypatch):
    """Large products are split by rows over our threads (MKL runs sequential in each)."""
    monkeypatch.setattr(blas, "SPLIT_MIN_FLOPS", 0)
    before = backend.num_threads()
    tg.set_num_threads(2)
    try:
        rng = np.random.default_rng(2)
        a, b = LAYOUTS[layout](rng.standard_normal((37, 29)).astype(np.float32),
                               rng.standard_normal((29, 23)).astype(np.float32))
        np.testing.assert_allclose(blas.matmul2d(a, b), a @ b, rtol=1e-5, atol=1e-5)
    finally:
        tg.set_num_threads(before)
