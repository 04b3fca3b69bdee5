"""The train loop and supervised fine-tuning on it, on a tiny model and a tiny arithmetic task (kept to a few
seconds)."""
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

import tinygrad_reason as tg
from tinygrad_reason.data import Record, make_splits
from tinygrad_reason.data.formats import completion_ids, encode_example, make_batch, prompt_ids
from tinygrad_reason.nn import Transformer, TransformerConfig
from tinygrad_reason.train import evaluation, loop, metrics, sft
from tinygrad_reason.train import NonFiniteError, TrainConfig, evaluate, train, wilson_interval
from tinygrad_reason.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def task():
    splits = make_splits("arithmetic", 200, 20, 20, seed=0, min_steps=2, max_steps=2, max_value=9)
    texts = [" ".join([r.question, *r.steps, str(r.answer)]) for r in splits["train"]]
    tok = Tokenizer.train(texts, 1200)       # ~1000 tokens on this corpus: cot examples fit in 128
    return splits, tok


def tiny_model(tok, seed=0, **kw):
    tg.manual_seed(seed)
    cfg = dict(vocab_size=tok.vocab_size, context_length=128, d_model=16, n_layers=1, n_heads=2)
    return Transformer(TransformerConfig.gpt(**{**cfg, **kw}))


def quiet(**kw):
    base = dict(batch_size=2, warmup=0, eval_size=2, max_new_tokens=2, progress=False)
    return TrainConfig(**{**base, **kw})


def params(model):
    return {k: np.array(getattr(v, "numpy", lambda: v)(), copy=True) for k, v in model.state_dict().items()}


def _fixed_loss(model, tok, records, fmt):
    inputs, targets, mask = make_batch([encode_example(r, tok, fmt) for r in records], tok.pad_id)
    with tg.no_grad():
        return model.loss(inputs, targets, pad_mask=mask).item()


# ------------------------------------------------------------------ learning
def test_overfits_a_handful_of_examples(task):
    splits, tok = task
    recs = splits["train"][:4]
    model = tiny_model(tok)
    before = _fixed_loss(model, tok, recs, "direct")
    out = train(model, tok, recs, recs, "direct",
                quiet(steps=40, batch_size=4, lr=1e-2, min_lr=1e-2, eval_every=40, eval_size=4, max_new_tokens=3))
    after = _fixed_loss(model, tok, recs, "direct")
    assert math.isfinite(after) and before > 5.0
    assert after < 0.5 * before, (before, after)
    assert out["steps_done"] == 40 and len(out["history"]) == 1
    assert model.training                      # left in train mode after the final evaluation


def test_too_long_examples_are_a_clear_error(task):
    splits, tok = task
    model = tiny_model(tok, context_length=32)
    with pytest.raises(ValueError, match=r"exceed the context length 32"):
        train(model, tok, splits["train"][:3], splits["test"][:2], "direct", quiet(steps=1, eval_every=1))


# ------------------------------------------------------------------ metrics, evaluation schedule, early stopping
def test_metrics_jsonl_and_eval_schedule(task, tmp_path):
    splits, tok = task
    log = tmp_path / "logs" / "metrics.jsonl"
    png = tmp_path / "curves.png"
    out = train(tiny_model(tok), tok, splits["train"][:8], splits["test"], "direct",
                quiet(steps=11, eval_every=4, eval_size=3, log_path=str(log), plot_path=str(png)))
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert {r["kind"] for r in rows} == {"train", "eval"}
    train_rows = [r for r in rows if r["kind"] == "train"]
    evals = [r for r in rows if r["kind"] == "eval"]
    assert [r["step"] for r in train_rows] == [0, 10]
    for r in train_rows:
        assert math.isfinite(r["loss"]) and r["loss"] > 0 and r["lr"] > 0 and r["tokens_per_s"] > 0
    # every eval_every steps, and after the last step
    assert [r["step"] for r in evals] == [4, 8, 11]
    for r in evals:
        assert r["n"] == 3 and r["correct"] == round(r["accuracy"] * 3) and 0 <= r["generated_tokens"] <= 3 * 2
    assert [{k: v for k, v in h.items() if k != "seconds"} for h in out["history"]] == \
           [{k: v for k, v in r.items() if k != "seconds"} for r in evals]
    assert out["steps_done"] == 11
    try:
        import matplotlib  # noqa: F401
        assert png.exists()
    except ImportError:
        assert not png.exists() and not metrics.plot_metrics(str(log), str(png))


def test_early_stopping_when_accuracy_never_improves(task):
    splits, tok = task
    # chain of thought with one new token can never reach "<|answer|> N": accuracy is 0 at every evaluation
    out = train(tiny_model(tok), tok, splits["train"][:4], splits["test"], "cot",
                quiet(steps=40, eval_every=2, patience=2, max_new_tokens=1))
    accs = [h["accuracy"] for h in out["history"]]
    assert accs == [0.0, 0.0, 0.0]           # first eval sets the best, then 2 without improvement
    assert out["steps_done"] == 6 and out["best_accuracy"] == 0.0
    # patience 0 never stops
    out = train(tiny_model(tok), tok, splits["train"][:4], splits["test"], "cot",
                quiet(steps=6, eval_every=2, patience=0, max_new_tokens=1))
    assert out["steps_done"] == 6 and len(out["history"]) == 3


def test_early_stopping_counter_resets_on_improvement(task, monkeypatch):
    splits, tok = task
    scripted = iter([0.1, 0.1, 0.2, 0.2, 0.2, 0.9, 0.9])

    def fake_evaluate(model, tok_, records, fmt, batch_size, max_new_tokens):
        return {"accuracy": next(scripted), "correct": 0, "n": len(records), "generated_tokens": 0, "seconds": 0.0}

    monkeypatch.setattr(sft, "evaluate", fake_evaluate)
    out = train(tiny_model(tok), tok, splits["train"][:4], splits["test"], "direct",
                quiet(steps=100, eval_every=1, patience=2))
    # 0.1 best, 0.1 (1), 0.2 best (reset), 0.2 (1), 0.2 (2) -> stop after the 5th evaluation
    assert [h["accuracy"] for h in out["history"]] == [0.1, 0.1, 0.2, 0.2, 0.2]
    assert out["steps_done"] == 5 and out["best_accuracy"] == 0.2


# ------------------------------------------------------------------ checkpoint + resume
class _Interrupt(Exception):
    pass


def test_resume_is_bit_identical(task, tmp_path, monkeypatch):
    splits, tok = task
    recs = splits["train"][:10]
    # warmup + cosine (the schedule depends on the total steps) and dropout (the RNG must be restored)
    cfg = dict(steps=6, eval_every=3, warmup=2, lr=5e-3, min_lr=1e-4, seed=3)

    straight = tiny_model(tok, dropout=0.1)
    r1 = train(straight, tok, recs, splits["test"], "direct", quiet(**cfg, checkpoint_dir=str(tmp_path / "a")))

    # the same run, interrupted right after the checkpoint at step 3 ...
    real_save = loop.save_checkpoint

    def save_then_die(*a, **k):
        real_save(*a, **k)
        raise _Interrupt

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    with pytest.raises(_Interrupt):
        train(tiny_model(tok, dropout=0.1), tok, recs, splits["test"], "direct",
              quiet(**cfg, checkpoint_dir=str(tmp_path / "b")))
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    meta = json.loads((tmp_path / "b" / "checkpoint.json").read_text())
    assert meta["step"] == 3
    # ... and resumed in a fresh process-like state: a differently initialised model, other RNG state
    resumed = tiny_model(tok, seed=123, dropout=0.1)
    tg.manual_seed(999)
    r2 = train(resumed, tok, recs, splits["test"], "direct", quiet(**cfg, checkpoint_dir=str(tmp_path / "b")))

    a, b = params(straight), params(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    assert r2["steps_done"] == r1["steps_done"] == 6
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa: E731
    assert strip(r2["history"]) == strip(r1["history"]) and len(r1["history"]) == 2
    # the saved sampler state matches too
    ea = json.loads((tmp_path / "a" / "checkpoint.json").read_text())["extra"]
    eb = json.loads((tmp_path / "b" / "checkpoint.json").read_text())["extra"]
    assert ea["sampler_state"] == eb["sampler_state"]

    # a finished run resumed again does nothing and reports the steps it has
    r3 = train(resumed, tok, recs, splits["test"], "direct", quiet(**cfg, checkpoint_dir=str(tmp_path / "b")))
    assert r3["steps_done"] == 6 and len(r3["history"]) == 2
    for k, v in params(resumed).items():
        assert np.array_equal(v, a[k]), k


def test_grad_accum_matches_a_bigger_batch(task, tmp_path):
    splits, tok = task
    one = splits["train"][:1]          # a single example: every draw of the sampler is the same
    m1, m2 = tiny_model(tok), tiny_model(tok)
    logs = [tmp_path / "1.jsonl", tmp_path / "2.jsonl"]
    train(m1, tok, one, one, "direct", quiet(steps=2, batch_size=2, grad_accum=1, eval_every=2, lr=1e-3,
                                             log_path=str(logs[0])))
    train(m2, tok, one, one, "direct", quiet(steps=2, batch_size=1, grad_accum=2, eval_every=2, lr=1e-3,
                                             log_path=str(logs[1])))
    l1, l2 = (json.loads(p.read_text().splitlines()[0])["loss"] for p in logs)
    assert l1 == pytest.approx(l2, rel=1e-5) and l1 > 1       # the logged loss is the mean, not the sum
    p1, p2 = params(m1), params(m2)
    init = params(tiny_model(tok))
    for k in p1:
        np.testing.assert_allclose(p1[k], p2[k], atol=2e-6, rtol=0, err_msg=k)
    assert any(not np.array_equal(p1[k], init[k]) for k in p1)


def test_data_parallel_step_matches_one_thread(task, tmp_path, monkeypatch):
    # the default on CPU with 2 threads: a shard of each micro-batch per thread, weighted by its scored
    # tokens, so the logged loss and the update are those of one backward of the whole batch
    splits, tok = task
    calls = []
    real = sft.data_parallel_backward
    monkeypatch.setattr(sft, "data_parallel_backward", lambda *a, **k: calls.append(1) or real(*a, **k))
    runs = {}
    for name, parallel, threads in (("serial", False, 1), ("parallel", True, 2), ("again", True, 2)):
        tg.set_num_threads(threads)
        model, log = tiny_model(tok), tmp_path / f"{name}.jsonl"
        train(model, tok, splits["train"][:8], splits["train"][:2], "cot",
              quiet(steps=3, batch_size=4, eval_every=3, lr=1e-3, data_parallel=parallel, log_path=str(log)))
        runs[name] = json.loads(log.read_text().splitlines()[0])["loss"], params(model)
    tg.set_num_threads(2)
    assert len(calls) == 6                     # 3 steps in each of the two parallel runs
    assert runs["parallel"][0] == pytest.approx(runs["serial"][0], rel=1e-5)
    for k in runs["serial"][1]:
        np.testing.assert_allclose(runs["parallel"][1][k], runs["serial"][1][k], atol=2e-6, rtol=0, err_msg=k)
        assert np.array_equal(runs["parallel"][1][k], runs["again"][1][k]), k      # repeats bit for bit


# ------------------------------------------------------------------ evaluate
def test_evaluate_result_and_train_mode(task):
    splits, tok = task
    model = tiny_model(tok)
    model.train()
    r = evaluate(model, tok, splits["test"][:3], "cot", batch_size=2, max_new_tokens=3)
    assert set(r) >= {"accuracy", "correct", "n", "generated_tokens", "seconds"}
    assert r["n"] == 3 and r["accuracy"] == r["correct"] / 3 and 0 < r["generated_tokens"] <= 9
    assert model.training and all(m.training for m in model.modules())
    model.eval()
    evaluate(model, tok, splits["test"][:1], "direct", max_new_tokens=2)
    assert not model.training and not any(m.training for m in model.modules())
    empty = evaluate(model, tok, [], "direct")
    assert empty["n"] == 0 and empty["correct"] == 0 and math.isnan(empty["accuracy"])


def test_evaluate_counts_exact_matches(task, monkeypatch):
    splits, tok = task
    recs = splits["test"][:5]
    wrong = {1, 3}

    by_prompt = {tuple(prompt_ids(r, tok, "cot")): i for i, r in enumerate(recs)}
    calls = []

    def fake_generate(model, prompts, cfg, row_seeds=None, tool=None):
        assert cfg.temperature == 0.0 and cfg.stop_ids == (tok.eot_id,) and cfg.max_new_tokens == 7
        calls.append(len(prompts))
        out = []
        for p in prompts:
            i = by_prompt[tuple(p)]
            r = recs[i]
            answer = f"{int(r.answer) + 1}" if i in wrong else f"{int(r.answer):,}"   # "1,234" still matches
            out.append(completion_ids(Record(r.question, r.steps, answer), tok, "cot"))
        return SimpleNamespace(tokens=out)

    monkeypatch.setattr(evaluation, "generate", fake_generate)
    model = tiny_model(tok)
    model.train()
    r = evaluate(model, tok, recs, "cot", batch_size=2, max_new_tokens=7)
    assert (r["correct"], r["n"]) == (5 - len(wrong), 5) and r["accuracy"] == pytest.approx(0.6)
    assert calls == [2, 2, 1]
    assert r["generated_tokens"] > 0
    assert model.training

    def boom(*a, **k):
        raise RuntimeError("boom")

    monkeypatch.setattr(evaluation, "generate", boom)
    with pytest.raises(RuntimeError):
        evaluate(model, tok, recs, "cot")
    assert model.training                      # restored even when generation fails


def test_evaluate_grades_by_the_one_definition_of_correct(task, monkeypatch):
    """4.0, 8/2 and 04 are the answer 4 here exactly as in every eval method (grading.rewards)."""
    splits, tok = task
    r = Record("q", ["s"], "4")
    monkeypatch.setattr(evaluation, "greedy_answers", lambda *a, **k: (["4.0", "8/2", "04", "5", None], 10))
    out = evaluate(tiny_model(tok), tok, [r] * 5, "cot")
    assert (out["correct"], out["n"], out["generated_tokens"]) == (3, 5, 10)


# ------------------------------------------------------------------ wilson interval, config validation
def test_wilson_interval():
    lo, hi = wilson_interval(0, 20)
    assert lo == 0.0 and 0 < hi < 0.2
    lo, hi = wilson_interval(20, 20)
    assert hi == 1.0 and 0.8 < lo < 1
    for k, n in ((3, 10), (0, 7), (50, 100), (1, 1)):
        lo, hi = wilson_interval(k, n)
        lo2, hi2 = wilson_interval(n - k, n)
        assert lo == pytest.approx(1 - hi2) and hi == pytest.approx(1 - lo2)
        assert lo <= k / n <= hi
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    width = lambda k, n: wilson_interval(k, n)[1] - wilson_interval(k, n)[0]  # noqa: E731
    assert width(50, 100) < width(5, 10)
    assert all(math.isnan(x) for x in wilson_interval(0, 0))


@pytest.mark.parametrize("field, value", [("steps", 0), ("batch_size", -1), ("grad_accum", 0), ("eval_every", 0),
                                          ("max_new_tokens", 0), ("eval_batch", 0), ("lr", -1e-3),
                                          ("min_lr", -1.0), ("warmup", -1), ("eval_size", -1), ("patience", -2),
                                          ("clip", -0.5), ("weight_decay", -0.1)])
def test_train_config_validation(field, value):
    with pytest.raises(ValueError, match=rf"TrainConfig\.{field} must be"):
        TrainConfig(**{field: value})


def test_train_config_defaults_are_valid():
    cfg = TrainConfig()
    assert cfg.grad_accum == 1 and cfg.patience == 0 and cfg.checkpoint_dir is None
    TrainConfig(eval_size=0, patience=0, warmup=0, lr=0.0)


# ------------------------------------------------------------------ the loop with a task of its own
class _Quadratic:
    """A task on the loop's interface: loss = sum((w - target)^2) over one parameter's entries."""

    def __init__(self, model, poison_at=None):
        self.model, self.poison_at, self.calls = model, poison_at, []

    def micro_step(self, step, micro, n_micro):
        self.calls.append((step, micro, n_micro))
        w = self.model.fc.weight
        loss = ((w - 1.0) * (w - 1.0)).sum() * (1.0 / n_micro)
        if step == self.poison_at:
            loss = loss * float("nan") if micro == 0 else loss
        loss.backward()
        return {"loss": loss.item(), "tokens": 3}

    def evaluate(self, step):
        return {"accuracy": float(-abs(self.model.fc.weight.data - 1.0).max())}

    def state_dict(self):
        return {"calls": len(self.calls)}

    def load_state_dict(self, state):
        self.resumed_from = state["calls"]


def _one_layer():
    from tinygrad_reason.nn import Linear, Module

    class M(Module):
        def __init__(self):
            self.fc = Linear(3, 2)

    tg.manual_seed(0)
    return M()


def test_the_loop_accumulates_micro_steps_and_resumes_a_task(tmp_path):
    model = _one_layer()
    task = _Quadratic(model)
    cfg = loop.LoopConfig(steps=4, grad_accum=3, lr=0.1, min_lr=0.1, warmup=0, eval_every=2, progress=False,
                          weight_decay=0.0, checkpoint_dir=str(tmp_path / "ck"), log_path=str(tmp_path / "m.jsonl"))
    out = loop.run(model, task, cfg)
    assert task.calls == [(s, m, 3) for s in range(4) for m in range(3)]
    h = out["history"]
    assert out["steps_done"] == 4 and len(h) == 2 and out["best_accuracy"] == h[1]["accuracy"] > h[0]["accuracy"]
    records = [json.loads(line) for line in (tmp_path / "m.jsonl").read_text().splitlines()]
    assert records[0]["kind"] == "train" and records[0]["grad_norm"] > 0
    again = _Quadratic(model)
    loop.run(model, again, loop.LoopConfig(**{**cfg.__dict__, "steps": 6}))
    assert again.resumed_from == 12 and again.calls[0] == (4, 0, 3)     # the task's state came back


def test_a_non_finite_loss_stops_before_any_weight_changes(tmp_path):
    model = _one_layer()
    cfg = loop.LoopConfig(steps=5, lr=0.1, warmup=0, eval_every=2, progress=False,
                          checkpoint_dir=str(tmp_path / "ck"))
    with pytest.raises(NonFiniteError, match="step 4: the loss is nan; no weight was changed"):
        loop.run(model, _Quadratic(model, poison_at=3), cfg)
    meta = json.loads((tmp_path / "ck" / "checkpoint.json").read_text())
    assert meta["step"] == 2                                     # the last good checkpoint stays


def test_a_non_finite_gradient_names_the_parameter():
    model = _one_layer()

    class BadGrad(_Quadratic):
        def micro_step(self, step, micro, n_micro):
            out = super().micro_step(step, micro, n_micro)
            self.model.fc.bias.grad = Tensor(np.array([np.inf, 0.0], dtype=np.float32))
            return out

    from tinygrad_reason import Tensor
    w = model.fc.weight.data.copy()
    for clip in (1.0, 0.0):
        with pytest.raises(NonFiniteError, match=r"step 1: the gradient of fc.bias \(2,\) holds NaN or Inf"):
            loop.run(model, BadGrad(model), loop.LoopConfig(steps=2, clip=clip, warmup=0, progress=False))
    assert np.array_equal(model.fc.weight.data, w)


def test_clip_zero_means_no_clipping():
    """clip=0 leaves the gradients as they are (it does not scale them to zero)."""
    moved = {}
    for clip in (0.0, 1e-12):
        model = _one_layer()
        w = model.fc.weight.data.copy()
        loop.run(model, _Quadratic(model), loop.LoopConfig(steps=1, clip=clip, warmup=0, lr=0.1, min_lr=0.1,
                                                           weight_decay=0.0, beta1=0.0, beta2=0.0, progress=False))
        moved[clip] = float(abs(model.fc.weight.data - w).max())
    assert moved[0.0] == pytest.approx(0.1, rel=1e-3)            # AdamW's first step moves each entry by lr
    assert moved[1e-12] < 1e-3                                    # a gradient clipped to ~0 moves nothing


def test_a_task_state_may_not_use_the_loops_keys(tmp_path):
    model = _one_layer()

    class Clash(_Quadratic):
        def state_dict(self):
            return {"history": []}

    with pytest.raises(ValueError, match=r"the task's state uses the loop's keys \['history'\]"):
        loop.run(model, Clash(model), loop.LoopConfig(steps=1, progress=False, checkpoint_dir=str(tmp_path)))
