"""`tinygrad-reason compare`: train direct and chain-of-thought models with one config and tabulate
their accuracy with Wilson intervals and a two-proportion test."""
from __future__ import annotations

import os

from ..train.stats import two_proportion_p
from ..io.atomic import write_json, write_text
from .config import config_from_args
from .runs import run_training


def comparison_table(results: dict) -> str:
    lines = ["| format | split | accuracy | correct / n | 95% CI (Wilson) | train time |",
             "| --- | --- | --- | --- | --- | --- |"]
    for fmt in ("direct", "cot"):
        r = results[fmt]
        for split in ("test", "ood"):
            s = r[split]
            lines.append(f"| {'chain of thought' if fmt == 'cot' else 'direct'} | {split} | {s['accuracy']:.1%} | "
                         f"{s['correct']} / {s['n']} | [{s['ci95'][0]:.1%}, {s['ci95'][1]:.1%}] | "
                         f"{r['train_seconds']:.0f} s |")
    for split in ("test", "ood"):
        a, b = results["cot"][split], results["direct"][split]
        p = two_proportion_p(a["correct"], a["n"], b["correct"], b["n"])
        lines.append(f"\n{split}: chain of thought minus direct = {a['accuracy'] - b['accuracy']:+.1%}, "
                     f"two-proportion z-test p = {p:.2g}")
    return "\n".join(lines) + "\n"


def run_compare(cfg: dict, out: str) -> dict:
    results = {fmt: run_training(cfg, os.path.join(out, fmt), fmt) for fmt in ("direct", "cot")}
    table = comparison_table(results)
    write_text(os.path.join(out, "table.md"), table)
    write_json(os.path.join(out, "results.json"), results)
    return {"results": results, "table": table}


def cmd_compare(args) -> None:
    cfg = config_from_args(args)
    print(run_compare(cfg, args.out)["table"])


def add_parser(sub, common) -> None:
    p = sub.add_parser("compare", help="train direct and chain-of-thought models and tabulate accuracy",
                       description="Train both formats with the same config; writes OUT/table.md and results.json.")
    common(p)
    p.add_argument("--out", required=True, help="directory for both runs and the table")
    p.set_defaults(func=cmd_compare)
