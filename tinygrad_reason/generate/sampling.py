"""Choosing the next token from a step's logits: greedy, temperature, top-k, top-p, repetition
penalty, n-gram blocking, and the log-probabilities of what was chosen.

Logits processing, in Hugging Face's order (so greedy and sampled outputs match its generate):
    repetition penalty -> no-repeat n-gram ban -> temperature -> top-k -> top-p -> sample
Temperature 0 is greedy: argmax of the logits after the penalty and the ban (top-k / top-p cannot
change an argmax). Ties are broken towards the lower token id everywhere (argmax, top-k, top-p).

Two log-probabilities come back for every sampled token:
  * `logprobs`: under the MODEL distribution, log_softmax of the raw logits the model produced
    (temperature 1, no penalty, no filtering). This is what GRPO / PPO ratios need: recomputing
    the sequence with an uncached forward gives the same numbers (up to rounding).
  * `sample_logprobs`: under the distribution actually sampled from (after every processing step,
    renormalized); 0.0 for greedy (probability 1). Useful for importance corrections.
Both are computed in float64 from the model's logits.

Random numbers: every row has its own numpy Generator, `np.random.default_rng([cfg.seed, row_seed])`
(row_seed defaults to the row's index), drawing one uniform per step (inverse-CDF sampling over the
filtered distribution). So results never depend on global random state, and a row's samples do not
depend on what else is in its batch: `generate(m, ps, cfg)` row i equals
`generate(m, [ps[i]], cfg, row_seeds=[i])` row 0, for sampling as well as greedy.

The decode loop that calls these is decode.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np

from .. import backend
from ..tensor import Tensor

__all__ = ["SamplingConfig", "Sample", "apply_temperature", "top_k_filter", "top_p_filter",
           "apply_repetition_penalty", "ngram_bans", "process_logits", "log_softmax", "sample_from_logits"]



def _is_int(x) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _is_real(x) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


@dataclass
class SamplingConfig:
    """Decoding settings.

    temperature: 0 -> greedy (argmax); > 0 divides the logits before softmax.
    top_k: None (off) or keep only the k most likely tokens (k >= vocab keeps all; exactly k are kept,
        ties at the k-th value go to the lower ids).
    top_p: nucleus sampling in (0, 1]; keeps the smallest most-likely set whose probability mass is
        >= top_p (always >= 1 token); 1.0 is off.
    max_new_tokens: most tokens generated per row (>= 0).
    stop_ids: token ids that end a row (end-of-text, end-of-answer...); the stop token is kept.
    repetition_penalty: Hugging Face's (CTRL's) penalty, > 0: every token already present in the row
        (prompt or generated) has its logit divided by it when positive, multiplied when negative.
        1.0 is off; > 1 discourages repeats.
    no_repeat_ngram_size: 0 (off) or n >= 1: a token that would complete an n-gram already present
        in the row (prompt included) is banned (Hugging Face's semantics). If the ban would leave a
        row with no token at all, it is lifted for that row and step.
    seed: seeds the per-row generators (see the module docstring); None draws fresh OS entropy.
    pad_id: the id fed (masked) for left padding and for rows already finished.
    """
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float = 1.0
    max_new_tokens: int = 64
    stop_ids: tuple[int, ...] = ()
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    seed: int | None = 0
    pad_id: int = 0

    def __post_init__(self):
        if _is_int(self.stop_ids):
            self.stop_ids = (int(self.stop_ids),)
        elif self.stop_ids is None:
            self.stop_ids = ()
        else:
            self.stop_ids = tuple(self.stop_ids)
        self.validate()

    def validate(self) -> None:
        def bad(name, why):
            raise ValueError(f"SamplingConfig.{name} {why}, got {getattr(self, name)!r}")

        if not _is_real(self.temperature) or not np.isfinite(self.temperature) or self.temperature < 0:
            bad("temperature", "must be a finite number >= 0 (0 means greedy)")
        if self.top_k is not None and (not _is_int(self.top_k) or self.top_k < 1):
            bad("top_k", "must be None or an integer >= 1")
        if not _is_real(self.top_p) or not 0.0 < self.top_p <= 1.0:
            bad("top_p", "must be in (0, 1]")
        if not _is_int(self.max_new_tokens) or self.max_new_tokens < 0:
            bad("max_new_tokens", "must be an integer >= 0")
        if any(not _is_int(s) or s < 0 for s in self.stop_ids):
            bad("stop_ids", "must be non-negative integer token ids")
        if not _is_real(self.repetition_penalty) or not np.isfinite(self.repetition_penalty) \
                or self.repetition_penalty <= 0:
            bad("repetition_penalty", "must be a finite number > 0 (1.0 is off)")
        if not _is_int(self.no_repeat_ngram_size) or self.no_repeat_ngram_size < 0:
            bad("no_repeat_ngram_size", "must be an integer >= 0 (0 is off)")
        if self.seed is not None and (not _is_int(self.seed) or self.seed < 0):
            bad("seed", "must be None or an integer >= 0")
        if not _is_int(self.pad_id) or self.pad_id < 0:
            bad("pad_id", "must be a non-negative integer token id")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


class Sample(NamedTuple):
    ids: np.ndarray              # (B,) int64 sampled tokens
    logprobs: np.ndarray         # (B,) float64, under the model distribution (raw logits)
    sample_logprobs: np.ndarray  # (B,) float64, under the processed sampling distribution (0 if greedy)


# ---------------------------------------------------------------- pure functions on logits
def _as_f64(logits) -> np.ndarray:
    arr = logits.data if isinstance(logits, Tensor) else logits
    arr = np.asarray(backend.to_device(arr, "cpu") if not isinstance(arr, np.ndarray) else arr, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"sampling: logits must have shape (batch, vocab), got {arr.shape}")
    return arr


def _shifted_exp(x: np.ndarray):
    """(m, exp(x - m)) with m the row max (keepdims), 0 for a row without a finite max."""
    m = x.max(axis=-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = x - m
    np.exp(e, out=e)
    return m, e


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64 (-inf entries stay -inf)."""
    x = _as_f64(logits)
    m, e = _shifted_exp(x)
    with np.errstate(divide="ignore"):
        return x - m - np.log(e.sum(axis=-1, keepdims=True))


def _log_softmax_at(x: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """log_softmax(x)[row, ids[row]] per row, the same numbers without the whole (B, V) result."""
    m, e = _shifted_exp(x)
    with np.errstate(divide="ignore"):
        lse = np.log(e.sum(axis=-1))
    return x[np.arange(x.shape[0]), ids] - m[:, 0] - lse


def _softmax(x: np.ndarray) -> np.ndarray:
    _, e = _shifted_exp(x)
    e /= e.sum(axis=-1, keepdims=True)
    return e


def apply_temperature(logits: np.ndarray, temperature: float) -> np.ndarray:
    """logits / temperature (temperature > 0; 0 is greedy and handled by the caller)."""
    if not temperature > 0:
        raise ValueError(f"apply_temperature: temperature must be > 0, got {temperature!r}")
    return _as_f64(logits) / float(temperature)


def top_k_filter(logits: np.ndarray, k: int | None) -> np.ndarray:
    """Keep exactly the k largest logits per row (ties: lower token id first), others -> -inf."""
    if k is not None and (not _is_int(k) or k < 1):
        raise ValueError(f"top_k_filter: k must be None or an integer >= 1, got {k!r}")
    x = _as_f64(logits).copy()
    if k is None or k >= x.shape[1]:
        return x
    np.put_along_axis(x, _rank_order(x)[:, k:], -np.inf, axis=-1)
    return x


def top_p_filter(logits: np.ndarray, p: float) -> np.ndarray:
    """Nucleus filter: per row keep the smallest set of most likely tokens whose probability mass is
    >= p (at least one token); the rest -> -inf. Tokens are ranked by logit, ties towards the lower
    id, so the kept set is deterministic. p >= 1 keeps everything (off)."""
    if not 0.0 < p <= 1.0:
        raise ValueError(f"top_p_filter: p must be in (0, 1], got {p!r}")
    x = _as_f64(logits).copy()
    if p >= 1.0:
        return x
    order = _rank_order(x)
    probs = np.take_along_axis(_softmax(x), order, axis=-1)
    cum = np.cumsum(probs, axis=-1)
    cum /= cum[:, -1:]                                   # exact total 1 despite rounding
    n_keep = np.minimum((cum < p).sum(axis=-1) + 1, x.shape[1])   # first index reaching p, inclusive
    kept = np.zeros(x.shape, dtype=bool)                 # in token order: rank < n_keep
    np.put_along_axis(kept, order, np.arange(x.shape[1])[None, :] < n_keep[:, None], axis=-1)
    x[~kept] = -np.inf
    return x


def _rank_order(x: np.ndarray) -> np.ndarray:
    """Per row, token ids by falling logit, ties towards the lower id: argsort(-x, kind="stable"), but
    a quicksort (~5x faster) for the rows where no two logits other than -inf are equal and none is
    NaN: every order agrees there but for the -inf logits, which come last in any order and stay
    -inf whether a filter keeps them or not."""
    neg = -x
    order = np.argsort(neg, axis=-1)
    ranked = np.take_along_axis(neg, order, axis=-1)                 # NaN sorts last
    tied = ((ranked[:, 1:] == ranked[:, :-1]) & (ranked[:, 1:] != np.inf)).any(axis=-1) | np.isnan(ranked[:, -1])
    if tied.any():
        order[tied] = np.argsort(neg[tied], axis=-1, kind="stable")
    return order


def apply_repetition_penalty(logits: np.ndarray, seen: np.ndarray | None, penalty: float) -> np.ndarray:
    """Hugging Face's repetition penalty: logits of `seen` tokens (B, V) bool are divided by
    `penalty` when positive and multiplied when negative."""
    x = _as_f64(logits).copy()
    if seen is None or penalty == 1.0:
        return x
    seen = np.asarray(seen, dtype=bool)
    x[seen] = np.where(x[seen] > 0, x[seen] / penalty, x[seen] * penalty)
    return x


def ngram_bans(tokens: Sequence[int], n: int, vocab_size: int) -> np.ndarray:
    """(V,) bool: tokens that would complete an n-gram already present in `tokens`."""
    banned = np.zeros(vocab_size, dtype=bool)
    if n <= 0 or len(tokens) < n - 1:
        return banned
    toks = list(tokens)
    if n == 1:
        banned[[t for t in toks if 0 <= t < vocab_size]] = True
        return banned
    prefix = tuple(toks[len(toks) - (n - 1):])
    for i in range(len(toks) - n + 1):
        if tuple(toks[i:i + n - 1]) == prefix:
            banned[toks[i + n - 1]] = True
    return banned


def process_logits(logits, cfg: SamplingConfig, seen=None, banned=None) -> np.ndarray:
    """The logits of the sampling distribution (float64, filtered tokens at -inf), in HF's order:
    repetition penalty, n-gram ban, temperature, top-k, top-p. With temperature 0 only the penalty
    and the ban are applied (the caller takes the argmax)."""
    x = apply_repetition_penalty(logits, seen, cfg.repetition_penalty)     # a copy: changed in place below
    if banned is not None:
        banned = np.asarray(banned, dtype=bool)
        all_banned = (banned | ~np.isfinite(x)).all(axis=-1)        # never leave a row empty
        x[banned & ~all_banned[:, None]] = -np.inf
    if cfg.greedy:
        return x
    x /= float(cfg.temperature)                                      # apply_temperature, in place
    if cfg.top_k is not None:
        x = top_k_filter(x, cfg.top_k)
    return x if cfg.top_p >= 1.0 else top_p_filter(x, cfg.top_p)


def _uniforms(rng, b: int) -> np.ndarray:
    if isinstance(rng, np.random.Generator):
        return rng.random(b)
    rngs = list(rng)
    if len(rngs) != b:
        raise ValueError(f"sample_from_logits: {len(rngs)} generators for {b} rows")
    return np.array([g.random() for g in rngs])


def sample_from_logits(logits, cfg: SamplingConfig, rng, seen=None, banned=None) -> Sample:
    """Sample one token per row of `logits` (B, V) -> Sample(ids, logprobs, sample_logprobs).

    rng: a numpy Generator (B uniforms drawn from it) or a sequence of B Generators (one uniform
    each); unused when greedy. seen / banned: optional (B, V) bool for the repetition penalty and
    the n-gram ban. `logprobs` are under the model distribution log_softmax(logits) (temperature 1,
    unfiltered); `sample_logprobs` under the processed distribution actually sampled from."""
    raw = _as_f64(logits)
    b, v = raw.shape
    x = process_logits(raw, cfg, seen, banned)
    if cfg.greedy:
        ids = x.argmax(axis=-1)
        sample_lp = np.zeros(b)
    else:
        probs = _softmax(x)
        cdf = np.cumsum(probs, axis=-1)
        u = _uniforms(rng, b) * cdf[:, -1]
        # first index whose cdf exceeds u: its probability is > 0, so filtered tokens never come out
        ids = np.minimum((cdf <= u[:, None]).sum(axis=-1), v - 1)
        sample_lp = np.log(probs[np.arange(b), ids])
    ids = ids.astype(np.int64)
    logprobs = _log_softmax_at(raw, ids)
    return Sample(ids, logprobs, sample_lp)
