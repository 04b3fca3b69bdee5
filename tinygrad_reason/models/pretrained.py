"""One entry point for a real pretrained model: a GGUF file or a Hugging Face checkpoint folder ->
the model, its tokenizer and its chat template.

    p = load_pretrained("SmolLM2-135M-Instruct.Q4_1.gguf")
    ids = p.tokenizer.encode(p.chat.render([{"role": "user", "content": "2 + 3?"}], True), allow_special=True)
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..nn import Transformer
from .chat import ChatTemplate


@dataclass
class Pretrained:
    model: Transformer
    tokenizer: object          # PretrainedTokenizer
    chat: ChatTemplate
    source: str
    kind: str                  # "gguf" or "hf"
    name: str


def load_pretrained(path, dtype=np.float32) -> Pretrained:
    """Load a GGUF file or a Hugging Face folder (config.json, *.safetensors, tokenizer.json)."""
    from .pretrained_tokenizer import PretrainedTokenizer
    path = os.fspath(path)
    if os.path.isdir(path):
        from .hf_folder import load_hf_folder
        model, _, hf = load_hf_folder(path, dtype)
        tok_path = os.path.join(path, "tokenizer.json")
        if not os.path.exists(tok_path):
            raise FileNotFoundError(f"{path}: no tokenizer.json beside the weights")
        tok = PretrainedTokenizer.from_tokenizer_json(tok_path)
        name, kind = hf.get("_name_or_path") or os.path.basename(path.rstrip("/")), "hf"
    else:
        from .gguf import load_gguf
        model, _, meta = load_gguf(path, dtype)
        tok = PretrainedTokenizer.from_gguf_metadata(meta, path)
        name, kind = meta.get("general.name") or os.path.basename(path), "gguf"
    if tok.vocab_size > model.cfg.vocab_size:
        raise ValueError(f"{path}: the tokenizer has {tok.vocab_size} ids, the model's embedding only "
                         f"{model.cfg.vocab_size}")
    return Pretrained(model.eval(), tok, ChatTemplate.parse(tok.chat_template), path, kind, name)


def describe(path) -> str:
    """A few lines on what a GGUF file or HF folder holds (reads the GGUF metadata only)."""
    path = os.fspath(path)
    if os.path.isdir(path):
        import json

        from .hf import config_from_hf
        with open(os.path.join(path, "config.json")) as f:
            hf = json.load(f)
        return f"{path}: Hugging Face {hf.get('model_type')}\n{config_from_hf(hf)}"
    from collections import Counter

    from ..io.gguf import GGUFFile
    from .gguf import config_from_gguf
    with GGUFFile(path) as f:
        emb = f.tensors.get("token_embd.weight")
        cfg = config_from_gguf(f.metadata, path, "output.weight" not in f.tensors, emb.shape[0] if emb else None)
        types = Counter(t.type.name for t in f.tensors.values())
        n = sum(int(np.prod(t.shape)) for t in f.tensors.values())
        meta = f.metadata
    return "\n".join([f"{path}: GGUF, {meta.get('general.name', 'unnamed')}",
                      f"architecture {meta.get('general.architecture')}, {n:,} parameters, tensor types "
                      + ", ".join(f"{k} x{v}" for k, v in sorted(types.items())),
                      f"tokenizer {meta.get('tokenizer.ggml.model')} / {meta.get('tokenizer.ggml.pre')}, "
                      f"{len(meta.get('tokenizer.ggml.tokens', []))} tokens, chat template: "
                      f"{'yes' if meta.get('tokenizer.chat_template') else 'no'}", str(cfg)])
