"""tinygrad_reason.comm: the one-process Comm is the identity, GradientBuffer packs and unpacks every
gradient, and under `mpiexec -n 2` (tests/mpi/comm_check.py) the collectives are exact, a config
that differs between ranks is an error on both naming the field, and a rank that never joins an
allreduce is a timeout error, not a hang. The MPI tests skip, saying why, where mpi4py or mpiexec is
missing (the `mpi` extra; .ci/run installs it). SFT on two ranks equals SFT in one process
(tests/mpi/sft_check.py)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import tinygrad_reason as tg
from tinygrad_reason.comm import CommError, GradientBuffer, SingleProcess, get_comm, launched_by_mpi

SCRIPT = os.path.join(os.path.dirname(__file__), "mpi", "comm_check.py")
SFT_SCRIPT = os.path.join(os.path.dirname(__file__), "mpi", "sft_check.py")


def test_one_process_collectives_are_the_identity(monkeypatch):
    for var in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "PMIX_SIZE"):
        monkeypatch.delenv(var, raising=False)
    assert not launched_by_mpi() and isinstance(get_comm(), SingleProcess)
    monkeypatch.setenv("PMI_SIZE", "1")
    assert isinstance(get_comm(), SingleProcess)
    c = SingleProcess()
    a = np.arange(4.0)
    assert c.allreduce_sum_(a) is a and c.broadcast_(a) is a and c.allgather({"x": 1}) == [{"x": 1}]
    assert c.broadcast_object(5) == 5 and c.is_root and c.size == 1
    c.check_same("config", {"lr": 1})


def test_gradient_buffer_round_trips_and_fills_missing_grads_with_zeros():
    p = tg.Tensor(np.zeros((2, 3)), requires_grad=True)
    q = tg.Tensor(np.zeros(4), requires_grad=True)
    p.grad = tg.Tensor(np.arange(6.0).reshape(2, 3))
    buf = GradientBuffer([p, q])
    flat = buf.pack()
    assert flat.tolist() == [0, 1, 2, 3, 4, 5, 0, 0, 0, 0]
    flat *= 2
    buf.unpack()
    assert p.grad.data.tolist() == [[0, 2, 4], [6, 8, 10]] and q.grad.data.tolist() == [0, 0, 0, 0]
    GradientBuffer([p, q]).allreduce_sum(SingleProcess())       # one process: unchanged
    assert p.grad.data[1, 2] == 10
    with pytest.raises(ValueError, match="mix dtypes"):
        GradientBuffer([p, tg.Tensor(np.zeros(2, np.float32), requires_grad=True)])


class _Gathered(SingleProcess):
    """A fake two-rank comm for check_same: the other rank's object is given."""

    def __init__(self, other):
        self.other = other

    def allgather(self, obj):
        return [obj, self.other]


def test_check_same_names_the_differing_fields():
    _Gathered({"lr": 1, "steps": 3}).check_same("config", {"lr": 1, "steps": 3})
    with pytest.raises(CommError, match=r"config differs between ranks \(lr: rank 0 has 1, ranks \[1\] differ"):
        _Gathered({"lr": 2, "steps": 3}).check_same("config", {"lr": 1, "steps": 3})


def _mpi_or_skip():
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        pytest.skip("mpi4py is not installed (pip install -e '.[mpi]')")
    exe = shutil.which("mpiexec")
    if exe is None:
        pytest.skip("no mpiexec on PATH (pip install -e '.[mpi]' brings MPICH's)")
    return exe


def _run(mode, tmp_path, timeout=120, script=SCRIPT):
    exe = _mpi_or_skip()
    env = {k: v for k, v in os.environ.items() if k not in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")}
    r = subprocess.run([exe, "-n", "2", sys.executable, script, mode, str(tmp_path)], capture_output=True, text=True,
                       timeout=timeout, env={**env, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"})
    files = [tmp_path / f"rank{i}.json" for i in range(2)]
    assert all(f.exists() for f in files), (r.returncode, r.stdout, r.stderr)
    return [json.loads(f.read_text()) for f in files]


def test_mpi_collectives_are_exact(tmp_path):
    ranks = _run("ok", tmp_path)
    for r in ranks:
        assert r["size"] == 2 and r["launched"] and r["mpi"]
        assert r["allreduce_float32_exact"] and r["allreduce_float64_exact"]
        assert r["broadcast"] == [7.0] * 5 and r["broadcast_object"] == {"seed": 10}
        assert r["grad_sum"] == [[[3.0] * 3] * 2, [4.0] * 4]


def test_mpi_config_mismatch_is_an_error_on_every_rank(tmp_path):
    for r in _run("mismatch", tmp_path):
        assert r["error"] and "train config differs between ranks (lr: rank 0 has 0.1, ranks [1] differ" in r["error"]


def test_mpi_missing_rank_is_a_timeout_not_a_hang(tmp_path):
    r0 = _run("stuck", tmp_path)[0]
    assert r0["error"] and "allreduce of 10 float64 values did not complete within 3 s" in r0["error"]


@pytest.mark.parametrize("dtype, tol", [("float64", 1e-12), ("float32", 1e-4)])
def test_two_ranks_train_sft_as_one_process(dtype, tol, tmp_path):
    # 3 AdamW steps of 2 micro-batches, the batch of 4 split between the ranks, against one process:
    # equal to round-off of the gradient sum's order (float64 at 1e-12; float32, which AdamW's
    # normalized steps amplify, at 1e-4 of parameters of size ~1); the ranks bit-identical
    r0, r1 = _run(dtype, tmp_path, script=SFT_SCRIPT)
    assert r0["same_on_every_rank"] and r1["same_on_every_rank"]
    assert r0["max_change"] > 1e-2                     # training moved the weights
    assert r0["max_abs_diff"] <= tol * r0["max_abs_param"], r0
    for r in (r0, r1):                                 # a task that does not shard is refused on every rank
        assert "does not shard its batches across processes, and this launch has 2" in r["unsharded_error"]
