"""A Hugging Face checkpoint folder (what save_pretrained writes) as our Transformer.

load_hf_folder reads config.json and the weights: model.safetensors, or the shards a
model.safetensors.index.json names (its weight_map: tensor -> shard file). Only safetensors is read,
with our own reader; a pickle checkpoint (pytorch_model.bin) is refused, never unpickled.

All or nothing, checked before any tensor data is read: the config (every field we cannot express
is refused by config_from_hf), the index (every shard it lists exists, every tensor is in the shard
it names and in no other), every header (valid, not truncated), and the tensors against the model
(none missing or unexpected, each of the right shape and a float dtype). Then the data are read one
tensor at a time into a fresh model, shard after shard, so beside the model only one tensor is held.
Any error raises HFCheckpointError naming the file and the tensor or field; the half-built model is
dropped, never returned.
"""
from __future__ import annotations

import json
import os

import numpy as np

from ..io.safetensors import SafetensorsError, iter_file, read_tensor_infos
from ..nn import Transformer, TransformerConfig
from .hf import checkpoint_layout, model_from_hf

__all__ = ["HFCheckpointError", "load_hf_folder", "SINGLE_FILE", "INDEX_FILE"]

CONFIG_FILE = "config.json"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")      # safetensors names we cast to the model's dtype
_MAX_LISTED = 12                                  # problems spelled out in one message, then a count


class HFCheckpointError(ValueError):
    """A checkpoint folder we cannot load; the message names the file and the tensor or field."""


def load_hf_folder(path, dtype=np.float32) -> tuple[Transformer, TransformerConfig, dict]:
    """(model, its TransformerConfig, the config.json dict) from a Hugging Face checkpoint folder.

    The weights (bf16, f16, f32 or f64 in the files) are cast to `dtype`. The model is returned in
    eval mode, as from_pretrained does (GPT-2 configs carry dropout 0.1)."""
    folder = os.fspath(path)
    if not os.path.isdir(folder):
        raise HFCheckpointError(f"load_hf_folder: {folder!r} is not a folder")
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise HFCheckpointError(f"load_hf_folder: dtype must be a float dtype, got {dtype}")
    hf, config_path = _read_config(folder)
    shards = _weight_files(folder)
    try:
        model = model_from_hf(hf, dtype)
    except ValueError as e:
        raise HFCheckpointError(f"{config_path}: {e}") from None
    plan = _plan(model, folder, shards)
    _fill(model, plan)
    return model.eval(), model.cfg, hf


# ---------------------------------------------------------------- the files
def _read_json(path: str, what: str):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise HFCheckpointError(f"load_hf_folder: no {what} {path!r}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise HFCheckpointError(f"{path}: cannot read the {what}: {e}") from None


def _read_config(folder: str) -> tuple[dict, str]:
    path = os.path.join(folder, CONFIG_FILE)
    hf = _read_json(path, CONFIG_FILE)
    if not isinstance(hf, dict):
        raise HFCheckpointError(f"{path}: the config must be a JSON object, got {type(hf).__name__}")
    return hf, path


def _weight_files(folder: str) -> dict:
    """{shard path: the tensor names the index puts there, or None for a single file (no index)}.
    transformers' order: model.safetensors first, then the index. A folder holding only pickle
    weights is refused."""
    single, index = os.path.join(folder, SINGLE_FILE), os.path.join(folder, INDEX_FILE)
    if os.path.isfile(single):
        return {single: None}
    if os.path.isfile(index):
        return _read_index(folder, index)
    present = sorted(os.listdir(folder))
    pickles = [n for n in present if n.endswith((".bin", ".pt", ".pth", ".ckpt", ".pkl", ".bin.index.json"))]
    if pickles:
        raise HFCheckpointError(f"load_hf_folder: {folder!r} holds {pickles} but no {SINGLE_FILE} or {INDEX_FILE}: "
                                "only safetensors checkpoints are read (pickle files are never unpickled); "
                                "re-save with save_pretrained(..., safe_serialization=True)")
    raise HFCheckpointError(f"load_hf_folder: {folder!r} has neither {SINGLE_FILE} nor {INDEX_FILE} "
                            f"(it holds {present})")


def _read_index(folder: str, index: str) -> dict:
    data = _read_json(index, INDEX_FILE)
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise HFCheckpointError(f"{index}: no weight_map object of tensor name -> shard file")
    shards = {}
    for name, shard in weight_map.items():
        # a shard is a file beside the index: no path may lead elsewhere
        if not isinstance(shard, str) or not shard or os.path.basename(shard) != shard or shard in (".", ".."):
            raise HFCheckpointError(f"{index}: tensor {name!r} is placed in {shard!r}, which is not a file name "
                                    "in the checkpoint folder")
        shards.setdefault(os.path.join(folder, shard), set()).add(name)
    absent = {p: sorted(names) for p, names in shards.items() if not os.path.isfile(p)}
    if absent:
        listed = "; ".join(f"{os.path.basename(p)} (holding {names[:3]}{'...' if len(names) > 3 else ''})"
                           for p, names in sorted(absent.items()))
        raise HFCheckpointError(f"{index}: shards listed in its weight_map are missing from the folder: {listed}")
    return dict(sorted(shards.items()))


# ---------------------------------------------------------------- checking everything before reading data
def _headers(shards: dict) -> dict:
    """{shard path: {tensor: (dtype, shape)}} from every header, each validated by the reader."""
    out = {}
    for path in shards:
        try:
            out[path] = read_tensor_infos(path)
        except SafetensorsError as e:
            raise HFCheckpointError(str(e)) from None
        except OSError as e:
            raise HFCheckpointError(f"{path}: cannot read: {e}") from None
    return out


def _index_problems(shards: dict, headers: dict) -> list:
    """Where the shards disagree with the index: a tensor not in the shard the index names, a
    tensor in a shard the index does not place it in."""
    problems = []
    for path, listed in shards.items():
        if listed is None:
            continue
        found = set(headers[path])
        for name in sorted(listed - found):
            problems.append(f"{os.path.basename(path)}: tensor {name!r} is not in it, but {INDEX_FILE} "
                            "places it there")
        for name in sorted(found - listed):
            problems.append(f"{os.path.basename(path)}: holds tensor {name!r}, which {INDEX_FILE} does not place "
                            "in it")
    return problems


def _plan(model: Transformer, folder: str, shards: dict) -> dict:
    """{shard path: [file tensor names to read]}, once every check passes; else one error listing
    every problem found."""
    layout = checkpoint_layout(model)
    headers = _headers(shards)
    problems = _index_problems(shards, headers)
    where, plan = {}, {}
    for path, infos in headers.items():
        file = os.path.basename(path)
        plan[path] = []
        for name, (dtype, shape) in infos.items():
            if layout.is_ignored(name):
                continue
            key = layout.canonical(name)
            if key in where:
                problems.append(f"{file}: tensor {name!r} is also in {os.path.basename(where[key])}")
                continue
            where[key] = path
            expected = _expected_shape(layout, key)
            if expected is None:
                problems.append(f"{file}: unexpected tensor {name!r} (the model has no parameter for it)")
                continue
            if dtype not in FLOAT_DTYPES:
                problems.append(f"{file}: tensor {name!r} has dtype {dtype}, not a float dtype {FLOAT_DTYPES}")
            if shape != expected:
                problems.append(f"{file}: tensor {name!r} has shape {shape}, the config needs {expected}")
            plan[path].append(name)
    files = ", ".join(sorted(os.path.basename(p) for p in headers))
    problems += [f"tensor {key!r} is in none of the weight files ({files})"
                 for key in layout.tensors if key not in where]
    if problems:
        listed = problems[:_MAX_LISTED] + ([f"... and {len(problems) - _MAX_LISTED} more"]
                                           if len(problems) > _MAX_LISTED else [])
        raise HFCheckpointError(f"load_hf_folder: {folder!r} does not fit the config: " + "; ".join(listed))
    return plan


def _expected_shape(layout, key: str):
    if key in layout.tensors:
        return layout.tensors[key].shape
    if layout.tied_head is not None and key == layout.tied_head[0]:
        return layout.tensors[layout.tied_head[1]].shape       # the tied head: the embedding's shape
    return None


# ---------------------------------------------------------------- reading the data
def _fill(model: Transformer, plan: dict) -> None:
    """Copy every planned tensor into the model's parameters, one tensor in memory at a time; a
    tied checkpoint's lm_head is checked to equal its embedding."""
    layout = checkpoint_layout(model)
    own = model.state_dict()
    filled = set()
    tied = {}                        # the tied head / embedding as read, until the other one arrives
    # only a file that holds the tied head has it checked (transformers 5 leaves it out)
    check_tied = layout.tied_head is not None and any(layout.canonical(n) == layout.tied_head[0]
                                                      for names in plan.values() for n in names)
    for path, names in plan.items():
        file = os.path.basename(path)
        try:
            for name, arr in iter_file(path, set(names)):
                key = layout.canonical(name)
                expected = _expected_shape(layout, key)
                if arr.shape != expected:          # the file changed since its header was checked
                    raise HFCheckpointError(f"{file}: tensor {name!r} has shape {arr.shape} when read, "
                                            f"the config needs {expected}")
                if check_tied and key in layout.tied_head:
                    _check_tied(layout, tied, key, arr, file)
                    if key == layout.tied_head[0]:
                        continue
                for target, part in layout.convert(key, arr):
                    own[target][...] = part          # cast to the model's dtype
                    filled.add(target)
        except SafetensorsError as e:
            raise HFCheckpointError(str(e)) from None
        except OSError as e:
            raise HFCheckpointError(f"{path}: cannot read: {e}") from None
    unfilled = sorted(set(own) - filled)
    if unfilled:                                     # _plan guarantees this; a broken layout must not pass
        raise HFCheckpointError(f"load_hf_folder: parameters left unfilled: {unfilled}")
    for p in model.parameters():
        p.bump_version()


def _check_tied(layout, tied: dict, key: str, arr, file: str) -> None:
    head, emb = layout.tied_head
    other = emb if key == head else head
    if other not in tied:
        tied[key] = arr
        return
    if not np.array_equal(tied.pop(other), arr):
        raise HFCheckpointError(f"{file}: the config ties the embeddings (tie_word_embeddings), but tensor "
                                f"{head!r} differs from {emb!r}")
