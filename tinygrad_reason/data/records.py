"""The one record type every task and loader produces."""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Record", "normalize_question", "derive_seed", "records_to_jsonl", "records_digest"]


@dataclass
class Record:
    """One problem: the question, the reasoning steps (one string each), the final answer.

    ``meta`` holds provenance and task facts: ``task`` (always), ``n_steps`` (always),
    plus e.g. ``source``/``line`` for loaded data or the generator's knobs.
    """

    question: str
    steps: list[str]
    answer: str
    meta: dict[str, Any] = field(default_factory=dict)

    def solution_text(self, sep: str = "\n") -> str:
        """The steps joined by ``sep`` (one step per line by default)."""
        return sep.join(self.steps)

    @property
    def task(self) -> str:
        return str(self.meta.get("task", ""))

    def to_dict(self) -> dict[str, Any]:
        return {"question": self.question, "steps": list(self.steps), "answer": self.answer,
                "meta": dict(self.meta)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Record":
        return cls(question=d["question"], steps=list(d["steps"]), answer=d["answer"],
                   meta=dict(d.get("meta", {})))

    def to_json(self) -> str:
        """Canonical JSON (sorted keys): equal records give byte-identical text."""
        return json.dumps(self.to_dict(), sort_keys=True, ensure_ascii=False)


_WS = re.compile(r"\s+")


def normalize_question(text: str) -> str:
    """Key for de-duplication: case-folded, whitespace collapsed, trailing punctuation ignored."""
    return _WS.sub(" ", text.casefold()).strip().rstrip(".?! ")


def derive_seed(*parts: Any) -> int:
    """A 64-bit seed from any parts, stable across processes (unlike ``hash``)."""
    h = hashlib.sha256(repr(parts).encode("utf-8")).digest()
    return int.from_bytes(h[:8], "little")


def make_rng(seed: Any) -> random.Random:
    """A private RNG; ints are used directly, anything else goes through :func:`derive_seed`."""
    return random.Random(seed if isinstance(seed, int) else derive_seed(seed))


def records_to_jsonl(records: list[Record]) -> str:
    return "".join(r.to_json() + "\n" for r in records)


def records_digest(records: list[Record]) -> str:
    """sha256 of the canonical JSONL form (for determinism checks)."""
    return hashlib.sha256(records_to_jsonl(records).encode("utf-8")).hexdigest()
