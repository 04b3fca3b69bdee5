"""A whitelist tokenizer + recursive-descent parser for (LaTeX-ish) math answers.

Model output is never handed to ``eval``/``exec``/``sympify``/``parse_expr``.  Text is tokenized
against a fixed whitelist (numbers, single-letter variables, greek letters, a few commands and
operators) and parsed into a small immutable AST (:class:`Node`).  Every size is capped *while
parsing*, before any arithmetic happens:

* input length (``MAX_LEN`` characters), digits per literal (``MAX_DIGITS``),
* nesting depth (``MAX_DEPTH``) and node count (``MAX_NODES``),
* constant exponents (``|e| <= MAX_EXPONENT``; towers such as ``9^9^9^9`` or ``2^{2^{2^{100}}}``
  are rejected because an inner exponent is already too big),
* the bit size of any exact rational constant (``MAX_BITS``),
* factorial arguments (integers ``0..MAX_FACTORIAL``) and root indices (``2..MAX_ROOT``).

Anything outside the whitelist makes the parse fail (``None``).  Nodes carry their exact value
(``fractions.Fraction``) when they are rational constants, so most numeric answers are compared
without sympy at all.  :func:`to_sympy` builds sympy objects directly (``Integer``, ``Rational``,
``Symbol``, ``Add``/``Mul``/``Pow`` with ``evaluate=False`` ...).

Structured answers (tuples, intervals, sets, unions, matrices, equations) are parsed by
:func:`parse_answer` into plain tuples, see its docstring.
"""
from __future__ import annotations

import cmath
import math
import re
from fractions import Fraction

MAX_LEN = 2000          # characters of one answer string
MAX_DIGITS = 50         # digits in one numeric literal
MAX_DEPTH = 50          # parser nesting depth
MAX_NODES = 1000        # AST nodes per expression
MAX_EXPONENT = 1000     # |constant exponent|
MAX_BITS = 200_000      # bit size of numerator/denominator of any exact constant
MAX_FACTORIAL = 100     # n! only for integer 0 <= n <= 100
MAX_ROOT = 100          # \sqrt[n]{} only for 2 <= n <= 100
MAX_PM = 3              # at most 3 \pm signs (8 expansions)
MAX_ITEMS = 32          # elements of a tuple / set / matrix
MAX_STRUCT_DEPTH = 8    # tuples inside tuples ...


class ParseError(ValueError):
    """Raised internally; the public functions turn it into ``None``."""


FUNCS = {"sin", "cos", "tan", "cot", "sec", "csc", "arcsin", "arccos", "arctan",
         "sinh", "cosh", "tanh", "ln", "log", "exp"}
GREEK = {"alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta",
         "vartheta", "iota", "kappa", "lambda", "mu", "nu", "xi", "rho", "sigma", "tau",
         "upsilon", "phi", "varphi", "chi", "psi", "omega", "Gamma", "Delta", "Theta", "Lambda",
         "Xi", "Sigma", "Phi", "Psi", "Omega"}
_CMD_OP = {"cdot": "*", "times": "*", "ast": "*", "div": "/", "pm": "pm", "mp": "mp"}
_CMD_SKIP = {"left", "right", "big", "Big", "bigg", "Bigg", "bigl", "bigr", "Bigl", "Bigr",
             "displaystyle", "textstyle", "quad", "qquad"}
_FRAC = {"frac", "dfrac", "tfrac", "cfrac"}


# --------------------------------------------------------------------------------------------
# tokens

_TOKEN_RE = re.compile(
    r"(?P<ws>\s+)"
    r"|(?P<num>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"
    r"|(?P<cmd>\\[a-zA-Z]+)"
    r"|(?P<esc>\\[{}])"
    r"|(?P<space>\\[,;:! ])"
    r"|(?P<pow>\*\*)"
    r"|(?P<var>[a-zA-Z])"
    r"|(?P<op>[-+*/^!()\[\]{}=,])"
)


def tokenize(s: str) -> list[tuple[str, str]]:
    """Whitelist tokenizer.  Returns ``[(kind, text), ...]``; raises ParseError on anything else.

    kinds: ``num``, ``var``, ``sym`` (greek), ``const`` (pi/oo), ``func``, ``frac``, ``sqrt``,
    ``op`` (one of ``+ - * / ^ ! ( ) [ ] { } = , pm mp``), ``set{`` / ``set}``.
    """
    if len(s) > MAX_LEN:
        raise ParseError("too long")
    out: list[tuple[str, str]] = []
    pos, n, letter_run, last_end = 0, len(s), 0, -1
    while pos < n:
        m = _TOKEN_RE.match(s, pos)
        if m is None:
            raise ParseError(f"bad char {s[pos]!r}")
        kind, text = m.lastgroup, m.group()
        start, pos = pos, m.end()
        if kind == "var":
            letter_run = letter_run + 1 if last_end == start else 1
            last_end = pos
            if letter_run >= 3:           # words ("apples", "Evelyn") are text, not products
                raise ParseError("word")
            out.append(("var", text))
            continue
        letter_run, last_end = 0, -1
        if kind in ("ws", "space"):
            continue
        if kind == "num":
            if sum(c.isdigit() for c in text) > MAX_DIGITS:
                raise ParseError("literal too long")
            out.append(("num", text))
        elif kind == "pow":
            out.append(("op", "^"))
        elif kind == "op":
            out.append(("op", text))
        elif kind == "esc":
            out.append(("set" + text[1], text))
        else:  # cmd
            name = text[1:]
            if name in _CMD_SKIP:
                continue
            if name in _CMD_OP:
                out.append(("op", _CMD_OP[name]))
            elif name in _FRAC:
                out.append(("frac", "frac"))
            elif name == "sqrt":
                out.append(("sqrt", "sqrt"))
            elif name == "pi":
                out.append(("const", "pi"))
            elif name == "infty":
                out.append(("const", "oo"))
            elif name in GREEK:
                out.append(("sym", name))
            elif name in FUNCS:
                out.append(("func", name))
            else:
                raise ParseError(f"command {text}")
    return out


# --------------------------------------------------------------------------------------------
# AST

class Node:
    """Immutable AST node.

    ``op``: num sym pi E I oo add sub mul div pow neg sqrt fact func pm mp.
    ``val``: exact ``Fraction`` if the node is a rational constant of bounded size, else None.
    ``const``: no free symbols.  ``dec``: a decimal literal (``0.5``) occurs inside.
    """
    __slots__ = ("op", "args", "val", "const", "dec", "syms")

    def __init__(self, op, args, val, const, dec, syms):
        self.op, self.args, self.val, self.const, self.dec, self.syms = op, args, val, const, dec, syms

    def __repr__(self):
        return f"Node({self.op}, {self.args!r})"

    def key(self):
        """Hashable structural key (for dedup / tests)."""
        return (self.op,) + tuple(a.key() if isinstance(a, Node) else a for a in self.args)


def _bits_ok(v: Fraction) -> bool:
    return v.numerator.bit_length() <= MAX_BITS and v.denominator.bit_length() <= MAX_BITS


def _iroot(v: int, n: int):
    """Exact integer n-th root of v >= 0, or None."""
    if v < 0:
        return None
    if v < 2:
        return v
    r = int(round(v ** (1.0 / n))) if v.bit_length() < 1000 else _iroot_newton(v, n)
    for c in (r - 1, r, r + 1):
        if c >= 0 and c ** n == v:
            return c
    return None


def _iroot_newton(v: int, n: int) -> int:
    x = 1 << ((v.bit_length() + n - 1) // n)
    while True:
        y = ((n - 1) * x + v // x ** (n - 1)) // n
        if y >= x:
            return x
        x = y


def approx(node: Node) -> complex:
    """Complex-float approximation of a constant node (raises on failure / overflow)."""
    if node.val is not None:
        return complex(float(node.val))
    op, a = node.op, node.args
    if op == "pi":
        return complex(math.pi)
    if op == "E":
        return complex(math.e)
    if op == "I":
        return 1j
    if op in ("add", "pm"):
        return approx(a[0]) + approx(a[1])
    if op in ("sub", "mp"):
        return approx(a[0]) - approx(a[1])
    if op == "mul":
        return approx(a[0]) * approx(a[1])
    if op == "div":
        return approx(a[0]) / approx(a[1])
    if op == "neg":
        return -approx(a[0])
    if op == "pow":
        return approx(a[0]) ** approx(a[1])
    if op == "sqrt":
        return approx(a[0]) ** (1.0 / a[1])
    if op == "func":
        x = approx(a[1])
        if abs(x) > 1e6:
            raise ParseError("huge function argument")
        f = {"sin": cmath.sin, "cos": cmath.cos, "tan": cmath.tan, "ln": cmath.log,
             "log": cmath.log, "exp": cmath.exp, "sinh": cmath.sinh, "cosh": cmath.cosh,
             "tanh": cmath.tanh, "arcsin": cmath.asin, "arccos": cmath.acos,
             "arctan": cmath.atan}.get(a[0])
        if f is not None:
            return f(x)
        if a[0] == "cot":
            return 1 / cmath.tan(x)
        if a[0] == "sec":
            return 1 / cmath.cos(x)
        if a[0] == "csc":
            return 1 / cmath.sin(x)
    raise ParseError(f"cannot approximate {op}")


def mk(op, *args) -> Node:
    """Build a node, computing its exact value with all size caps (raises ParseError)."""
    if op == "num":
        text = args[0]
        v = Fraction(text) if text != "." else None
        if v is None:
            raise ParseError("bad number")
        return Node("num", (v,), v, True, "." in text, frozenset())
    if op == "sym":
        return Node("sym", args, None, False, False, frozenset([args[0]]))
    if op in ("pi", "E", "I", "oo"):
        return Node(op, (), None, True, False, frozenset())
    kids = [a for a in args if isinstance(a, Node)]
    const = all(k.const for k in kids)
    dec = any(k.dec for k in kids)
    syms = frozenset().union(*(k.syms for k in kids)) if kids else frozenset()
    val = None
    if op in ("add", "sub", "mul", "div"):
        x, y = args[0].val, args[1].val
        if x is not None and y is not None:
            if op == "add":
                val = x + y
            elif op == "sub":
                val = x - y
            elif op == "mul":
                val = x * y
            elif y != 0:
                val = x / y
    elif op == "neg":
        if args[0].val is not None:
            val = -args[0].val
    elif op == "pow":
        base, ex = args
        if ex.const:
            if ex.val is not None:
                e = ex.val
            else:
                try:
                    z = approx(ex)
                except (ParseError, ArithmeticError, ValueError):
                    raise ParseError("exponent not bounded") from None
                if not (abs(z) <= MAX_EXPONENT):      # also catches nan
                    raise ParseError("exponent too large")
                e = None
            if e is not None:
                if abs(e) > MAX_EXPONENT:
                    raise ParseError("exponent too large")
                b = base.val
                if b is not None and e.denominator == 1:
                    ei = e.numerator
                    if b == 0 and ei < 0:
                        val = None
                    else:
                        nb = max(b.numerator.bit_length(), b.denominator.bit_length())
                        if nb * abs(ei) > MAX_BITS:
                            raise ParseError("power too large")
                        val = b ** ei
                elif b is not None and b >= 0 and e.denominator <= MAX_ROOT:
                    rn, rd = _iroot(b.numerator, e.denominator), _iroot(b.denominator, e.denominator)
                    if rn is not None and rd is not None:
                        val = Fraction(rn, rd) ** e.numerator
    elif op == "sqrt":
        rad, n = args
        if rad.val is not None and rad.val >= 0:
            rn, rd = _iroot(rad.val.numerator, n), _iroot(rad.val.denominator, n)
            if rn is not None and rd is not None:
                val = Fraction(rn, rd)
    elif op == "fact":
        v = args[0].val
        if v is None or v.denominator != 1 or not (0 <= v <= MAX_FACTORIAL):
            raise ParseError("factorial argument")
        val = Fraction(math.factorial(int(v)))
    elif op in ("func", "pm", "mp"):
        pass
    else:
        raise ParseError(op)
    if val is not None and not _bits_ok(val):
        raise ParseError("constant too large")
    return Node(op, tuple(args), val, const, dec, syms)


# --------------------------------------------------------------------------------------------
# recursive descent parser

_START = {"num", "var", "sym", "const", "func", "frac", "sqrt"}


class _Parser:
    def __init__(self, tokens):
        self.t = tokens
        self.i = 0
        self.depth = 0
        self.nodes = 0

    # helpers
    def peek(self):
        return self.t[self.i] if self.i < len(self.t) else (None, None)

    def take(self):
        tok = self.peek()
        self.i += 1
        return tok

    def expect(self, kind, text=None):
        k, x = self.take()
        if k != kind or (text is not None and x != text):
            raise ParseError(f"expected {text or kind}")
        return x

    def mk(self, op, *args):
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise ParseError("too many nodes")
        return mk(op, *args)

    def enter(self):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ParseError("too deep")

    def leave(self):
        self.depth -= 1

    # grammar
    def parse(self):
        node = self.expr()
        if self.i != len(self.t):
            raise ParseError(f"trailing {self.peek()}")
        return node

    def expr(self):
        self.enter()
        node = self.term()
        while True:
            k, x = self.peek()
            if k == "op" and x in ("+", "-", "pm", "mp"):
                self.take()
                rhs = self.term()
                node = self.mk({"+": "add", "-": "sub", "pm": "pm", "mp": "mp"}[x], node, rhs)
            else:
                break
        self.leave()
        return node

    def term(self):
        node = self.unary()
        while True:
            k, x = self.peek()
            if k == "op" and x in ("*", "/"):
                self.take()
                rhs = self.unary()
                node = self.mk("mul" if x == "*" else "div", node, rhs)
            elif k in _START or (k == "op" and x in ("(", "[", "{")):
                rhs = self.power()                       # implicit multiplication: 2\pi, 3\sqrt2
                node = self.mk("mul", node, rhs)
            else:
                break
        return node

    def unary(self):
        k, x = self.peek()
        if k == "op" and x in ("-", "+", "pm"):
            self.take()
            self.enter()
            inner = self.unary()
            self.leave()
            if x == "-":
                return self.mk("neg", inner)
            if x == "pm":
                return self.mk("pm", self.mk("num", "0"), inner)
            return inner
        return self.power()

    def power(self):
        base = self.postfix()
        k, x = self.peek()
        if k == "op" and x == "^":
            self.take()
            self.enter()
            ex = self.exponent()
            self.leave()
            if base.op == "sym" and base.args[0] == "e":
                base = self.mk("E")
            return self.mk("pow", base, ex)
        return base

    def exponent(self):
        k, x = self.peek()
        if k == "op" and x in ("-", "+"):
            self.take()
            inner = self.exponent()
            return self.mk("neg", inner) if x == "-" else inner
        return self.power()        # right associative: 2^3^2 = 2^(3^2)

    def postfix(self):
        node = self.primary()
        while self.peek() == ("op", "!"):
            self.take()
            node = self.mk("fact", node)
        return node

    def group(self, close):
        self.enter()
        node = self.expr()
        self.expect("op", close)
        self.leave()
        return node

    def arg(self):
        """Argument of \\frac / \\sqrt: a {group} or a single token (``\\frac12``, ``\\sqrt2``)."""
        k, x = self.peek()
        if k == "op" and x == "{":
            self.take()
            return self.group("}")
        if k == "num":
            if x[0] == ".":
                raise ParseError("bad frac arg")
            if len(x) > 1:                      # \frac12 -> {1}{2}: split the literal
                self.t[self.i] = ("num", x[1:])
            else:
                self.i += 1
            return self.mk("num", x[0])
        if k in ("var", "sym", "const"):
            return self.primary()
        raise ParseError("bad argument")

    def primary(self):
        k, x = self.take()
        if k == "num":
            return self.mk("num", x)
        if k == "var":
            if x == "i":
                return self.mk("I")
            return self.mk("sym", x)
        if k == "sym":
            return self.mk("sym", x)
        if k == "const":
            return self.mk(x)
        if k == "op" and x == "(":
            return self.group(")")
        if k == "op" and x == "[":
            return self.group("]")
        if k == "op" and x == "{":
            return self.group("}")
        if k == "frac":
            self.enter()
            num = self.arg()
            den = self.arg()
            self.leave()
            return self.mk("div", num, den)
        if k == "sqrt":
            n = 2
            if self.peek() == ("op", "["):
                self.take()
                idx = self.group("]")
                if idx.val is None or idx.val.denominator != 1 or not (2 <= idx.val <= MAX_ROOT):
                    raise ParseError("root index")
                n = int(idx.val)
            self.enter()
            rad = self.arg()
            self.leave()
            return self.mk("sqrt", rad, n)
        if k == "func":
            self.enter()
            ex = None
            if self.peek() == ("op", "^"):       # \sin^2 x
                self.take()
                ex = self.exponent()
            if self.peek() == ("op", "("):
                self.take()
                a = self.group(")")
            else:
                a = self.power()
            self.leave()
            node = self.mk("func", x, a)
            return self.mk("pow", node, ex) if ex is not None else node
        raise ParseError(f"unexpected {x!r}")


def parse_expression(s: str) -> Node | None:
    """Parse one scalar expression into a :class:`Node`, or ``None`` (never raises)."""
    try:
        if not isinstance(s, str) or len(s) > MAX_LEN:
            return None
        toks = tokenize(s)
        if not toks:
            return None
        return _Parser(toks).parse()
    except (ParseError, ArithmeticError, ValueError, RecursionError, MemoryError, IndexError,
            TypeError, OverflowError):
        return None


# --------------------------------------------------------------------------------------------
# \pm expansion

def expand_pm(node: Node) -> list[Node]:
    """All sign choices of ``\\pm``/``\\mp`` (consistent: a \\pm b \\mp c -> two values)."""
    count = _count_pm(node)
    if count == 0:
        return [node]
    if count > MAX_PM:
        raise ParseError("too many pm")
    # consistent choice: pm -> +, mp -> -  or  pm -> -, mp -> +
    return [_subst_pm(node, True), _subst_pm(node, False)]


def _count_pm(node):
    c = 1 if node.op in ("pm", "mp") else 0
    for a in node.args:
        if isinstance(a, Node):
            c += _count_pm(a)
    return c


def _subst_pm(node, plus):
    if not any(isinstance(a, Node) for a in node.args):
        return node
    args = tuple(_subst_pm(a, plus) if isinstance(a, Node) else a for a in node.args)
    op = node.op
    if op == "pm":
        op = "add" if plus else "sub"
    elif op == "mp":
        op = "sub" if plus else "add"
    return mk(op, *args)


# --------------------------------------------------------------------------------------------
# structured answers

def _split_top(s: str, seps: tuple[str, ...]) -> list[str]:
    """Split ``s`` on separators at bracket depth 0 (``( [ {`` and ``\\{``).  Linear."""
    parts, depth, start, i, n = [], 0, 0, 0, len(s)
    while i < n:
        c = s[i]
        if c == "\\" and i + 1 < n and s[i + 1] in "{}":
            depth += 1 if s[i + 1] == "{" else -1
            i += 2
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0:
            for sep in seps:
                if s.startswith(sep, i):
                    parts.append(s[start:i])
                    i += len(sep)
                    start = i
                    break
            else:
                i += 1
                continue
            continue
        i += 1
    parts.append(s[start:])
    return parts


def _wrapped(s: str):
    """If ``s`` is ``(...)``/``[...]`` (any mix, e.g. ``[1,2)``) as one group: (open, inner, close)."""
    if len(s) < 2 or s[0] not in "([" or s[-1] not in ")]":
        return None
    depth = 0
    for i, c in enumerate(s):
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
            if depth == 0 and i != len(s) - 1:
                return None
        if depth < 0:
            return None
    return (s[0], s[1:-1], s[-1]) if depth == 0 else None


_MATRIX_RE = re.compile(r"^\\begin\{([pbvBV]?matrix|array)\}(?:\{[lcr|]*\})?(.*)\\end\{\1\}$", re.S)


# English connectives make an answer prose, never a product of variables ("2 or 3" is not 6or)
_PROSE_RE = re.compile(r"(?<![\\a-zA-Z])(?:or|and|is|of|to|if|not|no|maybe|then|but)(?![a-zA-Z])", re.I)


def parse_answer(s: str):
    """Parse a normalized answer string into a structure, or ``None`` (never raises).

    Returns one of
      ``("expr", Node)``                    a scalar
      ``("seq", open, close, [items])``     tuple / interval, e.g. ``(1,2)``, ``[1,2)``
      ``("set", [items])``                  unordered: ``\\{..\\}``, bare ``a, b`` lists, ``a \\pm b``
      ``("union", [items])``                ``A \\cup B``
      ``("matrix", [[Node]])``              ``\\begin{pmatrix}..\\end{pmatrix}``
      ``("eq", Node, Node)``                ``lhs = rhs``
    """
    try:
        if not isinstance(s, str) or len(s) > MAX_LEN:
            return None
        if _PROSE_RE.search(s):
            return None
        return _parse_struct(s.strip(), 0)
    except (ParseError, ArithmeticError, ValueError, RecursionError, MemoryError, IndexError,
            TypeError, OverflowError):
        return None


def _items(parts, depth):
    if len(parts) > MAX_ITEMS:
        raise ParseError("too many items")
    return [_parse_struct(p.strip(), depth + 1) for p in parts]


def _parse_struct(s: str, depth: int):
    if depth > MAX_STRUCT_DEPTH:
        raise ParseError("structure too deep")
    if not s:
        raise ParseError("empty")
    m = _MATRIX_RE.match(s)
    if m:
        rows = [r for r in re.split(r"\\\\", m.group(2)) if r.strip()]
        if not rows or len(rows) > MAX_ITEMS:
            raise ParseError("matrix")
        mat = []
        for r in rows:
            cells = r.split("&")
            if len(cells) > MAX_ITEMS:
                raise ParseError("matrix")
            row = []
            for c in cells:
                node = parse_expression(c.strip())
                if node is None:
                    raise ParseError("matrix cell")
                row.append(node)
            mat.append(row)
        if len({len(r) for r in mat}) != 1:
            raise ParseError("ragged matrix")
        return ("matrix", mat)
    parts = _split_top(s, ("\\cup",))
    if len(parts) > 1:
        return ("union", _items(parts, depth))
    if s.startswith("\\{") and s.endswith("\\}"):
        inner = s[2:-2]
        if _split_top(inner, ("\\}",))[0] == inner:      # one set, not \{1\} ... \{2\}
            parts = _split_top(inner, (",",)) if inner.strip() else []
            return ("set", _flatten_sets(_items(parts, depth)))
    parts = _split_top(s, (",", ";"))
    if len(parts) > 1:
        return ("set", _flatten_sets(_items(parts, depth)))
    w = _wrapped(s)
    if w is not None:
        o, inner, c = w
        parts = _split_top(inner, (",",))
        if len(parts) > 1:
            return ("seq", o, c, _items(parts, depth))
    parts = _split_top(s, ("=",))
    if len(parts) == 2:
        lhs, rhs = parse_expression(parts[0]), parse_expression(parts[1])
        if lhs is None or rhs is None or _count_pm(lhs) or _count_pm(rhs):
            raise ParseError("equation")
        return ("eq", lhs, rhs)
    if len(parts) > 2:
        raise ParseError("chained equation")
    node = parse_expression(s)
    if node is None:
        raise ParseError("expression")
    alts = expand_pm(node)
    if len(alts) == 1:
        return ("expr", node)
    return ("set", [("expr", a) for a in alts])


def _flatten_sets(items):
    out = []
    for it in items:
        if it[0] == "set" and len(it[1]) == 2 and all(x[0] == "expr" for x in it[1]):
            out.extend(it[1])          # "1 \pm \sqrt5, -2" -> three roots
        else:
            out.append(it)
    if len(out) > MAX_ITEMS:
        raise ParseError("too many items")
    return out


# --------------------------------------------------------------------------------------------
# sympy construction

def to_sympy(node: Node):
    """Build a sympy object from a Node directly (no string parsing).  Raises on \\pm nodes."""
    import sympy

    if node.val is not None:
        return sympy.Rational(node.val.numerator, node.val.denominator)
    op, a = node.op, node.args
    if op == "sym":
        return sympy.Symbol(a[0])
    if op == "pi":
        return sympy.pi
    if op == "E":
        return sympy.E
    if op == "I":
        return sympy.I
    if op == "oo":
        return sympy.oo
    if op == "neg":
        return sympy.Mul(sympy.Integer(-1), to_sympy(a[0]), evaluate=False)
    if op == "add":
        return sympy.Add(to_sympy(a[0]), to_sympy(a[1]), evaluate=False)
    if op == "sub":
        return sympy.Add(to_sympy(a[0]), sympy.Mul(sympy.Integer(-1), to_sympy(a[1]), evaluate=False),
                         evaluate=False)
    if op == "mul":
        return sympy.Mul(to_sympy(a[0]), to_sympy(a[1]), evaluate=False)
    if op == "div":
        return sympy.Mul(to_sympy(a[0]), sympy.Pow(to_sympy(a[1]), sympy.Integer(-1), evaluate=False),
                         evaluate=False)
    if op == "pow":
        return sympy.Pow(to_sympy(a[0]), to_sympy(a[1]), evaluate=False)
    if op == "sqrt":
        return sympy.Pow(to_sympy(a[0]), sympy.Rational(1, a[1]), evaluate=False)
    if op == "func":
        name = a[0]
        f = {"ln": sympy.log, "log": sympy.log, "arcsin": sympy.asin, "arccos": sympy.acos,
             "arctan": sympy.atan}.get(name) or getattr(sympy, name)
        return f(to_sympy(a[1]), evaluate=False)
    raise ParseError(f"to_sympy: {op}")


def parse_math(s: str):
    """Parse a scalar expression straight to a sympy object (``evaluate=False``), or ``None``."""
    node = parse_expression(s)
    if node is None or _count_pm(node):
        return None
    try:
        return to_sympy(node)
    except Exception:  # noqa: BLE001 - never raise on model output
        return None
