"""`tinygrad-reason rl`: GRPO on a trained chain-of-thought run, or on a pretrained chat model.

    tinygrad-reason rl --run runs/cot --out runs/grpo                       # TRL's defaults
    tinygrad-reason rl --run runs/cot --out runs/grpo --loss-type dr_grpo --advantage mean --beta 0.04
    tinygrad-reason rl --model smollm2-135m --task multiplication --knob max_digits_b=1 --out runs/grpo-smollm2

With --model (a GGUF file, an HF folder or a known name) see cli/rl_model.py: the problems come from
--task, the prompt and the grading are eval-model's. The rest of this docstring is about --run.

Every GRPOConfig field is an option (--help lists them with their defaults). The output directory is
a run directory like train's: config.json and tokenizer.json (the policy run's), checkpoint/ (the
GRPO model; an interrupted run resumes from it with the same options), rl.json (the policy run and
the GRPO config), metrics.jsonl, curves.png and results.json (greedy accuracy on the full test and
OOD splits, with the policy run's beside it and a two-proportion p-value). So `eval`, `sample` and
`verifier` work on it as on any run.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import time

from ..io.atomic import write_json
from .config import CLIError, setup_threads
from .models import RL_FILE
from .rl_model import cmd_rl_model, saved_record
from .runs import evaluate_split, load_run

_NOT_OPTIONS = ("checkpoint_dir", "log_path", "plot_path", "progress")

HELP = {
    "steps": "optimizer steps", "grad_accum": "micro-batches per optimizer step (the update is the same for any "
    "number: the loss is normalized over the whole step)", "lr": "peak learning rate", "min_lr": "cosine floor",
    "warmup": "warmup steps", "weight_decay": "AdamW weight decay", "beta1": "AdamW beta1", "beta2": "AdamW beta2",
    "clip": "global gradient-norm limit (0: off)", "eval_every": "greedy held-out accuracy (and a checkpoint) every "
    "this many steps", "patience": "stop after this many evaluations without a better accuracy (0: never)",
    "log_every": "a metrics record every this many steps",
    "prompts_per_step": "problems (groups) per rollout batch", "num_generations": "G, completions per problem",
    "temperature": "sampling temperature (the policy's distribution is this one)", "top_p": "nucleus sampling",
    "top_k": "top-k sampling (none: off)", "max_completion_length": "tokens per completion at most",
    "tool": "the calculator tool forces annotation results while sampling (those tokens carry no loss)",
    "advantage": "group (GRPO z-score) | mean (Dr. GRPO) | batch (batch std) | rloo (leave-one-out)",
    "loss_type": "grpo (per-sequence mean) | bnpo | dr_grpo (/ G x max length) | dapo (per token)",
    "eps_low": "lower clip: ratio >= 1 - eps_low", "eps_high": "upper clip: ratio <= 1 + eps_high (0.28: DAPO's "
    "clip-higher)", "delta": "two-sided clip: cap on the unclipped ratio (none: off)",
    "importance_level": "token (GRPO) | sequence (GSPO: one length-normalized ratio per completion)",
    "beta": "KL coefficient to the frozen policy run", "kl_estimator": "k1 | k2 | k3",
    "mu": "optimizer steps per rollout batch (TRL's num_iterations)",
    "mask_truncated": "completions cut off by the length limit carry no loss",
    "dynamic_sampling": "drop groups whose rewards have no spread and refill from new problems (DAPO)",
    "dynamic_max_rounds": "generate calls per batch at most with dynamic sampling",
    "rewards": "reward functions, comma-separated: correctness (strict), format",
    "reward_weights": "one weight per reward, comma-separated (default 1 each)",
    "overlong_cache": "DAPO's soft overlong penalty over the last this many tokens (0: off)",
    "grading_timeout": "seconds per answer in the sympy grader", "grading_workers": "grader processes",
    "eval_size": "held-out problems per periodic evaluation (0: all)", "eval_batch": "prompts per decoding batch",
    "data_parallel": "with several threads: a shard of each micro-batch per thread", "seed": "seed of problems and samples",
}


def _parse(field: dataclasses.Field, default):
    """argparse `type` for a GRPOConfig field, from its default."""
    if field.name == "rewards":
        return lambda s: tuple(x.strip() for x in s.split(",") if x.strip())
    if field.name == "reward_weights":
        return lambda s: tuple(float(x) for x in s.split(","))
    if field.name in ("top_k", "delta"):
        cast = int if field.name == "top_k" else float
        return lambda s: None if s.lower() in ("none", "off", "") else cast(s)
    if isinstance(default, bool):
        def boolean(s):
            if s.lower() in ("1", "true", "yes", "on"):
                return True
            if s.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(s)
        boolean.__name__ = "true/false"
        return boolean
    return type(default)


def grpo_config(args, out: str):
    from ..train.grpo import GRPOConfig
    fields = {f.name: getattr(args, f.name) for f in dataclasses.fields(GRPOConfig) if f.name not in _NOT_OPTIONS}
    try:
        return GRPOConfig(**fields, checkpoint_dir=os.path.join(out, "checkpoint"),
                          log_path=os.path.join(out, "metrics.jsonl"), plot_path=os.path.join(out, "curves.png"),
                          progress=not args.quiet)
    except (TypeError, ValueError) as e:
        raise CLIError(f"rl config: {e}") from None


def _config_record(gcfg) -> dict:
    return {k: v for k, v in dataclasses.asdict(gcfg).items() if k not in _NOT_OPTIONS}


def cmd_rl(args) -> None:
    from ..train.grpo import train_grpo
    from ..train.stats import two_proportion_p
    if args.threads is not None:
        setup_threads({"threads": args.threads})
    gcfg = grpo_config(args, args.out)
    if (args.run is None) == (args.model is None):
        raise CLIError("rl: give exactly one of --run (a chain-of-thought run) and --model (a pretrained chat model)")
    if args.model is not None:
        return cmd_rl_model(args, gcfg, _config_record(gcfg))
    cfg, tok, model, splits = load_run(args.run, splits="all")
    if cfg["train"]["format"] != "cot":
        raise CLIError(f"run {args.run} was trained in format {cfg['train']['format']!r}; GRPO trains chains of "
                       "thought (train --format cot)")
    if os.path.abspath(args.run) == os.path.abspath(args.out):
        raise CLIError("--out must be a new directory, not the policy run itself")
    record = saved_record(args.out, {"run": os.path.abspath(args.run), "config": _config_record(gcfg)})
    path = os.path.join(args.out, RL_FILE)
    os.makedirs(args.out, exist_ok=True)
    write_json(path, record)
    for name in ("config.json", "tokenizer.json"):      # the output is a run directory eval / sample can read
        shutil.copyfile(os.path.join(args.run, name), os.path.join(args.out, name))
    model.train()
    t0 = time.perf_counter()
    result = train_grpo(model, tok, splits["train"], splits["test"], gcfg)
    seconds = time.perf_counter() - t0
    before = _policy_results(args.run, tok, splits, cfg)
    summary = {"run": record["run"], "train_seconds": round(seconds, 1), "steps": result["steps_done"],
               "history": result["history"]}
    for split in ("test", "ood"):
        after = evaluate_split(model, tok, splits[split], "cot", cfg)
        b = before[split]
        after["policy_run"] = {"accuracy": b["accuracy"], "correct": b["correct"], "n": b["n"]}
        after["gain"] = after["accuracy"] - b["accuracy"]
        after["p_value"] = two_proportion_p(after["correct"], after["n"], b["correct"], b["n"])
        summary[split] = after
    write_json(os.path.join(args.out, "results.json"), summary)
    print(json.dumps({k: summary[k] for k in ("train_seconds", "steps")}))
    for split in ("test", "ood"):
        s = summary[split]
        print(f"{split}: accuracy {s['accuracy']:.1%} ({s['correct']}/{s['n']}, 95% CI {s['ci95']}); policy run "
              f"{s['policy_run']['accuracy']:.1%}, gain {s['gain'] * 100:+.1f} points, p = {s['p_value']:.3g}")


def _policy_results(run: str, tok, splits, cfg) -> dict:
    """The policy run's greedy results on the full splits: its results.json when that has them, else
    evaluated now (an interrupted SFT run has none)."""
    path = os.path.join(run, "results.json")
    if os.path.exists(path):
        with open(path) as f:
            saved = json.load(f)
        if all(s in saved and saved[s]["n"] == len(splits[s]) for s in ("test", "ood")):
            return saved
    _, _, model, _ = load_run(run, splits="none")
    return {s: evaluate_split(model, tok, splits[s], "cot", cfg) for s in ("test", "ood")}


def add_parser(sub, common) -> None:
    from ..train.grpo import GRPOConfig
    p = sub.add_parser("rl", help="GRPO on a trained chain-of-thought run",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", help="the chain-of-thought run to start from (train --format cot)")
    p.add_argument("--model", help="instead of --run: a pretrained chat model (GGUF file, HF folder or known name)")
    m = p.add_argument_group("with --model: the task (data.splits.make_splits)")
    m.add_argument("--task", default="multiplication", help="built-in task (default: multiplication)")
    m.add_argument("--knob", action="append", metavar="NAME=VALUE",
                   help="a generator knob of the task, repeatable (e.g. max_digits_b=1)")
    m.add_argument("--train-size", type=int, default=2000, help="training problems (default: 2000)")
    m.add_argument("--test-size", type=int, default=200, help="held-out problems (default: 200)")
    m.add_argument("--ood-size", type=int, default=100, help="out-of-distribution problems (default: 100)")
    m.add_argument("--ood-mode", default="values", choices=("steps", "values", "both"),
                   help="how OOD problems are harder (default: values, bigger numbers)")
    m.add_argument("--data-seed", type=int, default=0, help="seed of the splits (default: 0)")
    m.add_argument("--train-layers", type=int, help="train only the last K blocks and the final norm "
                   "(default: every parameter)")
    p.add_argument("--out", required=True, help="output run directory (a checkpoint there is resumed)")
    p.add_argument("--threads", type=int, help="BLAS and kernel threads")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    defaults = GRPOConfig()
    for f in dataclasses.fields(GRPOConfig):
        if f.name in _NOT_OPTIONS:
            continue
        default = getattr(defaults, f.name)
        shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
        p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=_parse(f, default), default=default,
                       metavar=f.name.upper() if not isinstance(default, bool) else "BOOL",
                       help=f"{HELP.get(f.name, f.name)} (default: {shown})")
    p.set_defaults(func=cmd_rl)
