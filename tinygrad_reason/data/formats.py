"""The two training formats of a problem, as token ids with a loss mask, and padded batches.

    direct:            <|question|> question <|answer|> answer <|endoftext|>
    chain of thought:  <|question|> question <|think|> step <|step|> step ... <|answer|> answer <|endoftext|>

The prompt is everything up to and including <|answer|> (direct) or <|think|> (chain of
thought); the completion after it is what the model learns (the loss is masked on the prompt and
on padding). <|step|> ends each reasoning step, so a verifier head can later score every step at
that token.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FORMATS = ("direct", "cot")
IGNORE = -100    # target id that cross_entropy ignores


@dataclass
class Example:
    ids: list            # prompt + completion token ids
    prompt_len: int      # the first prompt_len ids are the prompt (no loss)
    answer: str          # the reference answer, for exact-match evaluation


def _check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}: expected one of {FORMATS}")


def prompt_ids(record, tok, fmt: str) -> list:
    """The prompt the model continues at evaluation time."""
    _check_format(fmt)
    ids = [tok.question_id] + tok.encode(" " + record.question.strip() + " ")
    return ids + [tok.answer_id if fmt == "direct" else tok.think_id]


def completion_ids(record, tok, fmt: str) -> list:
    _check_format(fmt)
    ids = []
    if fmt == "cot":
        for step in record.steps:
            ids += tok.encode(" " + step.strip() + " ") + [tok.step_id]
        ids.append(tok.answer_id)
    return ids + tok.encode(" " + str(record.answer).strip()) + [tok.eot_id]


def encode_example(record, tok, fmt: str) -> Example:
    prompt = prompt_ids(record, tok, fmt)
    return Example(prompt + completion_ids(record, tok, fmt), len(prompt), str(record.answer).strip())


def make_batch(examples, pad_id: int, max_len: int | None = None):
    """Right-padded next-token batch: inputs (B, T), targets (B, T) with IGNORE on the prompt and
    padding, pad_mask (B, T) True on real tokens. Sequences longer than max_len + 1 are an error."""
    longest = max(len(e.ids) for e in examples)
    if max_len is not None and longest - 1 > max_len:
        raise ValueError(f"make_batch: an example has {longest} tokens, more than the context {max_len} + 1")
    t = longest - 1
    inputs = np.full((len(examples), t), pad_id, dtype=np.int64)
    targets = np.full((len(examples), t), IGNORE, dtype=np.int64)
    mask = np.zeros((len(examples), t), dtype=bool)
    for b, e in enumerate(examples):
        n = len(e.ids) - 1
        inputs[b, :n] = e.ids[:-1]
        mask[b, :n] = True
        # position i predicts ids[i + 1]; only completion tokens (index >= prompt_len) carry loss
        targets[b, e.prompt_len - 1:n] = e.ids[e.prompt_len:]
    return inputs, targets, mask


def parse_completion(ids, tok, fmt: str) -> str | None:
    """The answer text in a generated completion: after the last <|answer|> (chain of thought) or
    from the start (direct), up to <|endoftext|>. None if a chain of thought never reached <|answer|>."""
    _check_format(fmt)
    ids = list(ids)
    if tok.eot_id in ids:
        ids = ids[:ids.index(tok.eot_id)]
    if fmt == "cot":
        if tok.answer_id not in ids:
            return None
        ids = ids[len(ids) - ids[::-1].index(tok.answer_id):]
    specials = set(tok.special_ids.values())
    return tok.decode([i for i in ids if i not in specials]).strip()
