"""reasoning/verifier_data.py: sampled solutions with outcome and exact step labels, saved and loaded."""
from __future__ import annotations

import json

import pytest

from reasoning_fakes import after_think_model
from tinygrad_reason.data.records import Record
from tinygrad_reason.generate import SamplingConfig
from tinygrad_reason.reasoning.verifier_data import (LabelledSolution, label_completion, load_labels,
                                                     sample_labelled, save_labels, solution_steps, step_targets)
from tinygrad_reason.tokenizer import Tokenizer

RECORD = Record("Ivan has 6 pens. He buys 2 boxes of 2 pens. He gives away 4 pens. How many are left?",
                [], "6")
RIGHT = [" He buys 2 * 2 = <<2*2=4>>4 pens. ", " He has 6 + 4 = <<6+4=10>>10 pens. ",
         " He keeps 10 - 4 = <<10-4=6>>6 pens. "]
WRONG = [" Buying 2 * 2 = <<2*2=5>>5 pens. ", " He has 6 + 5 = <<6+5=11>>11 pens. ",
         " He keeps 11 - 4 = <<11-4=7>>7 pens. "]


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.default(512)


def completion(tok, steps, answer):
    ids = []
    for s in steps:
        ids += tok.encode(s) + [tok.step_id]
    return ids + [tok.answer_id] + tok.encode(" " + answer) + [tok.eot_id]


def test_labels_of_a_right_and_a_wrong_solution(tok):
    right = label_completion(0, RECORD, completion(tok, RIGHT, "6"), tok)
    assert right.correct and right.answer == "6" and right.step_labels == [True, True, True]
    wrong = label_completion(1, RECORD, completion(tok, WRONG, "7"), tok)
    assert not wrong.correct and wrong.step_labels == [False, False, False]   # wrong from its first step
    texts, ends = solution_steps(wrong.completion, tok)
    assert [t.strip() for t in texts] == [s.strip() for s in WRONG]
    assert all(wrong.completion[i] == tok.step_id for i in ends) and step_targets(wrong) == (ends, [False] * 3)


def test_a_solution_without_step_tokens_has_no_step_targets(tok):
    s = label_completion(0, RECORD, [tok.answer_id] + tok.encode(" 6") + [tok.eot_id], tok)
    assert s.correct and s.step_ends == [] and s.step_labels == []
    with pytest.raises(ValueError, match="has no <\\|step\\|> token"):
        step_targets(s)


def two_way_model(tok):
    """Writes RIGHT or WRONG (its first token sampled at logits 1 : 0), then follows that script."""
    scripts = [completion(tok, RIGHT, "6"), completion(tok, WRONG, "7")]

    def next_logits(gen, x):
        if not gen:
            x[scripts[0][0]], x[scripts[1][0]] = 1.0, 0.0
            return
        script = next(s for s in scripts if s[:len(gen)] == gen)
        x[script[len(gen)] if len(gen) < len(script) else tok.eot_id] = 0.0
    return after_think_model(tok, next_logits), scripts


def test_sampling_labels_every_path_and_repeats_with_the_seed(tok, tmp_path):
    model, scripts = two_way_model(tok)
    assert scripts[0][0] != scripts[1][0]             # the first token decides which script it writes
    cfg = SamplingConfig(temperature=1.0, max_new_tokens=120, stop_ids=(tok.eot_id,), seed=3)
    records = [RECORD, RECORD]
    sols = sample_labelled(model, tok, records, 8, cfg, rows_per_call=8, progress=False)
    assert len(sols) == 16 and [s.problem for s in sols] == [0] * 8 + [1] * 8
    assert {s.correct for s in sols} == {True, False}, "both paths were sampled"
    for s in sols:
        assert s.step_labels == ([True] * 3 if s.correct else [False] * 3)
    again = sample_labelled(model, tok, records, 8, cfg, rows_per_call=16, progress=False)
    assert [s.completion for s in again] == [s.completion for s in sols]        # seeds, not batching, decide
    path = tmp_path / "labels.jsonl"
    save_labels(path, sols, {"seed": cfg.seed, "temperature": cfg.temperature, "n": 8})
    meta, loaded = load_labels(path)
    assert meta == {"seed": 3, "temperature": 1.0, "n": 8} and loaded == sols


def test_a_bad_label_file_is_a_clear_error(tmp_path, tok):
    path = tmp_path / "labels.jsonl"
    save_labels(path, [label_completion(0, RECORD, completion(tok, RIGHT, "6"), tok)], {"seed": 0})
    lines = path.read_text().splitlines()
    header = json.loads(lines[0])
    path.write_text("\n".join([json.dumps({**header, "version": 99})] + lines[1:]) + "\n")
    with pytest.raises(ValueError, match="label file version 99, this code reads version 1"):
        load_labels(path)
    path.write_text("not json\n")
    with pytest.raises(ValueError, match="line 1 is not a tinygrad_reason.verifier_labels header"):
        load_labels(path)
    row = json.loads(lines[1])
    row["step_labels"] = row["step_labels"][:1]
    path.write_text("\n".join([lines[0], json.dumps(row)]) + "\n")
    with pytest.raises(ValueError, match="line 2: 3 step ends but 1 step labels"):
        load_labels(path)
    del row["answer"]
    path.write_text("\n".join([lines[0], json.dumps(row)]) + "\n")
    with pytest.raises(ValueError, match="line 2: fields"):
        load_labels(path)
    assert LabelledSolution.__dataclass_fields__.keys() >= {"answer", "step_labels"}
