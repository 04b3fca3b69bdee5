"""Tokenizers of real pretrained models (byte-level BPE), encoded and decoded by ``tiktoken``.

Two sources: the ``tokenizer.ggml.*`` metadata of a GGUF file (:meth:`PretrainedTokenizer.
from_gguf_metadata`, given as a plain dict so any GGUF reader works) and a Hugging Face
``tokenizer.json`` (:meth:`PretrainedTokenizer.from_tokenizer_json`).  Both become one
``tiktoken.Encoding`` whose ranks are the model's token ids, whose split regex reproduces the
model's pre-tokenizer, and whose special tokens are the model's control/added tokens.  The goal
is the exact ids Hugging Face ``tokenizers`` produces; ``tests/test_pretrained_tokenizer.py``
checks that on GSM8K + MATH-500 and hand-written hard cases.

Why tiktoken's BPE gives Hugging Face's result
----------------------------------------------
HF merges the adjacent pair with the lowest *merge index*; tiktoken merges the adjacent pair
whose concatenation has the lowest *rank*.  Both agree when merge k creates a token whose id
grows with k, which is checked at load time (``merges`` whose results are out of id order are
refused).  Multi-byte tokens that no merge creates (GGUF ``[PAD...]`` fillers, say) HF never
produces, so they are kept out of the ranks (they still decode).  tiktoken also emits a piece
that is itself a token without merging (HF's ``ignore_merges``); for a trained vocabulary BPE
reaches that token anyway, which the tests check for every token of the real model.  The
remaining theoretical gap -- tiktoken joining two tokens whose concatenation is a token that
HF's merge list spells as a different pair -- never showed on the corpus and sweeps the tests run.

Bytes without a token
---------------------
A vocabulary may lack some single bytes (SmolLM2 lacks 21, e.g. ``0x04`` and the UTF-8 lead
bytes ``0xf1``/``0xf2`` of U+40000..U+BFFFF).  HF's BPE model, with no ``unk_token``, silently
*drops* such a byte: the text is pre-tokenized as usual, then inside each piece the missing
bytes are removed and the remaining bytes are merged as if adjacent (``"!\\x04!"`` -> ``"!!"``;
``"\\U00040000"`` -> three ``0x80`` tokens).  tiktoken would fail on those bytes, so text that
contains one takes a slower path: the same regex splits it (with the ``regex`` module), the
missing bytes are deleted per piece, and each piece goes through tiktoken's single-piece BPE.
Such text does not round-trip (what was dropped cannot come back).

Normalizers
-----------
Only none or NFC (Qwen2's tokenizer.json): NFC is applied with Python's ``unicodedata`` to the
whole text before encoding, which equals HF normalizing the text between added tokens as long
as those are ASCII (required).  Python's Unicode tables may be older than the Rust crate's, so
code points newer than them could normalize differently.
"""
from __future__ import annotations

import json
import os
import unicodedata
from typing import Iterable, Sequence

import regex
import tiktoken

__all__ = ["PretrainedTokenizerError", "PretrainedTokenizer", "GPT2_SPLIT", "DIGITS_GPT2_SPLIT",
           "QWEN2_SPLIT", "LLAMA3_SPLIT", "GGUF_PRE_SPLITS", "byte_decoder"]


class PretrainedTokenizerError(ValueError):
    """A tokenizer description cannot be loaded exactly; the message names the source and field."""


# ----------------------------------------------------------------------------- split regexes
#: GPT-2's pre-tokenizer (HF ``ByteLevel(use_regex=True)``), letter for letter.
GPT2_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""

#: HF ``Sequence[Digits(individual_digits=True), ByteLevel(use_regex=True)]`` (StarCoder, SmolLM)
#: as one regex.  Digits first cuts the text at every number character (``\p{N}``, which is
#: Rust's ``char::is_numeric``); GPT-2's regex then runs on each digit-free segment.  So:
#: ``\p{N}`` comes first and is a piece of its own; `` ?\p{N}+`` can never match inside a
#: segment and is dropped; and a segment's end is "end of text or a digit", so GPT-2's
#: ``\s+(?!\S)`` (whitespace not followed by a non-space) becomes ``\s+(?![^\s\p{N}])``
#: (not followed by a char that is neither space nor digit): ``"a  1"`` -> ``a``, ``"  "``, ``1``
#: as in HF, where the unmodified lookahead would give ``a``, ``" "``, ``" "``, ``1``.  No other
#: alternative can match a digit or look past one, so nothing else changes.
DIGITS_GPT2_SPLIT = r"""\p{N}|'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?[^\s\p{L}\p{N}]+|\s+(?![^\s\p{N}])|\s+"""
_DIGITS_CONTIGUOUS_GPT2_SPLIT = DIGITS_GPT2_SPLIT.replace(r"\p{N}|", r"\p{N}+|", 1)

#: Qwen2's ``Split`` regex (also DeepSeek-R1-Distill-Qwen), as in its tokenizer.json.
QWEN2_SPLIT = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
               r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")
#: Llama-3's ``Split`` regex (llama.cpp's pre-tokenizer name ``llama-bpe``).
LLAMA3_SPLIT = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"""
                r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""")

#: ``tokenizer.ggml.pre`` -> split regex, for the names whose HF pre-tokenizer we reproduce.
#: 'smollm' follows SmolLM's own tokenizer.json (Digits + ByteLevel) -- note that transformers'
#: GGUF converter does not know this name and falls back to plain GPT-2 splitting.
GGUF_PRE_SPLITS = {
    "gpt2": GPT2_SPLIT,
    "smollm": DIGITS_GPT2_SPLIT,
    "qwen2": QWEN2_SPLIT,
    "deepseek-r1-qwen": QWEN2_SPLIT,
    "llama-bpe": LLAMA3_SPLIT,
}


# ----------------------------------------------------------------------------- byte alphabet
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (token strings are spelled in it)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars = keep[:]
    n = 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(keep, chars)}


_BYTE_OF_CHAR = {c: b for b, c in _bytes_to_unicode().items()}


def byte_decoder() -> dict[str, int]:
    """The inverse of GPT-2's byte alphabet: character -> byte."""
    return dict(_BYTE_OF_CHAR)


def _spelled_bytes(token: str) -> bytes | None:
    """The bytes a byte-alphabet token string stands for, or None if it has other characters."""
    try:
        return bytes(_BYTE_OF_CHAR[c] for c in token)
    except KeyError:
        return None


# ----------------------------------------------------------------------------- tokenizer
class PretrainedTokenizer:
    """A pretrained byte-level BPE tokenizer with the interface of :class:`~tinygrad_reason.
    tokenizer.Tokenizer` that generation relies on.

    ``special_ids`` maps every added token (control and user-defined) to its id; ``bos_id``,
    ``eot_id`` (the model's eos), ``pad_id`` (pad, else eos) may be None when the source names
    none.  ``question_id`` ... ``answer_id`` are None: pretrained models lack our reasoning tokens.
    ``chat_template`` is the model's template string, if the source has one.
    """

    question_id = think_id = step_id = answer_id = None

    def __init__(self, *, token_bytes: dict[int, bytes], specials: dict[str, int],
                 always_matched: Iterable[str], pattern: str, source: str,
                 unreachable: dict[int, bytes] | None = None,
                 bos_id: int | None = None, eos_id: int | None = None, pad_id: int | None = None,
                 unk_id: int | None = None, add_bos_token: bool = False,
                 chat_template: str | None = None, nfc: bool = False):
        """Low-level: prefer the ``from_*`` constructors.  ``token_bytes`` are the BPE tokens
        (id -> bytes; ids must increase in merge order), ``specials`` the added tokens (content
        -> id); those in ``always_matched`` (HF non-special added tokens) are recognised even
        with ``allow_special=False``.  ``unreachable`` tokens (e.g. GGUF padding entries no merge
        makes) are never produced but decode; tiktoken holds them as never-allowed specials.
        ``nfc``: NFC-normalize text before encoding (HF's NFC normalizer)."""
        self.source = source
        self.pattern = pattern
        self.special_ids = dict(specials)
        self._id_to_special = {i: s for s, i in self.special_ids.items()}
        self._always = frozenset(always_matched)
        hidden = {}
        for i, b in (unreachable or {}).items():
            try:
                text = b.decode("utf-8")
            except UnicodeDecodeError:
                raise PretrainedTokenizerError(f"{source}: token {i} ({b!r}) is made by no merge and is "
                                               f"not UTF-8, which tiktoken cannot hold") from None
            if text in self.special_ids or text in hidden:
                raise PretrainedTokenizerError(f"{source}: token {i} ({text!r}) duplicates another token")
            hidden[text] = i
        self._n_vocab = 1 + max([*token_bytes, *self._id_to_special, *hidden.values()])
        ranks = {b: i for i, b in token_bytes.items()}
        self._missing = bytes(b for b in range(256) if bytes([b]) not in ranks)
        self._enc = tiktoken.Encoding(os.path.basename(source), pat_str=pattern, mergeable_ranks=ranks,
                                      special_tokens={**self.special_ids, **hidden})
        self._regex = regex.compile(pattern)
        self._special_regexes: dict[frozenset, "regex.Pattern[str] | None"] = {}
        self.bos_id, self.eot_id, self.unk_id = bos_id, eos_id, unk_id
        self.pad_id = pad_id if pad_id is not None else eos_id
        self.add_bos_token = bool(add_bos_token)
        self.chat_template = chat_template
        self.nfc = bool(nfc)

    # ---- construction
    @classmethod
    def from_gguf_metadata(cls, meta: dict, source: str) -> "PretrainedTokenizer":
        """Build from GGUF metadata (key -> python value) as transformers' GGUF converter reads it:
        control tokens (type 3) are special, user-defined ones (type 4) are always matched."""
        def field(key, types, required=True):
            name = f"tokenizer.ggml.{key}"
            if name not in meta:
                if required:
                    raise PretrainedTokenizerError(f"{source}: GGUF field {name!r} is missing")
                return None
            value = meta[name]
            if not isinstance(value, types) or isinstance(value, bool) and bool not in _as_tuple(types):
                raise PretrainedTokenizerError(f"{source}: GGUF field {name!r} has type "
                                               f"{type(value).__name__}, expected {_type_names(types)}")
            return value

        model = field("model", str)
        if model != "gpt2":
            raise PretrainedTokenizerError(
                f"{source}: GGUF field 'tokenizer.ggml.model' is {model!r}; only 'gpt2' (byte-level BPE) "
                f"is supported (e.g. 'llama' is SentencePiece)")
        pre = field("pre", str, required=False) or "gpt2"
        if pre not in GGUF_PRE_SPLITS:
            raise PretrainedTokenizerError(
                f"{source}: GGUF field 'tokenizer.ggml.pre' is {pre!r}; supported pre-tokenizers: "
                f"{sorted(GGUF_PRE_SPLITS)}")
        tokens = field("tokens", list)
        types = field("token_type", list, required=False)
        merges = field("merges", list)
        if not tokens or not all(isinstance(t, str) and t for t in tokens):
            raise PretrainedTokenizerError(f"{source}: GGUF field 'tokenizer.ggml.tokens' must be a "
                                           f"non-empty list of non-empty strings")
        if types is not None and (len(types) != len(tokens) or not all(type(t) is int for t in types)):
            raise PretrainedTokenizerError(f"{source}: GGUF field 'tokenizer.ggml.token_type' must be "
                                           f"{len(tokens)} ints (one per token), got {len(types)} items")
        ids = {}
        for key in ("bos_token_id", "eos_token_id", "padding_token_id", "unknown_token_id"):
            value = field(key, int, required=False)
            if value is not None and not 0 <= value < len(tokens):
                raise PretrainedTokenizerError(f"{source}: GGUF field 'tokenizer.ggml.{key}' is {value}, "
                                               f"outside the {len(tokens)} tokens")
            ids[key] = value
        add_bos = field("add_bos_token", bool, required=False)

        # transformers' byte_level_tokenizer/add_gguf_special_tokens: a token outside the byte
        # alphabet is taken as UTF-8 text, and such a token is never made special.
        token_bytes, specials, always = {}, {}, []
        for i, tok in enumerate(tokens):
            spelled = _spelled_bytes(tok)
            kind = types[i] if types is not None else 1
            if spelled is not None and kind in (3, 4):
                specials[tok] = i
                if kind == 4:
                    always.append(tok)
            else:
                token_bytes[i] = spelled if spelled is not None else tok.encode("utf-8")
        vocab = {t: i for i, t in enumerate(tokens)}
        token_bytes, unreachable = _reachable_split(token_bytes, merges, vocab, False, source,
                                                    "GGUF field 'tokenizer.ggml.merges'")
        return cls(token_bytes=token_bytes, specials=specials, always_matched=always, unreachable=unreachable,
                   pattern=GGUF_PRE_SPLITS[pre], source=source, bos_id=ids["bos_token_id"],
                   eos_id=ids["eos_token_id"], pad_id=ids["padding_token_id"],
                   unk_id=ids["unknown_token_id"], add_bos_token=bool(add_bos),
                   chat_template=meta.get("tokenizer.chat_template"))

    @classmethod
    def from_tokenizer_json(cls, path: str | os.PathLike) -> "PretrainedTokenizer":
        """Build from an HF ``tokenizer.json``; ``tokenizer_config.json`` beside it, if any, gives
        bos/eos/pad/unk, ``add_bos_token`` and ``chat_template`` (or ``chat_template.jinja``)."""
        path = os.fspath(path)
        spec = _read_json(path)
        if not isinstance(spec, dict):
            raise PretrainedTokenizerError(f"{path}: expected a JSON object")

        def fail(field, problem):
            raise PretrainedTokenizerError(f"{path}: field {field!r} {problem}")

        model = spec.get("model")
        if not isinstance(model, dict) or model.get("type") != "BPE":
            fail("model.type", f"is {model.get('type') if isinstance(model, dict) else model!r}; "
                               f"only 'BPE' is supported")
        for key, ok in (("dropout", None), ("continuing_subword_prefix", ""), ("end_of_word_suffix", ""),
                        ("byte_fallback", False)):
            if model.get(key) not in (ok, None):
                fail(f"model.{key}", f"is {model.get(key)!r}; only {ok!r} can be expressed in tiktoken")
        normalizer = spec.get("normalizer")
        if isinstance(normalizer, dict) and normalizer.get("type") == "Sequence" \
                and len(normalizer.get("normalizers") or []) <= 1:
            normalizer = (normalizer.get("normalizers") or [None])[0]
        if normalizer is not None and normalizer != {"type": "NFC"}:
            fail("normalizer", f"is {_type_of(normalizer)}; only null or NFC can be expressed")
        decoder = spec.get("decoder")
        if not isinstance(decoder, dict) or decoder.get("type") != "ByteLevel":
            fail("decoder", f"is {_type_of(decoder)}; only 'ByteLevel' is supported")
        pattern = _pre_tokenizer_regex(spec.get("pre_tokenizer"), lambda f, p: fail(f, p))

        vocab = model.get("vocab")
        if not isinstance(vocab, dict) or not all(isinstance(i, int) for i in vocab.values()):
            fail("model.vocab", "must be an object mapping token strings to int ids")
        added = spec.get("added_tokens") or []
        specials, always = {}, []
        for k, tok in enumerate(added):
            if not isinstance(tok, dict) or not isinstance(tok.get("content"), str) \
                    or not isinstance(tok.get("id"), int):
                fail(f"added_tokens[{k}]", "must have a string 'content' and an int 'id'")
            for flag in ("lstrip", "rstrip", "single_word"):
                if tok.get(flag):
                    fail(f"added_tokens[{k}].{flag}", f"is true for {tok['content']!r}; not supported")
            if normalizer is not None and not tok["content"].isascii():
                # HF normalizes only the text between added tokens; normalizing the whole text
                # first is the same when the tokens are ASCII (nothing composes across them)
                fail(f"added_tokens[{k}].content", f"is {tok['content']!r}; with a normalizer only "
                                                   f"ASCII added tokens are supported")
            if vocab.get(tok["content"], tok["id"]) != tok["id"]:
                fail(f"added_tokens[{k}].id", f"is {tok['id']} but model.vocab has {tok['content']!r} "
                                              f"as {vocab[tok['content']]}")
            specials[tok["content"]] = tok["id"]
            if not tok.get("special"):
                always.append(tok["content"])
        added_ids = set(specials.values())
        token_bytes = {}
        for tok, i in vocab.items():
            if i in added_ids:
                continue
            spelled = _spelled_bytes(tok)
            if spelled is None:
                fail("model.vocab", f"has {tok!r} (id {i}) with characters outside the byte-level "
                                    f"alphabet; not a byte-level BPE vocabulary")
            token_bytes[i] = spelled
        if model.get("unk_token") is not None and any(bytes([b]) not in token_bytes.values()
                                                      for b in range(256)):
            fail("model.unk_token", "is set and some bytes have no token: HF would emit unk for them, "
                                    "which tiktoken cannot express")
        merges = model.get("merges")
        if not isinstance(merges, list):
            fail("model.merges", "must be a list")
        token_bytes, unreachable = _reachable_split(token_bytes, merges, vocab,
                                                    bool(model.get("ignore_merges")), path,
                                                    "field 'model.merges'")

        folder = os.path.dirname(path) or "."
        config = _read_tokenizer_config(os.path.join(folder, "tokenizer_config.json"))
        every = {**vocab, **specials}

        def config_id(key):
            content = config.get(key)
            if isinstance(content, dict):
                content = content.get("content")
            if content is None:
                return None
            if content not in every:
                raise PretrainedTokenizerError(f"{path}: tokenizer_config.json field {key!r} is "
                                               f"{content!r}, which is not a token")
            return every[content]

        return cls(token_bytes=token_bytes, specials=specials, always_matched=always, pattern=pattern,
                   unreachable=unreachable,
                   source=path, bos_id=config_id("bos_token"), eos_id=config_id("eos_token"),
                   pad_id=config_id("pad_token"), unk_id=config_id("unk_token"),
                   add_bos_token=bool(config.get("add_bos_token", False)),
                   chat_template=_chat_template_of(config, folder), nfc=normalizer is not None)

    # ---- properties
    @property
    def vocab_size(self) -> int:
        """One more than the largest id (the model's embedding rows)."""
        return self._n_vocab

    @property
    def encoding(self) -> tiktoken.Encoding:
        return self._enc

    @property
    def missing_bytes(self) -> bytes:
        """The byte values without a token (dropped from text, as HF does)."""
        return self._missing

    def __len__(self) -> int:
        return self.vocab_size

    def __repr__(self) -> str:
        return f"PretrainedTokenizer(source={self.source!r}, vocab_size={self.vocab_size})"

    def is_special(self, token_id: int) -> bool:
        return token_id in self._id_to_special

    # ---- encode / decode
    def encode(self, text: str, allow_special: bool = False) -> list[int]:
        """Encode like HF ``encode(text, add_special_tokens=False)``; with ``allow_special=False``
        special-token strings are plain text (HF's ``split_special_tokens=True``), user-defined
        added tokens are still recognised, as in HF."""
        if not isinstance(text, str):
            raise TypeError(f"encode expects str, got {type(text).__name__}")
        if self.nfc:
            text = unicodedata.normalize("NFC", text)
        allowed = set(self.special_ids) if allow_special else self._always
        if self._missing and self._has_missing_bytes(text):
            return self._encode_dropping_missing_bytes(text, frozenset(allowed))
        return self._enc.encode(text, allowed_special=allowed, disallowed_special=())

    def encode_batch(self, texts: Sequence[str], allow_special: bool = False) -> list[list[int]]:
        texts = list(texts)
        for t in texts:
            if not isinstance(t, str):
                raise TypeError(f"encode_batch expects str items, got {type(t).__name__}")
        if self.nfc:
            texts = [unicodedata.normalize("NFC", t) for t in texts]
        if self._missing and any(self._has_missing_bytes(t) for t in texts):
            return [self.encode(t, allow_special) for t in texts]
        allowed = set(self.special_ids) if allow_special else self._always
        return self._enc.encode_batch(texts, allowed_special=allowed, disallowed_special=())

    def _has_missing_bytes(self, text: str) -> bool:
        data = text.encode("utf-8", "surrogatepass")
        return len(data.translate(None, self._missing)) != len(data)

    def _encode_dropping_missing_bytes(self, text: str, allowed: frozenset) -> list[int]:
        """HF's behaviour for bytes without a token (see the module docstring): split at the
        allowed added tokens, pre-tokenize the rest, delete missing bytes inside each piece."""
        text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")  # as tiktoken does
        out: list[int] = []
        specials = self._special_regex(allowed)
        pos = 0
        for m in (specials.finditer(text) if specials is not None else ()):
            self._encode_plain(text[pos:m.start()], out)
            out.append(self.special_ids[m.group()])
            pos = m.end()
        self._encode_plain(text[pos:], out)
        return out

    def _encode_plain(self, text: str, out: list[int]) -> None:
        for piece in self._regex.findall(text):
            kept = piece.encode("utf-8").translate(None, self._missing)
            if kept:
                out.extend(self._enc._encode_single_piece(kept))

    def _special_regex(self, allowed: frozenset):
        if allowed not in self._special_regexes:
            # longest first: HF matches added tokens leftmost-longest
            alts = sorted(allowed, key=len, reverse=True)
            self._special_regexes[allowed] = (regex.compile("|".join(map(regex.escape, alts)))
                                              if alts else None)
        return self._special_regexes[allowed]

    def _check_ids(self, ids) -> list[int]:
        out = []
        for t in ids:
            try:
                i = int(t)
            except (TypeError, ValueError):
                raise TypeError(f"token ids must be ints, got {t!r}") from None
            if i != t or not 0 <= i < self._n_vocab:
                raise ValueError(f"invalid token id {t!r}: ids must be integers in [0, {self._n_vocab})")
            out.append(i)
        return out

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        return self._enc.decode_bytes(self._check_ids(ids))

    def decode(self, ids: Iterable[int]) -> str:
        """Decode to text (special tokens as their literal text); invalid UTF-8 becomes U+FFFD."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one token (special tokens give their literal text's bytes)."""
        return self._enc.decode_single_token_bytes(self._check_ids([token_id])[0])


# ----------------------------------------------------------------------------- helpers
def _type_of(node) -> str:
    return repr(node.get("type")) if isinstance(node, dict) else repr(node)


def _as_tuple(types):
    return types if isinstance(types, tuple) else (types,)


def _type_names(types) -> str:
    return " or ".join(t.__name__ for t in _as_tuple(types))


def _reachable_split(token_bytes: dict[int, bytes], merges: list, vocab: dict[str, int],
                     ignore_merges: bool, source: str,
                     field: str) -> tuple[dict[int, bytes], dict[int, bytes]]:
    """Check that tiktoken's rank order is HF's merge order (see the module docstring) and split
    off the multi-byte tokens no merge makes, which HF's BPE never produces.  Every merge's parts
    and result must be BPE tokens and the results' ids must not decrease (several merges may make
    one token: merge lists converted from tiktoken, e.g. Llama-3's, list every split)."""
    where = f"{source}: {field}"
    seen: dict[bytes, int] = {}
    for i, b in token_bytes.items():
        if b in seen:
            raise PretrainedTokenizerError(f"{source}: tokens {seen[b]} and {i} are both {b!r}; "
                                           f"token bytes must be unique")
        seen[b] = i
    last = -1
    made = set()
    for k, merge in enumerate(merges):
        if isinstance(merge, str):
            parts = merge.split(" ")
        elif isinstance(merge, list):
            parts = merge
        else:
            parts = None
        if not parts or len(parts) != 2 or not all(isinstance(p, str) for p in parts):
            raise PretrainedTokenizerError(f"{where}[{k}] is {merge!r}; expected 'a b' or [a, b]")
        a, b = parts
        for t in (a, b, a + b):
            if vocab.get(t) not in token_bytes:
                raise PretrainedTokenizerError(f"{where}[{k}] ({a!r} + {b!r}) uses {t!r}, which is not "
                                               f"a BPE token of the vocabulary")
        i = vocab[a + b]
        if i < last:
            raise PretrainedTokenizerError(f"{where}[{k}] ({a!r} + {b!r}) makes id {i}, below the "
                                           f"previous merge's id {last}: token ids must follow merge "
                                           f"order to serve as tiktoken ranks")
        last = i
        made.add(i)
    reachable = {i: b for i, b in token_bytes.items() if len(b) == 1 or i in made}
    if ignore_merges and len(reachable) < len(token_bytes):
        # HF would emit such a token for a piece that is exactly it, but never merge into it;
        # tiktoken can do only both or neither
        orphan = min(set(token_bytes) - set(reachable))
        raise PretrainedTokenizerError(f"{source}: field 'model.ignore_merges' is true and token {orphan} "
                                       f"({token_bytes[orphan]!r}) is made by no merge; not expressible")
    return reachable, {i: b for i, b in token_bytes.items() if i not in reachable}


def _pre_tokenizer_regex(pre, fail) -> str:
    """One tiktoken split regex for an HF pre-tokenizer (see the comments on the *_SPLIT
    constants for how a composition is derived), or ``fail(field, problem)``."""
    steps = pre.get("pretokenizers") if isinstance(pre, dict) and pre.get("type") == "Sequence" else [pre]
    if not isinstance(steps, list) or not steps or not all(isinstance(s, dict) for s in steps):
        fail("pre_tokenizer", f"is {pre!r}; expected a pre-tokenizer object")
    kinds = [s.get("type") for s in steps]
    if any(s.get("type") == "ByteLevel" and s.get("add_prefix_space") for s in steps):
        fail("pre_tokenizer ByteLevel.add_prefix_space", "is true; not supported")
    # byte mapping happens in tiktoken; the last step must be ByteLevel
    if kinds[-1] != "ByteLevel":
        fail("pre_tokenizer", f"is {kinds}; a byte-level tokenizer must end with ByteLevel")
    uses_regex = steps[-1].get("use_regex", True)
    if kinds == ["ByteLevel"]:
        if uses_regex:
            return GPT2_SPLIT
        return r"[\s\S]+"   # no splitting at all: the whole text is one piece
    if kinds == ["Digits", "ByteLevel"] and uses_regex:
        return DIGITS_GPT2_SPLIT if steps[0].get("individual_digits") else _DIGITS_CONTIGUOUS_GPT2_SPLIT
    if kinds == ["Split", "ByteLevel"] and not uses_regex:
        split = steps[0]
        pattern = split.get("pattern")
        if not isinstance(pattern, dict) or not isinstance(pattern.get("Regex"), str):
            fail("pre_tokenizer Split.pattern", f"is {pattern!r}; only {{'Regex': ...}} is supported")
        if split.get("behavior") != "Isolated" or split.get("invert"):
            fail("pre_tokenizer Split.behavior", f"is {split.get('behavior')!r} (invert="
                                                 f"{split.get('invert')!r}); only Isolated, not inverted")
        r = pattern["Regex"]
        try:
            regex.compile(r)
        except regex.error as e:
            fail("pre_tokenizer Split.pattern", f"is not a valid regex: {e}")
        # Isolated keeps the text between matches as pieces too; tiktoken drops unmatched text,
        # so a catch-all alternative takes every run of characters where the pattern cannot start.
        return f"(?:{r})|(?:(?!(?:{r}))[\\s\\S])+"
    fail("pre_tokenizer", f"is {kinds} (ByteLevel use_regex={uses_regex}); supported: ByteLevel, "
                          f"Sequence[Digits, ByteLevel(use_regex)], Sequence[Split(Regex, Isolated), "
                          f"ByteLevel(use_regex=false)]")
    raise AssertionError("unreachable")


def _read_json(path: str):
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except OSError as e:
        raise PretrainedTokenizerError(f"{path}: cannot read ({e.strerror})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise PretrainedTokenizerError(f"{path}: not valid JSON ({e})") from None


def _read_tokenizer_config(path: str) -> dict:
    if not os.path.isfile(path):
        return {}
    config = _read_json(path)
    if not isinstance(config, dict):
        raise PretrainedTokenizerError(f"{path}: expected a JSON object")
    return config


def _chat_template_of(config: dict, folder: str) -> str | None:
    """tokenizer_config.json's chat_template (a string, or a list of {name, template}: the
    'default' one), else chat_template.jinja beside it (where transformers 5 saves it)."""
    t = config.get("chat_template")
    if isinstance(t, list):
        named = {d.get("name"): d.get("template") for d in t if isinstance(d, dict)}
        t = named.get("default")
    if t is None and os.path.isfile(os.path.join(folder, "chat_template.jinja")):
        with open(os.path.join(folder, "chat_template.jinja"), "r", encoding="utf-8") as f:
            t = f.read()
    return t if isinstance(t, str) else None
