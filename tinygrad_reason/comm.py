"""Communication between training processes: the one interface a training loop talks to, never MPI itself.

    comm = get_comm()                 # MPI under `mpiexec -n N` (N > 1), else the one-process Comm
    comm.check_same("train config", cfg_dict)      # every rank has the same config, or a clear error on all
    comm.broadcast_(weights)          # rank 0's array into every rank's, in place
    buf = GradientBuffer(params)      # one preallocated flat float buffer for every gradient
    buf.allreduce_sum(comm)           # grads <- the sum over ranks (each rank's loss weighted by its share)
    comm.allgather(metrics)           # a small picklable object from every rank, in rank order

`SingleProcess` (size 1) is the default: each collective is the identity, so the loop's code is the
same with and without MPI. `MPIComm` runs the collectives on mpi4py's COMM_WORLD as non-blocking
calls polled against a deadline (`timeout` seconds): a rank that died or is stuck elsewhere becomes a
CommError on the ranks still running, naming the collective, instead of a hang. (Under mpiexec a
rank that exits with an error usually makes mpiexec stop the others too.) Objects travel pickled:
they come from the other ranks of the same job, never from outside.
"""
from __future__ import annotations

import json
import os
import pickle
import time

import numpy as np

__all__ = ["CommError", "Comm", "SingleProcess", "MPIComm", "get_comm", "launched_by_mpi", "GradientBuffer",
           "sum_numbers"]

# the variables an MPI launcher (MPICH's hydra, Open MPI, Slurm's PMI) sets in each rank's environment
_LAUNCHER_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "PMIX_SIZE")


class CommError(RuntimeError):
    """A collective that cannot complete: a rank is gone or stuck, or the ranks disagree."""


class Comm:
    """The interface (module docstring). Subclasses implement the collectives."""
    rank: int = 0
    size: int = 1

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def allreduce_sum_(self, array: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def broadcast_(self, array: np.ndarray, root: int = 0) -> np.ndarray:
        raise NotImplementedError

    def allgather(self, obj) -> list:
        raise NotImplementedError

    def barrier(self) -> None:
        raise NotImplementedError

    def broadcast_object(self, obj, root: int = 0):
        """root's obj on every rank."""
        return self.allgather(obj if self.rank == root else None)[root]

    def check_same(self, what: str, config: dict) -> None:
        """Raise CommError on every rank unless every rank passed an equal (JSON-able) `config`;
        the message names the fields that differ and the ranks that hold other values."""
        mine = json.loads(json.dumps(config, sort_keys=True, default=str))
        every = self.allgather(mine)
        ref = every[0]
        bad = {}
        for r, other in enumerate(every[1:], start=1):
            for key in sorted(set(ref) | set(other)):
                if ref.get(key) != other.get(key):
                    bad.setdefault(key, []).append(r)
        if bad:
            fields = "; ".join(f"{k}: rank 0 has {ref.get(k)!r}, ranks {v} differ" for k, v in bad.items())
            raise CommError(f"{what} differs between ranks ({fields}); start every rank with the same options")


class SingleProcess(Comm):
    """One process: every collective is the identity."""

    def allreduce_sum_(self, array):
        return array

    def broadcast_(self, array, root: int = 0):
        return array

    def allgather(self, obj) -> list:
        return [obj]

    def barrier(self) -> None:
        pass


class MPIComm(Comm):
    """mpi4py's COMM_WORLD, every collective non-blocking and waited on with a deadline."""

    def __init__(self, timeout: float = 300.0, poll: float = 1e-4):
        try:
            from mpi4py import MPI
        except ImportError as e:
            raise CommError("MPIComm needs mpi4py: pip install -e '.[mpi]' (mpi4py and MPICH)") from e
        self.MPI, self.world = MPI, MPI.COMM_WORLD
        self.rank, self.size = self.world.Get_rank(), self.world.Get_size()
        if timeout <= 0:
            raise ValueError(f"MPIComm: timeout must be > 0 seconds, got {timeout}")
        self.timeout, self.poll = float(timeout), float(poll)

    def _wait(self, request, what: str) -> None:
        deadline = time.monotonic() + self.timeout
        while not request.Test():
            if time.monotonic() > deadline:
                raise CommError(f"rank {self.rank} of {self.size}: {what} did not complete within {self.timeout:g} s; "
                                "another rank has died or is stuck (its own error, if any, is in its output)")
            time.sleep(self.poll)

    @staticmethod
    def _contiguous(array: np.ndarray, op: str) -> None:
        if not isinstance(array, np.ndarray) or not array.flags.c_contiguous:
            raise TypeError(f"MPIComm.{op}: needs a C-contiguous NumPy array, got {type(array).__name__}")

    def allreduce_sum_(self, array):
        self._contiguous(array, "allreduce_sum_")
        self._wait(self.world.Iallreduce(self.MPI.IN_PLACE, array, op=self.MPI.SUM),
                   f"allreduce of {array.size} {array.dtype} values")
        return array

    def broadcast_(self, array, root: int = 0):
        self._contiguous(array, "broadcast_")
        self._wait(self.world.Ibcast(array, root=root), f"broadcast of {array.size} {array.dtype} values from rank {root}")
        return array

    def allgather(self, obj) -> list:
        data = np.frombuffer(pickle.dumps(obj), dtype=np.uint8)
        counts = np.zeros(self.size, dtype=np.int64)
        self._wait(self.world.Iallgather(np.array([data.size], dtype=np.int64), counts), "allgather of object sizes")
        buf = np.empty(int(counts.sum()), dtype=np.uint8)
        self._wait(self.world.Iallgatherv(data, [buf, counts]), "allgather of objects")
        ends = np.cumsum(counts)
        return [pickle.loads(buf[e - c:e].tobytes()) for c, e in zip(counts, ends)]

    def barrier(self) -> None:
        self._wait(self.world.Ibarrier(), "barrier")


def launched_by_mpi() -> bool:
    """Whether an MPI launcher started this process as one of several ranks."""
    for var in _LAUNCHER_SIZE_VARS:
        value = os.environ.get(var)
        if value is not None and value.isdigit() and int(value) > 1:
            return True
    return False


def get_comm(timeout: float = 300.0) -> Comm:
    """MPIComm when started by an MPI launcher with more than one rank, else SingleProcess."""
    return MPIComm(timeout) if launched_by_mpi() else SingleProcess()


class GradientBuffer:
    """Every parameter's gradient in one preallocated flat float buffer, for a single allreduce per step.
    Parameters without a gradient contribute zeros (a rank whose shard never reached them still
    takes part in the sum). The buffer's dtype is the parameters' (one dtype for all)."""

    def __init__(self, params):
        self.params = list(params)
        if not self.params:
            raise ValueError("GradientBuffer: no parameters")
        dtypes = {p.data.dtype for p in self.params}
        if len(dtypes) != 1:
            raise ValueError(f"GradientBuffer: the parameters mix dtypes {sorted(map(str, dtypes))}")
        sizes = [int(p.data.size) for p in self.params]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.flat = np.zeros(int(self.offsets[-1]), dtype=dtypes.pop())

    def pack(self) -> np.ndarray:
        for p, a, b in zip(self.params, self.offsets[:-1], self.offsets[1:]):
            self.flat[a:b] = 0.0 if p.grad is None else np.asarray(p.grad.data).reshape(-1)
        return self.flat

    def unpack(self) -> None:
        from .tensor import Tensor
        for p, a, b in zip(self.params, self.offsets[:-1], self.offsets[1:]):
            g = self.flat[a:b].reshape(p.data.shape)
            if p.grad is None:
                p.grad = Tensor(g.copy())
            else:
                p.grad.data[...] = g

    def allreduce_sum(self, comm: Comm) -> None:
        """grads <- the sum over ranks of grads (each rank's loss already weighted by its share); one allreduce."""
        if comm.size == 1:
            return
        comm.allreduce_sum_(self.pack())
        self.unpack()


def sum_numbers(comm: Comm, numbers: dict) -> dict:
    """Each key's value summed over ranks (every rank passes the same keys)."""
    if comm.size == 1:
        return numbers
    every = comm.allgather(numbers)
    return {k: sum(d[k] for d in every) for k in numbers}
