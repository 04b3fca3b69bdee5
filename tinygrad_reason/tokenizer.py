"""Byte-level BPE tokenizer: our own trainer, ``tiktoken`` for fast encoding/decoding.

Design
------
* **Training** (:func:`train_bpe`, :meth:`Tokenizer.train`) is our own code.  Text is split
  into *pieces* with :data:`SPLIT_PATTERN`; identical pieces are counted once with their
  frequency; every piece starts as its UTF-8 bytes; the most frequent adjacent pair of
  symbols (counted over all pieces, weighted by frequency) is merged into a new symbol,
  and so on until the vocabulary is full.  Pair counts are maintained incrementally (only
  the pieces that contain the merged pair are revisited) and the best pair is taken from a
  lazily-invalidated heap, so a few MB of text with a target of a few thousand tokens
  trains in seconds.  Ties (equal counts) go to the pair whose merged bytes sort first
  (then the left part's bytes), so training is fully deterministic.
* The result is ``mergeable_ranks: dict[bytes, int]`` in tiktoken's sense: ranks 0..255 are
  the 256 single bytes (rank == byte value), then one rank per merge in merge order.
* **Encoding / decoding** uses ``tiktoken.Encoding`` built from those ranks, the same split
  pattern, and the special tokens.  No file or network access ever happens inside tiktoken.

Split pattern
-------------
Like GPT-4's ``cl100k_base`` pattern, except that **every number character is its own
piece** (``\\p{N}`` instead of ``\\p{N}{1,3}``), so ``"12345"`` is always the five tokens
``1 2 3 4 5`` -- essential for learning arithmetic -- and the contraction alternative spells
out its letter cases instead of using ``(?i:...)`` (whose Unicode case folding, e.g. of
``U+017F LATIN SMALL LETTER LONG S``, could differ between engines)::

    '(?:[sdmtSDMT]|[lL][lL]|[vV][eE]|[rR][eE])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+

In words: English contractions (``'s``, ``'ll``, ...); a run of letters with at most one
leading non-letter/non-digit/non-newline character (typically the space before a word);
a single number character (``\\p{N}``: ``0``-``9``, other scripts' digits, ``²``,
``½``, ...); a run of punctuation/symbols with an optional leading space and trailing
newlines; whitespace ending in a newline; whitespace runs (leaving the last space to
attach to the next word); any other whitespace.  Every character of any string is covered
by some alternative, so nothing is ever dropped.

The pattern uses only constructs that Rust ``fancy-regex`` (tiktoken) and Python's third
party ``regex`` module (our trainer; installed as a tiktoken dependency) interpret the
same way: no possessive quantifiers, no inline case-insensitivity, ``\\s`` is the Unicode
``White_Space`` property in both (Python's built-in ``re`` differs: its ``\\s`` also matches
U+001C..U+001F and it has no ``\\p{..}``, so it is not used).  ``tests/test_tokenizer.py``
checks that tiktoken's pieces equal the trainer's pieces on random text and on every assigned
code point below U+3000; a one-off sweep over all 1.1M code points found differences only
for code points unassigned in Unicode 14 (e.g. Unicode 16/17 additions such as U+323B0 that
the ``regex`` module's newer tables call letters while tiktoken's regex tables do not).  Such
a difference can only change how those rare characters are grouped during training; it never
affects round-tripping (every string still decodes back exactly).

Special tokens
--------------
The reasoning format uses six special tokens, appended as single ids right after the BPE
ranks, in this order: ``<|question|>``, ``<|think|>``, ``<|step|>``, ``<|answer|>``,
``<|endoftext|>``, ``<|pad|>``.  Plain :meth:`Tokenizer.encode` never produces them -- the
literal text ``"<|step|>"`` is encoded as ordinary bytes; only ``allow_special=True``
parses the literal strings into special ids.

File format (:meth:`Tokenizer.save` / :meth:`Tokenizer.load`)
-----------------------------------------------------------
A UTF-8 JSON object::

    {"format": "tinygrad_reason.tokenizer", "version": 1, "name": "...",
     "pattern": "...", "ranks": ["<base64 of the bytes of rank 0>", ...],
     "special_tokens": {"<|question|>": 1234, ...}}

``ranks[i]`` is the token with rank ``i``.  Writes are atomic (temp file + ``os.replace``).
:meth:`Tokenizer.from_tiktoken_file` reads the standard tiktoken BPE file format
(one ``base64(token_bytes) rank`` per line) from a local path.
"""
from __future__ import annotations

import base64
import binascii
import heapq
import json
import os
from collections import Counter
from typing import Iterable, Sequence

import regex
import tiktoken

from .io.atomic import atomic_write

__all__ = [
    "SPLIT_PATTERN", "SPECIAL_TOKENS", "QUESTION", "THINK", "STEP", "ANSWER", "ENDOFTEXT", "PAD",
    "FORMAT_NAME", "FORMAT_VERSION", "TokenizerFileError", "Tokenizer", "train_bpe", "split_pieces",
]

SPLIT_PATTERN = (
    r"""'(?:[sdmtSDMT]|[lL][lL]|[vV][eE]|[rR][eE])"""
    r"""|[^\r\n\p{L}\p{N}]?\p{L}+"""
    r"""|\p{N}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]"""
    r"""|\s+(?!\S)"""
    r"""|\s+"""
)

QUESTION = "<|question|>"
THINK = "<|think|>"
STEP = "<|step|>"
ANSWER = "<|answer|>"
ENDOFTEXT = "<|endoftext|>"
PAD = "<|pad|>"
#: The reasoning-format special tokens, in the order their ids are assigned.
SPECIAL_TOKENS: tuple[str, ...] = (QUESTION, THINK, STEP, ANSWER, ENDOFTEXT, PAD)

FORMAT_NAME = "tinygrad_reason.tokenizer"
FORMAT_VERSION = 1

_N_BYTES = 256


class TokenizerFileError(ValueError):
    """A tokenizer file is malformed; the message names the file (and line where known)."""


# ----------------------------------------------------------------------------- training
_compiled_cache: dict[str, "regex.Pattern[str]"] = {}


def _compile(pattern: str) -> "regex.Pattern[str]":
    pat = _compiled_cache.get(pattern)
    if pat is None:
        pat = _compiled_cache[pattern] = regex.compile(pattern)
    return pat


def split_pieces(text: str, pattern: str = SPLIT_PATTERN) -> list[str]:
    """Split ``text`` into the pieces BPE works within (the trainer's view of the pattern)."""
    return _compile(pattern).findall(text)


def train_bpe(texts: Iterable[str], n_ranks: int, pattern: str = SPLIT_PATTERN,
              min_frequency: int = 1) -> dict[bytes, int]:
    """Train byte-level BPE; return ``mergeable_ranks`` with at most ``n_ranks`` entries.

    Ranks 0..255 are the single bytes (rank == byte value); each further rank is one merge,
    in the order the merges were learned.  Training stops early when no adjacent pair occurs
    at least ``min_frequency`` times (e.g. a tiny corpus), so the result can be smaller than
    ``n_ranks``.
    """
    if isinstance(texts, str):
        texts = [texts]
    if n_ranks < _N_BYTES:
        raise ValueError(f"n_ranks must be >= {_N_BYTES} (one rank per byte), got {n_ranks}")
    if min_frequency < 1:
        raise ValueError(f"min_frequency must be >= 1, got {min_frequency}")

    # 1. Count pieces.  BPE never merges across piece boundaries, so identical pieces are
    #    processed once, weighted by how often they occur.
    pat = _compile(pattern)
    piece_counts: Counter[str] = Counter()
    for text in texts:
        if not isinstance(text, str):
            raise TypeError(f"training texts must be str, got {type(text).__name__}")
        piece_counts.update(pat.findall(text))

    # 2. Each distinct piece as a list of symbol ids; symbols 0..255 are the bytes.
    sym_bytes: list[bytes] = [bytes([i]) for i in range(_N_BYTES)]
    bytes_to_sym: dict[bytes, int] = {b: i for i, b in enumerate(sym_bytes)}
    words: list[list[int]] = []
    freqs: list[int] = []
    for piece in sorted(piece_counts):  # sorted: deterministic regardless of input order
        encoded = piece.encode("utf-8")
        if len(encoded) >= 2:  # a single byte can never take part in a merge
            words.append(list(encoded))
            freqs.append(piece_counts[piece])

    # 3. Initial pair counts, and which words contain each pair.
    pair_counts: dict[tuple[int, int], int] = {}
    pair_words: dict[tuple[int, int], set[int]] = {}
    for wi, (word, freq) in enumerate(zip(words, freqs)):
        for pair in zip(word, word[1:]):
            pair_counts[pair] = pair_counts.get(pair, 0) + freq
            pair_words.setdefault(pair, set()).add(wi)

    def heap_key(pair: tuple[int, int], count: int):
        # max count first; ties: merged bytes, then left bytes, ascending -> deterministic
        a, b = sym_bytes[pair[0]], sym_bytes[pair[1]]
        return (-count, a + b, a, pair)

    heap = [heap_key(p, c) for p, c in pair_counts.items()]
    heapq.heapify(heap)

    ranks: dict[bytes, int] = {b: i for i, b in enumerate(sym_bytes)}
    while len(ranks) < n_ranks and heap:
        neg_count, _, _, pair = heapq.heappop(heap)
        if pair_counts.get(pair) != -neg_count:
            continue  # stale heap entry: the count changed after it was pushed
        if -neg_count < min_frequency:
            break
        a, b = pair
        merged = sym_bytes[a] + sym_bytes[b]
        new = bytes_to_sym.get(merged)
        if new is None:  # normally a brand-new token; reuse the id if these bytes exist
            new = len(sym_bytes)
            sym_bytes.append(merged)
            bytes_to_sym[merged] = new
        if merged not in ranks:
            ranks[merged] = len(ranks)

        # 4. Rewrite only the words that contain the pair, updating pair counts by delta.
        delta: dict[tuple[int, int], int] = {}
        for wi in pair_words.pop(pair, ()):
            word = words[wi]
            out: list[int] = []
            i, n = 0, len(word)
            while i < n:
                if i + 1 < n and word[i] == a and word[i + 1] == b:
                    out.append(new)
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            if len(out) == len(word):
                continue  # stale membership: an earlier merge already consumed the pair
            freq = freqs[wi]
            for p in zip(word, word[1:]):
                delta[p] = delta.get(p, 0) - freq
            for p in zip(out, out[1:]):
                delta[p] = delta.get(p, 0) + freq
                pair_words.setdefault(p, set()).add(wi)
            words[wi] = out
        pair_counts.pop(pair, None)
        for p, d in delta.items():
            if p == pair or d == 0:
                continue
            c = pair_counts.get(p, 0) + d
            if c > 0:
                pair_counts[p] = c
                heapq.heappush(heap, heap_key(p, c))
            else:
                pair_counts.pop(p, None)
                pair_words.pop(p, None)
    return ranks


# ----------------------------------------------------------------------------- tokenizer
class Tokenizer:
    """Byte-level BPE tokenizer with the reasoning-format special tokens.

    Attributes: ``question_id``, ``think_id``, ``step_id``, ``answer_id``, ``eot_id``,
    ``pad_id`` and ``special_ids`` (``{"<|step|>": id, ...}``).  ``vocab_size`` counts the
    BPE ranks plus the special tokens; ids are ``0 .. vocab_size-1``.
    """

    def __init__(self, mergeable_ranks: dict[bytes, int], pattern: str = SPLIT_PATTERN,
                 specials: Sequence[str] = SPECIAL_TOKENS, name: str = "tinygrad_reason_bpe"):
        _validate_ranks(mergeable_ranks)
        specials = list(specials)
        _validate_specials(specials)
        try:
            regex.compile(pattern)
        except regex.error as e:
            raise ValueError(f"invalid split pattern {pattern!r}: {e}") from None
        self.name = name
        self.pattern = pattern
        self._ranks = dict(mergeable_ranks)
        n = len(self._ranks)
        self.special_ids: dict[str, int] = {s: n + i for i, s in enumerate(specials)}
        self._id_to_special = {i: s for s, i in self.special_ids.items()}
        self._enc = tiktoken.Encoding(name, pat_str=pattern, mergeable_ranks=self._ranks,
                                      special_tokens=dict(self.special_ids),
                                      explicit_n_vocab=n + len(specials))
        self.question_id = self.special_ids[QUESTION]
        self.think_id = self.special_ids[THINK]
        self.step_id = self.special_ids[STEP]
        self.answer_id = self.special_ids[ANSWER]
        self.eot_id = self.special_ids[ENDOFTEXT]
        self.pad_id = self.special_ids[PAD]

    # ---- construction
    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, name: str = "tinygrad_reason_bpe",
              pattern: str = SPLIT_PATTERN, specials: Sequence[str] = SPECIAL_TOKENS,
              min_frequency: int = 1) -> "Tokenizer":
        """Train on ``texts`` (an iterable of strings, or one string).

        ``vocab_size`` is the total size including the special tokens, so it must be at
        least ``256 + len(specials)``.  A corpus too small to supply that many merges gives
        a smaller vocabulary (check ``tok.vocab_size``).
        """
        specials = list(specials)
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
            raise TypeError(f"vocab_size must be an int, got {type(vocab_size).__name__}")
        minimum = _N_BYTES + len(specials)
        if vocab_size < minimum:
            raise ValueError(f"vocab_size={vocab_size} is too small: need at least {minimum} "
                             f"({_N_BYTES} byte tokens + {len(specials)} special tokens)")
        ranks = train_bpe(texts, vocab_size - len(specials), pattern=pattern,
                          min_frequency=min_frequency)
        return cls(ranks, pattern=pattern, specials=specials, name=name)

    @classmethod
    def default(cls, vocab_size: int = 512) -> "Tokenizer":
        """A small tokenizer trained on a built-in text sample (cached in-process)."""
        key = int(vocab_size)
        tok = _DEFAULT_CACHE.get(key)
        if tok is None:
            tok = _DEFAULT_CACHE[key] = cls.train([_DEFAULT_SAMPLE], key, name=f"default{key}")
        return tok

    # ---- properties
    @property
    def vocab_size(self) -> int:
        return len(self._ranks) + len(self.special_ids)

    @property
    def n_ranks(self) -> int:
        """Number of BPE tokens (everything but the specials)."""
        return len(self._ranks)

    @property
    def mergeable_ranks(self) -> dict[bytes, int]:
        return dict(self._ranks)

    @property
    def encoding(self) -> tiktoken.Encoding:
        return self._enc

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"Tokenizer(name={self.name!r}, vocab_size={self.vocab_size}, n_ranks={self.n_ranks})"

    def is_special(self, token_id: int) -> bool:
        return token_id in self._id_to_special

    # ---- encode / decode
    def encode(self, text: str, allow_special: bool = False) -> list[int]:
        """Encode ``text``.  Special ids appear only with ``allow_special=True``, and then only
        where ``text`` contains the literal special strings.  Lone surrogates (not valid
        Unicode scalar values) are encoded as U+FFFD."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects str, got {type(text).__name__}")
        if allow_special:
            return self._enc.encode(text, allowed_special="all")
        return self._enc.encode_ordinary(text)

    def encode_batch(self, texts: Sequence[str], allow_special: bool = False) -> list[list[int]]:
        texts = list(texts)
        for t in texts:
            if not isinstance(t, str):
                raise TypeError(f"encode_batch expects str items, got {type(t).__name__}")
        if allow_special:
            return self._enc.encode_batch(texts, allowed_special="all")
        return self._enc.encode_ordinary_batch(texts)

    def _check_ids(self, ids) -> list[int]:
        out = []
        n = self.vocab_size
        for t in ids:
            try:
                i = int(t)
            except (TypeError, ValueError):
                raise TypeError(f"token ids must be ints, got {t!r}") from None
            if i != t or not 0 <= i < n:
                raise ValueError(f"invalid token id {t!r}: ids must be integers in [0, {n})")
            out.append(i)
        return out

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        return self._enc.decode_bytes(self._check_ids(ids))

    def decode(self, ids: Iterable[int]) -> str:
        """Decode to text; incomplete/invalid UTF-8 becomes U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one token (special tokens give their literal text's bytes)."""
        return self._enc.decode_single_token_bytes(self._check_ids([token_id])[0])

    # ---- persistence
    def save(self, path: str | os.PathLike) -> None:
        """Write the tokenizer as JSON (atomically: temp file in the same dir + os.replace)."""
        ordered = sorted(self._ranks.items(), key=lambda kv: kv[1])
        obj = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "name": self.name,
            "pattern": self.pattern,
            "ranks": [base64.b64encode(b).decode("ascii") for b, _ in ordered],
            "special_tokens": dict(self.special_ids),
        }
        text = json.dumps(obj, ensure_ascii=True, indent=0) + "\n"
        atomic_write(os.fspath(path), lambda f: f.write(text.encode("utf-8")))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Tokenizer":
        path = os.fspath(path)
        try:
            with open(path, "r", encoding="utf-8") as f:
                text = f.read()
        except UnicodeDecodeError as e:
            raise TokenizerFileError(f"{path}: not UTF-8 text ({e})") from None
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise TokenizerFileError(f"{path}:{e.lineno}: invalid JSON: {e.msg} "
                                     f"(column {e.colno})") from None
        if not isinstance(obj, dict):
            raise TokenizerFileError(f"{path}: expected a JSON object, got {type(obj).__name__}")
        if obj.get("format") != FORMAT_NAME:
            raise TokenizerFileError(f"{path}: not a tokenizer file (field 'format' is "
                                     f"{obj.get('format')!r}, expected {FORMAT_NAME!r})")
        if obj.get("version") != FORMAT_VERSION:
            raise TokenizerFileError(f"{path}: unsupported format version {obj.get('version')!r} "
                                     f"(this code reads version {FORMAT_VERSION})")
        for key, typ in (("name", str), ("pattern", str), ("ranks", list), ("special_tokens", dict)):
            if not isinstance(obj.get(key), typ):
                raise TokenizerFileError(f"{path}: field {key!r} missing or not a {typ.__name__}")
        ranks: dict[bytes, int] = {}
        for i, s in enumerate(obj["ranks"]):
            if not isinstance(s, str):
                raise TokenizerFileError(f"{path}: ranks[{i}] is not a base64 string: {s!r}")
            try:
                b = base64.b64decode(s, validate=True)
            except (binascii.Error, ValueError) as e:
                raise TokenizerFileError(f"{path}: ranks[{i}] is not valid base64 ({e}): {s!r}") from None
            if b in ranks:
                raise TokenizerFileError(f"{path}: ranks[{i}] duplicates ranks[{ranks[b]}] ({b!r})")
            ranks[b] = i
        specials = obj["special_tokens"]
        n = len(ranks)
        order = sorted(specials.items(), key=lambda kv: kv[1] if isinstance(kv[1], int) else -1)
        for j, (s, i) in enumerate(order):
            if isinstance(i, bool) or not isinstance(i, int) or i != n + j:
                raise TokenizerFileError(f"{path}: special token {s!r} has id {i!r}; special ids must "
                                         f"be consecutive starting at {n} (right after the ranks)")
        try:
            return cls(ranks, pattern=obj["pattern"], specials=[s for s, _ in order], name=obj["name"])
        except (ValueError, TypeError) as e:
            raise TokenizerFileError(f"{path}: {e}") from None

    @classmethod
    def from_tiktoken_file(cls, path: str | os.PathLike, pattern: str = SPLIT_PATTERN,
                           specials: Sequence[str] = SPECIAL_TOKENS,
                           name: str | None = None) -> "Tokenizer":
        """Load a local tiktoken BPE file (lines ``base64(token_bytes) rank``); never downloads.

        Ranks must be 0..N-1 without gaps and include all 256 single bytes.  The special
        tokens get ids N, N+1, ... in the order of ``specials``.  ``pattern`` should be the
        split pattern the file was trained with (e.g. cl100k's for ``cl100k_base.tiktoken``).
        """
        path = os.fspath(path)
        ranks: dict[bytes, int] = {}
        seen_ranks: dict[int, int] = {}
        try:
            with open(path, "rb") as f:
                data = f.read()
        except IsADirectoryError:
            raise TokenizerFileError(f"{path}: is a directory, not a tiktoken BPE file") from None
        for lineno, raw in enumerate(data.splitlines(), start=1):
            line = raw.strip()
            if not line:
                continue
            parts = line.split()
            if len(parts) != 2:
                raise TokenizerFileError(f"{path}:{lineno}: expected 'base64_token rank', got {_show(raw)}")
            tok_b64, rank_s = parts
            try:
                tok = base64.b64decode(tok_b64, validate=True)
            except (binascii.Error, ValueError) as e:
                raise TokenizerFileError(f"{path}:{lineno}: invalid base64 token ({e}): {_show(tok_b64)}") from None
            if not rank_s.isdigit():
                raise TokenizerFileError(f"{path}:{lineno}: rank must be a non-negative integer, "
                                         f"got {_show(rank_s)}")
            rank = int(rank_s)
            if not tok:
                raise TokenizerFileError(f"{path}:{lineno}: empty token")
            if tok in ranks:
                raise TokenizerFileError(f"{path}:{lineno}: token {tok!r} already defined with rank {ranks[tok]}")
            if rank in seen_ranks:
                raise TokenizerFileError(f"{path}:{lineno}: rank {rank} already used on line {seen_ranks[rank]}")
            ranks[tok] = rank
            seen_ranks[rank] = lineno
        if not ranks:
            raise TokenizerFileError(f"{path}: no tokens found (empty tiktoken BPE file)")
        try:
            return cls(ranks, pattern=pattern, specials=specials,
                       name=name or os.path.splitext(os.path.basename(path))[0])
        except (ValueError, TypeError) as e:
            raise TokenizerFileError(f"{path}: {e}") from None


# ----------------------------------------------------------------------------- helpers
def _show(b: bytes, limit: int = 60) -> str:
    s = b.decode("utf-8", errors="replace") if isinstance(b, bytes) else str(b)
    return repr(s if len(s) <= limit else s[:limit] + "...")


def _validate_ranks(ranks: dict[bytes, int]) -> None:
    if not isinstance(ranks, dict):
        raise TypeError(f"mergeable_ranks must be a dict[bytes, int], got {type(ranks).__name__}")
    values = set()
    for b, r in ranks.items():
        if not isinstance(b, bytes) or not b:
            raise ValueError(f"mergeable_ranks keys must be non-empty bytes, got {b!r}")
        if isinstance(r, bool) or not isinstance(r, int) or r < 0:
            raise ValueError(f"rank of {b!r} must be a non-negative int, got {r!r}")
        values.add(r)
    n = len(ranks)
    if len(values) != n:
        raise ValueError("mergeable_ranks has duplicate ranks")
    if values != set(range(n)):
        missing = min(set(range(n)) - values)
        raise ValueError(f"ranks must be exactly 0..{n - 1} with no gaps; rank {missing} is missing")
    missing_bytes = [i for i in range(_N_BYTES) if bytes([i]) not in ranks]
    if missing_bytes:
        raise ValueError(f"every single byte must be a token (byte-level BPE); {len(missing_bytes)} "
                         f"missing, e.g. {bytes([missing_bytes[0]])!r}")


def _validate_specials(specials: list[str]) -> None:
    for s in specials:
        if not isinstance(s, str) or not s:
            raise ValueError(f"special tokens must be non-empty strings, got {s!r}")
    if len(set(specials)) != len(specials):
        raise ValueError(f"duplicate special tokens in {specials}")
    missing = [s for s in SPECIAL_TOKENS if s not in specials]
    if missing:
        raise ValueError(f"the reasoning special tokens {missing} are required")


_DEFAULT_CACHE: dict[int, Tokenizer] = {}

# A few KB of varied text (prose, arithmetic, reasoning-format examples, code, some
# non-English) for Tokenizer.default().  Written for this project.
_DEFAULT_SAMPLE = "\n".join([
    "The quick brown fox jumps over the lazy dog. The dog did not mind; it was asleep.",
    "A reasoning model writes its thoughts step by step before it gives the final answer.",
    "Each step should be short, checkable and correct. If a step is wrong, the answer is wrong.",
    "Question: What is 17 + 25? Think: 7 + 5 = 12, write 2 carry 1. 1 + 2 + 1 = 4. Answer: 42.",
    "Question: What is 9 * 8? Think: 9 * 8 = 72. Answer: 72.",
    "Question: Tom has 3 apples and buys 4 more. How many apples does he have? "
    "Think: He starts with 3. He buys 4. 3 + 4 = 7. Answer: 7.",
    "Question: A train travels 60 km in 1 hour. How far does it go in 3 hours? "
    "Think: Distance is speed times time. 60 * 3 = 180. Answer: 180 km.",
    "Question: What is 100 - 37? Think: 100 - 30 = 70. 70 - 7 = 63. Answer: 63.",
    "Question: Is 91 a prime number? Think: 91 = 7 * 13, so it has divisors other than 1 and "
    "itself. Answer: No.",
    "Question: What is half of 250? Think: 250 / 2 = 125. Answer: 125.",
    "Let x be the number of cats. Then 2x + 3 = 11, so 2x = 8 and x = 4.",
    "The sum of the angles of a triangle is 180 degrees. A square has four right angles.",
    "In the morning she walked to the market, bought bread, milk and eggs, and came home.",
    "They're sure it's fine, but we'll see; I've heard that you'd rather wait. Don't worry!",
    "def add(a, b):\n    return a + b\n\nprint(add(2, 3))  # prints 5\n",
    "for i in range(10):\n    if i % 2 == 0:\n        print(i)\n",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 100 1000 3.14 -5 1/2 2^10",
    "Equations: 3 * (4 + 5) = 27; 12 / 4 = 3; 15 % 4 = 3; 2 ** 8 = 256; 7 - 10 = -3.",
    "Le chat dort sur le canapé. Der Hund läuft schnell. El niño come una manzana.",
    "Привет, мир! Это небольшой пример текста. 你好，世界。这是一个例子。こんにちは。",
    "Emoji are text too: 🙂 👍 🚀 and so are symbols like ∑, √, π, ≤, ≥ and →.",
    "First, read the question carefully. Second, find the quantities. Third, compute. "
    "Finally, check the result against the question before writing the answer.",
    "If the answer cannot be checked, the reasoning should say so and explain why.",
    "The verifier scores every step; a good step moves closer to the answer.",
] * 3)
