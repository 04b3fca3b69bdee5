"""Building a run from a config (splits, tokenizer, model, train config), training it in a run
directory, and loading a finished or interrupted run back."""
from __future__ import annotations

import copy
import json
import os
import time

from ..io.atomic import write_json
from .config import CLIError

VERIFIER_FILE = "verifier.json"     # in a verifier directory (cli/verifier.py)

def build_splits(cfg: dict, with_train: bool = True) -> dict:
    """The task's splits. Test and OOD are drawn before train (train skips their problems), so
    with_train=False gives the same test and OOD problems without generating the train split
    (~10K problems, ~4 s of an eval's start with the default task)."""
    from ..data import make_splits
    t = cfg["task"]
    n_train = t["n_train"] if with_train else 0
    try:
        return make_splits(t["name"], n_train, t["n_test"], t["n_ood"], seed=cfg["seed"], **t.get("knobs", {}))
    except (TypeError, ValueError, KeyError) as e:
        raise CLIError(f"task config {t}: {e}") from None


FRESH_SEED_OFFSET = 1_000_003     # the fresh split's problems are drawn with seed + this


def fresh_split(cfg: dict, n: int, splits: dict) -> list:
    """n problems of the run's task that are in none of its splits (train, test, OOD): drawn with
    another seed, every problem equal to one of the run's (same question or same dedup key) dropped.
    A held-out set that no choice made while training or tuning has seen."""
    from ..data import make_splits
    from ..data.splits import dedup_keys
    seen = {k for records in splits.values() for r in records for k in dedup_keys(r)}
    t = cfg["task"]
    try:
        drawn = make_splits(t["name"], 0, 2 * n, 0, seed=cfg["seed"] + FRESH_SEED_OFFSET, **t.get("knobs", {}))["test"]
    except (TypeError, ValueError, KeyError) as e:
        raise CLIError(f"fresh split of task {t}: {e}") from None
    fresh = [r for r in drawn if not any(k in seen for k in dedup_keys(r))][:n]
    if len(fresh) < n:
        raise CLIError(f"fresh split: only {len(fresh)} of {n} problems are new to the run; ask for fewer (--n)")
    return fresh


def build_tokenizer(cfg: dict, train_records):
    from ..tokenizer import Tokenizer
    texts = [" ".join([r.question, *r.steps, str(r.answer)]) for r in train_records[:5000]]
    try:
        return Tokenizer.train(texts, cfg["tokenizer"]["vocab_size"])
    except (TypeError, ValueError) as e:
        raise CLIError(f"tokenizer config: {e}") from None


def build_model(cfg: dict, tok):
    """The run's Transformer for tokenizer `tok` (step attention reads its special ids)."""
    from ..nn import Transformer, TransformerConfig
    from ..nn.step_attention import step_ids_from_tokenizer
    extra = {"step_ids": step_ids_from_tokenizer(tok)} if cfg["model"].get("step_attention", "none") != "none" else {}
    try:
        model_cfg = TransformerConfig(vocab_size=tok.vocab_size, **cfg["model"], **extra)
    except (TypeError, ValueError) as e:
        raise CLIError(f"model config: {e}") from None
    return Transformer(model_cfg).to(cfg["device"])


def train_config(cfg: dict, out: str):
    from ..train.sft import TrainConfig
    t = {k: v for k, v in cfg["train"].items() if k != "format"}
    try:
        return TrainConfig(**t, seed=cfg["seed"], checkpoint_dir=os.path.join(out, "checkpoint"),
                           log_path=os.path.join(out, "metrics.jsonl"), plot_path=os.path.join(out, "curves.png"))
    except (TypeError, ValueError) as e:
        raise CLIError(f"train config: {e}") from None


def run_training(cfg: dict, out: str, fmt: str | None = None) -> dict:
    """Train one format in run directory `out` (resuming if a checkpoint is there); returns results."""
    import tinygrad_reason as tg
    from ..data.formats import FORMATS
    from ..train.sft import train
    fmt = fmt or cfg["train"]["format"]
    if fmt not in FORMATS:
        raise CLIError(f"format must be one of {FORMATS}, got {fmt!r}")
    cfg = copy.deepcopy(cfg)
    cfg["train"]["format"] = fmt
    train_cfg = train_config(cfg, out)      # a bad train config fails before anything is written
    old_cfg = os.path.join(out, "config.json")
    if os.path.exists(os.path.join(out, "checkpoint", "checkpoint.json")) and os.path.exists(old_cfg):
        with open(old_cfg) as f:
            old = json.load(f)
        changed = [k for k in ("seed", "task", "tokenizer", "model") if old.get(k) != cfg.get(k)]
        if changed:   # resuming must not overwrite a run's config.json with one its checkpoint does not fit
            raise CLIError(f"run directory {out} holds a checkpoint trained with a different "
                           f"{'/'.join(changed)} config; resume with the same one or use another --out")
    os.makedirs(out, exist_ok=True)
    write_json(os.path.join(out, "config.json"), cfg)
    tg.manual_seed(cfg["seed"])
    splits = build_splits(cfg)
    tok = build_tokenizer(cfg, splits["train"])
    tok.save(os.path.join(out, "tokenizer.json"))
    model = build_model(cfg, tok)
    t0 = time.perf_counter()
    result = train(model, tok, splits["train"], splits["test"], fmt, train_cfg)
    seconds = time.perf_counter() - t0
    results = {"format": fmt, "train_seconds": round(seconds, 1), "steps": result["steps_done"],
               "parameters": model.num_parameters(), "history": result["history"]}
    for split in ("test", "ood"):
        results[split] = evaluate_split(model, tok, splits[split], fmt, cfg)
    write_json(os.path.join(out, "results.json"), results)
    return results


def evaluate_split(model, tok, records, fmt: str, cfg: dict) -> dict:
    from ..train.evaluation import evaluate
    from ..train.stats import wilson_interval
    r = evaluate(model, tok, records, fmt, cfg["train"].get("eval_batch", 64), cfg["train"]["max_new_tokens"])
    lo, hi = wilson_interval(r["correct"], r["n"])
    return {**r, "ci95": [round(lo, 4), round(hi, 4)]}


def load_run(run: str, splits: str = "eval"):
    """(config, tokenizer, model, splits) of a finished or interrupted run directory. splits: "all",
    "eval" (test and OOD only; train comes back empty) or "none" (None)."""
    from ..io.checkpoint import load_checkpoint
    from ..tokenizer import Tokenizer
    if splits not in ("all", "eval", "none"):
        raise ValueError(f"load_run: splits must be 'all', 'eval' or 'none', got {splits!r}")
    for name in ("config.json", "tokenizer.json", os.path.join("checkpoint", "checkpoint.json")):
        if not os.path.exists(os.path.join(run, name)):
            raise CLIError(f"run directory {run}: {name} is missing (train first: tinygrad-reason train --out {run})")
    with open(os.path.join(run, "config.json")) as f:
        cfg = json.load(f)
    tok = Tokenizer.load(os.path.join(run, "tokenizer.json"))
    model = build_model(cfg, tok)
    load_checkpoint(os.path.join(run, "checkpoint"), model, restore_rng=False)
    model.eval()
    return cfg, tok, model, None if splits == "none" else build_splits(cfg, with_train=splits == "all")


def load_verifier(directory: str, expect_run: str | None = None):
    """(nn.Verifier, its verifier.json) of a trained verifier directory."""
    from ..io.checkpoint import load_checkpoint
    from ..nn import Verifier
    from ..tokenizer import Tokenizer
    path = os.path.join(directory, VERIFIER_FILE)
    if not os.path.exists(path) or not os.path.exists(os.path.join(directory, "checkpoint", "checkpoint.json")):
        raise CLIError(f"verifier directory {directory}: {VERIFIER_FILE} or checkpoint/ is missing "
                       f"(train one: tinygrad-reason verifier train --out {directory})")
    with open(path) as f:
        info = json.load(f)
    run = info["run"]
    if expect_run is not None and os.path.abspath(expect_run) != run:
        print(f"note: verifier {directory} was trained on samples of {run}, not {os.path.abspath(expect_run)}")
    with open(os.path.join(run, "config.json")) as f:
        cfg = json.load(f)
    tok = Tokenizer.load(os.path.join(run, "tokenizer.json"))
    vc = info["config"]
    verifier = Verifier(build_model(cfg, tok), vc["head_hidden"] or None, frozen=vc["trunk"] == "frozen")
    load_checkpoint(os.path.join(directory, "checkpoint"), verifier, restore_rng=False)
    verifier.eval()
    return verifier, info
