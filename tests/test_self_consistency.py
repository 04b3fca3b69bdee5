"""Self-consistency: the vote, one batched generate call per problem, the accuracy-vs-N curve."""
import numpy as np
import pytest

from reasoning_fakes import after_think_model
from tinygrad_reason.data.records import Record
from tinygrad_reason.reasoning import self_consistency as sc
from tinygrad_reason.generate import SamplingConfig, generate
from tinygrad_reason.grading.rewards import canonical_answer, is_correct
from tinygrad_reason.reasoning.self_consistency import (Path, accuracy_vs_n, curve_table,
                                                        plot_curve, sample_paths, self_consistency, vote)
from tinygrad_reason.tokenizer import Tokenizer


def P(answer, sum_lp, n=4):
    return Path([], answer, sum_lp, n)


# ------------------------------------------------------------------ the vote
def test_majority_wins_and_abstainers_do_not_vote():
    v = vote([P("3", -9.0), P("3", -8.0), P("5", -0.1), P(None, 0.0), P(None, 0.0), P(None, 0.0)])
    assert v.answer == "3" and v.distribution == {"3": 2, "5": 1} and v.counts == {"3": 2, "5": 1}
    assert v.n_paths == 6
    assert vote([P(None, -1.0)]).answer is None and vote([]).answer is None


def test_ties_are_broken_by_mean_logprob():
    # 2 vs 2: "7" has the higher mean token log-prob (-1 per token vs -2)
    paths = [P("5", -8.0), P("7", -4.0), P("5", -8.0), P("7", -4.0)]
    v = vote(paths)
    assert v.distribution == {"5": 2, "7": 2} and v.answer == "7"
    assert v.mean_logprob == {"5": -2.0, "7": -1.0}
    # the mean is per token: a longer path with a larger total can still be the better one
    v = vote([P("5", -6.0, n=2), P("7", -9.0, n=9)])
    assert v.answer == "7"
    # exact ties everywhere: the smaller answer string, deterministically
    assert vote([P("9", -1.0), P("8", -1.0)]).answer == "8"


def test_weighted_votes_differ_as_documented():
    # three long unlikely paths say "3"; one short, very likely path says "5"
    paths = [P("3", -12.0, n=6), P("3", -12.0, n=6), P("3", -12.0, n=6), P("5", -1.0, n=1)]
    assert vote(paths, "count").answer == "3"
    w = vote(paths, "sum")                          # softmax of sums: e^-1 vs 3 e^-12
    assert w.answer == "5" and sum(w.distribution.values()) == pytest.approx(1.0)
    assert w.distribution["5"] == pytest.approx(1 / (1 + 3 * np.exp(-11)))
    m = vote(paths, "mean")                         # softmax of means: e^-1 vs 3 e^-2 -> "3"
    assert m.answer == "3"
    assert m.distribution["3"] == pytest.approx(3 * np.exp(-2) / (3 * np.exp(-2) + np.exp(-1)))
    # temperature flattens the weights
    assert vote(paths, "sum", temperature=100.0).answer == "3"
    with pytest.raises(ValueError):
        vote(paths, "median")


# ------------------------------------------------------------------ sampling paths with a scripted model
@pytest.fixture(scope="module")
def tok():
    return Tokenizer.default(512)


def answering_model(tok):
    """After <|think|>: <|answer|>, then one digit 1 / 2 / 3 (logits 2, 1.5, 1: sampling varies), then eot."""
    digits = [tok.encode(d)[0] for d in "123"]

    def next_logits(gen, x):
        if not gen:
            x[tok.answer_id] = 0.0
        elif len(gen) == 1:
            x[digits] = [2.0, 1.5, 1.0]
        else:
            x[tok.eot_id] = 0.0
    return after_think_model(tok, next_logits)


RECORDS = [Record("Ann has 1 apple.", [], "1"), Record("Bob has 2 pears.", [], "2"), Record("Cy has 3.", [], "3")]


def test_sc_uses_one_batched_call_with_distinct_seeds(tok, monkeypatch):
    model = answering_model(tok)
    calls = []
    real = sc.generate

    def spy(model, prompts, cfg, row_seeds=None, tool=None):
        calls.append((len(prompts), list(row_seeds)))
        return real(model, prompts, cfg, row_seeds=row_seeds, tool=tool)

    monkeypatch.setattr(sc, "generate", spy)
    cfg = SamplingConfig(temperature=0.7, max_new_tokens=6, stop_ids=(tok.eot_id,), seed=5)
    v, paths, res = self_consistency(model, tok, RECORDS[0], 8, cfg, seed_offset=40)
    assert calls == [(8, list(range(40, 48)))]
    assert len(paths) == 8 and all(p.answer in {"1", "2", "3"} for p in paths)
    assert len({p.answer for p in paths}) > 1, "different seeds give different paths"
    assert v.answer == max(v.counts, key=lambda a: (v.counts[a], v.mean_logprob[a]))
    assert sum(v.counts.values()) == 8
    v2, paths2, _ = self_consistency(model, tok, RECORDS[0], 8, cfg, seed_offset=40)   # deterministic
    assert [p.tokens for p in paths2] == [p.tokens for p in paths] and v2 == v
    # path j does not depend on N
    _, paths4, _ = self_consistency(model, tok, RECORDS[0], 4, cfg, seed_offset=40)
    assert [p.tokens for p in paths4] == [p.tokens for p in paths[:4]]
    with pytest.raises(ValueError):
        sample_paths(model, [1, 2], 0, cfg)


def test_accuracy_vs_n_is_consistent_with_single_paths(tok):
    model = answering_model(tok)
    cfg = SamplingConfig(temperature=0.7, max_new_tokens=6, stop_ids=(tok.eot_id,), seed=5)
    curve = accuracy_vs_n(model, tok, RECORDS, "cot", cfg, ns=(1, 2, 4, 8), rows_per_call=16)
    assert curve["ns"] == [1, 2, 4, 8] and curve["n_problems"] == 3
    assert curve["generated_tokens"] == 3 * 8 * 3          # <|answer|>, digit, eot per path
    from tinygrad_reason.data.formats import parse_completion, prompt_ids
    for p, r in enumerate(RECORDS):
        # N = 1 is exactly the first sampled path (row seed p * SEED_STRIDE), sampled on its own
        one = generate(model, [prompt_ids(r, tok, "cot")], cfg, row_seeds=[p * sc.SEED_STRIDE])
        assert curve["answers"][p][0] == canonical_answer(parse_completion(one.tokens[0], tok, "cot"))
        # N = 8 is the vote over the 8 paths of one SC@8 call with the same seeds
        v, _, _ = self_consistency(model, tok, r, 8, cfg, seed_offset=p * sc.SEED_STRIDE)
        assert curve["answers"][p][3] == v.answer
    for n in curve["ns"]:
        c = sum(is_correct(curve["answers"][p][curve["ns"].index(n)], r.answer) for p, r in enumerate(RECORDS))
        assert curve["correct"][n] == c and curve["accuracy"][n] == pytest.approx(c / 3)
        lo, hi = curve["ci95"][n]
        assert 0 <= lo <= curve["accuracy"][n] <= hi <= 1
    # batching problems together changes nothing
    again = accuracy_vs_n(model, tok, RECORDS, "cot", cfg, ns=(8, 1, 2, 4), rows_per_call=8)
    assert again["answers"] == curve["answers"]
    table = curve_table(curve)
    assert table.splitlines()[0].startswith("| paths N |") and table.count("\n") == 2 + 4


def test_plot_curve_without_matplotlib_is_skipped(tmp_path):
    curve = {"ns": [1, 2], "weighting": "count", "accuracy": {1: 0.5, 2: 1.0}, "ci95": {1: [0.1, 0.9], 2: [0.3, 1.0]}}
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert plot_curve(curve, str(tmp_path / "c.png")) is False
        assert not (tmp_path / "c.png").exists()
    else:
        assert plot_curve(curve, str(tmp_path / "c.png")) is True
