"""Answer extraction and string normalization.

Everything here is a linear scan (or a regex without nested quantifiers) so megabyte inputs stay
fast, and nothing raises on arbitrary input.

* :func:`last_boxed` -- content of the LAST complete ``\\boxed{...}`` / ``\\fbox{...}`` with nested
  braces (one forward brace-matching pass with a stack, not a regex).
* :func:`extract_answer` -- answer-token span > last boxed > GSM8K ``#### n`` > last number.
* :func:`normalize_answer` -- canonical string form (LaTeX noise, units, currency, thousands
  separators, ``x = 3`` -> ``3`` ...) that the parser / grader consume.
"""
from __future__ import annotations

import re
import unicodedata

import regex

ANSWER_MARKER = "<|answer|>"
END_MARKER = "<|endoftext|>"
MAX_NORMALIZE_LEN = 10_000     # longer "answers" are not normalized (they never match anything)

_BOX_CMDS = ("\\boxed", "\\fbox")


_BOX_TOKEN_RE = re.compile(r"\\(?:boxed|fbox)(?![a-zA-Z])|\\[{}\\]|[{}]")


def last_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{..}``/``\\fbox{..}`` (nested braces ok), else None.

    One forward pass over brace tokens with a stack of open braces -> O(len(text)).  An
    unterminated box (a truncated generation) does not count.  ``\\boxed 5`` (no braces) is
    accepted too.  If several boxes are complete, the one that closes last wins; a box directly
    wrapping another box (``\\boxed{\\boxed{3}}``) is unwrapped.
    """
    try:
        inner = _last_boxed_once(text)
        for _ in range(3):              # \boxed{\boxed{3}} -> 3 (iterative: each pass is linear)
            if inner is None or not (inner.startswith(_BOX_CMDS) and inner.endswith("}")):
                break
            sub = _last_boxed_once(inner)
            if sub is None:
                break
            inner = sub
        return inner
    except (RecursionError, MemoryError, ValueError, TypeError, IndexError):
        return None


def _last_boxed_once(text: str) -> str | None:
    if not isinstance(text, str) or "\\" not in text:
        return None
    n = len(text)
    stack: list[int] = []               # -1 = ordinary brace, >= 0 = content start of a box
    best_end, best = -1, None
    box_brace = -1                      # position of the "{" that opens a box
    for m in _BOX_TOKEN_RE.finditer(text):
        tok, p = m.group(), m.start()
        if tok == "{":
            stack.append(p + 1 if p == box_brace else -1)
        elif tok == "}":
            if stack:
                start = stack.pop()
                if start >= 0 and p >= best_end:
                    best_end, best = p, (start, p)     # slice once at the end (linear)
        elif tok[1] in "bf":            # \boxed / \fbox
            k = m.end()
            while k < n and text[k] in " \t":
                k += 1
            if k < n and text[k] == "{":
                box_brace = k
            else:                       # \boxed 5 -> up to whitespace / $ (bounded)
                e = k
                while e < n and e - k < 100 and text[e] not in " \t\n$}":
                    e += 1
                if e > k and e >= best_end:
                    best_end, best = e, (k, e)
    return None if best is None else text[best[0]:best[1]].strip()


_GSM_RE = re.compile(r"####\s*([^\n]*)")
_NUM_RE = re.compile(r"-?(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?(?:/[0-9]+)?|-?\.[0-9]+")


def gsm8k_answer(text: str) -> str | None:
    """Text after the LAST ``####`` (GSM8K style) up to end of line, commas removed."""
    if not isinstance(text, str):
        return None
    p = text.rfind("####")
    if p < 0:
        return None
    m = _GSM_RE.match(text, p)
    ans = m.group(1).strip() if m else ""
    ans = ans.replace(",", "").strip()
    return ans or None


def last_number(text: str) -> str | None:
    """The last number in ``text`` (``-1,234.5``, ``3/4`` ...), commas removed.  Linear time:
    scans back from the end to the last digit, then matches around it."""
    if not isinstance(text, str):
        return None
    i = len(text) - 1
    while i >= 0 and not ("0" <= text[i] <= "9"):
        i -= 1
    if i < 0:
        return None
    lo = max(0, i - 200)                # a number is < 200 chars
    best = None
    for m in _NUM_RE.finditer(text, lo, i + 1):
        best = m
    if best is None:
        return None
    return best.group().replace(",", "")


def has_hedge_words(text: str) -> bool:
    """Whether an answer holds a hedge or connective word ("or", "maybe", "about", "between", ...):
    the words normalization strips, which a strict reward refuses instead."""
    return bool(_STOPWORDS.search(text))


def extract_answer(text: str, answer_marker: str | None = ANSWER_MARKER,
                   end_marker: str | None = END_MARKER, *, use_boxed: bool = True,
                   use_gsm8k: bool = True, fallback_last_number: bool = True) -> str | None:
    """Extract the final answer from a model response (never raises; linear time).

    Priority: text after the LAST ``answer_marker`` (up to ``end_marker`` or end; a box inside it
    is unwrapped) > last complete ``\\boxed{}``/``\\fbox{}`` > GSM8K ``#### n`` > last number.
    """
    try:
        if not isinstance(text, str) or not text:
            return None
        if answer_marker:
            p = text.rfind(answer_marker)
            if p >= 0:
                span = text[p + len(answer_marker):]
                if end_marker:
                    q = span.find(end_marker)
                    if q >= 0:
                        span = span[:q]
                boxed = last_boxed(span) if use_boxed else None
                if boxed is not None:
                    return boxed
                if use_gsm8k and "####" in span:
                    g = gsm8k_answer(span)
                    if g is not None:
                        return g
                span = span.strip()
                if span:
                    return span
        if end_marker:
            q = text.find(end_marker)
            if q >= 0:
                text = text[:q]
        if use_boxed:
            boxed = last_boxed(text)
            if boxed is not None:
                return boxed
        if use_gsm8k:
            g = gsm8k_answer(text)
            if g is not None:
                return g
        if fallback_last_number:
            return last_number(text)
        return None
    except (RecursionError, MemoryError, ValueError, TypeError, IndexError):
        return None


# --------------------------------------------------------------------------------------------
# normalization

_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e"
                               "\u2060\u2061\u2062\u2063\u2066\u2067\u2068\u2069\ufeff\u00ad"), None)
_UNICODE_MAP = {"\u2212": "-", "\u2013": "-", "\u2014": "-", "\u00d7": "*", "\u22c5": "*",
                "\u00b7": "*", "\u00f7": "/", "\u03c0": "\\pi ", "\u221e": "\\infty ",
                "\u221a": "\\sqrt", "\u00b0": "", "\u00b1": "\\pm ", "\u222a": "\\cup ",
                "\u2264": "\\le ", "\u2265": "\\ge "}
_UNICODE_TABLE = {**_INVISIBLE, **{ord(k): v for k, v in _UNICODE_MAP.items()}}

_TEXT_CMDS = ("\\text", "\\textbf", "\\textit", "\\textrm", "\\mathrm", "\\mathbf", "\\mathit",
              "\\mbox", "\\operatorname", "\\mathsf", "\\textsf", "\\boxed", "\\fbox", "\\hbox")

_UNIT_WORDS = (
    "dollars?|cents?|degrees?|units?|square|sq|cubic|inches|inch|feet|foot|ft|yards?|miles?|"
    "meters?|metres?|centimeters?|millimeters?|kilometers?|km|cm|mm|m|kg|grams?|g|mg|lbs?|pounds?|"
    "ounces?|oz|liters?|litres?|ml|gallons?|hours?|hrs?|minutes?|mins?|seconds?|secs?|s|days?|"
    "weeks?|months?|years?|mph|percent|points?|people|persons?|students?|apples?|eggs?|marbles?|"
    "books?|cookies?|pages?|times|ways|mi|h|per|each|total")
# a unit word must end at a word boundary, so "mm" is one word and never "m" + "m" (no backtracking)
_UNITS_ONLY = re.compile(rf"(?:(?:{_UNIT_WORDS})\b\.?(?:\^\{{?[23]\}}?)?\s*)+", re.I)
_STOPWORDS = re.compile(r"\b(or|and|maybe|not|possibly|probably|perhaps|either|neither|nor|but|"
                        r"except|unless|approximately|about|around|between|if)\b", re.I)
# number-ish prefix followed only by words (units), e.g. "18 apples", "5.4 cents", "864 inches^2". The
# letter runs are possessive (regex's ++): with a plain + the words' letters could be split between
# repetitions in exponentially many ways, and a long run of words took minutes to reject. Only
# answers up to MAX_UNIT_STRIP_LEN are tried (the lazy prefix makes a failing match quadratic).
_TRAILING_WORDS = regex.compile(r"^(.*?[0-9}a-zA-Z)\]])\s*((?:\s*[a-zA-Z]++\.?(?:\^\{?[23]\}?)?)+)$")
MAX_UNIT_STRIP_LEN = 256
_THOUSANDS = re.compile(r"^-?[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]+)?$")
_MIXED = re.compile(r"^(-?)([0-9]+)\s*\\frac\{([0-9]+)\}\{([0-9]+)\}$")
_LHS = re.compile(r"^\s*(?:[a-zA-Z]|\\[a-zA-Z]+)\s*(?:=|\\in)\s*")
_SPACING_RE = re.compile(r"\\\\|\\[,;:! ]|~")     # keep "\\" (matrix rows), blank the rest
_BASE = re.compile(r"_\{?([0-9]+)\}?$")


def _strip_cmd_wrappers(s: str) -> str:
    """``\\text{abc}`` -> ``abc`` for all _TEXT_CMDS, brace matched, linear-ish (bounded passes)."""
    for _ in range(20):
        best = -1
        for cmd in _TEXT_CMDS:
            p = s.find(cmd + "{")
            if p >= 0 and (best < 0 or p < best[0]):
                best = (p, cmd)
        if best == -1:
            # \text x without braces is left alone
            break
        p, cmd = best
        start = p + len(cmd) + 1
        depth, j = 1, start
        while j < len(s) and depth:
            if s[j] == "{":
                depth += 1
            elif s[j] == "}":
                depth -= 1
            j += 1
        if depth:
            s = s[:p] + s[start:]
            break
        s = s[:p] + s[start:j - 1] + s[j:]
    return s


def normalize_answer(s: str) -> str:
    """Canonical string form of an answer (never raises)."""
    try:
        return _normalize(s)
    except (RecursionError, MemoryError, ValueError, TypeError, IndexError):
        return s if isinstance(s, str) else ""


def _normalize(s: str) -> str:
    if not isinstance(s, str):
        return ""
    s = s.strip()
    if len(s) > MAX_NORMALIZE_LEN:
        return s
    s = unicodedata.normalize("NFKC", s).translate(_UNICODE_TABLE)
    s = s.replace("\n", " ").replace("\t", " ")
    # math delimiters
    for a in ("\\[", "\\]", "\\(", "\\)"):
        s = s.replace(a, " ")
    s = s.replace("\\$", "$").replace("$", " ")
    s = s.replace("\\displaystyle", "").replace("\\left", "").replace("\\right", "")
    for big in ("\\bigl", "\\bigr", "\\Bigl", "\\Bigr", "\\big", "\\Big"):
        s = s.replace(big, "")
    s = _strip_cmd_wrappers(s)
    # degrees / percent
    for deg in ("^{\\circ}", "^\\circ", "^{\\circ }", "\\circ", "\\degree", "^{o}"):
        s = s.replace(deg, "")
    s = s.replace("\\%", "").replace("%", "")
    # thousands separators written with LaTeX spacing
    s = s.replace("{,}", "")
    s = re.sub(r",\\!\s*(?=[0-9])", "", s)
    s = re.sub(r"(?<=[0-9])\\,(?=[0-9]{3})", "", s)
    s = _SPACING_RE.sub(lambda m: m.group() if m.group() == "\\\\" else " ", s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\cfrac", "\\frac")
    s = s.replace("\\le ", "\\le").replace("\\ge ", "\\ge")
    s = re.sub(r"\s+", " ", s).strip()
    # trailing punctuation
    while s and s[-1] in ".;":
        s = s[:-1].rstrip()
    s = s.rstrip(",").strip()
    # unit words after a value:  "18 apples", "5.4 cents", "864 inches^2", "270/7 degrees"
    m = _TRAILING_WORDS.match(s) if len(s) <= MAX_UNIT_STRIP_LEN else None
    if m and not _STOPWORDS.search(m.group(2)) and re.search(r"[0-9]", m.group(1)):
        words = m.group(2).strip()
        if _UNITS_ONLY.fullmatch(words) or \
                re.fullmatch(r"[a-zA-Z]{3,}(?:\s+[a-zA-Z]{3,})?", words):
            s = m.group(1).strip()
    # "x = 3" / "x \in [1,2]" -> rhs (only a single-letter lhs, only one "=")
    if s.count("=") <= 1:
        m = _LHS.match(s)
        if m and (s.count("=") == 1 or "\\in" in m.group()):
            rest = s[m.end():].strip()
            if rest:
                s = rest
    # thousands separators: 1,000,000 (the whole answer only)
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    # mixed numbers 1\frac{4}{5} -> 9/5
    m = _MIXED.match(s)
    if m:
        s = f"{m.group(1)}{int(m.group(2)) * int(m.group(4)) + int(m.group(3))}/{m.group(4)}"
    # "(C)" multiple choice -> C
    m = re.fullmatch(r"\(([A-Ea-e])\)", s)
    if m:
        s = m.group(1).upper()
    # base subscripts: 4210_{5} -> 4210_5
    s = _BASE.sub(r"_\1", s)
    return s
