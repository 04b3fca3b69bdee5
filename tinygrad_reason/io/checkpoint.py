"""Training checkpoints that survive a crash at any moment, and resume bit-identically.

A checkpoint directory holds one checkpoint:
  model-{step:08d}.safetensors      the weights under model.state_dict() names (torch / HF readable)
  optimizer-{step:08d}.safetensors  the optimizer's arrays, named state.{param index}.{name}
  checkpoint.json                   the commit point: format version, step, config, file names,
                                    optimizer hyperparameters and scalar state, RNG state, `extra`

The RNG state saved is the CPU generator's (backend.rng_state("cpu")); CuPy's generator state
cannot be read back, so a CUDA run resumes with the right weights and moments but fresh dropout draws.

Save protocol: (1) write both data files under new names (temp file + fsync + os.replace each);
(2) replace checkpoint.json atomically (temp + fsync + os.replace, then fsync the directory);
(3) only then delete the data files the new json no longer names. Until (2) the old json names
the old, untouched files; after it the new json names the new, complete files. A process killed
anywhere leaves the previous checkpoint or the new one, never a mix.
"""
from __future__ import annotations

import json
import os
import re

import numpy as np

from .. import backend
from .atomic import atomic_write
from .safetensors import SafetensorsError, load_file, save_file

FORMAT = "tinygrad_reason.checkpoint"
VERSION = 1
JSON_NAME = "checkpoint.json"
_DATA_FILE = re.compile(r"^(model|optimizer)-\d{8,}(-r\d+)?\.safetensors$")
_TEMP_FILE = re.compile(r"^\.((model|optimizer)-\d{8,}(-r\d+)?\.safetensors|checkpoint\.json)\..*\.tmp$")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded (missing, corrupt, or not matching the model)."""


def _jsonable(value):
    """Numbers and containers as plain JSON types (numpy scalars -> Python, tuples -> lists)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"checkpoint: cannot store {type(value).__name__} {value!r} in checkpoint.json")


def _untuple(value):
    """Lists back to tuples in optimizer hyperparameters (AdamW's betas was a tuple)."""
    return tuple(_untuple(v) for v in value) if isinstance(value, list) else value


def _read_json(directory) -> dict:
    path = os.path.join(directory, JSON_NAME)
    if not os.path.isdir(directory):
        raise CheckpointError(f"checkpoint directory {os.fspath(directory)!r} does not exist")
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint in {os.fspath(directory)!r}: {JSON_NAME} is missing")
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path}: invalid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} file")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"{path}: format version {meta.get('version')!r} is not supported "
                              f"(this library reads version {VERSION})")
    return meta


def _referenced(directory) -> set:
    try:
        meta = _read_json(directory)
    except CheckpointError:
        return set()
    return {meta.get("model_file"), meta.get("optimizer_file")} - {None}


def _fresh_name(kind: str, step: int, taken: set) -> str:
    """`{kind}-{step:08d}.safetensors`, or with a -rN suffix when the live checkpoint already uses
    that name (saving the same step twice must not overwrite a file the live json points to)."""
    name, n = f"{kind}-{step:08d}.safetensors", 1
    while name in taken:
        name, n = f"{kind}-{step:08d}-r{n}.safetensors", n + 1
    return name


def _split_optimizer_state(optimizer):
    sd = optimizer.state_dict()
    arrays, scalars = {}, {}
    for i, s in sd["state"].items():
        for k, v in s.items():
            if hasattr(v, "shape") and not isinstance(v, np.generic):
                arrays[f"state.{int(i)}.{k}"] = v
            else:
                scalars.setdefault(str(int(i)), {})[k] = _jsonable(v)
    return arrays, scalars, _jsonable(sd["param_groups"])


def save_checkpoint(directory, model, optimizer=None, step: int = 0, extra: dict | None = None) -> str:
    """Save model (+ optimizer, RNG state, `extra`) to `directory` atomically; returns the json path."""
    directory = os.fspath(directory)
    step = int(step)
    if step < 0:
        raise ValueError(f"save_checkpoint: step must be >= 0, got {step}")
    os.makedirs(directory, exist_ok=True)
    taken = _referenced(directory)
    cfg = getattr(model, "cfg", None)
    meta = {
        "format": FORMAT, "version": VERSION, "step": step,
        "model_class": type(model).__name__,
        "config": _jsonable(cfg.to_dict()) if cfg is not None and hasattr(cfg, "to_dict") else None,
        "model_file": _fresh_name("model", step, taken),
        "optimizer_file": None, "optimizer": None,
        "rng": {"cpu": _jsonable(backend.rng_state("cpu"))},
        "extra": _jsonable(extra if extra is not None else {}),
    }
    opt_arrays = None
    if optimizer is not None:
        opt_arrays, scalars, groups = _split_optimizer_state(optimizer)
        meta["optimizer_file"] = _fresh_name("optimizer", step, taken)
        meta["optimizer"] = {"class": type(optimizer).__name__, "param_groups": groups,
                             "scalar_state": scalars, "arrays": list(opt_arrays)}
    file_meta = {"format": "pt", "step": str(step)}
    # (1) the data files, under names the live checkpoint does not use
    save_file(dict(model.state_dict()), os.path.join(directory, meta["model_file"]), file_meta)
    if opt_arrays is not None:
        save_file(opt_arrays, os.path.join(directory, meta["optimizer_file"]), file_meta)
    # (2) the commit point
    body = json.dumps(meta, indent=1).encode("utf-8")
    json_path = os.path.join(directory, JSON_NAME)
    atomic_write(json_path, lambda f: f.write(body))
    # (3) garbage: data files the new json does not name, and temp files of interrupted saves
    keep = {meta["model_file"], meta["optimizer_file"]}
    for name in os.listdir(directory):
        if (_DATA_FILE.match(name) and name not in keep) or _TEMP_FILE.match(name):
            try:
                os.unlink(os.path.join(directory, name))
            except FileNotFoundError:
                pass
    return json_path


def _load_data(directory, name) -> dict:
    path = os.path.join(directory, name)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint in {os.fspath(directory)!r}: {JSON_NAME} references {name}, "
                              "which is missing")
    try:
        return load_file(path)
    except SafetensorsError as e:
        raise CheckpointError(f"checkpoint in {os.fspath(directory)!r}: {e}") from None


def _check_config(saved, model, directory) -> None:
    cfg = getattr(model, "cfg", None)
    if saved is None or cfg is None or not hasattr(cfg, "to_dict"):
        return
    own = _jsonable(cfg.to_dict())
    if hasattr(type(cfg), "from_dict"):
        # a config saved before a field existed means that field's default: resolve it the way the
        # config class does (fields the class does not know stay, and are reported below)
        known = {k: v for k, v in saved.items() if k in own}
        try:
            saved = {**saved, **_jsonable(type(cfg).from_dict(_untuple(known)).to_dict())}
        except (TypeError, ValueError):
            pass                          # not a valid config: the comparison below names what differs
    diffs = [f"{k}: checkpoint {saved.get(k, '<absent>')!r} vs model {own.get(k, '<absent>')!r}"
             for k in sorted(set(saved) | set(own)) if saved.get(k, "<absent>") != own.get(k, "<absent>")]
    if diffs:
        raise CheckpointError(f"checkpoint in {os.fspath(directory)!r}: config mismatch with the model: "
                              + "; ".join(diffs))


def load_checkpoint(directory, model, optimizer=None, *, restore_rng: bool = True) -> dict:
    """Restore weights (strict), optimizer state and the RNG from `directory`.

    Returns {'step', 'extra', 'config'}. Everything is read and checked before anything is changed.
    """
    directory = os.fspath(directory)
    meta = _read_json(directory)
    _check_config(meta.get("config"), model, directory)
    weights = _load_data(directory, meta["model_file"])
    opt_sd = None
    if optimizer is not None:
        saved = meta.get("optimizer")
        if saved is None or meta.get("optimizer_file") is None:
            raise CheckpointError(f"checkpoint in {directory!r} holds no optimizer state, but an optimizer "
                                  "was passed to load_checkpoint")
        if saved["class"] != type(optimizer).__name__:
            raise CheckpointError(f"checkpoint in {directory!r}: the optimizer was {saved['class']}, "
                                  f"not {type(optimizer).__name__}")
        arrays = _load_data(directory, meta["optimizer_file"])
        missing = sorted(set(saved["arrays"]) - set(arrays))
        if missing:
            raise CheckpointError(f"checkpoint in {directory!r}: {meta['optimizer_file']} lacks {missing}")
        state: dict = {}
        for i, s in saved["scalar_state"].items():
            state.setdefault(int(i), {}).update(s)
        for key in saved["arrays"]:
            _, i, name = key.split(".", 2)
            state.setdefault(int(i), {})[name] = arrays[key]
        groups = [{k: _untuple(v) for k, v in g.items()} for g in saved["param_groups"]]
        sizes = [len(g["params"]) for g in optimizer.param_groups]
        if [g.get("n_params") for g in groups] != sizes:
            raise CheckpointError(f"checkpoint in {directory!r}: the optimizer's parameter groups hold "
                                  f"{[g.get('n_params') for g in groups]} parameters, this one {sizes}")
        params = [p for g in optimizer.param_groups for p in g["params"]]
        if state and max(state) >= len(params):
            raise CheckpointError(f"checkpoint in {directory!r}: optimizer state for parameter {max(state)}, "
                                  f"but the optimizer has {len(params)} parameters")
        for key in saved["arrays"]:
            i = int(key.split(".")[1])
            if i >= len(params) or (arrays[key].ndim and tuple(arrays[key].shape) != params[i].shape):
                have = "no such parameter" if i >= len(params) else f"parameter shape {params[i].shape}"
                raise CheckpointError(f"checkpoint in {directory!r}: optimizer state {key} has shape "
                                      f"{tuple(arrays[key].shape)}, {have}")
        opt_sd = {"state": state, "param_groups": groups}
    try:
        model.load_state_dict(weights, strict=True)
        if opt_sd is not None:
            optimizer.load_state_dict(opt_sd)
    except ValueError as e:
        raise CheckpointError(f"checkpoint in {directory!r}: {e}") from None
    if restore_rng and meta.get("rng", {}).get("cpu") is not None:
        backend.set_rng_state(meta["rng"]["cpu"], "cpu")
    return {"step": meta["step"], "extra": meta.get("extra", {}), "config": meta.get("config")}
