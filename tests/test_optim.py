"""Optimizers against torch.optim, parameter groups, the warmup + cosine schedule, gradient clipping
against torch.nn.utils.clip_grad_norm_, gradient accumulation, optimizer state round trips and
hyperparameter validation.

Trajectories run in float64 and are compared with rtol = atol = 1e-10 after each of 20 steps.
"""
from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch

import tinygrad_reason as tg
from tinygrad_reason import functional as F
from tinygrad_reason.nn import LayerNorm, Linear, Module
from tinygrad_reason.optim import SGD, AdamW, clip_grad_norm, decay_groups, warmup_cosine

torch.set_num_threads(1)   # tiny ops: extra intra-op threads only contend
TOL = 1e-10
N_IN, N_HID, N_CLS = 6, 16, 5


class Net(Module):
    """Linear -> GELU -> LayerNorm -> Linear: matrices, biases and norm gains to optimize."""

    def __init__(self):
        self.fc = Linear(N_IN, N_HID)
        self.norm = LayerNorm(N_HID)
        self.out = Linear(N_HID, N_CLS)

    def forward(self, x):
        return self.out(self.norm(F.gelu(self.fc(x))))

    def loss(self, x, y):
        return F.cross_entropy(self(tg.Tensor(x)), y)


class TorchNet(torch.nn.Module):
    def __init__(self, ours: Net):
        super().__init__()
        self.fc = torch.nn.Linear(N_IN, N_HID)
        self.norm = torch.nn.LayerNorm(N_HID)
        self.out = torch.nn.Linear(N_HID, N_CLS)
        self.double()
        with torch.no_grad():
            for n, p in self.named_parameters():
                p.copy_(torch.from_numpy(ours.state_dict()[n]))

    def forward(self, x):
        return self.out(self.norm(torch.nn.functional.gelu(self.fc(x))))

    def loss(self, x, y):
        return torch.nn.functional.cross_entropy(self(torch.from_numpy(x)), torch.from_numpy(y))


def make_pair(seed=0):
    tg.manual_seed(seed)
    net = Net().astype(np.float64)
    rng = np.random.default_rng(seed)
    for p in net.parameters():          # non-trivial norm gains and biases
        p.data[...] += rng.standard_normal(p.shape) * 0.3
    return net, TorchNet(net)


def data(rng, n=8):
    return rng.standard_normal((n, N_IN)), rng.integers(0, N_CLS, n)


def assert_same_params(net, tnet, what):
    tp = dict(tnet.named_parameters())
    for n, p in net.named_parameters():
        np.testing.assert_allclose(p.numpy(), tp[n].detach().numpy(), rtol=TOL, atol=TOL, err_msg=f"{what}: {n}")


def run_both(net, tnet, opt, topt, steps=20, seed=1, schedule=None):
    rng = np.random.default_rng(seed)
    for step in range(steps):
        x, y = data(rng)
        if schedule is not None:
            lr = schedule(step)
            opt.set_lr(lr)
            for g in topt.param_groups:
                g["lr"] = lr
        opt.zero_grad()
        net.loss(x, y).backward()
        opt.step()
        topt.zero_grad()
        tnet.loss(x, y).backward()
        topt.step()
        assert_same_params(net, tnet, f"after step {step + 1}")


# ---------------------------------------------------------------- against torch.optim
@pytest.mark.parametrize("hyper", [
    dict(lr=0.1),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, nesterov=True),
    dict(lr=0.05, momentum=0.8, weight_decay=0.01),
    dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.1),
], ids=["plain", "momentum", "nesterov", "momentum_wd", "nesterov_wd"])
def test_sgd_matches_torch(hyper):
    net, tnet = make_pair()
    start = net.fc.weight.numpy().copy()
    run_both(net, tnet, SGD(net.parameters(), **hyper), torch.optim.SGD(tnet.parameters(), **hyper))
    assert np.abs(net.fc.weight.numpy() - start).max() > 1e-3


@pytest.mark.parametrize("hyper", [
    dict(lr=1e-2),
    dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-6, weight_decay=0.1),
    dict(lr=3e-3, betas=(0.5, 0.9), weight_decay=0.0),
], ids=["default", "gpt", "no_wd"])
def test_adamw_matches_torch(hyper):
    net, tnet = make_pair()
    start = net.out.weight.numpy().copy()
    run_both(net, tnet, AdamW(net.parameters(), **hyper), torch.optim.AdamW(tnet.parameters(), **hyper))
    assert np.abs(net.out.weight.numpy() - start).max() > 1e-2


def test_adamw_with_a_warmup_cosine_schedule_matches_torch():
    net, tnet = make_pair()
    sched = lambda s: warmup_cosine(s, 1e-2, warmup_steps=5, total_steps=20, min_lr=1e-3)  # noqa: E731
    run_both(net, tnet, AdamW(net.parameters()), torch.optim.AdamW(tnet.parameters()), schedule=sched)


def test_param_groups_with_different_weight_decay_and_lr():
    net, tnet = make_pair()
    groups = decay_groups(net, 0.5)
    names = {id(p): n for n, p in net.named_parameters()}
    assert sorted(names[id(p)] for p in groups[0]["params"]) == ["fc.weight", "out.weight"]
    assert sorted(names[id(p)] for p in groups[1]["params"]) == ["fc.bias", "norm.bias", "norm.weight", "out.bias"]
    groups[1]["lr"] = 3e-3
    tp = dict(tnet.named_parameters())
    tgroups = [{**{k: v for k, v in g.items() if k != "params"}, "params": [tp[names[id(p)]] for p in g["params"]]}
               for g in groups]
    opt = AdamW(groups, lr=1e-2, betas=(0.9, 0.95))
    assert [g["weight_decay"] for g in opt.param_groups] == [0.5, 0.0]
    assert [g["lr"] for g in opt.param_groups] == [1e-2, 3e-3]
    run_both(net, tnet, opt, torch.optim.AdamW(tgroups, lr=1e-2, betas=(0.9, 0.95)))
    # the decay really differs: the same run with decay everywhere ends elsewhere
    net2, _ = make_pair()
    opt2 = AdamW(net2.parameters(), lr=1e-2, betas=(0.9, 0.95), weight_decay=0.5)
    rng = np.random.default_rng(1)
    for _ in range(20):
        x, y = data(rng)
        opt2.zero_grad()
        net2.loss(x, y).backward()
        opt2.step()
    assert np.abs(net2.norm.weight.numpy() - net.norm.weight.numpy()).max() > 1e-3


def test_decay_groups_can_spare_embeddings():
    from tinygrad_reason.nn import Transformer, TransformerConfig
    m = Transformer(TransformerConfig.gpt(vocab_size=10, context_length=4, d_model=8, n_layers=1, n_heads=2))
    def has(group, p):   # by identity: Tensor == is elementwise
        return any(q is p for q in group["params"])
    decay, no_decay = decay_groups(m, 0.1, decay_embeddings=False)
    assert has(no_decay, m.tok_emb.weight) and has(no_decay, m.pos_emb.weight)
    assert has(decay, m.lm_head.weight) and all(p.ndim == 2 for p in decay["params"])
    decay, _ = decay_groups(m, 0.1)
    assert has(decay, m.tok_emb.weight)


def test_params_without_grad_are_left_alone():
    net, _ = make_pair()
    opt = AdamW(net.parameters(), lr=0.1, weight_decay=0.1)
    net.fc.weight.grad = tg.Tensor(np.ones_like(net.fc.weight.numpy()))
    before = net.out.weight.numpy().copy()
    opt.step()
    np.testing.assert_array_equal(net.out.weight.numpy(), before)   # no grad: no step, no decay
    assert set(opt.state) == {0}          # only fc.weight (index 0) has moments


# ---------------------------------------------------------------- schedule
def test_warmup_cosine_values():
    kw = dict(max_lr=1.0, warmup_steps=10, total_steps=110, min_lr=0.1)
    for s in range(10):   # linear warmup, reaching max_lr on the last warmup step
        assert warmup_cosine(s, **kw) == pytest.approx((s + 1) / 10)
    assert warmup_cosine(10, **kw) == pytest.approx(1.0)
    assert warmup_cosine(60, **kw) == pytest.approx(0.55)                  # half way: the midpoint
    assert warmup_cosine(35, **kw) == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi / 4)))
    decay = [warmup_cosine(s, **kw) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(decay, decay[1:]))
    assert warmup_cosine(109, **kw) == pytest.approx(0.1, abs=1e-3) and warmup_cosine(109, **kw) > 0.1
    for s in (110, 111, 10_000):
        assert warmup_cosine(s, **kw) == 0.1
    assert warmup_cosine(0, 2.0, warmup_steps=0, total_steps=10) == 2.0    # no warmup
    assert warmup_cosine(10, 2.0, warmup_steps=0, total_steps=10) == 0.0   # min_lr defaults to 0


# ---------------------------------------------------------------- clipping
@pytest.mark.parametrize("max_norm", [0.5, 1e3], ids=["clips", "no_clip"])
def test_clip_grad_norm_matches_torch(max_norm):
    net, tnet = make_pair()
    rng = np.random.default_rng(2)
    tp = dict(tnet.named_parameters())
    for n, p in net.named_parameters():
        g = rng.standard_normal(p.shape)
        p.grad = tg.Tensor(g.copy())
        tp[n].grad = torch.from_numpy(g.copy())
    total = clip_grad_norm(net.parameters(), max_norm)
    ttotal = torch.nn.utils.clip_grad_norm_(tnet.parameters(), max_norm)
    assert isinstance(total, float)
    assert total == pytest.approx(float(ttotal), rel=1e-12)
    for n, p in net.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), tp[n].grad.numpy(), rtol=1e-12, atol=1e-14, err_msg=n)
    new_norm = math.sqrt(sum(float((p.grad.numpy() ** 2).sum()) for p in net.parameters()))
    assert new_norm == pytest.approx(min(total, max_norm), rel=1e-5)


def test_clip_grad_norm_skips_missing_grads():
    net, _ = make_pair()
    assert clip_grad_norm(net.parameters(), 1.0) == 0.0
    net.fc.bias.grad = tg.Tensor(np.full(N_HID, 3.0))
    assert clip_grad_norm(net.parameters(), 1.0) == pytest.approx(12.0)
    assert np.linalg.norm(net.fc.bias.grad.numpy()) == pytest.approx(1.0, rel=1e-5)


# ---------------------------------------------------------------- accumulation
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 1e-5)], ids=["f64", "f32"])
def test_gradient_accumulation_equals_full_batch(dtype, tol):
    net, _ = make_pair()
    net.astype(dtype)
    x, y = data(np.random.default_rng(3), n=16)
    x = x.astype(dtype)
    net.loss(x, y).backward()
    full = {n: p.grad.numpy().copy() for n, p in net.named_parameters()}
    net.zero_grad()
    for i in range(4):
        (net.loss(x[4 * i:4 * i + 4], y[4 * i:4 * i + 4]) / 4).backward()
    for n, p in net.named_parameters():
        assert p.grad.dtype == dtype
        np.testing.assert_allclose(p.grad.numpy(), full[n], rtol=tol, atol=tol, err_msg=n)
    # and a single micro-batch alone is not the full-batch gradient (the check can fail)
    net.zero_grad()
    net.loss(x[:4], y[:4]).backward()
    assert np.abs(net.fc.weight.grad.numpy() - full["fc.weight"]).max() > 1e-3


# ---------------------------------------------------------------- state round trip
def _train(net, opt, rng, steps):
    for _ in range(steps):
        x, y = data(rng)
        opt.zero_grad()
        net.loss(x, y).backward()
        opt.step()


@pytest.mark.parametrize("make_opt", [
    lambda net: AdamW(decay_groups(net, 0.1), lr=1e-2, betas=(0.9, 0.95)),
    lambda net: SGD(net.parameters(), lr=0.05, momentum=0.9, nesterov=True),
], ids=["adamw", "sgd"])
def test_optimizer_state_round_trip_continues_bit_identically(make_opt):
    net, _ = make_pair()
    opt = make_opt(net)
    rng = np.random.default_rng(4)
    _train(net, opt, rng, 5)
    opt.set_lr(opt.param_groups[0]["lr"] * 0.5)
    # a checkpoint: bytes on disk, nothing shared with the live objects
    blob = pickle.dumps((net.state_dict(), opt.state_dict()))
    rng_state = rng.bit_generator.state
    _train(net, opt, rng, 5)

    weights, opt_state = pickle.loads(blob)
    net2, _ = make_pair(seed=9)
    net2.load_state_dict(weights)
    opt2 = make_opt(net2)
    assert opt2.param_groups[0]["lr"] != opt.param_groups[0]["lr"]
    opt2.load_state_dict(opt_state)
    assert opt2.param_groups[0]["lr"] == opt.param_groups[0]["lr"]
    rng2 = np.random.default_rng()
    rng2.bit_generator.state = rng_state
    _train(net2, opt2, rng2, 5)
    for (n, p), q in zip(net.named_parameters(), net2.parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy(), err_msg=n)
    # without the state the continuation differs (the check can fail)
    net3, _ = make_pair(seed=9)
    net3.load_state_dict(weights)
    rng3 = np.random.default_rng()
    rng3.bit_generator.state = rng_state
    _train(net3, make_opt(net3), rng3, 5)
    assert not np.array_equal(net3.fc.weight.numpy(), net.fc.weight.numpy())


def test_load_state_dict_rejects_different_groups():
    net, _ = make_pair()
    sd = AdamW(decay_groups(net, 0.1)).state_dict()
    with pytest.raises(ValueError, match=r"differ in size.*\[2, 4\] vs \[6\]"):
        AdamW(net.parameters()).load_state_dict(sd)


# ---------------------------------------------------------------- validation
@pytest.mark.parametrize("make, pattern", [
    (lambda ps: SGD(ps, lr=-0.1), r"lr must be >= 0, got -0.1"),
    (lambda ps: SGD(ps, momentum=-0.5), r"momentum and weight_decay must be >= 0"),
    (lambda ps: SGD(ps, weight_decay=-1.0), r"momentum and weight_decay must be >= 0"),
    (lambda ps: SGD(ps, nesterov=True), r"nesterov needs momentum > 0"),
    (lambda ps: AdamW(ps, lr=-1e-3), r"lr must be >= 0"),
    (lambda ps: AdamW(ps, betas=(1.0, 0.999)), r"betas must be in \[0, 1\), got \(1.0, 0.999\)"),
    (lambda ps: AdamW(ps, betas=(0.9, -0.1)), r"betas must be in \[0, 1\)"),
    (lambda ps: AdamW(ps, eps=-1e-8), r"eps and weight_decay must be >= 0"),
    (lambda ps: AdamW(ps, weight_decay=-0.1), r"eps and weight_decay must be >= 0"),
    (lambda ps: AdamW([{"params": ps, "momentum": 0.9}]), r"unknown hyperparameters \['momentum'\]"),
    (lambda ps: AdamW([]), r"empty parameter list"),
    (lambda ps: SGD([tg.Tensor(np.ones(3))]), r"does not require grad"),
])
def test_invalid_hyperparameters_raise(make, pattern):
    net, _ = make_pair()
    with pytest.raises(ValueError, match=pattern):
        make(net.parameters())


def test_decay_groups_skip_frozen_parameters_and_do_not_decay_relation_biases():
    from tinygrad_reason.nn import Transformer, TransformerConfig, Verifier
    from tinygrad_reason.nn.step_attention import step_ids_from_tokenizer
    from tinygrad_reason.optim import decay_groups
    from tinygrad_reason.tokenizer import Tokenizer
    tok = Tokenizer.default(300)
    model = Transformer(TransformerConfig.gpt(vocab_size=tok.vocab_size, context_length=16, d_model=8, n_layers=1,
                                              n_heads=2, step_attention="bias", step_ids=step_ids_from_tokenizer(tok)))
    decay, no_decay = decay_groups(model, 0.1)
    bias = model.blocks[0].attn.relation_bias
    assert bias.ndim == 2 and any(p is bias for p in no_decay["params"])
    assert not any(p is bias for p in decay["params"])
    frozen = Verifier(model, frozen=True)
    groups = decay_groups(frozen, 0.1)
    kept = [p for g in groups for p in g["params"]]
    assert {id(p) for p in kept} == {id(p) for p in frozen.head.parameters()}
