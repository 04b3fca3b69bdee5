"""Reasoning-step attention (issue 20): the step structure (nn/step_attention.py), the attention op's
additive bias (ops/attention.BiasedAttention and its reference), and TransformerConfig.step_attention
("mask" / "bias") through training, the KV cache and generate.

The structure tests spell the relations out on a small chain of thought and check, for random token
streams, that a query's relations depend on the tokens up to it only (what KV-cache decoding needs).
The model tests check that decoding on the cache gives a full forward's logits for every variant,
that "none" is the plain model, and that the per-relation bias gets its gradient.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

import tinygrad_reason as tg
from tinygrad_reason import Tensor, functional as F
from tinygrad_reason.generate import SamplingConfig, generate, log_softmax
from tinygrad_reason.io.checkpoint import load_checkpoint, save_checkpoint
from tinygrad_reason.nn import Transformer, TransformerConfig
from tinygrad_reason.nn.step_attention import (NONE, OTHER, QUESTION, RESULT, SAME, StepStructure,
                                               step_ids_from_tokenizer, step_inputs, step_relations)
from tinygrad_reason.ops import reference as R
from tinygrad_reason.optim import AdamW, decay_groups

VOCAB, CTX = 48, 40
MK, Q, TH, ST, AN, PAD, EOT = 39, 40, 41, 42, 43, 44, 45          # marker ">>", the specials, end of text
IDS = dict(question=Q, think=TH, step=ST, answer=AN, pad=PAD, markers=[MK])
LETTER = "QSRO."                                                   # QUESTION, SAME, RESULT, OTHER, NONE


def _settings(n: int):
    return settings(max_examples=n, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def letters(rel_row) -> str:
    return "".join(LETTER[r] for r in rel_row)


# ================================================================ the structure
# <|question|> 1 2 3 <|think|> | 4 5 >> 6 7 <|step|> | 8 >> 9 <|step|> | <|answer|> 10 11
COT = [Q, 1, 2, 3, TH, 4, 5, MK, 6, 7, ST, 8, MK, 9, ST, AN, 10, 11]
COT_RELATIONS = [          # row i: the relation of query i to keys 0..i
    "Q",
    "QQ",
    "QQQ",
    "QQQQ",
    "QQQQQ",                      # <|think|> closes the prompt
    "QQQQQS",                     # step 0 starts
    "QQQQQSS",
    "QQQQQSSS",
    "QQQQQSSSS",
    "QQQQQSSSSS",
    "QQQQQSSSSSS",                # <|step|> belongs to its step
    "QQQQQOOORRRS",               # step 1: step 0's result is what follows its ">>", and its <|step|>
    "QQQQQOOORRRSS",
    "QQQQQOOORRRSSS",
    "QQQQQOOORRRSSSS",
    "QQQQQOOORRROORRS",           # the answer: every step's result
    "QQQQQOOORRROORRSS",
    "QQQQQOOORRROORRSSS",
]


def test_relations_of_a_chain_of_thought():
    rel = step_relations(np.array([COT]), IDS)
    assert rel.shape == (1, len(COT), len(COT)) and rel.dtype == np.int8
    for i, expect in enumerate(COT_RELATIONS):
        assert letters(rel[0, i, :i + 1]) == expect, i
        assert (rel[0, i, i + 1:] == NONE).all()


def test_a_step_without_a_marker_has_its_step_token_as_result_and_an_unclosed_step_none():
    # no markers at all (a tokenizer where ">>" is two tokens): only the <|step|> tokens are results
    seq = [Q, 1, TH, 4, MK, 6, ST, 8, 9, AN, 10]
    rel = step_relations(np.array([seq]), {**IDS, "markers": []})
    assert letters(rel[0, 7, :8]) == "QQQOOORS"                     # the first token of step 1
    # the answer begins without closing step 1: its tokens never become results
    rel = step_relations(np.array([seq]), IDS)
    assert letters(rel[0, 10, :11]) == "QQQOORROOSS"


def test_direct_format_padding_and_documents():
    direct = [PAD, PAD, Q, 1, 2, AN, 3, EOT, PAD]                    # left and right padding
    rel = step_relations(np.array([direct]), IDS)[0]
    pads = np.array([0, 1, 8])
    assert (rel[pads, pads] == SAME).all(), "a pad token reads itself alone"
    rel[pads, pads] = NONE
    assert (rel[pads] == NONE).all() and (rel[:, pads] == NONE).all()
    assert letters(rel[7, 2:8]) == "QQQSSS"                          # answer and <|endoftext|>
    assert not np.isin(rel, [RESULT, OTHER]).any(), "no steps: nothing is hidden by the mask"
    # a second <|question|> starts a new document: the first one is OTHER, its prompt its own
    two = [Q, 1, TH, 2, ST, AN, 3, EOT, Q, 4, TH, 5]
    rel = step_relations(np.array([two]), IDS)[0]
    assert letters(rel[11]) == "OOOOOOOOQQQS"


def test_the_task_tokenizer_has_one_marker_and_the_result_is_what_follows_it():
    from tinygrad_reason.tokenizer import Tokenizer
    texts = ["Ann has 24 pens. After the sales, 24 - 5 = <<24-5=19>>19 pens are left."] * 50
    tok = Tokenizer.train(texts, 300)
    ids = step_ids_from_tokenizer(tok)
    assert [tok.decode([m]) for m in ids["markers"]] == [">>"]
    step = tok.encode(" After the sales, 24 - 5 = <<24-5=19>>19 pens are left. ")
    seq = [tok.question_id] + tok.encode(" Ann has 24 pens. How many? ") + [tok.think_id] + step + [tok.step_id] \
        + [tok.answer_id] + tok.encode(" 19") + [tok.eot_id]
    rel = step_relations(np.array([seq]), ids)[0]
    answer = seq.index(tok.answer_id)
    result = [seq[j] for j in np.nonzero(rel[answer] == RESULT)[0]]
    assert result[-1] == tok.step_id and tok.decode(result[:-1]) == "19 pens are left. "
    # no merges: ">>" is two tokens, there is no marker and the result is the <|step|> token alone
    bare = Tokenizer.train(texts, 262)
    assert step_ids_from_tokenizer(bare)["markers"] == []


ALPHABET = [0, 1, 2, MK, Q, TH, ST, AN, PAD]


@_settings(60)
@given(data=st.data())
def test_relations_depend_only_on_the_tokens_so_far(data):
    """For random token streams: each query's relations from the whole sequence equal those from the
    sequence cut after it; feeding in chunks, going back, and selecting rows change nothing; a real
    token relates to itself as QUESTION or SAME."""
    b, t = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 20))
    ids = np.array(data.draw(st.lists(st.lists(st.sampled_from(ALPHABET), min_size=t, max_size=t),
                                      min_size=b, max_size=b)))
    full = step_relations(ids, IDS)
    for i in range(t):
        np.testing.assert_array_equal(step_relations(ids[:, :i + 1], IDS)[:, i], full[:, i, :i + 1])
    diag = full[:, np.arange(t), np.arange(t)]
    assert np.isin(diag[ids != PAD], [QUESTION, SAME]).all() and (diag[ids == PAD] == SAME).all()
    pad_rows = np.broadcast_to(ids[:, :, None] == PAD, full.shape) & ~np.eye(t, dtype=bool)
    assert (full[pad_rows] == NONE).all() and (full[np.broadcast_to(ids[:, None, :] == PAD, full.shape)
                                                    & ~np.eye(t, dtype=bool)] == NONE).all()
    # chunks (a prompt, then decode steps), relations of each chunk against everything so far
    cuts = sorted(set(data.draw(st.lists(st.integers(1, max(t - 1, 1)), max_size=4))) - {t})
    s = StepStructure(b, t + 2, IDS)
    for a, z in zip([0, *cuts], [*cuts, t]):
        s.advance(ids[:, a:z], a)
        np.testing.assert_array_equal(s.relations(a, z - a), full[:, a:z, :z])
    # going back (a rewound cache) relabels from there
    back = data.draw(st.integers(0, t - 1))
    s.advance(ids[:, back:], back)
    np.testing.assert_array_equal(s.relations(0, t), full)
    # rows selected (a compacted or shared cache) keep their labels and go on as those rows alone
    rows = np.array(data.draw(st.lists(st.integers(0, b - 1), min_size=1, max_size=4)))
    s = StepStructure(b, t + 1, IDS)
    s.advance(ids[:, :t - 1], 0)
    s.select_rows(rows)
    s.advance(ids[rows, t - 1:], t - 1)
    np.testing.assert_array_equal(s.relations(0, t), full[rows])


def test_structure_errors():
    s = StepStructure(2, 4, IDS)
    with pytest.raises(ValueError, match="does not follow the 0 positions read"):
        s.advance(np.zeros((2, 1), int), 1)
    with pytest.raises(ValueError, match="exceed the length 4"):
        s.advance(np.zeros((2, 5), int), 0)
    with pytest.raises(ValueError, match="for a batch of 2 rows"):
        s.advance(np.zeros((3, 1), int), 0)
    with pytest.raises(ValueError, match="mode must be one of"):
        step_inputs(np.zeros((1, 1, 1), np.int8), "none", np.float32)


# ================================================================ the config
def tiny(mode="none", family="gpt", **kw):
    make = TransformerConfig.gpt if family == "gpt" else TransformerConfig.llama
    extra = dict(n_kv_heads=1, mlp_hidden=24) if family == "llama" else {}
    step = dict(step_attention=mode, step_ids=IDS) if mode != "none" else {}
    return make(vocab_size=VOCAB, context_length=CTX, d_model=16, n_layers=2, n_heads=2, **{**extra, **step, **kw})


@pytest.mark.parametrize("kw, error", [
    (dict(step_attention="hard"), r"step_attention must be one of \('none', 'mask', 'bias'\), got 'hard'"),
    (dict(step_attention="mask"), r"step_attention='mask' needs step_ids.*step_ids_from_tokenizer"),
    (dict(step_ids=IDS), r"step_ids is only read with step_attention in \('mask', 'bias'\)"),
    (dict(step_attention="bias", step_ids={**IDS, "eot": 45}), r"unknown keys \['eot'\]"),
    (dict(step_attention="bias", step_ids={"question": Q}), r"missing keys \['think', 'step', 'answer', 'pad'\]"),
    (dict(step_attention="bias", step_ids={**IDS, "step": Q}), "the special ids must be distinct"),
    (dict(step_attention="bias", step_ids={**IDS, "pad": VOCAB}), r"'pad' must be a token id in \[0, 48\)"),
    (dict(step_attention="bias", step_ids={**IDS, "markers": [ST]}), "a marker is one of the special ids"),
    (dict(step_attention="bias", step_ids=[Q, TH]), "must be a dict"),
])
def test_config_validation_names_the_field(kw, error):
    with pytest.raises(ValueError, match=error):
        TransformerConfig(vocab_size=VOCAB, context_length=CTX, d_model=16, n_layers=1, n_heads=2, **kw)


def test_config_round_trips_and_old_configs_load(tmp_path):
    cfg = tiny("bias")
    assert cfg.step_ids == {**IDS, "markers": (MK,)}
    again = TransformerConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    old = tiny().to_dict()
    for field in ("step_attention", "step_ids"):
        del old[field]
    assert TransformerConfig.from_dict(old) == tiny()
    # a checkpoint whose config predates the fields loads into the default model ...
    model = Transformer(tiny())
    save_checkpoint(tmp_path / "old", model)
    meta_path = tmp_path / "old" / "checkpoint.json"
    meta = json.loads(meta_path.read_text())
    del meta["config"]["step_attention"], meta["config"]["step_ids"]
    meta_path.write_text(json.dumps(meta))
    load_checkpoint(tmp_path / "old", Transformer(tiny()))
    # ... and a step attention model's relation biases come back
    tg.manual_seed(0)
    biased = Transformer(tiny("bias"))
    biased.blocks[1].attn.relation_bias.data[...] = np.arange(8, dtype=np.float32).reshape(2, 4)
    save_checkpoint(tmp_path / "new", biased)
    fresh = Transformer(tiny("bias"))
    load_checkpoint(tmp_path / "new", fresh)
    np.testing.assert_array_equal(fresh.blocks[1].attn.relation_bias.numpy(), np.arange(8).reshape(2, 4))
    with pytest.raises(Exception, match="step_attention"):
        load_checkpoint(tmp_path / "new", Transformer(tiny("mask")))


# ================================================================ the op: an additive bias
def _qkv_bias(b, h, hkv, t, s, d, bias_shape, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(shape) for shape in ((b, h, t, d), (b, hkv, s, d), (b, hkv, s, d), bias_shape)]
    return [a.astype(dtype) for a in arrays]


def _value_and_grads(fn, arrays, seed=1):
    xs = [Tensor(a.copy(), requires_grad=True) for a in arrays]
    out = fn(*xs)
    v = np.random.default_rng(seed).standard_normal(out.shape).astype(out.dtype)
    return out.numpy(), [g.numpy() for g in tg.grad((out * Tensor(v)).sum(), xs)], v


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-10), (np.float32, 2e-5)], ids=["float64", "float32"])
@pytest.mark.parametrize("bias_shape", [(2, 4, 5, 7), (2, 1, 5, 7), (1, 4, 5, 7)], ids=["full", "per_row", "per_head"])
def test_biased_attention_equals_torch_sdpa_with_a_float_mask(bias_shape, dtype, tol):
    """torch's scaled_dot_product_attention with attn_mask = bias + the mask as a large negative
    number: the output and the gradients of q, k, v and the bias (every query keeps a key)."""
    torch = pytest.importorskip("torch")
    arrays = _qkv_bias(2, 4, 2, 5, 7, 3, bias_shape, dtype=dtype)
    masked = (np.arange(7)[None, :] > 2 + np.arange(5)[:, None])[None, None] \
        | (np.random.default_rng(3).random((2, 1, 1, 7)) > 0.6)
    masked[..., 0] = False
    out, grads, v = _value_and_grads(lambda q, k, v_, bias: F.attention(q, k, v_, masked, bias=bias), arrays)
    tq, tk, tv, tb = (torch.tensor(a, requires_grad=True) for a in arrays)
    float_mask = tb + torch.from_numpy(np.where(masked, np.finfo(dtype).min / 2, 0.0).astype(dtype))
    ref = torch.nn.functional.scaled_dot_product_attention(tq, tk.repeat_interleave(2, dim=1),
                                                           tv.repeat_interleave(2, dim=1), attn_mask=float_mask)
    ref.backward(torch.from_numpy(v))
    np.testing.assert_allclose(out, ref.detach().numpy(), rtol=tol, atol=tol)
    for g, t_in in zip(grads, (tq, tk, tv, tb)):
        np.testing.assert_allclose(g, t_in.grad.numpy(), rtol=tol, atol=tol)


def test_biased_attention_at_t_256_matches_the_reference_and_the_decode_paths():
    """The unblocked biased path at the model's context (T = S = 256, a causal mask) against the
    reference in Tensor ops; the decode steps (one query, with and without shared prefixes) against it."""
    arrays = _qkv_bias(2, 2, 1, 256, 256, 4, (2, 2, 256, 256))
    causal = np.triu(np.ones((256, 256), bool), 1)[None, None]
    fused = _value_and_grads(lambda *z: F.attention(*z[:3], causal, bias=z[3]), arrays)
    ref = _value_and_grads(lambda *z: R.attention(*z[:3], causal, bias=z[3]), arrays)
    np.testing.assert_allclose(fused[0], ref[0], rtol=1e-10, atol=1e-12)
    for a, b in zip(fused[1], ref[1]):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    # the last query alone, without a graph (fast.attention.one_query with the bias)
    q, k, v, bias = arrays
    last = np.zeros((1, 1, 1, 256), bool)
    with tg.no_grad():
        step = F.attention(Tensor(q[:, :, -1:]), Tensor(k), Tensor(v), None, bias=bias[:, :, -1:]).numpy()
    np.testing.assert_allclose(step, fused[0][:, :, -1:], rtol=1e-10, atol=1e-12)
    # rows continuing a shared prefix of 200 positions: prefix_one_query with the bias, and the graph path
    prefix = (k[:1, :, :200], v[:1, :, :200], np.array([0, 0]))
    own_k, own_v = np.repeat(k[:1, :, 200:], 2, axis=0), np.repeat(v[:1, :, 200:], 2, axis=0)
    full_k, full_v = np.repeat(k[:1], 2, axis=0), np.repeat(v[:1], 2, axis=0)
    expect = R.attention(Tensor(q[:, :, -1:]), Tensor(full_k), Tensor(full_v), last, bias=bias[:, :, -1:]).numpy()
    with tg.no_grad():
        shared = F.prefix_attention(Tensor(q[:, :, -1:]), Tensor(own_k), Tensor(own_v), prefix, last,
                                    bias=bias[:, :, -1:]).numpy()
    graph = F.prefix_attention(Tensor(q[:, :, -1:], requires_grad=True), Tensor(own_k), Tensor(own_v), prefix, last,
                               bias=bias[:, :, -1:]).numpy()
    np.testing.assert_allclose(shared, expect, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(graph, expect, rtol=1e-10, atol=1e-12)


def test_without_a_bias_the_attention_op_is_the_old_one_and_bias_errors_are_clear():
    q, k, v, bias = (Tensor(a) for a in _qkv_bias(1, 2, 2, 3, 3, 4, (1, 2, 3, 3)))
    q.requires_grad = True
    assert F.attention(q, k, v).op == "Attention"
    assert F.attention(q, k, v, bias=bias).op == "BiasedAttention"
    with pytest.raises(ValueError, match=r"bias shape \(1, 2, 3, 2\) must be \(B or 1, H or 1, T, S\) = "
                                         r"\(1 or 1, 2 or 1, 3, 3\)"):
        F.attention(q, k, v, bias=np.zeros((1, 2, 3, 2)))
    with pytest.raises(ValueError, match="bias dtype float32 differs from q's float64"):
        F.attention(q, k, v, bias=Tensor(np.zeros((1, 1, 3, 3), np.float32)))
    with pytest.raises(ValueError, match="bias dtype float32 differs from q's float64"):
        R.attention(q, k, v, bias=Tensor(np.zeros((1, 1, 3, 3), np.float32)))
    # an array bias is a constant in q's dtype
    out = F.attention(q, k, v, bias=np.zeros((1, 1, 3, 3), np.float32))
    np.testing.assert_allclose(out.numpy(), F.attention(q, k, v).numpy(), rtol=1e-14, atol=1e-15)


# ================================================================ the model
def randomized(cfg, seed=1, relation_scale=1.0) -> Transformer:
    """float64, O(1)-scale weights (attention far from uniform) and random relation biases."""
    tg.manual_seed(0)
    model = Transformer(cfg, dtype=np.float64)
    rng = np.random.default_rng(seed)
    for name, p in model.named_parameters():
        if name.endswith("relation_bias"):
            value = rng.standard_normal(p.shape) * relation_scale
        elif p.ndim == 2:
            value = rng.standard_normal(p.shape) * (0.5 if "emb" in name else 1.5 / np.sqrt(p.shape[1]))
        elif name.endswith("bias"):
            value = rng.standard_normal(p.shape) * 0.2
        else:
            value = 1.0 + rng.standard_normal(p.shape) * 0.2
        p.data[...] = value
    return model.eval()


def cot_batch():
    """Three rows of chains of thought of different shapes, right-padded."""
    rows = [COT + [EOT],
            [Q, 5, 6, TH, 7, MK, 8, ST, 9, 10, MK, 11, 12, ST, 13, ST, AN, 14, EOT],
            [Q, 1, AN, 2, EOT]]
    ids = np.full((3, max(map(len, rows))), PAD)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = r
    return ids, ids != PAD


MODES = ["mask", "bias"]
FAMILIES = ["gpt", "llama"]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("mode", MODES)
def test_decoding_on_the_cache_equals_a_full_forward(mode, family):
    """Prefill in chunks, then one token at a time: the logits of every position equal a full forward's,
    and the variant really changes the model (against "none" with the same weights)."""
    model = randomized(tiny(mode, family))
    ids, keep = cot_batch()
    with tg.no_grad():
        full = model(ids, pad_mask=keep).numpy()
        cache = model.new_cache(ids.shape[0])
        outs, bounds = [], [0, 3, 9, *range(10, ids.shape[1] + 1)]
        for a, z in zip(bounds[:-1], bounds[1:]):
            outs.append(model(ids[:, a:z], pad_mask=keep[:, :z], cache=cache, start=a).numpy())
        plain = randomized(tiny("none", family))(ids, pad_mask=keep).numpy()
    cached = np.concatenate(outs, axis=1)
    np.testing.assert_allclose(cached[keep], full[keep], rtol=1e-10, atol=1e-10)
    assert np.abs(plain[keep] - full[keep]).max() > 0.1


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("mode", MODES)
def test_generate_gives_the_full_forward_log_probs(mode, family):
    """generate with left-padded prompts, identical prompts (a shared prefix), a tool that forces steps,
    results and the answer, and rows that stop early (the batch and its cache shrink): every token's
    log-prob is the log-softmax of a full forward of the row alone."""
    model = randomized(tiny(mode, family))
    prompts = [[Q, 1, 2, TH], [Q, 3, TH, 4, MK, 5, ST, 6], [Q, 1, 2, TH], [Q, 7, 8, 9, TH, 2], [Q, 1, 2, TH]]

    def tool(generated):
        n = len(generated)
        if n in (2, 7):
            return [MK, 3, ST]
        if n >= 10 and AN not in generated:
            return [AN, EOT] if sum(generated) % 2 else [AN]
        return None

    cfg = SamplingConfig(temperature=1.0, max_new_tokens=16, stop_ids=(EOT,), pad_id=PAD, seed=3)
    widths = []
    real = model.hidden_states
    model.hidden_states = lambda *a, **k: (widths.append(a[0].shape[0]), real(*a, **k))[1]
    try:
        res = generate(model, prompts, cfg, tool=tool)
    finally:
        del model.hidden_states
    assert widths[0] == 3 and widths[1] == 5 and widths[-1] < 5, "a shared prompt forward, then the batch shrank"
    assert "stop" in res.finish_reasons and "length" in res.finish_reasons, res.finish_reasons
    assert all(ST in t for t in res.tokens) and sum(AN in t for t in res.tokens) >= 3, res.tokens
    for i, p in enumerate(prompts):
        seq = np.array([p + res.tokens[i]])
        with tg.no_grad():
            lp = log_softmax(model(seq).numpy()[0])
        expect = lp[np.arange(len(p) - 1, seq.shape[1] - 1), res.tokens[i]]
        np.testing.assert_allclose(res.logprobs[i], expect, rtol=1e-9, atol=1e-9, err_msg=f"row {i}")


@pytest.mark.parametrize("family", FAMILIES)
def test_none_is_the_plain_model_and_the_variants_start_from_it(family):
    """"mask" hides only OTHER keys: on direct-format rows (no steps) it is the plain model to the
    bit; "bias" starts with zero relation biases, the plain model up to rounding."""
    ids = np.array([[Q, 1, 2, AN, 3, 4, EOT], [Q, 5, AN, 6, 7, EOT, PAD]])
    keep = ids != PAD
    tg.manual_seed(0)
    plain = Transformer(tiny("none", family), dtype=np.float64)
    with tg.no_grad():
        ref = plain(ids, pad_mask=keep).numpy()
        for mode in MODES:
            tg.manual_seed(0)
            model = Transformer(tiny(mode, family), dtype=np.float64)
            out = model(ids, pad_mask=keep).numpy()[keep]      # a pad query reads itself alone, a plain one all
            if mode == "mask":
                np.testing.assert_array_equal(out, ref[keep])
            else:
                assert all((b.attn.relation_bias.numpy() == 0).all() for b in model.blocks)
                np.testing.assert_allclose(out, ref[keep], rtol=1e-12, atol=1e-12)
                cot, cot_keep = cot_batch()
                np.testing.assert_allclose(model(cot, pad_mask=cot_keep).numpy()[cot_keep],
                                           plain(cot, pad_mask=cot_keep).numpy()[cot_keep], rtol=1e-12, atol=1e-12)
    assert not any("relation_bias" in n for n, _ in plain.named_parameters())


@pytest.mark.parametrize("family", FAMILIES)
def test_the_relation_bias_gets_its_gradient_through_the_model(family):
    """gradcheck of a tiny Transformer's loss with respect to every layer's relation bias."""
    model = randomized(tiny("bias", family), relation_scale=0.5)
    ids, keep = cot_batch()
    targets = np.where(keep, np.roll(ids, -1, axis=1), -100)
    attns = [b.attn for b in model.blocks]
    own = [a.relation_bias for a in attns]

    def loss(*biases):
        for a, bias in zip(attns, biases):
            a.relation_bias = bias
        try:
            return model.loss(ids, targets, pad_mask=keep)
        finally:
            for a, p in zip(attns, own):
                a.relation_bias = p

    assert tg.gradcheck(loss, [Tensor(p.numpy().copy(), requires_grad=True) for p in own], atol=1e-8, rtol=1e-6)
    model.loss(ids, targets, pad_mask=keep).backward()
    assert all(np.abs(p.grad.numpy()).min() > 0 for p in own), "every head and relation gets a gradient"


@pytest.mark.parametrize("mode", MODES)
def test_training_is_the_same_on_the_reference_ops(mode):
    """Five AdamW steps of a step attention model on the fused ops and on ops/reference.py give the
    same losses; the relation biases move off zero."""
    def train(reference):
        tg.manual_seed(0)
        model = Transformer(tiny(mode, "llama", n_kv_heads=2), dtype=np.float64)
        opt = AdamW(decay_groups(model, 0.1), lr=1e-2)
        ids, keep = cot_batch()
        targets = np.where(keep, np.roll(ids, -1, axis=1), -100)
        losses = []
        with tg.reference_ops(reference):
            for _ in range(5):
                opt.zero_grad()
                loss = model.loss(ids, targets, pad_mask=keep)
                loss.backward()
                opt.step()
                losses.append(loss.item())
        return np.array(losses), model

    fused, model = train(False)
    ours, _ = train(True)
    np.testing.assert_allclose(ours, fused, rtol=1e-9)
    assert fused[-1] < fused[0]
    if mode == "bias":
        assert all(np.abs(b.attn.relation_bias.numpy()).max() > 1e-3 for b in model.blocks)


def test_a_cache_without_the_structure_is_refused_after_its_first_positions():
    from tinygrad_reason.nn import KVCache
    model = randomized(tiny("mask", "llama"))
    cfg = model.cfg
    cache = KVCache(cfg.n_layers, 1, cfg.n_kv_heads, CTX, cfg.head_dim, np.float64)
    with tg.no_grad():
        model(np.array([[Q, 1]]), cache=cache, start=0)                 # a fresh cache gets one at position 0
        assert cache.structure is not None and cache.structure.length == 2
        bare = KVCache(cfg.n_layers, 1, cfg.n_kv_heads, CTX, cfg.head_dim, np.float64)
        with pytest.raises(ValueError, match="use a cache from Transformer.new_cache"):
            model(np.array([[2]]), cache=bare, start=2)
