"""GSM8K / MATH loaders on the real files (skipped if absent) and on corrupt files."""

import json
import os
import re

import pytest

from tinygrad_reason.data import Record
from tinygrad_reason.data.loaders import (
    LoadResult, load_gsm8k, load_math, parse_gsm8k_answer, split_math_solution,
)
from tinygrad_reason.grading.answers import last_boxed
from tinygrad_reason.grading.safe_eval import find_annotations

TESTS = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(TESTS)
SHARED = os.path.normpath(os.path.join(REPO, "..", "shared", "data"))
GSM_TEST = os.path.join(SHARED, "gsm8k", "test.jsonl")
GSM_TRAIN = os.path.join(SHARED, "gsm8k", "train.jsonl")
MATH500 = os.path.join(SHARED, "math500", "test.jsonl")


def _need(path):
    if not os.path.exists(path):
        pytest.skip(f"real data file absent: {path} (expected next to the repo in ../shared/data)")
    return path


# ---------------------------------------------------------------------------- real files

def test_gsm8k_test_real():
    res = load_gsm8k(_need(GSM_TEST))
    assert isinstance(res, LoadResult)
    assert (len(res.records), res.n_skipped, res.first_error) == (1319, 0, None)
    r0 = res.records[0]
    assert r0.answer == "18"
    assert r0.question.startswith("Janet\u2019s ducks lay 16 eggs per day.")
    assert r0.steps == ["Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.",
                        "She makes 9 * 2 = $<<9*2=18>>18 every day at the farmer\u2019s market."]
    assert r0.meta["task"] == "gsm8k" and r0.meta["line"] == 1 and r0.meta["n_steps"] == 2
    assert res.records[1].answer == "3" and res.records[2].answer == "70000"
    assert all(re.fullmatch(r"-?\d+", r.answer) for r in res.records)
    assert all(r.steps and not any("####" in s for s in r.steps) for r in res.records)
    assert "1319 records loaded, 0 skipped" in res.summary()
    # nearly all GSM8K calculator annotations re-evaluate correctly with safe_eval
    anns = [a for r in res.records for s in r.steps for a in find_annotations(s)]
    assert len(anns) > 3000
    assert sum(a.ok for a in anns) / len(anns) > 0.97


def test_gsm8k_train_real():
    res = load_gsm8k(_need(GSM_TRAIN))
    assert (len(res.records), res.n_skipped) == (7473, 0)
    assert res.records[0].answer == "72" and res.records[0].question.startswith("Natalia sold clips")


def test_math500_real():
    res = load_math(_need(MATH500))
    assert (len(res.records), res.n_skipped, res.first_error) == (500, 0, None)
    r0 = res.records[0]
    assert r0.answer == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert r0.meta["subject"] == "Precalculus" and r0.meta["level"] == 2
    assert res.records[1].answer == "p - q"
    assert res.records[2].answer == "\\frac{14}{3}"
    raw = [json.loads(line) for line in open(MATH500, encoding="utf-8")]
    for rec, obj in zip(res.records, raw):
        # the answer field agrees with the last \boxed{} on every MATH-500 record
        assert last_boxed(obj["solution"]) == obj["answer"] == rec.answer
        # splitting into steps loses nothing but whitespace
        assert re.sub(r"\s", "", "".join(rec.steps)) == re.sub(r"\s", "", obj["solution"])
        assert rec.meta["n_steps"] == len(rec.steps) >= 1
    assert sum(len(r.steps) > 1 for r in res.records) > 250
    # [asy] pictures and display math are never cut in the middle
    for rec in res.records:
        for s in rec.steps:
            assert s.count("[asy]") == s.count("[/asy]")
            assert s.count("\\[") == s.count("\\]")
            assert s.count("\\begin{") == s.count("\\end{")


def test_package_does_not_hardcode_data_location():
    pkg = os.path.join(REPO, "tinygrad_reason", "data")
    for fn in os.listdir(pkg):
        if fn.endswith(".py"):
            src = open(os.path.join(pkg, fn), encoding="utf-8").read()
            assert "shared/data" not in src and "gsm8k/test" not in src, fn


# --------------------------------------------------------------------------- corrupt files

GOOD1 = {"question": "Q one?", "answer": "1+1=<<1+1=2>>2\n#### 2"}
GOOD2 = {"question": "Q two?", "answer": "It is 1,000 + 234 = <<1000+234=1234>>1,234\n#### 1,234"}


def _write(tmp_path, name, chunks):
    p = tmp_path / name
    p.write_bytes(b"".join(c if isinstance(c, bytes) else (c + "\n").encode("utf-8") for c in chunks))
    return p


def test_gsm8k_corrupt_file(tmp_path):
    p = _write(tmp_path, "bad.jsonl", [
        json.dumps(GOOD1),                                     # 1 ok
        "this is not json",                                    # 2 garbage
        '{"question": "Q?", "answer": "x\\n#### 3"',           # 3 truncated JSON
        "",                                                    # 4 empty (ignored)
        "   ",                                                 # 5 blank (ignored)
        json.dumps({"question": 5, "answer": "#### 1"}),       # 6 wrong type
        json.dumps({"question": "Q?"}),                        # 7 missing field
        json.dumps({"question": "Q?", "answer": "no marker"}),  # 8 no ####
        json.dumps({"question": "Q?", "answer": "a\n####  "}),  # 9 empty final answer
        json.dumps([1, 2, 3]),                                 # 10 not an object
        b'{"question": "caf\xe9?", "answer": "#### 1"}\n',     # 11 not UTF-8
        "[" * 100_000 + "]" * 100_000,                         # 12 nested too deep for json
        json.dumps({"question": "", "answer": "#### 1"}),      # 13 empty question
        "null",                                                # 14 JSON null
        json.dumps(GOOD2),                                     # 15 ok
        json.dumps({"question": "Q3?", "answer": "#### 7", "extra": [1]}),  # 16 ok (extra ignored)
        b'{"question": "Q4?", "answer": "#### 8"}\r\n',        # 17 ok (CRLF)
        b'{"question": "Q5?", "answer": "#### 9"}',            # 18 ok (no final newline)
    ])
    res = load_gsm8k(p)
    assert [r.answer for r in res.records] == ["2", "1234", "7", "8", "9"]
    assert [r.meta["line"] for r in res.records] == [1, 15, 16, 17, 18]
    assert res.n_skipped == 11 and res.n_blank == 2
    assert res.first_error[0] == 2 and "invalid JSON" in res.first_error[1]
    reasons = dict(res.errors)
    assert "invalid JSON" in reasons[3]
    assert "'question'" in reasons[6] and "int" in reasons[6]
    assert "missing field 'answer'" in reasons[7]
    assert "####" in reasons[8] and "empty final answer" in reasons[9]
    assert "object" in reasons[10] and "UTF-8" in reasons[11]
    assert 12 in reasons and "empty" in reasons[13] and "object" in reasons[14]
    s = res.summary()
    assert "5 records loaded" in s and "11 skipped" in s and "line 2" in s
    assert res.records[1].steps == ["It is 1,000 + 234 = <<1000+234=1234>>1,234"]


def test_math_corrupt_file(tmp_path):
    good = {"problem": "P?", "solution": "So $x=\\boxed{\\frac{1}{2}}$.", "answer": "\\frac12"}
    p = _write(tmp_path, "math.jsonl", [
        json.dumps(good),                                                         # 1 answer field
        json.dumps({"problem": "P?", "solution": "Thus \\boxed{\\{1, \\sqrt{2}\\}}."}),  # 2 fallback
        json.dumps({"problem": "P?", "solution": "no box here"}),                 # 3 no answer
        json.dumps({"problem": "P?", "solution": "\\boxed{1}", "answer": [1]}),   # 4 wrong type
        json.dumps({"problem": ["P"], "solution": "s", "answer": "1"}),           # 5 wrong type
        json.dumps({"solution": "s", "answer": "1"}),                             # 6 missing
        '{"problem": "P?", "solut',                                               # 7 truncated
        b"\xff\xfe\x00garbage\n",                                                 # 8 not UTF-8
        json.dumps({"problem": "P?", "solution": "$\\boxed{3}$", "answer": 3}),   # 9 int answer
        json.dumps({"problem": "P?", "solution": "Unclosed \\boxed{3"}),          # 10 unbalanced
    ])
    res = load_math(p)
    assert [r.answer for r in res.records] == ["\\frac12", "\\{1, \\sqrt{2}\\}", "3"]
    assert [r.meta["answer_source"] for r in res.records] == ["answer", "boxed", "answer"]
    assert res.n_skipped == 7 and res.first_error[0] == 3
    assert "\\boxed" in res.first_error[1]


def test_missing_file_names_path(tmp_path):
    missing = tmp_path / "nope" / "test.jsonl"
    with pytest.raises(FileNotFoundError, match="nope"):
        load_gsm8k(missing)
    with pytest.raises(FileNotFoundError, match=re.escape(str(missing))):
        load_math(str(missing))
    with pytest.raises(IsADirectoryError):
        load_gsm8k(tmp_path)


def test_empty_file_and_bom(tmp_path):
    p = tmp_path / "empty.jsonl"
    p.write_bytes(b"")
    res = load_gsm8k(p)
    assert (len(res.records), res.n_skipped, res.first_error) == (0, 0, None)
    p.write_bytes(b"\xef\xbb\xbf" + json.dumps(GOOD1).encode() + b"\n")
    assert load_gsm8k(p).records[0].answer == "2"


def test_parse_gsm8k_answer():
    assert parse_gsm8k_answer("a\n\n b \n#### 1,234,567 ") == (["a", "b"], "1234567")
    assert parse_gsm8k_answer("x #### 1\n#### 2") == (["x #### 1"], "2")     # last marker wins
    assert parse_gsm8k_answer("#### -3.5") == ([], "-3.5")
    with pytest.raises(ValueError):
        parse_gsm8k_answer("no marker")


@pytest.mark.parametrize("text, want", [
    ("\\boxed{5}", "5"),
    ("a \\boxed{1} then \\boxed{2}", "2"),
    ("\\boxed{\\frac{1}{\\sqrt{2}}}", "\\frac{1}{\\sqrt{2}}"),
    ("$\\boxed{\\{1,2\\}}$", "\\{1,2\\}"),
    ("\\boxed {x^{2}}", "x^{2}"),
    ("\\boxed 5$.", "5"),
    ("\\fbox{7}", "7"),
    ("\\boxed{\\text{(C)}}.", "\\text{(C)}"),
    ("\\boxed{\\{} and", "\\{"),                      # an escaped brace does not nest
    ("\\boxed{\\left[0, 1\\right\\}}", "\\left[0, 1\\right\\}"),
    ("\\boxed{a \\\\ b}", "a \\\\ b"),                  # \\ (line break) then a real brace
    ("\\boxed{", None), ("\\boxed{a{b}", None), ("no box", None), ("\\boxed", None),
    ("\\boxedfoo{1}", None),
])
def test_last_boxed(text, want):
    """MATH's reference answers come from the grader's own last_boxed (one definition)."""
    assert last_boxed(text) == want


def test_split_math_solution():
    sol = ("First, $x = 3.$  Then we add. So $y=4$.\n\nNext paragraph with "
           "\\[a. B\\]inside. Also $1. A$ stays.\n\n[asy]\ndraw(a);\n\nlabel(\"A. B\");\n[/asy]\n\n"
           "\\begin{align*}\nx &= 1. \\\\\n\nY &= 2.\n\\end{align*}")
    steps = split_math_solution(sol)
    assert steps == [
        "First, $x = 3.$", "Then we add.", "So $y=4$.",
        "Next paragraph with \\[a. B\\]inside.", "Also $1. A$ stays.",
        "[asy]\ndraw(a);\n\nlabel(\"A. B\");\n[/asy]",
        "\\begin{align*}\nx &= 1. \\\\\n\nY &= 2.\n\\end{align*}",
    ]
    assert split_math_solution("") == []
    assert split_math_solution("One sentence only") == ["One sentence only"]


def test_record_helpers():
    r = Record("Q?", ["a = <<1+1=2>>2", "b"], "2", {"task": "t"})
    assert r.solution_text() == "a = <<1+1=2>>2\nb" and r.solution_text(" ") == "a = <<1+1=2>>2 b"
    assert r.task == "t" and Record.from_dict(json.loads(r.to_json())) == r
