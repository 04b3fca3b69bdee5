"""The `tinygrad-reason` command line: train, eval, sample, compare, verifier, rl, pipeline, models.

    tinygrad-reason train --format cot --out runs/cot                  # the built-in arithmetic task
    tinygrad-reason train --config my.toml --set train.steps=500 --out runs/x
    tinygrad-reason eval --run runs/cot --split ood
    tinygrad-reason eval --run runs/cot --methods greedy,sc@8,tool,refine@2 --n 100
    tinygrad-reason eval --run runs/cot --curve 1,2,4,8,16,32 --n 100  # self-consistency accuracy vs N
    tinygrad-reason sample --run runs/cot --question "Ann has 5 apples ..."
    tinygrad-reason compare --out runs/compare                         # direct vs chain of thought
    tinygrad-reason verifier label --run runs/cot --out runs/cot/labels.jsonl   # sampled, labelled solutions
    tinygrad-reason verifier train --run runs/cot --labels runs/cot/labels.jsonl --kind prm --out runs/prm
    tinygrad-reason verifier eval --run runs/cot --prm runs/prm --curve 1,4,16   # best-of-N vs majority vote
    tinygrad-reason rl --run runs/cot --out runs/grpo                  # GRPO from the chain-of-thought run
    tinygrad-reason pipeline --quick --out runs/pipeline               # every stage, one table
    tinygrad-reason models fetch smollm2-135m                          # the one command that downloads
    tinygrad-reason sample --model smollm2-135m --chat "What is 17 + 25?"   # a real pretrained model
    tinygrad-reason eval-model --model smollm2-135m --data gsm8k/test.jsonl --methods greedy,tool --n 500 --out runs/s

A run directory holds config.json (the resolved config), tokenizer.json, checkpoint/, metrics.jsonl,
curves.png (with matplotlib) and results.json. Configs are JSON or TOML files with the sections
task, tokenizer, model, train (see DEFAULT_CONFIG); `--set section.key=value` overrides one value.
"""
from __future__ import annotations

import argparse
import os
import sys

from . import compare, eval_model, models, pipeline, rl, sample, train, verifier
from . import eval as eval_command
from .compare import comparison_table, run_compare  # noqa: F401
from .config import DEFAULT_CONFIG, CLIError, config_from_args, load_config, setup_threads  # noqa: F401
from .runs import build_model, build_splits, build_tokenizer, load_run, run_training  # noqa: F401

COMMANDS = (train, eval_command, eval_model, sample, compare, verifier, rl, pipeline, models)   # one file per subcommand, each with add_parser


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="tinygrad-reason", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p):
        p.add_argument("--config", help="JSON or TOML config file (sections: task, tokenizer, model, train)")
        p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                       help="override one config value, e.g. --set train.steps=500 (repeatable)")
        p.add_argument("--seed", type=int, help="seed for data splits, initialisation and batches")
        p.add_argument("--device", choices=["cpu", "cuda"], help="where the model runs (cuda needs CuPy)")
        p.add_argument("--steps", type=int, help="training steps (same as --set train.steps=N)")
        p.add_argument("--threads", type=int, help="BLAS and kernel threads (1 is fastest on a busy machine)")

    for command in COMMANDS:
        command.add_parser(sub, common)
    return ap


def main(argv=None) -> int:
    from ..fast import configure_from_env
    from ..io.checkpoint import CheckpointError
    args = build_parser().parse_args(argv)
    try:
        try:
            configure_from_env()    # malloc keeps freed memory; TINYGRAD_REASON_BLAS=mkl switches MKL on
        except RuntimeError as e:   # MKL asked for but not installed
            raise CLIError(str(e)) from None
        args.func(args)
    except (CLIError, CheckpointError, ValueError, FileNotFoundError) as e:
        # bad input (options, configs, data that does not fit the model) is one line, not a traceback;
        # set TINYGRAD_REASON_TRACEBACK=1 to see where it came from
        if os.environ.get("TINYGRAD_REASON_TRACEBACK"):
            raise
        print(f"tinygrad-reason {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0

