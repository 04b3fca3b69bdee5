"""Splits: no overlap (thousands of items), byte-identical from a seed, OOD really harder."""

import os
import statistics
import subprocess
import sys

import pytest

from tinygrad_reason.data import Record, records_digest
from tinygrad_reason.data.records import normalize_question
from tinygrad_reason.data.splits import dedup_keys, make_splits, ood_knobs, split_records

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def splits():
    return {task: make_splits(task, 4000, 1000, 500, seed=0)
            for task in ("arithmetic", "multiplication", "countdown")}


@pytest.mark.parametrize("task", ["arithmetic", "multiplication", "countdown"])
def test_sizes_and_no_overlap(splits, task):
    s = splits[task]
    assert [len(s[k]) for k in ("train", "test", "ood")] == [4000, 1000, 500]
    qs = {k: [normalize_question(r.question) for r in v] for k, v in s.items()}
    for k, v in qs.items():
        assert len(set(v)) == len(v), f"duplicates inside {k}"
    assert not set(qs["train"]) & set(qs["test"])
    assert not set(qs["train"]) & set(qs["ood"])
    assert not set(qs["test"]) & set(qs["ood"])
    # the stricter keys (same numbers and operations in another story) do not overlap either
    keys = {k: {key for r in v for key in dedup_keys(r)} for k, v in s.items()}
    assert not keys["train"] & keys["test"] and not keys["train"] & keys["ood"]
    assert not keys["test"] & keys["ood"]
    assert all(r.meta["split"] == k for k, v in s.items() for r in v)


def test_small_space_dedupes_and_never_overlaps():
    # 1-digit x 1-digit has only 81 problems: splits must still be disjoint
    s = make_splits("multiplication", 50, 20, 0, seed=3, min_digits_a=1, max_digits_a=1,
                    min_digits_b=1, max_digits_b=1)
    tr = {r.question for r in s["train"]}
    te = {r.question for r in s["test"]}
    assert len(tr) == 50 and len(te) == 20 and not tr & te
    with pytest.raises(ValueError, match="distinct"):
        make_splits("multiplication", 70, 20, 0, seed=3, min_digits_a=1, max_digits_a=1,
                    min_digits_b=1, max_digits_b=1, max_rounds=5)


def test_normalization_catches_near_duplicates():
    a = Record("What is 2 x 3?", ["x"], "6")
    b = Record("  what IS 2   x 3 ", ["x"], "6")
    assert dedup_keys(a) == dedup_keys(b)
    train, test = split_records([a, b, Record("Other?", [], "1")], n_test=1, seed=0)
    assert len(train) + len(test) == 2


@pytest.mark.parametrize("task", ["arithmetic", "multiplication", "countdown"])
def test_deterministic_byte_identical(task):
    a = make_splits(task, 300, 100, 50, seed=42, )
    b = make_splits(task, 300, 100, 50, seed=42)
    c = make_splits(task, 300, 100, 50, seed=43)
    for k in ("train", "test", "ood"):
        assert records_digest(a[k]) == records_digest(b[k])
        assert records_digest(a[k]) != records_digest(c[k])


def test_byte_identical_across_processes_and_hash_seeds():
    code = ("from tinygrad_reason.data import make_splits, records_digest;"
            "s = make_splits('arithmetic', 200, 50, 20, seed=5, distractors=0.3);"
            "print(*[records_digest(s[k]) for k in ('train', 'test', 'ood')])")
    outs = []
    for hs in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hs, "PYTHONPATH": REPO}
        outs.append(subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO,
                                   capture_output=True, text=True, check=True).stdout)
    assert outs[0] == outs[1] and len(outs[0].split()) == 3
    here = make_splits("arithmetic", 200, 50, 20, seed=5, distractors=0.3)
    assert outs[0].split() == [records_digest(here[k]) for k in ("train", "test", "ood")]


def test_test_and_ood_do_not_depend_on_train_size():
    a = make_splits("arithmetic", 100, 200, 50, seed=1)
    b = make_splits("arithmetic", 2000, 200, 50, seed=1)
    assert records_digest(a["test"]) == records_digest(b["test"])
    assert records_digest(a["ood"]) == records_digest(b["ood"])
    assert [r.question for r in b["train"][:100]] == [r.question for r in a["train"]]


def test_ood_arithmetic_is_harder(splits):
    s = splits["arithmetic"]
    tr_steps = [r.meta["n_steps"] for r in s["train"]]
    ood_steps = [r.meta["n_steps"] for r in s["ood"]]
    assert min(ood_steps) > max(tr_steps)
    tr_max = [max(r.meta["values"]) for r in s["train"]]
    ood_max = [max(r.meta["values"]) for r in s["ood"]]
    assert statistics.median(ood_max) > 5 * statistics.median(tr_max)
    assert max(r.meta["values"][0] for r in s["train"]) <= 100
    assert statistics.mean(r.meta["values"][0] for r in s["ood"]) > 100
    # test is in-distribution: same step range as train
    te_steps = [r.meta["n_steps"] for r in s["test"]]
    assert set(te_steps) == set(tr_steps) == {2, 3, 4}


def test_ood_multiplication_and_countdown_are_harder(splits):
    m = splits["multiplication"]
    assert min(r.meta["digits_a"] for r in m["ood"]) > max(r.meta["digits_a"] for r in m["train"])
    assert min(r.meta["digits_b"] for r in m["ood"]) > max(r.meta["digits_b"] for r in m["train"])
    assert (statistics.mean(r.meta["n_steps"] for r in m["ood"])
            > statistics.mean(r.meta["n_steps"] for r in m["train"]) + 1.5)
    c = splits["countdown"]
    assert min(r.meta["n_used"] for r in c["ood"]) > max(r.meta["n_used"] for r in c["train"])
    assert min(r.meta["target"] for r in c["ood"]) > max(r.meta["target"] for r in c["train"])


def test_ood_modes():
    base = dict(max_steps=4, max_value=100)
    k = ood_knobs("arithmetic", base, "steps")
    assert (k["min_steps"], k["max_steps"], k["max_value"]) == (5, 6, 100)
    k = ood_knobs("arithmetic", base, "values")
    assert (k["max_steps"], k["max_value"], k["value_cap"]) == (4, 1000, 10000)
    s = make_splits("arithmetic", 10, 10, 200, seed=0, ood_mode="values")
    assert max(r.meta["n_steps"] for r in s["ood"]) <= 4
    with pytest.raises(ValueError):
        ood_knobs("arithmetic", base, "harder")
    with pytest.raises(ValueError):
        make_splits("nope", 1, 1)


def test_split_records_deterministic_and_disjoint():
    recs = [Record(f"Question number {i}?", [], str(i)) for i in range(1000)]
    recs += recs[:10]                                   # exact duplicates are dropped
    tr1, te1 = split_records(recs, n_test=100, seed=0)
    tr2, te2 = split_records(recs, n_test=100, seed=0)
    _, te3 = split_records(recs, n_test=100, seed=1)
    assert records_digest(te1) == records_digest(te2) and records_digest(tr1) == records_digest(tr2)
    assert records_digest(te1) != records_digest(te3)
    assert len(te1) == 100 and len(tr1) == 900
    assert not {r.question for r in tr1} & {r.question for r in te1}
    with pytest.raises(ValueError):
        split_records(recs, n_test=5000)
