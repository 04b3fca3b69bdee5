"""GRPO on a pretrained chat model (models.pretrained.Pretrained): train.grpo's trainer with the
chat model's format in place of the package's own.

What changes against train.grpo.GRPOTask, and only this:
  * prompts: the question and COT_INSTRUCTION in the model's chat template (chat_eval.chat_prompt),
    the same prompt `eval-model` measures;
  * stop tokens: the model's end of turn and end of text (chat_eval.chat_stop_ids);
  * reward: ChatCorrectnessReward, 1.0 when the completion's answer (chat_eval.completion_answer:
    last \\boxed{}, else ``#### n``, else the last number) is correct by grading.rewards.is_correct,
    i.e. exactly what `eval-model` counts as a solved problem;
  * evaluation: greedy accuracy of that prompt (chat_eval.run_chat_method "greedy");
  * the tool: generate.tools.InlineCalculatorTool (chat models write prose arithmetic).
Sampling, log-probs, advantages, the loss, the loop, checkpoints and resume are train.grpo's.

train_layers: a 135M model's full backward on 2 CPU cores costs minutes per step. With
train_layers = K only the last K transformer blocks and the final norm learn; the embedding (tied to
the output layer in SmolLM2) and the blocks below stay frozen, so the backward stops at block
n_layers - K. None trains everything.
"""
from __future__ import annotations

import time

from ..grading.rewards import is_correct
from ..generate.tools import InlineCalculatorTool
from ..train import loop
from ..train.grpo import GRPOConfig, GRPOTask
from ..train.metrics import plot_rl_metrics
from .chat_eval import chat_prompt, chat_stop_ids, completion_answer, run_chat_method

__all__ = ["ChatCorrectnessReward", "ChatGRPOTask", "freeze_below", "chat_accuracy", "train_chat_grpo"]


class ChatCorrectnessReward:
    """TRL-style reward: 1.0 when a chat completion's answer is correct against the `answer` column."""
    __name__ = "correctness"

    def __call__(self, prompts, completions, completion_ids, answer=None, **columns):
        if answer is None:
            raise ValueError("chat correctness reward: the dataset has no 'answer' column")
        return [float(is_correct(a, ref)) if (a := completion_answer(text)) is not None else 0.0
                for text, ref in zip(completions, answer)]


def freeze_below(model, train_layers: int | None) -> int:
    """Freeze all but the last `train_layers` blocks and the final norm (None: freeze nothing);
    returns the number of trainable parameters."""
    n_layers = len(model.blocks)
    if train_layers is not None:
        if not 1 <= train_layers <= n_layers:
            raise ValueError(f"train_layers must be in 1..{n_layers} (the model's blocks), got {train_layers}")
        trainable = {id(p) for block in list(model.blocks)[n_layers - train_layers:] for p in block.parameters()}
        trainable |= {id(p) for p in model.norm.parameters()}
        for p in model.parameters():
            p.requires_grad = id(p) in trainable
    return sum(int(p.data.size) for p in model.parameters() if p.requires_grad)


def chat_accuracy(pretrained, records, max_new_tokens: int, batch: int = 64) -> dict:
    """Greedy accuracy of the chat prompt on `records` (the loop's "accuracy" score)."""
    model = pretrained.model
    was_training = model.training
    model.eval()
    t0 = time.perf_counter()
    try:
        rows = run_chat_method(pretrained, records, range(len(records)), "greedy", max_new_tokens=max_new_tokens,
                               rows_per_call=batch)
    finally:
        model.train(was_training)
    correct = sum(r.correct for r in rows)
    n = len(rows)
    return {"accuracy": correct / n if n else float("nan"), "correct": correct, "n": n,
            "generated_tokens": sum(r.tokens for r in rows), "seconds": time.perf_counter() - t0}


class ChatGRPOTask(GRPOTask):
    """GRPO of `pretrained` (its model, tokenizer and chat template) on `train_records`, evaluated by
    greedy chat accuracy on `eval_records`. The rewards are ChatCorrectnessReward unless given."""

    def __init__(self, pretrained, train_records, eval_records, cfg: GRPOConfig, reward_funcs=None, ref_model=None):
        self.pretrained = pretrained
        super().__init__(pretrained.model, pretrained.tokenizer, train_records, eval_records, cfg, fmt="chat",
                         reward_funcs=reward_funcs, ref_model=ref_model)

    def prompt_ids(self, record) -> list:
        return chat_prompt(self.pretrained, record.question)

    def stop_ids(self) -> tuple:
        return chat_stop_ids(self.tok)

    def default_rewards(self) -> list:
        if tuple(self.cfg.rewards) != ("correctness",):
            raise ValueError(f"chat GRPO: the built-in rewards for a chat model are ('correctness',), got "
                             f"{self.cfg.rewards} (pass reward_funcs for others)")
        return [ChatCorrectnessReward()]

    def make_tool(self):
        return InlineCalculatorTool(self.tok)

    def evaluate(self, step: int) -> dict:
        return chat_accuracy(self.pretrained, self.eval_records, self.cfg.max_completion_length, self.cfg.eval_batch)


def train_chat_grpo(pretrained, train_records, eval_records, cfg: GRPOConfig, reward_funcs=None,
                    ref_model=None) -> dict:
    """GRPO-train `pretrained.model` in place; returns the loop's result dict."""
    import dataclasses
    task = ChatGRPOTask(pretrained, train_records, eval_records, cfg, reward_funcs, ref_model)
    result = loop.run(pretrained.model, task, dataclasses.replace(cfg, plot_path=None))
    if cfg.log_path and cfg.plot_path:
        plot_rl_metrics(cfg.log_path, cfg.plot_path)
    return result
