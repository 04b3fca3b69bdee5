"""Reasoning with a pretrained chat model (reasoning/chat_eval.py, cli/eval_model.py) and the inline
calculator (generate/tools.py InlineCalculatorTool): on the real SmolLM2 file, a few problems and short
generations, so that the suite stays fast."""
import json
from fractions import Fraction

import numpy as np
import pytest

from tinygrad_reason.data.records import Record
from tinygrad_reason.generate import SamplingConfig, generate
from tinygrad_reason.generate.tools import InlineCalculatorTool, inline_number
from tinygrad_reason.reasoning.chat_eval import (chat_prompt, chat_stop_ids, completion_answer, parse_chat_method,
                                                 run_chat_method, summarize)

PROBLEMS = [Record("Tom has 3 boxes with 4 apples in each box. How many apples does he have?", [], "12"),
            Record("A pen costs $2 and a book costs $5. How much do 2 pens and 1 book cost?", [], "9")]


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf):
    from tinygrad_reason.models.pretrained import load_pretrained
    return load_pretrained(smollm2_gguf)


# ----------------------------------------------------------------------------- the inline calculator
@pytest.mark.parametrize("text, forced", [
    ("A robe takes 2 * 2 =", " 4"), ("so 3 * $60 = ", "180"), ("(12 + 8) / 4 =", " 5"),
    ("1,200 - 300 =", " 900"), ("2.5 x 4 =", " 10"), ("9 \u00f7 3 =", " 3"), ("10/3 =", " 3.3333"),
    ("He has 5 + 3 = 8. Then 8 - 2 =", " 6"), ("-4 + 10 =", " 6"),
    ("The answer is 8 =", None), ("x = 5 =", None), ("2x =", None), ("5 / 0 =", None),
    ("2 * 3 = 6", None), ("line one 4 +\n 3 =", None), ("version 1.2.3 + 4 =", None)])
def test_inline_calculator_reads_prose_arithmetic(text, forced):
    assert InlineCalculatorTool(None).result_text(text) == forced


def test_inline_number_is_exact_when_it_terminates():
    assert inline_number(Fraction(5, 2)) == "2.5"
    assert inline_number(Fraction(-7)) == "-7"
    assert inline_number(Fraction(2, 3)) == "0.6667"
    assert inline_number(Fraction(1, 8)) == "0.125"


def test_inline_calculator_forces_tokens_of_the_real_tokenizer(smollm2):
    tok = smollm2.tokenizer
    tool = InlineCalculatorTool(tok)
    assert tool(tok.encode("She buys 12 * 3 =")) == tok.encode(" 36")
    assert tool(tok.encode("She buys 12 * 3")) is None            # no "=" yet: not even decoded
    assert tool.fired == 1


# ----------------------------------------------------------------------------- answers and methods
@pytest.mark.parametrize("text, answer", [
    ("So 3 * 4 = 12 apples. The answer is 12.", "12"), ("The total is $1,234.", "1234"),
    ("The answer is \\boxed{7}. Then 9 more.", "7"), ("no number here", None), ("#### 42\nand 3", "42")])
def test_completion_answer(text, answer):
    assert completion_answer(text) == answer


@pytest.mark.parametrize("text, parsed", [("greedy", ("greedy", 1)), ("tool", ("tool", 1)), ("sc@8", ("sc", 8))])
def test_parse_chat_method(text, parsed):
    assert parse_chat_method(text) == parsed


@pytest.mark.parametrize("bad", ["sc@0", "sc@", "calc", "Greedy", "bon@4"])
def test_parse_chat_method_refuses(bad):
    with pytest.raises(ValueError, match="unknown method"):
        parse_chat_method(bad)


def test_greedy_rows_are_the_decoded_greedy_generation(smollm2):
    tok = smollm2.tokenizer
    rows = run_chat_method(smollm2, PROBLEMS, [0, 1], "greedy", max_new_tokens=24)
    cfg = SamplingConfig(temperature=0, max_new_tokens=24, stop_ids=chat_stop_ids(tok))
    res = generate(smollm2.model, [chat_prompt(smollm2, r.question) for r in PROBLEMS], cfg)
    assert [r.index for r in rows] == [0, 1]
    for row, ids, ref in zip(rows, res.tokens, PROBLEMS):
        text = tok.decode([t for t in ids if not tok.is_special(t)])
        assert row.completions == [text] and row.tokens == len(ids)
        assert row.chosen == completion_answer(text)
        assert row.correct == (row.chosen == ref.answer)
    assert "<|im_start|>assistant" in tok.decode(chat_prompt(smollm2, "q"))


def test_self_consistency_votes_over_its_paths(smollm2):
    rows = run_chat_method(smollm2, PROBLEMS, [0, 1], "sc@3", max_new_tokens=20, temperature=1.0, rows_per_call=3)
    for row in rows:
        assert len(row.completions) == 3 and len(row.answers) == 3
        counts = {a: row.answers.count(a) for a in row.answers if a is not None}
        if counts:
            assert counts[row.chosen] == max(counts.values())
        else:
            assert row.chosen is None and not row.correct
    again = run_chat_method(smollm2, PROBLEMS, [1], "sc@3", max_new_tokens=20, temperature=1.0)
    assert again[0].completions == rows[1].completions       # a problem's paths do not depend on its batch


def test_summarize_counts_and_wilson_interval():
    rows = [{"correct": c, "completions": ["a"], "tokens": 10, "finished": 1, "chosen": "1", "tool_calls": 0}
            for c in [True] * 3 + [False] * 7]
    s = summarize(rows)
    assert (s["n"], s["correct"], s["accuracy"]) == (10, 3, 0.3)
    assert s["ci95"][0] < 0.3 < s["ci95"][1]
    assert np.isclose(s["ci95"][0], 0.1078, atol=1e-3) and np.isclose(s["ci95"][1], 0.6032, atol=1e-3)


# ----------------------------------------------------------------------------- the command
def test_eval_model_command_writes_rows_and_resumes(smollm2_gguf, tmp_path, capsys):
    from tinygrad_reason.cli import main
    data = tmp_path / "problems.jsonl"
    data.write_text("".join(json.dumps({"question": r.question, "answer": f"x\n#### {r.answer}"}) + "\n"
                            for r in PROBLEMS))
    out = tmp_path / "out"
    argv = ["eval-model", "--model", smollm2_gguf, "--data", str(data), "--methods", "greedy,tool",
            "--max-new-tokens", "12", "--out", str(out)]
    assert main(argv) == 0
    lines = (out / "greedy.jsonl").read_text().splitlines()
    assert [json.loads(x)["index"] for x in lines] == [0, 1]
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["methods"]) == {"greedy", "tool"} and summary["methods"]["greedy"]["n"] == 2
    assert "| greedy |" in (out / "table.md").read_text()
    # an interrupted run: a torn last line is dropped and only that problem is done again
    with open(out / "greedy.jsonl", "w") as f:
        f.write(lines[0] + "\n" + lines[1][:20])
    assert main(argv) == 0
    again = (out / "greedy.jsonl").read_text().splitlines()
    assert again == lines
    assert "greedy: 2/2 problems" in capsys.readouterr().out


def test_eval_model_command_refuses_bad_options(smollm2_gguf, tmp_path, capsys):
    from tinygrad_reason.cli import main
    assert main(["eval-model", "--model", smollm2_gguf, "--data", "x.jsonl", "--methods", "sc@0",
                 "--out", str(tmp_path)]) == 2
    assert "--methods: unknown method 'sc@0'" in capsys.readouterr().err
    assert main(["eval-model", "--model", "no-such-model", "--data", "x.jsonl", "--out", str(tmp_path)]) == 2


def test_built_in_multiplication_data():
    from tinygrad_reason.cli.config import CLIError
    from tinygrad_reason.cli.eval_model import _load_records
    recs = _load_records("multiplication:3x1", "gsm8k", 20, seed=1)
    assert len(recs) == 20
    for r in recs:
        assert r.question == f"What is {r.meta['a']} x {r.meta['b']}?" and r.answer == str(r.meta["a"] * r.meta["b"])
        assert len(str(r.meta["a"])) == 3 and len(str(r.meta["b"])) == 1
    assert [r.question for r in _load_records("multiplication:3x1", "gsm8k", 20, seed=1)] == [r.question for r in recs]
    for bad in ("multiplication:3", "multiplication:0x1", "multiplication:axb"):
        with pytest.raises(CLIError, match="multiplication:AxB"):
            _load_records(bad, "gsm8k", 5, seed=0)
