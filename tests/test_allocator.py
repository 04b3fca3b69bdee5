"""fast/allocator.py: the command line (fast.configure_from_env) makes glibc malloc keep freed memory,
so a repeated allocation pattern (a training step's activations) stops faulting fresh pages in;
importing the package does not; the environment variable opts out; bad values are clear errors.
Each case runs in a fresh interpreter, because malloc's settings belong to the process."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tinygrad_reason.fast import allocator

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
glibc_only = pytest.mark.skipif(not allocator.is_glibc(), reason="mallopt thresholds exist only in glibc")

# 20 arrays of 3 MiB (under NumPy's 4 MiB huge-page size, so plain 4 KiB pages), written, then freed:
# like a step's activations. Minor page faults counted over the third round.
STEP_PATTERN = """
import json, resource, numpy as np
import tinygrad_reason
from tinygrad_reason.fast import allocator, configure_from_env
assert not allocator.applied            # importing the package leaves malloc alone
configure_from_env()                    # what the command line does at start
def step():
    arrays = [np.ones(3 * 2 ** 20 // 4, dtype=np.float32) for _ in range(20)]
    del arrays
step(); step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
step()
print(json.dumps({"applied": allocator.applied, "faults": resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before}))
"""


def _python(code: str, malloc: str | None):
    env = dict(os.environ, PYTHONPATH=ROOT)
    env.pop("TINYGRAD_REASON_MALLOC", None)
    if malloc is not None:
        env["TINYGRAD_REASON_MALLOC"] = malloc
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)


@glibc_only
def test_configured_malloc_keeps_freed_memory_so_a_repeated_step_faults_no_new_pages():
    out = _python(STEP_PATTERN, None)
    assert out.returncode == 0, out.stderr
    row = json.loads(out.stdout.strip().splitlines()[-1])
    assert row["applied"] is True
    assert row["faults"] < 300, row              # 60 MiB written again: 15K pages if they were fresh


@glibc_only
def test_system_setting_leaves_glibc_defaults_which_fault_the_step_in_again():
    # the control: with glibc's adaptive thresholds the freed 60 MiB goes back to the kernel
    out = _python(STEP_PATTERN, "system")
    assert out.returncode == 0, out.stderr
    row = json.loads(out.stdout.strip().splitlines()[-1])
    assert row["applied"] is False
    assert row["faults"] > 5000, row


def test_bad_setting_is_a_clear_error():
    out = _python("import tinygrad_reason", "sometimes")
    assert out.returncode == 0, out.stderr        # importing reads no setting
    out = _python("from tinygrad_reason.fast import configure_from_env; configure_from_env()", "sometimes")
    assert out.returncode != 0
    assert "TINYGRAD_REASON_MALLOC must be 'reuse' or 'system', got 'sometimes'" in out.stderr
    out = _python("import tinygrad_reason.cli as c, sys; sys.exit(c.main(['eval', '--run', '/nonexistent']))", "sometimes")
    assert out.returncode == 2 and "TINYGRAD_REASON_MALLOC must be 'reuse' or 'system'" in out.stderr


def test_bad_thresholds_are_clear_errors():
    for name, value in (("mmap_threshold", 1 << 31), ("trim_threshold", -1), ("mmap_threshold", 1.5)):
        with pytest.raises(ValueError) as e:
            allocator.reuse_freed_memory(**{name: value})
        assert str(e.value) == f"reuse_freed_memory: {name} must be a byte count in [0, 2**31), got {value!r}"


@glibc_only
def test_a_refused_threshold_is_an_error_and_only_a_warning_at_start(monkeypatch):
    # no real mallopt call here: this process's malloc stays as it is
    monkeypatch.setattr(allocator, "_mallopt", lambda param, value: 0)
    with pytest.raises(ValueError, match=r"glibc refused mmap_threshold=33554432 \(mallopt returned 0\)"):
        allocator.reuse_freed_memory()
    monkeypatch.delenv("TINYGRAD_REASON_MALLOC", raising=False)
    with pytest.warns(RuntimeWarning, match="malloc keeps its defaults"):
        assert allocator.apply_default() is False
