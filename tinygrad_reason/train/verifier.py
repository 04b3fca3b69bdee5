"""Training a verifier (nn.Verifier: a trunk and a value head) on the train loop.

An example is a prompt and a sampled completion with targets at some of its positions: the state
at position t has read tokens 0..t, so its logit is the verifier's belief after that token.

    ORM, targets "token": every completion token predicts the solution's outcome (Cobbe et al.)
    ORM, targets "last" : only the completion's last token does
    PRM                 : each <|step|> token predicts its step's label (exact, or a Monte-Carlo
                          value in [0, 1]), and the last token predicts the outcome, so a right
                          chain with a wrong final answer is still scored at its end

Loss: binary cross-entropy with logits, the mean over the scored positions of a micro-batch,
each weighted by its class weight: balance "none" (1), or "reweight" (positives and negatives
carry equal total weight over the training set, w = n / (2 n_class); a soft target y counts as y
of a positive and 1 - y of a negative). lm_weight > 0 adds that times the next-token
cross-entropy of the completion (a trunk that trains keeps generating). Evaluation: held-out
loss, AUROC and accuracy at 0.5 of the scores at the positions a reranker reads (ORM: last
token; PRM: step and last tokens, against hard labels y >= 0.5).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import functional as F
from ..data.formats import IGNORE
from ..tensor import no_grad
from . import loop
from .stats import auroc

KINDS = ("orm", "prm")
ORM_TARGETS = ("token", "last")
BALANCES = ("none", "reweight")


@dataclass
class VerifierExample:
    ids: list                 # prompt + completion token ids
    prompt_len: int
    positions: list           # indices into ids that carry a target
    targets: list             # one target in [0, 1] per position
    readout: list = field(default_factory=list)   # the positions a reranker reads (evaluation)


@dataclass
class VerifierConfig(loop.LoopConfig):
    kind: str = "orm"
    orm_targets: str = "token"
    trunk: str = "shared"            # shared: the trunk trains with the head; frozen: only the head
    head_hidden: int = 0             # 0: a linear head; > 0: an MLP with this many hidden units
    lm_weight: float = 0.0
    balance: str = "reweight"
    batch_size: int = 32
    eval_size: int = 0               # held-out examples per evaluation (0 = all)
    eval_batch: int = 64
    seed: int = 0
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup: int = 20
    steps: int = 300
    eval_every: int = 100

    def __post_init__(self):
        super().__post_init__()
        for name, allowed in (("kind", KINDS), ("orm_targets", ORM_TARGETS), ("trunk", ("shared", "frozen")),
                              ("balance", BALANCES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"VerifierConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("batch_size", "eval_batch"):
            if getattr(self, name) <= 0:
                raise ValueError(f"VerifierConfig.{name} must be positive, got {getattr(self, name)}")
        for name in ("head_hidden", "eval_size", "lm_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"VerifierConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.trunk == "frozen" and self.lm_weight:
            raise ValueError("VerifierConfig: lm_weight needs a trunk that trains (trunk='shared')")


def make_example(prompt: list, completion: list, outcome: bool, kind: str, orm_targets: str = "token",
                 step_ends=(), step_values=()) -> VerifierExample:
    """The training example of one labelled completion (see the module docstring for the targets).
    step_ends index the completion; step_values are the steps' labels (bools or values in [0, 1])."""
    if not completion:
        raise ValueError("make_example: the completion is empty, so nothing can be scored")
    if len(step_ends) != len(step_values):
        raise ValueError(f"make_example: {len(step_ends)} step ends but {len(step_values)} step labels")
    n, last = len(prompt), len(prompt) + len(completion) - 1
    y = float(bool(outcome))
    if kind == "orm":
        positions = list(range(n, last + 1)) if orm_targets == "token" else [last]
        return VerifierExample(list(prompt) + list(completion), n, positions, [y] * len(positions), [last])
    if kind != "prm":
        raise ValueError(f"make_example: kind must be one of {KINDS}, got {kind!r}")
    positions = [n + int(e) for e in step_ends]
    if any(not n <= p <= last for p in positions):
        raise ValueError(f"make_example: a step end lies outside the completion of {len(completion)} tokens")
    targets = [float(v) for v in step_values]
    if any(not 0.0 <= t <= 1.0 for t in targets):
        raise ValueError("make_example: step labels must lie in [0, 1]")
    if not positions or positions[-1] != last:
        positions, targets = positions + [last], targets + [y]
    return VerifierExample(list(prompt) + list(completion), n, positions, targets, list(positions))


def class_weights(examples, balance: str) -> tuple:
    """(weight of a positive target, weight of a negative one) over the examples' targets."""
    if balance == "none":
        return 1.0, 1.0
    t = np.concatenate([np.asarray(e.targets, dtype=np.float64) for e in examples]) if examples else np.zeros(0)
    pos, neg = float(t.sum()), float((1.0 - t).sum())
    if pos == 0 or neg == 0:     # one class only: reweighting has nothing to balance
        return 1.0, 1.0
    total = pos + neg
    return total / (2 * pos), total / (2 * neg)


def verifier_batch(examples, pad_id: int, w_pos: float = 1.0, w_neg: float = 1.0):
    """Right-padded (ids, pad_mask, targets, weights, lm_targets): targets and weights are zero
    off the scored positions (weight 0 masks them); lm_targets are the next tokens of the
    completion, IGNORE elsewhere."""
    width = max(len(e.ids) for e in examples)
    b = len(examples)
    ids = np.full((b, width), pad_id, dtype=np.int64)
    pad_mask = np.zeros((b, width), dtype=bool)
    targets = np.zeros((b, width), dtype=np.float32)
    weights = np.zeros((b, width), dtype=np.float32)
    lm_targets = np.full((b, width), IGNORE, dtype=np.int64)
    for r, e in enumerate(examples):
        n = len(e.ids)
        ids[r, :n] = e.ids
        pad_mask[r, :n] = True
        y = np.asarray(e.targets, dtype=np.float32)
        targets[r, e.positions] = y
        weights[r, e.positions] = y * w_pos + (1.0 - y) * w_neg
        lm_targets[r, e.prompt_len - 1:n - 1] = e.ids[e.prompt_len:]
    return ids, pad_mask, targets, weights, lm_targets


class VerifierTask:
    """The loop's task for a verifier: weighted BCE at the examples' positions (+ lm_weight x LM loss)."""

    def __init__(self, verifier, pad_id: int, train_examples, eval_examples, cfg: VerifierConfig):
        if not train_examples:
            raise ValueError("verifier training: no training examples")
        longest = max(len(e.ids) for e in train_examples + list(eval_examples))
        if longest > verifier.trunk.cfg.context_length:
            raise ValueError(f"verifier training: an example has {longest} tokens, more than the trunk's context "
                             f"length {verifier.trunk.cfg.context_length}")
        self.verifier, self.pad_id, self.cfg = verifier, pad_id, cfg
        self.train_examples = list(train_examples)
        self.eval_examples = list(eval_examples)[:cfg.eval_size] if cfg.eval_size else list(eval_examples)
        self.w_pos, self.w_neg = class_weights(self.train_examples, cfg.balance)
        self.sampler = np.random.default_rng(cfg.seed)

    def micro_step(self, step: int, micro: int, n_micro: int) -> dict:
        pick = self.sampler.integers(0, len(self.train_examples), size=self.cfg.batch_size)
        ids, pad_mask, targets, weights, lm_targets = verifier_batch([self.train_examples[i] for i in pick],
                                                                     self.pad_id, self.w_pos, self.w_neg)
        states = self.verifier.states(ids, pad_mask)
        logits = self.verifier.head(states)
        bce = F.binary_cross_entropy_with_logits(logits, targets, weight=weights)
        loss = bce
        out = {"bce": bce.item() / n_micro}
        if self.cfg.lm_weight:
            lm = F.cross_entropy(self.verifier.trunk.logits(states), lm_targets, ignore_index=IGNORE)
            loss = loss + lm * self.cfg.lm_weight
            out["lm_loss"] = lm.item() / n_micro
        scaled = loss * (1.0 / n_micro)
        scaled.backward()
        return {"loss": scaled.item(), "tokens": int(pad_mask.sum()), **out}

    def evaluate(self, step: int) -> dict:
        scores, labels = [], []
        losses, n = 0.0, 0
        was_training = self.verifier.training
        self.verifier.eval()
        try:
            with no_grad():
                for start in range(0, len(self.eval_examples), self.cfg.eval_batch):
                    chunk = self.eval_examples[start:start + self.cfg.eval_batch]
                    ids, pad_mask, targets, weights, _ = verifier_batch(chunk, self.pad_id)
                    logits = self.verifier(ids, pad_mask)
                    mask = weights > 0
                    losses += float(F.binary_cross_entropy_with_logits(logits, targets, weight=weights,
                                                                        reduction="sum").item())
                    n += int(mask.sum())
                    probs = 1.0 / (1.0 + np.exp(-logits.numpy().astype(np.float64)))
                    for r, e in enumerate(chunk):
                        lookup = dict(zip(e.positions, e.targets))
                        for p in e.readout:
                            scores.append(float(probs[r, p]))
                            labels.append(lookup[p] >= 0.5)
        finally:
            self.verifier.train(was_training)
        scores_arr, labels_arr = np.asarray(scores), np.asarray(labels, dtype=bool)
        return {"auroc": auroc(scores_arr, labels_arr), "eval_loss": losses / max(n, 1),
                "accuracy": float(np.mean((scores_arr >= 0.5) == labels_arr)) if len(scores) else float("nan"),
                "positive_rate": float(labels_arr.mean()) if len(scores) else float("nan"), "n": len(scores)}

    def state_dict(self) -> dict:
        return {"sampler_state": self.sampler.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.bit_generator.state = state["sampler_state"]


def train_verifier(verifier, pad_id: int, train_examples, eval_examples, cfg: VerifierConfig) -> dict:
    """Train `verifier` (nn.Verifier) on the examples; returns the loop's {"history", "best_auroc", "steps_done"}."""
    return loop.run(verifier, VerifierTask(verifier, pad_id, train_examples, eval_examples, cfg), cfg,
                    score="auroc", label="verifier step")
