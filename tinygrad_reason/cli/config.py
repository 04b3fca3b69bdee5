"""The command line's config system: defaults, JSON / TOML files, `--set section.key=value`
overrides, each key checked against the section's defaults and the dataclass it feeds."""
from __future__ import annotations

import copy
import json
import os

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
def load_config(path: str | None, overrides=(), base: dict | None = None) -> dict:
    """`base` (default DEFAULT_CONFIG), then the file at `path`, then the overrides."""
    cfg = copy.deepcopy(DEFAULT_CONFIG if base is None else base)
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
        from ..nn import TransformerConfig
        return set(node) | {f.name for f in dataclasses.fields(TransformerConfig)} - {"vocab_size", "step_ids"}
    if section == "train":
        from ..train.sft import TrainConfig
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


def setup_threads(cfg: dict) -> None:
    n = int(cfg.get("threads") or 0)
    if n > 0:
        from ..fast.threads import set_num_threads
        set_num_threads(n)


def config_from_args(args) -> dict:
    cfg = load_config(args.config, args.set or ())
    if args.seed is not None:
        cfg["seed"] = args.seed
    if args.device is not None:
        cfg["device"] = args.device
    if getattr(args, "steps", None) is not None:
        cfg["train"]["steps"] = args.steps
    if getattr(args, "threads", None) is not None:
        cfg["threads"] = args.threads
    setup_threads(cfg)
    from ..backend import check_device
    try:
        check_device(cfg["device"])
    except (ValueError, RuntimeError) as e:
        raise CLIError(str(e)) from None
    return cfg
