"""Direct vs chain-of-thought rendering, padded next-token batches with a loss mask, answer parsing."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

import tinygrad_reason as tg
from tinygrad_reason.data import Record, make_splits
from tinygrad_reason.data.formats import (FORMATS, IGNORE, Example, completion_ids, encode_example, make_batch,
                                          parse_completion, prompt_ids)
from tinygrad_reason.nn import Transformer, TransformerConfig
from tinygrad_reason.tokenizer import Tokenizer

REC = Record(question="Tom has 3 apples and buys 4 more, then doubles them. How many apples?",
             steps=["3 + 4 = 7 apples.", "7 * 2 = 14 apples."], answer="14")
SHORT = Record(question="What is 2 + 5?", steps=["2 + 5 = 7."], answer="7")


@pytest.fixture(scope="module")
def tok():
    texts = [" ".join([r.question, *r.steps, r.answer]) for r in (REC, SHORT)] * 3
    return Tokenizer.train(texts, 300)


def _specials(tok):
    return set(tok.special_ids.values())


# ------------------------------------------------------------------ prompt / completion boundaries
def test_direct_prompt_and_completion(tok):
    p = prompt_ids(REC, tok, "direct")
    c = completion_ids(REC, tok, "direct")
    assert p[0] == tok.question_id and p[-1] == tok.answer_id
    assert not _specials(tok) & set(p[1:-1])
    assert tok.decode(p[1:-1]).strip() == REC.question
    assert c == tok.encode(" 14") + [tok.eot_id]
    assert tok.think_id not in p + c and tok.step_id not in p + c
    ex = encode_example(REC, tok, "direct")
    assert ex.ids == p + c and ex.prompt_len == len(p) and ex.answer == "14"
    assert (p + c).count(tok.answer_id) == 1


def test_cot_prompt_and_completion(tok):
    p = prompt_ids(REC, tok, "cot")
    c = completion_ids(REC, tok, "cot")
    # same question part as direct; only the last prompt token differs
    assert p[:-1] == prompt_ids(REC, tok, "direct")[:-1]
    assert p[0] == tok.question_id and p[-1] == tok.think_id
    assert tok.answer_id not in p
    # one <|step|> per step, then <|answer|> answer <|endoftext|>
    assert c.count(tok.step_id) == len(REC.steps)
    assert c.count(tok.answer_id) == 1 and c.count(tok.eot_id) == 1 and c[-1] == tok.eot_id
    a = c.index(tok.answer_id)
    assert a == len(c) - len(tok.encode(" 14")) - 2
    assert c[a + 1:-1] == tok.encode(" 14")
    assert c[a - 1] == tok.step_id                      # the last step ends right before <|answer|>
    assert c[0] not in _specials(tok)
    # the text between step markers is exactly the steps
    segments, cur = [], []
    for t in c[:a]:
        if t == tok.step_id:
            segments.append(tok.decode(cur).strip())
            cur = []
        else:
            cur.append(t)
    assert cur == [] and segments == REC.steps
    ex = encode_example(REC, tok, "cot")
    assert ex.ids == p + c and ex.prompt_len == len(p) and ex.answer == "14"


def test_cot_step_count_on_generated_task(tok):
    recs = make_splits("arithmetic", 5, 0, 0, seed=0, min_steps=2, max_steps=3, max_value=9)["train"]
    for r in recs:
        c = completion_ids(r, tok, "cot")
        assert c.count(tok.step_id) == len(r.steps) >= 2
        assert c.index(tok.answer_id) > max(i for i, t in enumerate(c) if t == tok.step_id)
        assert parse_completion(c, tok, "cot") == str(r.answer)
        assert parse_completion(completion_ids(r, tok, "direct"), tok, "direct") == str(r.answer)


def test_unknown_format(tok):
    for fn in (prompt_ids, completion_ids, encode_example):
        with pytest.raises(ValueError, match="unknown format"):
            fn(REC, tok, "scratchpad")
    with pytest.raises(ValueError, match="unknown format"):
        parse_completion([], tok, "Direct")
    assert FORMATS == ("direct", "cot")


# ------------------------------------------------------------------ make_batch
def _check_batch(examples, inputs, targets, mask, pad_id):
    longest = max(len(e.ids) for e in examples)
    assert inputs.shape == targets.shape == mask.shape == (len(examples), longest - 1)
    assert inputs.dtype == np.int64 and targets.dtype == np.int64 and mask.dtype == bool
    for b, e in enumerate(examples):
        n = len(e.ids) - 1
        assert inputs[b, :n].tolist() == e.ids[:-1]
        assert (inputs[b, n:] == pad_id).all()
        assert mask[b, :n].all() and not mask[b, n:].any()
        for i in range(longest - 1):
            if e.prompt_len - 1 <= i < n:
                assert targets[b, i] == e.ids[i + 1]      # shifted by one
            else:
                assert targets[b, i] == IGNORE            # prompt or padding
        # exactly the completion tokens carry loss
        assert (targets[b] != IGNORE).sum() == len(e.ids) - e.prompt_len
        assert targets[b][targets[b] != IGNORE].tolist() == e.ids[e.prompt_len:]


def test_make_batch_shift_ignore_and_mask(tok):
    examples = [encode_example(REC, tok, "cot"), encode_example(SHORT, tok, "direct"),
                encode_example(SHORT, tok, "cot")]
    assert len({len(e.ids) for e in examples}) == 3
    inputs, targets, mask = make_batch(examples, tok.pad_id)
    _check_batch(examples, inputs, targets, mask, tok.pad_id)
    # the prediction of the first completion token is made at the last prompt position
    e = examples[1]
    assert targets[1, e.prompt_len - 2] == IGNORE and targets[1, e.prompt_len - 1] == e.ids[e.prompt_len]
    assert inputs[1, e.prompt_len - 1] == tok.answer_id


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 6), st.integers(1, 6)), min_size=1, max_size=4), st.integers(0, 50))
def test_make_batch_property(shapes, pad):
    rng = np.random.default_rng(len(shapes) * 100 + pad)
    examples = [Example(list(rng.integers(51, 90, size=p + c)), p, "x") for p, c in shapes]
    inputs, targets, mask = make_batch(examples, pad)
    _check_batch(examples, inputs, targets, mask, pad)


def test_make_batch_too_long_is_a_clear_error(tok):
    e = encode_example(REC, tok, "cot")
    make_batch([e], tok.pad_id, max_len=len(e.ids) - 1)          # exactly fits: inputs are len - 1
    with pytest.raises(ValueError, match=rf"{len(e.ids)} tokens.*context {len(e.ids) - 2}"):
        make_batch([e, encode_example(SHORT, tok, "direct")], tok.pad_id, max_len=len(e.ids) - 2)


# ------------------------------------------------------------------ the loss sees completion tokens only
@pytest.fixture(scope="module")
def model_and_batch(tok):
    tg.manual_seed(0)
    model = Transformer(TransformerConfig.gpt(vocab_size=tok.vocab_size, context_length=128, d_model=16,
                                              n_layers=1, n_heads=2))
    model.eval()
    examples = [encode_example(REC, tok, "cot"), encode_example(SHORT, tok, "direct")]
    return model, examples, make_batch(examples, tok.pad_id)


def _hand_loss(logits, targets):
    logits = logits.astype(np.float64)
    lse = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    keep = targets != IGNORE
    picked = np.take_along_axis(logits, np.where(keep, targets, 0)[..., None], -1)[..., 0]
    return float(((lse - picked) * keep).sum() / keep.sum())


def test_loss_is_mean_cross_entropy_over_completion_tokens(model_and_batch):
    model, examples, (inputs, targets, mask) = model_and_batch
    with tg.no_grad():
        loss = model.loss(inputs, targets, pad_mask=mask).item()
        logits = model(inputs, pad_mask=mask).numpy()
    expected = _hand_loss(logits, targets)
    assert loss == pytest.approx(expected, rel=1e-5)
    # and NOT the mean over all real tokens (which would include the prompt)
    all_real = np.where(mask, np.concatenate([inputs[:, 1:], np.full((len(inputs), 1), 0)], 1), IGNORE)
    assert abs(loss - _hand_loss(logits, all_real)) > 1e-3


def test_prompt_and_padding_targets_cannot_change_the_loss(model_and_batch):
    model, examples, (inputs, targets, mask) = model_and_batch
    logits = tg.Tensor(model(inputs, pad_mask=mask).numpy(), requires_grad=True)
    loss = tg.functional.cross_entropy(logits, targets)
    loss.backward()
    g = logits.grad.numpy()
    ignored = targets == IGNORE
    assert ignored.any() and (~ignored).any()
    assert np.all(g[ignored] == 0.0)                      # prompt and padding positions get no gradient
    assert np.all(np.abs(g[~ignored]).sum(-1) > 0)
    # perturbing the logits at prompt/padding positions leaves the loss unchanged
    noisy = logits.numpy() + np.where(ignored[..., None], np.random.default_rng(0).normal(0, 5, logits.shape), 0)
    assert _hand_loss(noisy.astype(np.float32), targets) == pytest.approx(loss.item(), rel=1e-5)
    with tg.no_grad():
        # the model itself: different token ids in the padding (after every real token) change nothing
        other = inputs.copy()
        other[~mask] = 7
        assert model.loss(other, targets, pad_mask=mask).item() == pytest.approx(
            model.loss(inputs, targets, pad_mask=mask).item(), rel=1e-6)


# ------------------------------------------------------------------ parse_completion
def test_parse_completion_direct(tok):
    a = tok.encode(" 14")
    assert parse_completion(a + [tok.eot_id], tok, "direct") == "14"
    assert parse_completion(a + [tok.eot_id] + tok.encode(" 99"), tok, "direct") == "14"   # stops at eot
    assert parse_completion(a, tok, "direct") == "14"                                      # no eot: all of it
    assert parse_completion(np.array(a + [tok.eot_id]), tok, "direct") == "14"
    assert parse_completion([tok.eot_id], tok, "direct") == ""


def test_parse_completion_cot(tok):
    step = tok.encode(" 3 + 4 = 7.")
    a, b = tok.encode(" 14"), tok.encode(" 15")
    assert parse_completion(step + [tok.step_id, tok.answer_id] + a + [tok.eot_id], tok, "cot") == "14"
    # the LAST <|answer|> wins
    assert parse_completion([tok.answer_id] + b + [tok.step_id, tok.answer_id] + a + [tok.eot_id], tok, "cot") == "14"
    # never reached <|answer|> -> None (also when it only appears after <|endoftext|>)
    assert parse_completion(step + [tok.step_id] + a + [tok.eot_id], tok, "cot") is None
    assert parse_completion(step + [tok.eot_id, tok.answer_id] + a, tok, "cot") is None
    assert parse_completion([], tok, "cot") is None
    # no eot after the answer: the rest of the sequence, special tokens dropped
    assert parse_completion([tok.answer_id] + a, tok, "cot") == "14"
    assert parse_completion([tok.answer_id] + a + [tok.step_id], tok, "cot") == "14"
