"""GRPO on a pretrained chat model (reasoning/chat_grpo.py, cli/rl_model.py): its prompts, stops and
reward are eval-model's, only the last K blocks learn with train_layers, a reward that is easy to
learn is learnt through the chat template, and `rl --model` trains, reports before / after, refuses
a resume with other options and leaves a directory eval-model loads.

The tiny tests put a small random Llama under SmolLM2's real tokenizer and chat template (the
embedding has its 49152 rows); the command tests run the real model for one or two short steps."""
from __future__ import annotations

import json

import numpy as np
import pytest

import tinygrad_reason as tg
from tinygrad_reason.cli import main
from tinygrad_reason.data import make_splits
from tinygrad_reason.grading.rewards import is_correct
from tinygrad_reason.models.pretrained import Pretrained
from tinygrad_reason.nn import Transformer, TransformerConfig
from tinygrad_reason.reasoning.chat_eval import chat_prompt, chat_stop_ids, completion_answer
from tinygrad_reason.reasoning.chat_grpo import ChatCorrectnessReward, ChatGRPOTask, freeze_below
from tinygrad_reason.train import loop
from tinygrad_reason.train.grpo import GRPOConfig

KNOBS = dict(min_digits_a=2, max_digits_a=2, min_digits_b=1, max_digits_b=1)


@pytest.fixture(scope="module")
def smollm2(smollm2_gguf):
    from tinygrad_reason.models.pretrained import load_pretrained
    return load_pretrained(smollm2_gguf)


def tiny_chat(smollm2, seed=0, n_layers=3) -> Pretrained:
    tg.manual_seed(seed)
    cfg = TransformerConfig.llama(vocab_size=smollm2.model.cfg.vocab_size, context_length=160, d_model=16,
                                  n_layers=n_layers, n_heads=2, n_kv_heads=1, tie_embeddings=True)
    return Pretrained(Transformer(cfg), smollm2.tokenizer, smollm2.chat, "tiny", "test", "tiny")


@pytest.fixture(scope="module")
def splits():
    return make_splits("multiplication", 40, 4, 0, seed=0, **KNOBS)


def quiet(**kw):
    base = dict(steps=2, prompts_per_step=2, num_generations=4, max_completion_length=10, eval_every=2,
                eval_size=2, eval_batch=8, progress=False, lr=1e-2, min_lr=1e-2, temperature=1.0, seed=1)
    return GRPOConfig(**{**base, **kw})


def even(prompts, completions, completion_ids, **columns):
    """A reward with spread in every group of a random model: the share of even token ids."""
    return [float(np.mean([t % 2 == 0 for t in c])) if c else 0.0 for c in completion_ids]


# ----------------------------------------------------------------------------- the reward
@pytest.mark.parametrize("text, reference", [
    ("18 x 2 = 36\nThe final answer is 36.", "36"), ("73 * 5 = 365. The answer is 365.", "365"),
    ("So the product is 1875.", "365"), ("The answer is N.", "12"), ("", "4"), ("it is 12.0", "12"),
])
def test_the_reward_is_eval_models_definition_of_solved(text, reference):
    got = ChatCorrectnessReward()([""], [text], [[]], answer=[reference])
    a = completion_answer(text)
    assert got == [float(a is not None and is_correct(a, reference))]


def test_the_reward_needs_the_answer_column():
    with pytest.raises(ValueError, match="no 'answer' column"):
        ChatCorrectnessReward()([""], ["4"], [[]])


# ----------------------------------------------------------------------------- the trainer's format
def test_prompts_and_stops_are_eval_models(smollm2, splits):
    p = tiny_chat(smollm2)
    task = ChatGRPOTask(p, splits["train"], splits["test"], quiet())
    assert task.prompts == [chat_prompt(p, r.question) for r in splits["train"]]
    assert task.sampling.stop_ids == chat_stop_ids(p.tokenizer)
    assert "<|im_start|>assistant" in p.tokenizer.decode(task.prompts[0])
    assert [type(f).__name__ for f in task.reward_funcs] == ["ChatCorrectnessReward"]


def test_other_built_in_rewards_are_refused(smollm2, splits):
    with pytest.raises(ValueError, match="chat GRPO"):
        ChatGRPOTask(tiny_chat(smollm2), splits["train"], splits["test"], quiet(rewards=("format",)))


def test_freeze_below_trains_only_the_last_blocks(smollm2, splits):
    p = tiny_chat(smollm2)
    before = {k: np.array(v, copy=True) for k, v in p.model.state_dict().items()}
    n = freeze_below(p.model, 1)
    top = list(p.model.blocks)[-1]
    assert n == sum(x.data.size for x in top.parameters()) + sum(x.data.size for x in p.model.norm.parameters())

    loop.run(p.model, ChatGRPOTask(p, splits["train"], splits["test"], quiet(), reward_funcs=[even]), quiet())
    after = p.model.state_dict()
    trained = {k for k in after if not np.array_equal(after[k], before[k])}
    assert trained and all(k.startswith(f"blocks.{len(p.model.blocks) - 1}.") or k.startswith("norm.")
                           for k in trained), trained
    for bad in (0, 4):
        with pytest.raises(ValueError, match="train_layers must be in 1..3"):
            freeze_below(tiny_chat(smollm2).model, bad)


def test_an_easy_reward_is_learnt_through_the_chat_template(smollm2, splits):
    # a reward any policy can climb: write tokens from one half of the vocabulary, the ids whose
    # initial embedding has a positive first coordinate. The embedding is scaled up so the random
    # model's logits are not nearly uniform over 49152 ids. The mean reward must rise.
    p = tiny_chat(smollm2, n_layers=1)
    p.model.tok_emb.weight.data *= 30
    side = np.asarray(p.model.tok_emb.weight.data[:, 0] > 0)

    def aligned(prompts, completions, completion_ids, **columns):
        return [float(np.mean(side[c])) if c else 0.0 for c in completion_ids]

    cfg = quiet(steps=12, prompts_per_step=4, num_generations=6, lr=3e-2, min_lr=3e-2, eval_every=12,
                loss_type="grpo")
    task = ChatGRPOTask(p, splits["train"], splits["test"], cfg, reward_funcs=[aligned])
    log, real = [], task._new_batch

    def spy():
        b = real()
        log.append(b["metrics"]["reward"])
        return b

    task._new_batch = spy
    loop.run(p.model, task, cfg)
    assert np.mean(log[-3:]) > np.mean(log[:3]) + 0.3, log


# ----------------------------------------------------------------------------- the command
ARGS = ["--task", "multiplication", "--knob", "min_digits_a=2", "--knob", "max_digits_a=2", "--knob",
        "max_digits_b=1", "--train-size", "20", "--test-size", "4", "--ood-size", "2", "--steps", "1",
        "--prompts-per-step", "1", "--num-generations", "2", "--max-completion-length", "12", "--eval-every", "1",
        "--eval-size", "2", "--train-layers", "1", "--quiet",
        "--weight-decay", "0.1"]    # the trainable weights change even when both samples score the same


def test_rl_model_command_trains_reports_and_resumes(smollm2_gguf, tmp_path, capsys):
    out = tmp_path / "grpo"
    assert main(["rl", "--model", smollm2_gguf, "--out", str(out), *ARGS]) == 0
    printed = capsys.readouterr().out
    assert "test: accuracy" in printed and "source model" in printed
    res = json.loads((out / "results.json").read_text())
    assert res["steps"] == 1 and res["test"]["n"] == 4 and res["ood"]["n"] == 2
    assert res["test"]["gain"] == pytest.approx(res["test"]["accuracy"] - res["test"]["source_model"]["accuracy"])
    record = json.loads((out / "rl.json").read_text())
    assert record["train_layers"] == 1 and record["knobs"] == {"min_digits_a": 2, "max_digits_a": 2, "max_digits_b": 1}
    assert (out / "before.json").exists() and (out / "metrics.jsonl").exists()
    # the directory is a --model for eval-model / sample: the source model with the trained weights
    from tinygrad_reason.cli.models import load_model
    from tinygrad_reason.io.checkpoint import load_checkpoint
    from tinygrad_reason.models.pretrained import load_pretrained
    trained, source = load_model(str(out)), load_pretrained(smollm2_gguf)
    sd, src = trained.model.state_dict(), source.model.state_dict()
    last = f"blocks.{len(source.model.blocks) - 1}."
    changed = {k for k in sd if not np.array_equal(sd[k], src[k])}
    assert changed and all(k.startswith(last) or k.startswith("norm.") for k in changed)
    load_checkpoint(str(out / "checkpoint"), source.model, restore_rng=False)
    assert all(np.array_equal(sd[k], v) for k, v in source.model.state_dict().items())
    # a resume with another option is refused, naming it
    assert main(["rl", "--model", smollm2_gguf, "--out", str(out), *ARGS, "--lr", "1e-3"]) == 2
    assert "other options (lr)" in capsys.readouterr().err


def test_rl_needs_exactly_one_of_run_and_model(smollm2_gguf, tmp_path, capsys):
    for extra in ([], ["--run", str(tmp_path), "--model", smollm2_gguf]):
        assert main(["rl", "--out", str(tmp_path / "o"), *extra]) == 2
        assert "exactly one of --run" in capsys.readouterr().err
    assert main(["rl", "--model", smollm2_gguf, "--out", str(tmp_path / "o"), "--knob", "max_digits_b"]) == 2
    assert "NAME=VALUE" in capsys.readouterr().err
    assert main(["rl", "--model", smollm2_gguf, "--out", str(tmp_path / "o"), "--task", "sudoku"]) == 2
    assert "known tasks" in capsys.readouterr().err


def test_only_an_rl_model_output_is_read_as_a_trained_model(tmp_path):
    from tinygrad_reason.cli.models import is_trained_dir
    (tmp_path / "checkpoint").mkdir()
    (tmp_path / "checkpoint" / "checkpoint.json").write_text("{}")
    (tmp_path / "rl.json").write_text(json.dumps({"run": "/runs/cot", "config": {}}))     # an `rl --run` output
    assert not is_trained_dir(str(tmp_path))
    (tmp_path / "rl.json").write_text(json.dumps({"model": "/m.gguf", "config": {}}))
    assert is_trained_dir(str(tmp_path)) and not is_trained_dir(str(tmp_path / "none"))
