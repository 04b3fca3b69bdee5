"""The GRPO trainer (train/grpo.py, rollouts.py, rl_rewards.py): the recomputed log-probs equal the
sampler's, forced tokens and padding carry no loss, micro-batches give the update of one batch for
every loss type, the policy loss gradchecks through a tiny model, resume is bit-identical, rewards
follow TRL's interface, bad configs are clear errors, and a reward that is easy to learn is learnt."""
from __future__ import annotations

import json

import numpy as np
import pytest

import tinygrad_reason as tg
from tinygrad_reason.data import make_splits
from tinygrad_reason.generate import SamplingConfig
from tinygrad_reason.gradcheck import gradcheck
from tinygrad_reason.grading.rewards import strict_answer, strict_rewards
from tinygrad_reason.nn import Transformer, TransformerConfig
from tinygrad_reason.tensor import no_grad
from tinygrad_reason.tokenizer import Tokenizer
from tinygrad_reason.train import loop
from tinygrad_reason.train.grpo import GRPOConfig, GRPOTask, concat_rollouts, train_grpo
from tinygrad_reason.train.grpo_loss import LOSS_TYPES, policy_loss, token_weights
from tinygrad_reason.train.rl_rewards import CorrectnessReward, OverlongPenalty, combine_rewards
from tinygrad_reason.train.rollouts import policy_logprobs, sample_groups


def tiny(kind="gpt", vocab=40, seed=0, dtype=np.float64):
    tg.manual_seed(seed)
    extra = {} if kind == "gpt" else dict(positions="rope", norm="rmsnorm", mlp="swiglu", n_kv_heads=1, bias=False)
    cfg = TransformerConfig(vocab_size=vocab, context_length=48, d_model=16, n_layers=2, n_heads=2, **extra)
    return Transformer(cfg).astype(dtype)


SAMPLINGS = {"greedy": dict(temperature=0.0), "temperature": dict(temperature=0.7),
             "top_k": dict(temperature=1.0, top_k=4), "top_p": dict(temperature=1.2, top_p=0.75),
             "top_k_top_p": dict(temperature=0.9, top_k=8, top_p=0.6)}


class EveryThird:
    """A tool that forces [7, 8] after every third sampled token (a calculator's shape without a tokenizer)."""

    def __call__(self, generated):
        return [7, 8] if len(generated) % 3 == 0 else None


@pytest.mark.parametrize("kind", ["gpt", "llama"])
@pytest.mark.parametrize("name", list(SAMPLINGS))
@pytest.mark.parametrize("tool", [None, EveryThird()], ids=["no_tool", "tool"])
def test_recomputed_logprobs_equal_the_samplers(kind, name, tool):
    model = tiny(kind)
    cfg = SamplingConfig(max_new_tokens=14, stop_ids=(0,), seed=5, pad_id=1, **SAMPLINGS[name])
    prompts = [[2, 3, 4], [5, 6, 7, 9, 10, 11], [12]]                     # left padding in the scoring forward
    ro = sample_groups(model, prompts, 3, cfg, first_seed=40, tool=tool)
    with no_grad():
        recomputed = policy_logprobs(model, ro, cfg).numpy()
    mask = ro.loss_mask()
    assert mask.sum() > 20
    np.testing.assert_allclose(recomputed[mask], ro.sampler_logprobs[mask], atol=1e-6, rtol=0)
    assert np.abs(recomputed[mask] - ro.sampler_logprobs[mask]).max() < 1e-12      # in fact round-off
    if tool is not None:
        assert ro.forced.any() and not (mask & ro.forced).any()          # forced tokens carry no loss
        assert np.all(ro.tokens[ro.forced] >= 7) and np.all(ro.tokens[ro.forced] <= 8)
    assert not (mask & ~ro.real).any()                                    # nor does padding
    if name != "greedy":                                                   # the G rows of a group differ
        assert len({tuple(c) for c in ro.completions[:3]}) > 1


def test_truncated_completions_can_be_masked():
    model = tiny()
    cfg = SamplingConfig(temperature=1.0, max_new_tokens=6, stop_ids=(0, 1, 2, 3), seed=0)
    ro = sample_groups(model, [[4, 5]], 12, cfg)
    assert ro.truncated.any() and (~ro.truncated).any()
    kept = ro.loss_mask(mask_truncated=True)
    assert not kept[ro.truncated].any() and np.array_equal(kept[~ro.truncated], ro.loss_mask()[~ro.truncated])


def test_policy_loss_gradchecks_through_a_tiny_model():
    model = tiny("llama")
    cfg = SamplingConfig(temperature=0.8, top_k=10, max_new_tokens=5, stop_ids=(0,), seed=1)
    ro = sample_groups(model, [[2, 3], [4, 5, 6]], 2, cfg)
    with no_grad():
        old = policy_logprobs(model, ro, cfg).numpy() + np.random.default_rng(0).normal(0, 0.2, ro.tokens.shape)
    adv = np.array([1.0, -1.0, 0.5, -0.5])
    w_tokens = token_weights(ro.loss_mask(), "grpo", 5)
    from tinygrad_reason.nn.layers import Linear
    layer = next(m for m in model.blocks[1].modules() if isinstance(m, Linear))   # a weight deep in the model
    target = tg.Tensor(layer.weight.numpy().copy(), requires_grad=True)

    def fn(w):
        kept, layer.weight = layer.weight, w
        try:
            loss, _ = policy_loss(policy_logprobs(model, ro, cfg), old, adv, w_tokens, eps_low=0.2, eps_high=0.28,
                                  beta=0.05, ref_logp=old)
        finally:
            layer.weight = kept
        return loss

    assert gradcheck(fn, [target], atol=1e-7, rtol=1e-5)


# ------------------------------------------------------------------ the trainer on the built-in task
@pytest.fixture(scope="module")
def task():
    splits = make_splits("arithmetic", 60, 8, 8, seed=0, min_steps=1, max_steps=2, max_value=9)
    texts = [" ".join([r.question, *r.steps, str(r.answer)]) for r in splits["train"]]
    return splits, Tokenizer.train(texts, 800)


def task_model(tok, seed=0, dtype=np.float64):
    tg.manual_seed(seed)
    cfg = TransformerConfig.gpt(vocab_size=tok.vocab_size, context_length=192, d_model=16, n_layers=1, n_heads=2)
    return Transformer(cfg).astype(dtype)


def quiet(**kw):
    base = dict(steps=2, prompts_per_step=3, num_generations=3, max_completion_length=12, eval_every=2,
                eval_size=2, progress=False, lr=1e-2, min_lr=1e-2, temperature=1.0, seed=1)
    return GRPOConfig(**{**base, **kw})


def params(model):
    return {k: np.array(v, copy=True) for k, v in model.state_dict().items()}


def even_reward(prompts, completions, completion_ids, **columns):
    """A reward with spread in every group of an untrained model: the share of even token ids."""
    return [float(np.mean([t % 2 == 0 for t in c])) if c else 0.0 for c in completion_ids]


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_micro_batches_give_the_update_of_one_batch(task, loss_type):
    splits, tok = task
    done = []
    for accum in (1, 3):
        model = task_model(tok)
        cfg = quiet(grad_accum=accum, loss_type=loss_type, mu=2, beta=0.04, data_parallel=False)
        train_grpo(model, tok, splits["train"], splits["test"], cfg, reward_funcs=[even_reward])
        done.append(params(model))
    init = params(task_model(tok))
    for k in done[0]:
        np.testing.assert_allclose(done[0][k], done[1][k], rtol=1e-9, atol=1e-12, err_msg=k)
    assert any(not np.allclose(done[0][k], init[k]) for k in init)


def test_data_parallel_shards_give_the_one_thread_update(task):
    from tinygrad_reason.fast.threads import set_num_threads, num_threads
    splits, tok = task
    before = num_threads()
    done = []
    try:
        for dp, threads in ((False, 1), (True, 2)):
            set_num_threads(threads)
            model = task_model(tok)
            train_grpo(model, tok, splits["train"], splits["test"], quiet(data_parallel=dp),
                       reward_funcs=[even_reward])
            done.append(params(model))
    finally:
        set_num_threads(before)
    for k in done[0]:
        np.testing.assert_allclose(done[0][k], done[1][k], rtol=1e-9, atol=1e-12, err_msg=k)


class _Interrupt(Exception):
    pass


def test_resume_is_bit_identical(task, tmp_path, monkeypatch):
    splits, tok = task
    cfg = dict(steps=4, eval_every=2, mu=2, warmup=1, lr=1e-2, min_lr=1e-3, beta=0.04)
    straight = task_model(tok, dtype=np.float32)
    r1 = train_grpo(straight, tok, splits["train"], splits["test"], quiet(**cfg, checkpoint_dir=str(tmp_path / "a")),
                    reward_funcs=[even_reward])
    real_save = loop.save_checkpoint

    def save_then_die(*a, **k):
        real_save(*a, **k)
        raise _Interrupt

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    with pytest.raises(_Interrupt):
        train_grpo(task_model(tok, dtype=np.float32), tok, splits["train"], splits["test"],
                   quiet(**cfg, checkpoint_dir=str(tmp_path / "b")), reward_funcs=[even_reward])
    monkeypatch.setattr(loop, "save_checkpoint", real_save)
    assert json.loads((tmp_path / "b" / "checkpoint.json").read_text())["step"] == 2
    # the resumed run starts from the SFT model again (its KL reference), then loads the checkpoint
    resumed = task_model(tok, dtype=np.float32)
    tg.manual_seed(999)
    r2 = train_grpo(resumed, tok, splits["train"], splits["test"], quiet(**cfg, checkpoint_dir=str(tmp_path / "b")),
                    reward_funcs=[even_reward])
    a, b = params(straight), params(resumed)
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    strip = lambda h: [{k: v for k, v in e.items() if k != "seconds"} for e in h]  # noqa: E731
    assert strip(r1["history"]) == strip(r2["history"])


def test_metrics_as_trl_logs_them(task, tmp_path):
    splits, tok = task
    log = tmp_path / "m.jsonl"
    train_grpo(task_model(tok), tok, splits["train"], splits["test"], quiet(log_path=str(log), grad_accum=2),
               reward_funcs=[even_reward])
    rows = [json.loads(x) for x in log.read_text().splitlines()]
    first = rows[0]
    for key in ("loss", "reward", "reward_std", "frac_reward_zero_std", "rewards/even_reward/mean",
                "rewards/even_reward/std", "completion_length_mean", "completion_length_min",
                "completion_length_max", "clipped_ratio", "clip_low_ratio", "clip_high_ratio", "clip_region_ratio",
                "entropy", "time_rollout", "time_grading", "time_update", "rollout_tokens_per_s",
                "logprob_mismatch", "grad_norm"):
        assert key in first, key
    assert first["logprob_mismatch"] < 1e-9 and first["clip_region_ratio"] == 0.0     # ratio 1 on the first step
    assert 0 <= first["clipped_ratio"] <= 1 and first["entropy"] > 0
    assert rows[-1]["kind"] == "eval" and "accuracy" in rows[-1]


def test_dynamic_sampling_keeps_only_groups_with_spread(task):
    splits, tok = task
    calls = []

    def first_group_flat(prompts, completions, completion_ids, **columns):
        calls.append(len(completions))
        spread = even_reward(prompts, completions, completion_ids)
        return [1.0 if i < 3 else spread[i] for i in range(len(completions))]     # each call's first group: flat

    model = task_model(tok)
    t = GRPOTask(model, tok, splits["train"], splits["test"],
                 quiet(dynamic_sampling=True, dynamic_max_rounds=3), reward_funcs=[first_group_flat])
    b = t._new_batch()
    # 3 prompts: 2 groups kept; refill 1 prompt, flat again; refill 1, flat again; the cap stops it
    assert calls == [9, 3, 3] and b["metrics"]["rollout_rounds"] == 3 and b["metrics"]["groups"] == 2
    assert len(b["rollouts"].prompts) == 6 and b["metrics"]["frac_reward_zero_std"] == 3 / 5
    assert np.all(np.ptp(b["advantages"].reshape(-1, 3), axis=1) > 0)
    off = GRPOTask(task_model(tok), tok, splits["train"], splits["test"], quiet(), reward_funcs=[first_group_flat])
    assert len(off._new_batch()["rollouts"].prompts) == 9          # without it every group stays


def test_grpo_learns_an_easy_reward(task):
    # a reward any policy can climb: write even token ids. The mean reward must rise.
    splits, tok = task
    model = task_model(tok, dtype=np.float32)
    log = []
    t = GRPOTask(model, tok, splits["train"], splits["test"],
                 quiet(steps=25, prompts_per_step=4, num_generations=6, max_completion_length=16, lr=3e-2,
                       min_lr=3e-2, eval_every=25, loss_type="grpo"), reward_funcs=[even_reward])
    real = t._new_batch

    def spy():
        b = real()
        log.append(b["metrics"]["reward"])
        return b

    t._new_batch = spy
    loop.run(model, t, t.cfg)
    assert np.mean(log[-5:]) > np.mean(log[:5]) + 0.15, log


@pytest.mark.filterwarnings("ignore::RuntimeWarning")     # NaN weights sample NaN logits on the way
def test_a_nan_stops_the_step_and_names_it(task, tmp_path):
    splits, tok = task
    model = task_model(tok)
    cfg = quiet(checkpoint_dir=str(tmp_path / "c"), steps=2)
    train_grpo(model, tok, splits["train"], splits["test"], cfg, reward_funcs=[even_reward])
    saved = (tmp_path / "c" / "checkpoint.json").read_text()
    poisoned = task_model(tok)
    w = poisoned.tok_emb.weight
    w.data[:] = np.nan
    with pytest.raises(loop.NonFiniteError, match="step 1: the GRPO loss is nan; the first NaN / Inf comes from "
                                                 "a leaf tensor"):
        train_grpo(poisoned, tok, splits["train"], splits["test"], quiet(steps=2), reward_funcs=[even_reward])
    assert (tmp_path / "c" / "checkpoint.json").read_text() == saved
    hot = task_model(tok)                      # finite weights, an op that overflows: the op is named
    hot.lm_head.weight.data[:] = 1e308
    with pytest.raises(loop.NonFiniteError, match=r"comes from op Linear \("):
        train_grpo(hot, tok, splits["train"], splits["test"], quiet(steps=1), reward_funcs=[even_reward])


@pytest.mark.parametrize("field,value,match", [
    ("num_generations", 1, "num_generations must be >= 2"), ("eps_low", -0.1, "eps_low must be >= 0"),
    ("eps_high", -1.0, "eps_high must be >= 0"), ("beta", -0.01, "beta must be >= 0"),
    ("loss_type", "ppo", "loss_type must be one of"), ("advantage", "zscore", "advantage must be one of"),
    ("importance_level", "word", "importance_level must be one of"), ("kl_estimator", "k9", "kl_estimator"),
    ("delta", 1.1, "delta must be > 1 \\+ eps_high"), ("mu", 0, "mu must be >= 1"),
    ("rewards", ("style",), "rewards must name"), ("reward_weights", (1.0, 2.0), "one weight per reward"),
    ("eval_every", 3, "multiple of mu"), ("temperature", -1.0, "temperature must be >= 0"),
    ("top_p", 0.0, "top_p"), ("overlong_cache", 999, "overlong_cache")])
def test_bad_config_is_a_clear_error(field, value, match):
    kw = {field: value}
    if field == "eval_every":
        kw["mu"] = 2
    with pytest.raises(ValueError, match=match):
        GRPOConfig(**kw)


def test_default_config_is_valid():
    cfg = GRPOConfig()
    assert (cfg.loss_type, cfg.beta, cfg.eps_low, cfg.eps_high, cfg.mu, cfg.num_generations) == \
        ("dapo", 0.0, 0.2, 0.2, 1, 8)


# ------------------------------------------------------------------ rewards
HEDGES = ["<|answer|> 2, or maybe 3<|endoftext|>", "The final answer is 2, or maybe 3", "<|answer|> 3 or 2",
          "<|answer|> maybe 3", "\\boxed{2} so \\boxed{3}", "<|answer|> 3 <|answer|> 3", "so it is 3",
          "<|answer|> 2, 3<|endoftext|>", "<|answer|> about 3", ""]


@pytest.mark.parametrize("text", HEDGES)
def test_the_strict_reward_gives_hedges_nothing(text):
    assert strict_answer(text, "3") is None
    assert strict_rewards([text], ["3"]) == [0.0]


@pytest.mark.parametrize("text,reference", [("a <|step|> <|answer|> 3<|endoftext|>", "3"), ("so \\boxed{3}.", "3"),
                                            ("#### 1,000", "1000"), ("<|answer|> 1,000", "1000"),
                                            ("<|answer|> 0.5", "1/2"), ("\\boxed{\\frac{1}{2}}", "0.5"),
                                            ("<|answer|> (1, 2)", "(1, 2)"), ("<|answer|> 3.0", "3")])
def test_the_strict_reward_accepts_one_clear_answer(text, reference):
    assert strict_rewards([text], [reference]) == [1.0]


def test_the_strict_reward_grades_sympy_answers_in_workers_without_stalling():
    import time
    texts = ["<|answer|> 9^{9^{9^{9}}}", "<|answer|> \\sqrt{2}^{2}", "<|answer|> x^2+2x+1"] * 2
    t0 = time.perf_counter()
    got = strict_rewards(texts, ["3", "2", "(x+1)^2"] * 2, timeout=0.5, workers=2)
    assert got == [0.0, 1.0, 1.0] * 2
    assert time.perf_counter() - t0 < 30          # bounded by the time limit, whatever the answers hold


def test_reward_functions_follow_trls_interface():
    seen = {}

    def spy(prompts, completions, completion_ids, **columns):
        seen.update(columns, prompts=prompts)
        return [None, 0.5]

    correctness = CorrectnessReward()
    total, per = combine_rewards([correctness, spy], [1.0, 2.0], ["p", "q"],
                                    ["<|answer|> 4<|endoftext|>", "<|answer|> 5"], [[1], [2]],
                                    {"answer": ["4", "4"], "question": ["a", "b"]})
    assert seen["answer"] == ["4", "4"] and seen["question"] == ["a", "b"] and seen["prompts"] == ["p", "q"]
    np.testing.assert_array_equal(total, [1.0, 1.0])                      # None adds nothing
    assert np.isnan(per[0, 1]) and per[1, 0] == 0.0
    with pytest.raises(ValueError, match="'spy' returned 2 values for 3"):
        combine_rewards([spy], [1.0], ["p"] * 3, ["c"] * 3, [[1]] * 3, {})
    with pytest.raises(ValueError, match="returned nan"):
        combine_rewards([lambda **k: [float("nan")]], [1.0], ["p"], ["c"], [[1]], {})
    with pytest.raises(ValueError, match="no 'answer' column"):
        correctness(["p"], ["c"], [[1]])


def test_overlong_penalty_is_dapos():
    pen = OverlongPenalty(max_len=10, cache=4)
    assert pen([], [""] * 5, [[0] * n for n in (3, 6, 7, 8, 10)]) == [0.0, 0.0, -0.25, -0.5, -1.0]
    with pytest.raises(ValueError, match="cache"):
        OverlongPenalty(10, 0)


def test_concat_rollouts_pads_and_renumbers_groups():
    model = tiny()
    cfg = SamplingConfig(temperature=1.0, max_new_tokens=8, stop_ids=(0,), seed=0, pad_id=1)
    a, b = sample_groups(model, [[2, 3]], 2, cfg), sample_groups(model, [[4], [5]], 2, cfg, first_seed=9)
    c = concat_rollouts([a, b], pad_id=1)
    assert np.all(c.tokens[~c.real] == 1)
    assert c.group.tolist() == [0, 0, 1, 1, 2, 2] and c.tokens.shape[1] == max(a.tokens.shape[1], b.tokens.shape[1])
    assert c.completions == a.completions + b.completions and c.real.sum() == a.real.sum() + b.real.sum()
