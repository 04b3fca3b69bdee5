"""Optimizers (SGD with momentum, AdamW), the warmup + cosine schedule, and gradient clipping.

Updates run in place on the parameters' arrays under no graph. Parameter groups carry their own
hyperparameters (e.g. weight_decay 0 for norms, biases and embeddings). An optimizer's state
(moments, step counts, hyperparameters) round-trips through state_dict / load_state_dict.
"""
from __future__ import annotations

import math

import numpy as np

from . import backend
from .fast import adamw as fast_adamw
from .functional import reference_ops_enabled


class Optimizer:
    defaults: dict = {}

    def __init__(self, params, **hyper):
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.param_groups = []
        for g in groups:
            unknown = set(g) - {"params"} - set(self.defaults)
            if unknown:
                raise ValueError(f"{type(self).__name__}: unknown hyperparameters {sorted(unknown)}")
            group = {**self.defaults, **hyper, **g, "params": list(g["params"])}
            for p in group["params"]:
                if not p.requires_grad:
                    raise ValueError(f"{type(self).__name__}: a parameter of shape {p.shape} does not require grad")
            self.param_groups.append(group)
        self.state: dict[int, dict] = {}   # by position in the flattened parameter list
        self._check_hyper()

    def _check_hyper(self) -> None:
        for g in self.param_groups:
            if g["lr"] < 0:
                raise ValueError(f"{type(self).__name__}: lr must be >= 0, got {g['lr']}")

    def _params(self):
        i = 0
        for group in self.param_groups:
            for p in group["params"]:
                yield i, group, p
                i += 1

    def zero_grad(self) -> None:
        for _, _, p in self._params():
            p.grad = None

    def set_lr(self, lr: float) -> None:
        """Set every group's learning rate (scaled by a group's optional 'lr_scale')."""
        for g in self.param_groups:
            g["lr"] = lr * g.get("lr_scale", 1.0)

    def step(self) -> None:
        for i, group, p in self._params():
            if p.grad is not None:
                self._update(p, p.grad.data, group, self.state.setdefault(i, {}))
                p.bump_version()

    def state_dict(self) -> dict:
        """{'state': {index: {name: array or number}}, 'param_groups': [hyperparameters]}."""
        groups = [{k: v for k, v in g.items() if k != "params"} | {"n_params": len(g["params"])}
                  for g in self.param_groups]
        return {"state": {i: dict(s) for i, s in self.state.items()}, "param_groups": groups}

    def load_state_dict(self, sd: dict) -> None:
        groups = sd["param_groups"]
        if [g["n_params"] for g in groups] != [len(g["params"]) for g in self.param_groups]:
            raise ValueError("optimizer load_state_dict: the parameter groups differ in size from the saved ones "
                             f"({[g['n_params'] for g in groups]} vs {[len(g['params']) for g in self.param_groups]})")
        for own, saved in zip(self.param_groups, groups):
            own.update({k: v for k, v in saved.items() if k != "n_params"})
        params = {i: p for i, _, p in self._params()}
        self.state = {}
        for i, s in sd["state"].items():
            p = params[int(i)]
            self.state[int(i)] = {k: (p.xp.array(v, dtype=p.dtype) if hasattr(v, "shape") and np.ndim(v) else v)
                                  for k, v in s.items()}


class SGD(Optimizer):
    """p -= lr * (g + wd p), with heavy-ball momentum buf = momentum * buf + g (torch's form)."""
    defaults = {"lr": 1e-2, "momentum": 0.0, "weight_decay": 0.0, "nesterov": False}

    def _check_hyper(self) -> None:
        super()._check_hyper()
        for g in self.param_groups:
            if g["momentum"] < 0 or g["weight_decay"] < 0:
                raise ValueError(f"SGD: momentum and weight_decay must be >= 0, got {g['momentum']}, "
                                 f"{g['weight_decay']}")
            if g["nesterov"] and g["momentum"] <= 0:
                raise ValueError(f"SGD: nesterov needs momentum > 0, got momentum={g['momentum']}")

    def _update(self, p, g, group, state):
        if group["weight_decay"]:
            g = g + group["weight_decay"] * p.data
        mu = group["momentum"]
        if mu:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = g.copy()
            else:
                buf *= mu
                buf += g
            g = g + mu * buf if group["nesterov"] else buf
        p.data -= group["lr"] * g


class AdamW(Optimizer):
    """Adam with decoupled weight decay (Loshchilov & Hutter), bias-corrected, as torch.optim.AdamW:

    p *= 1 - lr wd;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;
    p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)

    The update runs as one chunked in-place kernel (fast/adamw.py); under
    tinygrad_reason.use_reference_ops(True) it is adamw_reference_update, the same formula on whole arrays.
    """
    defaults = {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2}

    def _check_hyper(self) -> None:
        super()._check_hyper()
        for g in self.param_groups:
            b1, b2 = g["betas"]
            if not (0.0 <= b1 < 1.0 and 0.0 <= b2 < 1.0):
                raise ValueError(f"AdamW: betas must be in [0, 1), got {g['betas']}")
            if g["eps"] < 0 or g["weight_decay"] < 0:
                raise ValueError(f"AdamW: eps and weight_decay must be >= 0, got {g['eps']}, {g['weight_decay']}")

    def _update(self, p, g, group, state):
        lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        if not state:
            state["step"] = 0
            state["exp_avg"] = p.xp.zeros_like(p.data)
            state["exp_avg_sq"] = p.xp.zeros_like(p.data)
        state["step"] += 1
        t, m, v = state["step"], state["exp_avg"], state["exp_avg_sq"]
        if reference_ops_enabled():
            adamw_reference_update(p.data, g, m, v, t, lr, (b1, b2), eps, wd)
            return
        fast_adamw.update(p.data, g, m, v, t, lr, b1, b2, eps, wd)


def adamw_reference_update(param, grad, exp_avg, exp_avg_sq, step: int, lr: float, betas, eps: float,
                           weight_decay: float) -> None:
    """One AdamW step on whole arrays, in place (param, exp_avg, exp_avg_sq), step counting from 1:

        param *= 1 - lr * weight_decay                   (decoupled weight decay)
        m = b1 m + (1 - b1) g,   v = b2 v + (1 - b2) g^2  (moving averages of g and g^2)
        param -= lr * m_hat / (sqrt(v_hat) + eps),   m_hat = m / (1 - b1^step),  v_hat = v / (1 - b2^step)

    The bias corrections m_hat, v_hat undo the averages' start at 0. fast/adamw.py computes the same
    in cache-sized chunks on threads; this is the version to read. It sits here, beside that kernel,
    rather than in ops/reference.py, because it is optimizer state on arrays, not an autograd op.
    """
    b1, b2 = betas
    xp = backend.get_array_module(param)
    param *= 1.0 - lr * weight_decay
    exp_avg[...] = b1 * exp_avg + (1.0 - b1) * grad
    exp_avg_sq[...] = b2 * exp_avg_sq + (1.0 - b2) * grad * grad
    m_hat = exp_avg / (1.0 - b1 ** step)
    v_hat = exp_avg_sq / (1.0 - b2 ** step)
    param -= lr * m_hat / (xp.sqrt(v_hat) + eps)


def decay_groups(model, weight_decay: float, decay_embeddings: bool = True) -> list:
    """Parameter groups: weight decay on matrices (2-d and up), none on norms and biases;
    embeddings decay unless decay_embeddings=False (nanoGPT decays them); step attention's
    relation_bias is a bias (one number per head and relation) and does not decay. Frozen
    parameters (requires_grad False, e.g. a verifier's frozen trunk) are left out: nothing trains them."""
    decay, no_decay = [], []
    embedding_ids = set()
    if not decay_embeddings:
        from .nn.layers import Embedding
        embedding_ids = {id(m.weight) for m in model.modules() if isinstance(m, Embedding)}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        matrix = p.ndim >= 2 and not name.endswith("relation_bias")
        (decay if matrix and id(p) not in embedding_ids else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def warmup_cosine(step: int, max_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0) -> float:
    """Linear warmup from 0 to max_lr over warmup_steps, then cosine decay to min_lr at total_steps."""
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + 0.5 * (max_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def global_grad_norm(params) -> float:
    """The L2 norm of all gradients together (0 when none has one)."""
    return math.sqrt(sum(float(p.grad.data.reshape(-1) @ p.grad.data.reshape(-1)) for p in params if p.grad is not None))


def clip_grad_norm(params, max_norm: float) -> float:
    """Scale all gradients in place so their global L2 norm is at most max_norm; returns the norm before."""
    params = list(params)
    grads = [p.grad.data for p in params if p.grad is not None]
    if not grads:
        return 0.0
    total = global_grad_norm(params)
    if math.isfinite(total) and total > max_norm:       # a NaN or Inf norm leaves them for the caller to see
        scale = max_norm / (total + 1e-6)
        for g in grads:
            g *= scale
    return total
