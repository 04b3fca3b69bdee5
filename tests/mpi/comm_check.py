"""Run under `mpiexec -n 2`: tinygrad_reason.comm's collectives; one JSON file of results per rank, in the
folder argv[2].
Mode `ok`: allreduce (float32 and float64), broadcast, allgather, check_same and GradientBuffer.
Mode `mismatch`: the ranks pass configs that differ in one field. Mode `stuck`: rank 1 skips an
allreduce, so rank 0's must time out."""
import json
import os
import sys

import numpy as np

import tinygrad_reason as tg
from tinygrad_reason.comm import CommError, GradientBuffer, MPIComm, get_comm, launched_by_mpi


def _write(result):
    """This rank's results as JSON in the folder argv[2] (not stdout, where mpiexec may join the lines)."""
    with open(os.path.join(sys.argv[2], f"rank{result['rank']}.json"), "w") as f:
        json.dump(result, f)


mode = sys.argv[1]
comm = get_comm(timeout=3.0)
out = {"rank": comm.rank, "size": comm.size, "launched": launched_by_mpi(), "mpi": isinstance(comm, MPIComm)}
if mode == "ok":
    rng = np.random.default_rng(comm.rank)
    for dtype in (np.float32, np.float64):
        mine = rng.standard_normal(1000).astype(dtype)
        every = comm.allgather(mine)
        summed = comm.allreduce_sum_(mine.copy())
        # the two-rank sum of float values is one rounding, whichever rank adds first
        out[f"allreduce_{np.dtype(dtype).name}_exact"] = bool(np.array_equal(summed, every[0] + every[1]))
    w = np.full(5, float(comm.rank + 7))
    out["broadcast"] = comm.broadcast_(w).tolist()
    out["broadcast_object"] = comm.broadcast_object({"seed": 10 + comm.rank})
    comm.check_same("config", {"lr": 0.1, "steps": 3})
    p = tg.Tensor(np.zeros((2, 3)), requires_grad=True)
    q = tg.Tensor(np.zeros(4), requires_grad=True)
    p.grad = tg.Tensor(np.full((2, 3), float(comm.rank + 1)))
    if comm.rank == 0:                       # q got no gradient on rank 0: it counts as zeros
        q.grad = None
    else:
        q.grad = tg.Tensor(np.full(4, 4.0))
    GradientBuffer([p, q]).allreduce_sum(comm)
    out["grad_sum"] = [p.grad.data.tolist(), q.grad.data.tolist()]
    comm.barrier()
elif mode == "mismatch":
    try:
        comm.check_same("train config", {"lr": 0.1 * (comm.rank + 1), "steps": 3})
        out["error"] = None
    except CommError as e:
        out["error"] = str(e)
elif mode == "stuck":
    if comm.rank == 1:                       # stays alive past rank 0's deadline without joining
        import time
        _write(out)   # now: mpiexec stops this rank when rank 0 leaves
        time.sleep(6.0)
        out = None
    else:
        try:
            comm.allreduce_sum_(np.ones(10))
            out["error"] = None
        except CommError as e:
            out["error"] = str(e)
if out is not None:
    _write(out)
if mode == "stuck":                          # the MPI state is unusable after a timeout: leave at once
    os._exit(0)
