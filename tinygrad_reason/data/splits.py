"""Deterministic train / test / out-of-distribution splits for the synthetic tasks.

``make_splits(task, n_train, n_test, n_ood, seed, **knobs)`` returns
``{"train": [...], "test": [...], "ood": [...]}``:

* no two records in (and across) the splits share a de-duplication key: the normalized
  question text, and ``meta["dedup_key"]`` where the generator sets one (the same
  numbers and operations told as another story count as the same problem);
* ``test`` is drawn first and ``ood`` second, so both are the same for any ``n_train``
  (evaluations stay comparable when the training set grows); ``train`` avoids both;
* ``ood`` uses harder knobs than training saw (``ood_knobs``): more steps and/or bigger
  numbers, each strictly outside the training range;
* the same arguments give byte-identical splits (seeds go through sha256, never ``hash``).
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Iterable

from .arithmetic import generate_arithmetic
from .countdown import generate_countdown
from .multiplication import generate_multiplication
from .records import Record, derive_seed, make_rng, normalize_question

__all__ = ["TASKS", "make_splits", "ood_knobs", "dedup_keys", "split_records", "generate"]

TASKS: dict[str, Callable[..., list[Record]]] = {
    "arithmetic": generate_arithmetic,
    "multiplication": generate_multiplication,
    "countdown": generate_countdown,
}


def _defaults(task: str) -> dict[str, Any]:
    sig = inspect.signature(TASKS[task])
    return {k: p.default for k, p in sig.parameters.items()
            if k not in ("n", "seed") and p.default is not inspect.Parameter.empty}


def generate(task: str, n: int, seed: int, **knobs: Any) -> list[Record]:
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {sorted(TASKS)}")
    return TASKS[task](n, seed, **knobs)


def ood_knobs(task: str, knobs: dict[str, Any], mode: str = "both") -> dict[str, Any]:
    """Knobs for the out-of-distribution split. ``mode``: ``"steps"`` (longer chains),
    ``"values"`` (bigger numbers) or ``"both"``. Every changed range starts above the
    training range, so no OOD problem could have come from the training distribution."""
    if mode not in ("steps", "values", "both"):
        raise ValueError("mode must be 'steps', 'values' or 'both'")
    k = {**_defaults(task), **knobs}
    steps, values = mode in ("steps", "both"), mode in ("values", "both")
    if task == "arithmetic":
        if steps:
            k["min_steps"], k["max_steps"] = k["max_steps"] + 1, k["max_steps"] + 2
        if values:
            cap = k["value_cap"] if k["value_cap"] is not None else 10 * k["max_value"]
            k["max_value"] *= 10
            k["value_cap"] = cap * 10
    elif task == "multiplication":
        if steps:   # more digits in b = more partial products
            k["min_digits_b"] = k["max_digits_b"] = k["max_digits_b"] + 1
        if values:
            k["min_digits_a"] = k["max_digits_a"] = k["max_digits_a"] + 1
    elif task == "countdown":
        used = k["max_used"] if k["max_used"] is not None else k["n_numbers"]
        if steps:
            k["n_numbers"] = max(k["n_numbers"], used + 1)
            k["min_used"] = k["max_used"] = used + 1
        if values:
            k["max_number"] *= 4
            k["min_target"], k["max_target"] = k["max_target"] + 1, k["max_target"] * 10
    else:
        raise ValueError(f"unknown task {task!r}; known: {sorted(TASKS)}")
    return k


def dedup_keys(rec: Record) -> tuple[str, ...]:
    keys = ["q:" + normalize_question(rec.question)]
    dk = rec.meta.get("dedup_key")
    if dk:
        keys.append("k:" + str(dk))
    return tuple(keys)


def _collect(task: str, n: int, seed: int, tag: str, knobs: dict[str, Any], seen: set,
             max_rounds: int) -> list[Record]:
    out: list[Record] = []
    for rnd in range(max_rounds):
        if len(out) >= n:
            break
        want = n - len(out)
        batch = generate(task, max(2 * want, 64), derive_seed("split", task, seed, tag, rnd), **knobs)
        for rec in batch:
            keys = dedup_keys(rec)
            if any(key in seen for key in keys):
                continue
            seen.update(keys)
            rec.meta["split"] = tag
            rec.meta["index"] = len(out)
            out.append(rec)
            if len(out) == n:
                break
    if len(out) < n:
        raise ValueError(f"{task}/{tag}: only {len(out)} distinct problems of {n} requested "
                         f"after {max_rounds} rounds; widen the knobs (more digits, steps or values)")
    return out


def make_splits(
    task: str,
    n_train: int,
    n_test: int,
    n_ood: int = 0,
    seed: int = 0,
    ood_mode: str = "both",
    max_rounds: int = 50,
    **knobs: Any,
) -> dict[str, list[Record]]:
    """Train / test / OOD splits of a synthetic ``task``; see the module docstring.

    ``knobs`` go to the generator for train and test; OOD uses ``ood_knobs(task, knobs,
    ood_mode)``. Raises ``ValueError`` when the knobs allow too few distinct problems.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; known: {sorted(TASKS)}")
    for nm, v in (("n_train", n_train), ("n_test", n_test), ("n_ood", n_ood)):
        if v < 0:
            raise ValueError(f"{nm} must be >= 0")
    seen: set = set()
    test = _collect(task, n_test, seed, "test", knobs, seen, max_rounds)
    ood = _collect(task, n_ood, seed, "ood", ood_knobs(task, knobs, ood_mode), seen, max_rounds) if n_ood else []
    train = _collect(task, n_train, seed, "train", knobs, seen, max_rounds)
    return {"train": train, "test": test, "ood": ood}


def split_records(records: Iterable[Record], n_test: int, seed: int = 0,
                  ) -> tuple[list[Record], list[Record]]:
    """Deterministically split existing records (e.g. GSM8K train) into train / held-out.

    Duplicates (same key, see :func:`dedup_keys`) are dropped first, keeping the first,
    so the two parts never overlap. The order inside each part follows the input order.
    """
    uniq: list[Record] = []
    seen: set = set()
    for r in records:
        keys = dedup_keys(r)
        if any(k in seen for k in keys):
            continue
        seen.update(keys)
        uniq.append(r)
    if not 0 <= n_test <= len(uniq):
        raise ValueError(f"n_test must be in [0, {len(uniq)}], got {n_test}")
    idx = list(range(len(uniq)))
    make_rng(derive_seed("split_records", seed)).shuffle(idx)
    held = set(idx[:n_test])
    train = [r for i, r in enumerate(uniq) if i not in held]
    test = [r for i, r in enumerate(uniq) if i in held]
    return train, test
