"""Seeing backprop: the graph behind a tensor as Graphviz DOT text, and a node-by-node walk.

`to_dot(loss)` draws one record per tensor (name, op, shape, data | grad summaries, micrograd
style); no graphviz binary is needed to get the text. `walk(loss)` runs the real engine one node
at a time and yields each node's incoming gradient and what it passes to its inputs.
"""
from __future__ import annotations

import numpy as np

from .tensor import Tensor, topological_order, backward_steps


def summarize(t: Tensor | None, max_values: int = 4) -> str:
    """The values of a small tensor, or shape-free statistics of a large one."""
    if t is None:
        return "-"
    a = np.asarray(t.numpy() if isinstance(t, Tensor) else t, dtype=np.float64)
    if a.ndim == 0:
        return f"{a.item():.4g}"
    if a.size <= max_values:
        return np.array2string(a.reshape(-1), precision=4, separator=" ", suppress_small=True)
    return f"mean {a.mean():.4g} std {a.std():.4g} [{a.min():.4g}, {a.max():.4g}]"


def graph_nodes(root: Tensor) -> list:
    """Every tensor in the graph behind root (inputs included), root first."""
    order, seen, stack = [], set(), [root]
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        order.append(t)
        if t._ctx is not None and t._ctx.parents is not None:
            stack.extend(reversed(t._ctx.parents))   # visit the first input first
    return order


def retain_all_grads(root: Tensor) -> None:
    """Ask every intermediate tensor behind root to keep its .grad, to draw or print them after backward."""
    for t in topological_order([root]):
        t.retain_grad()


def _label(t: Tensor, names: dict) -> str:
    name = t.name or names.get(id(t), "")
    head = " ".join(s for s in (name, t.op or "leaf") if s)
    fields = [head, f"shape {t.shape}", f"data {summarize(t)}", f"grad {summarize(t.grad)}"]
    return "{" + " | ".join(_escape(f) for f in fields) + "}"


def _escape(s: str) -> str:
    """Escape what a record label treats specially (and newlines, which would split the line)."""
    for ch in "\\{}|<>\"":
        s = s.replace(ch, "\\" + ch)
    return s.replace("\r", "").replace("\n", "\\n")


def to_dot(root: Tensor, names: dict | None = None, rankdir: str = "LR") -> str:
    """Graphviz DOT text of the graph behind root; `names` maps id(tensor) -> label if t.name is unset."""
    names = names or {}
    nodes = graph_nodes(root)
    ids = {id(t): f"t{k}" for k, t in enumerate(nodes)}
    lines = ["digraph tinygrad_reason {", f"  rankdir={rankdir};", "  node [shape=record, fontname=monospace];"]
    for t in nodes:
        lines.append(f'  {ids[id(t)]} [label="{_label(t, names)}"];')
    for t in nodes:
        if t._ctx is not None and t._ctx.parents is not None:
            for p in t._ctx.parents:
                lines.append(f"  {ids[id(p)]} -> {ids[id(t)]};")
    if any(t._ctx is not None and t._ctx.released for t in nodes):
        # backward() frees the graph unless retain_graph=True: only the nodes still linked are drawn
        lines.append('  freed [shape=note, label="graph freed by backward(); call backward(retain_graph=True) '
                     'to draw all of it"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def walk(root: Tensor, grad=None, retain_graph: bool = False):
    """Backpropagate from root one node at a time; yields engine Steps (tensor, grad, passed).

    This is the engine itself, not a re-implementation: consuming the whole walk equals
    root.backward(), leaves' .grad included.
    """
    yield from backward_steps(root, grad, retain_graph=retain_graph)


def format_step(step, names: dict | None = None) -> str:
    names = names or {}

    def nm(t):
        return t.name or names.get(id(t)) or f"<{t.op or 'leaf'} {t.shape}>"
    lines = [f"{nm(step.tensor)} ({step.op}): incoming grad {summarize(step.grad)}"]
    for parent, g in step.passed:
        lines.append(f"    -> {nm(parent)}: passes {summarize(g)}")
    return "\n".join(lines)
