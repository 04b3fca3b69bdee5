"""GGUF files: our reader (io/gguf.py), the dequantizers (io/ggml_quants.py) and the model loader
(models/gguf.py), against the `gguf` package and transformers.

* Tiny files written here with gguf.GGUFWriter: every supported tensor type dequantizes to exactly
  what gguf.quants.dequantize gives (and near the values quantized); a hand-built Q4_0 / Q4_1 / Q8_0
  block checks the formulas independently of that package.
* Tiny Llama / Qwen2 / Qwen3 models: HF's weights written as llama.cpp's converter writes them (Llama's
  q and k rows permuted), loaded back by ours; logits equal HF's to 1e-5 of the logit scale.
* Broken files (bad magic, version, truncations, an unknown tensor type, a misaligned offset, an
  inexpressible config) fail with a GGUFError naming the file and the tensor or key.
The tests on the real SmolLM2 file are in test_smollm2.py.
"""
from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")          # pinned in the test extra (transformers' GGUF loader needs it)
transformers = pytest.importorskip("transformers")

from gguf import GGMLQuantizationType as Q  # noqa: E402

import tinygrad_reason as tg  # noqa: E402
from tinygrad_reason.io.ggml_quants import dequantize_q4_0, dequantize_q4_1, dequantize_q8_0  # noqa: E402
from tinygrad_reason.io.gguf import GGUFError, GGUFFile, read_metadata  # noqa: E402
from tinygrad_reason.models.gguf import config_from_gguf, hf_name_of, load_gguf  # noqa: E402

torch.set_num_threads(1)


def write_file(path, tensors: dict, meta: dict | None = None, arch: str = "llama") -> str:
    """A GGUF file holding {name: (float32 array, type)} and extra metadata {key: value}."""
    w = gguf.GGUFWriter(str(path), arch)
    for key, value in (meta or {}).items():
        if isinstance(value, bool):
            w.add_bool(key, value)
        elif isinstance(value, int):
            w.add_uint32(key, value)
        elif isinstance(value, float):
            w.add_float32(key, value)
        elif isinstance(value, str):
            w.add_string(key, value)
        else:
            w.add_array(key, value)
    for name, (arr, qtype) in tensors.items():
        if qtype in (Q.F32, Q.F16):
            w.add_tensor(name, arr.astype(np.float32 if qtype == Q.F32 else np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(arr, qtype), raw_dtype=qtype)   # shape from the bytes
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return str(path)


# ------------------------------------------------------------------ the tensor types
TYPES = [Q.F32, Q.F16, Q.BF16, Q.Q4_0, Q.Q4_1, Q.Q8_0]


@pytest.mark.parametrize("qtype", TYPES, ids=lambda q: q.name)
def test_every_type_dequantizes_like_the_gguf_package(tmp_path, qtype):
    rng = np.random.default_rng(int(qtype))
    arr = (rng.standard_normal((6, 64)) * np.linspace(0.1, 3, 64)).astype(np.float32)
    path = write_file(tmp_path / "t.gguf", {"w": (arr, qtype)})
    ref = gguf.GGUFReader(path).tensors[0]
    with GGUFFile(path) as f:
        ours = f.load("w")
        assert f.tensors["w"].type.name == qtype.name and ours.shape == arr.shape and ours.dtype == np.float32
    np.testing.assert_array_equal(ours, gguf.quants.dequantize(ref.data, ref.tensor_type).reshape(arr.shape))
    # and near what was quantized: 4-bit codes step by (max - min) / 15 of a block
    tol = {Q.F32: 0, Q.F16: 2e-3, Q.BF16: 2e-2, Q.Q8_0: 3e-2, Q.Q4_0: 0.6, Q.Q4_1: 0.4}[qtype]
    assert np.abs(ours - arr).max() <= tol * np.abs(arr).max()


def _block(*fields) -> bytes:
    return b"".join(fields)


def test_the_block_formulas_by_hand():
    codes = np.arange(32) % 16                       # value j: code j mod 16
    packed = (codes[:16] | (codes[16:] << 4)).astype(np.uint8).tobytes()   # low nibbles first
    d, m = np.float16(0.5).tobytes(), np.float16(-1.0).tobytes()
    np.testing.assert_array_equal(dequantize_q4_0(_block(d, packed)), 0.5 * (codes - 8))
    np.testing.assert_array_equal(dequantize_q4_1(_block(d, m, packed)), 0.5 * codes - 1.0)
    q8 = np.arange(-16, 16, dtype=np.int8)
    np.testing.assert_array_equal(dequantize_q8_0(_block(np.float16(0.25).tobytes(), q8.tobytes())), 0.25 * q8)


def test_metadata_of_every_kind_reads_back(tmp_path):
    meta = {"t.u32": 7, "t.f32": 1.5, "t.bool": True, "t.str": "héllo\n", "t.strs": ["a", "", "ü"],
            "t.ints": [1, 2, 3], "t.floats": [0.5, -2.0]}
    path = write_file(tmp_path / "m.gguf", {"w": (np.ones((2, 32), np.float32), Q.F32)}, meta)
    got = read_metadata(path)
    for k, v in meta.items():
        assert got[k] == v, k
    assert got["general.architecture"] == "llama"


# ------------------------------------------------------------------ broken files
@pytest.fixture
def good(tmp_path):
    return write_file(tmp_path / "good.gguf", {"blk.0.w": (np.ones((4, 64), np.float32), Q.Q8_0)},
                      {"t.x": 1})


def _patched(tmp_path, good, edit) -> str:
    data = bytearray(open(good, "rb").read())
    edit(data)
    path = tmp_path / "bad.gguf"
    path.write_bytes(bytes(data))
    return str(path)


def _type_field(data: bytearray) -> int:
    """Byte offset of the tensor's u32 type: after its name, n_dims and dims."""
    name = b"blk.0.w"
    at = data.index(struct.pack("<Q", len(name)) + name) + 8 + len(name)
    n_dims = struct.unpack_from("<I", data, at)[0]
    return at + 4 + 8 * n_dims


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.__setitem__(slice(0, 4), b"GGUX"), "bad magic"),
    (lambda d: d.__setitem__(slice(4, 8), struct.pack("<I", 1)), "version 1"),
    (lambda d: d.__setitem__(slice(_type_field(d), _type_field(d) + 4), struct.pack("<I", 12)),
     "tensor 'blk.0.w': tensor type 12 (Q4_K) is not supported"),
    (lambda d: d.__setitem__(slice(_type_field(d), _type_field(d) + 4), struct.pack("<I", 99)),
     "tensor type 99 (unknown)"),
    (lambda d: d.__setitem__(slice(_type_field(d) + 4, _type_field(d) + 12), struct.pack("<Q", 3)),
     "offset 3 is not a multiple of the alignment 32"),
    (lambda d: d.__delitem__(slice(len(d) - 40, len(d))), "run past the end of the file"),
    (lambda d: d.__delitem__(slice(60, len(d))), "truncated while reading"),
], ids=["magic", "version", "k-quant", "unknown-type", "misaligned", "truncated-data", "truncated-header"])
def test_a_broken_file_names_the_file_and_the_problem(tmp_path, good, edit, message):
    path = _patched(tmp_path, good, edit)
    with pytest.raises(GGUFError) as e:
        GGUFFile(path)
    assert path in str(e.value) and message in str(e.value)


def test_too_short_and_directory(tmp_path):
    (tmp_path / "short.gguf").write_bytes(b"GGUF")
    for path, message in ((tmp_path / "short.gguf", "too short"), (tmp_path, "is a directory")):
        with pytest.raises(GGUFError, match=message):
            GGUFFile(path)


# ------------------------------------------------------------------ tiny models against transformers
VOCAB, HIDDEN, LAYERS, HEADS, KV, INTER, CTX = 96, 64, 2, 4, 2, 128, 64


def hf_model(kind: str, tied: bool):
    common = dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                  num_key_value_heads=KV, intermediate_size=INTER, max_position_embeddings=CTX,
                  rms_norm_eps=1e-5, rope_theta=1000.0, tie_word_embeddings=tied)
    if kind == "llama":
        cfg, cls = transformers.LlamaConfig(**common), transformers.LlamaForCausalLM
    elif kind == "qwen2":
        cfg, cls = transformers.Qwen2Config(**common), transformers.Qwen2ForCausalLM
    else:
        cfg, cls = transformers.Qwen3Config(head_dim=24, **common), transformers.Qwen3ForCausalLM
    torch.manual_seed(0)
    model = cls(cfg).eval()
    with torch.no_grad():       # O(1) weights, so a wrong permutation or mapping shows in the logits
        for name, p in model.named_parameters():
            p.copy_(1 + 0.2 * torch.randn_like(p) if "norm" in name else 0.3 * torch.randn_like(p)
                    if name.endswith("bias") else torch.randn_like(p) / p.shape[-1] ** 0.5)
    return model


def gguf_name_of(hf: str) -> str:
    for i in range(LAYERS):
        for g in ("attn_norm", "ffn_norm", "attn_q_norm", "attn_k_norm", "attn_q", "attn_k", "attn_v",
                  "attn_output", "ffn_gate", "ffn_up", "ffn_down"):
            for kind in ("weight", "bias"):
                if hf_name_of(f"blk.{i}.{g}.{kind}") == hf:
                    return f"blk.{i}.{g}.{kind}"
    return {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
            "lm_head.weight": "output.weight"}[hf]


def permute(w: np.ndarray, n_heads: int) -> np.ndarray:
    """llama.cpp's convert_hf_to_gguf permutation of Llama's q / k rows (pairs interleaved)."""
    return w.reshape(n_heads, 2, w.shape[0] // n_heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_model(path, kind: str, model, qtype=Q.F32, permute_qk: bool = True) -> str:
    c = model.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    meta = {f"{kind}.{k}": v for k, v in {
        "block_count": c.num_hidden_layers, "context_length": c.max_position_embeddings,
        "embedding_length": c.hidden_size, "feed_forward_length": c.intermediate_size,
        "attention.head_count": c.num_attention_heads, "attention.head_count_kv": c.num_key_value_heads,
        "attention.layer_norm_rms_epsilon": float(c.rms_norm_eps), "rope.freq_base": 1000.0,
        "rope.dimension_count": head_dim, "attention.key_length": head_dim,
        "attention.value_length": head_dim}.items()}
    # transformers' GGUF loader takes the vocabulary size from the tokenizer's tokens
    meta.update({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": [f"t{i}" for i in range(c.vocab_size)]})
    tensors = {}
    for name, p in model.state_dict().items():
        if name == "lm_head.weight" and c.tie_word_embeddings:
            continue
        w = p.detach().numpy().astype(np.float32)
        if kind == "llama" and permute_qk and ("q_proj" in name or "k_proj" in name):
            w = permute(w, c.num_attention_heads if "q_proj" in name else c.num_key_value_heads)
        tensors[gguf_name_of(name)] = (w, qtype if w.ndim == 2 else Q.F32)
    return write_file(path, tensors, meta, arch=kind)


def assert_same_logits(hf, ours, ids, tol=1e-5):
    """Our logits within `tol` of the HF model's, relative to the largest logit."""
    with torch.no_grad():
        ref = hf(torch.tensor(ids)).logits.numpy()
    with tg.no_grad():
        got = ours(tg.Tensor(ids)).data
    assert np.abs(got - ref).max() <= tol * np.abs(ref).max()


@pytest.mark.parametrize("kind, tied", [("llama", False), ("llama", True), ("qwen2", False), ("qwen3", True)])
def test_a_tiny_model_loads_equal_to_transformers(tmp_path, kind, tied):
    hf = hf_model(kind, tied)
    path = write_model(tmp_path / f"{kind}.gguf", kind, hf)
    ours, cfg, meta = load_gguf(path)
    assert cfg.tie_embeddings == tied and cfg.qk_norm == (kind == "qwen3") and cfg.qkv_bias == (kind == "qwen2")
    assert cfg.n_kv_heads == KV and cfg.rope_base == 1000.0 and cfg.norm_eps == pytest.approx(1e-5)
    assert_same_logits(hf, ours, np.random.default_rng(0).integers(0, VOCAB, (2, 40)))


def test_the_llama_permutation_is_undone_and_needed(tmp_path):
    """A Llama file written without llama.cpp's q / k permutation loads to other logits: the undo matters."""
    hf = hf_model("llama", False)
    path = write_model(tmp_path / "l.gguf", "llama", hf, permute_qk=False)
    ours, _, _ = load_gguf(path)
    ids = np.arange(30)[None] % VOCAB
    with torch.no_grad():
        ref = hf(torch.tensor(ids)).logits.numpy()
    with tg.no_grad():
        assert np.abs(ours(tg.Tensor(ids)).data - ref).max() > 0.05 * np.abs(ref).max()


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
@pytest.mark.parametrize("qtype", [Q.Q4_0, Q.Q4_1, Q.Q8_0, Q.F16], ids=lambda q: q.name)
def test_a_quantized_file_loads_equal_to_transformers_gguf_loader(tmp_path, kind, qtype):
    """transformers dequantizes and un-permutes the same file its own way (through the gguf package).
    (Qwen3 is left out: transformers' loader ignores qwen3.attention.key_length.)"""
    path = write_model(tmp_path / f"{kind}.gguf", kind, hf_model(kind, True), qtype)
    ref_model = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file=f"{kind}.gguf",
                                                                  dtype=torch.float32).eval()
    ours, _, _ = load_gguf(path)
    assert_same_logits(ref_model, ours, np.random.default_rng(1).integers(0, VOCAB, (1, 33)))


# ------------------------------------------------------------------ configs we cannot express
def base_meta(arch="llama", **changes):
    meta = {"general.architecture": arch, f"{arch}.block_count": 1, f"{arch}.context_length": 32,
            f"{arch}.embedding_length": 16, f"{arch}.feed_forward_length": 32, f"{arch}.attention.head_count": 2,
            f"{arch}.attention.layer_norm_rms_epsilon": 1e-5, f"{arch}.vocab_size": 50}
    meta.update(changes)
    return {k: v for k, v in meta.items() if v is not None}


@pytest.mark.parametrize("changes, key", [
    ({"general.architecture": "gemma3"}, "general.architecture"),
    ({"llama.rope.dimension_count": 4}, "llama.rope.dimension_count"),
    ({"llama.rope.scaling.type": "yarn"}, "llama.rope.scaling.type"),
    ({"llama.attention.head_count_kv": [2, 1]}, "llama.attention.head_count_kv"),
    ({"llama.attention.sliding_window": 8}, "llama.attention.sliding_window"),
    ({"llama.attention.value_length": 4}, "llama.attention.value_length"),
    ({"llama.block_count": None}, "llama.block_count"),
    ({"llama.attention.head_count": 3}, "invalid config"),
])
def test_config_from_gguf_refuses_naming_the_key(changes, key):
    with pytest.raises(GGUFError) as e:
        config_from_gguf(base_meta(**changes), "x.gguf")
    assert "x.gguf" in str(e.value) and key in str(e.value)


def test_config_from_gguf_reads_the_sizes():
    cfg = config_from_gguf(base_meta("qwen3", **{"qwen3.attention.key_length": 12, "qwen3.attention.head_count_kv": 1,
                                                 "qwen3.rope.freq_base": 5e5}), tied=False)
    assert (cfg.vocab_size, cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.mlp_hidden) == (50, 16, 2, 1, 12, 32)
    assert cfg.qk_norm and not cfg.tie_embeddings and cfg.rope_base == 5e5


def test_a_missing_or_unknown_tensor_is_an_error_and_nothing_loads(tmp_path):
    hf = hf_model("llama", True)
    path = write_model(tmp_path / "m.gguf", "llama", hf)
    with GGUFFile(path) as f:
        tensors = {n: (f.load(n), Q.F32) for n in f.tensors}
        meta = {k: v for k, v in f.metadata.items() if k.startswith("llama.")}
    missing = dict(tensors)
    del missing["blk.1.ffn_up.weight"]
    with pytest.raises(GGUFError, match=r"missing: \['model.layers.1.mlp.up_proj.weight'\]"):
        load_gguf(write_file(tmp_path / "missing.gguf", missing, meta))
    extra = dict(tensors, **{"blk.0.attn_sinks.weight": (np.ones(32, np.float32), Q.F32)})
    with pytest.raises(GGUFError, match="blk.0.attn_sinks.weight"):
        load_gguf(write_file(tmp_path / "extra.gguf", extra, meta))
