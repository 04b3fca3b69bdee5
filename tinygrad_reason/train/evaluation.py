"""Held-out accuracy: greedy decoding with the KV cache, each answer graded by grading.rewards."""
from __future__ import annotations

import time

from ..data.formats import parse_completion, prompt_ids
from ..generate import SamplingConfig, generate
from ..grading.rewards import is_correct
from ..tensor import no_grad


def greedy_answers(model, tok, records, fmt: str, max_new_tokens: int = 96, batch_size: int = 64,
                   tool=None, seed: int = 0) -> tuple[list, int]:
    """(the parsed answer of each record's greedy completion, tokens generated), decoding
    `batch_size` prompts per batch; `tool` forces tokens (generate.tools.CalculatorTool)."""
    cfg = SamplingConfig(temperature=0.0, max_new_tokens=max_new_tokens, stop_ids=(tok.eot_id,), seed=seed)
    found, generated = [], 0
    with no_grad():
        for i in range(0, len(records), batch_size):
            chunk = records[i:i + batch_size]
            result = generate(model, [prompt_ids(r, tok, fmt) for r in chunk], cfg, tool=tool)
            generated += sum(len(t) for t in result.tokens)
            found += [parse_completion(t, tok, fmt) for t in result.tokens]
    return found, generated


def evaluate(model, tok, records, fmt: str, batch_size: int = 64, max_new_tokens: int = 96) -> dict:
    """{"accuracy", "correct", "n", "generated_tokens", "seconds"} of greedy decoding on `records`;
    the model is in eval mode inside and comes back in the mode it was in."""
    was_training = model.training
    model.eval()
    t0 = time.perf_counter()
    try:
        found, generated = greedy_answers(model, tok, records, fmt, max_new_tokens, batch_size)
    finally:
        model.train(was_training)
    correct = sum(is_correct(a, r.answer) for a, r in zip(found, records))
    n = len(records)
    return {"accuracy": correct / n if n else float("nan"), "correct": correct, "n": n,
            "generated_tokens": generated, "seconds": time.perf_counter() - t0}
