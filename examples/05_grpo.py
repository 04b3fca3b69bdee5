"""Does reinforcement learning with a verifiable reward lift a chain-of-thought model? Train one (or
reuse a run), then GRPO it: G sampled solutions per training problem, reward 1 for the ones whose
strict answer is right, push the policy toward the better-than-average ones. Greedy accuracy on the
held-out split before and after, with a two-proportion test.

    python examples/05_grpo.py --run runs/hard --out runs/hard-grpo     # reuse a trained CoT run
    python examples/05_grpo.py --out runs/grpo                          # train the policy first
    python examples/05_grpo.py --quick --out /tmp/g                     # a smoke run of the whole pipeline

The same as `tinygrad-reason rl --run RUN --out OUT`, written out step by step.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from tinygrad_reason.cli import load_config, load_run, run_training, setup_threads  # noqa: E402
from tinygrad_reason.train.evaluation import evaluate  # noqa: E402
from tinygrad_reason.train.grpo import GRPOConfig, train_grpo  # noqa: E402
from tinygrad_reason.train.stats import two_proportion_p, wilson_interval  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="a trained chain-of-thought run to start from (default: train one in OUT/cot)")
    ap.add_argument("--out", default="runs/grpo", help="directory for the runs")
    ap.add_argument("--steps", type=int, default=200, help="GRPO steps")
    ap.add_argument("--lr", type=float, default=3e-5, help="learning rate")
    ap.add_argument("--threads", type=int, default=1, help="BLAS and kernel threads")
    ap.add_argument("--quick", action="store_true", help="a tiny task and model: a smoke run of the pipeline")
    args = ap.parse_args()
    setup_threads({"threads": args.threads})
    os.makedirs(args.out, exist_ok=True)
    run = args.run
    if run is None:                                      # 1. a chain-of-thought policy
        cfg = load_config(None)
        if args.quick:
            cfg["task"].update(n_train=200, n_test=8, n_ood=8)
            cfg["model"].update(d_model=16, n_layers=1, n_heads=2)
            cfg["train"].update(steps=4, eval_every=2, eval_size=4, max_new_tokens=24)
        run = os.path.join(args.out, "cot")
        run_training(cfg, run, "cot")
    cfg, tok, model, splits = load_run(run, splits="all")
    test = splits["test"]
    budget = cfg["train"]["max_new_tokens"]

    before = evaluate(model, tok, test, "cot", max_new_tokens=budget)
    # 2. GRPO: 16 problems x 8 samples a step, the strict correctness reward, TRL's defaults otherwise
    gcfg = GRPOConfig(steps=3 if args.quick else args.steps, lr=args.lr, min_lr=args.lr,
                      prompts_per_step=2 if args.quick else 16, num_generations=4 if args.quick else 8,
                      max_completion_length=budget, eval_every=3 if args.quick else 50, eval_size=8 if args.quick else 200,
                      log_path=os.path.join(args.out, "metrics.jsonl"), plot_path=os.path.join(args.out, "curves.png"))
    model.train()
    train_grpo(model, tok, splits["train"], test, gcfg)

    # 3. the held-out split before and after
    after = evaluate(model, tok, test, "cot", max_new_tokens=budget)
    for name, r in (("before GRPO", before), ("after GRPO", after)):
        lo, hi = wilson_interval(r["correct"], r["n"])
        print(f"{name}: {r['accuracy']:.1%} ({r['correct']}/{r['n']}, 95% CI [{lo:.1%}, {hi:.1%}])")
    p = two_proportion_p(after["correct"], after["n"], before["correct"], before["n"])
    print(f"gain {100 * (after['accuracy'] - before['accuracy']):+.1f} points, two-proportion p = {p:.3g}; "
          f"curves in {os.path.join(args.out, 'curves.png')}")


if __name__ == "__main__":
    main()
