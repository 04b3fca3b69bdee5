"""AdamW's update as one chunked in-place kernel (optim.adamw_reference_update is the same formula
on whole arrays, the version to read).

Every pass of the update runs over one cache-sized chunk of the flattened parameter, its gradient
and its two moments before the next chunk, in place, and the chunks run on our threads: the four
arrays are read and written once from memory instead of once per pass.
"""
from __future__ import annotations

import math

from .. import backend
from .threads import parallel_units

UPDATE_CHUNK = 64 * 1024   # elements per chunk of the AdamW update: its four arrays stay in L2


def update(param, g, m, v, t: int, lr: float, b1: float, b2: float, eps: float, wd: float) -> None:
    """param, m, v updated in place by AdamW step t (counting from 1) with gradient g."""
    xp = backend.get_array_module(param)
    kept = (param, m, v)
    data, m, v = (a if a.flags.c_contiguous else xp.ascontiguousarray(a) for a in kept)
    flat = [a.reshape(-1) for a in (data, xp.ascontiguousarray(g), m, v)]
    decay, bc2_sqrt, step_size = 1.0 - lr * wd, math.sqrt(1.0 - b2 ** t), lr / (1.0 - b1 ** t)

    def work(lo, hi, scratch):
        # every pass of the update over one cache-sized chunk, in place (and on our threads)
        pc, gc, mc, vc = (a[lo:hi] for a in flat)
        tmp = scratch((hi - lo,))
        if wd:
            pc *= decay
        mc *= b1
        xp.multiply(gc, 1.0 - b1, out=tmp)
        mc += tmp
        vc *= b2
        xp.multiply(gc, 1.0 - b2, out=tmp)
        tmp *= gc
        vc += tmp
        xp.sqrt(vc, out=tmp)
        tmp /= bc2_sqrt
        tmp += eps
        xp.divide(mc, tmp, out=tmp)
        tmp *= step_size
        pc -= tmp

    parallel_units(flat[0].size, 1, UPDATE_CHUNK, work, xp, data.dtype)
    for original, updated in zip(kept, (data, m, v)):
        if updated is not original:                   # a non-contiguous parameter or moment: write back
            original[...] = updated
