"""reasoning/verifiers.py and the statistics the verifier tables use: scoring in one forward,
reranking and weighted votes with deterministic ties, the accuracy-vs-N curve on a scripted
model with an oracle verifier, AUROC / calibration / McNemar against direct computations."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reasoning_fakes import after_think_model
from test_verifier_data import RECORD, RIGHT, WRONG, completion
from tinygrad_reason.generate import SamplingConfig
from tinygrad_reason.nn import Transformer, TransformerConfig, Verifier
from tinygrad_reason.reasoning.self_consistency import Path
from tinygrad_reason.reasoning.verifiers import (best_of_n, choose, examples_from_labels, score_completions,
                                                 solution_score, split_by_problem, verifier_curve,
                                                 verifier_curve_table, weighted_vote)
from tinygrad_reason.reasoning.verifier_data import sample_labelled
from tinygrad_reason.tensor import Tensor
from tinygrad_reason.tokenizer import Tokenizer
from tinygrad_reason.train.stats import auroc, mcnemar_p, reliability


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.default(512)


def test_best_of_n_takes_the_argmax_and_the_earliest_of_equal_scores():
    assert best_of_n([0.2, 0.9, 0.5]) == 1
    assert best_of_n([0.7, 0.9, 0.9, 0.1]) == 1            # a tie goes to the earlier path
    assert best_of_n([0.3]) == 0
    with pytest.raises(ValueError, match="no paths"):
        best_of_n([])


def test_weighted_vote_sums_scores_and_breaks_ties_by_count_then_answer():
    assert weighted_vote(["3", "4", "4"], [0.9, 0.4, 0.4]) == "3"      # 0.9 > 0.8: the score, not the count
    assert weighted_vote(["3", "4", "4"], [0.8, 0.4, 0.4]) == "4"      # equal totals: more paths
    assert weighted_vote(["5", "3"], [0.5, 0.5]) == "3"                # then the smaller answer string
    assert weighted_vote([None, "2"], [1.0, 0.1]) == "2" and weighted_vote([None], [1.0]) is None


def test_solution_scores():
    assert solution_score([0.9, 0.5, 0.8], "min") == 0.5
    assert solution_score([0.9, 0.5, 0.8], "prod") == pytest.approx(0.36)
    with pytest.raises(ValueError, match="aggregate"):
        solution_score([0.5], "mean")
    with pytest.raises(ValueError, match="no step scores"):
        solution_score([], "min")


class CountingVerifier:
    """Wraps a Verifier and counts its forwards."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def eval(self):
        self.inner.eval()

    def __call__(self, ids, mask):
        self.calls += 1
        return self.inner(ids, mask)


def test_scoring_is_one_forward_per_batch_and_reads_the_step_and_last_tokens(tok):
    trunk = Transformer(TransformerConfig.gpt(vocab_size=tok.vocab_size, context_length=256, d_model=16,
                                              n_layers=1, n_heads=2))
    v = CountingVerifier(Verifier(trunk))
    prompt = [tok.question_id] + tok.encode(" " + RECORD.question) + [tok.think_id]
    comps = [completion(tok, RIGHT, "6"), completion(tok, WRONG[:2], "11"), [tok.answer_id, tok.eot_id]]
    scored = score_completions(tok, [prompt] * 3, comps, orm=v, prm=v, batch=8)
    assert v.calls == 2                                     # one forward per verifier for all three rows
    assert [len(s.steps) for s in scored] == [4, 3, 1]      # each step token, and the last token
    for comp, s in zip(comps, scored):                      # each row alone gives the same scores
        ids = np.array([prompt + comp])
        logits = v.inner(ids, np.ones_like(ids, dtype=bool)).numpy()[0]
        n = len(prompt)
        positions = [n + i for i, t in enumerate(comp) if t == tok.step_id] + [n + len(comp) - 1]
        np.testing.assert_allclose(s.steps, 1 / (1 + np.exp(-logits[positions])), rtol=1e-5)
        assert s.orm == pytest.approx(s.steps[-1])


def test_choose_with_each_method():
    paths = [Path([1], "7", -1.0, 1), Path([2], "6", -1.0, 1), Path([3], "7", -1.0, 1)]

    class S:
        def __init__(self, orm, steps):
            self.orm, self.steps = orm, steps
    scored = [S(0.3, [0.9, 0.3]), S(0.9, [0.6, 0.6]), S(0.4, [0.2, 0.99])]
    assert choose("majority", paths, scored) == "7"
    assert choose("orm", paths, scored) == "6"
    assert choose("prm-min", paths, scored) == "6"          # mins 0.3, 0.6, 0.2
    assert choose("prm-prod", paths, scored) == "6"         # 0.27, 0.36, 0.198
    assert choose("wvote-orm", paths, scored) == "6"        # 0.7 for 7 against 0.9 for 6
    assert choose("wvote-prm", paths, scored) == "6"        # 0.5 against 0.6
    with pytest.raises(ValueError, match="unknown method"):
        choose("oracle", paths, scored)


class OracleVerifier:
    """Scores a row +20 when it holds the right final answer's token sequence, -20 otherwise."""

    def __init__(self, tok, right_tail):
        self.tok, self.tail = tok, list(right_tail)

    def eval(self):
        pass

    def __call__(self, ids, mask):
        out = np.full(ids.shape, -20.0)
        for r in range(ids.shape[0]):
            row = ids[r][mask[r]].tolist()
            if row[-len(self.tail):] == self.tail:
                out[r] = 20.0
        return Tensor(out)


def test_the_curve_on_a_two_path_model_with_an_oracle_verifier(tok):
    """Right with chance 1/(1+e) per sample: an oracle reranker is right exactly when some sample
    is (pass@N); majority vote is right when most samples are."""
    right, wrong = completion(tok, RIGHT, "6"), completion(tok, WRONG, "7")

    def next_logits(gen, x):
        if not gen:
            x[right[0]], x[wrong[0]] = 0.0, 1.0          # the wrong path is the likelier one
            return
        script = right if right[:len(gen)] == gen else wrong
        x[script[len(gen)] if len(gen) < len(script) else tok.eot_id] = 0.0
    model = after_think_model(tok, next_logits)
    oracle = OracleVerifier(tok, right[-3:])
    cfg = SamplingConfig(temperature=1.0, max_new_tokens=200, stop_ids=(tok.eot_id,), seed=1)
    records = [RECORD] * 6
    curve = verifier_curve(model, tok, records, "cot", cfg, [1, 4, 8], orm=oracle, prm=oracle, rows_per_call=16,
                           progress=False)
    for n in curve["ns"]:
        for m in ("checker", "orm", "prm-min", "prm-prod", "wvote-orm", "wvote-prm"):   # WRONG's steps are wrong
            assert curve["correct"][m][n] == curve["pass"][n], (m, n)
    marks = {}
    for p, j, orm, prm, ok in curve["samples"]:
        marks.setdefault(p, []).append(ok)
        assert orm == (1 / (1 + np.exp(-20.0)) if ok else 1 / (1 + np.exp(20.0)))
    for n in curve["ns"]:
        assert curve["pass"][n] == sum(any(m[:n]) for m in marks.values())
        wins = sum(2 * sum(m[:n]) > n for m in marks.values())
        ties = sum(2 * sum(m[:n]) == n for m in marks.values())     # a tie may go either way
        assert wins <= curve["correct"]["majority"][n] <= wins + ties
        assert curve["distinct"][n] == pytest.approx(np.mean([len(set(m[:n])) for m in marks.values()]))
    assert curve["pass"][1] < curve["pass"][8] and 0 < curve["correct"]["majority"][8] < curve["pass"][8]
    assert {a for row in marks.values() for a in row} == {True, False}
    table = verifier_curve_table(curve)
    assert table.count("\n") == 2 + len(curve["ns"]) and "pass@N" in table


def test_examples_from_sampled_labels_and_a_problem_split(tok):
    right = completion(tok, RIGHT, "6")

    def next_logits(gen, x):
        x[right[len(gen)] if len(gen) < len(right) else tok.eot_id] = 0.0
    cfg = SamplingConfig(temperature=1.0, max_new_tokens=200, stop_ids=(tok.eot_id,), seed=1)
    sols = sample_labelled(after_think_model(tok, next_logits), tok, [RECORD] * 5, 2, cfg, progress=False)
    prm = examples_from_labels(sols, tok, "prm")
    assert all(e.targets == [1.0, 1.0, 1.0, 1.0] for e in prm)          # 3 right steps and the outcome
    assert all(e.ids[e.positions[0]] == tok.step_id for e in prm)
    orm = examples_from_labels(sols, tok, "orm", "last")
    assert all(len(e.positions) == 1 and e.positions[0] == len(e.ids) - 1 for e in orm)
    with pytest.raises(ValueError, match="no Monte-Carlo labels"):
        examples_from_labels(sols, tok, "prm", labels="mc")
    train, held = split_by_problem(sols, 0.4, seed=0)
    assert {s.problem for s in train}.isdisjoint({s.problem for s in held}) and len(held) == 4


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.booleans()), min_size=2, max_size=30))
def test_auroc_is_the_pairwise_win_rate(pairs):
    scores = [s / 5 for s, _ in pairs]
    labels = [y for _, y in pairs]
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    if not pos or not neg:
        assert np.isnan(auroc(scores, labels))
        return
    wins = sum(1.0 if p > q else 0.5 if p == q else 0.0 for p, q in itertools.product(pos, neg))
    assert auroc(scores, labels) == pytest.approx(wins / (len(pos) * len(neg)))


def test_mcnemar_and_reliability_by_hand():
    a = [True] * 5 + [False] * 3
    b = [False] * 5 + [False] * 3
    assert mcnemar_p(a, b) == pytest.approx(2 / 32)         # 5 disagreements, all one way
    assert mcnemar_p(a, a) == 1.0
    assert mcnemar_p([True, False], [False, True]) == 1.0
    with pytest.raises(ValueError, match="2 against 3"):
        mcnemar_p([True, True], [True, True, False])
    r = reliability([0.05, 0.15, 0.95, 0.85], [False, True, True, True], bins=2)
    assert [b["count"] for b in r["bins"]] == [2, 2]
    assert r["bins"][0]["mean_predicted"] == pytest.approx(0.1) and r["bins"][0]["fraction_right"] == 0.5
    assert r["ece"] == pytest.approx((2 * 0.4 + 2 * 0.1) / 4)
    assert r["brier"] == pytest.approx((0.05 ** 2 + 0.85 ** 2 + 0.05 ** 2 + 0.15 ** 2) / 4)


class PrefixOracle:
    """A PRM that knows the right script: logit +20 at every position whose completion so far (the
    tokens after <|think|>) is a prefix of `right`, -20 elsewhere (sign flipped when inverted)."""

    def __init__(self, tok, right, inverted=False):
        self.tok, self.right, self.sign = tok, list(right), -1.0 if inverted else 1.0

    def eval(self):
        pass

    def __call__(self, ids, mask):
        out = np.full(ids.shape, -20.0)
        for r in range(ids.shape[0]):
            row = ids[r].tolist()
            start = row.index(self.tok.think_id) + 1
            for t in range(start, int(mask[r].sum())):
                out[r, t] = 20.0 if row[start:t + 1] == self.right[:t + 1 - start] else -20.0
        return Tensor(out * self.sign)


def _fork_model(tok):
    right, wrong = completion(tok, RIGHT, "6"), completion(tok, WRONG, "7")

    def next_logits(gen, x):
        if not gen:
            x[right[0]], x[wrong[0]] = 0.0, 0.5              # greedy takes the wrong path
            return
        script = right if right[:len(gen)] == gen else wrong
        x[script[len(gen)] if len(gen) < len(script) else tok.eot_id] = 0.0
    return after_think_model(tok, next_logits), right


def test_prm_search_follows_the_prm(tok):
    from tinygrad_reason.reasoning.verifiers import prm_search
    model, right = _fork_model(tok)
    cfg = SamplingConfig(temperature=1.0, max_new_tokens=200, stop_ids=(tok.eot_id,), seed=0)
    records = [RECORD] * 4
    good = prm_search(model, PrefixOracle(tok, right), tok, records, cfg, expand=8, beam=2, progress=False)
    assert good["answers"] == ["6"] * 4 and good["rounds"] >= 4     # three steps, then the answer
    bad = prm_search(model, PrefixOracle(tok, right, inverted=True), tok, records, cfg, expand=8, beam=2,
                     progress=False)
    assert bad["answers"] == ["7"] * 4
    again = prm_search(model, PrefixOracle(tok, right), tok, records, cfg, expand=8, beam=2, rows_per_call=5,
                       progress=False)
    assert again == good                                              # batching does not change the search
    with pytest.raises(ValueError, match="expand 0 and beam 2"):
        prm_search(model, PrefixOracle(tok, right), tok, records, cfg, expand=0)


def test_verifier_methods_in_eval(tok):
    from tinygrad_reason.reasoning.methods import parse_methods, run_method
    from tinygrad_reason.reasoning.verifiers import verifier_curve
    specs = parse_methods("bon@8:orm,bon@8:prm,bon@8:prm-prod,wvote@8,wvote@8:prm,search:prm,sc@8")
    assert [s.name for s in specs] == ["bon@8:orm", "bon@8:prm", "bon@8:prm-prod", "wvote@8", "wvote@8:prm",
                                       "search:prm", "sc@8"]
    assert [s.verifiers for s in specs] == [("orm",), ("prm",), ("prm",), (), ("prm",), ("prm",), ()]
    for bad, match in (("bon@0:orm", "needs N >= 1"), ("bon@4", "unknown method"), ("search:orm", "unknown")):
        with pytest.raises(ValueError, match=match):
            parse_methods(bad)
    model, right = _fork_model(tok)
    oracle = PrefixOracle(tok, right)
    from tinygrad_reason.reasoning.methods import EvalSettings
    settings = EvalSettings(max_new_tokens=200, temperature=1.0)
    records = [RECORD] * 3
    rows = {s.name: run_method(s, model, tok, records, "cot", settings, {"orm": oracle, "prm": oracle}) for s in specs}
    cfg = SamplingConfig(temperature=1.0, max_new_tokens=200, stop_ids=(tok.eot_id,), seed=0)
    curve = verifier_curve(model, tok, records, "cot", cfg, [8], orm=oracle, prm=oracle, progress=False)
    assert rows["bon@8:orm"]["correct"] == curve["correct"]["orm"][8] == curve["pass"][8]   # the same paths
    assert rows["bon@8:prm"]["correct"] == curve["correct"]["prm-min"][8]
    assert rows["sc@8"]["correct"] == curve["correct"]["majority"][8]
    checker = run_method(parse_methods("bon@8:checker")[0], model, tok, records, "cot", settings)   # no verifier
    assert checker["correct"] == curve["correct"]["checker"][8] == curve["pass"][8]
    with pytest.raises(ValueError, match="needs a trained PRM verifier"):
        run_method(specs[1], model, tok, records, "cot", settings, {"orm": oracle})


def test_grouped_auroc_ranks_within_each_problem():
    from tinygrad_reason.train.stats import grouped_auroc
    # across problems the scores separate right from wrong (problem 1 is easy and scored high), within
    # problem 0 they are reversed and within problem 1 tied
    scores = [0.2, 0.1, 0.9, 0.9, 0.9, 0.5]
    labels = [False, True, True, True, False, False]
    groups = [0, 0, 1, 1, 1, 2]                   # problem 2 has one class only: not counted
    assert grouped_auroc(scores, labels, groups) == (pytest.approx(0.25), 2)   # mean of 0.0 and 0.5
    assert auroc(scores, labels) == pytest.approx(5 / 9)
    with pytest.raises(ValueError, match="6 scores, 6 labels, 4 groups"):
        grouped_auroc(scores, labels, groups[:4])
