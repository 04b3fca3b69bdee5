"""nn/moe.py, the mixture-of-experts MLP, and the Transformer with it (TransformerConfig.moe_*).

- gradcheck (float64) of the MoE layer w.r.t. its input, router and expert weights: softmax and sigmoid
  scores, renormalized top-k gates or not, top-1, shared experts, GELU experts; and with two identical
  router rows, so that tied scores sit on the top-k boundary. Also of both auxiliary losses.
- ties: equal scores go to the lowest expert index, as torch.sort(descending=True, stable=True) orders
  them (torch.topk has no rule for ties: torch 2.13 on CPU picks [2, 3] of four equal scores for k=2).
- property (hypothesis): the dropless dispatch equals the dense formula, every expert on every token
  weighted by its masked gate, in value (numpy, ties broken by an explicit sort) and in every gradient
  (the dense formula in our ops), for random sizes, E, k, scorings, and integer data full of ties.
- transformers' Qwen3MoeForCausalLM (eager attention, eager experts) on tiny random configs, loaded
  into ours by models/hf.py: logits; the loss with labels and output_router_logits=True (cross-entropy
  + router_aux_loss_coef * aux_loss), the aux loss itself, with and without an attention mask; every
  parameter gradient; the z-loss against transformers' switch_transformers router_z_loss_func.
- KV-cached decoding equals the full forward for an MoE config; config validation and round trips.

Tolerances against transformers, relative to the largest magnitude of the compared array: float32
1e-5 (logits, losses), 1e-4 (gradients); float64 1e-6, because transformers computes parts of its
float64 model in float32: the router's softmax and top-k (softmax(..., dtype=torch.float)), the aux
loss's sums, RMSNorm, RoPE and the causal-LM loss (logits.float()).
"""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

import tinygrad_reason as tg
from tinygrad_reason import functional as F
from tinygrad_reason.gradcheck import gradcheck
from tinygrad_reason.models import config_from_hf, load_hf_weights
from tinygrad_reason.models.hf import checkpoint_layout
from tinygrad_reason.nn import (MLP, MoE, SwiGLU, Transformer, TransformerConfig, load_balancing_loss, route,
                                router_z_loss, top_k_experts)
from tinygrad_reason.tensor import Tensor, grad
from test_hf_parity import close

torch.set_num_threads(1)   # tiny ops: extra intra-op threads only contend


def fill(module, rng, integer=False):
    """O(1)-scale weights: matrices N(0, 1/fan-in), norm gains 1 +- 0.2, biases N(0, 0.25);
    integer=True: every entry in {-1, 0, 1}, for exact ties."""
    for name, p in module.named_parameters():
        if integer:
            value = rng.integers(-1, 2, p.shape).astype(np.float64)
        elif p.ndim >= 2:
            value = rng.standard_normal(p.shape) / np.sqrt(p.shape[-1])
        elif name.endswith("bias"):
            value = 0.5 * rng.standard_normal(p.shape)
        else:
            value = 1.0 + 0.2 * rng.standard_normal(p.shape)
        p.data[...] = value.astype(p.dtype)
    return module


def tensor_slots(module):
    """(owner module, attribute) of every parameter, in named_parameters order."""
    slots = []
    for name, _ in module.named_parameters():
        *path, attr = name.split(".")
        owner = module
        for part in path:
            owner = owner[int(part)] if part.isdigit() else getattr(owner, part)
        slots.append((owner, attr))
    return slots


def as_function(moe):
    """moe as a function of (x, *its parameters), for gradcheck."""
    slots = tensor_slots(moe)

    def fn(x, *weights):
        for (owner, attr), w in zip(slots, weights):
            setattr(owner, attr, w)
        return moe(x)
    return fn


# ---------------------------------------------------------------- gradcheck
GRADCHECK_CASES = {
    "softmax": dict(),
    "softmax_norm_topk_shared": dict(norm_topk=True, n_shared=1),
    "sigmoid_norm_topk_gelu": dict(scoring="sigmoid", norm_topk=True, mlp="gelu"),
    "top1": dict(top_k=1),
    "sigmoid_top3": dict(scoring="sigmoid", top_k=3),
}


@pytest.mark.parametrize("case", list(GRADCHECK_CASES))
def test_gradcheck_input_router_and_experts(case):
    kw = dict(dict(top_k=2), **GRADCHECK_CASES[case])
    rng = np.random.default_rng(1)
    moe = fill(MoE(4, 4, kw.pop("top_k"), 3, dtype=np.float64, **kw), rng)
    x = Tensor(rng.standard_normal((2, 5, 4)), requires_grad=True)
    params = [Tensor(p.numpy().copy(), requires_grad=True) for p in moe.parameters()]
    assert gradcheck(as_function(moe), [x, *params])


def test_gradcheck_with_tied_router_rows():
    """Experts 1 and 2 have identical router rows, so every token's scores tie there; where the pair
    straddles the top-k boundary the lower index is routed. Checked w.r.t. the input and the experts
    (a move of x keeps the tie); not w.r.t. the router weight, where moving one tied row breaks the
    tie and the output jumps: no derivative exists there."""
    rng = np.random.default_rng(2)
    moe = fill(MoE(4, 4, 2, 3, norm_topk=True, dtype=np.float64), rng)
    moe.router.weight.data[2] = moe.router.weight.data[1]
    x_data = rng.standard_normal((12, 4))
    logits = moe.router(Tensor(x_data)).numpy()
    np.testing.assert_array_equal(logits[:, 1], logits[:, 2])          # the tie is exact
    _, chosen = route(moe.router(Tensor(x_data)), 2, "softmax", True)
    straddle = (chosen == 1).any(axis=1) & ~(chosen == 2).any(axis=1)
    assert straddle.sum() >= 2 and not (chosen == 2).any(axis=1)[~(chosen == 1).any(axis=1)].any()
    assert moe.parameters()[0] is moe.router.weight
    router = Tensor(moe.router.weight.numpy().copy())            # held fixed: requires no grad
    experts = [Tensor(p.numpy().copy(), requires_grad=True) for p in moe.parameters()[1:]]
    with_router = as_function(moe)
    x = Tensor(x_data, requires_grad=True)
    assert gradcheck(lambda x, *weights: with_router(x, router, *weights), [x, *experts])


def test_gradcheck_auxiliary_losses():
    rng = np.random.default_rng(3)
    layers = [Tensor(rng.standard_normal((6, 5)), requires_grad=True) for _ in range(2)]
    mask = np.array([[1, 1, 1], [1, 1, 0]], dtype=bool)
    for pad_mask in (None, mask):
        assert gradcheck(lambda a, b: load_balancing_loss([a, b], 5, 2, pad_mask), layers)
        assert gradcheck(lambda a, b: router_z_loss([a, b], pad_mask), layers)


# ---------------------------------------------------------------- ties
def test_ties_go_to_the_lowest_expert_index_like_a_stable_sort():
    scores = np.array([[0.25, 0.25, 0.25, 0.25], [0.1, 0.3, 0.3, 0.3], [0.3, 0.3, 0.1, 0.3], [0.1, 0.2, 0.4, 0.4],
                       [0.4, 0.1, 0.1, 0.4]])
    want = {1: [[0], [1], [0], [2], [0]], 2: [[0, 1], [1, 2], [0, 1], [2, 3], [0, 3]],
            3: [[0, 1, 2], [1, 2, 3], [0, 1, 3], [2, 3, 1], [0, 3, 1]]}
    for k, expected in want.items():
        np.testing.assert_array_equal(top_k_experts(scores, k), expected)
    # many random rows with ties: the same choice, in the same order, as torch's stable descending sort
    rng = np.random.default_rng(4)
    many = rng.integers(0, 3, (300, 8)).astype(np.float64)
    for dtype in (np.float64, np.float32):
        ref = torch.sort(torch.from_numpy(many.astype(dtype)), dim=-1, descending=True, stable=True).indices.numpy()
        for k in (1, 2, 3, 5, 8):
            np.testing.assert_array_equal(top_k_experts(many.astype(dtype), k), ref[:, :k], err_msg=f"k={k}")


# ---------------------------------------------------------------- dropless dispatch == dense formula
def np_ffn(ffn, x):
    if isinstance(ffn, SwiGLU):
        g, u = x @ ffn.gate.weight.numpy().T, x @ ffn.up.weight.numpy().T
        return (g / (1 + np.exp(-g)) * u) @ ffn.down.weight.numpy().T
    erf = np.vectorize(math.erf)
    h = x @ ffn.fc.weight.numpy().T + ffn.fc.bias.numpy()
    return (0.5 * h * (1 + erf(h / np.sqrt(2)))) @ ffn.proj.weight.numpy().T + ffn.proj.bias.numpy()


def np_choice(scores, k):
    """Each row's k experts by falling score, ties to the lower index, by an explicit sort."""
    return np.array([sorted(range(scores.shape[1]), key=lambda e: (-s[e], e))[:k] for s in scores])


def np_scores(moe, x):
    logits = x @ moe.router.weight.numpy().T
    if moe.scoring == "sigmoid":
        return 1 / (1 + np.exp(-logits))
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_moe(moe, x):
    scores = np_scores(moe, x)
    chosen = np_choice(scores, moe.top_k)
    out = np.zeros_like(x)
    outs = [np_ffn(f, x) for f in moe.experts]
    for t in range(x.shape[0]):
        g = scores[t, chosen[t]]
        if moe.norm_topk:
            g = g / g.sum()
        for e, w in zip(chosen[t], g):
            out[t] += w * outs[e][t]
    if moe.shared is not None:
        out += np_ffn(moe.shared, x)
    return out


def dense_moe(moe, x):
    """Every expert on every token, each output times its gate, zero for the unchosen (our ops)."""
    logits = moe.router(x)
    scores = F.softmax(logits, axis=-1) if moe.scoring == "softmax" else F.sigmoid(logits)
    mask = np.zeros(scores.shape)
    np.put_along_axis(mask, np_choice(scores.numpy(), moe.top_k), 1.0, axis=-1)
    gates = scores * Tensor(mask)
    if moe.norm_topk:
        gates = gates / gates.sum(axis=-1, keepdims=True)
    out = None
    for e, ffn in enumerate(moe.experts):
        term = ffn(x) * gates[:, e:e + 1]
        out = term if out is None else out + term
    return out if moe.shared is None else out + moe.shared(x)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 9), d=st.integers(1, 5), e=st.integers(1, 6), k_frac=st.floats(0, 1),
       hidden=st.integers(1, 4), scoring=st.sampled_from(["softmax", "sigmoid"]), norm_topk=st.booleans(),
       shared=st.integers(0, 2), mlp=st.sampled_from(["swiglu", "gelu"]), integer=st.booleans(),
       seed=st.integers(0, 2 ** 16))
def test_dropless_dispatch_equals_every_expert_on_every_token(n, d, e, k_frac, hidden, scoring, norm_topk, shared,
                                                             mlp, integer, seed):
    k = 1 + int(k_frac * (e - 1))
    rng = np.random.default_rng(seed)
    moe = fill(MoE(d, e, k, hidden, mlp, shared, scoring, norm_topk, bias=mlp == "gelu", dtype=np.float64),
               rng, integer)
    x_data = rng.integers(-1, 2, (n, d)).astype(np.float64) if integer else rng.standard_normal((n, d))
    x = Tensor(x_data, requires_grad=True)
    out = moe(x)
    np.testing.assert_allclose(out.numpy(), np_moe(moe, x_data), rtol=1e-12, atol=1e-12)
    v = Tensor(rng.standard_normal(out.shape))
    params = moe.parameters()
    got = grad((out * v).sum(), [x, *params], allow_unused=True)
    want = grad((dense_moe(moe, x) * v).sum(), [x, *params], allow_unused=True)
    for i, (a, b) in enumerate(zip(got, want)):
        a = np.zeros(b.shape) if a is None else a.numpy()          # an expert without tokens gets no gradient
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-10, atol=1e-12, err_msg=f"gradient {i}")


def test_each_expert_runs_only_on_its_tokens():
    """Dropless dispatch, not dense: an expert sees exactly the rows routed to it."""
    rng = np.random.default_rng(5)
    moe = fill(MoE(4, 6, 2, 3, dtype=np.float64), rng)
    seen = {}
    for i, ffn in enumerate(moe.experts):
        def spy(x, _ffn=ffn, _i=i, _forward=type(ffn).forward):
            seen[_i] = x.shape[0]
            return _forward(_ffn, x)
        ffn.forward = spy
    x = rng.standard_normal((10, 4))
    moe(Tensor(x))
    chosen = np_choice(np_scores(moe, x), 2)
    assert {i: int((chosen == i).sum()) for i in range(6) if (chosen == i).any()} == seen
    assert sum(seen.values()) == 20


# ---------------------------------------------------------------- transformers' Qwen3-MoE
try:
    import transformers
except ImportError:          # pinned in the `test` extra; only the tests against it need it
    transformers = None
needs_transformers = pytest.mark.skipif(transformers is None, reason="transformers is not installed")

VOCAB, CTX = 64, 32
SIZES = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
             intermediate_size=48, max_position_embeddings=CTX, rms_norm_eps=1e-6, hidden_act="silu",
             num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16, router_aux_loss_coef=0.05,
             tie_word_embeddings=False, rope_parameters=dict(rope_type="default", rope_theta=10000.0))
KINDS = {
    "norm_topk": dict(norm_topk_prob=True),
    "plain": dict(norm_topk_prob=False),
    "dense_first_layer": dict(norm_topk_prob=True, mlp_only_layers=[0]),
    "sparse_step_2": dict(norm_topk_prob=False, decoder_sparse_step=2, num_experts_per_tok=1),
}
OURS = dict(vocab_size=VOCAB, context_length=CTX, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=8,
            mlp_hidden=48, norm_eps=1e-6, moe_experts=4, moe_top_k=2, moe_hidden=16, moe_aux_coef=0.05)
EXPECTED = {
    "norm_topk": lambda: TransformerConfig.qwen3(**OURS, moe_norm_topk=True),
    "plain": lambda: TransformerConfig.qwen3(**OURS),
    "dense_first_layer": lambda: TransformerConfig.qwen3(**OURS, moe_norm_topk=True, moe_dense_layers=(0,)),
    "sparse_step_2": lambda: TransformerConfig.qwen3(**{**OURS, "moe_top_k": 1}, moe_every=2),
}


def hf_config(kind: str):
    cfg = transformers.Qwen3MoeConfig(**{**SIZES, **KINDS[kind]})
    cfg._attn_implementation = "eager"
    cfg._experts_implementation = "eager"      # the loop over experts written in modeling_qwen3_moe.py
    return cfg


def build(kind: str, dtype):
    """HF's model at O(1)-scale random weights, and ours from its config.json, loaded with its weights."""
    torch.manual_seed(0)
    cfg = hf_config(kind)
    return randomized_pair(transformers.Qwen3MoeForCausalLM(cfg), cfg, dtype)


def randomized_pair(hf, cfg, dtype):
    """`hf` at O(1)-scale random weights in `dtype`, and ours built from its config and loaded with them."""
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in hf.named_parameters():
            if p.ndim >= 2:
                scale = 0.5 if "embed" in n else p.shape[-1] ** -0.5
                p.copy_(torch.randn(p.shape, generator=gen) * scale)
            else:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
    hf = hf.to(torch.float64 if dtype == np.float64 else torch.float32).eval()
    ours = Transformer(config_from_hf(cfg.to_dict())).astype(dtype)
    load_hf_weights(ours, {n: p.detach().numpy() for n, p in hf.named_parameters()})
    return hf, ours


def data(b=2, t=20, seed=2):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, VOCAB, (b, t))
    labels = rng.integers(0, VOCAB, (b, t))
    labels[0, :4] = -100                              # a prompt: no loss there
    # HF's causal-LM loss predicts labels[:, t + 1] at position t; ours takes the shifted targets
    targets = np.concatenate([labels[:, 1:], np.full((b, 1), -100)], axis=1)
    return ids, labels, targets


@needs_transformers
@pytest.mark.parametrize("kind", list(KINDS))
def test_config_from_hf_gives_the_expected_config(kind):
    cfg = config_from_hf(hf_config(kind).to_dict())
    assert cfg == EXPECTED[kind]()
    model = Transformer(cfg)
    assert [isinstance(b.mlp, MoE) for b in model.blocks] == \
        [isinstance(m.mlp, transformers.models.qwen3_moe.modeling_qwen3_moe.Qwen3MoeSparseMoeBlock)
         for m in transformers.Qwen3MoeForCausalLM(hf_config(kind)).model.layers]


@needs_transformers
@pytest.mark.parametrize("dtype, tol", [(np.float32, 1e-5), (np.float64, 1e-6)], ids=["f32", "f64"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_logits_match_hf(kind, dtype, tol):
    hf, ours = build(kind, dtype)
    ids, _, _ = data()
    with torch.no_grad():
        ref = hf(input_ids=torch.from_numpy(ids)).logits.numpy()
    got = ours(ids)
    assert got.dtype == dtype and np.abs(ref).max() > 1.0
    close(got.numpy(), ref, tol, f"{kind} logits")


@needs_transformers
@pytest.mark.parametrize("dtype, tol, gtol", [(np.float32, 1e-5, 1e-4), (np.float64, 1e-6, 1e-6)],
                         ids=["f32", "f64"])
@pytest.mark.parametrize("kind", ["norm_topk", "plain", "dense_first_layer"])
def test_loss_with_aux_and_every_gradient_match_hf(kind, dtype, tol, gtol):
    hf, ours = build(kind, dtype)
    ids, labels, targets = data(seed=3)
    out = hf(input_ids=torch.from_numpy(ids), labels=torch.from_numpy(labels), output_router_logits=True)
    out.loss.backward()
    terms = ours.loss_terms(ids, targets)
    close(terms["load_balancing"].item(), out.aux_loss.item(), tol, "aux loss")
    loss = ours.loss(ids, targets)
    close(loss.item(), out.loss.item(), tol, "loss")
    assert abs(loss.item() - terms["cross_entropy"].item()) > 1e3 * tol      # the aux term is in the comparison
    loss.backward()
    layout, own = checkpoint_layout(ours), dict(ours.named_parameters())
    scale = max(float(p.grad.abs().max()) for p in hf.parameters())
    compared = set()
    for n, p in hf.named_parameters():
        for target, ref in layout.convert(n, p.grad.numpy()):
            mine = own[target].grad
            assert mine is not None, f"{target} got no gradient (no token routed to it?)"
            np.testing.assert_allclose(mine.numpy(), ref, rtol=gtol, atol=gtol * scale, err_msg=f"grad of {target}")
            compared.add(target)
    assert compared == set(own)


@needs_transformers
def test_aux_loss_with_an_attention_mask_and_the_z_loss_match_hf():
    hf, ours = build("plain", np.float32)
    ids, labels, targets = data(seed=4)
    mask = np.ones_like(ids)
    mask[1, 13:] = 0                                   # right padding: every query row sees a real key
    out = hf(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask), labels=torch.from_numpy(labels),
             output_router_logits=True)
    pad = mask.astype(bool)
    terms = ours.loss_terms(ids, targets, pad_mask=pad)
    close(terms["load_balancing"].item(), out.aux_loss.item(), 1e-5, "masked aux loss")
    close(ours.loss(ids, targets, pad_mask=pad).item(), out.loss.item(), 1e-5, "masked loss")
    router_logits = []
    ours.hidden_states(ids, pad, router_logits=router_logits)
    hf_logits = torch.cat(out.router_logits)                   # (layers * tokens, experts)
    close(np.concatenate([t.numpy() for t in router_logits]), hf_logits.detach().numpy(), 1e-5, "router logits")
    unmasked = load_balancing_loss(router_logits, 4, 2).item()
    assert abs(unmasked - out.aux_loss.item()) > 1e-4          # the mask changes it
    z_loss = transformers.models.switch_transformers.modeling_switch_transformers.router_z_loss_func
    keep = torch.from_numpy(np.tile(pad.reshape(-1), 2))
    close(terms["router_z"].item(), z_loss(hf_logits[keep][None]).item(), 1e-5, "masked z loss")
    close(router_z_loss(router_logits).item(), z_loss(hf_logits[None]).item(), 1e-5, "z loss")
    # the z coefficient adds it to the loss
    with_z = Transformer(dataclasses.replace(ours.cfg, moe_z_coef=0.01))
    with_z.load_state_dict(ours.state_dict())
    plain = ours.loss_terms(ids, targets)
    close(with_z.loss(ids, targets).item(), plain["cross_entropy"].item() + 0.05 * plain["load_balancing"].item()
          + 0.01 * plain["router_z"].item(), 1e-6, "loss with the z term")


# ---------------------------------------------------------------- decoding with the KV cache
def test_kv_cached_greedy_decoding_equals_the_full_forward():
    cfg = TransformerConfig.qwen3(**{**OURS, "moe_dense_layers": (0,), "n_layers": 3}, moe_shared_experts=1,
                                  moe_norm_topk=True)
    model = fill(Transformer(cfg).astype(np.float64), np.random.default_rng(6))
    prompt = np.random.default_rng(7).integers(0, VOCAB, (2, 5))
    with tg.no_grad():
        seq = prompt
        full_steps = []
        for _ in range(8):
            logits = model(seq).numpy()[:, -1]
            full_steps.append(logits)
            seq = np.concatenate([seq, logits.argmax(-1)[:, None]], axis=1)
        cache = model.new_cache(2)
        model(prompt[:, :2], cache=cache, start=0)
        logits = model(prompt[:, 2:], cache=cache, start=2).numpy()[:, -1]
        cached = prompt
        for i in range(8):
            close(logits, full_steps[i], 1e-9, f"step {i}")
            cached = np.concatenate([cached, logits.argmax(-1)[:, None]], axis=1)
            logits = model(cached[:, -1:], cache=cache, start=cached.shape[1] - 1).numpy()[:, -1]
    np.testing.assert_array_equal(cached, seq)
    assert len(set(seq[:, 5:].reshape(-1).tolist())) > 1        # not one token repeated


@needs_transformers
def test_greedy_decoding_matches_hf():
    hf, ours = build("norm_topk", np.float64)
    seq = np.random.default_rng(8).integers(0, VOCAB, (2, 4))
    ref = seq
    with tg.no_grad(), torch.no_grad():
        for _ in range(6):
            seq = np.concatenate([seq, ours(seq).numpy()[:, -1].argmax(-1)[:, None]], axis=1)
            ref = np.concatenate([ref, hf(input_ids=torch.from_numpy(ref)).logits[:, -1].argmax(-1).numpy()[:, None]],
                                 axis=1)
    np.testing.assert_array_equal(seq, ref)


# ---------------------------------------------------------------- the config
def test_dense_configs_are_unchanged_and_moe_configs_round_trip():
    dense = TransformerConfig.llama(vocab_size=16, context_length=8, d_model=8, n_layers=2, n_heads=2)
    assert dense.moe_experts == 0 and dense.moe_hidden is None
    assert not any(isinstance(b.mlp, MoE) for b in Transformer(dense).blocks)
    moe = EXPECTED["dense_first_layer"]()
    assert TransformerConfig.from_dict(moe.to_dict()) == moe
    assert json.loads(json.dumps(moe.to_dict())) == moe.to_dict()                        # JSON-ready
    assert TransformerConfig.from_dict(json.loads(json.dumps(moe.to_dict()))) == moe
    blocks = Transformer(moe).blocks
    assert isinstance(blocks[0].mlp, SwiGLU) and isinstance(blocks[1].mlp, MoE)
    names = set(Transformer(moe).state_dict())
    assert {"blocks.1.mlp.router.weight", "blocks.1.mlp.experts.3.down.weight", "blocks.0.mlp.gate.weight"} <= names
    assert Transformer(moe).state_dict()["blocks.1.mlp.experts.0.gate.weight"].shape == (16, 32)
    gelu = TransformerConfig.gpt(vocab_size=16, context_length=8, d_model=8, n_layers=1, n_heads=2, moe_experts=3,
                                 moe_top_k=1, moe_shared_experts=2)
    mlp = Transformer(gelu).blocks[0].mlp
    assert isinstance(mlp.experts[0], MLP) and mlp.shared.fc.weight.shape == (2 * 32, 8)


BASE = dict(vocab_size=16, context_length=8, d_model=8, n_layers=2, n_heads=2)


@pytest.mark.parametrize("changes, message", [
    (dict(moe_experts=-1), "moe_experts must be a non-negative integer"),
    (dict(moe_experts=2.0), "moe_experts must be a non-negative integer"),
    (dict(moe_top_k=3), r"moe_top_k=3 is only read with moe_experts > 0"),
    (dict(moe_norm_topk=True), "moe_norm_topk=True is only read with moe_experts > 0"),
    (dict(moe_experts=4, moe_top_k=5), r"moe_top_k \(5\) must be at most moe_experts \(4\)"),
    (dict(moe_experts=4, moe_top_k=0), "moe_top_k must be a positive integer"),
    (dict(moe_experts=4, moe_hidden=0), "moe_hidden must be a positive integer"),
    (dict(moe_experts=4, moe_shared_experts=-1), "moe_shared_experts must be a non-negative integer"),
    (dict(moe_experts=4, moe_router="relu"), "moe_router must be one of"),
    (dict(moe_experts=4, moe_norm_topk="yes"), "moe_norm_topk must be a bool"),
    (dict(moe_experts=4, moe_aux_coef=-0.1), "moe_aux_coef must be a non-negative number"),
    (dict(moe_experts=4, moe_z_coef="0.1"), "moe_z_coef must be a non-negative number"),
    (dict(moe_experts=4, moe_every=0), "moe_every must be a positive integer"),
    (dict(moe_experts=4, moe_dense_layers=(2,)), r"moe_dense_layers must be layer indices in \[0, 2\)"),
    (dict(moe_experts=4, moe_every=3), "no layer is MoE"),
    (dict(moe_experts=4, moe_dense_layers=(0, 1)), "no layer is MoE"),
])
def test_bad_moe_configs_fail_naming_the_field(changes, message):
    with pytest.raises(ValueError, match=message):
        TransformerConfig.llama(**BASE, **changes)


@needs_transformers
def test_hf_refuses_what_qwen3_moe_cannot_hold():
    with pytest.raises(ValueError, match="use_sliding_window"):
        config_from_hf({**hf_config("plain").to_dict(), "use_sliding_window": True, "sliding_window": 8})
    for changes in (dict(moe_router="sigmoid"), dict(moe_shared_experts=1)):
        model = Transformer(dataclasses.replace(EXPECTED["plain"](), **changes))
        with pytest.raises(ValueError, match="matches Qwen3-MoE only"):
            checkpoint_layout(model)
    # a dense Qwen3-MoE config (num_experts 0) is plain Qwen3
    assert config_from_hf({**hf_config("plain").to_dict(), "num_experts": 0}) == \
        TransformerConfig.qwen3(**{k: v for k, v in OURS.items() if not k.startswith("moe_")})
    hf, ours = build("plain", np.float32)
    tensors = {n: p.detach().numpy() for n, p in hf.named_parameters()}
    del tensors["model.layers.1.mlp.experts.down_proj"]
    with pytest.raises(ValueError, match=r"missing: \['model.layers.1.mlp.experts.down_proj'\]"):
        load_hf_weights(ours, tensors)
