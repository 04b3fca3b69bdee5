"""Reasoning with a pretrained chat model (models.pretrained.Pretrained): word problems asked in the
model's own chat template, answered greedily, by self-consistency, or with the calculator tool, and
graded by the package's one definition of a correct answer (grading.rewards.is_correct).

Methods (`run_chat_method`):
  * ``greedy``   the zero-shot chain-of-thought prompt (COT_INSTRUCTION after the question), argmax decoding.
  * ``sc@N``     the same prompt, N paths sampled at `temperature`, majority vote over their answers
                 (reasoning.self_consistency.vote: ties go to the higher mean log-prob).
  * ``tool``     the same prompt and argmax decoding with generate.tools.InlineCalculatorTool: when the
                 model writes arithmetic followed by ``=`` (``3 * $60 =``), the exact result is forced.
                 Small chat models write prose arithmetic, not GSM8K's ``<<48/2=24>>`` annotations
                 (SmolLM2-135M, shown a worked annotated example, wrote ``<<2>>2``), so the
                 annotation tool would never fire on them.
The answer of a completion is the package's extractor with no answer marker (grading.answers.extract_answer:
last \\boxed{}, else ``#### n``, else the last number), which is how GSM8K is scored for small chat models.

Results are one row per problem (`ChatRow`), written as JSON lines by the caller so a long run can resume.
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from ..generate import SamplingConfig, generate
from ..generate.tools import InlineCalculatorTool
from ..grading.answers import extract_answer
from ..grading.rewards import canonical_answer, is_correct
from .self_consistency import SEED_STRIDE, Path, vote

__all__ = ["COT_INSTRUCTION", "ChatRow", "parse_chat_method", "chat_prompt", "chat_stop_ids",
           "completion_answer", "run_chat_method", "summarize"]

COT_INSTRUCTION = "Solve it step by step, then give the final answer as: The answer is N."

_METHOD = re.compile(r"^(greedy|tool|sc@([1-9][0-9]*))$")


@dataclass
class ChatRow:
    index: int                   # the problem's position in the data file
    reference: str
    method: str
    completions: list            # the decoded text of each path
    answers: list                # canonical answer of each path (None: no answer found)
    chosen: str | None           # the method's answer (the vote's for sc@N)
    correct: bool
    tokens: int                  # tokens generated over all paths
    finished: int                # paths that ended with a stop token (not the length limit)
    tool_calls: int = 0          # results the calculator forced
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


def parse_chat_method(text: str) -> tuple[str, int]:
    """'greedy' / 'tool' / 'sc@N' -> (kind, paths)."""
    m = _METHOD.match(text.strip())
    if m is None:
        raise ValueError(f"unknown method {text!r}: expected greedy, tool or sc@N (N >= 1)")
    return ("sc", int(m.group(2))) if m.group(2) else (m.group(1), 1)


def chat_prompt(pretrained, question: str, system: str | None = None) -> list:
    """Token ids of the question and COT_INSTRUCTION in the model's chat template, with the generation prompt."""
    content = question + "\n" + COT_INSTRUCTION
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": content}]
    return pretrained.tokenizer.encode(pretrained.chat.render(messages, add_generation_prompt=True),
                                       allow_special=True)


def chat_stop_ids(tok) -> tuple:
    """The end-of-turn and end-of-text ids the tokenizer knows."""
    ids = [tok.special_ids.get("<|im_end|>"), tok.eot_id]
    return tuple(dict.fromkeys(i for i in ids if i is not None))


def completion_answer(text: str) -> str | None:
    """The canonical answer a chat completion gives (None if it gives none)."""
    return canonical_answer(extract_answer(text, answer_marker=None, end_marker=None))


def _text(tok, ids) -> str:
    return tok.decode([t for t in ids if not tok.is_special(t)])


def run_chat_method(pretrained, records: Sequence, indices: Sequence[int], method: str, max_new_tokens: int = 320,
                    temperature: float = 0.7, seed: int = 0, rows_per_call: int = 64) -> list:
    """Answer records[i] for i in indices by `method`; one ChatRow per problem, in order."""
    kind, n = parse_chat_method(method)
    tok, model = pretrained.tokenizer, pretrained.model
    greedy = kind != "sc"
    cfg = SamplingConfig(temperature=0.0 if greedy else float(temperature), max_new_tokens=int(max_new_tokens),
                         stop_ids=chat_stop_ids(tok), seed=int(seed), pad_id=0)
    per_call = max(1, int(rows_per_call) // n)           # problems per generate call (n paths each)
    out = []
    for start in range(0, len(indices), per_call):
        chunk = list(indices[start:start + per_call])
        prompts, seeds = [], []
        for i in chunk:
            p = chat_prompt(pretrained, records[i].question)
            prompts += [p] * n
            seeds += [i * SEED_STRIDE + j for j in range(n)]
        tool = InlineCalculatorTool(tok) if kind == "tool" else None
        res = generate(model, prompts, cfg, row_seeds=seeds, tool=tool)
        for k, i in enumerate(chunk):
            rows = range(k * n, (k + 1) * n)
            texts = [_text(tok, res.tokens[r]) for r in rows]
            answers = [completion_answer(t) for t in texts]
            paths = [Path(list(res.tokens[r]), a, float(np.sum(res.logprobs[r])), len(res.tokens[r]),
                          res.finish_reasons[r]) for r, a in zip(rows, answers)]
            chosen = vote(paths).answer if kind == "sc" else answers[0]
            ref = records[i].answer
            forced = sum(int(res.forced[r].sum()) for r in rows) if tool else 0
            out.append(ChatRow(int(i), ref, method, texts, answers, chosen,
                               chosen is not None and is_correct(chosen, ref),
                               sum(len(res.tokens[r]) for r in rows),
                               sum(res.finish_reasons[r] == "stop" for r in rows),
                               tool_calls=_count_calls(res, rows) if tool else 0,
                               extra={"forced_tokens": forced} if tool else {}))
    return out


def _count_calls(res, rows) -> int:
    """Forced runs (one per calculator result) over the given rows."""
    calls = 0
    for r in rows:
        f = np.asarray(res.forced[r], dtype=bool)
        calls += int(np.sum(f[1:] & ~f[:-1]) + (f[0] if f.size else 0))
    return calls


def summarize(rows: Sequence) -> dict:
    """Accuracy with its 95% Wilson interval, tokens per problem, share of paths that ended by themselves."""
    from ..train.stats import wilson_interval
    n = len(rows)
    c = sum(bool(r["correct"] if isinstance(r, dict) else r.correct) for r in rows)
    get = (lambda r, k: r[k]) if rows and isinstance(rows[0], dict) else getattr
    paths = sum(len(get(r, "completions")) for r in rows)
    lo, hi = wilson_interval(c, n)
    return {"n": n, "correct": c, "accuracy": c / n if n else float("nan"), "ci95": [lo, hi],
            "tokens_per_problem": sum(get(r, "tokens") for r in rows) / n if n else 0.0,
            "finished_share": sum(get(r, "finished") for r in rows) / paths if paths else 0.0,
            "answered_share": sum(get(r, "chosen") is not None for r in rows) / n if n else 0.0,
            "tool_calls": sum(get(r, "tool_calls") for r in rows)}
