"""Sampling from a Transformer on its preallocated KV cache: greedy, temperature, top-k, top-p,
repetition penalty, n-gram blocking; a streaming single-sequence generator and a batched one.

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

Batching and positions. All rows share one KV cache and feed their next token at the same cache
slot (`start` is one integer for the whole batch), so shorter prompts are LEFT-padded and the
padding is hidden from attention by `pad_mask`. Each row's tokens get their own positions (counted
from the row's first real token, passed as `positions`), so a left-padded row computes the same
logits as the row alone for every position kind: learned, sinusoidal and RoPE.

Length budget: a finished sequence (prompt + generated) never exceeds the model's context length,
so it can always be re-scored in one forward. In a mixed-length batch every row's position budget is
`context_length - longest prompt` (they share positions); finish reason 'length' covers both
max_new_tokens and the context limit.

Stopping: a row finishes when it samples a stop id (the stop token IS included in its tokens and
log-probs, finish reason 'stop'), or reaches its budget ('length'); its reported tokens stop changing.
Finished rows leave the batch: after a step that leaves at most COMPACT_AT (3/4) of the batch's rows
active, the batch and its KV cache are cut down to the active rows (one copy of the filled part of
the cache), so rows that run long do not make the batch keep paying for the ones that ended. Until
then a finished row is fed `pad_id`, masked from attention.

Shared prompts: rows with identical prompts (self-consistency's N paths of one question, an RL
group) share one prompt forward; the cache and the first logits are copied to each of them before
anything is sampled, so every row still draws from its own generator.

Tools (token-level hook; `generate(..., tool=fn)` / `generate_stream(..., tool=fn)`). After every
SAMPLED token of an active row that did not end, `fn(generated)` is called with that row's generated
tokens so far (a list of ints, prompt excluded). It returns None (nothing to do) or a list of token
ids, which then become the row's next tokens, one per step, without sampling ("forced"); the tool is
not called again until they are all out, and not on forced tokens. Forced tokens go through the
model like any other token (they enter the KV cache, the repetition-penalty set and the n-gram
history), count against the length budget and end the row if one is a stop id. For a forced token,
`logprobs` holds the MODEL's log-probability of that token (log_softmax of the raw logits at that
step: how much the model agreed with the tool), `sample_logprobs` holds 0.0 (it was chosen with
probability 1), and `GenerationResult.forced` marks it True (mask these out of policy-gradient
losses). A forced step still draws its row's uniform, so a row's random stream stays aligned with the
step index. `reasoning/tools.py` has the calculator tool.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Iterator, NamedTuple, Sequence

import numpy as np

from .. import backend
from ..blas import packed_weights
from ..tensor import Tensor, no_grad

__all__ = ["SamplingConfig", "Sample", "GenerationResult", "apply_temperature", "top_k_filter",
           "top_p_filter", "apply_repetition_penalty", "ngram_bans", "process_logits", "log_softmax",
           "sample_from_logits", "generate", "generate_stream", "row_generators"]



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


# ---------------------------------------------------------------- decoding
COMPACT_AT = 0.75     # drop the finished rows from the batch once at most this fraction of it is active


@dataclass
class GenerationResult:
    """Per row: generated tokens (stop token included), their log-probs under the model
    distribution and under the sampling distribution, why the row ended ('stop' / 'length'), and
    which tokens a tool forced (all False without a tool)."""
    tokens: list[list[int]]
    logprobs: list[np.ndarray]
    sample_logprobs: list[np.ndarray]
    finish_reasons: list[str]
    prompt_lengths: list[int] = field(default_factory=list)
    forced: list[np.ndarray] = field(default_factory=list)   # per row (T,) bool: token forced by a tool

    @property
    def n_generated(self) -> list[int]:
        return [len(t) for t in self.tokens]

    @property
    def total_generated(self) -> int:
        return sum(self.n_generated)

    def as_arrays(self, pad_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(B, T) int64 tokens right-padded with pad_id, and the (B, T) bool mask of real tokens."""
        t = max(self.n_generated, default=0)
        ids = np.full((len(self.tokens), t), pad_id, dtype=np.int64)
        mask = np.zeros((len(self.tokens), t), dtype=bool)
        for i, row in enumerate(self.tokens):
            ids[i, :len(row)] = row
            mask[i, :len(row)] = True
        return ids, mask


def row_generators(cfg: SamplingConfig, row_seeds: Sequence[int]) -> list[np.random.Generator]:
    """One independent Generator per row: default_rng([cfg.seed, row_seed]) (fresh entropy when
    cfg.seed is None)."""
    if cfg.seed is None:
        return [np.random.default_rng() for _ in row_seeds]
    return [np.random.default_rng([int(cfg.seed), int(s)]) for s in row_seeds]


@contextlib.contextmanager
def _inference(model, modules=None):
    """No graph, dropout off; entered around each forward only, so a suspended generator never
    leaks either mode to its caller. `modules`: model.modules(), listed once by a caller that enters
    this every step (walking the module tree took ~0.35 ms a step for a 4-layer GPT)."""
    was_training = [m for m in (model.modules() if modules is None else modules) if m.training]
    for m in was_training:
        m.training = False
    try:
        with no_grad():
            yield
    finally:
        for m in was_training:
            m.training = True


def _check_prompts(model, prompts, cfg) -> list[list[int]]:
    vocab, ctx = model.cfg.vocab_size, model.cfg.context_length
    out = []
    for i, p in enumerate(prompts):
        p = [int(t) for t in (p.tolist() if hasattr(p, "tolist") else p)]
        if not p:
            raise ValueError(f"generate: prompt {i} is empty (start it with a BOS token)")
        if min(p) < 0 or max(p) >= vocab:
            raise ValueError(f"generate: prompt {i} has a token id outside the vocabulary [0, {vocab})")
        if len(p) > ctx:
            raise ValueError(f"generate: prompt {i} has {len(p)} tokens, more than the context length {ctx}")
        out.append(p)
    for name, ids in (("stop_ids", cfg.stop_ids), ("pad_id", (cfg.pad_id,))):
        if any(t >= vocab for t in ids):
            raise ValueError(f"generate: SamplingConfig.{name} {ids} outside the vocabulary [0, {vocab})")
    return out


def _decode(model, prompts: list[list[int]], cfg: SamplingConfig, rngs, tool=None) -> Iterator[tuple]:
    """Decode one batch on one KV cache. Yields per step (Sample, active-before-step (B,) bool,
    finished-this-step reasons dict row -> reason, forced-this-step (B,) bool), all per prompt.
    Prompts must be safe to left-pad together. `tool`: see the module docstring."""
    b = len(prompts)
    vocab, ctx = model.cfg.vocab_size, model.cfg.context_length
    lens = np.array([len(p) for p in prompts])
    width = int(lens.max())
    budget = min(cfg.max_new_tokens, ctx - width)       # shared positions: sequence <= context
    if budget <= 0:
        return
    # identical prompts (self-consistency's paths, an RL group) share one prompt forward: it runs on the
    # first row of each distinct prompt; its logits are copied to the other rows, and its cache becomes a
    # prefix they all continue (KVCache.share_prefix: kept once, and read once a step for all of them)
    first = {}
    leader = np.array([first.setdefault(tuple(p), i) for i, p in enumerate(prompts)])
    leaders = np.unique(leader)
    shared = len(leaders) < b
    cache = model.new_cache(len(leaders), width + budget - 1)   # the last sampled token is never fed
    ids = np.full((b, width), cfg.pad_id, dtype=np.int64)
    mask = np.zeros((b, width + budget - 1), dtype=bool)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = p
        mask[i, width - len(p):width] = True
    padded = not mask[:, :width].all()
    positions = np.maximum(np.cumsum(mask[:, :width], axis=1) - 1, 0)   # per row, from its first real token
    count = lens.copy()                                                 # real tokens so far, per row
    history = [list(p) for p in prompts]
    seen = None
    if cfg.repetition_penalty != 1.0:
        seen = np.zeros((b, vocab), dtype=bool)
        for i, p in enumerate(prompts):
            seen[i, p] = True
    active = np.ones(b, dtype=bool)                                     # per prompt
    pending = [[] for _ in range(b)]                                    # tokens a tool forces next
    rows = np.arange(b)         # the prompt of each row still in the batch (and in the cache)

    modules = model.modules()
    pos, feed = 0, ids
    for step in range(budget):
        fed = leaders if step == 0 else slice(None)                     # the prompts: distinct ones only
        with _inference(model, modules):
            h = model.hidden_states(feed[fed], pad_mask=mask[fed, :pos + feed.shape[1]] if padded else None,
                                    cache=cache, start=pos, positions=positions[fed])
            logits = model.logits(Tensor._wrap(h.data[:, -1:])).data[:, 0]
        if step == 0 and shared:
            spread = np.searchsorted(leaders, leader)                   # each row's prompt in the forward
            cache.share_prefix(spread, width)
            logits = logits[spread]
        pos += feed.shape[1]
        banned = None
        if cfg.no_repeat_ngram_size > 0:
            banned = np.stack([ngram_bans(history[i], cfg.no_repeat_ngram_size, vocab) for i in rows])
        s = sample_from_logits(logits, cfg, [rngs[i] for i in rows], seen, banned)
        live = np.nonzero(active[rows])[0]                              # batch rows still decoding
        forced = np.zeros(len(rows), dtype=bool)
        if tool is not None and any(pending[rows[r]] for r in live):
            fids, flp, fslp = s.ids.copy(), s.logprobs.copy(), s.sample_logprobs.copy()
            model_lp = log_softmax(logits)
            for r in live:
                if pending[rows[r]]:
                    t = pending[rows[r]].pop(0)
                    fids[r], flp[r], fslp[r], forced[r] = t, model_lp[r, t], 0.0, True
            s = Sample(fids, flp, fslp)
        ended = {}
        for r in live:
            i, tok = int(rows[r]), int(s.ids[r])
            history[i].append(tok)
            if seen is not None:
                seen[r, tok] = True
            if tok in cfg.stop_ids:
                ended[i] = "stop"
            elif step == budget - 1:
                ended[i] = "length"
            elif tool is not None and not forced[r] and not pending[i]:
                out = tool(history[i][int(lens[i]):])
                if out:
                    out = [int(t) for t in out]
                    if min(out) < 0 or max(out) >= vocab:
                        raise ValueError(f"generate: the tool forced a token id outside the vocabulary [0, {vocab})")
                    pending[i] = out
        per_prompt, forced_per_prompt = _per_prompt(s, forced, rows, b, cfg.pad_id)
        yield per_prompt, active.copy(), ended, forced_per_prompt
        for i in ended:
            active[i] = False
        if not active.any():
            return
        still = active[rows]
        feed = np.where(still, s.ids, cfg.pad_id)[:, None]
        positions = np.minimum(count, ctx - 1)[:, None]
        count = count + still
        if pos < mask.shape[1]:
            mask[:, pos] = still
            padded = padded or not still.all()
        if still.sum() <= COMPACT_AT * len(rows):
            # the finished rows leave the batch and the cache: later steps do only the live rows' work
            keep = np.nonzero(still)[0]
            rows, feed, positions, count, mask = rows[keep], feed[keep], positions[keep], count[keep], mask[keep]
            seen = None if seen is None else seen[keep]
            cache.select_rows(keep, pos)
            padded = not mask[:, :pos + 1].all()


def _per_prompt(s: Sample, forced, rows, b: int, pad_id: int) -> tuple[Sample, np.ndarray]:
    """A step's Sample and forced flags for the batch's rows, laid out per prompt (B,): prompts no
    longer in the batch get pad_id, log-prob 0 and not forced."""
    ids, lp, slp, f = np.full(b, pad_id, dtype=np.int64), np.zeros(b), np.zeros(b), np.zeros(b, dtype=bool)
    ids[rows], lp[rows], slp[rows], f[rows] = s.ids, s.logprobs, s.sample_logprobs, forced
    return Sample(ids, lp, slp), f


def generate_stream(model, prompt_ids: Sequence[int], cfg: SamplingConfig, row_seed: int = 0,
                    tool=None) -> Iterator[int]:
    """Yield the tokens of one sequence one at a time as they are produced (stop token included).
    The prompt goes through in one forward, then one token per step on the KV cache. Same tokens as
    generate(model, [prompt_ids], cfg, row_seeds=[row_seed], tool=tool)."""
    prompts = _check_prompts(model, [prompt_ids], cfg)
    for s, _, _, _ in _decode(model, prompts, cfg, row_generators(cfg, [row_seed]), tool):
        yield int(s.ids[0])


def generate(model, prompts: Sequence[Sequence[int]], cfg: SamplingConfig,
             row_seeds: Sequence[int] | None = None, tool=None) -> GenerationResult:
    """Decode many prompts at once: one batch on one KV cache, prompts left-padded and masked, each
    row with its own positions. Row i samples from default_rng([cfg.seed, row_seeds[i]]), row_seeds
    defaulting to 0..B-1. `tool(generated_tokens) -> list[int] | None` forces tokens per row (see the
    module docstring; e.g. tools.CalculatorTool)."""
    prompts = _check_prompts(model, prompts, cfg)
    n = len(prompts)
    row_seeds = list(range(n)) if row_seeds is None else [int(s) for s in row_seeds]
    if len(row_seeds) != n:
        raise ValueError(f"generate: {len(row_seeds)} row_seeds for {n} prompts")
    tokens = [[] for _ in range(n)]
    logprobs = [[] for _ in range(n)]
    sample_lps = [[] for _ in range(n)]
    forced = [[] for _ in range(n)]
    reasons = ["length"] * n
    steps = _decode(model, prompts, cfg, row_generators(cfg, row_seeds), tool) if n else ()
    with packed_weights(model):       # with MKL on, many-row decoding packs each weight once (blas.py)
        for s, active, ended, was_forced in steps:
            for i in np.nonzero(active)[0]:
                tokens[i].append(int(s.ids[i]))
                logprobs[i].append(float(s.logprobs[i]))
                sample_lps[i].append(float(s.sample_logprobs[i]))
                forced[i].append(bool(was_forced[i]))
            for i, why in ended.items():
                reasons[i] = why
    return GenerationResult(tokens, [np.array(x, dtype=np.float64) for x in logprobs],
                            [np.array(x, dtype=np.float64) for x in sample_lps], reasons,
                            [len(p) for p in prompts], [np.array(x, dtype=bool) for x in forced])
