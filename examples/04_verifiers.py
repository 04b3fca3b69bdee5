"""Can a small verifier pick the right answer out of N samples? Train a chain-of-thought model (or
reuse one), sample N solutions for each training problem and label them (outcome, and exact step
labels from the task's own checker), train an outcome verifier (ORM) and a process verifier (PRM)
on its trunk, then compare majority vote with best-of-N by each verifier on held-out problems.

    python examples/04_verifiers.py --run runs/compare/cot          # reuse a trained CoT run
    python examples/04_verifiers.py --out runs/verifiers             # train one first (~15 min on 2 cores)
    python examples/04_verifiers.py --quick --out /tmp/v             # a smoke run of the whole pipeline

The same steps as `tinygrad-reason verifier label|train|eval`; the table goes to OUT/curve.md.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tinygrad_reason.cli import load_config, load_run, run_training, setup_threads  # noqa: E402
from tinygrad_reason.generate import SamplingConfig  # noqa: E402
from tinygrad_reason.io.atomic import write_text  # noqa: E402
from tinygrad_reason.nn import Verifier  # noqa: E402
from tinygrad_reason.reasoning.verifier_data import sample_labelled  # noqa: E402
from tinygrad_reason.reasoning.verifiers import (examples_from_labels, split_by_problem, verifier_curve,  # noqa: E402
                                                 verifier_curve_table)
from tinygrad_reason.train.verifier import VerifierConfig, train_verifier  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="a trained chain-of-thought run to reuse (default: train one in OUT/cot)")
    ap.add_argument("--out", default="runs/verifiers", help="directory for the runs and the table")
    ap.add_argument("--problems", type=int, default=1000, help="training problems to sample solutions for")
    ap.add_argument("--samples", type=int, default=8, help="sampled solutions per training problem")
    ap.add_argument("--steps", type=int, default=300, help="verifier training steps")
    ap.add_argument("--n", type=int, default=200, help="held-out problems in the curve")
    ap.add_argument("--curve", default="1,4,16", help="numbers of sampled solutions N")
    ap.add_argument("--threads", type=int, default=1, help="BLAS and kernel threads")
    ap.add_argument("--quick", action="store_true", help="a tiny task and model: a smoke run of the pipeline")
    args = ap.parse_args()
    setup_threads({"threads": args.threads})
    os.makedirs(args.out, exist_ok=True)
    run = args.run
    if run is None:                               # 1. a chain-of-thought policy
        cfg = load_config(None)
        if args.quick:
            cfg["task"].update(n_train=200, n_test=8, n_ood=8)
            cfg["model"].update(d_model=16, n_layers=1, n_heads=2)
            cfg["train"].update(steps=4, eval_every=2, eval_size=4, max_new_tokens=24)
        run = os.path.join(args.out, "cot")
        run_training(cfg, run, "cot")
    cfg, tok, policy, splits = load_run(run, splits="all")
    budget = cfg["train"]["max_new_tokens"]
    sampling = SamplingConfig(temperature=0.7, max_new_tokens=budget, stop_ids=(tok.eot_id,), seed=0)
    problems, samples, steps, n = (6, 3, 3, 4) if args.quick else (args.problems, args.samples, args.steps, args.n)

    # 2. N labelled solutions per training problem: the outcome, and each step's exact label
    solutions = sample_labelled(policy, tok, splits["train"][:problems], samples, sampling)
    right = sum(s.correct for s in solutions)
    print(f"{len(solutions)} sampled solutions, {right} right ({right / len(solutions):.1%})")
    train_s, held_s = split_by_problem(solutions, 0.1)

    # 3. an ORM and a PRM, each on a copy of the policy's trunk
    verifiers = {}
    for kind in ("orm", "prm"):
        trunk = load_run(run, splits="none")[2]
        verifier = Verifier(trunk)
        vcfg = VerifierConfig(kind=kind, steps=steps, eval_every=max(1, steps // 3), batch_size=32)
        result = train_verifier(verifier, tok.pad_id, examples_from_labels(train_s, tok, kind),
                                examples_from_labels(held_s, tok, kind), vcfg)
        print(f"{kind}: held-out AUROC {result['history'][-1]['auroc']:.3f} after {result['steps_done']} steps")
        verifiers[kind] = verifier

    # 4. accuracy vs N on held-out problems: majority vote against best-of-N by each verifier
    ns = [int(x) for x in args.curve.split(",")] if not args.quick else [1, 2]
    curve = verifier_curve(policy, tok, splits["test"][:n], "cot", sampling, ns, verifiers["orm"], verifiers["prm"])
    table = verifier_curve_table(curve)
    write_text(os.path.join(args.out, "curve.md"), table)
    print(table)


if __name__ == "__main__":
    main()
