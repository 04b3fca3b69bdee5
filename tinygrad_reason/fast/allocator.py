"""Keep freed array memory in the process, so a training step reuses the last step's pages.

NumPy takes its array memory from the C library's malloc. On Linux (glibc), a block above malloc's
mmap threshold is a fresh mapping that is unmapped when freed, and free memory at the top of the
heap beyond its trim threshold goes back to the kernel; both thresholds adapt as the process runs
(128 KiB at start). A training step allocates and frees the same activations every time, so
memory handed back at the end of one step is faulted in again, a 4 KiB page at a time, in the
next (the tiny GPT's step spent about a fifth of its time faulting pages in; the peak memory does
not change, because what is kept is what the next step uses: `python benchmarks/bench_malloc.py`,
benchmarks/README.md).

reuse_freed_memory() sets the mmap threshold to 32 MiB (the most glibc's adaptive threshold reaches
on 64-bit; larger arrays still get their own mapping, and NumPy asks for huge pages on those) and
the trim threshold to 256 MiB. It changes the whole process's malloc (torch's tensors too, in the
benchmarks), which is why it is one named call, and why importing the package does not make it: the
command line and the benchmarks do (fast.configure_from_env), and TINYGRAD_REASON_MALLOC=system in the
environment leaves glibc's defaults alone there. Elsewhere (macOS, Windows, musl) it does nothing
and returns False.
"""
from __future__ import annotations

import ctypes
import os
import warnings

MMAP_THRESHOLD = 32 << 20     # blocks below this come from the heap and are reused after free
TRIM_THRESHOLD = 256 << 20    # free memory kept at the heap's top before it goes back to the kernel
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3     # glibc's mallopt parameters (malloc.h)
_ENV = "TINYGRAD_REASON_MALLOC"

applied = False               # whether reuse_freed_memory() changed malloc in this process


def is_glibc() -> bool:
    try:
        return os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc")
    except (AttributeError, ValueError, OSError):      # no confstr (Windows), or not glibc
        return False


def _mallopt(param: int, value: int) -> int:
    return ctypes.CDLL(None).mallopt(ctypes.c_int(param), ctypes.c_int(value))


def reuse_freed_memory(mmap_threshold: int = MMAP_THRESHOLD, trim_threshold: int = TRIM_THRESHOLD) -> bool:
    """Set glibc malloc's mmap and trim thresholds (bytes) for this process; True when done.

    Once set, glibc stops adapting the thresholds itself. Each value must fit mallopt's int; a value
    glibc refuses is a clear error."""
    global applied
    for name, value in (("mmap_threshold", mmap_threshold), ("trim_threshold", trim_threshold)):
        if type(value) is not int or not 0 <= value < 2 ** 31:
            raise ValueError(f"reuse_freed_memory: {name} must be a byte count in [0, 2**31), got {value!r}")
    if not is_glibc():
        return False
    for name, param, value in (("mmap_threshold", _M_MMAP_THRESHOLD, mmap_threshold),
                               ("trim_threshold", _M_TRIM_THRESHOLD, trim_threshold)):
        if _mallopt(param, value) != 1:
            raise ValueError(f"reuse_freed_memory: glibc refused {name}={value} (mallopt returned 0)")
    applied = True
    return True


def apply_default() -> bool:
    """What the command line does at start: reuse_freed_memory() unless TINYGRAD_REASON_MALLOC=system."""
    choice = os.environ.get(_ENV, "reuse").strip().lower()
    if choice == "system":
        return False
    if choice != "reuse":
        raise ValueError(f"{_ENV} must be 'reuse' or 'system', got {os.environ[_ENV]!r}")
    try:
        return reuse_freed_memory()
    except ValueError as e:                       # an odd glibc must not break the import
        warnings.warn(f"{e}; malloc keeps its defaults", RuntimeWarning, stacklevel=2)
        return False
