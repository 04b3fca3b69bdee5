"""viz: DOT text of a graph, value summaries, and the node-by-node backward walk."""
import re
import shutil
import subprocess

import numpy as np
import pytest

from tinygrad_reason import Tensor, viz
from tinygrad_reason.tensor import topological_order

NODE = re.compile(r'^  (t\d+) \[label="(.*)"\];$')
EDGE = re.compile(r"^  (t\d+) -> (t\d+);$")


def parse_dot(text: str):
    """Nodes {id: label} and edges [(src, dst)] of to_dot's output; fails on any unexpected line."""
    lines = text.splitlines()
    assert lines[0] == "digraph tinygrad_reason {" and lines[-1] == "}"
    nodes, edges = {}, []
    for line in lines[1:-1]:
        if m := NODE.match(line):
            assert m.group(1) not in nodes, f"node {m.group(1)} declared twice"
            nodes[m.group(1)] = m.group(2)
        elif m := EDGE.match(line):
            edges.append((m.group(1), m.group(2)))
        else:
            assert line.strip().endswith(";"), f"unexpected DOT line {line!r}"
    for src, dst in edges:
        assert src in nodes and dst in nodes, f"edge {src} -> {dst} names an undeclared node"
    return nodes, edges


def record_fields(label: str) -> list:
    """Split a record label '{a | b | c}' on unescaped '|'; checks that braces and quotes are escaped."""
    assert label.startswith("{") and label.endswith("}")
    body = label[1:-1]
    fields, cur, i = [], "", 0
    while i < len(body):
        c = body[i]
        if c == "\\":
            assert i + 1 < len(body), "dangling backslash"
            cur += body[i + 1]          # the unescaped character
            i += 2
            continue
        assert c not in '{}<>"\n', f"unescaped {c!r} in label {label!r}"
        if c == "|":
            fields.append(cur.strip())
            cur = ""
        else:
            cur += c
        i += 1
    fields.append(cur.strip())
    return fields


def small_mlp():
    rng = np.random.default_rng(1)
    x = Tensor(rng.standard_normal((5, 3)), name="x")
    w1 = Tensor(rng.standard_normal((3, 4)), requires_grad=True, name="w1")
    b1 = Tensor(rng.standard_normal(4), requires_grad=True, name="b1")
    w2 = Tensor(rng.standard_normal((4, 2)), requires_grad=True, name="w2")
    h = (x @ w1 + b1).tanh()
    loss = ((h @ w2) ** 2).mean()
    return loss, (w1, b1, w2), (x, h)


# ---------------------------------------------------------------- summarize
def test_summarize_small_tensor_lists_values():
    assert viz.summarize(Tensor(np.array([1.0, -2.5, 3.0]))) == "[ 1.  -2.5  3. ]"
    assert viz.summarize(Tensor(np.float64(2.5))) == "2.5"       # 0-d: a plain number
    assert viz.summarize(None) == "-"


def test_summarize_large_tensor_gives_statistics():
    a = np.arange(100.0).reshape(10, 10)
    s = viz.summarize(Tensor(a))
    assert s == f"mean {a.mean():.4g} std {a.std():.4g} [0, 99]"
    assert "[" in viz.summarize(Tensor(a[:1, :4])) and "mean" not in viz.summarize(Tensor(a[:1, :4]))
    assert "mean" in viz.summarize(Tensor(a[:1, :5]))            # max_values=4 is the cut-off
    assert "mean" not in viz.summarize(Tensor(a[:1, :5]), max_values=5)


# ---------------------------------------------------------------- to_dot
def test_to_dot_one_node_per_tensor_and_edges_parent_to_child():
    loss, params, (x, h) = small_mlp()
    nodes, edges = parse_dot(viz.to_dot(loss))
    graph = viz.graph_nodes(loss)
    assert len(nodes) == len(graph) == len({id(t) for t in graph})
    assert graph[0] is loss
    for t in (*params, x, h):
        assert any(t is g for g in graph)
    # ids follow graph_nodes' order; each op's inputs point at it, once per input slot
    ids = {id(t): f"t{k}" for k, t in enumerate(graph)}
    expected = sorted((ids[id(p)], ids[id(t)]) for t in graph if t._ctx is not None for p in t._ctx.parents)
    assert sorted(edges) == expected
    assert (ids[id(params[0])], ids[id(next(t for t in graph if t.op == "MatMul" and t.shape == (5, 4)))]) in edges
    assert not any(dst == ids[id(x)] for _, dst in edges)       # leaves have no incoming edge


def test_to_dot_labels_before_and_after_backward():
    loss, _, _ = small_mlp()
    graph = viz.graph_nodes(loss)
    nodes, _ = parse_dot(viz.to_dot(loss))
    for k, t in enumerate(graph):
        head, shape, data, grad = record_fields(nodes[f"t{k}"])
        assert (t.op or "leaf") in head
        if t.name:
            assert head.startswith(t.name)
        assert shape == f"shape {t.shape}"
        assert data == f"data {viz.summarize(t)}"
        assert grad == "grad -"                                # no backward yet

    viz.retain_all_grads(loss)
    loss.backward(retain_graph=True)
    nodes, edges = parse_dot(viz.to_dot(loss))
    assert len(nodes) == len(graph) and len(edges) > len(graph) - 2   # still the whole graph
    for k, t in enumerate(graph):
        grad = record_fields(nodes[f"t{k}"])[3]
        if t.requires_grad:
            assert t.grad is not None and grad == f"grad {viz.summarize(t.grad)}" and grad != "grad -"
        else:
            assert grad == "grad -"                             # x and constants get no gradient
    assert record_fields(nodes["t0"])[3] == "grad 1"            # the seed
    assert "Tanh" in viz.to_dot(loss) and "MatMul" in viz.to_dot(loss) and "shape (5, 4)" in viz.to_dot(loss)


def test_to_dot_after_plain_backward_says_the_graph_was_freed():
    loss, _, _ = small_mlp()
    loss.backward()
    text = viz.to_dot(loss)
    assert "retain_graph=True" in text
    nodes, edges = parse_dot(text)
    assert len(nodes) == 1 and edges == []


def test_to_dot_escapes_special_characters():
    nasty = 'a{b}|c<d>"e"\\f\ng'
    t = Tensor(np.ones(2), requires_grad=True, name=nasty)
    out = (t * 2.0).sum()
    text = viz.to_dot(out)
    nodes, _ = parse_dot(text)                                  # one line per node: the newline was escaped
    heads = [record_fields(lbl)[0] for lbl in nodes.values()]
    assert f"{nasty.replace(chr(10), 'n')} leaf" in heads        # every special char survives, escaped
    assert '\\{' in text and '\\|' in text and '\\"' in text and '\\<' in text and '\\\\f' in text


def test_to_dot_names_argument_labels_unnamed_tensors():
    a = Tensor(np.ones(3), requires_grad=True)
    out = (a * a).sum()
    text = viz.to_dot(out, names={id(a): "alpha"})
    assert "alpha leaf" in text
    _, edges = parse_dot(text)
    assert len(edges) == 3                                      # a -> mul twice (both inputs), mul -> sum


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz 'dot' binary not installed")
def test_to_dot_is_accepted_by_graphviz():
    loss, _, _ = small_mlp()
    viz.retain_all_grads(loss)
    loss.backward(retain_graph=True)
    run = subprocess.run(["dot", "-Tsvg"], input=viz.to_dot(loss), capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "<svg" in run.stdout


# ---------------------------------------------------------------- walk
def test_walk_root_first_then_reversetopological_order():
    loss, params, _ = small_mlp()
    steps = list(viz.walk(loss))
    assert steps[0].tensor is loss
    np.testing.assert_array_equal(steps[0].grad.numpy(), np.ones(()))
    pos = {id(s.tensor): k for k, s in enumerate(steps)}
    assert len(pos) == len(steps)                               # each node visited once
    for k, s in enumerate(steps):
        for parent, _ in s.passed:
            assert pos[id(parent)] > k, f"{parent.op or 'leaf'} visited before its consumer {s.op}"
        if s.tensor._ctx is None:
            assert s.passed == [] and s.op == "leaf"
    assert {id(p) for p in params} <= set(pos)


def test_walk_step_incoming_grad_is_sum_of_what_consumers_passed():
    loss, params, _ = small_mlp()
    steps = list(viz.walk(loss))
    received = {}
    for s in steps:
        for parent, g in s.passed:
            assert g.shape == parent.shape                      # broadcasting already undone
            received[id(parent)] = received.get(id(parent), 0) + g.numpy()
    for s in steps[1:]:
        np.testing.assert_allclose(s.grad.numpy(), received[id(s.tensor)], rtol=1e-12, atol=1e-15)
    for p in params:                                            # and the leaves keep exactly that
        np.testing.assert_allclose(p.grad.numpy(), received[id(p)], rtol=1e-12, atol=1e-15)


def test_walk_shared_leaf_accumulates_over_steps():
    a = Tensor(np.array([1.0, 2.0, 3.0]), requires_grad=True, name="a")
    out = (a * a + a.exp()).sum()                                # a used three times
    steps = list(viz.walk(out))
    total = sum(g.numpy() for s in steps for p, g in s.passed if p is a)
    expected = 2 * a.numpy() + np.exp(a.numpy())
    np.testing.assert_allclose(total, expected, rtol=1e-12)
    np.testing.assert_allclose(a.grad.numpy(), expected, rtol=1e-12)


def test_consuming_walk_equals_backward():
    loss1, params1, _ = small_mlp()
    loss2, params2, _ = small_mlp()
    loss1.backward()
    for _ in viz.walk(loss2):
        pass
    for p1, p2 in zip(params1, params2):
        np.testing.assert_array_equal(p1.grad.numpy(), p2.grad.numpy())


def test_walk_retain_graph_allows_a_second_pass():
    loss, (w1, _, _), _ = small_mlp()
    list(viz.walk(loss, retain_graph=True))
    first = w1.grad.numpy().copy()
    list(viz.walk(loss))                                        # grads add up, like backward twice
    np.testing.assert_allclose(w1.grad.numpy(), 2 * first, rtol=1e-12)
    with pytest.raises(RuntimeError, match="retain_graph"):
        list(viz.walk(loss))


def test_format_step_shows_names_grads_and_passes():
    loss, (w1, _, _), _ = small_mlp()
    loss.name = "loss"
    steps = list(viz.walk(loss))
    first = viz.format_step(steps[0])
    assert first.startswith("loss (Mul): incoming grad 1")
    assert "    -> <Sum ()>: passes" in first
    leaf = next(s for s in steps if s.tensor is w1)
    assert viz.format_step(leaf) == f"w1 (leaf): incoming grad {viz.summarize(w1.grad)}"
    add = next(s for s in steps if s.op == "Add")
    text = viz.format_step(add, names={id(add.tensor): "z"})
    assert text.splitlines()[0].startswith("z (Add)") and "-> b1: passes" in text


def test_retain_all_grads_keeps_every_intermediate():
    loss, params, (x, h) = small_mlp()
    needing = topological_order([loss])                        # every tensor that gets a gradient
    assert len(needing) > len(params) + 2
    viz.retain_all_grads(loss)
    loss.backward()
    for t in needing:
        assert t.grad is not None and t.grad.shape == t.shape, f"{t.op or 'leaf'} {t.shape} lost its grad"
    assert h.grad is not None and x.grad is None
