"""Heads that sit on a transformer's trunk: a value head gives one score per position of
Transformer.hidden_states (a verifier's logit that the solution, or the step ending there, is
right), trained with F.binary_cross_entropy_with_logits."""
from __future__ import annotations

import numpy as np

from .. import functional as F
from .layers import Linear
from .module import Module


class ValueHead(Module):
    """score(h) = w . h + b per position (hidden=None), or a small MLP w2 . gelu(W1 h + b1) + b2;
    (batch, seq, d_model) states -> (batch, seq) logits."""

    def __init__(self, d_model: int, hidden: int | None = None, dtype=np.float32):
        if hidden is not None and hidden <= 0:
            raise ValueError(f"ValueHead: hidden must be positive or None, got {hidden}")
        self.d_model, self.hidden = d_model, hidden
        self.fc = Linear(d_model, hidden, True, dtype) if hidden else None
        self.out = Linear(hidden or d_model, 1, True, dtype)

    def forward(self, states):
        if states.ndim < 1 or states.shape[-1] != self.d_model:
            raise ValueError(f"ValueHead: states shape {states.shape} must end in d_model {self.d_model}")
        x = F.gelu(self.fc(states)) if self.fc is not None else states
        return self.out(x).reshape(states.shape[:-1])

    def extra_repr(self) -> str:
        return f"{self.d_model}, hidden={self.hidden}"
