"""Batched decoding on a preallocated KV cache: `generate` (many prompts, one batch) and
`generate_stream` (one sequence, token by token). Logits processing and sampling are sampling.py.

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
from typing import Iterator, Sequence

import numpy as np

from ..tensor import Tensor, no_grad
from .sampling import Sample, SamplingConfig, log_softmax, ngram_bans, sample_from_logits

__all__ = ["GenerationResult", "generate", "generate_stream", "row_generators", "inference", "COMPACT_AT"]

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
def inference(model, modules=None):
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
        with inference(model, modules):
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
