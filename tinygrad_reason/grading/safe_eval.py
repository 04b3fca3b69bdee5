"""A safe arithmetic evaluator: exact, bounded, and never ``eval``.

Grammar (recursive descent)::

    expr   := term  (('+' | '-') term)*
    term   := unary (('*' | 'x' | 'X' | '×' | '/' | '÷') unary)*
    unary  := ('-' | '+') unary | atom
    atom   := NUMBER | '(' expr ')'
    NUMBER := digits ['.' digits*] | '.' digits

Arithmetic is exact (``fractions.Fraction``). There is no exponentiation, no names,
no attributes, no calls, no implicit multiplication (``2(3)`` is rejected) and no
thousands separators (``1,000`` is rejected: the comma is ambiguous).

Every public function returns ``None`` (or ``False``) for anything invalid or out of
bounds and never raises on bad input. The bounds make the cost of one call linear in
``max_len``: the input length is checked before anything else, numbers have at most
``max_digits`` digits, parentheses/unary signs nest at most ``max_depth`` deep, and
every intermediate result must have a numerator and a denominator below ``max_abs``.

The parser also builds a small tree (:func:`parse`) so that checkers (the countdown
task) can inspect every intermediate value, not only the final one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator, Optional, Union

__all__ = [
    "Num", "BinOp", "Neg", "Node", "Limits", "DEFAULT_LIMITS",
    "tokenize", "parse", "evaluate", "safe_eval", "format_number",
    "parse_number", "Annotation", "find_annotations", "check_annotations",
]

MUL_OPS = ("*", "x", "X", "×", "·")
DIV_OPS = ("/", "÷")


@dataclass(frozen=True)
class Limits:
    max_len: int = 1000          # characters in the expression
    max_digits: int = 30         # digits in one number literal
    max_depth: int = 50          # nesting of parentheses and unary signs
    max_abs: int = 10 ** 40      # bound on |numerator| and denominator of every value


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True)
class Num:
    value: Fraction
    text: str                    # the literal as written ("3", "1.5")

    @property
    def is_integer_literal(self) -> bool:
        return "." not in self.text


@dataclass(frozen=True)
class BinOp:
    op: str                      # one of + - * /  (normalised)
    left: "Node"
    right: "Node"


@dataclass(frozen=True)
class Neg:
    operand: "Node"


Node = Union[Num, BinOp, Neg]

_TOKEN_RE = re.compile(r"[ \t\r\n]*(?:([0-9]+(?:\.[0-9]*)?|\.[0-9]+)|([-+*/()x×X÷·]))")


class _Reject(Exception):
    """Internal: the input is invalid. Never escapes the public functions."""


def tokenize(text: str, limits: Limits = DEFAULT_LIMITS) -> Optional[list[str]]:
    """Split ``text`` into number and operator tokens; ``None`` if any character is foreign."""
    try:
        return _tokenize(text, limits)
    except _Reject:
        return None
    except Exception:  # pragma: no cover - defensive: never raise on bad input
        return None


def _tokenize(text: str, limits: Limits) -> list[str]:
    if not isinstance(text, str) or len(text) > limits.max_len:
        raise _Reject("not a string or too long")
    tokens: list[str] = []
    pos, n = 0, len(text)
    while pos < n:
        m = _TOKEN_RE.match(text, pos)
        if m is None:
            if text[pos:].strip(" \t\r\n") == "":
                break
            raise _Reject(f"unexpected character {text[pos]!r}")
        num, op = m.group(1), m.group(2)
        if num is not None:
            if len(num) - ("." in num) > limits.max_digits:
                raise _Reject("too many digits")
            tokens.append(num)
        else:
            if op in MUL_OPS:
                op = "*"
            elif op in DIV_OPS:
                op = "/"
            tokens.append(op)
        pos = m.end()
    if not tokens:
        raise _Reject("empty")
    return tokens


class _Parser:
    def __init__(self, tokens: list[str], limits: Limits):
        self.toks = tokens
        self.i = 0
        self.limits = limits
        self.depth = 0

    def peek(self) -> Optional[str]:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self) -> str:
        tok = self.peek()
        if tok is None:
            raise _Reject("unexpected end")
        self.i += 1
        return tok

    def enter(self) -> None:
        self.depth += 1
        if self.depth > self.limits.max_depth:
            raise _Reject("nested too deep")

    def expr(self) -> Node:
        node = self.term()
        while self.peek() in ("+", "-"):
            op = self.take()
            node = BinOp(op, node, self.term())
        return node

    def term(self) -> Node:
        node = self.unary()
        while self.peek() in ("*", "/"):
            op = self.take()
            node = BinOp(op, node, self.unary())
        return node

    def unary(self) -> Node:
        tok = self.peek()
        if tok in ("-", "+"):
            self.take()
            self.enter()
            inner = self.unary()
            self.depth -= 1
            return Neg(inner) if tok == "-" else inner
        return self.atom()

    def atom(self) -> Node:
        tok = self.take()
        if tok == "(":
            self.enter()
            node = self.expr()
            if self.take() != ")":
                raise _Reject("expected )")
            self.depth -= 1
            return node
        if tok[0] in "0123456789.":
            return Num(parse_number(tok), tok)
        raise _Reject(f"unexpected token {tok!r}")


def parse_number(text: str) -> Fraction:
    """Exact value of a decimal literal (``"1.25"`` -> ``Fraction(5, 4)``)."""
    if "." in text:
        whole, frac = text.split(".", 1)
        whole = whole or "0"
        if not frac:
            return Fraction(int(whole))
        return Fraction(int(whole + frac), 10 ** len(frac))
    return Fraction(int(text))


def parse(text: str, limits: Limits = DEFAULT_LIMITS) -> Optional[Node]:
    """Parse ``text`` into a tree of :class:`Num`, :class:`BinOp`, :class:`Neg`; ``None`` if invalid."""
    try:
        tokens = _tokenize(text, limits)
        p = _Parser(tokens, limits)
        node = p.expr()
        if p.i != len(tokens):
            return None
        return node
    except _Reject:
        return None
    except Exception:  # pragma: no cover - defensive
        return None


def _check(v: Fraction, limits: Limits) -> Fraction:
    if abs(v.numerator) >= limits.max_abs or v.denominator >= limits.max_abs:
        raise _Reject("magnitude")
    return v


def _eval(node: Node, limits: Limits) -> Fraction:
    # Depth of the tree is bounded by the parser (left-assoc chains are iterated here
    # recursively, so walk them with an explicit stack to avoid deep recursion).
    if isinstance(node, Num):
        return _check(node.value, limits)
    if isinstance(node, Neg):
        return -_eval(node.operand, limits)
    # Left spine iteratively: ((a+b)+c)+d ... can be as long as the token list.
    spine = []
    cur: Node = node
    while isinstance(cur, BinOp):
        spine.append(cur)
        cur = cur.left
    acc = _eval(cur, limits)
    for b in reversed(spine):
        acc = _check(apply_binop(b.op, acc, _eval(b.right, limits)), limits)
    return acc


def apply_binop(op: str, a: Fraction, b: Fraction) -> Fraction:
    """a op b exactly for op in + - * /; raises (this module's rejection) on division by zero."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        if b == 0:
            raise _Reject("division by zero")
        return a / b
    raise _Reject("bad operator")  # pragma: no cover


def evaluate(node: Node, limits: Limits = DEFAULT_LIMITS) -> Optional[Fraction]:
    """Exact value of a parsed tree; ``None`` on division by zero or a bound exceeded."""
    try:
        return _eval(node, limits)
    except _Reject:
        return None
    except Exception:  # pragma: no cover - defensive
        return None


def safe_eval(text: str, limits: Limits = DEFAULT_LIMITS) -> Optional[Fraction]:
    """Evaluate an arithmetic expression exactly; ``None`` for anything invalid."""
    node = parse(text, limits)
    if node is None:
        return None
    return evaluate(node, limits)


def format_number(value: Fraction) -> str:
    """``9`` for integers, a terminating decimal (``2.5``) when exact, else ``a/b``."""
    if value.denominator == 1:
        return str(value.numerator)
    d = value.denominator
    k2 = k5 = 0
    while d % 2 == 0:
        d //= 2
        k2 += 1
    while d % 5 == 0:
        d //= 5
        k5 += 1
    if d != 1:
        return f"{value.numerator}/{value.denominator}"
    places = max(k2, k5)
    scaled = abs(value) * 10 ** places
    s = str(scaled.numerator).rjust(places + 1, "0")
    s = s[:-places] + "." + s[-places:]
    return ("-" if value < 0 else "") + s


# ----------------------------------------------------------------------------------------
# GSM8K-style calculator annotations: "... 16 - 3 - 4 = <<16-3-4=9>>9 ..."

_ANNOT_RE = re.compile(r"<<([^<>]*)>>")


@dataclass(frozen=True)
class Annotation:
    expr: str
    claimed: str
    value: Optional[Fraction]     # safe_eval(expr)
    claimed_value: Optional[Fraction]

    @property
    def ok(self) -> bool:
        return self.value is not None and self.claimed_value is not None and self.value == self.claimed_value


def find_annotations(text: str, limits: Limits = DEFAULT_LIMITS) -> Iterator[Annotation]:
    """Every ``<<expr=result>>`` in ``text``, with both sides evaluated safely."""
    for m in _ANNOT_RE.finditer(text):
        body = m.group(1)
        if "=" not in body:
            yield Annotation(body, "", None, None)
            continue
        expr, claimed = body.rsplit("=", 1)
        yield Annotation(expr, claimed, safe_eval(expr, limits), safe_eval(claimed, limits))


def check_annotations(text: str, limits: Limits = DEFAULT_LIMITS) -> bool:
    """True when ``text`` has at least one annotation and all of them are correct."""
    anns = list(find_annotations(text, limits))
    return bool(anns) and all(a.ok for a in anns)
