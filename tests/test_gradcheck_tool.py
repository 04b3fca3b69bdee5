"""The gradient checker is itself checked: deliberately wrong backward rules must be caught.

Like HIPS autograd's tests of its own check_grads: a gradient 0.05% off (factor 1 + 5e-4) on values of
magnitude ~1 must fail, the correct rule must pass, and the report must say where and by how much.
"""
import re

import numpy as np
import pytest

import tinygrad_reason as tg
from tinygrad_reason import Function, GradcheckError, Tensor

OFF = 1 + 5e-4   # 0.05% wrong


def x64(shape=(3, 4), seed=0, low=0.5, high=1.5):
    """Values of magnitude ~1, both signs."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(low, high, size=shape) * rng.choice([-1.0, 1.0], size=shape)
    return Tensor(a, requires_grad=True)


def square_fn(scale=1.0, bad_index=None):
    """x -> x^2 whose backward is off by `scale` (everywhere, or only at flat index `bad_index`)."""
    class Square(Function):
        def forward(self, x):
            return x * x

        def backward(self, g):
            x = self.parents[0]
            factor = np.ones(x.shape)
            if bad_index is None:
                factor[...] = scale
            else:
                factor.reshape(-1)[bad_index] = scale
            return g * 2.0 * x * Tensor(factor)
    return Square.apply


def mul_fn(scale_a=1.0, scale_b=1.0):
    """(a, b) -> a * b with each input's gradient scaled."""
    class Mul(Function):
        def forward(self, a, b):
            return a * b

        def backward(self, g):
            a, b = self.parents
            return g * b * scale_a, g * a * scale_b
    return Mul.apply


_REPORT = re.compile(r"input (\d+) \(shape (\([^)]*\))\): worst element (\([^)]*\)): "
                     r"analytic (\S+), numeric (\S+),")


def parse(msg):
    m = _REPORT.search(msg)
    assert m, f"report does not name input, element, analytic and numeric values: {msg!r}"
    return int(m.group(1)), m.group(2), eval(m.group(3)), float(m.group(4).rstrip(",")), float(m.group(5).rstrip(","))


# ---------------------------------------------------------------- first derivatives
def test_correct_backward_passes():
    assert tg.gradcheck(square_fn(), [x64()])
    assert tg.gradcheck(mul_fn(), [x64(seed=1), x64(seed=2)])


def test_gradient_off_by_005_percent_fails_with_report():
    x = x64()
    with pytest.raises(GradcheckError) as e:
        tg.gradcheck(square_fn(OFF), [x])
    assert isinstance(e.value, AssertionError)
    i, shape, idx, analytic, numeric = parse(str(e.value))
    assert i == 0 and shape == "(3, 4)"
    assert len(idx) == 2 and all(0 <= k < n for k, n in zip(idx, (3, 4)))
    assert analytic / numeric == pytest.approx(OFF, rel=1e-6)   # the report's values are the real ones
    assert "tolerance" in str(e.value)


def test_gradient_off_in_the_other_direction_fails():
    with pytest.raises(GradcheckError):
        tg.gradcheck(square_fn(1 - 5e-4), [x64()])


def test_report_names_the_wrong_input():
    a, b = x64(seed=1), x64(seed=2)
    with pytest.raises(GradcheckError) as e:
        tg.gradcheck(mul_fn(scale_b=OFF), [a, b])
    assert parse(str(e.value))[0] == 1
    with pytest.raises(GradcheckError) as e:
        tg.gradcheck(mul_fn(scale_a=OFF), [a, b])
    assert parse(str(e.value))[0] == 0


def test_non_differentiable_inputs_are_skipped():
    a, b = x64(seed=1), Tensor(x64(seed=2).numpy())          # b does not require grad
    assert tg.gradcheck(mul_fn(scale_b=10.0), [a, b])          # b's wrong gradient is never asked for
    with pytest.raises(GradcheckError):
        tg.gradcheck(mul_fn(scale_a=OFF), [a, b])


@pytest.mark.parametrize("bad_index", [0, 6, 11])
def test_wrong_gradient_on_one_element_is_caught_and_located(bad_index):
    x = x64()
    assert tg.gradcheck(square_fn(), [x])
    with pytest.raises(GradcheckError) as e:
        tg.gradcheck(square_fn(OFF, bad_index=bad_index), [x], check_direction=False)
    msg = str(e.value)
    i, _, idx, analytic, numeric = parse(msg)
    assert idx == tuple(int(k) for k in np.unravel_index(bad_index, (3, 4)))
    assert analytic / numeric == pytest.approx(OFF, rel=1e-6)
    assert "1 of 12 outside tolerance" in msg


def test_one_wrong_element_among_many_caught_by_direction_alone():
    # the random direction sums over all 60 elements; a 0.05% error on one element still shows
    x = x64((6, 10), seed=4)
    with pytest.raises(GradcheckError, match="random direction"):
        tg.gradcheck(square_fn(OFF, bad_index=17), [x], check_elements=False)


def test_multiple_outputs():
    sq, good = square_fn(OFF), square_fn()

    def two(x, y):
        return good(x), sq(y)

    with pytest.raises(GradcheckError) as e:
        tg.gradcheck(two, [x64(seed=1), x64(seed=2)])
    assert parse(str(e.value))[0] == 1
    assert tg.gradcheck(lambda x, y: (good(x), good(y) * x), [x64(seed=1), x64(seed=2)])


# ---------------------------------------------------------------- the random-direction check
def test_direction_check_catches_error_without_element_check():
    with pytest.raises(GradcheckError, match="random direction through all inputs"):
        tg.gradcheck(square_fn(OFF), [x64()], check_elements=False)
    # control: with both checks off nothing compares, so the error above came from the direction check
    assert tg.gradcheck(square_fn(OFF), [x64()], check_elements=False, check_direction=False)


def test_direction_check_catches_error_in_a_second_input():
    with pytest.raises(GradcheckError, match="random direction"):
        tg.gradcheck(mul_fn(scale_b=OFF), [x64(seed=1), x64(seed=2)], check_elements=False)


# ---------------------------------------------------------------- raise_exception
def test_raise_exception_false_returns_false():
    assert tg.gradcheck(square_fn(OFF), [x64()], raise_exception=False) is False
    assert tg.gradcheck(square_fn(), [x64()], raise_exception=False) is True
    assert tg.gradgradcheck(_cube(bad_second=True), [x64()], raise_exception=False) is False


# ---------------------------------------------------------------- second derivatives
def _cube(bad_second=False):
    """x -> x^3 with a correct first derivative 3 x^2, built from a square whose own backward is
    0.05% off when bad_second: the first derivative's value is right, its derivative is not."""
    square = square_fn(OFF if bad_second else 1.0)

    class Cube(Function):
        def forward(self, x):
            return x * x * x

        def backward(self, g):
            return g * 3.0 * square(self.parents[0])
    return Cube.apply


def test_wrong_second_derivative_caught_by_gradgradcheck_only():
    assert tg.gradcheck(_cube(bad_second=True), [x64()])
    with pytest.raises(GradcheckError) as e:
        tg.gradgradcheck(_cube(bad_second=True), [x64()])
    assert parse(str(e.value))[0] == 0


def test_correct_second_derivative_passes_gradgradcheck():
    assert tg.gradgradcheck(_cube(), [x64()])
    assert tg.gradgradcheck(mul_fn(), [x64(seed=1), x64(seed=2)])


def test_gradgradcheck_catches_a_backward_that_detaches():
    # a classic bug: the backward uses a raw array (b.detach()) so its value is right but the cross
    # derivative d2/(da db) is lost; gradcheck cannot see it, gradgradcheck must
    class MulDetached(Function):
        def forward(self, a, b):
            return a * b

        def backward(self, g):
            a, b = self.parents
            return g * b.detach(), g * a

    a, b = x64(seed=1), x64(seed=2)
    assert tg.gradcheck(MulDetached.apply, [a, b])
    with pytest.raises(GradcheckError) as e:
        tg.gradgradcheck(MulDetached.apply, [a, b])
    assert parse(str(e.value))[0] == 1   # d(grad_a)/db is the wrong part


def test_gradgradcheck_is_not_a_first_order_check():
    # documents the division of labour: a wrong first derivative that is itself differentiated
    # consistently is gradcheck's job; gradgradcheck compares the first derivatives with their own slopes
    with pytest.raises(GradcheckError):
        tg.gradcheck(mul_fn(scale_b=OFF), [x64(seed=1), x64(seed=2)])
    assert tg.gradgradcheck(mul_fn(scale_b=OFF), [x64(seed=1), x64(seed=2)])


# ---------------------------------------------------------------- misbehaving functions
def test_function_modifying_its_input_is_reported():
    def inplace(x):
        x.data[0, 0] += 1.0
        return x * 2.0

    with pytest.raises(GradcheckError, match="modified its input 0 in place"):
        tg.gradcheck(inplace, [x64()])


def test_modification_of_second_input_names_it():
    def inplace(a, b):
        b.data *= 1.0001
        return a * b

    with pytest.raises(GradcheckError, match="modified its input 1 in place"):
        tg.gradcheck(inplace, [x64(seed=1), x64(seed=2)])


def test_non_deterministic_function_is_reported():
    rng = np.random.default_rng(0)

    def noisy(x):
        return x * Tensor(1.0 + 1e-3 * rng.standard_normal(x.shape))

    with pytest.raises(GradcheckError, match="not deterministic"):
        tg.gradcheck(noisy, [x64()])
    assert tg.gradcheck(noisy, [x64()], raise_exception=False) is False


def test_function_must_return_tensors():
    with pytest.raises(GradcheckError, match="output 0 is ndarray"):
        tg.gradcheck(lambda x: x.numpy() * 2, [x64()])


def test_output_independent_of_inputs_is_reported():
    with pytest.raises(GradcheckError, match="do not depend on any input"):
        tg.gradcheck(lambda x: Tensor(np.ones(3)), [x64()])


def test_float32_output_is_refused():
    with pytest.raises(GradcheckError, match="output 0 is float32"):
        tg.gradcheck(lambda x: x.astype(np.float32) * 2.0, [x64()])


# ---------------------------------------------------------------- input validation
def test_float32_inputs_are_refused():
    x = Tensor(np.ones((2, 2), dtype=np.float32), requires_grad=True)
    with pytest.raises(ValueError, match="float32"):
        tg.gradcheck(square_fn(), [x])
    with pytest.raises(ValueError, match="input 1 is float32"):
        tg.gradcheck(mul_fn(), [x64((2, 2)), x])
    with pytest.raises(ValueError, match="float32"):
        tg.gradgradcheck(square_fn(), [x])


def test_float32_input_not_requiring_grad_is_allowed():
    # only differentiated inputs must be float64
    b = Tensor(np.full((3, 4), 0.5, dtype=np.float32))
    assert tg.gradcheck(lambda a, b: a * b.astype(np.float64), [x64(), b])
