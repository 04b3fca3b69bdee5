"""Sampling and KV-cached generation (tinygrad_reason/reasoning/sampling.py).

The reference for every decoding test is the dumbest correct decoder: one prompt at a time, a full
uncached forward of the whole sequence every step, the next token drawn with sample_from_logits from
the row's own generator. Batched, left-padded (RoPE) or length-grouped (learned positions), cached
generation must reproduce it token for token, log-prob for log-prob, stop for stop. Greedy decoding
of our Llama-style model must equal transformers' LlamaForCausalLM.generate on the same weights.
Models are tiny, float64, with O(1)-scale weights so the logits are far from uniform.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tinygrad_reason as tg
from tinygrad_reason.nn import Transformer, TransformerConfig
from tinygrad_reason.generate import (GenerationResult, SamplingConfig, apply_repetition_penalty,
                                                apply_temperature, generate, generate_stream, log_softmax,
                                                ngram_bans, process_logits, sample_from_logits, top_k_filter,
                                                top_p_filter)

VOCAB, CTX = 48, 32


def randomize(model: Transformer, seed: int = 1) -> Transformer:
    rng = np.random.default_rng(seed)
    for name, p in model.named_parameters():
        if p.ndim == 2:
            value = rng.standard_normal(p.shape) * (0.5 if "emb" in name else 1.0 / np.sqrt(p.shape[1]))
        elif name.endswith("bias"):
            value = rng.standard_normal(p.shape) * 0.2
        else:
            value = 1.0 + rng.standard_normal(p.shape) * 0.2
        p.data[...] = value.astype(p.dtype)
    return model


CONFIGS = {
    "llama": lambda: TransformerConfig.llama(vocab_size=VOCAB, context_length=CTX, d_model=32, n_layers=2,
                                             n_heads=4, n_kv_heads=2, qk_norm=True, mlp_hidden=48),
    "gpt": lambda: TransformerConfig.gpt(vocab_size=VOCAB, context_length=CTX, d_model=32, n_layers=2, n_heads=4),
}
_MODELS: dict = {}


def model_for(name: str) -> Transformer:
    if name not in _MODELS:
        _MODELS[name] = randomize(Transformer(CONFIGS[name]()).astype(np.float64)).eval()
    return _MODELS[name]


PROMPTS = [[5, 9, 1], [3, 3, 7, 20, 11, 2, 40, 8, 9], [17], [30, 31, 32, 33, 34], [44, 1, 2]]


def reference(model, prompts, cfg, row_seeds=None):
    """One prompt at a time, full forward every step (no cache, no padding)."""
    out = []
    for r, prompt in enumerate(prompts):
        rng = np.random.default_rng([cfg.seed, r if row_seeds is None else row_seeds[r]])
        seq, toks, lps, slps, reason = list(prompt), [], [], [], "length"
        for _ in range(min(cfg.max_new_tokens, CTX - len(prompt))):
            with tg.no_grad():
                logits = model(np.array([seq])).numpy()[:, -1]
            seen = np.zeros((1, VOCAB), dtype=bool)
            seen[0, seq] = True
            banned = ngram_bans(seq, cfg.no_repeat_ngram_size, VOCAB)[None]
            s = sample_from_logits(logits, cfg, [rng], seen, banned)
            tok = int(s.ids[0])
            seq.append(tok)
            toks.append(tok)
            lps.append(s.logprobs[0])
            slps.append(s.sample_logprobs[0])
            if tok in cfg.stop_ids:
                reason = "stop"
                break
        out.append((toks, np.array(lps), np.array(slps), reason))
    return out


def assert_matches_reference(res: GenerationResult, ref, what=""):
    assert len(res.tokens) == len(ref)
    for i, (toks, lps, slps, reason) in enumerate(ref):
        assert res.tokens[i] == toks, f"{what} row {i}: {res.tokens[i]} vs {toks}"
        assert res.finish_reasons[i] == reason, f"{what} row {i}"
        np.testing.assert_allclose(res.logprobs[i], lps, rtol=1e-9, atol=1e-9, err_msg=f"{what} row {i}")
        np.testing.assert_allclose(res.sample_logprobs[i], slps, rtol=1e-9, atol=1e-9, err_msg=f"{what} row {i}")
        assert res.n_generated[i] == len(toks)


# ---------------------------------------------------------------- settings
@pytest.mark.parametrize("field,value", [
    ("temperature", -0.1), ("temperature", float("nan")), ("temperature", float("inf")),
    ("top_k", 0), ("top_k", -3), ("top_k", 2.5),
    ("top_p", 0.0), ("top_p", 1.5), ("top_p", -0.2),
    ("max_new_tokens", -1), ("max_new_tokens", 3.0),
    ("repetition_penalty", 0.0), ("repetition_penalty", -1.0),
    ("no_repeat_ngram_size", -1), ("stop_ids", (-1,)), ("seed", -5), ("pad_id", -1),
])
def test_invalid_settings_raise_naming_the_field(field, value):
    with pytest.raises(ValueError, match=f"SamplingConfig.{field}"):
        SamplingConfig(**{field: value})


def test_valid_settings_and_normalization():
    cfg = SamplingConfig(temperature=0, top_k=1, top_p=1.0, max_new_tokens=0, stop_ids=7)
    assert cfg.stop_ids == (7,) and cfg.greedy
    assert SamplingConfig(stop_ids=[1, 2]).stop_ids == (1, 2)
    assert not SamplingConfig(temperature=0.5).greedy


def test_generate_rejects_bad_prompts_and_ids():
    model = model_for("llama")
    with pytest.raises(ValueError, match="empty"):
        generate(model, [[1], []], SamplingConfig())
    with pytest.raises(ValueError, match="outside the vocabulary"):
        generate(model, [[1, VOCAB]], SamplingConfig())
    with pytest.raises(ValueError, match="context length"):
        generate(model, [[1] * (CTX + 1)], SamplingConfig())
    with pytest.raises(ValueError, match="stop_ids"):
        generate(model, [[1]], SamplingConfig(stop_ids=(VOCAB,)))
    with pytest.raises(ValueError, match="row_seeds"):
        generate(model, [[1], [2]], SamplingConfig(), row_seeds=[0])


# ---------------------------------------------------------------- pure functions
logit_rows = st.integers(1, 4).flatmap(lambda b: st.integers(1, 40).flatmap(lambda v: st.lists(
    st.lists(st.one_of(st.floats(-30, 30, allow_nan=False), st.sampled_from([0.0, 1.0, -2.0])), min_size=v,
             max_size=v), min_size=b, max_size=b)))


@settings(max_examples=150, deadline=None)
@given(rows=logit_rows, k=st.integers(1, 45), p=st.floats(1e-3, 1.0), seed=st.integers(0, 2**32 - 1),
       temperature=st.sampled_from([0.3, 1.0, 2.5]))
def test_top_k_top_p_never_sample_outside_their_set(rows, k, p, seed, temperature):
    logits = np.array(rows, dtype=np.float64)
    b, v = logits.shape
    order = np.argsort(-logits, axis=1, kind="stable")          # ranking: logit desc, then lower id
    # top-k alone: exactly min(k, V) tokens, the largest ones
    kept_k = np.isfinite(top_k_filter(logits, k))
    assert (kept_k.sum(1) == min(k, v)).all()
    for r in range(b):
        assert set(np.nonzero(kept_k[r])[0]) == set(order[r, :min(k, v)])
    # top-p alone: the smallest most-likely prefix with mass >= p
    probs = np.exp(log_softmax(logits))
    kept_p = np.isfinite(top_p_filter(logits, p))
    for r in range(b):
        n = kept_p[r].sum()
        assert n >= 1 and set(np.nonzero(kept_p[r])[0]) == set(order[r, :n]), "a ranked prefix"
        mass = np.sort(probs[r])[::-1].cumsum()
        if p < 1.0:
            assert mass[n - 1] >= p * (1 - 1e-12), "enough mass"
            assert n == 1 or mass[n - 2] < p * (1 + 1e-12), "smallest such set"
    # sampling with both never leaves (top-k then top-p on the renormalized remainder)
    cfg = SamplingConfig(temperature=temperature, top_k=k, top_p=p)
    allowed = np.isfinite(top_p_filter(top_k_filter(apply_temperature(logits, temperature), k), p))
    assert (allowed <= kept_k).all()
    rng = np.random.default_rng(seed)
    for _ in range(20):
        s = sample_from_logits(logits, cfg, rng)
        assert allowed[np.arange(b), s.ids].all()
        assert kept_k[np.arange(b), s.ids].all()
        np.testing.assert_allclose(s.logprobs, log_softmax(logits)[np.arange(b), s.ids])
        assert (s.sample_logprobs <= 1e-12).all() and np.isfinite(s.sample_logprobs).all()


@settings(max_examples=150, deadline=None)
@given(rows=logit_rows, p=st.floats(1e-3, 1.0), cut=st.floats(0.0, 0.6), seed=st.integers(0, 2**16))
def test_top_p_equals_the_stable_sort_recipe_with_ties_and_filtered_tokens(rows, p, cut, seed):
    """top_p_filter sorts with a quicksort where no two finite logits tie; it must give exactly what the
    plain recipe (a stable sort of every row) gives, also on rows with -inf (tokens filtered before)."""
    logits = np.array(rows, dtype=np.float64)
    logits[np.random.default_rng(seed).random(logits.shape) < cut] = -np.inf
    logits[:, 0] = np.where(np.isfinite(logits).any(axis=1), logits[:, 0], 0.0)     # a finite token per row
    expect = logits.copy()
    if p >= 1.0:                                          # off: every token stays
        np.testing.assert_array_equal(top_p_filter(logits, p), expect)
        return
    order = np.argsort(-expect, axis=-1, kind="stable")
    z = np.exp(expect - expect.max(axis=-1, keepdims=True))
    cum = np.cumsum(np.take_along_axis(z / z.sum(axis=-1, keepdims=True), order, axis=-1), axis=-1)
    cum /= cum[:, -1:]
    n_keep = np.minimum((cum < p).sum(axis=-1) + 1, expect.shape[1])
    for r in range(expect.shape[0]):
        expect[r, order[r, n_keep[r]:]] = -np.inf
    np.testing.assert_array_equal(top_p_filter(logits, p), expect)


def test_ties_are_broken_towards_lower_ids():
    logits = np.array([[1.0, 3.0, 3.0, 3.0, 0.0]])
    assert np.isfinite(top_k_filter(logits, 2)).tolist() == [[False, True, True, False, False]]
    # three equal tokens of ~0.31 each: p = 0.5 needs two of them, the lower ids
    assert np.isfinite(top_p_filter(logits, 0.5)).tolist() == [[False, True, True, False, False]]
    assert np.isfinite(top_p_filter(logits, 1e-9)).tolist() == [[False, True, False, False, False]]
    s = sample_from_logits(logits, SamplingConfig(temperature=0), None)
    assert s.ids.tolist() == [1] and s.sample_logprobs.tolist() == [0.0]
    # equal +inf logits and NaN logits keep the stable order too (the filters' fast sort, unstable past
    # 16 entries, skips those rows)
    rng = np.random.default_rng(0)
    for special in (np.inf, np.nan):
        row = rng.standard_normal((3, 200))
        row[rng.random(row.shape) < 0.3] = special
        for k in (1, 5, 60, 150):
            expect = np.full(row.shape, -np.inf)
            order = np.argsort(-row, axis=-1, kind="stable")[:, :k]
            np.put_along_axis(expect, order, np.take_along_axis(row, order, axis=-1), axis=-1)
            np.testing.assert_array_equal(top_k_filter(row, k), expect)


def test_sampling_follows_the_filtered_distribution():
    """Empirical frequencies over many draws match softmax(logits / T) restricted and renormalized."""
    logits = np.array([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0]])
    cfg = SamplingConfig(temperature=0.7, top_k=4, top_p=0.9)
    target = np.exp(log_softmax(process_logits(logits, cfg)))[0]
    assert (target == 0).sum() >= 2
    rng = np.random.default_rng(0)
    counts = np.bincount([sample_from_logits(logits, cfg, rng).ids[0] for _ in range(6000)], minlength=6)
    np.testing.assert_allclose(counts / 6000, target, atol=0.025)
    assert counts[target == 0].sum() == 0


def test_temperature_to_zero_equals_greedy():
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((64, 30)) * 3
    cold = sample_from_logits(logits, SamplingConfig(temperature=1e-6), np.random.default_rng(1))
    greedy = sample_from_logits(logits, SamplingConfig(temperature=0), None)
    np.testing.assert_array_equal(cold.ids, logits.argmax(1))
    np.testing.assert_array_equal(greedy.ids, logits.argmax(1))
    np.testing.assert_allclose(cold.logprobs, greedy.logprobs)
    model = model_for("llama")
    a = generate(model, PROMPTS, SamplingConfig(temperature=1e-6, max_new_tokens=10, seed=4))
    b = generate(model, PROMPTS, SamplingConfig(temperature=0, max_new_tokens=10))
    assert a.tokens == b.tokens
    warm = generate(model, PROMPTS, SamplingConfig(temperature=1.0, max_new_tokens=10, seed=4))
    assert warm.tokens != b.tokens, "at temperature 1 sampling must differ from greedy somewhere"


def test_repetition_penalty_and_ngram_ban_match_hf_processors():
    transformers = pytest.importorskip("transformers")
    import torch
    rng = np.random.default_rng(5)
    logits = rng.standard_normal((3, 20)) * 2
    history = rng.integers(0, 20, (3, 9))
    seen = np.zeros((3, 20), dtype=bool)
    for i in range(3):
        seen[i, history[i]] = True
    hf = transformers.RepetitionPenaltyLogitsProcessor(1.7)(torch.from_numpy(history), torch.from_numpy(logits))
    np.testing.assert_allclose(apply_repetition_penalty(logits, seen, 1.7), hf.numpy())
    for n in (1, 2, 3):
        hist = np.array([[1, 2, 3, 1, 2, 4, 1, 2], [5, 5, 5, 5, 5, 5, 5, 5], [0, 1, 2, 3, 4, 5, 6, 7]])
        out = transformers.NoRepeatNGramLogitsProcessor(n)(torch.from_numpy(hist), torch.zeros(3, 20)).numpy()
        ours = np.stack([ngram_bans(list(h), n, 20) for h in hist])
        np.testing.assert_array_equal(ours, np.isneginf(out), err_msg=f"n={n}")
    assert ngram_bans([1, 2, 3, 1, 2], 3, 10).tolist() == [i == 3 for i in range(10)]


# ---------------------------------------------------------------- decoding
DECODE_CASES = {
    "greedy": dict(temperature=0.0, max_new_tokens=12),
    "greedy_stop": dict(temperature=0.0, max_new_tokens=12, stop_ids=(4, 33)),
    "sample": dict(temperature=1.0, max_new_tokens=12, stop_ids=(4, 33), seed=11),
    "sample_topk_topp": dict(temperature=0.8, top_k=10, top_p=0.9, max_new_tokens=12, stop_ids=(4,), seed=3),
    "penalties": dict(temperature=0.9, repetition_penalty=1.5, no_repeat_ngram_size=2, max_new_tokens=12, seed=5),
}


@pytest.mark.parametrize("name", ["llama", "gpt"])
@pytest.mark.parametrize("case", list(DECODE_CASES))
def test_cached_batched_generation_equals_uncached_one_at_a_time(name, case):
    """One left-padded batch on one KV cache, per-row positions, for RoPE (llama) and learned (gpt) positions."""
    model = model_for(name)
    cfg = SamplingConfig(**DECODE_CASES[case])
    res = generate(model, PROMPTS, cfg)
    assert_matches_reference(res, reference(model, PROMPTS, cfg), f"{name}/{case}")


def test_stop_tokens_end_rows_individually():
    model = model_for("llama")
    greedy = generate(model, PROMPTS, SamplingConfig(temperature=0, max_new_tokens=12))
    row, step = 1, 3
    stop = greedy.tokens[row][step]
    assert stop not in greedy.tokens[row][:step]
    res = generate(model, PROMPTS, SamplingConfig(temperature=0, max_new_tokens=12, stop_ids=(stop,), pad_id=0))
    for i, toks in enumerate(greedy.tokens):
        if stop in toks:
            cut = toks.index(stop) + 1
            assert res.tokens[i] == toks[:cut] and res.finish_reasons[i] == "stop"
        else:
            assert res.tokens[i] == toks and res.finish_reasons[i] == "length"
    assert res.n_generated[row] == step + 1
    assert "length" in res.finish_reasons, "other rows keep going after one stops"
    ids, mask = res.as_arrays(pad_id=0)
    assert ids.shape == (len(PROMPTS), 12)
    assert (ids[row, step + 1:] == 0).all() and not mask[row, step + 1:].any() and mask[row, :step + 1].all()


def test_batched_equals_one_at_a_time_with_row_seeds():
    cfg = SamplingConfig(temperature=1.2, top_p=0.95, max_new_tokens=10, stop_ids=(4,), seed=8)
    for name in ("llama", "gpt"):
        model = model_for(name)
        batch = generate(model, PROMPTS, cfg)
        for i, p in enumerate(PROMPTS):
            alone = generate(model, [p], cfg, row_seeds=[i])
            assert alone.tokens[0] == batch.tokens[i]
            assert alone.finish_reasons[0] == batch.finish_reasons[i]
            np.testing.assert_allclose(alone.logprobs[0], batch.logprobs[i], rtol=1e-9, atol=1e-9)
        # row seeds, not batch position, pick the samples
        swapped = generate(model, PROMPTS[::-1], cfg, row_seeds=list(range(len(PROMPTS)))[::-1])
        assert swapped.tokens[::-1] == batch.tokens


def test_same_seed_same_samples_different_seed_different():
    model = model_for("llama")
    cfg = dict(temperature=1.0, max_new_tokens=10)
    a = generate(model, PROMPTS, SamplingConfig(seed=1, **cfg))
    tg.manual_seed(123)
    np.random.seed(123)                     # global state must not matter
    b = generate(model, PROMPTS, SamplingConfig(seed=1, **cfg))
    c = generate(model, PROMPTS, SamplingConfig(seed=2, **cfg))
    assert a.tokens == b.tokens
    assert a.tokens != c.tokens
    rows = generate(model, [PROMPTS[0]] * 4, SamplingConfig(seed=1, **cfg))
    assert len({tuple(t) for t in rows.tokens}) > 1, "identical prompts get different samples per row"


@pytest.mark.parametrize("name", ["llama", "gpt"])
def test_logprobs_are_model_log_softmax_of_an_uncached_forward(name):
    model = model_for(name)
    cfg = SamplingConfig(temperature=0.7, top_k=8, max_new_tokens=10, stop_ids=(4,), seed=2)
    res = generate(model, PROMPTS, cfg)
    for i, p in enumerate(PROMPTS):
        seq = np.array([p + res.tokens[i]])
        with tg.no_grad():
            lp = log_softmax(model(seq).numpy()[0])          # (T, V) under the raw model
        expect = lp[np.arange(len(p) - 1, seq.shape[1] - 1), res.tokens[i]]
        np.testing.assert_allclose(res.logprobs[i], expect, rtol=1e-9, atol=1e-9)
        # sample_logprobs: under the processed distribution (T = 0.7, top-k 8) of the same logits
        with tg.no_grad():
            raw = model(seq).numpy()[0, len(p) - 1:-1]
        sp = log_softmax(process_logits(raw, cfg))[np.arange(len(raw)), res.tokens[i]]
        np.testing.assert_allclose(res.sample_logprobs[i], sp, rtol=1e-9, atol=1e-9)
        assert np.abs(res.sample_logprobs[i] - res.logprobs[i]).min() > 1e-3, "the two are different"
    plain = generate(model, PROMPTS, SamplingConfig(temperature=1.0, max_new_tokens=6, seed=2))
    for a, b in zip(plain.logprobs, plain.sample_logprobs):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_generate_stream_yields_lazily_the_same_tokens():
    model = model_for("llama")
    cfg = SamplingConfig(temperature=0.9, max_new_tokens=12, stop_ids=(4,), seed=6)
    calls = []
    real = model.hidden_states
    model.hidden_states = lambda *a, **k: (calls.append(a[0].shape), real(*a, **k))[1]
    try:
        stream = generate_stream(model, PROMPTS[1], cfg, row_seed=0)
        first = next(stream)
        assert calls == [(1, len(PROMPTS[1]))], "prompt in one forward, nothing decoded ahead"
        assert tg.is_grad_enabled(), "a suspended stream must not leak no_grad to its caller"
        rest = list(stream)
    finally:
        del model.hidden_states
    assert len(rest) >= 3 and len(calls) == 1 + len(rest) and all(c == (1, 1) for c in calls[1:])
    tokens = [first, *rest]
    assert tokens == generate(model, [PROMPTS[1]], cfg).tokens[0]
    for name in ("llama", "gpt"):       # and greedy, both families
        g = SamplingConfig(temperature=0, max_new_tokens=8)
        m = model_for(name)
        assert list(generate_stream(m, PROMPTS[0], g)) == generate(m, [PROMPTS[0]], g).tokens[0]


@pytest.mark.parametrize("name", ["llama", "gpt"])
@pytest.mark.parametrize("settings", [dict(temperature=1.0), dict(temperature=0.0),
                                      dict(temperature=0.9, repetition_penalty=1.5, no_repeat_ngram_size=2)])
def test_finished_rows_leave_the_batch_with_the_same_results(name, settings, monkeypatch):
    """Rows that stop early are dropped from the batch and its KV cache; every row's tokens and
    log-probs stay those of the one-at-a-time reference, and of decoding with every row kept."""
    from tinygrad_reason.generate import decode
    model = model_for(name)
    prompts = PROMPTS * 2                                    # 10 rows, left-padded, ending apart
    stops = (4, 33, 7, 12, 20, 41)
    if settings["temperature"] == 0.0:                       # greedy: stop on tokens it writes mid-way
        probe = generate(model, prompts, SamplingConfig(max_new_tokens=16, **settings)).tokens
        stops = (probe[0][3], probe[2][6])
    cfg = SamplingConfig(max_new_tokens=16, stop_ids=stops, seed=11, **settings)
    widths = []
    real = model.hidden_states
    model.hidden_states = lambda *a, **k: (widths.append(a[0].shape[0]), real(*a, **k))[1]
    try:
        res = generate(model, prompts, cfg, row_seeds=list(range(10)))
        dropped_widths = widths[:]
        widths.clear()
        monkeypatch.setattr(decode, "COMPACT_AT", 0.0)       # never compact
        kept = generate(model, prompts, cfg, row_seeds=list(range(10)))
    finally:
        del model.hidden_states
    assert "stop" in res.finish_reasons
    assert dropped_widths[0] == 5, "the prompt forward runs once per distinct prompt"
    steps = dropped_widths[1:]
    assert steps[0] <= 10 and min(steps) < 10 and steps == sorted(steps, reverse=True), "the batch shrank"
    assert widths[0] == 5 and set(widths[1:]) == {10}, "with COMPACT_AT = 0 every row stays"
    assert_matches_reference(res, reference(model, prompts, cfg, row_seeds=list(range(10))), name)
    assert res.tokens == kept.tokens and res.finish_reasons == kept.finish_reasons
    for a, b in zip(res.logprobs, kept.logprobs):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["llama", "gpt"])
def test_identical_prompts_share_one_prompt_forward(name):
    """Self-consistency's paths: the prompt forward runs once per distinct prompt, its cache and logits
    are copied to the rows; every row still samples from its own generator, as the reference does."""
    model = model_for(name)
    prompts = [PROMPTS[1]] * 6 + [PROMPTS[3]] * 3 + [PROMPTS[1]]
    cfg = SamplingConfig(temperature=1.0, top_k=12, max_new_tokens=10, stop_ids=(4, 33), seed=7)
    shapes = []
    real = model.hidden_states
    model.hidden_states = lambda *a, **k: (shapes.append(a[0].shape), real(*a, **k))[1]
    try:
        res = generate(model, prompts, cfg)
    finally:
        del model.hidden_states
    assert shapes[0] == (2, len(PROMPTS[1])), "two distinct prompts, one forward each row"
    assert all(t == 1 for _, t in shapes[1:]) and shapes[1][0] <= len(prompts)
    assert len({tuple(t) for t in res.tokens}) > 2, "rows with one prompt still sample apart"
    assert_matches_reference(res, reference(model, prompts, cfg), name)


@settings(max_examples=25, deadline=None)
@given(distinct=st.lists(st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=8), min_size=1, max_size=4),
       copies=st.integers(1, 3), stops=st.sets(st.integers(0, VOCAB - 1), min_size=1, max_size=12),
       temperature=st.sampled_from([0.0, 1.0]), seed=st.integers(0, 2 ** 16), name=st.sampled_from(["llama", "gpt"]))
def test_shared_prompts_and_dropped_rows_never_change_a_row(distinct, copies, stops, temperature, seed, name):
    """Against the one-at-a-time uncached reference: prompts repeated (a shared prompt forward) and
    rows ending apart (dropped from the batch)."""
    model = model_for(name)
    prompts = distinct * copies
    cfg = SamplingConfig(temperature=temperature, max_new_tokens=10, stop_ids=tuple(stops), seed=seed)
    assert_matches_reference(generate(model, prompts, cfg), reference(model, prompts, cfg), name)


def test_kv_cache_select_rows_copies_the_filled_part_of_the_chosen_rows():
    model = model_for("gpt")
    cache = model.new_cache(3, 8)
    rng = np.random.default_rng(0)
    for layer in range(len(cache.k)):
        cache.k[layer][...] = rng.standard_normal(cache.k[layer].shape)
        cache.v[layer][...] = rng.standard_normal(cache.v[layer].shape)
    before_k, before_v = [k.copy() for k in cache.k], [v.copy() for v in cache.v]
    cache.select_rows(np.array([2, 0]), filled=5)
    assert cache.batch == 2
    for layer in range(len(cache.k)):
        assert cache.k[layer].shape == (2,) + before_k[layer].shape[1:]
        np.testing.assert_array_equal(cache.k[layer][:, :, :5], before_k[layer][[2, 0], :, :5])
        np.testing.assert_array_equal(cache.v[layer][:, :, :5], before_v[layer][[2, 0], :, :5])
    with pytest.raises(ValueError, match="rows must be 1-d indices into the batch of 2"):
        cache.select_rows(np.array([2]), filled=5)
    with pytest.raises(ValueError, match="filled 9 is outside"):
        cache.select_rows(np.array([0]), filled=9)


@pytest.mark.parametrize("name", ["gpt", "llama"])
def test_kv_cache_shared_prefix_decodes_as_copied_prompts(name):
    """share_prefix keeps one copy of each prompt's keys for the rows that continue it; decoding on it
    equals decoding on a cache where select_rows copied the prompt to every row, also after rows are
    dropped (a prefix no row continues any more is let go) and reordered."""
    model = model_for(name)
    prompts = np.array([[0, 5, 9, 1], [3, 3, 7, 20], [0, 0, 17, 4]])   # 0: padding at the front
    keep = np.array([[False, True, True, True], [True] * 4, [False, False, True, True]])
    rows = np.array([2, 0, 2, 1, 0, 2])
    positions = np.maximum(np.cumsum(keep, axis=1) - 1, 0)
    caches, logits = [], []
    with tg.no_grad():
        for how in ("share_prefix", "select_rows"):
            cache = model.new_cache(3, 9)
            model.hidden_states(prompts, pad_mask=keep, cache=cache, start=0, positions=positions)
            getattr(cache, how)(rows, 4)
            caches.append(cache)
        shared, copied = caches
        assert shared.prefix_len == 4 and shared.prefix_k[0].shape[0] == 3 and copied.prefix_len == 0
        mask = np.concatenate([keep[rows], np.ones((len(rows), 5), dtype=bool)], axis=1)
        pos = positions[rows, -1:] + 1
        feed = np.arange(len(rows))[:, None] + 10
        for step in range(4):
            if step == 2:                 # rows 1 and 4 (prefix 0, the only ones continuing it) leave, the rest reorder
                sel = np.array([5, 0, 3, 2])
                for cache in caches:
                    cache.select_rows(sel, 4 + step)
                mask, pos, feed = mask[sel], pos[sel], feed[sel]
                assert shared.prefix_k[0].shape[0] == 2 and list(shared.group) == [1, 1, 0, 1]
            outs = [model.hidden_states(feed, pad_mask=mask[:, :5 + step], cache=c, start=4 + step,
                                        positions=pos).numpy() for c in caches]
            np.testing.assert_allclose(outs[0], outs[1], rtol=1e-10, atol=1e-10)
            feed, pos = feed + 1, pos + 1
    with pytest.raises(ValueError, match=r"position 3 lies in the shared prefix \(positions \[0, 4\)\)"):
        model.hidden_states(feed[:, :1], cache=shared, start=3, positions=pos)
    with pytest.raises(ValueError, match=r"KVCache.select_rows: filled 3 is outside \[4, 9\]"):
        shared.select_rows(np.array([0]), 3)
    with pytest.raises(ValueError, match="KVCache.share_prefix: rows must be 1-d indices into the batch of 4"):
        shared.share_prefix(np.array([4]), 6)
    shared.share_prefix(np.array([1, 1]), 6)          # a prefix is shared already: its rows are copied
    assert shared.batch == 2 and shared.prefix_len == 4 and list(shared.group) == [0, 0]


def test_context_length_and_zero_budget():
    model = model_for("llama")
    res = generate(model, [[1] * (CTX - 3), [2, 3]], SamplingConfig(temperature=0, max_new_tokens=10))
    assert res.n_generated == [3, 3] and res.finish_reasons == ["length", "length"]
    assert res.tokens[1] == generate(model, [[2, 3]], SamplingConfig(temperature=0, max_new_tokens=3)).tokens[0]
    full = generate(model, [[1] * CTX], SamplingConfig(max_new_tokens=5))
    assert full.tokens == [[]] and full.finish_reasons == ["length"]
    none = generate(model, PROMPTS, SamplingConfig(max_new_tokens=0))
    assert none.tokens == [[]] * len(PROMPTS) and none.total_generated == 0
    assert list(generate_stream(model, [1] * CTX, SamplingConfig())) == []
    assert generate(model, [], SamplingConfig()).tokens == []


def test_training_mode_model_decodes_without_dropout_and_keeps_its_mode():
    cfg = TransformerConfig.gpt(vocab_size=VOCAB, context_length=CTX, d_model=32, n_layers=2, n_heads=4, dropout=0.3)
    model = randomize(Transformer(cfg).astype(np.float64))
    model.train()
    sc = SamplingConfig(temperature=0, max_new_tokens=8)
    a = generate(model, PROMPTS, sc)
    assert all(m.training for m in model.modules())
    model.eval()
    assert generate(model, PROMPTS, sc).tokens == a.tokens


# ---------------------------------------------------------------- against Hugging Face
def test_greedy_equals_hf_llama_generate():
    pytest.importorskip("transformers")
    import torch
    from test_hf_parity import build   # the HF -> ours weight mapping
    # float32: HF's float64 eager path turns all-padding query rows into NaN that leak through
    # (see test_hf_parity.test_left_padded_batch_matches_hf_attention_mask)
    hf, ours = build("llama", np.float32)
    vocab, ctx = ours.cfg.vocab_size, ours.cfg.context_length
    prompts = [[3, 17, 5, 60, 22, 9], [41, 2], [7, 7, 30, 12]]

    def hf_greedy(batch, n, eos=None, **kw):
        width = max(map(len, batch))
        ids = torch.tensor([[0] * (width - len(p)) + p for p in batch])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
        with torch.no_grad():
            out = hf.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=n,
                              min_new_tokens=0, eos_token_id=eos, pad_token_id=0, **kw)
        rows = []
        for r in out[:, width:].tolist():
            rows.append(r[:r.index(eos) + 1] if eos is not None and eos in r else r)
        return rows

    n = ctx - max(map(len, prompts))
    # one prompt at a time (no padding on either side), then the left-padded batch
    for p in prompts:
        assert generate(ours, [p], SamplingConfig(temperature=0, max_new_tokens=n)).tokens[0] == hf_greedy([p], n)[0]
    ref = hf_greedy(prompts, n)
    res = generate(ours, prompts, SamplingConfig(temperature=0, max_new_tokens=n))
    assert res.tokens == ref
    assert len({tuple(r) for r in ref}) == len(ref) and len(set(ref[0])) > 3, "non-degenerate outputs"
    # a stop token that ends one row early, the others later or never
    eos = ref[0][4]
    got = generate(ours, prompts, SamplingConfig(temperature=0, max_new_tokens=n, stop_ids=(eos,)))
    assert got.tokens == hf_greedy(prompts, n, eos=eos)
    assert got.finish_reasons[0] == "stop"
    # the penalties in Hugging Face's semantics
    kw = dict(repetition_penalty=1.3, no_repeat_ngram_size=2)
    got = generate(ours, prompts, SamplingConfig(temperature=0, max_new_tokens=12, **kw))
    assert got.tokens == hf_greedy(prompts, 12, **kw)
    assert got.tokens != [r[:12] for r in ref], "the penalties changed something"
    assert vocab > max(max(r) for r in ref)
