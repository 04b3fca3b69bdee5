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


class Verifier(Module):
    """A verifier: a transformer trunk and a ValueHead on its last layer's states, one logit per
    position (sigmoid(logit) = the predicted chance that the solution, or the step ending at that
    token, is right).

    frozen=False: the trunk trains with the head (Cobbe et al.'s verifier, a fine-tuned language
    model; an optional language-model loss keeps it one). frozen=True: the trunk's parameters get
    no gradient and its states are computed without a graph; only the head learns, so training
    costs one forward of the trunk per token and the trunk stays the policy's exact copy."""

    def __init__(self, trunk, hidden: int | None = None, frozen: bool = False):
        self.trunk = trunk
        self.head = ValueHead(trunk.cfg.d_model, hidden, trunk.tok_emb.weight.dtype).to(trunk.tok_emb.weight.device)
        self.frozen = bool(frozen)
        if self.frozen:
            for p in trunk.parameters():
                p.requires_grad = False

    def states(self, ids, pad_mask=None):
        if self.frozen:
            from ..tensor import no_grad
            with no_grad():
                return self.trunk.hidden_states(ids, pad_mask)
        return self.trunk.hidden_states(ids, pad_mask)

    def forward(self, ids, pad_mask=None):
        """(batch, seq) logits."""
        return self.head(self.states(ids, pad_mask))

    def extra_repr(self) -> str:
        return f"frozen={self.frozen}"
