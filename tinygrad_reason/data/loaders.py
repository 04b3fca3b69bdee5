"""Loaders for GSM8K and MATH (MATH-500) JSON Lines files into :class:`Record` lists.

Both loaders take a path (the package never knows where data lives), read the file as
bytes line by line, and never stop halfway: a malformed line (not UTF-8, invalid JSON,
not an object, a missing field, a field of the wrong type, a GSM8K answer without
``####``, a MATH record with no answer at all) is skipped and counted, and the first
problem is kept as ``(line_number, reason)``. Blank lines are ignored (not counted as
skipped). A missing file raises ``FileNotFoundError`` naming the path.
"""

from __future__ import annotations

import bisect
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Union

from ..grading.answers import gsm8k_answer, last_boxed
from .records import Record

__all__ = ["LoadResult", "load_gsm8k", "load_math", "parse_gsm8k_answer",
           "split_math_solution", "load_jsonl_records"]

PathLike = Union[str, "os.PathLike[str]"]
_MAX_ERRORS_KEPT = 100


class _Bad(Exception):
    """A malformed record; the message is the reason."""


@dataclass
class LoadResult:
    path: str
    records: list[Record] = field(default_factory=list)
    n_skipped: int = 0
    first_error: Optional[tuple[int, str]] = None   # (1-based line number, reason)
    errors: list[tuple[int, str]] = field(default_factory=list)   # the first 100
    n_blank: int = 0

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.records)

    def summary(self) -> str:
        s = f"{self.path}: {len(self.records)} records loaded, {self.n_skipped} skipped"
        if self.n_blank:
            s += f", {self.n_blank} blank lines ignored"
        if self.first_error is not None:
            s += f"; first error at line {self.first_error[0]}: {self.first_error[1]}"
        return s


def _lines(path: PathLike) -> Iterator[tuple[int, bytes]]:
    p = os.fspath(path)
    if not os.path.exists(p):
        raise FileNotFoundError(f"data file not found: {p}")
    if os.path.isdir(p):
        raise IsADirectoryError(f"expected a JSON Lines file, got a directory: {p}")
    with open(p, "rb") as f:
        for i, raw in enumerate(f, start=1):
            yield i, raw


def load_jsonl_records(path: PathLike, convert: Callable[[dict, int], Record]) -> LoadResult:
    """Read ``path`` line by line; ``convert(obj, line_no)`` returns a Record or raises ``_Bad``."""
    result = LoadResult(path=os.fspath(path))
    for lineno, raw in _lines(path):
        reason: Optional[str] = None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            reason = f"not valid UTF-8 ({e.reason} at byte {e.start})"
        else:
            if lineno == 1:
                text = text.lstrip("\ufeff")
            if not text.strip():
                result.n_blank += 1
                continue
            try:
                obj = json.loads(text)
            except (ValueError, RecursionError) as e:
                reason = f"invalid JSON ({str(e)[:80]})"
            else:
                if not isinstance(obj, dict):
                    reason = f"expected a JSON object, got {type(obj).__name__}"
                else:
                    try:
                        rec = convert(obj, lineno)
                        rec.meta.setdefault("source", os.path.basename(os.fspath(path)))
                        rec.meta.setdefault("line", lineno)
                        rec.meta.setdefault("index", len(result.records))
                        result.records.append(rec)
                    except _Bad as e:
                        reason = str(e)
        if reason is not None:
            result.n_skipped += 1
            if result.first_error is None:
                result.first_error = (lineno, reason)
            if len(result.errors) < _MAX_ERRORS_KEPT:
                result.errors.append((lineno, reason))
    return result


def _field(obj: dict, name: str) -> str:
    if name not in obj:
        raise _Bad(f"missing field {name!r}")
    v = obj[name]
    if not isinstance(v, str):
        raise _Bad(f"field {name!r} should be a string, got {type(v).__name__}")
    if not v.strip():
        raise _Bad(f"field {name!r} is empty")
    return v


# ----------------------------------------------------------------------------------- GSM8K

def parse_gsm8k_answer(answer: str) -> tuple[list[str], str]:
    """``(steps, gold)`` from a GSM8K answer: the lines before the last ``####``, and the answer
    after it as the grader reads a model's ``####`` (grading.answers.gsm8k_answer: that line,
    stripped, ``,`` thousands separators removed)."""
    if "####" not in answer:
        raise ValueError("no '####' final-answer marker")
    body = answer.rsplit("####", 1)[0]
    gold = gsm8k_answer(answer)
    if not gold:
        raise ValueError("empty final answer after '####'")
    steps = [ln.strip() for ln in body.splitlines() if ln.strip()]
    return steps, gold


def _gsm8k_record(obj: dict, lineno: int) -> Record:
    question = _field(obj, "question")
    answer = _field(obj, "answer")
    try:
        steps, gold = parse_gsm8k_answer(answer)
    except ValueError as e:
        raise _Bad(f"field 'answer': {e}") from None
    return Record(question=question.strip(), steps=steps, answer=gold,
                  meta={"task": "gsm8k", "n_steps": len(steps)})


def load_gsm8k(path: PathLike) -> LoadResult:
    """Load a GSM8K ``.jsonl`` file (fields ``question``, ``answer``)."""
    return load_jsonl_records(path, _gsm8k_record)


# ------------------------------------------------------------------------------------ MATH

_ENV_BEGIN = re.compile(r"\\begin\{([^{}]*)\}")


def _protected_spans(s: str) -> list[tuple[int, int]]:
    """Spans that must not be split: $..$, $$..$$, \\[..\\], \\(..\\), \\begin..\\end, [asy]..[/asy]."""
    spans: list[tuple[int, int]] = []
    i, n = 0, len(s)

    def close(start: int, closer: str, skip: int) -> int:
        j = s.find(closer, start + skip)
        while j > 0 and closer == "$" and s[j - 1] == "\\":
            j = s.find(closer, j + 1)
        return n if j < 0 else j + len(closer)

    while i < n:
        c = s[i]
        if c == "\\" and i + 1 < n:
            nxt = s[i + 1]
            if nxt == "[":
                end = close(i, "\\]", 2)
            elif nxt == "(":
                end = close(i, "\\)", 2)
            elif s.startswith("\\begin{", i):
                m = _ENV_BEGIN.match(s, i)
                if m is None:
                    i += 2
                    continue
                name = m.group(1)
                depth, j = 1, m.end()
                end = n
                pat = re.compile(r"\\(begin|end)\{" + re.escape(name) + r"\}")
                for mm in pat.finditer(s, j):
                    depth += 1 if mm.group(1) == "begin" else -1
                    if depth == 0:
                        end = mm.end()
                        break
            else:
                i += 2          # an escaped character such as \$ or a command
                continue
            spans.append((i, end))
            i = end
        elif c == "$":
            end = close(i, "$$", 2) if s.startswith("$$", i) else close(i, "$", 1)
            spans.append((i, end))
            i = end
        elif s.startswith("[asy]", i):
            end = close(i, "[/asy]", 5)
            spans.append((i, end))
            i = end
        else:
            i += 1
    return spans


_PARA = re.compile(r"\n[ \t]*\n\s*")
_SENT = re.compile(r"(?:(?<=[.!?])|(?<=[.!?]\$))\s+(?=[A-Z$\\(])")


def split_math_solution(solution: str) -> list[str]:
    """Split a MATH solution into steps: paragraphs, then sentences, never inside math
    (``$..$``, ``\\[..\\]``, environments) or ``[asy]`` blocks. Joining the steps loses
    nothing but whitespace."""
    spans = _protected_spans(solution)
    starts = [a for a, _ in spans]

    def protected(pos: int) -> bool:
        k = bisect.bisect_right(starts, pos) - 1
        return k >= 0 and spans[k][0] <= pos < spans[k][1]

    cuts: list[tuple[int, int]] = []
    for rx in (_PARA, _SENT):
        for m in rx.finditer(solution):
            if not protected(m.start()):
                cuts.append((m.start(), m.end()))
    cuts.sort()
    steps, pos = [], 0
    for a, b in cuts:
        if a < pos:
            continue
        piece = solution[pos:a].strip()
        if piece:
            steps.append(piece)
        pos = b
    tail = solution[pos:].strip()
    if tail:
        steps.append(tail)
    return steps


def _math_record(obj: dict, lineno: int) -> Record:
    problem = _field(obj, "problem")
    solution = _field(obj, "solution")
    if "answer" in obj and obj["answer"] is not None:
        answer = obj["answer"]
        if not isinstance(answer, (str, int)) or isinstance(answer, bool):
            raise _Bad(f"field 'answer' should be a string, got {type(answer).__name__}")
        answer = str(answer).strip()
        answer_source = "answer"
    else:
        answer = None
    if not answer:
        answer = last_boxed(solution)
        answer_source = "boxed"
        if answer is None or not answer.strip():
            raise _Bad("no 'answer' field and no \\boxed{...} in the solution")
        answer = answer.strip()
    steps = split_math_solution(solution)
    meta: dict[str, Any] = {"task": "math", "n_steps": len(steps), "answer_source": answer_source}
    for k in ("subject", "level", "unique_id", "type"):
        if k in obj and isinstance(obj[k], (str, int, float)) and not isinstance(obj[k], bool):
            meta[k] = obj[k]
    return Record(question=problem.strip(), steps=steps, answer=answer, meta=meta)


def load_math(path: PathLike) -> LoadResult:
    """Load a MATH / MATH-500 ``.jsonl`` file (fields ``problem``, ``solution``, optional
    ``answer``; without it the last ``\\boxed{}`` of the solution is the answer)."""
    return load_jsonl_records(path, _math_record)
