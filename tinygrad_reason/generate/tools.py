"""A calculator tool for sampling: exact results forced into GSM8K-style calculator annotations.

Our chains of thought write every computation as ``16 - 3 - 4 = <<16-3-4=9>>9``. With the tool,
the model only has to write the opener ``<<expr=``; the tool then evaluates ``expr`` with the safe
evaluator (:func:`data.safe_eval.safe_eval`: exact fractions, no ``eval``) and FORCES the exact
result followed by ``>>`` (e.g. ``12>>``) as that row's next tokens. The visible number after
``>>`` is still the model's own (trained models copy the annotation's result there).

Detection (:meth:`CalculatorTool.__call__`, called by ``sampling.generate(..., tool=...)`` after
every sampled token): only when the last token's text contains ``=``, the row's recent generated
tokens (at most ``lookback``, and only after its last special token, i.e. within the current step)
are decoded to text; the tool fires when that text ENDS with ``<<expr=`` where ``expr`` has no
``<``, ``>`` or ``=`` (an opener with no closing ``>>`` yet). ``expr`` that does not evaluate (bad
syntax, division by zero, numbers beyond the evaluator's limits, empty) forces nothing and the model
goes on sampling. Results are written with :func:`format_number` (``12``, ``2.5``, ``7/2``).

How forced tokens are recorded is documented in ``sampling`` (model log-prob of the forced token,
sample log-prob 0, ``GenerationResult.forced`` True).
"""
from __future__ import annotations

import re
from typing import Sequence

from fractions import Fraction

from ..grading.safe_eval import format_number, safe_eval

__all__ = ["CalculatorTool", "InlineCalculatorTool", "OPEN_ANNOTATION", "INLINE_EXPRESSION"]

#: an annotation opener at the very end of the text: ``<<expr=`` with no ``>>`` after it
OPEN_ANNOTATION = re.compile(r"<<([^<>=]*)=$")


class CalculatorTool:
    """``tool(generated_ids) -> list[int] | None`` for :func:`sampling.generate`.

    Counters (over every row and call since construction): ``fired`` (results forced), ``invalid``
    (openers whose expression did not evaluate)."""

    def __init__(self, tok, lookback: int = 48):
        self.tok = tok
        self.lookback = int(lookback)
        self.fired = 0
        self.invalid = 0
        self._eq_cache: dict[int, bool] = {}

    def _has_eq(self, token_id: int) -> bool:
        hit = self._eq_cache.get(token_id)
        if hit is None:
            hit = self._eq_cache[token_id] = (not self.tok.is_special(token_id)
                                              and b"=" in self.tok.token_bytes(token_id))
        return hit

    def result_text(self, text: str) -> str | None:
        """The text to force after `text` (``"12>>"``), or None."""
        m = OPEN_ANNOTATION.search(text)
        if m is None:
            return None
        value = safe_eval(m.group(1)) if m.group(1).strip() else None
        if value is None:
            self.invalid += 1
            return None
        return format_number(value) + ">>"

    def __call__(self, generated: Sequence[int]) -> list[int] | None:
        if not generated or not self._has_eq(int(generated[-1])):
            return None
        recent = list(generated[-self.lookback:])
        for j in range(len(recent) - 1, -1, -1):        # only the current step: after the last special
            if self.tok.is_special(recent[j]):
                recent = recent[j + 1:]
                break
        out = self.result_text(self.tok.decode(recent))
        if out is None:
            return None
        self.fired += 1
        return self.tok.encode(out)


#: arithmetic right before a trailing "=": numbers (with $ and thousands commas) joined by at least one
#: operator, e.g. "3 * $60 =" or "(12 + 8) / 4 ="
INLINE_EXPRESSION = re.compile(r"(?<![\w.])(-?[$(]*\d[\d,]*(?:\.\d+)?\)*"
                               r"(?:\s*[-+*/x\u00d7\u00f7]\s*[$(]*\d[\d,]*(?:\.\d+)?\)*)+)\s*=\s?$")


def inline_number(value: Fraction) -> str:
    """How a result is written into prose: exact when it terminates, else rounded to 4 decimals."""
    text = format_number(value)
    if "/" not in text:
        return text
    return f"{float(value):.4f}".rstrip("0").rstrip(".")


class InlineCalculatorTool(CalculatorTool):
    """The calculator for a model that writes its arithmetic in prose, as pretrained chat models do
    (``2 * 3 = 6``), not in annotations: when the text of the current line ends with an expression
    of numbers and operators followed by ``=``, the exact result is forced (``" 6"``; no space when
    the text already ends with one). ``x``, ``\u00d7`` and ``\u00f7`` count as operators, ``$`` and
    thousands commas are dropped. An expression that does not evaluate forces nothing."""

    def result_text(self, text: str) -> str | None:
        line = text.rsplit("\n", 1)[-1]
        m = INLINE_EXPRESSION.search(line)
        if m is None:
            return None
        expr = m.group(1).replace("$", "").replace(",", "")
        expr = expr.replace("x", "*").replace("\u00d7", "*").replace("\u00f7", "/")
        value = safe_eval(expr)
        if value is None:
            self.invalid += 1
            return None
        return ("" if text.endswith(" ") else " ") + inline_number(value)
