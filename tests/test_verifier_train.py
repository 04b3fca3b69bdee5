"""train/verifier.py: the verifier's examples, class weights and batches, its loss against torch on
the same hidden states, frozen and shared trunks, and that training learns a separable signal."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import tinygrad_reason as tg
from tinygrad_reason.nn import Transformer, TransformerConfig, Verifier
from tinygrad_reason.train.verifier import (VerifierConfig, VerifierTask, class_weights, make_example,
                                            train_verifier, verifier_batch)

PAD, GOOD, BAD = 0, 5, 6


def tiny_trunk(seed=0, vocab=12):
    tg.manual_seed(seed)
    return Transformer(TransformerConfig.gpt(vocab_size=vocab, context_length=16, d_model=16, n_layers=1, n_heads=2))


def test_targets_of_each_kind():
    prompt, completion = [1, 2, 3], [7, 8, 4, 9, 4, 10, 11]          # 4: a step token at 2 and 4
    token = make_example(prompt, completion, True, "orm", "token")
    assert token.positions == list(range(3, 10)) and token.targets == [1.0] * 7 and token.readout == [9]
    last = make_example(prompt, completion, False, "orm", "last")
    assert last.positions == [9] and last.targets == [0.0]
    prm = make_example(prompt, completion, False, "prm", step_ends=[2, 4], step_values=[True, 0.25])
    assert prm.positions == [5, 7, 9] and prm.targets == [1.0, 0.25, 0.0] and prm.readout == prm.positions
    with pytest.raises(ValueError, match="outside the completion"):
        make_example(prompt, completion, True, "prm", step_ends=[7], step_values=[True])
    with pytest.raises(ValueError, match="2 step ends but 1 step labels"):
        make_example(prompt, completion, True, "prm", step_ends=[2, 4], step_values=[True])
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        make_example(prompt, completion, True, "prm", step_ends=[2], step_values=[1.5])
    with pytest.raises(ValueError, match="empty"):
        make_example(prompt, [], True, "orm")


def test_reweighting_gives_both_classes_the_same_total_weight():
    ex = [make_example([1], [2, 3], True, "orm", "last") for _ in range(9)] + [make_example([1], [2, 3], False, "orm",
                                                                                            "last")]
    w_pos, w_neg = class_weights(ex, "reweight")
    assert w_pos * 9 == pytest.approx(w_neg * 1) and w_pos * 9 + w_neg == pytest.approx(10)
    assert class_weights(ex, "none") == (1.0, 1.0)
    assert class_weights(ex[:9], "reweight") == (1.0, 1.0)            # one class: nothing to balance
    soft = [make_example([1], [2, 4, 3], True, "prm", step_ends=[1], step_values=[0.5])]
    w_pos, w_neg = class_weights(soft, "reweight")                     # targets 0.5 and 1: 1.5 positive, 0.5 negative
    assert w_pos * 1.5 == pytest.approx(w_neg * 0.5)


def test_batch_layout():
    a = make_example([1, 2], [3, 4, 5], True, "orm", "token")
    b = make_example([1], [6, 7], False, "orm", "last")
    ids, mask, targets, weights, lm = verifier_batch([a, b], PAD, 2.0, 0.5)
    assert ids.tolist() == [[1, 2, 3, 4, 5], [1, 6, 7, PAD, PAD]]
    assert mask.tolist() == [[True] * 5, [True] * 3 + [False] * 2]
    assert weights.tolist() == [[0, 0, 2, 2, 2], [0, 0, 0.5, 0, 0]] and targets[0, 2:].tolist() == [1, 1, 1]
    assert lm.tolist() == [[-100, 3, 4, 5, -100], [6, 7, -100, -100, -100]]   # next tokens of the completion


def _examples(rng, n, kind="orm", at_end=False):
    """Completions whose outcome is the token GOOD / BAD at a random place (at_end: as the last
    token, where a frozen random trunk's state still holds it): a separable signal."""
    out = []
    for _ in range(n):
        right = bool(rng.random() < 0.7)
        body = rng.integers(7, 12, size=int(rng.integers(3, 7))).tolist()
        if at_end:
            out.append(make_example([1, 2], body + [GOOD if right else BAD], right, "orm", "last"))
            continue
        body.insert(int(rng.integers(0, len(body))), GOOD if right else BAD)
        if kind == "orm":
            out.append(make_example([1, 2], body + [3], right, "orm", "token"))
        else:
            out.append(make_example([1, 2], body + [4, 3], right, "prm", step_ends=[len(body)], step_values=[right]))
    return out


@pytest.mark.parametrize("kind", ["orm", "prm"])
def test_the_loss_matches_torch_on_the_same_hidden_states(kind):
    """The task's weighted BCE (+ LM loss) from the trunk's states, recomputed by torch with the head's weights."""
    rng = np.random.default_rng(1)
    trunk = tiny_trunk()
    verifier = Verifier(trunk, hidden=8)
    ex = _examples(rng, 12, kind)
    cfg = VerifierConfig(kind=kind, batch_size=6, lm_weight=0.3, steps=1, progress=False)
    task = VerifierTask(verifier, PAD, ex, ex[:2], cfg)
    pick = np.random.default_rng(cfg.seed).integers(0, len(ex), size=6)        # the task's first batch
    ids, mask, targets, weights, lm_targets = verifier_batch([ex[i] for i in pick], PAD, task.w_pos, task.w_neg)
    states = trunk.hidden_states(ids, mask).numpy()
    logits_lm = trunk.logits(trunk.hidden_states(ids, mask)).numpy()
    out = task.micro_step(0, 0, 1)
    fc_w, fc_b, out_w, out_b = (torch.tensor(p.numpy()) for p in verifier.head.parameters())
    x = (torch.nn.functional.gelu(torch.tensor(states) @ fc_w.T + fc_b) @ out_w.T + out_b)[..., 0]
    w = torch.tensor(weights)
    bce = (torch.nn.functional.binary_cross_entropy_with_logits(x, torch.tensor(targets), reduction="none") * w).sum() \
        / w.sum()
    lm = torch.nn.functional.cross_entropy(torch.tensor(logits_lm).reshape(-1, logits_lm.shape[-1]),
                                           torch.tensor(lm_targets).reshape(-1), ignore_index=-100)
    np.testing.assert_allclose(out["bce"], bce.item(), rtol=1e-5)
    np.testing.assert_allclose(out["lm_loss"], lm.item(), rtol=1e-5)
    np.testing.assert_allclose(out["loss"], bce.item() + 0.3 * lm.item(), rtol=1e-5)
    assert all(p.grad is not None for p in verifier.parameters())            # the shared trunk gets gradients


def test_a_frozen_trunk_stays_the_policy_and_only_the_head_trains():
    rng = np.random.default_rng(2)
    trunk = tiny_trunk()
    before = {k: v.copy() for k, v in trunk.state_dict().items()}
    verifier = Verifier(trunk, frozen=True)
    head_before = verifier.head.out.weight.numpy().copy()
    ex = _examples(rng, 20)
    cfg = VerifierConfig(trunk="frozen", steps=3, batch_size=4, eval_every=3, progress=False, warmup=1)
    train_verifier(verifier, PAD, ex, ex[:4], cfg)
    assert all(np.array_equal(before[k], v) for k, v in trunk.state_dict().items())
    assert not np.array_equal(head_before, verifier.head.out.weight.numpy())
    with pytest.raises(ValueError, match="lm_weight needs a trunk that trains"):
        VerifierConfig(trunk="frozen", lm_weight=0.5)


@pytest.mark.parametrize("kind, trunk", [("orm", "shared"), ("prm", "shared"), ("orm", "frozen")])
def test_training_learns_a_separable_outcome(kind, trunk):
    """A shared trunk learns to find the deciding token. A frozen one must already carry it: the
    frozen case puts the token last and gives GOOD and BAD opposite, large embeddings."""
    rng = np.random.default_rng(3)
    frozen = trunk == "frozen"
    model = tiny_trunk()
    if frozen:
        direction = rng.standard_normal(16).astype(np.float32)
        model.tok_emb.weight.data[GOOD], model.tok_emb.weight.data[BAD] = 2 * direction, -2 * direction
    verifier = Verifier(model, frozen=frozen, hidden=16 if frozen else None)
    train_x, held = _examples(rng, 200, kind, frozen), _examples(rng, 60, kind, frozen)
    cfg = VerifierConfig(kind=kind, trunk=trunk, steps=120, batch_size=16, eval_every=60, lr=1e-2, warmup=5,
                         progress=False)
    first = VerifierTask(verifier, PAD, train_x, held, cfg).evaluate(0)
    result = train_verifier(verifier, PAD, train_x, held, cfg)
    last = result["history"][-1]
    assert last["auroc"] > 0.95 and last["accuracy"] > 0.9 and last["accuracy"] > first["accuracy"], (first, last)
    assert last["eval_loss"] < first["eval_loss"] / 2


def test_bad_config_and_data_are_clear_errors():
    with pytest.raises(ValueError, match="VerifierConfig.kind must be one of"):
        VerifierConfig(kind="value")
    with pytest.raises(ValueError, match="VerifierConfig.balance"):
        VerifierConfig(balance="upsample")
    verifier = Verifier(tiny_trunk())
    with pytest.raises(ValueError, match="no training examples"):
        VerifierTask(verifier, PAD, [], [], VerifierConfig(progress=False))
    long = make_example([1] * 10, [2] * 10, True, "orm")
    with pytest.raises(ValueError, match="more than the trunk's context length 16"):
        VerifierTask(verifier, PAD, [long], [], VerifierConfig(progress=False))
