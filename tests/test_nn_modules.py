"""The Module API (parameters, state_dict, train/eval, to, astype, repr), the layers against torch,
the sinusoidal table against its formula, and TransformerConfig / Transformer input validation.

Layer parity runs in float64 with rtol = atol = 1e-10 (forward and every gradient).
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import tinygrad_reason as tg
from tinygrad_reason.nn import (MLP, Dropout, Embedding, LayerNorm, Linear, Module, ModuleList, Parameter, RMSNorm,
                                SwiGLU, Transformer, TransformerConfig, sinusoidal_table)

torch.set_num_threads(1)   # tiny ops: extra intra-op threads only contend
TOL = 1e-10


def close(a, b, tol=TOL, what=""):
    a = a.numpy() if hasattr(a, "numpy") else np.asarray(a)
    b = b.detach().numpy() if isinstance(b, torch.Tensor) else np.asarray(b)
    assert a.shape == b.shape, f"{what}: shape {a.shape} vs {b.shape}"
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol, err_msg=what)


class Tiny(Module):
    """Embedding -> Linear -> LayerNorm, with a head tied to the embedding."""

    def __init__(self, tie: bool = True):
        self.emb = Embedding(10, 4)
        self.body = ModuleList([Linear(4, 4), Linear(4, 4, bias=False)])
        self.norm = LayerNorm(4)
        self.drop = Dropout(0.5)
        self.head_weight = self.emb.weight if tie else Parameter(np.zeros((10, 4), dtype=np.float32))

    def forward(self, ids):
        x = self.emb(ids)
        for layer in self.body:
            x = layer(x)
        return tg.functional.linear(self.drop(self.norm(x)), self.head_weight)


def small_cfg(**kw):
    base = dict(vocab_size=20, context_length=8, d_model=16, n_layers=2, n_heads=4)
    return TransformerConfig.llama(**{**base, **kw})


# ---------------------------------------------------------------- parameters
def test_named_parameters_order_and_tied_dedup():
    m = Tiny()
    names = [n for n, _ in m.named_parameters()]
    assert names == ["emb.weight", "body.0.weight", "body.0.bias", "body.1.weight", "norm.weight", "norm.bias"]
    assert len(m.parameters()) == 6 and len({id(p) for p in m.parameters()}) == 6
    assert m.num_parameters() == 40 + 20 + 16 + 8
    assert [n for n, _ in Tiny(tie=False).named_parameters()][-1] == "head_weight"
    # the state dict lists a tied tensor under each of its names
    sd = m.state_dict()
    assert list(sd)[-1] == "head_weight" and sd["head_weight"] is sd["emb.weight"]
    assert all(isinstance(v, np.ndarray) for v in sd.values())


def test_transformer_parameter_order_and_tied_head():
    cfg = small_cfg(tie_embeddings=True)
    m = Transformer(cfg)
    names = [n for n, _ in m.named_parameters()]
    assert names[0] == "tok_emb.weight" and names[-1] == "norm.weight" and "lm_head.weight" not in names
    assert names[1:5] == ["blocks.0.attn_norm.weight", "blocks.0.attn.q_proj.weight", "blocks.0.attn.k_proj.weight",
                          "blocks.0.attn.v_proj.weight"]
    untied = Transformer(small_cfg())
    assert [n for n, _ in untied.named_parameters()][-1] == "lm_head.weight"
    assert untied.num_parameters() == m.num_parameters() + 20 * 16


def test_state_dict_round_trip():
    tg.manual_seed(1)
    a = Transformer(small_cfg())
    tg.manual_seed(2)
    b = Transformer(small_cfg())
    ids = np.arange(8)[None] % 20
    assert not np.allclose(a(ids).numpy(), b(ids).numpy())
    before = {n: p for n, p in b.named_parameters()}
    sd = {k: v.copy() for k, v in a.state_dict().items()}
    b.load_state_dict(sd)
    np.testing.assert_array_equal(a(ids).numpy(), b(ids).numpy())
    for n, p in b.named_parameters():
        assert p is before[n], "load_state_dict must copy in place, keeping the Parameter objects"
        np.testing.assert_array_equal(p.numpy(), a.state_dict()[n])
    sd["norm.weight"][:] = 123.0          # the loaded model owns its arrays
    assert not np.any(b.norm.weight.numpy() == 123.0)


def test_strict_load_lists_missing_unexpected_and_wrong_shapes_in_one_message():
    m = Transformer(small_cfg())
    sd = dict(m.state_dict())
    del sd["blocks.1.mlp.up.weight"]
    sd["blocks.9.extra"] = np.zeros(3)
    sd["norm.weight"] = np.zeros(17, dtype=np.float32)
    original = m.tok_emb.weight.numpy().copy()
    sd["tok_emb.weight"] = original + 1.0
    with pytest.raises(ValueError) as err:
        m.load_state_dict(sd)
    msg = str(err.value)
    assert "missing keys" in msg and "blocks.1.mlp.up.weight" in msg
    assert "unexpected keys" in msg and "blocks.9.extra" in msg
    assert "wrong shapes" in msg and "norm.weight" in msg and "(17,)" in msg and "(16,)" in msg
    np.testing.assert_array_equal(m.tok_emb.weight.numpy(), original)   # nothing copied on error


def test_non_strict_load_skips_missing_and_unexpected_but_not_wrong_shapes():
    m = Transformer(small_cfg())
    src = Transformer(small_cfg())
    for p in src.parameters():
        p.data[...] = 0.5
    sd = {k: v for k, v in src.state_dict().items() if not k.startswith("blocks.1")}
    sd["something.else"] = np.ones(2)
    kept = m.blocks[1].mlp.up.weight.numpy().copy()
    m.load_state_dict(sd, strict=False)
    assert np.all(m.tok_emb.weight.numpy() == 0.5) and np.all(m.blocks[0].attn.q_proj.weight.numpy() == 0.5)
    np.testing.assert_array_equal(m.blocks[1].mlp.up.weight.numpy(), kept)
    with pytest.raises(ValueError, match=r"wrong shapes.*norm\.weight"):
        m.load_state_dict({"norm.weight": np.zeros(3)}, strict=False)


def test_load_casts_dtype_and_accepts_tensors():
    m = Linear(3, 2)
    m.load_state_dict({"weight": tg.Tensor(np.ones((2, 3))), "bias": np.arange(2, dtype=np.int64)})
    assert m.weight.dtype == np.float32 and m.bias.dtype == np.float32
    np.testing.assert_array_equal(m.bias.numpy(), [0.0, 1.0])


# ---------------------------------------------------------------- modes, grads, devices, dtypes
def test_train_eval_propagate_and_dropout():
    m = Transformer(small_cfg(dropout=0.5))
    assert all(mod.training for mod in m.modules())
    assert m.eval() is m
    assert not any(mod.training for mod in m.modules())
    ids = np.arange(8)[None] % 20
    np.testing.assert_array_equal(m(ids).numpy(), m(ids).numpy())    # deterministic in eval
    m.train()
    assert all(mod.training for mod in m.modules())
    assert not np.allclose(m(ids).numpy(), m(ids).numpy())           # dropout active in training

    d = Dropout(0.5)
    x = tg.Tensor(np.ones((200, 50)))
    y = d(x).numpy()
    assert set(np.unique(y)) == {0.0, 2.0} and 0.4 < (y == 0).mean() < 0.6
    d.eval()
    assert d(x) is x or np.array_equal(d(x).numpy(), x.numpy())
    with pytest.raises(ValueError, match="p must be in"):
        Dropout(1.5)


def test_zero_grad():
    m = Tiny()
    m(np.array([[1, 2, 3]])).sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    m.zero_grad()
    assert all(p.grad is None for p in m.parameters())


def test_to_cpu_keeps_parameters_and_rejects_unknown_devices():
    m = Tiny()
    params = m.parameters()
    assert m.to("cpu") is m
    assert all(p is q and p.device == "cpu" for p, q in zip(m.parameters(), params))
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        m.to("tpu")


def test_astype_float64_casts_parameters_and_rebuilds_tables_exactly():
    for cfg in (small_cfg(), TransformerConfig.gpt(vocab_size=20, context_length=8, d_model=16, n_layers=1,
                                                   n_heads=2)):
        m = Transformer(cfg)
        ids = np.arange(8)[None] % 20
        out32 = m(ids).numpy()
        assert m.astype(np.float64) is m
        assert all(p.dtype == np.float64 for p in m.parameters())
        out64 = m(ids)
        assert out64.dtype == np.float64
        np.testing.assert_allclose(out64.numpy(), out32, rtol=1e-4, atol=1e-5)
        if m._sinusoidal is not None:   # the float64 tables are the float64 formula, not cast float32 ones
            np.testing.assert_array_equal(m._sinusoidal, sinusoidal_table(8, 16, np.float64))
        if m._rope is not None:
            from tinygrad_reason.ops.rope import rope_tables
            for got, want in zip(m._rope, rope_tables(8, cfg.head_dim, cfg.rope_base, np.float64)):
                assert got.dtype == np.float64
                np.testing.assert_array_equal(got, want)
        m.astype(np.float32)
        assert all(p.dtype == np.float32 for p in m.parameters())


def test_repr_is_readable():
    r = repr(Transformer(TransformerConfig.gpt(vocab_size=20, context_length=8, d_model=16, n_layers=2, n_heads=2)))
    assert r.startswith("Transformer(")
    for piece in ("(tok_emb): Embedding(20, 16)", "(pos_emb): Embedding(8, 16)", "(blocks): ModuleList(",
                  "(0): Block(", "(1): Block(", "(q_proj): Linear(16, 16, bias=True)",
                  "(fc): Linear(16, 64, bias=True)", "(act): GELU(approximate='none')",
                  "(attn_norm): LayerNorm(16, eps=1e-05, bias=True)", "(lm_head): Linear(16, 20, bias=False)"):
        assert piece in r, f"{piece!r} not in repr:\n{r}"
    assert re.search(r"\n      \(attn\): CausalSelfAttention\(", r), "children are indented by depth"
    assert repr(RMSNorm(8)) == "RMSNorm(8, eps=1e-06)"


# ---------------------------------------------------------------- layers against torch (float64)
def _param(arr):
    return torch.tensor(arr, dtype=torch.float64, requires_grad=True)


def _check_against_torch(layer, torch_fn, x_shape, names, rng, ids=None):
    """Same weights, same input: same output, input gradient and parameter gradients."""
    layer.astype(np.float64)
    params = dict(layer.named_parameters())
    tparams = {n: _param(params[n].numpy()) for n in names}
    if ids is None:
        xa = rng.standard_normal(x_shape)
        x, tx = tg.Tensor(xa, requires_grad=True), _param(xa)
    else:
        x, tx = ids, torch.from_numpy(ids)
    out = layer(x)
    tout = torch_fn(tx, tparams)
    close(out, tout, what="output")
    w = rng.standard_normal(out.shape)
    (out * tg.Tensor(w)).sum().backward()
    (tout * torch.from_numpy(w)).sum().backward()
    if ids is None:
        close(x.grad, tx.grad, what="input grad")
    for n in names:
        close(params[n].grad, tparams[n].grad, what=f"grad of {n}")


def test_linear_matches_torch():
    rng = np.random.default_rng(0)
    lin = Linear(5, 3)
    assert lin.weight.shape == (3, 5) and lin.bias.shape == (3,)   # torch layout (out, in)
    bound = 1 / np.sqrt(5)
    assert np.abs(lin.weight.numpy()).max() <= bound and np.abs(lin.bias.numpy()).max() <= bound
    _check_against_torch(lin, lambda x, p: TF.linear(x, p["weight"], p["bias"]), (2, 4, 5), ["weight", "bias"], rng)
    nob = Linear(5, 3, bias=False)
    assert nob.bias is None and [n for n, _ in nob.named_parameters()] == ["weight"]
    _check_against_torch(nob, lambda x, p: TF.linear(x, p["weight"]), (7, 5), ["weight"], rng)
    with pytest.raises(ValueError, match="in=0"):
        Linear(0, 3)


def test_embedding_matches_torch():
    rng = np.random.default_rng(1)
    emb = Embedding(7, 4)
    ids = np.array([[0, 3, 3, 6], [6, 6, 1, 0]])        # repeats: the gradient scatter-adds
    _check_against_torch(emb, lambda i, p: TF.embedding(i, p["weight"]), None, ["weight"], rng, ids=ids)
    with pytest.raises(IndexError, match="id 7 is outside"):
        emb(np.array([[7]]))


@pytest.mark.parametrize("bias", [True, False])
def test_layernorm_matches_torch(bias):
    rng = np.random.default_rng(2)
    ln = LayerNorm(6, eps=1e-5, bias=bias)
    ln.weight.data[...] = rng.standard_normal(6)
    if bias:
        ln.bias.data[...] = rng.standard_normal(6)
    names = ["weight", "bias"] if bias else ["weight"]
    _check_against_torch(ln, lambda x, p: TF.layer_norm(x, (6,), p["weight"], p.get("bias"), 1e-5), (3, 4, 6),
                         names, rng)


def test_rmsnorm_matches_torch():
    rng = np.random.default_rng(3)
    rn = RMSNorm(6, eps=1e-6)
    rn.weight.data[...] = rng.standard_normal(6)
    _check_against_torch(rn, lambda x, p: TF.rms_norm(x, (6,), p["weight"], 1e-6), (3, 4, 6), ["weight"], rng)
    # and the formula itself
    x = rng.standard_normal((2, 6))
    want = x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-6) * rn.weight.numpy()
    close(rn(tg.Tensor(x)), want)


@pytest.mark.parametrize("kind", ["layer_norm", "layer_norm_no_bias", "layer_norm_bare", "rms_norm", "rms_norm_bare"])
def test_norm_inference_path_equals_training_path(kind):
    """Under no_grad the norms skip the saved xhat and normalize in the output: the same float32 bits
    as with grad on, over rows spanning several chunks (parallel_units), and torch's values."""
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((3, 200, 384)) * 3 + 1).astype(np.float32)     # 600 rows: 4 chunks
    w, b = rng.standard_normal(384).astype(np.float32), rng.standard_normal(384).astype(np.float32)
    weight = None if kind.endswith("bare") else tg.Tensor(w, requires_grad=True)
    bias = tg.Tensor(b, requires_grad=True) if kind == "layer_norm" else None
    if kind.startswith("layer_norm"):
        run = lambda t: tg.functional.layer_norm(t, weight, bias, 1e-5)  # noqa: E731
        want = TF.layer_norm(torch.tensor(x), (384,), None if weight is None else torch.tensor(w),
                             None if bias is None else torch.tensor(b), 1e-5)
    else:
        run = lambda t: tg.functional.rms_norm(t, weight, 1e-6)  # noqa: E731
        want = TF.rms_norm(torch.tensor(x), (384,), None if weight is None else torch.tensor(w), 1e-6)
    xt = tg.Tensor(x, requires_grad=True)
    trained = run(xt)
    trained.sum().backward()                     # the training path's saved xhat is whole and used
    assert xt.grad is not None
    with tg.no_grad():
        inferred = run(tg.Tensor(x))
    assert inferred.numpy().tobytes() == trained.numpy().tobytes()
    np.testing.assert_allclose(inferred.numpy(), want.numpy(), rtol=1e-5, atol=1e-5)


def test_mlp_matches_torch():
    rng = np.random.default_rng(4)
    mlp = MLP(6, 10)
    names = ["fc.weight", "fc.bias", "proj.weight", "proj.bias"]
    for n, p in mlp.named_parameters():
        p.data[...] = rng.standard_normal(p.shape)

    def ref(x, p):
        return TF.linear(TF.gelu(TF.linear(x, p["fc.weight"], p["fc.bias"])), p["proj.weight"], p["proj.bias"])
    _check_against_torch(mlp, ref, (2, 3, 6), names, rng)


def test_swiglu_matches_torch():
    rng = np.random.default_rng(5)
    ff = SwiGLU(6, 10)
    names = ["gate.weight", "up.weight", "down.weight"]
    assert [n for n, _ in ff.named_parameters()] == names            # no biases by default
    for n, p in ff.named_parameters():
        p.data[...] = rng.standard_normal(p.shape)

    def ref(x, p):
        return TF.linear(TF.silu(TF.linear(x, p["gate.weight"])) * TF.linear(x, p["up.weight"]), p["down.weight"])
    _check_against_torch(ff, ref, (2, 3, 6), names, rng)


def test_sinusoidal_table_matches_formula():
    n, d = 12, 10
    table = sinusoidal_table(n, d, np.float64)
    assert table.shape == (n, d) and table.dtype == np.float64
    for pos in range(n):
        for i in range(d // 2):
            angle = pos / 10000 ** (2 * i / d)
            assert table[pos, 2 * i] == pytest.approx(np.sin(angle), abs=1e-14)
            assert table[pos, 2 * i + 1] == pytest.approx(np.cos(angle), abs=1e-14)
    assert sinusoidal_table(n, d).dtype == np.float32


def test_transformer_adds_the_sinusoidal_table():
    cfg = TransformerConfig.gpt(vocab_size=20, context_length=8, d_model=16, n_layers=1, n_heads=2)
    m = Transformer(cfg).astype(np.float64)
    ids = np.array([[3, 1, 4]])
    x = m.tok_emb.weight.numpy()[ids[0]] + m.pos_emb.weight.numpy()[:3] + sinusoidal_table(8, 16, np.float64)[:3]
    # strip the blocks to see the embedding sum through the final norm
    m.blocks = ModuleList()
    ln = m.norm
    want = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + ln.eps) * ln.weight.numpy() \
        + ln.bias.numpy()
    close(m.hidden_states(ids)[0], want)


# ---------------------------------------------------------------- config and input validation
@pytest.mark.parametrize("kw, pattern", [
    (dict(d_model=30, n_heads=4), r"d_model \(30\) must be divisible by n_heads \(4\)"),
    (dict(n_heads=4, n_kv_heads=3), r"n_kv_heads \(3\) must divide n_heads \(4\)"),
    (dict(n_kv_heads=0), r"n_kv_heads \(0\)"),
    (dict(vocab_size=0), r"vocab_size must be a positive integer, got 0"),
    (dict(context_length=-1), r"context_length must be a positive integer, got -1"),
    (dict(d_model=0), r"d_model must be a positive integer, got 0"),
    (dict(n_layers=0), r"n_layers must be a positive integer, got 0"),
    (dict(n_heads=-2), r"n_heads must be a positive integer, got -2"),
    (dict(n_layers=2.5), r"n_layers must be a positive integer, got 2.5"),
    (dict(mlp_hidden=-4), r"mlp_hidden must be positive, got -4"),
    (dict(head_dim=0), r"head_dim must be positive, got 0"),
    (dict(positions="alibi"), r"positions must be one of .*'rope'.*got 'alibi'"),
    (dict(norm="batchnorm"), r"norm must be one of .*'rmsnorm'.*got 'batchnorm'"),
    (dict(mlp="relu"), r"mlp must be one of .*'swiglu'.*got 'relu'"),
    (dict(dropout=1.0), r"dropout must be in \[0, 1\), got 1.0"),
    (dict(positions="rope", head_dim=7), r"RoPE needs an even head_dim, got 7"),
])
def test_config_validation(kw, pattern):
    base = dict(vocab_size=20, context_length=8, d_model=32, n_layers=2, n_heads=4)
    with pytest.raises(ValueError, match=pattern):
        TransformerConfig(**{**base, **kw})


def test_config_defaults_and_round_trip():
    cfg = TransformerConfig(vocab_size=20, context_length=8, d_model=32, n_layers=2, n_heads=4)
    assert cfg.n_kv_heads == 4 and cfg.head_dim == 8 and cfg.mlp_hidden == 128
    assert small_cfg(d_model=48).mlp_hidden == 128           # 8/3 * 48 = 128, rounded up to 64s
    assert TransformerConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"unknown fields \['n_experts'\]"):
        TransformerConfig.from_dict({**cfg.to_dict(), "n_experts": 4})


def test_inputs_are_validated():
    m = Transformer(small_cfg())
    with pytest.raises(ValueError, match=r"positions 0\.\.8 exceed the context length 8"):
        m(np.zeros((1, 9), dtype=np.int64))
    with pytest.raises(ValueError, match=r"positions 6\.\.8 exceed the context length 8"):
        m(np.zeros((1, 3), dtype=np.int64), cache=m.new_cache(1), start=6)
    with pytest.raises(ValueError, match=r"token id 20 is outside the vocabulary \[0, 20\)"):
        m(np.array([[1, 20]]))
    with pytest.raises(ValueError, match=r"token id -1 is outside the vocabulary \[0, 20\)"):
        m(np.array([[-1, 2]]))
    with pytest.raises(ValueError, match=r"shape \(batch, seq\), got \(4,\)"):
        m(np.arange(4))
    with pytest.raises(ValueError, match="must be integers, got float"):
        m(np.zeros((1, 4)))
