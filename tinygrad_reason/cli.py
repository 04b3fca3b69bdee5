"""The `tinygrad-reason` command line: train, eval, sample, compare.

    tinygrad-reason train --format cot --out runs/cot                  # the built-in arithmetic task
    tinygrad-reason train --config my.toml --set train.steps=500 --out runs/x
    tinygrad-reason eval --run runs/cot --split ood
    tinygrad-reason eval --run runs/cot --methods greedy,sc@8,tool,refine@2 --n 100
    tinygrad-reason eval --run runs/cot --curve 1,2,4,8,16,32 --n 100  # self-consistency accuracy vs N
    tinygrad-reason sample --run runs/cot --question "Ann has 5 apples ..."
    tinygrad-reason compare --out runs/compare                         # direct vs chain of thought

A run directory holds config.json (the resolved config), tokenizer.json, checkpoint/, metrics.jsonl,
curves.png (with matplotlib) and results.json. Configs are JSON or TOML files with the sections
task, tokenizer, model, train (see DEFAULT_CONFIG); `--set section.key=value` overrides one value.
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time

DEFAULT_CONFIG = {
    "seed": 0,
    "device": "cpu",
    "threads": 0,                  # BLAS and kernel threads (0: leave the library default)
    # 2-3 step word problems with single-digit inputs, multipliers up to 3 and values up to 50:
    # each step is easy arithmetic, the chain is not (see the README's table)
    "task": {"name": "arithmetic", "n_train": 10000, "n_test": 400, "n_ood": 400,
             "knobs": {"min_steps": 2, "max_steps": 3, "max_value": 9, "max_factor": 3, "value_cap": 50}},
    "tokenizer": {"vocab_size": 2000},
    "model": {"context_length": 256, "d_model": 128, "n_layers": 4, "n_heads": 4, "positions": "learned",
              "norm": "layernorm", "mlp": "gelu", "bias": True, "dropout": 0.0},
    "train": {"steps": 1000, "batch_size": 32, "lr": 3e-3, "min_lr": 3e-4, "warmup": 50, "eval_every": 250,
              "eval_size": 200, "max_new_tokens": 160, "format": "cot"},
}


class CLIError(Exception):
    """A bad option, config or run directory: printed as one line, no traceback."""


# ------------------------------------------------------------------ configs
def load_config(path: str | None, overrides=()) -> dict:
    cfg = copy.deepcopy(DEFAULT_CONFIG)
    if path:
        if not os.path.exists(path):
            raise CLIError(f"config file {path} does not exist")
        try:
            if path.endswith(".toml"):
                try:
                    import tomllib
                except ImportError:   # Python 3.10
                    raise CLIError("TOML configs need Python 3.11+ (tomllib); use a JSON config") from None
                with open(path, "rb") as f:
                    user = tomllib.load(f)
            else:
                with open(path) as f:
                    user = json.load(f)
        except (ValueError, OSError) as e:
            raise CLIError(f"config file {path}: {e}") from None
        _merge(cfg, user, path)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise CLIError(f"--set {item!r}: expected section.key=value")
        _set(cfg, key.strip(), _parse_value(raw.strip()))
    return cfg


def _known(section: str, node: dict) -> set:
    """Keys a config section accepts: its defaults plus the fields of the dataclass it feeds."""
    import dataclasses
    if section == "model":
        from .nn import TransformerConfig
        return set(node) | {f.name for f in dataclasses.fields(TransformerConfig)} - {"vocab_size"}
    if section == "train":
        from .reasoning.training import TrainConfig
        return set(node) | {f.name for f in dataclasses.fields(TrainConfig)} - {"checkpoint_dir", "log_path",
                                                                                  "plot_path", "seed"}
    return set(node)


def _merge(base: dict, user: dict, where: str, prefix: str = "") -> None:
    for k, v in user.items():
        name = f"{prefix}{k}"
        known = _known(prefix.rstrip("."), base)
        if k not in known and prefix != "task.knobs.":   # task knobs are the task generator's own
            raise CLIError(f"{where}: unknown config key {name!r}; known: {sorted(known)}")
        if isinstance(v, dict) and isinstance(base.get(k), dict) and name != "task.knobs":
            _merge(base[k], v, where, name + ".")   # task.knobs given in a file replace the defaults whole
        else:
            base[k] = v


def _parse_value(raw: str):
    try:
        return json.loads(raw)
    except ValueError:
        return raw           # a bare string such as cot


def _set(cfg: dict, dotted: str, value) -> None:
    parts = dotted.split(".")
    node = cfg
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            raise CLIError(f"--set {dotted}: {p!r} is not a config section")
        node = node[p]
    known = _known(".".join(parts[:-1]), node)
    if parts[-1] not in known and parts[:-1] != ["task", "knobs"]:
        raise CLIError(f"--set {dotted}: unknown key {parts[-1]!r}; known: {sorted(known)}")
    node[parts[-1]] = value


# ------------------------------------------------------------------ building a run
def _setup_threads(cfg: dict) -> None:
    n = int(cfg.get("threads") or 0)
    if n > 0:
        from .backend import set_num_threads
        set_num_threads(n)


def build_splits(cfg: dict, with_train: bool = True) -> dict:
    """The task's splits. Test and OOD are drawn before train (train skips their problems), so
    with_train=False gives the same test and OOD problems without generating the train split
    (~10K problems, ~4 s of an eval's start with the default task)."""
    from .data import make_splits
    t = cfg["task"]
    n_train = t["n_train"] if with_train else 0
    try:
        return make_splits(t["name"], n_train, t["n_test"], t["n_ood"], seed=cfg["seed"], **t.get("knobs", {}))
    except (TypeError, ValueError, KeyError) as e:
        raise CLIError(f"task config {t}: {e}") from None


def build_tokenizer(cfg: dict, train_records):
    from .tokenizer import Tokenizer
    texts = [" ".join([r.question, *r.steps, str(r.answer)]) for r in train_records[:5000]]
    try:
        return Tokenizer.train(texts, cfg["tokenizer"]["vocab_size"])
    except (TypeError, ValueError) as e:
        raise CLIError(f"tokenizer config: {e}") from None


def build_model(cfg: dict, vocab_size: int):
    from .nn import Transformer, TransformerConfig
    try:
        model_cfg = TransformerConfig(vocab_size=vocab_size, **cfg["model"])
    except (TypeError, ValueError) as e:
        raise CLIError(f"model config: {e}") from None
    return Transformer(model_cfg).to(cfg["device"])


def _train_config(cfg: dict, out: str):
    from .reasoning.training import TrainConfig
    t = {k: v for k, v in cfg["train"].items() if k != "format"}
    try:
        return TrainConfig(**t, seed=cfg["seed"], checkpoint_dir=os.path.join(out, "checkpoint"),
                           log_path=os.path.join(out, "metrics.jsonl"), plot_path=os.path.join(out, "curves.png"))
    except (TypeError, ValueError) as e:
        raise CLIError(f"train config: {e}") from None


def run_training(cfg: dict, out: str, fmt: str | None = None) -> dict:
    """Train one format in run directory `out` (resuming if a checkpoint is there); returns results."""
    import tinygrad_reason as tg
    from .data.formats import FORMATS
    from .reasoning.training import train
    fmt = fmt or cfg["train"]["format"]
    if fmt not in FORMATS:
        raise CLIError(f"format must be one of {FORMATS}, got {fmt!r}")
    cfg = copy.deepcopy(cfg)
    cfg["train"]["format"] = fmt
    train_cfg = _train_config(cfg, out)      # a bad train config fails before anything is written
    old_cfg = os.path.join(out, "config.json")
    if os.path.exists(os.path.join(out, "checkpoint", "checkpoint.json")) and os.path.exists(old_cfg):
        with open(old_cfg) as f:
            old = json.load(f)
        changed = [k for k in ("seed", "task", "tokenizer", "model") if old.get(k) != cfg.get(k)]
        if changed:   # resuming must not overwrite a run's config.json with one its checkpoint does not fit
            raise CLIError(f"run directory {out} holds a checkpoint trained with a different "
                           f"{'/'.join(changed)} config; resume with the same one or use another --out")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    tg.manual_seed(cfg["seed"])
    splits = build_splits(cfg)
    tok = build_tokenizer(cfg, splits["train"])
    tok.save(os.path.join(out, "tokenizer.json"))
    model = build_model(cfg, tok.vocab_size)
    t0 = time.perf_counter()
    result = train(model, tok, splits["train"], splits["test"], fmt, train_cfg)
    seconds = time.perf_counter() - t0
    results = {"format": fmt, "train_seconds": round(seconds, 1), "steps": result["steps_done"],
               "parameters": model.num_parameters(), "history": result["history"]}
    for split in ("test", "ood"):
        results[split] = evaluate_split(model, tok, splits[split], fmt, cfg)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    return results


def evaluate_split(model, tok, records, fmt: str, cfg: dict) -> dict:
    from .reasoning.training import evaluate, wilson_interval
    r = evaluate(model, tok, records, fmt, cfg["train"].get("eval_batch", 64), cfg["train"]["max_new_tokens"])
    lo, hi = wilson_interval(r["correct"], r["n"])
    return {**r, "ci95": [round(lo, 4), round(hi, 4)]}


def load_run(run: str, splits: str = "eval"):
    """(config, tokenizer, model, splits) of a finished or interrupted run directory. splits: "all",
    "eval" (test and OOD only; train comes back empty) or "none" (None)."""
    from .checkpoint import load_checkpoint
    from .tokenizer import Tokenizer
    if splits not in ("all", "eval", "none"):
        raise ValueError(f"load_run: splits must be 'all', 'eval' or 'none', got {splits!r}")
    for name in ("config.json", "tokenizer.json", os.path.join("checkpoint", "checkpoint.json")):
        if not os.path.exists(os.path.join(run, name)):
            raise CLIError(f"run directory {run}: {name} is missing (train first: tinygrad-reason train --out {run})")
    with open(os.path.join(run, "config.json")) as f:
        cfg = json.load(f)
    tok = Tokenizer.load(os.path.join(run, "tokenizer.json"))
    model = build_model(cfg, tok.vocab_size)
    load_checkpoint(os.path.join(run, "checkpoint"), model, restore_rng=False)
    model.eval()
    return cfg, tok, model, None if splits == "none" else build_splits(cfg, with_train=splits == "all")


# ------------------------------------------------------------------ the comparison table
def two_proportion_p(c1: int, n1: int, c2: int, n2: int) -> float:
    """Two-sided p-value of a two-proportion z-test (pooled)."""
    if not n1 or not n2:
        return float("nan")
    p = (c1 + c2) / (n1 + n2)
    se = math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0
    z = abs(c1 / n1 - c2 / n2) / se
    return math.erfc(z / math.sqrt(2))


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
    with open(os.path.join(out, "table.md"), "w") as f:
        f.write(table)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    return {"results": results, "table": table}


# ------------------------------------------------------------------ commands
def cmd_train(args) -> None:
    cfg = _config_from(args)
    r = run_training(cfg, args.out, args.format)
    print(json.dumps({k: r[k] for k in ("format", "train_seconds", "steps", "parameters")}))
    for split in ("test", "ood"):
        s = r[split]
        print(f"{split}: accuracy {s['accuracy']:.1%} ({s['correct']}/{s['n']}, 95% CI {s['ci95']})")


def cmd_eval(args) -> None:
    specs = ns = None
    if args.methods is not None and args.curve is not None:
        raise CLIError("--curve and --methods are separate evaluations; give one of them")
    if args.methods is not None:
        from .reasoning.methods import parse_methods
        try:
            specs = parse_methods(args.methods)
        except ValueError as e:
            raise CLIError(f"--methods: {e}") from None
    if args.curve is not None:
        ns = parse_curve(args.curve)
    if args.temperature is not None and not args.temperature > 0:
        raise CLIError(f"--temperature must be > 0, got {args.temperature}")
    if args.threads is not None:
        _setup_threads({"threads": args.threads})
    splits_known = ("ood", "test", "train")           # make_splits' keys
    if args.split not in splits_known:
        raise CLIError(f"--split must be one of {list(splits_known)}, got {args.split!r}")
    cfg, tok, model, splits = load_run(args.run, splits="all" if args.split == "train" else "eval")
    records = splits[args.split][:args.n] if args.n else splits[args.split]
    if specs is not None:
        _eval_methods(args, specs, cfg, tok, model, records)
        return
    if ns is not None:
        _eval_curve(args, ns, cfg, tok, model, records)
        return
    result = evaluate_split(model, tok, records, cfg["train"]["format"], cfg)
    result.update(split=args.split, method="greedy", run=args.run)
    out = args.out or os.path.join(args.run, f"eval-{args.split}.json")
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"| method | split | accuracy | n | 95% CI | tokens | seconds |\n| --- | --- | --- | --- | --- | --- | --- |\n"
          f"| greedy | {args.split} | {result['accuracy']:.1%} | {result['n']} | "
          f"[{result['ci95'][0]:.1%}, {result['ci95'][1]:.1%}] | {result['generated_tokens']} | {result['seconds']:.1f} |")


def parse_curve(text: str) -> list:
    """'1,2,4,8' -> [1, 2, 4, 8] (sorted); CLIError (one line) for anything but distinct integers >= 1."""
    from .reasoning.self_consistency import SEED_STRIDE
    ns = []
    for raw in str(text).split(","):
        item = raw.strip()
        try:
            n = int(item)
        except ValueError:
            raise CLIError(f"--curve: {item!r} is not an integer; expected paths per problem like 1,2,4,8,16,32"
                           ) from None
        if n < 1:
            raise CLIError(f"--curve: the number of paths must be >= 1, got {n}")
        if n > SEED_STRIDE:
            raise CLIError(f"--curve: at most {SEED_STRIDE} paths per problem, got {n}")
        if n in ns:
            raise CLIError(f"--curve: {n} is listed twice")
        ns.append(n)
    return sorted(ns)


def _eval_settings(args, cfg):
    from .reasoning.methods import EvalSettings
    return EvalSettings(max_new_tokens=cfg["train"]["max_new_tokens"], seed=args.seed or 0,
                        temperature=0.7 if args.temperature is None else args.temperature,
                        rows_per_call=cfg["train"].get("eval_batch", 64))


def _eval_methods(args, specs, cfg, tok, model, records) -> None:
    """eval --methods: every method on the same problems; JSON + markdown table written and printed."""
    from .reasoning.methods import methods_table, run_method
    settings = _eval_settings(args, cfg)
    fmt = cfg["train"]["format"]
    if fmt != "cot" and any(s.kind == "refine" for s in specs):
        raise CLIError("--methods: refine@K needs a chain-of-thought run (train --format cot)")
    rows = [run_method(s, model, tok, records, fmt, settings) for s in specs]
    table = methods_table(rows, args.split)
    out = args.out or os.path.join(args.run, f"eval-methods-{args.split}.json")
    with open(out, "w") as f:
        json.dump({"run": args.run, "split": args.split, "format": fmt, "n": len(records),
                   "settings": vars(settings), "results": rows}, f, indent=2)
    with open(os.path.splitext(out)[0] + ".md", "w") as f:
        f.write(table)
    print(table, end="")


def _eval_curve(args, ns, cfg, tok, model, records) -> None:
    """eval --curve: self-consistency accuracy at every N from ONE set of max(N) sampled paths per
    problem (SC@n votes over the first n; the same row seeds as --methods sc@n, so its sc@n is this
    curve's point n). JSON, markdown table (.md) and, with matplotlib, a PNG (.png) beside it."""
    from .reasoning.sampling import SamplingConfig
    from .reasoning.self_consistency import accuracy_vs_n, curve_table, plot_curve
    settings = _eval_settings(args, cfg)
    fmt = cfg["train"]["format"]
    scfg = SamplingConfig(temperature=settings.temperature, max_new_tokens=settings.max_new_tokens,
                          stop_ids=(tok.eot_id,), seed=settings.seed)
    curve = accuracy_vs_n(model, tok, records, fmt, scfg, ns=ns, weighting=settings.weighting,
                          rows_per_call=settings.rows_per_call)
    table = curve_table(curve)
    out = args.out or os.path.join(args.run, f"curve-{args.split}.json")
    base = os.path.splitext(out)[0]
    with open(out, "w") as f:
        json.dump({"run": args.run, "split": args.split, "format": fmt, "n": len(records),
                   "settings": vars(settings), **curve}, f, indent=2)
    with open(base + ".md", "w") as f:
        f.write(table)
    print(table, end="")
    print(f"\n{len(records)} problems x {ns[-1]} paths: {curve['generated_tokens']} tokens generated, "
          f"{curve['seconds']:.1f} s; wrote {out} and {base}.md")
    if plot_curve(curve, base + ".png"):
        print(f"wrote {base}.png")
    else:
        print("no PNG: matplotlib is not installed (pip install matplotlib)")


def cmd_sample(args) -> None:
    from .data.formats import parse_completion
    from .data.records import Record
    from .reasoning.sampling import SamplingConfig, generate_stream
    cfg, tok, model, _ = load_run(args.run, splits="none")
    fmt = cfg["train"]["format"]
    from .data.formats import prompt_ids
    prompt = prompt_ids(Record(question=args.question, steps=[], answer=""), tok, fmt)
    scfg = SamplingConfig(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                          max_new_tokens=args.max_new_tokens, stop_ids=(tok.eot_id,), seed=args.seed)
    out = []
    for t in generate_stream(model, prompt, scfg):
        out.append(t)
        if not tok.is_special(t):
            print(tok.decode([t]), end="", flush=True)
        elif t == tok.step_id:
            print(flush=True)
    print(f"\nanswer: {parse_completion(out, tok, fmt)}")


def cmd_compare(args) -> None:
    cfg = _config_from(args)
    print(run_compare(cfg, args.out)["table"])


def _config_from(args) -> dict:
    cfg = load_config(args.config, args.set or ())
    if args.seed is not None:
        cfg["seed"] = args.seed
    if args.device is not None:
        cfg["device"] = args.device
    if getattr(args, "steps", None) is not None:
        cfg["train"]["steps"] = args.steps
    if getattr(args, "threads", None) is not None:
        cfg["threads"] = args.threads
    _setup_threads(cfg)
    from .backend import check_device
    try:
        check_device(cfg["device"])
    except (ValueError, RuntimeError) as e:
        raise CLIError(str(e)) from None
    return cfg


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

    p = sub.add_parser("train", help="train a model on the task in one format",
                       description="Train on the configured task; resumes if OUT holds a checkpoint.")
    common(p)
    p.add_argument("--format", choices=["direct", "cot"], help="direct answers or chain of thought")
    p.add_argument("--out", required=True, help="run directory (created; a checkpoint there is resumed)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a trained run on a split (greedy, or --methods: "
                                    "self-consistency, calculator tool, refinement; exact match)")
    p.add_argument("--run", required=True, help="run directory written by train")
    p.add_argument("--split", default="test", help="test, ood or train (default test)")
    p.add_argument("--n", type=int, default=0, help="evaluate only the first N problems (0: all)")
    p.add_argument("--out", help="JSON result file (default RUN/eval-SPLIT.json; with --methods "
                                 "RUN/eval-methods-SPLIT.json and a markdown table beside it, .md; with "
                                 "--curve RUN/curve-SPLIT.json)")
    p.add_argument("--methods", help="comma-separated evaluation methods: greedy, tool (calculator), sc@N "
                                     "(self-consistency over N samples), refine@K (K refinement rounds); "
                                     "e.g. greedy,sc@8,tool,refine@2 (default: greedy only)")
    p.add_argument("--curve", metavar="N1,N2,...",
                   help="self-consistency accuracy vs number of sampled paths, e.g. 1,2,4,8,16,32: max(N) "
                        "paths sampled once per problem, SC@n votes over the first n; writes "
                        "RUN/curve-SPLIT.json (or --out), a markdown table (.md) and, with matplotlib, a "
                        "PNG (.png) beside it; not together with --methods")
    p.add_argument("--temperature", type=float, default=None,
                   help="sampling temperature of sc@N, --curve and refine's resampling (default 0.7)")
    p.add_argument("--seed", type=int, default=None, help="sampling seed of --methods and --curve (default 0)")
    p.add_argument("--threads", type=int, help="BLAS and kernel threads (1 is fastest on a busy machine)")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("sample", help="answer one question with a trained run, streaming tokens")
    p.add_argument("--run", required=True, help="run directory written by train")
    p.add_argument("--question", required=True, help="the problem text")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens")
    p.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass in (0, 1]")
    p.add_argument("--max-new-tokens", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("compare", help="train direct and chain-of-thought models and tabulate accuracy",
                       description="Train both formats with the same config; writes OUT/table.md and results.json.")
    common(p)
    p.add_argument("--out", required=True, help="directory for both runs and the table")
    p.set_defaults(func=cmd_compare)
    return ap


def main(argv=None) -> int:
    from .checkpoint import CheckpointError
    args = build_parser().parse_args(argv)
    try:
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


if __name__ == "__main__":
    sys.exit(main())
