"""The array backend: NumPy on "cpu", CuPy on "cuda"; devices; random generators; the default dtype.

Everything above this file is written once against an array module `xp`, picked here.
CuPy is imported only when a "cuda" array is asked for, so CPU users never pay for it.
"""
from __future__ import annotations

import contextlib
import threading

import numpy as np

DEVICES = ("cpu", "cuda")
default_dtype = np.float32

_cupy = None          # the cupy module once imported successfully
_cupy_error = None    # why importing / using cupy failed, for the error message


def _import_cupy():
    global _cupy, _cupy_error
    if _cupy is None and _cupy_error is None:
        try:
            import cupy
            _cupy = cupy
        except Exception as e:  # ImportError, or a broken CUDA install raising at import
            _cupy_error = e
    return _cupy


def cuda_available() -> bool:
    """True when CuPy imports and sees at least one CUDA GPU."""
    cp = _import_cupy()
    if cp is None:
        return False
    try:
        return cp.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def check_device(device: str) -> str:
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r}: expected one of {DEVICES}")
    if device == "cuda":
        cp = _import_cupy()
        if cp is None:
            raise RuntimeError(
                "device 'cuda' needs CuPy, which could not be imported "
                f"({type(_cupy_error).__name__}: {_cupy_error}). "
                "Install it with: pip install 'tinygrad_reason[cuda]'  (the cupy-cuda12x wheel)")
        if not cuda_available():
            raise RuntimeError("device 'cuda': CuPy is installed but no CUDA GPU is visible "
                               "(cupy.cuda.runtime.getDeviceCount() found none or failed)")
    return device


def xp_for(device: str):
    """The array module for a device name."""
    if device == "cpu":
        return np
    check_device(device)
    return _cupy


def get_array_module(arr):
    """numpy or cupy, whichever owns `arr` (DeZero's get_array_module)."""
    if type(arr) is np.ndarray or _cupy is None:
        return np
    return _cupy if isinstance(arr, _cupy.ndarray) else np


def device_of(arr) -> str:
    return "cpu" if get_array_module(arr) is np else "cuda"


def to_device(arr, device: str):
    """Copy an array to a device (no copy when it is already there)."""
    if device_of(arr) == device:
        return arr
    if device == "cpu":
        return _cupy.asnumpy(arr)
    return xp_for(device).asarray(arr)


# ---------------------------------------------------------------- random generators
_local = threading.local()   # per-thread generators (use_generator: data-parallel shards)
_seed = None
_generators: dict[str, object] = {}


def manual_seed(seed: int) -> None:
    """Seed every backend's generator, so runs repeat exactly on each device."""
    global _seed
    _seed = int(seed)
    _generators.clear()
    if _cupy is not None:
        _cupy.random.seed(_seed)


def generator(device: str = "cpu"):
    """The seeded random generator of a device: numpy.random.Generator or cupy's RandomState
    (or the calling thread's own, inside use_generator)."""
    local = getattr(_local, "generators", None)
    if local is not None and device in local:
        return local[device]
    gen = _generators.get(device)
    if gen is None:
        if device == "cpu":
            gen = np.random.default_rng(_seed)
        else:
            cp = xp_for(device)
            gen = cp.random.RandomState(_seed)
        _generators[device] = gen
    return gen


@contextlib.contextmanager
def use_generator(gen, device: str = "cpu"):
    """Random draws on `device` from the calling thread come from `gen` inside the block: threads
    that draw concurrently (dropout in data-parallel shards) each get a seeded stream of their own,
    so runs repeat exactly whatever order the threads run in."""
    prev = getattr(_local, "generators", None)
    _local.generators = {**(prev or {}), device: gen}
    try:
        yield
    finally:
        _local.generators = prev


def rng_state(device: str = "cpu"):
    """The generator's state, to save in a checkpoint (numpy only)."""
    return generator(device).bit_generator.state if device == "cpu" else None


def set_rng_state(state, device: str = "cpu") -> None:
    generator(device).bit_generator.state = state
