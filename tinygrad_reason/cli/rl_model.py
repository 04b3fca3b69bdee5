"""`tinygrad-reason rl --model M`: GRPO on a pretrained chat model (reasoning.chat_grpo), on a built-in task.

    tinygrad-reason rl --model smollm2-135m --task multiplication \\
        --knob min_digits_a=2 --knob max_digits_a=3 --knob max_digits_b=1 --out runs/grpo-smollm2

The problems come from data.splits.make_splits (train, test and OOD disjoint; OOD by --ood-mode,
bigger numbers by default). The prompt, the answer and its grading are eval-model's: the question
and the chain-of-thought instruction in the model's chat template, the completion's last number
graded by grading.rewards.is_correct. Before training, the model's greedy accuracy on the test and
OOD splits is measured; after it, again; results.json holds both with the gain and a two-proportion
p-value. The output directory holds rl.json (model, task, options), metrics.jsonl, curves.png and
checkpoint/ (an interrupted run resumes from it with the same options; `eval-model --model OUT`
loads the trained weights over the source model). results.json's train_seconds counts this
invocation's steps only: a resumed run reports the time since it resumed.
"""
from __future__ import annotations

import json
import os
import time

from ..io.atomic import write_json
from .config import CLIError
from .models import RL_FILE, resolve_model


def parse_knobs(items) -> dict:
    """['max_digits_b=1', 'distractors=0.5'] -> {'max_digits_b': 1, 'distractors': 0.5}."""
    knobs = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise CLIError(f"--knob {item!r}: expected NAME=VALUE")
        value = value.strip()
        try:
            knobs[name.strip()] = int(value)
        except ValueError:
            try:
                knobs[name.strip()] = float(value)
            except ValueError:
                raise CLIError(f"--knob {item!r}: the value must be a number") from None
    return knobs


def saved_record(out: str, record: dict) -> dict:
    """`record` as rl.json saves it (tuples become lists). When `out` holds a GRPO checkpoint, its
    rl.json must agree on every field and GRPO option but `steps` (a resume may train longer), or the
    run is refused, naming what changed."""
    record = json.loads(json.dumps(record))
    path = os.path.join(out, RL_FILE)
    if os.path.exists(os.path.join(out, "checkpoint", "checkpoint.json")) and os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        changed = sorted(k for k in record if k != "config" and old.get(k) != record[k])
        changed += sorted(k for k in record["config"] if k != "steps" and old["config"].get(k) != record["config"][k])
        if changed:
            raise CLIError(f"{out} holds a GRPO checkpoint with other options ({', '.join(changed)}); resume with "
                           "the same ones or use another --out")
    return record


def make_task_splits(args) -> dict:
    from ..data.splits import TASKS, make_splits
    if args.task not in TASKS:
        raise CLIError(f"--task {args.task!r}: known tasks are {', '.join(sorted(TASKS))}")
    try:
        return make_splits(args.task, args.train_size, args.test_size, args.ood_size, seed=args.data_seed,
                           ood_mode=args.ood_mode, **parse_knobs(args.knob))
    except (TypeError, ValueError) as e:
        raise CLIError(f"--task {args.task} with knobs {args.knob}: {e}") from None


def _accuracy(pretrained, records, cfg) -> dict:
    from ..reasoning.chat_grpo import chat_accuracy
    from ..train.stats import wilson_interval
    r = chat_accuracy(pretrained, records, cfg.max_completion_length, cfg.eval_batch)
    lo, hi = wilson_interval(r["correct"], r["n"])
    return {**r, "ci95": [round(lo, 4), round(hi, 4)]}


def cmd_rl_model(args, gcfg, config_record: dict) -> None:
    from ..models.pretrained import load_pretrained
    from ..reasoning.chat_grpo import freeze_below, train_chat_grpo
    from ..train.stats import two_proportion_p
    source = os.path.abspath(resolve_model(args.model))
    splits = make_task_splits(args)
    record = {"model": source, "task": args.task, "knobs": parse_knobs(args.knob), "train_size": args.train_size,
              "test_size": args.test_size, "ood_size": args.ood_size, "ood_mode": args.ood_mode,
              "data_seed": args.data_seed, "train_layers": args.train_layers, "config": config_record}
    record = saved_record(args.out, record)
    path = os.path.join(args.out, RL_FILE)
    pretrained = load_pretrained(source)
    try:
        trainable = freeze_below(pretrained.model, args.train_layers)
    except ValueError as e:
        raise CLIError(f"--train-layers: {e}") from None
    os.makedirs(args.out, exist_ok=True)
    write_json(path, record)
    before_path = os.path.join(args.out, "before.json")      # the source model's accuracy, measured once
    if os.path.exists(before_path):
        with open(before_path) as f:
            before = json.load(f)
    else:
        before = {s: _accuracy(pretrained, splits[s], gcfg) for s in ("test", "ood") if splits[s]}
        write_json(before_path, before)
    pretrained.model.train()
    t0 = time.perf_counter()
    result = train_chat_grpo(pretrained, splits["train"], splits["test"], gcfg)
    seconds = time.perf_counter() - t0
    summary = {"model": source, "trainable_parameters": trainable, "train_seconds": round(seconds, 1),
               "steps": result["steps_done"], "history": result["history"]}
    for split, b in before.items():
        after = _accuracy(pretrained, splits[split], gcfg)
        after["source_model"] = {k: b[k] for k in ("accuracy", "correct", "n", "ci95")}
        after["gain"] = after["accuracy"] - b["accuracy"]
        after["p_value"] = two_proportion_p(after["correct"], after["n"], b["correct"], b["n"])
        summary[split] = after
    write_json(os.path.join(args.out, "results.json"), summary)
    print(json.dumps({k: summary[k] for k in ("train_seconds", "steps", "trainable_parameters")}))
    for split in before:
        s = summary[split]
        print(f"{split}: accuracy {s['accuracy']:.1%} ({s['correct']}/{s['n']}, 95% CI {s['ci95']}); source model "
              f"{s['source_model']['accuracy']:.1%}, gain {s['gain'] * 100:+.1f} points, p = {s['p_value']:.3g}")
