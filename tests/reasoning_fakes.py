"""A scripted stand-in for the Transformer, for tests of decoding methods (tools, self-consistency,
refinement): its next-token logits at every position are `policy(real_tokens_so_far)`, so a test
decides exactly what the "model" writes. It speaks the interface sampling.generate and
refine.score_completions use (cfg, modules, new_cache, hidden_states with a KV cache, logits)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from tinygrad_reason.tensor import Tensor


class ScriptedCache:
    """The tokens fed so far, per batch row (the KV cache's interface: select_rows
    drops finished rows; share_prefix hands a shared prompt's row to its samples, here a copy)."""

    def __init__(self, batch: int):
        self.ids = np.zeros((batch, 0), dtype=np.int64)

    def select_rows(self, rows, filled: int) -> None:
        self.ids = self.ids[np.asarray(rows), :filled]

    share_prefix = select_rows


class ScriptedModel:
    training = False

    def __init__(self, vocab_size: int, policy, context_length: int = 96):
        self.cfg = SimpleNamespace(vocab_size=vocab_size, context_length=context_length)
        self.policy = policy
        self.forwards = 0

    def modules(self):
        return []

    def eval(self):
        return self

    def train(self, mode: bool = True):
        return self

    def new_cache(self, batch, max_len=None):
        return ScriptedCache(batch)

    def hidden_states(self, ids, pad_mask=None, cache=None, start=0, positions=None):
        """Returns the logits themselves as the 'hidden state' (logits() is the identity)."""
        self.forwards += 1
        ids = np.asarray(ids, dtype=np.int64)
        full = ids if cache is None else np.concatenate([cache.ids, ids], axis=1)
        if cache is not None:
            cache.ids = full
        b, t = ids.shape
        offset = full.shape[1] - t
        out = np.zeros((b, t, self.cfg.vocab_size))
        for r in range(b):
            for j in range(t):
                upto = full[r, :offset + j + 1]
                if pad_mask is not None:
                    upto = upto[np.asarray(pad_mask)[r, :offset + j + 1]]
                out[r, j] = self.policy([int(x) for x in upto])
        return Tensor._wrap(out)

    def logits(self, hidden):
        return hidden


def one_hot(vocab: int, token: int, high: float = 30.0) -> np.ndarray:
    x = np.zeros(vocab)
    x[token] = high
    return x


def after_think(tokens, tok) -> list:
    """The generated part: everything after the (last) <|think|>."""
    return tokens[len(tokens) - tokens[::-1].index(tok.think_id):] if tok.think_id in tokens else []


def after_think_model(tok, next_logits, context_length: int = 256) -> ScriptedModel:
    """A ScriptedModel whose logits start at -30 everywhere; after <|think|>, next_logits(generated,
    x) fills in x for the tokens generated so far (before it, every token stays at -30)."""
    def policy(tokens):
        x = np.full(tok.vocab_size, -30.0)
        if tok.think_id in tokens:
            next_logits(after_think(tokens, tok), x)
        return x
    return ScriptedModel(tok.vocab_size, policy, context_length=context_length)
