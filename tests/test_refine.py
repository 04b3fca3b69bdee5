"""Self-refinement: step checks, repairs, scores, and keeping a revision only if its score does not drop."""
import numpy as np
import pytest

import tinygrad_reason as tg
from reasoning_fakes import ScriptedModel, after_think, one_hot
from tinygrad_reason.data.records import Record
from tinygrad_reason.nn import Transformer, TransformerConfig
from tinygrad_reason.reasoning import refine as rf
from tinygrad_reason.reasoning.refine import (STEP_BAD, STEP_NONE, STEP_OK, accept, check_step, refine,
                                              repair_step, score, score_completions, split_steps)
from tinygrad_reason.generate import SamplingConfig, generate
from tinygrad_reason.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.default(512)


def test_check_and_repair_steps():
    assert check_step(" 16 - 3 - 4 = <<16-3-4=9>>9 eggs. ") == STEP_OK
    assert check_step(" 16 - 3 - 4 = <<16-3-4=8>>8 eggs. ") == STEP_BAD          # wrong result
    assert check_step(" 2 * 3 = <<2*3=6>>7 ") == STEP_BAD                         # wrong visible copy
    assert check_step(" 2 * 3 = <<2*3=6 ") == STEP_BAD                            # unclosed
    assert check_step(" 2 */ 3 = <<2*/3=6>>6 ") == STEP_BAD                       # unparseable
    assert check_step(" 2 * 3 = 6 ") == STEP_NONE                                 # nothing to verify
    assert check_step(" <<2*3=6>>6 and <<6/4=1.5>>1.5 ") == STEP_OK
    assert repair_step(" 16 - 3 - 4 = <<16-3-4=8>>8 eggs. ") == " 16 - 3 - 4 = <<16-3-4=9>>9 eggs. "
    assert repair_step(" <<2*3=5>> and <<7/2=3>>3 ") == " <<2*3=6>> and <<7/2=3.5>>3.5 "
    assert repair_step(" 2 */ 3 = <<2*/3=6>>6 ") is None and repair_step(" 2 * 3 = 6 ") is None
    assert repair_step(" <<2*3=6 ") is None


def test_split_steps(tok):
    c = tok.encode(" a ") + [tok.step_id] + tok.encode(" b") + [tok.answer_id] + tok.encode(" 3") + [tok.eot_id]
    steps, has_answer = split_steps(c, tok)
    assert has_answer and [(tok.decode(s), closed) for s, closed in steps] == [(" a ", True), (" b", False)]
    assert split_steps([tok.eot_id], tok) == ([], False)


def test_accept_keeps_a_revision_only_if_the_score_does_not_drop():
    assert accept((0, -2.0), (1, -9.0))           # verified beats any log-prob
    assert accept((0, -2.0), (0, -1.0)) and accept((0, -2.0), (0, -2.0))   # better or equal: keep
    assert not accept((0, -2.0), (0, -2.5)) and not accept((1, -9.0), (0, -0.1))


def chain_model(tok, step_text):
    """Greedy 'model': writes `step_text` <|step|>, then <|answer|> and the number after the last '>>' (or
    '=') of its first step, then <|endoftext|>."""
    first = tok.encode(step_text) + [tok.step_id]

    def policy(tokens):
        if tok.think_id not in tokens:
            return np.zeros(tok.vocab_size)
        gen = after_think(tokens, tok)
        if tok.step_id not in gen:
            return one_hot(tok.vocab_size, first[len(gen)] if len(gen) < len(first) else tok.step_id)
        k = gen.index(tok.step_id)
        step, rest = tok.decode(gen[:k]), gen[k + 1:]
        if not rest:
            return one_hot(tok.vocab_size, tok.answer_id)
        number = step.replace(">>", "=").split("=")[-1].split()[0]
        digits = tok.encode(" " + number)
        return one_hot(tok.vocab_size, digits[len(rest) - 1] if len(rest) - 1 < len(digits) else tok.eot_id)
    return ScriptedModel(tok.vocab_size, policy, context_length=128)


REC = [Record("What is 3 times 4?", [], "12")]


def test_a_wrong_annotation_is_repaired_and_kept(tok):
    model = chain_model(tok, " 3 * 4 = <<3*4=13>>13 ")
    cfg = SamplingConfig(temperature=0.0, max_new_tokens=40, stop_ids=(tok.eot_id,))
    base = refine(model, tok, REC, 0, cfg)                       # refine@0 is plain greedy
    assert base["answers"] == ["13"] and base["revisions_tried"] == 0
    a0 = base["attempts"][0]
    assert a0.score[0] == 0
    out = refine(model, tok, REC, 2, cfg)
    a = out["attempts"][0]
    assert out["answers"] == ["12"] and a.score[0] == 1
    assert "<<3*4=12>>12" in tok.decode(a.completion)
    assert a.history == [{"round": 1, "mode": "repair", "first_bad_step": 0, "old_score": list(a0.score),
                          "new_score": list(a.score), "kept": True}]          # round 2: nothing left to revise
    assert out["revisions_tried"] == out["revisions_kept"] == 1
    assert out["generated_tokens"] == len(a0.completion) + len(a.completion) - len(tok.encode(" 3 * 4 = <<3*4=12>>12 ")) - 1
    with pytest.raises(ValueError, match="chain-of-thought"):
        refine(model, tok, REC, 1, cfg, fmt="direct")


@pytest.mark.parametrize("shift, kept", [(-0.5, False), (0.0, True), (+0.5, True)])
def test_a_revision_is_kept_only_if_its_score_does_not_drop(tok, monkeypatch, shift, kept):
    # no annotation: unverifiable, so every round resamples from an empty prefix (the script is
    # deterministic, so the revision has the same tokens); the scorer makes revisions worse / equal / better
    model = chain_model(tok, " 3 * 4 = 12 ")
    real = rf.score_completions
    calls = []

    def scorer(model, prompts, completions, batch=16):
        calls.append(len(prompts))
        lps = real(model, prompts, completions, batch)
        return lps if len(calls) == 1 else [lp + shift * len(calls) for lp in lps]

    monkeypatch.setattr(rf, "score_completions", scorer)
    cfg = SamplingConfig(temperature=0.0, max_new_tokens=40, stop_ids=(tok.eot_id,))
    out = refine(model, tok, REC, 2, cfg)
    a = out["attempts"][0]
    assert [h["kept"] for h in a.history] == [kept, kept] and [h["mode"] for h in a.history] == ["resample"] * 2
    assert out["revisions_tried"] == 2 and out["revisions_kept"] == 2 * kept
    for h in a.history:
        assert accept(h["old_score"], h["new_score"]) == h["kept"]
        assert h["new_score"][0] == h["old_score"][0] == 0
    first_mean = a.history[0]["old_score"][1]
    assert a.score[1] == pytest.approx(first_mean if not kept else first_mean + shift * 3)
    assert out["answers"] == ["12"]


def test_score_completions_match_generation_logprobs(tok):
    tg.manual_seed(0)
    model = Transformer(TransformerConfig.gpt(vocab_size=tok.vocab_size, context_length=48, d_model=16,
                                              n_layers=1, n_heads=2)).astype(np.float64).eval()
    prompts = [[tok.question_id, 40, 41, tok.think_id], [tok.question_id, 42, tok.think_id]]
    res = generate(model, prompts, SamplingConfig(temperature=1.0, max_new_tokens=6, seed=1))
    lps = score_completions(model, prompts, res.tokens)
    for a, b in zip(lps, res.logprobs):
        np.testing.assert_allclose(a, b, rtol=1e-7, atol=1e-7)
    s = score(res.tokens[0], lps[0], tok)
    assert s == (0, pytest.approx(float(np.mean(lps[0]))))
