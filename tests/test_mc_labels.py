"""reasoning/verifier_data.py's Monte-Carlo step values (Math-Shepherd): exact on a scripted model whose
continuations are known, independent of batching and of the context limit, saved and loaded, and
compared with the exact step labels."""
from __future__ import annotations

import json
import math
from dataclasses import asdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reasoning_fakes import after_think_model
from test_verifier_data import RECORD, RIGHT, WRONG, completion
from tinygrad_reason.data.formats import prompt_ids
from tinygrad_reason.data.records import Record
from tinygrad_reason.generate import SamplingConfig, generate
from tinygrad_reason.reasoning.self_consistency import SEED_STRIDE
from tinygrad_reason.reasoning.verifier_data import (MC_SEED_OFFSET, MC_STRIDE, LabelledSolution, label_agreement,
                                                     label_completion, load_labels, mc_hard_labels, mc_seed,
                                                     mc_step_labels, save_labels)
from tinygrad_reason.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.default(512)


def scripts(tok):
    """RIGHT (answer 6), WRONG (7), and SLIP: WRONG's first step, then RIGHT's last two (6)."""
    return {"right": completion(tok, RIGHT, "6"), "wrong": completion(tok, WRONG, "7"),
            "slip": completion(tok, [WRONG[0]] + RIGHT[1:], "6")}


def tree_model(tok, paths, context_length: int = 256):
    """Follows whichever of `paths` the tokens so far begin, uniformly among the next tokens they
    allow (so after WRONG's first step it goes on WRONG or SLIP at 1 : 1), <|endoftext|> past them all."""
    def next_logits(gen, x):
        nxt = {p[len(gen)] for p in paths if len(p) > len(gen) and p[:len(gen)] == gen}
        for t in nxt or {tok.eot_id}:
            x[t] = 0.0
    return after_think_model(tok, next_logits, context_length)


def cfg_of(tok, max_new_tokens=120, seed=5):
    return SamplingConfig(temperature=1.0, max_new_tokens=max_new_tokens, stop_ids=(tok.eot_id,), seed=seed)


def labelled(tok, names, sc):
    return [label_completion(0, RECORD, sc[n], tok) for n in names]


def test_values_are_the_fractions_of_right_continuations(tok):
    sc = scripts(tok)
    model = tree_model(tok, list(sc.values()))
    no_steps = label_completion(0, RECORD, [tok.answer_id] + tok.encode(" 6") + [tok.eot_id], tok)
    sols = labelled(tok, ["right", "wrong", "slip"], sc) + [no_steps]
    k, cfg = 64, cfg_of(tok)
    out = mc_step_labels(model, tok, [RECORD], sols, k, cfg, rows_per_call=48, progress=False)
    assert [s.mc_k for s in out] == [k] * 4 and [s.mc_values for s in sols] == [[]] * 4   # the input is left alone
    right, wrong, slip, none = out
    assert right.mc_values == [1.0, 1.0, 1.0]          # after a right step it always finishes right
    assert wrong.mc_values[1:] == [0.0, 0.0] and slip.mc_values[1:] == [1.0, 1.0]   # past the branch: one path
    assert none.mc_values == [] and none.step_ends == []
    assert wrong.step_labels == slip.step_labels == [False] * 3   # exact: wrong from the first step on
    # after WRONG's first step the path branches 1 : 1; the value is exactly what the documented seeds give ...
    prompt = prompt_ids(RECORD, tok, "cot")
    for i, sol in ((1, wrong), (2, slip)):
        head = sol.completion[:sol.step_ends[0] + 1]
        alone = [generate(model, [prompt + head], cfg, row_seeds=[mc_seed(i, 0, j)]).tokens[0] for j in range(k)]
        n_right = sum(head + c == sc["slip"] for c in alone)
        assert sum(head + c in (sc["slip"], sc["wrong"]) for c in alone) == k
        assert sol.mc_values[0] == n_right / k
        assert abs(sol.mc_values[0] - 0.5) < 0.25     # ... and near 1/2 (sd 1/16 at k = 64)


def test_values_do_not_depend_on_batching(tok):
    sc = scripts(tok)
    model = tree_model(tok, list(sc.values()))
    sols = labelled(tok, ["slip", "wrong", "right", "slip"], sc)
    runs = [mc_step_labels(model, tok, [RECORD], sols, 5, cfg_of(tok), rows_per_call=r, progress=False)
            for r in (1, 7, 1000)]
    assert runs[0] == runs[1] == runs[2] and runs[0][0].mc_values[1:] == [1.0, 1.0]


def test_seed_formula_keeps_apart_from_sampling_seeds():
    assert mc_seed(2, 1, 3) == MC_SEED_OFFSET + (2 * MC_STRIDE + 1) * MC_STRIDE + 3
    seeds = {mc_seed(i, s, j) for i in range(4) for s in range(4) for j in range(4)}
    assert len(seeds) == 64 and min(seeds) > 10**6 * SEED_STRIDE + SEED_STRIDE
    with pytest.raises(ValueError, match="below 65536"):
        mc_seed(0, 0, MC_STRIDE)


def test_the_context_limit_shrinks_a_prefix_budget_never_its_batch(tok):
    """Context exactly the solution's length and max_new_tokens exactly what step 0 needs: later
    prefixes get only the room left (still enough); batched with them, step 0 must keep its budget."""
    sc = scripts(tok)
    right = labelled(tok, ["right"], sc)
    prompt, ends, n = prompt_ids(RECORD, tok, "cot"), right[0].step_ends, len(sc["right"])
    model = tree_model(tok, [sc["right"]], context_length=len(prompt) + n)
    cfg = cfg_of(tok, max_new_tokens=n - ends[0] - 1)
    for rows in (1, 1000):
        out = mc_step_labels(model, tok, [RECORD], right, 3, cfg, rows_per_call=rows, progress=False)
        assert out[0].mc_values == [1.0, 1.0, 1.0]
    # the last prefix fills the context: nothing can follow it, so no answer; earlier ones run out of room
    full = tree_model(tok, [sc["right"]], context_length=len(prompt) + ends[-1] + 1)
    assert mc_step_labels(full, tok, [RECORD], right, 2, cfg_of(tok), progress=False)[0].mc_values == [0.0] * 3
    short = tree_model(tok, [sc["right"]], context_length=len(prompt) + ends[-1])
    with pytest.raises(ValueError, match="solution 0's prefix up to step 2 has .* more than the model's context"):
        mc_step_labels(short, tok, [RECORD], right, 2, cfg_of(tok), progress=False)


def test_eval_mode_progress_and_bad_arguments(tok, capsys):
    sc = scripts(tok)
    seen = []

    class Tracked(type(tree_model(tok, []))):
        def eval(self):
            self.training = False
            return self

        def train(self, mode=True):
            self.training = mode
            return self

    base = tree_model(tok, list(sc.values()))
    model = Tracked(base.cfg.vocab_size, lambda t: seen.append(model.training) or base.policy(t),
                    base.cfg.context_length)
    model.training = True
    sols = labelled(tok, ["right", "wrong"], sc)
    mc_step_labels(model, tok, [RECORD], sols, 2, cfg_of(tok), rows_per_call=4)
    assert seen and not any(seen) and model.training is True
    assert "prefixes 6/6" in capsys.readouterr().err
    with pytest.raises(ValueError, match="k must be an integer"):
        mc_step_labels(model, tok, [RECORD], sols, 0, cfg_of(tok), progress=False)
    other = Record("Ann has 5 apples. She buys 3 more. How many apples does Ann have now?", [], "8")
    with pytest.raises(ValueError, match="solution 0 is of problem 0 .* not that entry of the 1 records"):
        mc_step_labels(model, tok, [other], sols, 2, cfg_of(tok), progress=False)
    bad = LabelledSolution(**{**asdict(sols[0]), "step_ends": [sols[0].step_ends[0] + 1, *sols[0].step_ends[1:]]})
    with pytest.raises(ValueError, match="step end .* is not a <\\|step\\|> token"):
        mc_step_labels(model, tok, [RECORD], [bad], 2, cfg_of(tok), progress=False)
    assert model.training is True


def test_mc_labels_round_trip_and_bad_mc_fields_are_clear_errors(tok, tmp_path):
    sc = scripts(tok)
    model = tree_model(tok, list(sc.values()))
    sols = mc_step_labels(model, tok, [RECORD], labelled(tok, ["right", "slip"], sc), 4, cfg_of(tok),
                          progress=False)
    path = tmp_path / "labels.jsonl"
    save_labels(path, sols, {"k": 4})
    meta, loaded = load_labels(path)
    assert meta == {"k": 4} and loaded == sols and loaded[0].mc_values == [1.0, 1.0, 1.0]
    header, line = path.read_text().splitlines()[:2]
    row = json.loads(line)
    for change, message in (({"mc_values": [1.0]}, "line 2: 3 step ends but 1 mc_values"),
                            ({"mc_values": [1.0, 1.5, 0.0]}, "line 2: mc_values holds 1.5, not a fraction"),
                            ({"mc_values": [1.0, True, 0.0]}, "line 2: mc_values holds True"),
                            ({"mc_k": -1}, "line 2: mc_k -1 is not an integer >= 0"),
                            ({"mc_k": "4"}, "line 2: mc_k '4' is not an integer"),
                            ({"mc_k": 0}, "line 2: mc_k 0 \\(no continuations sampled\\) but 3 mc_values"),
                            ({"mc_values": "1.0"}, "line 2: mc_values is a str, not a list")):
        path.write_text("\n".join([header, json.dumps({**row, **change})]) + "\n")
        with pytest.raises(ValueError, match=f"{path.name}: {message}"):
            load_labels(path)
    del row["mc_k"]
    path.write_text("\n".join([header, json.dumps(row)]) + "\n")
    with pytest.raises(ValueError, match="line 2: fields .* \\(version 2\\)"):
        load_labels(path)


def test_a_version_1_file_loads_without_mc_values(tok, tmp_path):
    sols = labelled(tok, ["right", "wrong"], scripts(tok))
    v1 = [{k: v for k, v in asdict(s).items() if k not in ("mc_values", "mc_k")} for s in sols]
    header = {"format": "tinygrad_reason.verifier_labels", "version": 1, "meta": {"seed": 1}}
    path = tmp_path / "v1.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in [header] + v1) + "\n")
    meta, loaded = load_labels(path)
    assert meta == {"seed": 1} and loaded == sols and all(s.mc_values == [] and s.mc_k == 0 for s in loaded)
    path.write_text("\n".join(json.dumps(x) for x in [header, asdict(sols[0])]) + "\n")
    with pytest.raises(ValueError, match="line 2: fields .* \\(version 1\\)"):
        load_labels(path)         # a version-1 file has no mc fields
    path.write_text(json.dumps({**header, "version": 3}) + "\n")
    with pytest.raises(ValueError, match="label file version 3, this code reads version 1 or 2; sample"):
        load_labels(path)


def hand(labels, values, k=4):
    return LabelledSolution(0, "q", "1", [], None, False, list(range(len(labels))), labels, values, k)


def test_label_agreement_counts_a_hand_made_list():
    sols = [hand([True, True, False], [1.0, 0.25, 0.0]), hand([False, False], [0.5, 0.0]),
            hand([True], [], k=0), hand([], [])]          # no MC values: left out; no steps: nothing to count
    out = label_agreement(sols)
    assert out["n_solutions"] == 3 and out["threshold"] == 0.5
    hard, soft = out["hard"], out["soft"]
    assert (hard["n"], hard["agree"], hard["confusion"]) == (5, 4, [[2, 1], [0, 2]])
    assert hard["agreement"] == 0.8 and hard["kappa"] == pytest.approx(0.32 / 0.52)
    assert (soft["n"], soft["agree"], soft["confusion"]) == (5, 3, [[2, 1], [1, 1]])
    assert soft["agreement"] == pytest.approx(0.6) and soft["kappa"] == pytest.approx(0.08 / 0.48)
    strict = label_agreement(sols, threshold=1.0)["soft"]
    assert strict["confusion"] == [[3, 0], [1, 1]]
    assert mc_hard_labels([0.0, 0.25, 1.0]) == [False, True, True]
    empty = label_agreement([])["hard"]
    assert empty["n"] == 0 and math.isnan(empty["agreement"]) and math.isnan(empty["kappa"])
    constant = label_agreement([hand([True, True], [1.0, 0.5])])["hard"]
    assert constant["agreement"] == 1.0 and math.isnan(constant["kappa"])    # chance agreement is 1
    with pytest.raises(ValueError, match="threshold must be in \\(0, 1\\]"):
        label_agreement(sols, threshold=0.0)
    with pytest.raises(ValueError, match="solution 0 has 2 step labels but 1 mc_values"):
        label_agreement([hand([True, False], [1.0])])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0])), max_size=12))
def test_agreement_is_a_consistent_summary(steps):
    labels, values = [e for e, _ in steps], [v for _, v in steps]
    for mode, mc in (("hard", mc_hard_labels(values)), ("soft", [v >= 0.5 for v in values])):
        r = label_agreement([hand(labels, values)])[mode]
        assert r["n"] == len(steps) == sum(map(sum, r["confusion"]))
        assert r["agree"] == sum(e == m for e, m in zip(labels, mc)) == r["confusion"][0][0] + r["confusion"][1][1]
        assert math.isnan(r["kappa"]) or -1.0 - 1e-12 <= r["kappa"] <= 1.0 + 1e-12
        if mc == labels and 0 < sum(labels) < len(labels):
            assert r["kappa"] == pytest.approx(1.0)
