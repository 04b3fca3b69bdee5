"""Tests for tinygrad_reason.tokenizer: our BPE trainer, the digit-splitting pattern,
special tokens, persistence and the tiktoken-file reader."""
import base64
import json
import os
import random
import time
import unicodedata
from collections import Counter

import pytest
import regex
import tiktoken
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tinygrad_reason import tokenizer as tkm
from tinygrad_reason.tokenizer import (
    SPECIAL_TOKENS, SPLIT_PATTERN, Tokenizer, TokenizerFileError, split_pieces, train_bpe,
)

HSET = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

CORPUS = [
    "Question: what is 12 + 30? Think: 12 + 30 = 42. Answer: 42.",
    "The quick brown fox jumps over the lazy dog, and the dog sleeps on.",
    "They're here, we'll go; I've seen it. Don't, won't, can't -- it's THEIR'S.",
    "x = 3.14159 * r ** 2\nfor i in range(100):\n    print(i, i * i)\n",
    "Grüße aus Köln! Привет мир. 你好世界。 🙂🚀 naïve café résumé",
    "   indented   text\twith\ttabs\r\nand windows newlines\n\n\nend",
] * 20


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.train(CORPUS, 400, name="test400")


@pytest.fixture(scope="module")
def tok_default():
    return Tokenizer.default()


# ------------------------------------------------------------------ strategies
SPECIAL_FRAGMENTS = list(SPECIAL_TOKENS) + ["<|", "|>", "<", "|", ">", "<||>", "<|step", "step|>",
                                            "<|STEP|>", "<| step |>", "endoftext", "<|<|pad|>|>"]
tricky_text = st.lists(
    st.one_of(
        st.text(max_size=12),                                          # any unicode (no surrogates)
        st.sampled_from(SPECIAL_FRAGMENTS),
        st.text(alphabet=" \t\n\r\x0b\x0c\xa0\u2003\u3000\x85\u2028", max_size=6),  # whitespace runs
        st.text(alphabet="0123456789.,-+*/=^%", max_size=10),          # numbers and arithmetic
        st.text(alphabet="abcXYZ'sdmtllverÄé", max_size=8),            # contractions & letters
        st.text(alphabet="\u0301\u0308\u20dd\u200d\ufe0f\U0001F600\U0001F44D\U0001F3FD", max_size=6),
        st.sampled_from(["½", "²", "٣", "Ⅻ", "①", "ſ", "K", "İ", "ß", "\x1c", "\x1f", "\x00"]),
    ),
    max_size=8,
).map("".join)


# ------------------------------------------------------------------ split pattern
def test_pattern_is_stated_in_docstring():
    # the docstring shows the pattern verbatim (with backslashes doubled in the source)
    assert SPLIT_PATTERN in tkm.__doc__


@pytest.mark.parametrize("text,pieces", [
    ("12345", ["1", "2", "3", "4", "5"]),
    ("x=1024;", ["x", "=", "1", "0", "2", "4", ";"]),
    ("abc123def", ["abc", "1", "2", "3", "def"]),
    (" 42 apples", [" ", "4", "2", " apples"]),
    ("-3.5", ["-", "3", ".", "5"]),
    ("they're", ["they", "'re"]),
    ("I'LL", ["I", "'LL"]),
    ("Hello, world!", ["Hello", ",", " world", "!"]),
    ("a  b", ["a", " ", " b"]),
    ("a\n\n  b", ["a", "\n\n", " ", " b"]),
    ("<|step|>", ["<|", "step", "|>"]),
])
def test_split_examples(text, pieces):
    assert split_pieces(text) == pieces


@HSET
@given(tricky_text)
def test_pattern_covers_every_character(text):
    assert "".join(split_pieces(text)) == text


def _tiktoken_pieces(text: str) -> list[bytes]:
    """The pieces tiktoken's own regex (Rust fancy-regex) produces for `text`.

    Trick: give tiktoken a vocabulary holding every substring of the text's bytes; then BPE
    merges each piece all the way into one token, so the tokens *are* the pieces."""
    b = text.encode("utf-8")
    vocab = {bytes([i]) for i in range(256)}
    vocab |= {b[i:j] for i in range(len(b)) for j in range(i + 1, len(b) + 1)}
    ranks = {t: r for r, t in enumerate(sorted(vocab, key=lambda t: (len(t), t)))}
    enc = tiktoken.Encoding("probe", pat_str=SPLIT_PATTERN, mergeable_ranks=ranks, special_tokens={})
    return [enc.decode_single_token_bytes(i) for i in enc.encode_ordinary(text)]


def test_tiktoken_piece_probe_can_detect_a_difference():
    # sanity for the trick: a pattern that keeps digit runs together gives different pieces
    b = "ab 123".encode()
    vocab = {bytes([i]) for i in range(256)} | {b[i:j] for i in range(len(b)) for j in range(i + 1, len(b) + 1)}
    ranks = {t: r for r, t in enumerate(sorted(vocab, key=lambda t: (len(t), t)))}
    enc = tiktoken.Encoding("p", pat_str=r"\p{N}+|[^\p{N}]+", mergeable_ranks=ranks, special_tokens={})
    assert [enc.decode_single_token_bytes(i) for i in enc.encode_ordinary("ab 123")] == [b"ab ", b"123"]
    assert [p.encode() for p in split_pieces("ab 123")] != [b"ab ", b"123"]


def _assigned_in_unicode_14(text):
    # Python 3.11's unicodedata is Unicode 14.  Code points assigned later may be known to
    # one engine's tables and not the other's (e.g. U+323B0, a Unicode 17 CJK letter), see
    # the module docstring; for everything assigned by Unicode 14 the splits agree exactly.
    return all(unicodedata.category(c) != "Cn" for c in text)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tricky_text.filter(lambda s: len(s.encode()) <= 80 and _assigned_in_unicode_14(s)))
def test_trainer_split_equals_tiktoken_split(text):
    assert _tiktoken_pieces(text) == [p.encode() for p in split_pieces(text)]


def _probe_many(chars):
    probes = [p for c in chars for p in ("a" + c + "b!", "!" + c + "!", "1" + c + " x")]
    vocab = {bytes([i]) for i in range(256)}
    for p in probes:
        b = p.encode()
        vocab |= {b[i:j] for i in range(len(b)) for j in range(i + 1, len(b) + 1)}
    ranks = {t: r for r, t in enumerate(sorted(vocab, key=lambda t: (len(t), t)))}
    enc = tiktoken.Encoding("probe", pat_str=SPLIT_PATTERN, mergeable_ranks=ranks, special_tokens={})
    for p, ids in zip(probes, enc.encode_ordinary_batch(probes)):
        assert [enc.decode_single_token_bytes(i) for i in ids] == [x.encode() for x in split_pieces(p)], p


def test_trainer_split_equals_tiktoken_split_sweep():
    # every assigned code point below U+3000 (Latin, Greek, Cyrillic, Indic, punctuation,
    # symbols, all the Unicode spaces...), each classified by three probes.  A full sweep of
    # all 1.1M code points (run once, ~4 min) found differences only at code points that
    # are unassigned in Unicode 14.
    chars = [chr(c) for c in range(0x3000) if unicodedata.category(chr(c)) not in ("Cn", "Cs")]
    for k in range(0, len(chars), 4000):
        _probe_many(chars[k:k + 4000])


def test_trainer_split_equals_tiktoken_split_on_unicode_classes():
    # every Unicode White_Space char, the C0 separators Python's `re` treats as \s, case-folding
    # traps for (?i), numbers that are not ASCII digits, marks, emoji
    chars = ("\t\n\x0b\x0c\r \x85\xa0\u1680" + "".join(chr(c) for c in range(0x2000, 0x200B))
             + "\u2028\u2029\u202f\u205f\u3000\x1c\x1d\x1e\x1f\x00ſKİı½²٣Ⅻ①\u0301\u200d🙂'")
    for c in chars:
        for probe in ("a" + c + "b!", "!" + c + "!", "1" + c + " x", "x'" + c + "s", c + c + "y"):
            assert _tiktoken_pieces(probe) == [p.encode() for p in split_pieces(probe)], (hex(ord(c)), probe)


# ------------------------------------------------------------------ round trips
@HSET
@given(tricky_text)
def test_roundtrip_any_text(tok, tok_default, text):
    for t in (tok, tok_default):
        ids = t.encode(text)
        assert t.decode(ids) == text
        assert t.decode_bytes(ids) == text.encode("utf-8")


@HSET
@given(st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=200))
def test_roundtrip_arbitrary_codepoints(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_roundtrip_fixed_examples(tok):
    for text in ["", " ", "\n", "\r\n\r\n", "   \t  ", "e\u0301\u0301", "👨\u200d👩\u200d👧", "🇩🇪",
                 "\x00\x01\x7f", "\U0010FFFF", "a" * 1000, "9" * 200, " " * 50 + "x"]:
        assert tok.decode(tok.encode(text)) == text


def test_lone_surrogates_become_replacement_char(tok):
    assert tok.decode(tok.encode("a\ud800b")) == "a\ufffdb"
    assert tok.decode(tok.encode_batch(["x\udfff"])[0]) == "x\ufffd"


def test_encode_batch_matches_encode(tok):
    texts = ["hello 123", "", "<|step|> literal", "🙂 ok"]
    assert tok.encode_batch(texts) == [tok.encode(t) for t in texts]
    assert tok.encode_batch(texts, allow_special=True) == [tok.encode(t, allow_special=True) for t in texts]


def test_decode_partial_utf8_uses_replacement(tok):
    ids = tok.encode("é")  # 2 bytes
    raw = b"".join(tok.token_bytes(i) for i in ids)
    assert raw == "é".encode()
    first_byte_id = tok.mergeable_ranks[b"\xc3"]
    assert tok.decode([first_byte_id]) == "\ufffd"
    assert tok.decode_bytes([first_byte_id]) == b"\xc3"


def test_decode_rejects_invalid_ids(tok):
    for bad in ([tok.vocab_size], [-1], [10**12]):
        with pytest.raises(ValueError, match="invalid token id"):
            tok.decode(bad)
    with pytest.raises(TypeError):
        tok.decode(["a"])
    with pytest.raises(TypeError):
        tok.encode(b"bytes")


# ------------------------------------------------------------------ special tokens
def test_special_ids_layout(tok):
    n = tok.n_ranks
    assert tok.vocab_size == n + len(SPECIAL_TOKENS) == len(tok)
    assert tok.special_ids == {s: n + i for i, s in enumerate(SPECIAL_TOKENS)}
    assert [tok.question_id, tok.think_id, tok.step_id, tok.answer_id, tok.eot_id, tok.pad_id] == \
        [n + i for i in range(6)]
    assert SPECIAL_TOKENS == ("<|question|>", "<|think|>", "<|step|>", "<|answer|>",
                              "<|endoftext|>", "<|pad|>")
    for s, i in tok.special_ids.items():
        assert tok.is_special(i)
        assert tok.encode(s, allow_special=True) == [i]
        assert tok.decode([i]) == s
    assert not tok.is_special(0)


@HSET
@given(tricky_text)
def test_plain_text_never_yields_special_ids(tok, text):
    ids = tok.encode(text)
    assert all(0 <= i < tok.n_ranks for i in ids)
    assert tok.decode(ids) == text


@HSET
@given(st.lists(st.one_of(st.sampled_from(SPECIAL_TOKENS), tricky_text), max_size=6))
def test_allow_special_parses_exactly_the_literals(tok, parts):
    text = "".join(parts)
    ids = tok.encode(text, allow_special=True)
    assert tok.decode(ids) == text
    n_special = sum(1 for i in ids if tok.is_special(i))
    # specials found == non-overlapping occurrences of the literal strings, left to right
    assert n_special == len(regex.findall("|".join(regex.escape(s) for s in SPECIAL_TOKENS), text))
    assert all(not tok.is_special(i) for i in tok.encode(text))


def test_reasoning_format_encoding(tok):
    text = "<|question|>2+2?<|think|>2+2=4<|step|>ok<|answer|>4<|endoftext|>"
    ids = tok.encode(text, allow_special=True)
    assert ids[0] == tok.question_id and ids[-1] == tok.eot_id
    assert [i for i in ids if tok.is_special(i)] == [tok.question_id, tok.think_id, tok.step_id,
                                                      tok.answer_id, tok.eot_id]
    plain = tok.encode(text)
    assert len(plain) > len(ids) and not any(tok.is_special(i) for i in plain)


# ------------------------------------------------------------------ digits
def _digit_tokens_are_single(t, text):
    for i in t.encode(text):
        b = t.token_bytes(i)
        if any(48 <= c <= 57 for c in b):
            assert len(b) == 1, (text, b)


def test_every_digit_is_its_own_token(tok, tok_default):
    for t in (tok, tok_default):
        ids = t.encode("12345")
        assert len(ids) == 5 and [t.decode([i]) for i in ids] == list("12345")
        for text in ["x12y", "abc999def", "(3.14)", "-42,000", "v2.0.1", "a1b2c3", " 2024\n"]:
            _digit_tokens_are_single(t, text)


def test_digits_stay_single_even_when_corpus_is_all_numbers():
    t = Tokenizer.train(["123 123 123 4567 4567 99 99 99 x123y"] * 50, 300)
    _digit_tokens_are_single(t, "123 4567 99 x123y 100")
    assert len(t.encode("123")) == 3
    # ...whereas a pattern keeping digit runs together would merge them (the check can fail)
    cl100k_like = SPLIT_PATTERN.replace(r"|\p{N}|", r"|\p{N}{1,3}|")
    assert cl100k_like != SPLIT_PATTERN
    t2 = Tokenizer.train(["123 123 123 4567 4567 99 99 99"] * 50, 300, pattern=cl100k_like)
    assert len(t2.encode("123")) == 1


@HSET
@given(tricky_text)
def test_digits_single_in_any_text(tok, text):
    _digit_tokens_are_single(tok, text)


# ------------------------------------------------------------------ trainer
def _naive_bpe(texts, n_ranks, pattern=SPLIT_PATTERN):
    """Slow obviously-correct reference: recount all pairs every step."""
    counts = Counter()
    for t in texts:
        counts.update(regex.findall(pattern, t))
    words = [[bytes([c]) for c in p.encode()] for p in counts]
    freqs = list(counts.values())
    ranks = {bytes([i]): i for i in range(256)}
    while len(ranks) < n_ranks:
        pc = Counter()
        for w, f in zip(words, freqs):
            for pair in zip(w, w[1:]):
                pc[pair] += f
        if not pc:
            break
        (a, b), _ = min(pc.items(), key=lambda kv: (-kv[1], kv[0][0] + kv[0][1], kv[0][0]))
        if a + b not in ranks:
            ranks[a + b] = len(ranks)
        new_words = []
        for w in words:
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == a and w[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            new_words.append(out)
        words = new_words
    return ranks


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(alphabet="aab bc\n12'é🙂!", max_size=30), min_size=1, max_size=8),
       st.integers(256, 320))
def test_trainer_matches_naive_reference(texts, n_ranks):
    assert train_bpe(texts, n_ranks) == _naive_bpe(texts, n_ranks)


def test_trainer_matches_naive_reference_on_corpus():
    assert train_bpe(CORPUS[:6], 420) == _naive_bpe(CORPUS[:6], 420)


def test_ranks_structure(tok):
    ranks = tok.mergeable_ranks
    assert sorted(ranks.values()) == list(range(len(ranks)))
    for i in range(256):
        assert ranks[bytes([i])] == i
    assert len(ranks) == 400 - len(SPECIAL_TOKENS)  # the corpus is big enough to fill the vocab
    inv = {r: b for b, r in ranks.items()}
    for r in range(256, len(ranks)):  # every merged token is the concatenation of two earlier ones
        b = inv[r]
        assert any(b[:k] in ranks and ranks[b[:k]] < r and b[k:] in ranks and ranks[b[k:]] < r
                   for k in range(1, len(b)))


def test_training_is_deterministic_and_order_independent():
    a = Tokenizer.train(CORPUS, 600).mergeable_ranks
    b = Tokenizer.train(list(CORPUS), 600).mergeable_ranks
    shuffled = list(CORPUS)
    random.Random(1).shuffle(shuffled)
    c = Tokenizer.train(shuffled, 600).mergeable_ranks
    assert a == b == c
    assert list(a.items()) == list(c.items())  # same insertion order too
    d = Tokenizer.train(CORPUS + ["zzzz zzzz zzzz zzzz"] * 40, 600).mergeable_ranks
    assert d != a  # and it does depend on the data


def test_frequent_pair_is_merged_first():
    # pieces: "xq" x1, " xq" x3, " ab" x1 -> (x, q) occurs 4 times, ( , x) 3 times
    assert list(train_bpe(["xq xq xq xq ab"], 257))[256:] == [b"xq"]
    # all pairs tie at count 1 -> the pair whose merged bytes sort first wins: b" c" < b"ab" < b"cd"
    assert list(train_bpe(["ab cd"], 259))[256:] == [b" c", b" cd", b"ab"]


def test_vocab_size_validation():
    minimum = 256 + len(SPECIAL_TOKENS)
    with pytest.raises(ValueError, match=f"at least {minimum}"):
        Tokenizer.train(CORPUS, minimum - 1)
    with pytest.raises(ValueError):
        Tokenizer.train(CORPUS, 0)
    with pytest.raises(TypeError):
        Tokenizer.train(CORPUS, 300.0)
    t = Tokenizer.train(CORPUS, minimum)  # bytes only
    assert t.vocab_size == minimum and t.n_ranks == 256
    assert t.decode(t.encode("héllo 12")) == "héllo 12"


def test_small_corpus_gives_smaller_vocab():
    t = Tokenizer.train(["ab"], 5000)
    assert t.n_ranks == 257 and t.vocab_size == 257 + len(SPECIAL_TOKENS)
    assert t.encode("ab") == [256]


def test_training_speed_and_default_cache():
    text = "\n".join(CORPUS) * 3  # ~ 30 KB
    start = time.perf_counter()
    Tokenizer.train([text], 1024)
    assert time.perf_counter() - start < 2.0
    assert Tokenizer.default() is Tokenizer.default()
    assert Tokenizer.default().vocab_size == 512


# ------------------------------------------------------------------ save / load
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=tricky_text)
def test_save_load_roundtrip(tok, tmp_path_factory, text):
    path = tmp_path_factory.mktemp("tok") / "tok.json"
    tok.save(path)
    t2 = Tokenizer.load(path)
    assert t2.mergeable_ranks == tok.mergeable_ranks
    assert t2.special_ids == tok.special_ids and t2.pattern == tok.pattern and t2.name == tok.name
    assert t2.encode(text) == tok.encode(text)
    assert t2.encode(text, allow_special=True) == tok.encode(text, allow_special=True)
    assert os.listdir(path.parent) == ["tok.json"]  # no temp file left behind


def test_save_format_and_overwrite(tok, tmp_path):
    path = tmp_path / "t.json"
    path.write_text("old junk")
    tok.save(path)
    obj = json.loads(path.read_text())
    assert obj["format"] == "tinygrad_reason.tokenizer" and obj["version"] == 1
    assert base64.b64decode(obj["ranks"][65]) == b"A"
    assert len(obj["ranks"]) == tok.n_ranks
    assert os.listdir(tmp_path) == ["t.json"]


def test_save_failure_leaves_old_file(tok, tmp_path, monkeypatch):
    path = tmp_path / "t.json"
    path.write_text("original")

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(tkm.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        tok.save(path)
    assert path.read_text() == "original" and os.listdir(tmp_path) == ["t.json"]


def _saved_obj(tok, tmp_path):
    p = tmp_path / "good.json"
    tok.save(p)
    return json.loads(p.read_text())


@pytest.mark.parametrize("mutate,match", [
    (lambda o: "not json {", r"bad\.json:1: invalid JSON"),
    (lambda o: "{\n\"a\": 1,\n\n}", r"bad\.json:4: invalid JSON"),
    (lambda o: [1, 2], "expected a JSON object"),
    (lambda o: {**o, "format": "other"}, "not a tokenizer file"),
    (lambda o: {**o, "version": 99}, "unsupported format version 99"),
    (lambda o: {k: v for k, v in o.items() if k != "pattern"}, "'pattern' missing"),
    (lambda o: {**o, "ranks": o["ranks"][:10] + ["!!notbase64"] + o["ranks"][11:]}, r"ranks\[10\] is not valid base64"),
    (lambda o: {**o, "ranks": o["ranks"] + [o["ranks"][3]]}, "duplicates ranks"),
    (lambda o: {**o, "ranks": [base64.b64encode(b"zq").decode()] + o["ranks"][1:]}, "every single byte"),
    (lambda o: {**o, "special_tokens": {**o["special_tokens"], "<|pad|>": 5}}, "consecutive"),
    (lambda o: {**o, "special_tokens": {(k if k != "<|step|>" else "<|stp|>"): v
                                        for k, v in o["special_tokens"].items()}}, "required"),
    (lambda o: {**o, "pattern": "(unclosed"}, "invalid split pattern"),
])
def test_load_bad_files_give_clear_errors(tok, tmp_path, mutate, match):
    obj = mutate(_saved_obj(tok, tmp_path))
    path = tmp_path / "bad.json"
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj, indent=0))
    with pytest.raises(TokenizerFileError, match=match) as ei:
        Tokenizer.load(path)
    assert str(path) in str(ei.value)


def test_load_missing_and_binary(tmp_path):
    with pytest.raises(FileNotFoundError):
        Tokenizer.load(tmp_path / "nope.json")
    p = tmp_path / "bin.json"
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(TokenizerFileError, match="bin.json"):
        Tokenizer.load(p)


# ------------------------------------------------------------------ tiktoken files
def _write_tiktoken(path, ranks, shuffle=False):
    lines = [f"{base64.b64encode(b).decode()} {r}" for b, r in sorted(ranks.items(), key=lambda kv: kv[1])]
    if shuffle:
        random.Random(0).shuffle(lines)
    path.write_text("\n".join(lines) + "\n")


def _gpt2_byte_order():
    """GPT-2 style: printable bytes get the low ranks, the rest follow (not rank == byte)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    return printable + [b for b in range(256) if b not in printable]


@pytest.mark.parametrize("shuffle", [False, True])
def test_from_tiktoken_file_roundtrip(tok, tmp_path, monkeypatch, shuffle):
    path = tmp_path / "ours.tiktoken"
    _write_tiktoken(path, tok.mergeable_ranks, shuffle=shuffle)
    t2 = Tokenizer.from_tiktoken_file(path)
    assert t2.mergeable_ranks == tok.mergeable_ranks and t2.special_ids == tok.special_ids
    for text in CORPUS[:6] + ["<|step|> 12345 🙂"]:
        assert t2.encode(text) == tok.encode(text)
    # tiktoken's own reader agrees with ours on the same file (local path, caching off)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", "")
    from tiktoken.load import load_tiktoken_bpe
    assert load_tiktoken_bpe(str(path)) == t2.mergeable_ranks


def test_from_tiktoken_file_gpt2_style_ranks(tmp_path):
    order = _gpt2_byte_order()
    ranks = {bytes([b]): r for r, b in enumerate(order)}
    for merged in [b"th", b"the", b" t", b" the", b"in", b"ing", b"er"]:
        ranks[merged] = len(ranks)
    path = tmp_path / "gpt2ish.tiktoken"
    _write_tiktoken(path, ranks)
    cl100k_pat = r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
    t = Tokenizer.from_tiktoken_file(path, pattern=cl100k_pat, specials=SPECIAL_TOKENS + ("<|extra|>",))
    ref = tiktoken.Encoding("ref", pat_str=cl100k_pat, mergeable_ranks=ranks, special_tokens={})
    for text in ["the thing is there", "sing 123 in the rain", " t the", "ÿ\x00\x7f"]:
        assert t.encode(text) == ref.encode_ordinary(text)
        assert t.decode(t.encode(text)) == text
    assert t.encode(" the") == [ranks[b" the"]]
    assert t.special_ids["<|extra|>"] == len(ranks) + 6 and t.vocab_size == len(ranks) + 7
    assert t.name == "gpt2ish"


def _good_lines(tok):
    return [f"{base64.b64encode(b).decode()} {r}" for b, r in sorted(tok.mergeable_ranks.items(), key=lambda kv: kv[1])]


@pytest.mark.parametrize("edit,match", [
    (lambda L: L[:4] + ["garbage"] + L[4:], r"bad\.tiktoken:5: expected 'base64_token rank'"),
    (lambda L: L[:4] + ["QQ== 4 extra"] + L[5:], r":5: expected"),
    (lambda L: L[:7] + ["@@@@ 7"] + L[8:], r":8: invalid base64"),
    (lambda L: L[:2] + [L[2].split()[0] + " two"] + L[3:], r":3: rank must be a non-negative integer"),
    (lambda L: L[:2] + [L[2].split()[0] + " -2"] + L[3:], r":3: rank must be"),
    (lambda L: L + [L[0].split()[0] + f" {len(L)}"], r"already defined with rank 0"),
    (lambda L: L + [base64.b64encode(b"zzzzq").decode() + " 3"], r"rank 3 already used on line 4"),
    (lambda L: L + [base64.b64encode(b"zzzzq").decode() + f" {len(L) + 5}"], "no gaps"),
    (lambda L: [base64.b64encode(b"zq").decode() + " 0"] + L[1:], "every single byte"),
    (lambda L: [], "no tokens found"),
    (lambda L: L[:3] + [" 3"] + L[4:], r":4: expected"),
])
def test_from_tiktoken_file_bad_files(tok, tmp_path, edit, match):
    lines = edit(_good_lines(tok))
    path = tmp_path / "bad.tiktoken"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(TokenizerFileError, match=match) as ei:
        Tokenizer.from_tiktoken_file(path)
    assert str(path) in str(ei.value)


def test_from_tiktoken_file_requires_reasoning_specials(tok, tmp_path):
    path = tmp_path / "ok.tiktoken"
    _write_tiktoken(path, tok.mergeable_ranks)
    with pytest.raises(ValueError, match="required"):
        Tokenizer.from_tiktoken_file(path, specials=["<|endoftext|>"])
    with pytest.raises(ValueError, match="duplicate"):
        Tokenizer.from_tiktoken_file(path, specials=SPECIAL_TOKENS + ("<|pad|>",))
    with pytest.raises(FileNotFoundError):
        Tokenizer.from_tiktoken_file(tmp_path / "missing.tiktoken")
    with pytest.raises(TokenizerFileError, match="directory"):
        Tokenizer.from_tiktoken_file(tmp_path)
