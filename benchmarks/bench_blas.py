"""The BLAS half of a training step: NumPy's OpenBLAS vs torch's MKL, and optionally MKL called directly.

Times the GEMMs of every linear layer of one step of a bench_train.py config (forward x W^T,
backward g W and g^T x, cycling through the layers as a step does), in NumPy, in torch, and, when
--mkl points at libmkl_rt (e.g. from `pip download mkl` and unzipping the wheel's
mkl-*.data/data/lib), through MKL's cblas_sgemm by ctypes on the same NumPy arrays. It answers one
question: how much of our gap to torch would a different BLAS close?

With --decode-rows N, the products of one batched decoding step instead: N rows through every
linear layer's weight (forward only, lm_head included), in NumPy as our Linear computes them for 2-64
rows (W x^T, then a contiguous copy), in NumPy as x W^T, and in torch's F.linear.

Sides alternate within each repeat; medians.

    python benchmarks/bench_blas.py --config small --threads 2
    python benchmarks/bench_blas.py --config small --threads 2 --mkl /path/to/libmkl_rt.so.2
    python benchmarks/bench_blas.py --config small --threads 1 --decode-rows 16 --repeats 40
    python benchmarks/bench_blas.py --config small --threads 2 --decode-rows 16 --repeats 40 --without-torch

MKL runs with MKL_THREADING_LAYER=GNU (libgomp, loaded first from --gomp). One JSON line.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def _mkl_sgemm(path: str, gomp: str):
    os.environ["MKL_THREADING_LAYER"] = "GNU"
    ctypes.CDLL(gomp, mode=ctypes.RTLD_GLOBAL)
    lib = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    fn = lib.cblas_sgemm
    i, f, p = ctypes.c_int, ctypes.c_float, ctypes.c_void_p
    fn.argtypes = [i, i, i, i, i, i, f, p, i, p, i, f, p, i]
    row_major, no_trans, trans = 101, 111, 112

    def gemm(a, b, trans_a: bool, trans_b: bool, out):
        """out = op(a) @ op(b) for C-contiguous float32 a, b, out."""
        k = a.shape[0] if trans_a else a.shape[1]
        fn(row_major, trans if trans_a else no_trans, trans if trans_b else no_trans, out.shape[0],
           out.shape[1], k, 1.0, a.ctypes.data, a.shape[1], b.ctypes.data, b.shape[1], 0.0,
           out.ctypes.data, out.shape[1])
        return out
    return gemm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="small")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--mkl", help="path to libmkl_rt.so (optional)")
    ap.add_argument("--gomp", default="libgomp.so.1", help="libgomp to load before MKL's GNU threading layer")
    ap.add_argument("--decode-rows", type=int, default=0,
                    help="time one decoding step's weight products for this many rows instead of a training step's")
    ap.add_argument("--without-torch", action="store_true",
                    help="leave torch out of the process (its OpenMP workers spin-wait on the cores BLAS would use)")
    args = ap.parse_args()
    import bench_train
    bench_train._set_threads(args.threads)
    import numpy as np
    if not args.without_torch:
        import torch
        torch.set_num_threads(args.threads)
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from tinygrad_reason.nn import TransformerConfig
    c = bench_train.CONFIGS[args.config]
    cfg = TransformerConfig(vocab_size=c["vocab"], context_length=c["ctx"], d_model=c["d"], n_layers=c["layers"],
                            n_heads=c["heads"])
    rows, d = c["batch"] * c["ctx"], c["d"]
    shapes = ([(d, d)] * 4 + [(d, cfg.mlp_hidden), (cfg.mlp_hidden, d)]) * c["layers"] + [(d, c["vocab"])]
    rng = np.random.default_rng(0)
    if args.decode_rows > 0:
        sides = _decode_sides(args, shapes, rng)
    else:
        layers = [tuple(rng.standard_normal(s, dtype=np.float32) for s in ((rows, i), (o, i), (rows, o)))
                  for i, o in shapes]
        sides = {"numpy": lambda: [(x @ w.T, g @ w, g.T @ x) for x, w, g in layers]}
        if not args.without_torch:
            tlayers = [tuple(torch.from_numpy(a) for a in t) for t in layers]
            sides["torch"] = lambda: [(x @ w.T, g @ w, g.T @ x) for x, w, g in tlayers]
        if args.mkl:
            gemm = _mkl_sgemm(args.mkl, args.gomp)
            outs = [(np.empty((rows, w.shape[0]), np.float32), np.empty_like(x), np.empty_like(w))
                    for x, w, g in layers]
            x, w, g = layers[0]
            y = gemm(x, w, False, True, outs[0][0])
            assert np.allclose(y, x @ w.T, rtol=1e-4, atol=1e-3), "MKL sgemm result differs from numpy's"
            sides["mkl_ctypes"] = lambda: [(gemm(x, w, False, True, a), gemm(g, w, False, False, b),
                                            gemm(g, x, True, False, c_)) for (x, w, g), (a, b, c_) in zip(layers, outs)]
    result = {"config": args.config, "threads": args.threads}
    if args.decode_rows > 0:
        result["rows"] = args.decode_rows
    times = {name: [] for name in sides}
    for fn in sides.values():
        fn()
    for _ in range(args.repeats):
        for name, fn in sides.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    for name, t in times.items():
        result[f"{name}_ms"] = round(float(np.median(t)) * 1e3, 2)
    print(json.dumps(result))


def _decode_sides(args, shapes, rng) -> dict:
    """One decoding step's weight products: rows x in through every (out, in) weight."""
    import numpy as np
    weights = [rng.standard_normal((o, i), dtype=np.float32) for i, o in shapes]
    xs = {i: rng.standard_normal((args.decode_rows, i), dtype=np.float32) for i, _ in shapes}
    sides = {
        "numpy": lambda: [np.ascontiguousarray((w @ xs[w.shape[1]].T).T) for w in weights],   # as Linear does
        "numpy_x_wt": lambda: [xs[w.shape[1]] @ w.T for w in weights],
    }
    w, x = weights[0], xs[weights[0].shape[1]]
    assert np.allclose(sides["numpy"]()[0], x @ w.T, rtol=1e-4, atol=1e-4), "the two numpy products differ"
    if not args.without_torch:
        import torch
        import torch.nn.functional as F
        tweights, txs = [torch.from_numpy(w) for w in weights], {i: torch.from_numpy(x) for i, x in xs.items()}
        with torch.no_grad():
            ref = F.linear(txs[w.shape[1]], tweights[0]).numpy()
        assert np.allclose(x @ w.T, ref, rtol=1e-4, atol=1e-4), "numpy and torch differ"

        def torch_side():
            with torch.no_grad():
                return [F.linear(txs[w.shape[1]], w) for w in tweights]
        sides["torch"] = torch_side
    if args.mkl:
        gemm = _mkl_sgemm(args.mkl, args.gomp)
        outs = [np.empty((args.decode_rows, w.shape[0]), np.float32) for w in weights]
        sides["mkl_ctypes"] = lambda: [gemm(xs[w.shape[1]], w, False, True, out) for w, out in zip(weights, outs)]
    return sides


if __name__ == "__main__":
    main()
