"""The CuPy backend gives the CPU backend's values and gradients. Skips, with the reason, without a GPU."""
import numpy as np
import pytest

import tinygrad_reason as tg
from tinygrad_reason import Tensor, backend
from op_registry import SPECS, make_inputs

pytestmark = pytest.mark.skipif(not tg.cuda_available(),
                                reason="CUDA tests need CuPy (pip install 'tinygrad_reason[cuda]') and a CUDA GPU")


def _run(spec, device, dtype, seed=0):
    xs = [Tensor(a, requires_grad=True, device=device) for a in make_inputs(spec, seed, dtype)]
    out = spec.ours(*xs)
    upstream = np.random.default_rng(1).standard_normal(out.shape).astype(dtype)
    out.backward(Tensor(upstream, device=device))
    return out.numpy(), [x.grad.numpy() for x in xs]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_cuda_matches_cpu(spec, dtype):
    out_cpu, grads_cpu = _run(spec, "cpu", dtype)
    out_gpu, grads_gpu = _run(spec, "cuda", dtype)
    tol = 1e-10 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(out_gpu, out_cpu, rtol=tol, atol=tol)
    for g_gpu, g_cpu in zip(grads_gpu, grads_cpu):
        np.testing.assert_allclose(g_gpu, g_cpu, rtol=tol, atol=tol)


def test_to_and_back_is_differentiable():
    x = Tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    y = (x.to("cuda") * 2.0).sum()
    assert y.device == "cuda"
    y.backward()
    assert x.grad.device == "cpu"
    np.testing.assert_allclose(x.grad.numpy(), np.full((2, 3), 2.0))


def test_mixing_devices_is_an_error():
    a = Tensor(np.ones(3), device="cuda")
    with pytest.raises(RuntimeError, match="different devices"):
        a + Tensor(np.ones(3))


def test_manual_seed_reproducible_on_cuda():
    tg.manual_seed(3)
    a = tg.randn(4, 4, device="cuda").numpy()
    tg.manual_seed(3)
    assert np.array_equal(a, tg.randn(4, 4, device="cuda").numpy())


def test_gradcheck_on_cuda():
    x = Tensor(np.random.default_rng(0).standard_normal((3, 4)), requires_grad=True, device="cuda")
    assert tg.gradcheck(lambda a: (a.tanh() @ a.T).softmax(-1), [x])
    assert backend.device_of(x.data) == "cuda"


def test_data_parallel_backward_on_cuda_is_one_shard():
    # CuPy tensors: the whole batch is one shard (threads gain nothing on a GPU); the gradient is the batch's
    w = Tensor(np.array([1.0, -2.0, 0.5]), requires_grad=True, device="cuda")
    x = np.random.default_rng(0).standard_normal((5, 3))
    loss = tg.data_parallel_backward(lambda a: ((Tensor(a, device="cuda") * w).sum(axis=1) ** 2).mean(),
                                     (x,), [w], threads=2)
    pred = x @ np.array([1.0, -2.0, 0.5])
    assert loss == pytest.approx(float((pred ** 2).mean()))
    np.testing.assert_allclose(w.grad.numpy(), 2 * (pred[:, None] * x).mean(axis=0), rtol=1e-10)
