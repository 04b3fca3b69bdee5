"""`tinygrad-reason train`: train a model on the task in one format (resumes a checkpoint in --out)."""
from __future__ import annotations

import json

from .config import config_from_args
from .runs import run_training


def cmd_train(args) -> None:
    cfg = config_from_args(args)
    r = run_training(cfg, args.out, args.format)
    print(json.dumps({k: r[k] for k in ("format", "train_seconds", "steps", "parameters")}))
    for split in ("test", "ood"):
        s = r[split]
        print(f"{split}: accuracy {s['accuracy']:.1%} ({s['correct']}/{s['n']}, 95% CI {s['ci95']})")


def add_parser(sub, common) -> None:
    p = sub.add_parser("train", help="train a model on the task in one format",
                       description="Train on the configured task; resumes if OUT holds a checkpoint.")
    common(p)
    p.add_argument("--format", choices=["direct", "cot"], help="direct answers or chain of thought")
    p.add_argument("--out", required=True, help="run directory (created; a checkpoint there is resumed)")
    p.set_defaults(func=cmd_train)
