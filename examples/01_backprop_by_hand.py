"""Backprop by hand: a 2-layer MLP whose every gradient we derive with the chain rule and check
against the engine's.

    python examples/01_backprop_by_hand.py [--out backprop.dot]

The network:  X (N,2) -> z1 = X @ W1 + b1 -> h = tanh(z1) -> yhat = h @ W2 + b2 -> loss = mean((yhat - y)^2)
with W1 (2,4), b1 (4,), W2 (4,1), b2 (1,). Everything is float64, so hand and engine agree to ~1e-15.
It takes well under a second and downloads nothing.

The same idea scales up: tinygrad_reason/ops/reference.py writes the library's fused ops (linear,
layer_norm, rms_norm, cross_entropy, attention) as their formulas in the Tensor ops used here, and
autograd derives their gradients the way this script does by hand. Read them next; the fused
versions that run by default are tested against them.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # run from a checkout
from tinygrad_reason import Tensor, viz  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--out", default="backprop.dot", help="where to write the Graphviz DOT file")
parser.add_argument("--steps", type=int, default=8, help="SGD steps to take at the end")
args = parser.parse_args()
np.set_printoptions(precision=4, suppress=True)

# ---------------------------------------------------------------- data and parameters
rng = np.random.default_rng(0)
X_np = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0], [0.5, -0.5], [-1.0, 0.5]])
y_np = np.array([[0.0], [1.0], [1.0], [0.0], [0.5], [-0.5]])      # targets, one per row of X
N = X_np.shape[0]
params_np = {"W1": rng.normal(0, 0.8, (2, 4)), "b1": rng.normal(0, 0.1, 4),
             "W2": rng.normal(0, 0.8, (4, 1)), "b2": np.full(1, 0.1)}

X = Tensor(X_np, name="X")          # inputs and targets need no gradient
y = Tensor(y_np, name="y")
P = {k: Tensor(v.copy(), requires_grad=True, name=k) for k, v in params_np.items()}


def named(t, name):
    """Give a tensor a name: the walk and the graph below print it."""
    t.name = name
    return t


def forward(P):
    """The engine's forward pass, every intermediate named."""
    z1 = named(X @ P["W1"] + P["b1"], "z1")
    h = named(z1.tanh(), "h")
    yhat = named(h @ P["W2"] + P["b2"], "yhat")
    diff = named(yhat - y, "diff")
    sq = named(diff ** 2, "sq")
    loss = named(sq.mean(), "loss")         # mean = sum * (1/N): a Sum node, then a Mul node
    return loss, dict(z1=z1, h=h, yhat=yhat)


# ---------------------------------------------------------------- 1. the engine's gradients
loss, acts = forward(P)
viz.retain_all_grads(loss)      # keep every intermediate's .grad, to compare and to draw
print(f"loss = {loss.item():.6f}\n")
print("=== the backward walk: each node, the gradient it receives, and what it passes to its inputs ===")
# viz.walk IS the engine (loss.backward() is this loop without the prints).
# retain_graph=True keeps the graph alive so we can still draw it afterwards.
for step in viz.walk(loss, retain_graph=True):
    print(viz.format_step(step))
print()

# ---------------------------------------------------------------- 2. the same gradients by hand
W1, b1, W2, b2 = (params_np[k] for k in ("W1", "b1", "W2", "b2"))
# forward again, in plain NumPy, keeping what backward needs
z1 = X_np @ W1 + b1                 # (N,4)  pre-activation
h = np.tanh(z1)                     # (N,4)  hidden layer
yhat = h @ W2 + b2                  # (N,1)  prediction
loss_np = np.mean((yhat - y_np) ** 2)

# backward, from the loss towards the inputs. d_v means dloss/dv, which has v's shape.
# loss = (1/N) sum_i (yhat_i - y_i)^2      =>  d_yhat = 2 (yhat - y) / N
d_yhat = 2.0 * (yhat - y_np) / N                                       # (N,1)
# yhat = h @ W2 + b2: a linear layer. For C = A @ B: dA = dC @ B^T, dB = A^T @ dC.
d_W2 = h.T @ d_yhat                 # (4,N) @ (N,1) -> (4,1)
d_b2 = d_yhat.sum(axis=0)           # b2 was broadcast over the N rows, so its grads add up
d_h = d_yhat @ W2.T                 # (N,1) @ (1,4) -> (N,4)
# h = tanh(z1), and tanh'(z) = 1 - tanh(z)^2 = 1 - h^2, elementwise
d_z1 = d_h * (1.0 - h ** 2)                                            # (N,4)
# z1 = X @ W1 + b1: the same linear-layer rule once more
d_W1 = X_np.T @ d_z1                # (2,N) @ (N,4) -> (2,4)
d_b1 = d_z1.sum(axis=0)             # (4,)

# ---------------------------------------------------------------- 3. compare, side by side
by_hand = {"W1": d_W1, "b1": d_b1, "W2": d_W2, "b2": d_b2,
           "z1": d_z1, "h": d_h, "yhat": d_yhat}
engine = {**{k: P[k].grad.numpy() for k in ("W1", "b1", "W2", "b2")},
          **{k: acts[k].grad.numpy() for k in ("z1", "h", "yhat")}}   # retained intermediates
np.testing.assert_allclose(loss.item(), loss_np, rtol=1e-12)
print("=== gradients: engine vs by hand ===")
print(f"{'tensor':<6} {'shape':<8} {'engine (first values)':<36} {'by hand (first values)':<36} max |diff|")
for k in by_hand:
    np.testing.assert_allclose(engine[k], by_hand[k], rtol=1e-10, atol=1e-12, err_msg=f"grad of {k}")
    e, m = engine[k].ravel()[:4], by_hand[k].ravel()[:4]
    diff = np.abs(engine[k] - by_hand[k]).max()
    print(f"{k:<6} {str(engine[k].shape):<8} {np.array2string(e):<36} {np.array2string(m):<36} {diff:.1e}")
print("all gradients match the chain rule by hand\n")

# ---------------------------------------------------------------- 4. the graph, as Graphviz DOT
dot = viz.to_dot(loss)          # every node: name, op, shape, data | grad
with open(args.out, "w") as f:
    f.write(dot)
print(f"wrote the graph ({dot.count(' -> ')} edges) to {args.out}")
stem = os.path.splitext(args.out)[0]
print(f"render it with:  dot -Tpng {args.out} -o {stem}.png   (Graphviz; or paste it into an online viewer)\n")

# ---------------------------------------------------------------- 5. a few steps of SGD
print("=== SGD: p <- p - lr * dloss/dp ===")
lr, losses = 0.2, []
for step in range(args.steps + 1):
    for p in P.values():
        p.zero_grad()               # .grad accumulates across backward calls: clear it first
    loss, _ = forward(P)
    losses.append(loss.item())
    print(f"step {step}: loss {losses[-1]:.6f}")
    if step == args.steps:
        break
    loss.backward()
    for p in P.values():
        p.data -= lr * p.grad.data  # update the raw array in place: no graph is recorded
if args.steps > 0:
    assert losses[-1] < losses[0], "SGD did not lower the loss"
    print(f"loss fell from {losses[0]:.6f} to {losses[-1]:.6f}")
