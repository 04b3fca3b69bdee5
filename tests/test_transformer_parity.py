"""Our Transformer against an independent torch implementation (tests/torch_reference.py).

Same weights in both give the same logits, loss and every parameter gradient, for the seed GPT and
Llama-style configs (GQA, with and without QK-norm, tied and untied heads, explicit head_dim);
AdamW training follows torch's trajectory; KV-cached greedy decoding equals full-forward decoding;
the padding mask hides padded keys.

Tolerances: float64 rtol 1e-9 (atol 1e-9 x the largest magnitude of the compared array);
float32 rtol 1e-4 (atol 1e-4 x the largest magnitude). Weights are re-drawn at O(1) scale (norm
gains ~1 +- 0.2, biases ~0.2) so that every parameter visibly moves the output.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import tinygrad_reason as tg
from tinygrad_reason.nn import Transformer, TransformerConfig
from tinygrad_reason.optim import AdamW, decay_groups
from torch_reference import TorchTransformer, load_from_ours

# tiny ops: torch's intra-op threads only contend (0.9 s instead of 3 ms a step on 2 busy cores)
torch.set_num_threads(1)

VOCAB, CTX = 48, 16

CONFIGS = {
    "gpt": lambda: TransformerConfig.gpt(vocab_size=VOCAB, context_length=CTX, d_model=32, n_layers=2, n_heads=4),
    "gpt_tied": lambda: TransformerConfig.gpt(vocab_size=VOCAB, context_length=CTX, d_model=32, n_layers=2,
                                              n_heads=4, tie_embeddings=True),
    "llama_gqa_qknorm": lambda: TransformerConfig.llama(vocab_size=VOCAB, context_length=CTX, d_model=32, n_layers=2,
                                                        n_heads=4, n_kv_heads=2, qk_norm=True, mlp_hidden=48),
    "llama_gqa_tied": lambda: TransformerConfig.llama(vocab_size=VOCAB, context_length=CTX, d_model=32, n_layers=2,
                                                      n_heads=4, n_kv_heads=2, qk_norm=False, tie_embeddings=True),
    "qwen_headdim_mqa": lambda: TransformerConfig.llama(vocab_size=VOCAB, context_length=CTX, d_model=32, n_layers=2,
                                                        n_heads=4, n_kv_heads=1, head_dim=12, qk_norm=True,
                                                        mlp_hidden=40),
}
TOL = {np.float64: 1e-9, np.float32: 1e-4}
TORCH_DTYPE = {np.float64: torch.float64, np.float32: torch.float32}


def close(ours, ref, tol, what="", scale=0.0):
    """|ours - ref| <= tol * (|ref| + max(max|ref|, scale)) elementwise."""
    ours, ref = np.asarray(ours, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape, f"{what}: shape {ours.shape} vs {ref.shape}"
    np.testing.assert_allclose(ours, ref, rtol=tol, atol=tol * max(np.abs(ref).max(), scale, 1e-30), err_msg=what)


def grad_scale(ref_params) -> float:
    """The largest gradient entry of the model: the yardstick for gradients that are zero in exact
    arithmetic (a key bias shifts every score of a query equally, so its gradient is rounding noise)."""
    return max(float(p.grad.abs().max()) for p in ref_params.values())


def randomize(model: Transformer, seed: int = 1) -> Transformer:
    """O(1)-scale weights, so every parameter (norm gains, biases) matters to the output."""
    rng = np.random.default_rng(seed)
    for name, p in model.named_parameters():
        if p.ndim == 2:
            scale = 0.5 if "emb" in name else 1.0 / np.sqrt(p.shape[1])
            value = rng.standard_normal(p.shape) * scale
        elif name.endswith("bias"):
            value = rng.standard_normal(p.shape) * 0.2
        else:   # norm gains
            value = 1.0 + rng.standard_normal(p.shape) * 0.2
        p.data[...] = value.astype(p.dtype)
    return model


def make_pair(name: str, dtype=np.float64, seed: int = 1):
    cfg = CONFIGS[name]()
    ours = randomize(Transformer(cfg).astype(dtype), seed)
    ref = load_from_ours(TorchTransformer(cfg, TORCH_DTYPE[dtype]), ours)
    return cfg, ours, ref


def batch(rng, b=3, t=CTX):
    ids = rng.integers(0, VOCAB, (b, t))
    targets = rng.integers(0, VOCAB, (b, t))
    targets[0, :5] = -100      # ignored positions (a prompt) count in neither loss nor grads
    return ids, targets


# ---------------------------------------------------------------- forward, loss, every gradient
@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_logits_loss_and_every_gradient(name, dtype):
    cfg, ours, ref = make_pair(name, dtype)
    tol = TOL[dtype]
    ids, targets = batch(np.random.default_rng(2))

    logits = ours(ids)
    assert logits.dtype == dtype
    ref_logits = ref(ids)
    close(logits.numpy(), ref_logits.detach().numpy(), tol, "logits")

    loss = ours.loss(ids, targets)
    ref_loss = ref.loss(ids, targets)
    close(loss.item(), ref_loss.item(), tol, "loss")

    loss.backward()
    ref_loss.backward()
    ref_params = dict(ref.named_parameters())
    names = [n for n, _ in ours.named_parameters()]
    assert set(names) == set(ref_params), "parameter names differ from the reference's"
    scale = grad_scale(ref_params)
    for n, p in ours.named_parameters():
        assert p.grad is not None, f"{n} got no gradient"
        assert p.grad.dtype == dtype, f"{n}: gradient dtype {p.grad.dtype}"
        close(p.grad.numpy(), ref_params[n].grad.numpy(), tol, f"grad of {n}", scale)


def test_parameter_names_cover_the_config_features():
    """The configs really exercise what they claim (a reference missing a piece would not load)."""
    keys = {n: set(Transformer(CONFIGS[n]()).state_dict()) for n in CONFIGS}
    assert {"pos_emb.weight", "blocks.0.attn_norm.bias", "blocks.1.mlp.fc.bias", "lm_head.weight"} <= keys["gpt"]
    assert "lm_head.weight" not in keys["gpt_tied"] and "lm_head.weight" not in keys["llama_gqa_tied"]
    assert {"blocks.0.attn.q_norm.weight", "blocks.0.attn.k_norm.weight", "blocks.0.mlp.gate.weight"} \
        <= keys["llama_gqa_qknorm"]
    assert not any(k.endswith("bias") for k in keys["llama_gqa_qknorm"])
    assert "blocks.0.attn.q_norm.weight" not in keys["llama_gqa_tied"]
    sd = Transformer(CONFIGS["qwen_headdim_mqa"]()).state_dict()
    assert sd["blocks.0.attn.q_proj.weight"].shape == (48, 32) and sd["blocks.0.attn.k_proj.weight"].shape == (12, 32)


def test_float64_agreement_is_not_vacuous():
    """A changed weight moves logits far beyond the float64 tolerance (the comparison can fail)."""
    _, ours, ref = make_pair("llama_gqa_qknorm")
    ids, _ = batch(np.random.default_rng(2))
    ours.blocks[1].attn.k_norm.weight.data[3] += 1e-3
    diff = np.abs(ours(ids).numpy() - ref(ids).detach().numpy()).max()
    assert diff > 1e-6


# ---------------------------------------------------------------- AdamW trajectory
@pytest.mark.parametrize("name", ["gpt", "llama_gqa_qknorm"])
def test_adamw_follows_torch_trajectory(name):
    cfg, ours, ref = make_pair(name, np.float64)
    rng = np.random.default_rng(3)
    groups = decay_groups(ours, 0.1)
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in groups[0]["params"]) and all(p.ndim == 1 for p in groups[1]["params"])
    name_of = {id(p): n for n, p in ours.named_parameters()}
    ref_params = dict(ref.named_parameters())
    ref_groups = [{"params": [ref_params[name_of[id(p)]] for p in g["params"]], "weight_decay": g["weight_decay"]}
                  for g in groups]
    opt = AdamW(groups, lr=1e-3, betas=(0.9, 0.95))
    ref_opt = torch.optim.AdamW(ref_groups, lr=1e-3, betas=(0.9, 0.95), eps=1e-8)
    start = {n: p.numpy().copy() for n, p in ours.named_parameters()}
    losses, ref_losses = [], []
    for _ in range(20):
        ids, targets = batch(rng, b=2)
        opt.zero_grad()
        loss = ours.loss(ids, targets)
        loss.backward()
        opt.step()
        ref_opt.zero_grad()
        ref_loss = ref.loss(ids, targets)
        ref_loss.backward()
        ref_opt.step()
        losses.append(loss.item())
        ref_losses.append(ref_loss.item())
    close(losses, ref_losses, 1e-9, "losses per step")
    for n, p in ours.named_parameters():
        close(p.numpy(), ref_params[n].detach().numpy(), 1e-9, f"{n} after 20 steps")
        if not n.endswith("k_proj.bias"):   # its gradient is zero in exact arithmetic (see grad_scale)
            assert not np.allclose(p.numpy(), start[n]), f"{n} did not move"


# ---------------------------------------------------------------- decoding with the KV cache
def greedy_full(model, prompt, n_new):
    seq = np.array(prompt)
    steps = []
    for _ in range(n_new):
        logits = model(seq).numpy()[:, -1]
        steps.append(logits)
        seq = np.concatenate([seq, logits.argmax(-1)[:, None]], axis=1)
    return seq, steps


def greedy_cached(model, prompt, n_new, prefill_chunks=(2,)):
    """Prefill the prompt in chunks (split at prefill_chunks), then feed one token at a time."""
    prompt = np.array(prompt)
    cache = model.new_cache(prompt.shape[0])
    bounds = [0, *prefill_chunks, prompt.shape[1]]
    for a, b in zip(bounds[:-1], bounds[1:]):
        logits = model(prompt[:, a:b], cache=cache, start=a).numpy()[:, -1]
    seq, steps = prompt, []
    for _ in range(n_new):
        steps.append(logits)
        nxt = logits.argmax(-1)[:, None]
        seq = np.concatenate([seq, nxt], axis=1)
        if len(steps) < n_new:
            logits = model(nxt, cache=cache, start=seq.shape[1] - 1).numpy()[:, -1]
    return seq, steps


@pytest.mark.parametrize("name", ["gpt", "llama_gqa_qknorm", "qwen_headdim_mqa"])
def test_kv_cached_greedy_equals_full_forward(name):
    _, ours, ref = make_pair(name, np.float64)
    prompt = np.random.default_rng(4).integers(0, VOCAB, (2, 5))
    n_new = CTX - prompt.shape[1]
    with tg.no_grad():
        full, full_steps = greedy_full(ours, prompt, n_new)
        cached, cached_steps = greedy_cached(ours, prompt, n_new)
    assert full.shape == (2, CTX)
    np.testing.assert_array_equal(cached, full)
    for i, (a, b) in enumerate(zip(cached_steps, full_steps)):
        close(a, b, 1e-9, f"next-token logits at step {i}")
    # and the full-forward decode is the torch reference's decode
    with torch.no_grad():
        seq = prompt
        for _ in range(n_new):
            seq = np.concatenate([seq, ref(seq)[:, -1].argmax(-1).numpy()[:, None]], axis=1)
    np.testing.assert_array_equal(full, seq)


def test_kv_cache_rejects_overflow_and_wrong_batch():
    _, ours, _ = make_pair("llama_gqa_tied", np.float64)
    cache = ours.new_cache(2, max_len=4)
    ids = np.zeros((2, 3), dtype=np.int64)
    with tg.no_grad():
        ours(ids, cache=cache, start=0)
        with pytest.raises(ValueError, match="exceed the cache length 4"):
            ours(ids, cache=cache, start=3)
        with pytest.raises(ValueError, match="batch 1 differs"):
            ours(ids[:1], cache=cache, start=0)


# ---------------------------------------------------------------- padding
def test_left_padding_rope_matches_unpadded_row():
    """RoPE scores depend only on relative position, so a left-padded row with its padding masked
    gives exactly the unpadded row's logits on its real positions."""
    for name in ("llama_gqa_qknorm", "llama_gqa_tied", "qwen_headdim_mqa"):
        _, ours, _ = make_pair(name, np.float64)
        rng = np.random.default_rng(5)
        full = rng.integers(0, VOCAB, (1, CTX))
        short = rng.integers(0, VOCAB, (1, 9))
        pad = CTX - short.shape[1]
        ids = np.concatenate([full, np.concatenate([np.full((1, pad), 7), short], axis=1)])
        mask = np.ones_like(ids, dtype=bool)
        mask[1, :pad] = False
        with tg.no_grad():
            batched = ours(ids, pad_mask=mask).numpy()
            alone = ours(short).numpy()
            alone_full = ours(full).numpy()
            unmasked = ours(ids).numpy()
        close(batched[1, pad:], alone[0], 1e-9, f"{name}: left-padded row vs alone")
        close(batched[0], alone_full[0], 1e-9, f"{name}: unpadded row in a padded batch")
        assert np.all(np.isfinite(batched)), "all-padding query rows must stay finite"
        assert np.abs(unmasked[1, pad:] - alone[0]).max() > 1e-3, "without the mask the padding leaks in"


@pytest.mark.parametrize("name", ["gpt", "llama_gqa_qknorm"])
def test_padding_mask_hides_padded_keys(name):
    """For any position scheme: what the padded positions hold cannot change the real positions'
    logits, right padding leaves every real prefix equal to the row alone, and the masked batch equals
    the torch reference run with the same mask."""
    _, ours, ref = make_pair(name, np.float64)
    rng = np.random.default_rng(6)
    ids = rng.integers(0, VOCAB, (3, CTX))
    mask = np.ones_like(ids, dtype=bool)
    mask[1, :6] = False       # left padding
    mask[2, 10:] = False      # right padding
    other = ids.copy()
    other[~mask] = rng.integers(0, VOCAB, (~mask).sum())
    with tg.no_grad():
        a = ours(ids, pad_mask=mask).numpy()
        b = ours(other, pad_mask=mask).numpy()
        right_alone = ours(ids[2:3, :10]).numpy()
    with torch.no_grad():
        r = ref(ids, pad_mask=mask).numpy()
    close(a[mask], b[mask], 1e-9, "real positions vs changed padding")
    close(a[2, :10], right_alone[0], 1e-9, "right-padded row vs alone")
    close(a, r, 1e-9, "masked logits vs torch reference")
    # gradients through a masked batch match too (the mask is in the backward as well)
    targets = np.where(mask, rng.integers(0, VOCAB, ids.shape), -100)
    ours.loss(ids, targets, pad_mask=mask).backward()
    logits = ref(ids, pad_mask=mask)
    torch.nn.functional.cross_entropy(logits.reshape(-1, VOCAB), torch.from_numpy(targets).reshape(-1)).backward()
    ref_params = dict(ref.named_parameters())
    scale = grad_scale(ref_params)
    for n, p in ours.named_parameters():
        close(p.grad.numpy(), ref_params[n].grad.numpy(), 1e-9, f"masked grad of {n}", scale)


# ---------------------------------------------------------------- hidden states
@pytest.mark.parametrize("name", ["gpt", "gpt_tied", "llama_gqa_qknorm", "llama_gqa_tied"])
def test_hidden_states_and_head(name):
    cfg, ours, ref = make_pair(name, np.float64)
    ids, _ = batch(np.random.default_rng(7), b=2, t=11)
    with tg.no_grad():
        hidden = ours.hidden_states(ids)
        logits = ours(ids).numpy()
    assert hidden.shape == (2, 11, cfg.d_model)
    head = ours.tok_emb.weight if cfg.tie_embeddings else ours.lm_head.weight
    assert (ours.lm_head is None) == cfg.tie_embeddings
    close(logits, hidden.numpy() @ head.numpy().T, 1e-12, "logits vs hidden @ head^T")
    with torch.no_grad():
        close(hidden.numpy(), ref.hidden_states(ids).numpy(), 1e-9, "hidden states vs torch")
