"""Does thinking step by step help a tiny model? Train the same transformer twice on the same
arithmetic word problems, once to answer directly and once with a chain of thought, and compare
exact-match accuracy on held-out problems and on harder, out-of-distribution ones.

    python examples/03_cot_vs_direct.py                       # the built-in default (about 20 min on 2 cores)
    python examples/03_cot_vs_direct.py --steps 100 --out /tmp/quick   # a quick look

It is the same comparison as `tinygrad-reason compare`; the table goes to OUT/table.md.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tinygrad_reason.cli import load_config, run_compare, setup_threads  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/cot_vs_direct", help="directory for both runs and the table")
    ap.add_argument("--steps", type=int, help="training steps per model (default: the config's)")
    ap.add_argument("--threads", type=int, default=1, help="BLAS and kernel threads (1 is robust on a busy machine)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="a tiny task and model: a smoke run of the pipeline")
    args = ap.parse_args()
    cfg = load_config(None)
    if args.quick:
        cfg["task"].update(n_train=200, n_test=8, n_ood=8)
        cfg["model"].update(d_model=16, n_layers=1, n_heads=2)
        cfg["train"].update(steps=4, eval_every=2, eval_size=4, max_new_tokens=8)
    cfg["seed"], cfg["threads"] = args.seed, args.threads
    if args.steps:
        cfg["train"]["steps"] = args.steps
        cfg["train"]["eval_every"] = max(1, args.steps // 3)
    setup_threads(cfg)
    print(run_compare(cfg, args.out)["table"])


if __name__ == "__main__":
    main()
