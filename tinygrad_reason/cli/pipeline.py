"""`tinygrad-reason pipeline`: the staged results table, from a base transformer to GRPO, in one command.

    tinygrad-reason pipeline --quick --out runs/pipeline-quick     # the whole table in minutes
    tinygrad-reason pipeline --out runs/pipeline                   # the README's table (about an hour)
    tinygrad-reason pipeline --out runs/pipeline --seeds 0,1,2     # three seeds and their spread
    tinygrad-reason pipeline --out runs/pipeline --from grpo       # redo GRPO and what comes after it

Stages, each the documented command it stands for, cached in OUT:

    direct     train --format direct           -> OUT/direct     the base: question -> answer
    cot        train --format cot              -> OUT/cot        chain-of-thought SFT
    labels     verifier label                  -> OUT/labels.jsonl  sampled solutions with exact step labels
    prm        verifier train --kind prm       -> OUT/prm        the process verifier
    eval-sft   greedy, tool, refine@K, sc@N, best-of-N and weighted vote by the PRM, on test and OOD
    grpo       rl                              -> OUT/grpo       GRPO from the cot run
    eval-grpo  greedy, and the PRM at the same N, on the GRPO model
    report     OUT/table.md, OUT/results.json, OUT/pipeline.png

A finished stage leaves OUT/stages/STAGE.json and is skipped on a re-run; an interrupted training
stage resumes from its checkpoint. A changed config redoes the first stage the change reaches and
everything after it (the line printed says which keys); `--from STAGE` redoes STAGE and after.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import sys
import time

from ..io.atomic import write_json
from .config import DEFAULT_CONFIG, CLIError, load_config, setup_threads

STAGES = ("direct", "cot", "labels", "prm", "eval-sft", "grpo", "eval-grpo", "report")

# The default task: 3-4 step problems (the verifier and GRPO sections' task). On the 2-3 step task the
# chain-of-thought model reaches 82% and self-consistency has no room; here it is at ~75% after 1000
# steps with pass@16 near 90%, and a direct-answer model at the same budget is far below it.
HARD_KNOBS = {"min_steps": 3, "max_steps": 4, "max_value": 9, "max_factor": 3, "value_cap": 50}

PIPELINE_DEFAULTS = {
    "paths": 8,                 # N of self-consistency and of the verifier rows
    "temperature": 0.7,         # sampling temperature at test time and for the verifier's labels
    "refine_rounds": 2,
    "label_problems": 1000,     # training problems sampled for the verifier's labels
    "label_samples": 8,         # solutions per problem
    "prm_steps": 200,
    "grpo_steps": 200,
    "grpo_lr": 3e-5,
    "grpo_prompts": 16,         # groups per rollout batch (G = 8 completions each)
    "grpo_eval_every": 100,
}

# --quick: the same stages on the 2-3 step task with short budgets, 200 test and 100 OOD problems; the
# numbers show the pipeline working, not the effects (the default mode measures those)
QUICK = {
    "task": {"n_train": 6000, "n_test": 200, "n_ood": 100},
    "train": {"steps": 600, "warmup": 30, "eval_every": 600, "eval_size": 100},
    "direct_steps": 200,
    "pipeline": {"paths": 4, "refine_rounds": 1, "label_problems": 200, "label_samples": 4, "prm_steps": 30,
                 "grpo_steps": 20, "grpo_prompts": 8, "grpo_eval_every": 20},
}

# Which stage a config key first reaches: a change there redoes that stage and the ones after it.
FIRST_STAGE_OF = {"seed": "direct", "task": "direct", "tokenizer": "direct", "model": "direct", "train": "direct",
                  "direct_steps": "direct", "label_problems": "labels", "label_samples": "labels",
                  "temperature": "labels", "prm_steps": "prm", "paths": "eval-sft", "refine_rounds": "eval-sft",
                  "grpo_steps": "grpo", "grpo_lr": "grpo", "grpo_prompts": "grpo", "grpo_eval_every": "grpo"}

# Outputs each stage owns inside OUT (removed when the stage is redone).
OUTPUTS = {"direct": ("direct",), "cot": ("cot",), "labels": ("labels.jsonl",), "prm": ("prm",), "eval-sft": (),
           "grpo": ("grpo",), "eval-grpo": (), "report": ("table.md", "results.json", "pipeline.png")}


# ------------------------------------------------------------------ config
def pipeline_config(config_path=None, overrides=(), quick: bool = False, seed: int | None = None) -> dict:
    """The resolved config: DEFAULT_CONFIG with the pipeline's task (and --quick's budgets), then the
    config file, then `--set section.key=value` (pipeline.* keys set the stage knobs above)."""
    base = copy.deepcopy(DEFAULT_CONFIG)
    base["task"]["knobs"] = dict(HARD_KNOBS)
    base["pipeline"] = dict(PIPELINE_DEFAULTS, direct_steps=base["train"]["steps"])
    if quick:
        base["task"]["knobs"] = dict(DEFAULT_CONFIG["task"]["knobs"])
        for section in ("task", "train", "pipeline"):
            base[section].update(QUICK[section])
        base["pipeline"]["direct_steps"] = QUICK["direct_steps"]
    cfg = load_config(config_path, overrides, base=base)
    if seed is not None:
        cfg["seed"] = seed
    p = cfg["pipeline"]
    for key in ("paths", "label_problems", "label_samples", "prm_steps", "grpo_steps", "grpo_prompts",
                "direct_steps", "grpo_eval_every"):
        if not isinstance(p[key], int) or p[key] < 1:
            raise CLIError(f"pipeline.{key} must be an integer >= 1, got {p[key]!r}")
    if not isinstance(p["refine_rounds"], int) or p["refine_rounds"] < 0:
        raise CLIError(f"pipeline.refine_rounds must be an integer >= 0, got {p['refine_rounds']!r}")
    if not (isinstance(p["temperature"], (int, float)) and p["temperature"] > 0):
        raise CLIError(f"pipeline.temperature must be > 0, got {p['temperature']!r}")
    if not (isinstance(p["grpo_lr"], (int, float)) and p["grpo_lr"] > 0):
        raise CLIError(f"pipeline.grpo_lr must be > 0, got {p['grpo_lr']!r}")
    return cfg


def run_config(cfg: dict) -> dict:
    """The config of the SFT runs (what `train` reads): the pipeline's own section left out."""
    return {k: v for k, v in cfg.items() if k != "pipeline"}


def first_changed_stage(old: dict, new: dict) -> tuple:
    """(the earliest stage a difference between two resolved configs reaches, the keys that differ)."""
    keys = [k for k in sorted(set(old) | set(new)) if k not in ("threads", "device", "pipeline")
            and old.get(k) != new.get(k)]
    old_p, new_p = old.get("pipeline", {}), new.get("pipeline", {})
    keys += [f"pipeline.{k}" for k in sorted(set(old_p) | set(new_p)) if old_p.get(k) != new_p.get(k)]
    if not keys:
        return None, []
    stages = [FIRST_STAGE_OF.get(k.split(".", 1)[-1] if k.startswith("pipeline.") else k, "direct") for k in keys]
    return min(stages, key=STAGES.index), keys


# ------------------------------------------------------------------ the stages
class Pipeline:
    """One seed's staged run in `out`: each stage a method, its record in OUT/stages/STAGE.json."""

    def __init__(self, cfg: dict, out: str, threads: int | None = None, log=print):
        self.cfg, self.out, self.threads, self.log = cfg, out, threads, log
        self.p = cfg["pipeline"]

    # paths and records
    def path(self, *parts) -> str:
        return os.path.join(self.out, *parts)

    def stage_file(self, stage: str) -> str:
        return self.path("stages", f"{stage}.json")

    def done(self, stage: str) -> bool:
        return os.path.exists(self.stage_file(stage))

    def record(self, stage: str) -> dict:
        with open(self.stage_file(stage)) as f:
            return json.load(f)

    def forget(self, stage: str) -> None:
        """Remove a stage's record and outputs, and those of every stage after it."""
        for s in STAGES[STAGES.index(stage):]:
            for name in (f"stages/{s}.json", *OUTPUTS[s]):
                target = self.path(name)
                if os.path.isdir(target):
                    shutil.rmtree(target)
                elif os.path.exists(target):
                    os.remove(target)

    def _command(self, argv: list) -> None:
        """Run one of the documented subcommands in this process (errors propagate as CLIError)."""
        import argparse
        from . import rl, verifier     # not the package's build_parser: cli/__init__ imports this module
        if self.threads:
            argv = [*argv, "--threads", str(self.threads)]
        parser = argparse.ArgumentParser(prog="tinygrad-reason")
        sub = parser.add_subparsers(dest="command", required=True)
        for command in (verifier, rl):
            command.add_parser(sub, None)
        args = parser.parse_args(argv)
        args.func(args)

    # the plan, and an ETA from it
    def estimate(self, stage: str) -> float:
        """Rough seconds of a stage on one core of the 2-core machine (the ETA scales these by the
        pace measured so far)."""
        c, p = self.cfg, self.p
        n_eval = c["task"]["n_test"] + c["task"]["n_ood"]
        batch = c["train"]["batch_size"] / 32
        return {"direct": 0.3 * batch * p["direct_steps"], "cot": 0.6 * batch * c["train"]["steps"],
                "labels": 0.02 * p["label_problems"] * p["label_samples"], "prm": 1.1 * p["prm_steps"],
                "eval-sft": 0.025 * n_eval * (4 + p["refine_rounds"] + 1.7 * p["paths"]),
                "grpo": 3.5 * p["grpo_steps"] * p["grpo_prompts"] / 16,
                "eval-grpo": 0.025 * n_eval * (1 + 1.7 * p["paths"]), "report": 1.0}[stage]

    def run(self, start: str | None = None) -> dict:
        os.makedirs(self.path("stages"), exist_ok=True)
        saved = self.path("pipeline.json")
        if os.path.exists(saved):
            with open(saved) as f:
                old = json.load(f)
            stage, keys = first_changed_stage(old, self.cfg)
            if stage is not None:
                self.log(f"config changed since the last run in {self.out} ({', '.join(keys)}): redoing from {stage}")
                start = stage if start is None else min(start, stage, key=STAGES.index)
        if start is not None:
            self.forget(start)
        write_json(saved, self.cfg)
        t0 = time.perf_counter()
        todo = [s for s in STAGES if not self.done(s) or s == "report"]
        planned = {s: self.estimate(s) for s in todo}
        spent = predicted = 0.0
        for i, stage in enumerate(STAGES, 1):
            if stage not in todo:
                self.log(f"[stage {i}/{len(STAGES)}] {stage}: cached ({self.stage_file(stage)})")
                continue
            self.log(f"[stage {i}/{len(STAGES)}] {stage}: starting (estimate {planned[stage]:.0f} s)")
            t = time.perf_counter()
            result = getattr(self, "stage_" + stage.replace("-", "_"))()
            seconds = time.perf_counter() - t
            write_json(self.stage_file(stage), {"stage": stage, "seconds": round(seconds, 1), **result})
            spent += seconds
            predicted += planned[stage]
            left = sum(planned[s] for s in todo[todo.index(stage) + 1:]) * spent / max(predicted, 1e-9)
            self.log(f"[stage {i}/{len(STAGES)}] {stage}: done in {seconds:.0f} s; pipeline "
                     f"{time.perf_counter() - t0:.0f} s so far, ETA {left:.0f} s")
        return self.record("report")

    def stage_direct(self) -> dict:
        from .runs import run_training
        cfg = run_config(self.cfg)
        cfg["train"] = dict(cfg["train"], steps=self.p["direct_steps"])
        r = run_training(cfg, self.path("direct"), "direct")
        return {k: r[k] for k in ("train_seconds", "steps", "parameters")}

    def stage_cot(self) -> dict:
        from .runs import run_training
        r = run_training(run_config(self.cfg), self.path("cot"), "cot")
        return {k: r[k] for k in ("train_seconds", "steps", "parameters")}

    def stage_labels(self) -> dict:
        p, seed = self.p, str(self.cfg["seed"])
        self._command(["verifier", "label", "--run", self.path("cot"), "--out", self.path("labels.jsonl"),
                       "--problems", str(p["label_problems"]), "--samples", str(p["label_samples"]),
                       "--temperature", str(p["temperature"]), "--seed", seed])
        from ..reasoning.verifier_data import load_labels
        meta, solutions = load_labels(self.path("labels.jsonl"))
        return {"solutions": len(solutions), "right": sum(s.correct for s in solutions),
                "train_seconds": meta["sample_seconds"]}

    def stage_prm(self) -> dict:
        self._command(["verifier", "train", "--run", self.path("cot"), "--labels", self.path("labels.jsonl"),
                       "--kind", "prm", "--steps", str(self.p["prm_steps"]), "--seed", str(self.cfg["seed"]),
                       "--out", self.path("prm")])
        with open(self.path("prm", "results.json")) as f:
            r = json.load(f)
        from .runs import load_verifier
        verifier, _ = load_verifier(self.path("prm"))
        return {"train_seconds": r["train_seconds"], "steps": r["steps"], "best_auroc": r["best_auroc"],
                "parameters": verifier.num_parameters()}

    def stage_grpo(self) -> dict:
        p = self.p
        self._command(["rl", "--run", self.path("cot"), "--out", self.path("grpo"), "--steps", str(p["grpo_steps"]),
                       "--lr", str(p["grpo_lr"]), "--min-lr", str(p["grpo_lr"]),
                       "--prompts-per-step", str(p["grpo_prompts"]), "--eval-every", str(p["grpo_eval_every"]),
                       "--seed", str(self.cfg["seed"]), "--max-completion-length",
                       str(self.cfg["train"]["max_new_tokens"])])
        with open(self.path("grpo", "results.json")) as f:
            r = json.load(f)
        return {"train_seconds": r["train_seconds"], "steps": r["steps"]}

    def stage_eval_sft(self) -> dict:
        from .runs import load_run, load_verifier
        _, tok, direct, splits = load_run(self.path("direct"))
        _, _, cot, _ = load_run(self.path("cot"), splits="none")
        prm, _ = load_verifier(self.path("prm"))
        out = {}
        for split in ("test", "ood"):
            records = splits[split]
            out[split] = {"direct": {"greedy": self._greedy(direct, tok, records, "direct")},
                          "cot": {"greedy": self._greedy(cot, tok, records, "cot"),
                                  "tool": self._greedy(cot, tok, records, "cot", tool=True),
                                  "refine": self._refine(cot, tok, records),
                                  **self._paths(cot, prm, tok, records)}}
            self.log(f"  eval-sft {split}: " + ", ".join(f"{m} {sum(r['right'])}/{len(records)}"
                                                           for model in out[split].values() for m, r in model.items()))
        return {"splits": out}

    def stage_eval_grpo(self) -> dict:
        from .runs import load_run, load_verifier
        _, tok, grpo, splits = load_run(self.path("grpo"))
        prm, _ = load_verifier(self.path("prm"))
        out = {}
        for split in ("test", "ood"):
            records = splits[split]
            out[split] = {"grpo": {"greedy": self._greedy(grpo, tok, records, "cot"),
                                   **self._paths(grpo, prm, tok, records)}}
            self.log(f"  eval-grpo {split}: " + ", ".join(f"{m} {sum(r['right'])}/{len(records)}"
                                                            for m, r in out[split]["grpo"].items()))
        return {"splits": out}

    def stage_report(self) -> dict:
        from .pipeline_report import build_report, write_report
        report = build_report(self.cfg, {s: self.record(s) for s in STAGES if s != "report"})
        files = write_report(report, self.out)
        return {"files": files, "rows": report["rows"]}

    # the evaluation methods, each with its per-problem marks (for paired tests) and its cost
    def _greedy(self, model, tok, records, fmt: str, tool: bool = False) -> dict:
        from ..generate.tools import CalculatorTool
        from ..grading.rewards import is_correct
        from ..train.evaluation import greedy_answers
        calc = CalculatorTool(tok) if tool else None
        t = time.perf_counter()
        answers, generated = greedy_answers(model, tok, records, fmt, self.cfg["train"]["max_new_tokens"],
                                            self.cfg["train"].get("eval_batch", 64), calc, self.cfg["seed"])
        return {"right": [bool(is_correct(a, r.answer)) for a, r in zip(answers, records)],
                "tokens": int(generated), "seconds": round(time.perf_counter() - t, 2)}

    def _refine(self, model, tok, records) -> dict:
        from ..generate import SamplingConfig
        from ..grading.rewards import is_correct
        from ..reasoning.refine import refine
        cfg = SamplingConfig(temperature=0.0, max_new_tokens=self.cfg["train"]["max_new_tokens"],
                             stop_ids=(tok.eot_id,), seed=self.cfg["seed"])
        t = time.perf_counter()
        r = refine(model, tok, records, self.p["refine_rounds"], cfg, resample_temperature=self.p["temperature"],
                   fmt="cot", rows_per_call=self.cfg["train"].get("eval_batch", 64))
        return {"right": [bool(is_correct(a, x.answer)) for a, x in zip(r["answers"], records)],
                "tokens": int(r["generated_tokens"]), "seconds": round(time.perf_counter() - t, 2)}

    def _paths(self, model, prm, tok, records) -> dict:
        """N sampled paths per problem, once: majority vote (sc@N), best-of-N by the PRM (its weakest
        step) and the PRM-weighted vote all choose among the same paths."""
        from ..generate import SamplingConfig
        from ..reasoning.verifiers import verifier_curve
        n = self.p["paths"]
        cfg = SamplingConfig(temperature=self.p["temperature"], max_new_tokens=self.cfg["train"]["max_new_tokens"],
                             stop_ids=(tok.eot_id,), seed=self.cfg["seed"])
        c = verifier_curve(model, tok, records, "cot", cfg, (n,), prm=prm, progress=False)
        sample = {"tokens": int(c["generated_tokens"]), "seconds": round(c["sample_seconds"], 2)}
        scored = {"tokens": sample["tokens"], "seconds": round(c["sample_seconds"] + c["score_seconds"], 2),
                  "scored_tokens": int(c["scored_tokens"])}
        return {"sc": {"right": c["right"]["majority"][n], **sample, "pass_at_n": int(c["pass"][n])},
                "prm-bon": {"right": c["right"]["prm-min"][n], **scored},
                "prm-vote": {"right": c["right"]["wvote-prm"][n], **scored}}


# ------------------------------------------------------------------ the command
def parse_seeds(text: str) -> list:
    try:
        seeds = [int(s) for s in str(text).split(",") if s.strip()]
    except ValueError:
        raise CLIError(f"--seeds: expected comma-separated integers like 0,1,2, got {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise CLIError(f"--seeds: give distinct seeds, got {text!r}")
    return seeds


def cmd_pipeline(args) -> None:
    if args.start is not None and args.start not in STAGES:
        raise CLIError(f"--from must be one of {', '.join(STAGES)}, got {args.start!r}")
    if args.threads is None:     # our own kernels default to one thread; the pipeline uses the machine
        args.threads = os.cpu_count() or 1
    setup_threads({"threads": args.threads})
    if args.device is not None and args.device != "cpu":
        from ..backend import check_device
        try:
            check_device(args.device)
        except (ValueError, RuntimeError) as e:
            raise CLIError(str(e)) from None
    seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    runs = [(args.seed, args.out)] if seeds is None else [(s, os.path.join(args.out, f"seed-{s}")) for s in seeds]
    for seed, out in runs:
        cfg = pipeline_config(args.config, args.set or (), args.quick, seed)
        if args.device is not None:
            cfg["device"] = args.device
        Pipeline(cfg, out, args.threads, log=lambda m: print(m, file=sys.stderr, flush=True)).run(args.start)
        with open(os.path.join(out, "table.md")) as f:
            print(f.read(), end="")
    if seeds is not None and len(seeds) > 1:
        from .pipeline_report import write_spread
        print(write_spread([out for _, out in runs], args.out), end="")


def add_parser(sub, common) -> None:
    import argparse
    p = sub.add_parser("pipeline", help="the staged table: base -> CoT -> self-consistency -> tool -> refinement "
                                        "-> verifier -> GRPO, every gain with its confidence",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="run directory (finished stages in it are skipped)")
    p.add_argument("--quick", action="store_true", help="short budgets, 200 test and 100 OOD problems: under 10 minutes on 2 cores")
    p.add_argument("--from", dest="start", metavar="STAGE", help=f"redo STAGE and every stage after it ({', '.join(STAGES)})")
    p.add_argument("--seeds", help="run once per seed in OUT/seed-S and write the spread (mean and range) of each row, "
                                   "e.g. 0,1,2")
    p.add_argument("--config", help="JSON or TOML config (sections task, tokenizer, model, train, pipeline)")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE",
                   help="override one value, e.g. --set pipeline.grpo_steps=300 or --set train.steps=800")
    p.add_argument("--seed", type=int, default=0, help="seed of splits, initialisation and sampling (default 0)")
    p.add_argument("--device", choices=["cpu", "cuda"], help="where the models run (cuda needs CuPy)")
    p.add_argument("--threads", type=int, help="BLAS and kernel threads (default: every core; run seeds side by "
                                               "side with 1 each)")
    p.set_defaults(func=cmd_pipeline)
