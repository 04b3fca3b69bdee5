"""fast/blas.py matmul2d: MKL by ctypes for 2-d products when switched on, NumPy otherwise; packed
weights for batched decoding (fast/packing.py); MKL's vector math (vml.py) under the float32 GELU and erf kernels.

The MKL tests need the optional extra (pip install 'tinygrad_reason[mkl]') and skip without it,
saying so; the switch's error and the NumPy fallback are tested everywhere.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

import tinygrad_reason as tg
from tinygrad_reason.fast import threads
from tinygrad_reason import Tensor, backend, functional as F  # noqa: F401
from tinygrad_reason.fast import blas, packing, vml


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
    before = threads.num_threads()
    tg.set_num_threads(2)
    try:
        rng = np.random.default_rng(2)
        a, b = LAYOUTS[layout](rng.standard_normal((37, 29)).astype(np.float32),
                               rng.standard_normal((29, 23)).astype(np.float32))
        np.testing.assert_allclose(blas.matmul2d(a, b), a @ b, rtol=1e-5, atol=1e-5)
    finally:
        tg.set_num_threads(before)


# ---------------------------------------------------------------- packed weights (batched decoding)
def _decoder(seed: int = 0):
    from tinygrad_reason.nn import Transformer, TransformerConfig
    cfg = TransformerConfig.gpt(vocab_size=130, context_length=24, d_model=96, n_layers=2, n_heads=4)
    model = Transformer(cfg).eval()
    rng = np.random.default_rng(seed)
    for p in model.parameters():
        p.data[...] = (rng.standard_normal(p.shape) * (0.3 if p.ndim == 2 else 0.1)).astype(p.dtype)
    return model


def test_packing_is_off_with_mkl_off():
    w, x = np.ones((200, 96), dtype=np.float32), np.ones((4, 96), dtype=np.float32)
    assert not blas.mkl_enabled()
    assert packing.skinny_matmul(x, w) is None and packing.skinny_matmul(x, w) is None
    assert packing.packed_count() == 0


@pytest.fixture
def one_thread():
    before = threads.num_threads()
    tg.set_num_threads(1)
    yield
    tg.set_num_threads(before)


@pytest.fixture
def no_packs():
    packing.release()
    yield
    packing.release()


def _decode(model, prompt, rows):
    cache = model.new_cache(rows, 12)
    with tg.no_grad():
        out = [model(prompt[:rows], cache=cache, start=0).numpy()[:, -1]]
        for i in range(4):
            nxt = out[-1].argmax(axis=-1)[:, None]
            out.append(model(nxt, cache=cache, start=5 + i).numpy()[:, -1])
    return np.stack(out)


@needs_mkl
def test_packed_decoding_equals_unpacked(mkl, one_thread, no_packs):
    """16-row decode steps on packed weights give the logits of the unpacked path; a weight is packed
    on its second many-row product at one version (never for one-row steps), and freed with the model."""
    model = _decoder()
    prompt = np.random.default_rng(3).integers(0, 130, size=(16, 5))
    blas.use_numpy_blas()
    plain = {rows: _decode(model, prompt, rows) for rows in (1, 16)}
    blas.use_mkl()
    one_row = _decode(model, prompt, 1)           # the prompt's 5 rows once, then one-row steps
    assert packing.packed_count() == 0
    sixteen = _decode(model, prompt, 16)
    from tinygrad_reason.nn import Linear
    assert packing.packed_count() == sum(isinstance(m, Linear) for m in model.modules())    # every linear weight
    np.testing.assert_allclose(one_row, plain[1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(sixteen, plain[16], rtol=1e-4, atol=1e-4)
    assert (sixteen.argmax(-1) == plain[16].argmax(-1)).all()
    del model
    import gc
    gc.collect()
    assert packing.packed_count() == 0            # the packed copies went with their weights


@needs_mkl
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("rows", [2, 7, 64])
def test_skinny_matmul_matches_numpy(mkl, one_thread, no_packs, dtype, rows):
    rng = np.random.default_rng(rows)
    w = rng.standard_normal((200, 70)).astype(dtype)
    x = rng.standard_normal((rows, 70)).astype(dtype)
    assert packing.skinny_matmul(x, w) is None          # first product: not packed yet
    got = packing.skinny_matmul(x, w)
    assert packing.skinny_matmul(x[:, :69], w) is None  # wrong width, wrong dtype, too many rows: not used
    assert packing.skinny_matmul(x.astype(np.float16), w) is None
    assert packing.skinny_matmul(np.ones((65, 70), dtype), w) is None
    assert packing.skinny_matmul(x, w.copy()) is None   # a different array with equal values is not packed
    tg.set_num_threads(2)
    assert packing.skinny_matmul(x, w) is None          # more threads: NumPy's BLAS uses them
    tg.set_num_threads(1)
    tol = 1e-12 if dtype == np.float64 else 1e-5
    np.testing.assert_allclose(got, x @ w.T, rtol=tol, atol=tol)
    assert got.shape == (rows, 200) and got.dtype == dtype


@needs_mkl
def test_changed_weights_are_repacked(mkl, one_thread, no_packs):
    """The packed copy guards itself: an optimizer step or load_state_dict bumps the weights' version,
    and the next products see the new weights, exactly as the unpacked path does."""
    from tinygrad_reason.optim import AdamW
    model = _decoder()
    prompt = np.random.default_rng(4).integers(0, 130, size=(16, 5))
    before = _decode(model, prompt, 16)
    assert packing.packed_count() > 0
    state = {k: v.copy() for k, v in model.state_dict().items()}
    opt = AdamW(model.parameters(), lr=1e-2)
    for p in model.parameters():
        p.grad = Tensor(np.ones_like(p.data))
    opt.step()                                    # every weight changes, in place
    stepped = _decode(model, prompt, 16)
    blas.use_numpy_blas()
    expected = _decode(model, prompt, 16)
    blas.use_mkl()
    np.testing.assert_allclose(stepped, expected, rtol=1e-4, atol=1e-4)
    assert not np.allclose(stepped, before, atol=1e-3)
    model.load_state_dict(state)                  # back to the first weights, in place
    np.testing.assert_allclose(_decode(model, prompt, 16), before, rtol=1e-4, atol=1e-4)
    blas.use_numpy_blas()                         # switching MKL off frees every packed copy
    assert packing.packed_count() == 0


@needs_mkl
def test_generate_with_packed_mkl_equals_numpy_blas(mkl, one_thread, no_packs, monkeypatch):
    from tinygrad_reason.generate import SamplingConfig, generate
    packed = []
    pack = packing._Packed.pack
    monkeypatch.setattr(packing._Packed, "pack", lambda self, w: (packed.append(w.shape), pack(self, w)))
    model = _decoder(1)
    prompts = [[1, 2, 3], [4, 5], [6, 7, 8, 9], [10]] * 2
    cfg = SamplingConfig(max_new_tokens=8, temperature=0.0)
    with_mkl = generate(model, prompts, cfg)
    assert packed                                 # decoding the batch packed the weights
    blas.use_numpy_blas()
    without = generate(model, prompts, cfg)
    assert with_mkl.tokens == without.tokens
    for a, b in zip(with_mkl.logprobs, without.logprobs):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- VML: GELU's Phi and exp, erf
def _phi64(x):
    """The normal CDF in float64 from erfc (accurate in the negative tail, where 1 + erf cancels)."""
    return np.array([0.5 * math.erfc(-v / math.sqrt(2.0)) for v in x.tolist()])


def _gelu_inputs():
    rng = np.random.default_rng(5)
    edges = [np.nan, np.inf, -np.inf, -0.0, 0.0, -5.0, -10.0, -13.5, -14.0, -20.0, 40.0, 3e38, -3e38]
    # more than one kernel chunk (64K elements), so the chunking is exercised too
    return np.concatenate([rng.standard_normal(70_000) * 3, edges]).astype(np.float32)


def test_vml_is_off_while_mkl_is_off():
    assert vml.function("CdfNorm", np.float32) is None and vml.function("Exp", np.float64) is None


@needs_mkl
def test_vml_binds_float32_and_float64_only(mkl):
    assert vml.function("Erf", np.float16) is None and vml.function("Erf", np.int64) is None
    x = np.array([-1.0, 0.0, 0.5])
    for dtype in (np.float32, np.float64):
        out = np.empty(3, dtype=dtype)
        vml.function("Erf", dtype)(x.astype(dtype), out)
        np.testing.assert_allclose(out, [math.erf(v) for v in x], rtol=1e-6)


@needs_mkl
def test_vml_refuses_a_count_over_32_bits(mkl):
    class Huge:
        size = 2 ** 31
    with pytest.raises(ValueError, match="vmsExp: 2147483648 elements in one call"):
        vml.function("Exp", np.float32)(Huge(), Huge())


@needs_mkl
def test_gelu_and_erf_kernels_on_vml_match_float64(mkl, monkeypatch):
    from tinygrad_reason.fast import kernels
    used = []
    real = vml.function
    monkeypatch.setattr(vml, "function", lambda name, dtype: used.append(name) or real(name, dtype))
    x = _gelu_inputs()
    g = np.random.default_rng(6).standard_normal(x.shape).astype(np.float32)
    x64 = x.astype(np.float64)
    phi = _phi64(x64)
    with np.errstate(invalid="ignore", over="ignore"):
        y_ref = x64 * phi
        d_ref = phi + x64 * np.exp(-0.5 * x64 * x64) / math.sqrt(2.0 * math.pi)
    y = kernels.gelu_forward(x)
    y2, d = kernels.gelu_forward_and_derivative(x)
    dx = kernels.gelu_backward(x, g)
    erf = kernels.erf_float32(x)
    assert {"CdfNorm", "Exp", "Erf"} <= set(used)
    np.testing.assert_array_equal(y, y2)
    finite = np.isfinite(x)
    np.testing.assert_allclose(y[finite], y_ref[finite], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(d[finite], d_ref[finite], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(dx[finite], (g * d_ref)[finite], rtol=2e-6, atol=1e-6)
    np.testing.assert_allclose(erf[finite], [math.erf(v) for v in x64[finite]], rtol=1e-6, atol=1e-7)
    # relative accuracy in the negative tail, where the NumPy kernel's A&S formula keeps only ~1e-2
    tail = (x > -10) & (x < -3)
    np.testing.assert_allclose(y[tail], y_ref[tail], rtol=1e-5)
    # nan, +-inf and the huge values give what the NumPy kernels give
    tg.use_numpy_blas()
    for ours, numpy_kernel in ((y, kernels.gelu_forward(x)), (d, kernels.gelu_forward_and_derivative(x)[1]),
                               (erf, kernels.erf_float32(x))):
        np.testing.assert_array_equal(ours[~finite], numpy_kernel[~finite])
        np.testing.assert_array_equal(ours[np.abs(x) > 1e30], numpy_kernel[np.abs(x) > 1e30])


@needs_mkl
def test_gelu_on_vml_is_the_same_on_two_threads(mkl, one_thread):
    from tinygrad_reason.fast import kernels
    x = np.random.default_rng(7).standard_normal((600, 1000)).astype(np.float32)   # over PARALLEL_MIN
    g = np.ones_like(x)
    one = kernels.gelu_forward(x), *kernels.gelu_forward_and_derivative(x), kernels.gelu_backward(x, g)
    tg.set_num_threads(2)
    two = kernels.gelu_forward(x), *kernels.gelu_forward_and_derivative(x), kernels.gelu_backward(x, g)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)
