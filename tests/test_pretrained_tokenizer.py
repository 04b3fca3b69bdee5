"""PretrainedTokenizer against Hugging Face: token for token on real text, hard cases and errors.

The reference for SmolLM2 is transformers' tokenizer converted from the GGUF, with its
pre-tokenizer set to the one SmolLM2's own tokenizer.json has (Digits + ByteLevel):
transformers' GGUF converter does not know ``tokenizer.ggml.pre = 'smollm'`` and splits like
GPT-2 instead (see test_transformers_gguf_converter_splits_like_gpt2).  That unmodified
tokenizer is the reference for our 'gpt2' pre-tokenizer on the same vocabulary.
"""
import copy
import json
import os
import random

import pytest

from tinygrad_reason.models.pretrained_tokenizer import (
    DIGITS_GPT2_SPLIT, GGUF_PRE_SPLITS, PretrainedTokenizer, PretrainedTokenizerError, byte_decoder)

gguf = pytest.importorskip("gguf")
tokenizers = pytest.importorskip("tokenizers")
transformers = pytest.importorskip("transformers")

DATA_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")
MISSING = bytes([0x04, 0x06, 0x13, 0x14, 0x16, 0x1d, 0xc0, 0xc1, 0xf1, 0xf2, *range(0xf5, 0x100)])

HARD_CASES = [
    "", " ", "   ", "\n", "\n\n\n", "\t", "\t\t x", "\r\n", "a\r\nb\r\n\r\n", " \n \n",
    "a  1", "a 1", "x\n 1", "  \n\n 7", "a   b", "a    \n  b", "word  \tword", "1 2  3   4", "1\n2",
    "12345678901234567890", "3.14159 -42 1,000,000 1e-9 0x1F", "$1.50 + 2^10 = ?", "x2 + y3 = z10",
    "It's he'll they're we've I'm you'd", "IT'S HE'LL 'LL 'S 'Ll 'sx", "''s '' ' s",
    "héllo wörld çà Ñandú", "e\u0301 a\u0308 o\u0302\u0323", "中文字符 日本語のテキスト 한국어",
    "👍 👍🏽 👨‍👩‍👧 🇫🇷", "مرحبا بالعالم", "שלום עולם", "Ελληνικά Кириллица",
    "１２３ ½ ² ٣٤ ⅷ ௧", "\u00a0\u2009\u3000x\u200b", "ſ K ǅ İ ß ﬁ",
    "def f(x):\n    return x ** 2  # square\n\n\nclass A:\n\tpass\n",
    "for (int i = 0; i < n; ++i) { a[i] = b[i] * 2; }\n",
    "\\frac{1}{2} + \\sqrt{x^2+1} \\le \\pi",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>", "x<|im_end|>y", "<|im_start", "<repo_name><reponame><file_sep>",
    "hi\x04there", "!\x04!", "a\x04b", " \x04the", "\x04", "\x06\x13\x14\x16\x1d",
    "\U00040000", "x\U0004ffffy", "\U000bffff \U000a0000", "é\x04é", "1\x042",
]


def gguf_metadata(path) -> dict:
    reader = gguf.GGUFReader(path)
    return {k: f.contents() for k, f in reader.fields.items() if k.startswith("tokenizer.")}


def hf_ids(tok, texts, allow_special=False):
    """tokenizers' ids; allow_special=False reads special-token strings as text, as ours does."""
    tok.encode_special_tokens = not allow_special
    return [e.ids for e in tok.encode_batch(list(texts), add_special_tokens=False)]


def corpus() -> list[str]:
    if not os.path.isdir(DATA_DIR):
        pytest.skip(f"no evaluation data at {DATA_DIR}")
    texts = []
    with open(os.path.join(DATA_DIR, "gsm8k", "test.jsonl"), encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            texts += [rec["question"], rec["answer"]]
    with open(os.path.join(DATA_DIR, "math500", "test.jsonl"), encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            texts += [rec["problem"], rec["solution"]]
    return texts


def code_point_sweep(limit=0x10000) -> list[str]:
    """Every code point below ``limit`` in contexts that stress the split regex."""
    cps = [chr(c) for c in range(limit) if not 0xD800 <= c < 0xE000]
    return ["".join(f"{c}a {c}1  {c}\n{c}'s" for c in cps[i:i + 256]) for i in range(0, len(cps), 256)]


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def meta(smollm2_gguf):
    return gguf_metadata(smollm2_gguf)


@pytest.fixture(scope="module")
def ours(meta, smollm2_gguf):
    return PretrainedTokenizer.from_gguf_metadata(meta, smollm2_gguf)


@pytest.fixture(scope="module")
def hf_tok(smollm2_gguf):
    from transformers import AutoTokenizer
    folder, name = os.path.split(smollm2_gguf)
    return AutoTokenizer.from_pretrained(folder, gguf_file=name)


@pytest.fixture(scope="module")
def smollm_ref(hf_tok):
    """transformers' converted tokenizer with SmolLM2's published pre-tokenizer."""
    from tokenizers import Tokenizer, pre_tokenizers
    tok = Tokenizer.from_str(hf_tok.backend_tokenizer.to_str())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    return tok


@pytest.fixture(scope="module")
def gpt2_ref(hf_tok):
    from tokenizers import Tokenizer
    return Tokenizer.from_str(hf_tok.backend_tokenizer.to_str())


def tokenizer_json_with(tmp_path, base, pre_tokenizer, normalizer=None, name="tokenizer.json"):
    from tokenizers import Tokenizer
    tok = Tokenizer.from_str(base.to_str())
    tok.pre_tokenizer = pre_tokenizer
    if normalizer is not None:
        tok.normalizer = normalizer
    path = tmp_path / name
    tok.save(str(path))
    return str(path), tok


# ----------------------------------------------------------------------------- the real GGUF
def test_smollm2_vocabulary_facts(ours, meta):
    assert ours.vocab_size == len(meta["tokenizer.ggml.tokens"]) == 49152
    assert sorted(ours.special_ids.values()) == list(range(17))
    assert ours.special_ids["<|im_start|>"] == 1 and ours.special_ids["<|im_end|>"] == 2
    assert all(ours.is_special(i) for i in range(17)) and not ours.is_special(17)
    assert (ours.bos_id, ours.eot_id, ours.pad_id, ours.unk_id) == (1, 2, 2, 0)
    assert ours.add_bos_token is False
    assert (ours.question_id, ours.think_id, ours.step_id, ours.answer_id) == (None, None, None, None)
    assert ours.missing_bytes == MISSING
    assert ours.pattern == DIGITS_GPT2_SPLIT
    assert ours.chat_template == meta["tokenizer.chat_template"]
    assert [ours.token_bytes(i) for i in (0, 17, 216)] == [b"<|endoftext|>", b"!", b" "]


def test_corpus_token_for_token(ours, smollm_ref):
    texts = corpus()
    ref = hf_ids(smollm_ref, texts)
    mine = ours.encode_batch(texts)
    mismatches = [t for t, a, b in zip(texts, ref, mine) if a != b]
    assert not mismatches, f"{len(mismatches)} of {len(texts)} differ, e.g. {mismatches[0][:200]!r}"
    assert sum(map(len, ref)) > 300_000
    assert all(ours.decode(ids) == t for t, ids in zip(texts, mine))


@pytest.mark.parametrize("allow_special", [False, True])
def test_hard_cases_token_for_token(ours, smollm_ref, allow_special):
    ref = hf_ids(smollm_ref, HARD_CASES, allow_special)
    for text, expected in zip(HARD_CASES, ref):
        assert ours.encode(text, allow_special=allow_special) == expected, text
    assert ours.encode_batch(HARD_CASES, allow_special=allow_special) == ref


def test_special_tokens_only_when_allowed(ours):
    text = "<|im_start|>user\nhi<|im_end|>"
    assert ours.encode(text, allow_special=True)[0] == 1
    assert not any(ours.is_special(i) for i in ours.encode(text))
    assert ours.decode(ours.encode(text, allow_special=True)) == text == ours.decode(ours.encode(text))


def test_round_trip_where_representable(ours):
    for text in HARD_CASES:
        representable = not set(text.encode("utf-8")) & set(MISSING)
        assert (ours.decode(ours.encode(text)) == text) == representable, text


def test_missing_bytes_are_dropped_like_transformers(ours, smollm_ref):
    # HF drops a byte that has no token, inside its piece: what is left merges as if adjacent
    assert ours.encode("\x04") == []
    assert ours.encode("!\x04!") == ours.encode("!!") == [ours.encoding.encode_single_token(b"!!")]
    byte_0x80 = ours.encoding.encode_single_token(b"\x80")
    assert ours.encode("\U00040000") == [byte_0x80] * 3            # F1 80 80 80 without F1
    assert ours.decode(ours.encode("x\U00040000y")) == "x\ufffd\ufffd\ufffdy"
    rng = random.Random(0)
    alphabet = ["\x04", "\x06", "\x13", "\x1d", "\U00040000", "\U000bffff", "\U000a1234", "a", "b", "!",
                " ", "  ", "1", "\n", "é", "<|im_start|>", "<|im_end|>", "the", "\t", "'s", "😀", "$"]
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(30))) for _ in range(2000)]
    for allow in (False, True):
        assert ours.encode_batch(texts, allow_special=allow) == hf_ids(smollm_ref, texts, allow)


def test_every_code_point_of_the_bmp(ours, smollm_ref):
    texts = code_point_sweep()
    assert ours.encode_batch(texts) == hf_ids(smollm_ref, texts)


def test_every_token_is_what_bpe_reaches(ours, gpt2_ref):
    """tiktoken emits a piece that is a whole token directly; HF (ignore_merges=False) merges
    up to it.  Equal only if BPE reaches every token, which holds for this vocabulary."""
    model = gpt2_ref.model
    for i in range(17, ours.vocab_size):
        assert [t.id for t in model.tokenize(gpt2_ref.id_to_token(i))] == [i], i
        assert ours.encoding._encode_single_piece(ours.token_bytes(i)) == [i]


def test_decode_equals_transformers(ours, hf_tok):
    rng = random.Random(1)
    for _ in range(300):
        ids = [rng.randrange(ours.vocab_size) for _ in range(rng.randrange(1, 12))]
        assert ours.decode(ids) == hf_tok.decode(ids), ids
    assert ours.decode_bytes([216, 218]) == b" \x80"
    with pytest.raises(ValueError, match="invalid token id"):
        ours.decode([ours.vocab_size])


def test_gpt2_pre_tokenizer_equals_unmodified_transformers(meta, smollm2_gguf, gpt2_ref):
    tok = PretrainedTokenizer.from_gguf_metadata({**meta, "tokenizer.ggml.pre": "gpt2"}, smollm2_gguf)
    texts = HARD_CASES + code_point_sweep(0x3000)
    if os.path.isdir(DATA_DIR):
        texts += corpus()[:1000]
    assert tok.encode_batch(texts) == hf_ids(gpt2_ref, texts)


def test_transformers_gguf_converter_splits_like_gpt2(ours, hf_tok):
    """Why the SmolLM2 reference sets the pre-tokenizer: transformers 5.23 ignores 'smollm'.
    If this fails, transformers learned 'smollm' and can be the reference unmodified."""
    space = ours.encoding.encode_single_token(b" ")
    two_spaces = ours.encoding.encode_single_token(b"  ")
    a, one = ours.encode("a1")
    assert hf_tok.encode("a  1", add_special_tokens=False) == [a, space, space, one]
    assert ours.encode("a  1") == [a, two_spaces, one]


def test_gguf_pre_regexes_are_transformers_own():
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS
    for name in ("qwen2", "deepseek-r1-qwen", "llama-bpe"):
        assert GGUF_PRE_SPLITS[name] == GGUF_PRE_TOKENIZER_SPLITS[name]
    assert "smollm" not in GGUF_PRE_TOKENIZER_SPLITS and "gpt2" not in GGUF_PRE_TOKENIZER_SPLITS


# ----------------------------------------------------------------------------- tokenizer.json
def test_tokenizer_json_from_save_pretrained(tmp_path, hf_tok, smollm_ref, ours):
    hf_tok.save_pretrained(str(tmp_path))
    spec = json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8"))
    spec["pre_tokenizer"] = json.loads(smollm_ref.to_str())["pre_tokenizer"]
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    tok = PretrainedTokenizer.from_tokenizer_json(tmp_path / "tokenizer.json")
    assert tok.pattern == DIGITS_GPT2_SPLIT
    assert (tok.bos_id, tok.eot_id, tok.pad_id, tok.vocab_size) == (1, 2, 2, 49152)
    assert tok.chat_template == hf_tok.chat_template
    assert tok.special_ids == ours.special_ids
    texts = HARD_CASES + (corpus()[:600] if os.path.isdir(DATA_DIR) else [])
    for allow in (False, True):
        assert tok.encode_batch(texts, allow) == hf_ids(smollm_ref, texts, allow)

    # the older "a b" string form of the merges gives the same tokenizer
    assert isinstance(spec["model"]["merges"][0], list)
    spec["model"]["merges"] = [" ".join(m) for m in spec["model"]["merges"]]
    (tmp_path / "tokenizer.json").write_text(json.dumps(spec), encoding="utf-8")
    again = PretrainedTokenizer.from_tokenizer_json(tmp_path / "tokenizer.json")
    assert again.encode_batch(texts) == tok.encode_batch(texts)


@pytest.mark.parametrize("style", ["qwen2", "qwen2-nfc", "llama3", "gaps", "digits-contiguous", "gpt2"])
def test_tokenizer_json_pre_tokenizers(tmp_path, gpt2_ref, style):
    """Each supported pre-tokenizer shape on the SmolLM2 vocabulary; 'qwen2-nfc' is Qwen2's whole
    front end (NFC normalizer + Split + ByteLevel)."""
    from tokenizers import Regex, normalizers, pre_tokenizers
    split = {"qwen2": GGUF_PRE_SPLITS["qwen2"], "qwen2-nfc": GGUF_PRE_SPLITS["qwen2"],
             "llama3": GGUF_PRE_SPLITS["llama-bpe"],
             "gaps": r"\p{L}+|\p{N}"}  # 'gaps' leaves text unmatched: Isolated keeps it as pieces
    if style in split:
        pre = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split[style]), behavior="isolated"),
                                       pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    elif style == "digits-contiguous":
        pre = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=False),
                                       pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    else:
        pre = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    path, ref = tokenizer_json_with(tmp_path, gpt2_ref, pre, normalizers.NFC() if "nfc" in style else None)
    tok = PretrainedTokenizer.from_tokenizer_json(path)
    assert tok.nfc == ("nfc" in style)
    texts = HARD_CASES + code_point_sweep(0x3000)
    if os.path.isdir(DATA_DIR):
        texts += corpus()[:300]
    assert tok.encode_batch(texts) == hf_ids(ref, texts)
    assert tok.eot_id is None and tok.chat_template is None   # no tokenizer_config.json beside it


# ----------------------------------------------------------------------------- small synthetic files
ALPHABET = [c for _, c in sorted((b, c) for c, b in byte_decoder().items())]


def tiny_json(**changes) -> dict:
    """A complete byte-level BPE: 256 bytes, merges 'a b' and 'ab c', one special token."""
    vocab = {c: i for i, c in enumerate(ALPHABET)}
    vocab.update({"ab": 256, "abc": 257, "<|endoftext|>": 258})
    spec = {"version": "1.0", "truncation": None, "padding": None, "normalizer": None,
            "added_tokens": [{"id": 258, "content": "<|endoftext|>", "single_word": False, "lstrip": False,
                              "rstrip": False, "normalized": False, "special": True}],
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                              "use_regex": True},
            "post_processor": None,
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                        "use_regex": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                      "ignore_merges": False, "vocab": vocab, "merges": ["a b", "ab c"]}}
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        node = spec
        for p in parents:
            node = node[p]
        node[key] = value
    return spec


def write(tmp_path, spec, config=None) -> str:
    path = tmp_path / "tokenizer.json"
    path.write_text(json.dumps(spec), encoding="utf-8")
    if config is not None:
        (tmp_path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return str(path)


def test_tiny_tokenizer_json_equals_tokenizers(tmp_path):
    from tokenizers import Tokenizer
    path = write(tmp_path, tiny_json(), {"eos_token": {"content": "<|endoftext|>"}, "chat_template": "T"})
    tok = PretrainedTokenizer.from_tokenizer_json(path)
    ref = Tokenizer.from_file(path)
    texts = ["abc ab abcabc", "\x04\xff \U00040000", "a<|endoftext|>bc", "cab abca"] + HARD_CASES
    assert tok.missing_bytes == b""
    for allow in (False, True):
        assert tok.encode_batch(texts, allow) == hf_ids(ref, texts, allow)
    assert all(tok.decode(tok.encode(t)) == t for t in texts)
    assert (tok.eot_id, tok.pad_id, tok.bos_id, tok.chat_template) == (258, 258, None, "T")


def test_non_special_added_tokens_always_match(tmp_path):
    from tokenizers import Tokenizer
    spec = tiny_json()
    spec["model"]["vocab"]["<think>"] = 259
    spec["added_tokens"].append({"id": 259, "content": "<think>", "single_word": False, "lstrip": False,
                                 "rstrip": False, "normalized": False, "special": False})
    path = write(tmp_path, spec)
    tok, ref = PretrainedTokenizer.from_tokenizer_json(path), Tokenizer.from_file(path)
    text = "x<think>abc</think><|endoftext|>"
    assert 259 in tok.encode(text) and 258 not in tok.encode(text)
    for allow in (False, True):
        assert tok.encode(text, allow) == hf_ids(ref, [text], allow)[0]


def test_tokens_no_merge_makes(tmp_path):
    """'abc' without the merge 'ab c': HF's BPE never makes it, but it decodes.  With
    ignore_merges HF would emit it for the piece 'abc' only, which tiktoken cannot express."""
    from tokenizers import Tokenizer
    path = write(tmp_path, tiny_json(model__merges=["a b"]))
    tok, ref = PretrainedTokenizer.from_tokenizer_json(path), Tokenizer.from_file(path)
    texts = ["abc", "abcabc", " abc", "ab c", "xabc"]
    assert tok.encode_batch(texts) == hf_ids(ref, texts)
    assert 257 not in sum(tok.encode_batch(texts), [])
    assert tok.decode([257, 256]) == "abcab" and not tok.is_special(257)
    assert tok.encode("abc<|endoftext|>", allow_special=True) == [256, 99, 258]
    path = write(tmp_path, tiny_json(model__merges=["a b"], model__ignore_merges=True))
    with pytest.raises(PretrainedTokenizerError, match="model.ignore_merges"):
        PretrainedTokenizer.from_tokenizer_json(path)


def test_several_merges_for_one_token(tmp_path):
    """Merge lists converted from tiktoken (Llama-3) give every split of a token."""
    from tokenizers import Tokenizer
    spec = tiny_json(model__merges=["b c", "a b", "ab c", "a bc"], model__ignore_merges=True)
    spec["model"]["vocab"] = {**{k: v + 1 if v >= 256 else v for k, v in spec["model"]["vocab"].items()},
                              "bc": 256}
    spec["added_tokens"][0]["id"] = 259
    path = write(tmp_path, spec)
    tok, ref = PretrainedTokenizer.from_tokenizer_json(path), Tokenizer.from_file(path)
    texts = ["abc", "abcbc", "bcab abcab", "cabca", "aabbcc"]
    assert tok.encode_batch(texts) == hf_ids(ref, texts)


def test_duplicate_token_bytes_are_refused():
    """A GGUF token outside the byte alphabet is read as UTF-8, so it can repeat a spelled one."""
    meta = tiny_meta()
    meta["tokenizer.ggml.tokens"] = meta["tokenizer.ggml.tokens"] + ["中", "ä¸Ń"]   # both E4 B8 AD
    meta["tokenizer.ggml.token_type"] = meta["tokenizer.ggml.token_type"] + [1, 1]
    with pytest.raises(PretrainedTokenizerError, match="both"):
        PretrainedTokenizer.from_gguf_metadata(meta, "dup.gguf")


@pytest.mark.parametrize("dotted, value, field", [
    ("model__type", "WordPiece", "model.type"),
    ("model__byte_fallback", True, "model.byte_fallback"),
    ("model__dropout", 0.1, "model.dropout"),
    ("model__continuing_subword_prefix", "##", "model.continuing_subword_prefix"),
    ("normalizer", {"type": "NFKC"}, "normalizer"),
    ("normalizer", {"type": "Sequence", "normalizers": [{"type": "NFC"}, {"type": "Lowercase"}]},
     "normalizer"),
    ("decoder", {"type": "Metaspace"}, "decoder"),
    ("pre_tokenizer", {"type": "Metaspace"}, "pre_tokenizer"),
    ("pre_tokenizer", {"type": "Whitespace"}, "pre_tokenizer"),
    ("pre_tokenizer", {"type": "ByteLevel", "add_prefix_space": True, "use_regex": True}, "add_prefix_space"),
    ("pre_tokenizer", {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"String": " "}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}]}, "Split.pattern"),
    ("pre_tokenizer", {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": "a"}, "behavior": "Removed", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}]}, "Split.behavior"),
    ("model__merges", ["ab c", "a b"], "model.merges"),
    ("model__merges", ["a b", "x"], "model.merges"),
    ("model__vocab", {**{c: i for i, c in enumerate(ALPHABET)}, "a b": 256}, "model.vocab"),
])
def test_tokenizer_json_errors_name_the_field(tmp_path, dotted, value, field):
    path = write(tmp_path, tiny_json(**{dotted: value}))
    with pytest.raises(PretrainedTokenizerError) as e:
        PretrainedTokenizer.from_tokenizer_json(path)
    assert path in str(e.value) and field in str(e.value)


def test_tokenizer_json_file_errors(tmp_path):
    with pytest.raises(PretrainedTokenizerError, match="cannot read"):
        PretrainedTokenizer.from_tokenizer_json(tmp_path / "absent.json")
    (tmp_path / "tokenizer.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(PretrainedTokenizerError, match="not valid JSON"):
        PretrainedTokenizer.from_tokenizer_json(tmp_path / "tokenizer.json")
    spec = tiny_json()
    del spec["model"]["vocab"][ALPHABET[4]]                 # a missing byte ...
    spec["model"]["unk_token"] = "<|endoftext|>"            # ... that HF would turn into unk
    with pytest.raises(PretrainedTokenizerError, match="model.unk_token"):
        PretrainedTokenizer.from_tokenizer_json(write(tmp_path, spec))
    spec = tiny_json()
    spec["added_tokens"][0]["lstrip"] = True
    with pytest.raises(PretrainedTokenizerError, match=r"added_tokens\[0\].lstrip"):
        PretrainedTokenizer.from_tokenizer_json(write(tmp_path, spec))
    spec = tiny_json(normalizer={"type": "NFC"})
    spec["added_tokens"][0]["content"] = "<|fin|>é"
    spec["model"]["vocab"]["<|fin|>é"] = spec["model"]["vocab"].pop("<|endoftext|>")
    with pytest.raises(PretrainedTokenizerError, match=r"added_tokens\[0\].content"):
        PretrainedTokenizer.from_tokenizer_json(write(tmp_path, spec))
    with pytest.raises(PretrainedTokenizerError, match="tokenizer_config.json field 'eos_token'"):
        PretrainedTokenizer.from_tokenizer_json(write(tmp_path, tiny_json(), {"eos_token": "<nope>"}))


# ----------------------------------------------------------------------------- GGUF metadata errors
def tiny_meta(**changes) -> dict:
    tokens = ["<|endoftext|>", "<think>"] + ALPHABET[:4] + ALPHABET[5:] + ["ab", "abc"]   # no byte 0x04
    meta = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "gpt2", "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.token_type": [3, 4] + [1] * (len(tokens) - 2),
            "tokenizer.ggml.merges": ["a b", "ab c"], "tokenizer.ggml.bos_token_id": 0,
            "tokenizer.ggml.eos_token_id": 0, "tokenizer.ggml.add_bos_token": False}
    meta.update({f"tokenizer.ggml.{k}": v for k, v in changes.items()})
    return {k: v for k, v in meta.items() if v is not None}


def test_tiny_gguf_metadata(tmp_path):
    meta = tiny_meta()
    meta["tokenizer.ggml.tokens"] = meta["tokenizer.ggml.tokens"] + ["[PAD259]"]   # llama.cpp's filler
    meta["tokenizer.ggml.token_type"] = meta["tokenizer.ggml.token_type"] + [5]
    tok = PretrainedTokenizer.from_gguf_metadata(meta, "tiny.gguf")
    assert tok.special_ids == {"<|endoftext|>": 0, "<think>": 1} and tok.vocab_size == 260
    assert tok.decode([259]) == "[PAD259]" and not tok.is_special(259)
    assert 259 not in tok.encode("[PAD259]", allow_special=True) + tok.encode("\x04[PAD259]", True)
    assert tok.missing_bytes == b"\x04" and tok.pad_id == 0
    # user-defined (type 4) tokens are matched even without allow_special, also on the slow path
    assert tok.encode("abc<think>") == [258, 1] and tok.encode("\x04<think>") == [1]
    assert tok.encode("abc<|endoftext|>", allow_special=True) == [258, 0]
    assert 0 not in tok.encode("<|endoftext|>") and 0 not in tok.encode("\x04<|endoftext|>")


@pytest.mark.parametrize("changes, field", [
    ({"model": "llama"}, "tokenizer.ggml.model"),
    ({"model": None}, "tokenizer.ggml.model"),
    ({"pre": "falcon"}, "tokenizer.ggml.pre"),
    ({"tokens": None}, "tokenizer.ggml.tokens"),
    ({"tokens": "abc"}, "tokenizer.ggml.tokens"),
    ({"tokens": ["a", ""]}, "tokenizer.ggml.tokens"),
    ({"token_type": [1, 1]}, "tokenizer.ggml.token_type"),
    ({"merges": None}, "tokenizer.ggml.merges"),
    ({"merges": ["ab c", "a b"]}, "tokenizer.ggml.merges"),
    ({"merges": ["a b c"]}, "tokenizer.ggml.merges"),
    ({"merges": ["a b", "q z"]}, "tokenizer.ggml.merges"),
    ({"bos_token_id": 10 ** 6}, "tokenizer.ggml.bos_token_id"),
    ({"eos_token_id": "2"}, "tokenizer.ggml.eos_token_id"),
    ({"eos_token_id": True}, "tokenizer.ggml.eos_token_id"),
    ({"add_bos_token": 1}, "tokenizer.ggml.add_bos_token"),
])
def test_gguf_errors_name_the_field(changes, field):
    with pytest.raises(PretrainedTokenizerError) as e:
        PretrainedTokenizer.from_gguf_metadata(tiny_meta(**changes), "some/model.gguf")
    assert "some/model.gguf" in str(e.value) and field in str(e.value)


def test_real_metadata_refused_for_sentencepiece(meta, smollm2_gguf):
    bad = copy.copy(meta)
    bad["tokenizer.ggml.model"] = "llama"
    with pytest.raises(PretrainedTokenizerError, match="SentencePiece"):
        PretrainedTokenizer.from_gguf_metadata(bad, smollm2_gguf)
