"""The package's layout holds: each folder is one layer and imports only from layers below it, there
is no import circle, no module reads another module's underscore names, grading/ imports nothing of
the engine, and importing the package changes nothing outside it.

The imports are read with ast from the source (function-level imports included), so a lazy import
that goes upward is caught as well as a top-level one."""
from __future__ import annotations

import ast
import os
import pathlib
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent / "tinygrad_reason"
PACKAGE = "tinygrad_reason"

# bottom to top; a module may import its own folder (or file) and anything in an earlier layer
LAYERS = [
    ["backend"],
    ["fast"],
    ["tensor"],
    ["ops"],
    ["creation", "functional", "gradcheck", "viz", "parallel", "comm"],
    ["nn"],
    ["optim"],
    ["io"],
    ["models"],
    ["grading"],
    ["tokenizer"],
    ["data"],
    ["generate"],
    ["train"],
    ["reasoning"],
    ["cli"],
]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names}


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict:
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


def _imports(module: str, path: pathlib.Path, modules: dict):
    """(target module, imported name or None, line) for every import of the package in `path`, and the
    underscore attributes read off imported package modules."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(), str(path))
    found, aliases = [], {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != PACKAGE:
                continue
            for alias in node.names:
                full = f"{target}.{alias.name}"
                if full in modules:                       # `from . import backend`: a module
                    found.append((full, None, node.lineno))
                    aliases[alias.asname or alias.name] = full
                else:
                    found.append((target, alias.name, node.lineno))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == PACKAGE:
                    found.append((alias.name, None, node.lineno))
    private_reads = [(aliases[n.value.id], n.attr, n.lineno) for n in ast.walk(tree)
                     if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in aliases
                     and n.attr.startswith("_") and not n.attr.startswith("__")]
    return found, private_reads


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _graph():
    modules = _modules()
    edges, problems = {}, []
    for module, path in modules.items():
        found, private_reads = _imports(module, path, modules)
        for target, name, line in found:
            edges.setdefault(module, set()).add(target)
            if name is not None and name.startswith("_") and not name.startswith("__"):
                problems.append(f"{path.name}:{line}: {module} imports the private name {target}.{name}")
        for target, attr, line in private_reads:
            problems.append(f"{path.name}:{line}: {module} reads the private name {target}.{attr}")
    return modules, edges, problems


def _cycles(modules, edges):
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], [0]
    for root in modules:
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in modules:
                    continue
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges.get(w, ())))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    component = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        component.append(w)
                        if w == v:
                            break
                    if len(component) > 1:
                        out.append(sorted(component))
    return out


def test_no_import_circles():
    modules, edges, _ = _graph()
    assert _cycles(modules, edges) == []


def test_no_module_reads_another_modules_private_names():
    _, _, problems = _graph()
    assert problems == []


def test_every_folder_imports_only_downward():
    modules, edges, _ = _graph()
    unknown = sorted({_top(m) for m in modules if _top(m) and _top(m) not in RANK})
    assert not unknown, f"place these in LAYERS: {unknown}"
    upward = []
    for module, targets in edges.items():
        source = _top(module)
        if not source:                          # the package's __init__ gathers the public API
            continue
        for target in targets:
            dest = _top(target)
            if dest and dest != source and RANK[dest] > RANK[source]:
                upward.append(f"{module} ({source}, layer {RANK[source]}) imports {target} ({dest}, layer {RANK[dest]})")
    assert upward == []


def test_grading_imports_nothing_of_the_engine():
    modules, edges, _ = _graph()
    outside = sorted(f"{m} -> {t}" for m, ts in edges.items() if _top(m) == "grading"
                     for t in ts if _top(t) != "grading")
    assert outside == []


def test_the_check_catches_a_circle_and_a_private_import():
    """The checks above can fail: two modules that import each other, and an underscore import."""
    modules = {f"{PACKAGE}.a": None, f"{PACKAGE}.b": None}
    assert _cycles(modules, {f"{PACKAGE}.a": {f"{PACKAGE}.b"}, f"{PACKAGE}.b": {f"{PACKAGE}.a"}}) \
        == [[f"{PACKAGE}.a", f"{PACKAGE}.b"]]
    assert _cycles(modules, {f"{PACKAGE}.a": {f"{PACKAGE}.b"}}) == []


def test_the_import_walk_sees_private_and_lazy_imports(tmp_path):
    source = "def f():\n    from ..fast.kernels import _erf_exact\n    from .. import backend\n    return backend._cupy\n"
    fake = tmp_path / "nn.py"
    fake.write_text(source)
    found, private_reads = _imports(f"{PACKAGE}.ops.nn", fake, _modules())
    assert (f"{PACKAGE}.fast.kernels", "_erf_exact", 2) in found
    assert private_reads == [(f"{PACKAGE}.backend", "_cupy", 4)]


def test_importing_the_package_has_no_side_effects():
    """No malloc tuning, no MKL, no worker processes or threads: the command line opts in."""
    code = ("import threading, tinygrad_reason as tg, tinygrad_reason.cli, tinygrad_reason.train, "
            "tinygrad_reason.reasoning.methods\n"
            "from tinygrad_reason.fast import allocator, blas\n"
            "assert not allocator.applied, 'malloc was tuned on import'\n"
            "assert not blas.mkl_enabled(), 'MKL was switched on by import'\n"
            "assert threading.active_count() == 1, threading.enumerate()\n"
            "print('clean')\n")
    env = {**os.environ, "TINYGRAD_REASON_BLAS": "mkl"}      # even with the switch set: only the CLI reads it
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "clean", out.stderr
