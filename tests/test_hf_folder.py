"""Hugging Face checkpoint folders (save_pretrained's safetensors) loaded by load_hf_folder
(tinygrad_reason/models/hf_folder.py), against the transformers model that wrote them.

Tiny random models are built in the test from a config (nothing is downloaded): Llama with GQA
(untied and tied), Qwen2 (q/k/v biases), Qwen3 (QK-norm, explicit head_dim) and GPT-2 (Conv1D
weights, fused c_attn, learned positions, tanh GELU, tied head). HF's weights are re-drawn at O(1)
scale (as test_hf_parity.py does) so every parameter visibly moves the logits. Each is saved as one
file, as shards with an index (small max_shard_size), in bfloat16 and in float16.

Tolerances: float32 logits within 1e-5 of the HF model's, relative to the largest |logit| (observed
2.5e-7 to 9.6e-7, the same for every file form). A bf16 / f16 file is compared with transformers'
own float32 model loaded from that folder (from_pretrained on the local path): the file's rounded
values computed in float32, which is what our float32 model from that file computes.

Greedy decoding (24 tokens, batch 1 and a left-padded batch of 3 prompts of lengths 5, 9 and 3;
projections at 3x that scale, so the tied models do not just repeat a token)
must give HF generate(do_sample=False)'s tokens, both with our KV cache (generate()) and with a
full forward each step. The smallest top-2 logit gap met along the way (observed 9.5e-3 or more at
logit scales ~10) is asserted to be 10x the logit difference allowed, so equal tokens are not luck
at a near-tie.

Error cases name the file and the tensor or field, and are caught before any tensor data is read.
"""
from __future__ import annotations

import copy
import json
import os
import pickle

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")

from tinygrad_reason.generate import SamplingConfig, generate  # noqa: E402
from tinygrad_reason.io.safetensors import load_file, read_tensor_infos, save_file  # noqa: E402
from tinygrad_reason.models import config_from_hf  # noqa: E402
from tinygrad_reason.models import hf_folder  # noqa: E402
from tinygrad_reason.models.hf import model_from_hf  # noqa: E402
from tinygrad_reason.models.hf_folder import HFCheckpointError, load_hf_folder  # noqa: E402
from tinygrad_reason.nn import TransformerConfig  # noqa: E402

torch.set_num_threads(1)   # tiny ops: extra intra-op threads only contend

VOCAB, HIDDEN, LAYERS, HEADS, KV_HEADS, INTER, CTX = 64, 32, 2, 4, 2, 96, 64
PAD, NEW_TOKENS, TOL = 0, 24, 1e-5
DECODE_GAIN = 3.0    # projections' scale in the decoding tests (hf_model)
LLAMA_SIZES = dict(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=HEADS,
                   num_key_value_heads=KV_HEADS, intermediate_size=INTER, max_position_embeddings=CTX,
                   bos_token_id=1, eos_token_id=2)
GPT2_SIZES = dict(vocab_size=VOCAB, n_positions=CTX, n_embd=HIDDEN, n_layer=LAYERS, n_head=HEADS,
                  bos_token_id=VOCAB - 1, eos_token_id=VOCAB - 1)

# kind: (config class, model class, config arguments)
KINDS = {
    "llama_gqa": ("LlamaConfig", "LlamaForCausalLM", dict(LLAMA_SIZES, tie_word_embeddings=False)),
    "llama_tied": ("LlamaConfig", "LlamaForCausalLM", dict(LLAMA_SIZES, tie_word_embeddings=True)),
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", dict(LLAMA_SIZES, tie_word_embeddings=False,
                                                      use_sliding_window=False)),
    "qwen3": ("Qwen3Config", "Qwen3ForCausalLM", dict(LLAMA_SIZES, tie_word_embeddings=False, head_dim=12,
                                                      use_sliding_window=False)),
    "gpt2": ("GPT2Config", "GPT2LMHeadModel", GPT2_SIZES),
}
TORCH_DTYPES = {"single": torch.float32, "sharded": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}


def hf_model(kind: str, seed: int = 1, gain: float = 1.0, **changes):
    """HF's model with O(1)-scale random weights, in eval mode (float32): embeddings N(0, 0.5^2),
    projections gain / sqrt(fan in), norm gains 1 +- 0.2, biases 0.5. The decoding tests take gain 3:
    with weaker blocks the embedding dominates and greedy decoding of the tied models and GPT-2 just
    repeats one token."""
    cfg_cls, model_cls, args = KINDS[kind]
    cfg = getattr(transformers, cfg_cls)(**{**args, **changes})
    cfg._attn_implementation = "eager"
    torch.manual_seed(0)
    model = getattr(transformers, model_cls)(cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.ndim == 2:     # embeddings 0.5; projections 1/sqrt(fan in) (Conv1D stores (in, out))
                fan_in = p.shape[0] if kind == "gpt2" and ".h." in n else p.shape[1]
                embedding = "embed" in n or n.endswith(("wte.weight", "wpe.weight"))
                p.copy_(torch.randn(p.shape, generator=gen) * (0.5 if embedding else gain * fan_in ** -0.5))
            elif n.endswith("bias"):
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
    model.generation_config.eos_token_id = None        # decode the full length, as ours does without stop ids
    model.generation_config.pad_token_id = PAD
    return model.eval()


def save(hf, folder, variant: str = "single") -> None:
    """save_pretrained as safetensors in the variant's dtype (sharded: several shards), from a copy:
    hf stays float32 (a round trip through bf16 would also round its RoPE inv_freq buffer)."""
    kw = dict(max_shard_size="20KB") if variant == "sharded" else {}
    copy.deepcopy(hf).to(TORCH_DTYPES[variant]).save_pretrained(folder, safe_serialization=True, **kw)


def hf_reloaded(folder):
    """transformers' own float32 model from the folder: the reference for what the file holds."""
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32,
                                                              attn_implementation="eager")
    return model.eval()


def hf_logits(hf, ids, mask=None, positions=None) -> np.ndarray:
    as_torch = lambda a: None if a is None else torch.from_numpy(np.asarray(a, dtype=np.int64))  # noqa: E731
    with torch.no_grad():
        out = hf(input_ids=as_torch(ids), attention_mask=as_torch(mask), position_ids=as_torch(positions))
    return out.logits.numpy()


def relative_error(ours, ref) -> float:
    return float(np.abs(np.asarray(ours, np.float64) - ref).max() / np.abs(ref).max())


def ids_batch(b=2, t=20, seed=2):
    return np.random.default_rng(seed).integers(0, VOCAB, (b, t))


# ---------------------------------------------------------------- logits, every family and file form
@pytest.mark.parametrize("variant", list(TORCH_DTYPES))
@pytest.mark.parametrize("kind", list(KINDS))
def test_logits_match_hf(kind, variant, tmp_path):
    hf = hf_model(kind)
    ids = ids_batch()
    full_precision = hf_logits(hf, ids)
    save(hf, tmp_path, variant)
    if variant == "sharded":
        shards = [n for n in os.listdir(tmp_path) if n.endswith(".safetensors")]
        assert len(shards) > 2 and os.path.isfile(tmp_path / "model.safetensors.index.json")
    else:
        disk = {d for d, _ in read_tensor_infos(tmp_path / "model.safetensors").values()}
        assert disk == {{"single": "F32", "bf16": "BF16", "f16": "F16"}[variant]}
    ours, cfg, hf_dict = load_hf_folder(tmp_path)
    assert hf_dict["model_type"] == hf.config.model_type and cfg == ours.cfg
    assert ours.tok_emb.weight.dtype == np.float32 and not ours.training
    # the reference: transformers' float32 model from the same folder (the file's values, in float32)
    ref = hf_logits(hf_reloaded(tmp_path), ids)
    if variant in ("single", "sharded"):
        np.testing.assert_array_equal(ref, full_precision)
    assert np.abs(ref).max() > 1.0                     # O(1) logits: not a comparison of near-zeros
    assert relative_error(ours(ids).numpy(), ref) < TOL, f"{kind} {variant}"
    if variant in ("bf16", "f16"):                     # the rounding shows: the file's values were read
        assert relative_error(ref, full_precision) > 10 * TOL


def test_float64_load_holds_the_file_values_exactly(tmp_path):
    """bf16 -> float64 is exact: every parameter equals the HF tensor it came from."""
    hf = hf_model("llama_gqa")
    save(hf, tmp_path, "bf16")
    ours, _, _ = load_hf_folder(tmp_path, dtype=np.float64)
    state = ours.state_dict()
    assert state["tok_emb.weight"].dtype == np.float64
    rounded = {n: p.detach().to(torch.bfloat16).double().numpy() for n, p in hf.named_parameters()}
    np.testing.assert_array_equal(state["blocks.1.attn.k_proj.weight"],
                                  rounded["model.layers.1.self_attn.k_proj.weight"])
    np.testing.assert_array_equal(state["lm_head.weight"], rounded["lm_head.weight"])


# ---------------------------------------------------------------- greedy decoding
def greedy_without_cache(model, prompts, n: int):
    """Greedy tokens with a full forward over the whole left-padded batch each step (no KV cache),
    the smallest top-2 logit gap met and the largest |logit|."""
    width = max(map(len, prompts))
    ids = np.full((len(prompts), width), PAD, dtype=np.int64)
    mask = np.zeros(ids.shape, dtype=bool)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):], mask[i, width - len(p):] = p, True
    out, gap, scale = [], np.inf, 0.0
    for _ in range(n):
        positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
        last = model(ids, pad_mask=mask, positions=positions).numpy()[:, -1].astype(np.float64)
        top2 = np.sort(last, axis=1)[:, -2:]
        gap, scale = min(gap, float((top2[:, 1] - top2[:, 0]).min())), max(scale, float(np.abs(last).max()))
        nxt = last.argmax(axis=1)
        out.append(nxt)
        ids, mask = np.concatenate([ids, nxt[:, None]], 1), np.concatenate([mask, np.ones((len(prompts), 1), bool)], 1)
    return np.stack(out, axis=1).tolist(), gap, scale


def hf_greedy(hf, prompts, n: int):
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), PAD, dtype=torch.long)
    mask = torch.zeros(ids.shape, dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):], mask[i, width - len(p):] = torch.tensor(p), 1
    with torch.no_grad():
        out = hf.generate(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=n, min_new_tokens=n)
    return out[:, width:].tolist()


@pytest.mark.parametrize("kind", list(KINDS))
def test_greedy_decoding_matches_hf_generate(kind, tmp_path):
    hf = hf_model(kind, gain=DECODE_GAIN)
    save(hf, tmp_path)
    ours, _, _ = load_hf_folder(tmp_path)
    rng = np.random.default_rng(7)
    batches = [[rng.integers(1, VOCAB, 7).tolist()], [rng.integers(1, VOCAB, n).tolist() for n in (5, 9, 3)]]
    for prompts in batches:
        want = hf_greedy(hf, prompts, NEW_TOKENS)
        cached = generate(ours, prompts, SamplingConfig(temperature=0.0, max_new_tokens=NEW_TOKENS, pad_id=PAD))
        uncached, gap, scale = greedy_without_cache(ours, prompts, NEW_TOKENS)
        assert cached.tokens == want, f"{kind}, {len(prompts)} prompts, KV cache"
        assert uncached == want, f"{kind}, {len(prompts)} prompts, full forward"
        # no near-tie decided these tokens: the gap is 10x the logit differences allowed (TOL * scale),
        # themselves ~30x what is observed
        assert gap > 10 * TOL * scale, f"{kind}: top-2 gap {gap:.2e} at logit scale {scale:.1f}"
    # and the logits along the last batch's sequences do differ by less than TOL * scale (real positions)
    full = [p + t for p, t in zip(prompts, want)]
    width = max(map(len, full))
    ids = np.full((len(full), width), PAD, dtype=np.int64)
    mask = np.zeros(ids.shape, dtype=bool)
    for i, row in enumerate(full):
        ids[i, width - len(row):], mask[i, width - len(row):] = row, True
    positions = np.maximum(np.cumsum(mask, axis=1) - 1, 0)
    ref = hf_logits(hf, ids, mask, positions)[mask]      # positions as HF generate counts them
    assert relative_error(ours(ids, pad_mask=mask, positions=positions).numpy()[mask], ref) < TOL


# ---------------------------------------------------------------- GPT-2's config and file forms
def gpt2_dict(**changes) -> dict:
    return {**transformers.GPT2Config(**GPT2_SIZES).to_dict(), **changes}


def test_gpt2_config_maps_to_ours():
    want = TransformerConfig.gpt(vocab_size=VOCAB, context_length=CTX, d_model=HIDDEN, n_layers=LAYERS,
                                 n_heads=HEADS, positions="learned", mlp_hidden=4 * HIDDEN, tie_embeddings=True,
                                 norm_eps=1e-5, dropout=0.1)
    assert config_from_hf(gpt2_dict(activation_function="gelu")) == want
    assert config_from_hf(gpt2_dict(activation_function="gelu", n_inner=40, tie_word_embeddings=False,
                                    layer_norm_epsilon=1e-6)).mlp_hidden == 40
    # GPT-2's default GELU is the tanh approximation; the config carries it to every MLP
    tanh = TransformerConfig.from_dict({**want.to_dict(), "gelu_approximate": "tanh"})
    assert config_from_hf(gpt2_dict()) == tanh
    model = model_from_hf(gpt2_dict())
    assert model.cfg == tanh and {b.mlp.act.approximate for b in model.blocks} == {"tanh"}
    assert {b.mlp.act.approximate for b in model_from_hf(gpt2_dict(activation_function="gelu")).blocks} == {"none"}


@pytest.mark.parametrize("changes, field", [
    (dict(scale_attn_by_inverse_layer_idx=True), "scale_attn_by_inverse_layer_idx"),
    (dict(scale_attn_weights=False), "scale_attn_weights"),
    (dict(add_cross_attention=True), "add_cross_attention"),
    (dict(activation_function="relu"), "activation_function"),
    (dict(attn_pdrop=0.0), "attn_pdrop"),
    (dict(quantization_config={"quant_method": "gptq"}), "quantization_config"),
    (dict(n_head=5), "n_head"),
])
def test_gpt2_config_refuses_what_we_cannot_express(changes, field):
    with pytest.raises(ValueError, match=field):
        model_from_hf(gpt2_dict(**changes))


@pytest.mark.parametrize("changes", [dict(activation_function="gelu"), dict(activation_function="gelu_pytorch_tanh"),
                                     dict(reorder_and_upcast_attn=True), dict(tie_word_embeddings=False)])
def test_gpt2_variants_match_hf(changes, tmp_path):
    """The exact and the PyTorch-tanh GELU, the reordered / upcast attention (the same function in
    float32) and an untied head."""
    hf = hf_model("gpt2", **changes)
    save(hf, tmp_path)
    ours, _, _ = load_hf_folder(tmp_path)
    assert (ours.lm_head is None) == hf.config.tie_word_embeddings
    ids = ids_batch()
    assert relative_error(ours(ids).numpy(), hf_logits(hf, ids)) < TOL


def test_gpt2_original_file_layout_loads(tmp_path):
    """The original GPT-2 checkpoint's form: GPT2Model names (no "transformer." prefix), no lm_head, and
    the attn.bias / masked_bias buffers, which are skipped."""
    hf = hf_model("gpt2")
    save(hf, tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    old = {k.removeprefix("transformer."): v for k, v in tensors.items() if k != "lm_head.weight"}
    for i in range(LAYERS):
        old[f"h.{i}.attn.bias"] = np.tril(np.ones((CTX, CTX), dtype=np.uint8)).astype(bool)[None, None]
        old[f"h.{i}.attn.masked_bias"] = np.array(-1e4, dtype=np.float32)
    save_file(old, tmp_path / "model.safetensors")
    ours, _, _ = load_hf_folder(tmp_path)
    ids = ids_batch()
    assert relative_error(ours(ids).numpy(), hf_logits(hf, ids)) < TOL


# ---------------------------------------------------------------- refusals: all or nothing
@pytest.fixture
def data_reads(monkeypatch):
    """Counts the tensors whose data load_hf_folder reads: the refusals below must come first."""
    count = [0]
    real = hf_folder.iter_file

    def counting(*args, **kw):
        for item in real(*args, **kw):
            count[0] += 1
            yield item
    monkeypatch.setattr(hf_folder, "iter_file", counting)
    return count


def saved(tmp_path, kind="llama_gqa", variant="single"):
    save(hf_model(kind), tmp_path, variant)
    return tmp_path


def shard_of(folder, tensor: str) -> str:
    return json.loads((folder / "model.safetensors.index.json").read_text())["weight_map"][tensor]


def refused(folder, *needles):
    """load_hf_folder raises HFCheckpointError whose message holds every needle; the message."""
    with pytest.raises(HFCheckpointError) as err:
        load_hf_folder(folder)
    message = str(err.value)
    for needle in needles:
        assert needle in message, f"{needle!r} not in: {message}"
    return message


def test_truncated_shard(tmp_path, data_reads):
    folder = saved(tmp_path, variant="sharded")
    shard = shard_of(folder, "model.norm.weight")
    path = folder / shard
    path.write_bytes(path.read_bytes()[:-16])
    refused(folder, shard, "'model.norm.weight'", "truncated")
    assert data_reads[0] == 0


def test_corrupted_header(tmp_path, data_reads):
    folder = saved(tmp_path)
    path = folder / "model.safetensors"
    raw = bytearray(path.read_bytes())
    raw[8:16] = b"\xff" * 8
    path.write_bytes(bytes(raw))
    refused(folder, "model.safetensors", "invalid JSON header")
    assert data_reads[0] == 0


def test_index_naming_a_missing_shard(tmp_path, data_reads):
    folder = saved(tmp_path, variant="sharded")
    shard = shard_of(folder, "model.layers.1.mlp.up_proj.weight")
    os.remove(folder / shard)
    refused(folder, "model.safetensors.index.json", shard, "missing", "model.layers.1.mlp.up_proj.weight")
    assert data_reads[0] == 0


def test_a_tensor_missing_from_the_shard_the_index_names(tmp_path, data_reads):
    folder = saved(tmp_path, variant="sharded")
    name = "model.layers.0.self_attn.k_proj.weight"
    shard = shard_of(folder, name)
    rest = {k: v for k, v in load_file(folder / shard).items() if k != name}
    save_file(rest, folder / shard, metadata={"format": "pt"})
    refused(folder, shard, repr(name), "places it there", "is in none of the weight files")
    assert data_reads[0] == 0


def test_a_tensor_in_another_shard_than_the_index_says(tmp_path, data_reads):
    folder = saved(tmp_path, variant="sharded")
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    name = "model.norm.weight"
    other = next(s for s in sorted(set(index["weight_map"].values())) if s != index["weight_map"][name])
    index["weight_map"][name] = other
    index_path.write_text(json.dumps(index))
    refused(folder, other, repr(name), "does not place")
    assert data_reads[0] == 0


def test_an_index_entry_outside_the_folder(tmp_path, data_reads):
    folder = saved(tmp_path, variant="sharded")
    index_path = folder / "model.safetensors.index.json"
    index = json.loads(index_path.read_text())
    index["weight_map"]["model.norm.weight"] = "../model.safetensors"
    index_path.write_text(json.dumps(index))
    refused(folder, "model.safetensors.index.json", "'model.norm.weight'", "not a file name")
    assert data_reads[0] == 0


@pytest.mark.parametrize("how", ["shape", "dtype", "missing", "unexpected"])
def test_tensors_that_do_not_fit_the_config(how, tmp_path, data_reads):
    folder = saved(tmp_path, kind="qwen2")
    path = folder / "model.safetensors"
    tensors = load_file(path)
    name = "model.layers.1.self_attn.v_proj.bias"
    if how == "shape":
        tensors[name] = tensors[name][:-1]
        needles = (repr(name), "(15,)", "(16,)")
    elif how == "dtype":
        tensors[name] = tensors[name].astype(np.int32)
        needles = (repr(name), "I32")
    elif how == "missing":
        del tensors[name]
        needles = (repr(name), "none of the weight files")
    else:
        tensors["model.layers.0.self_attn.o_proj.bias"] = np.zeros(HIDDEN, np.float32)     # Qwen2 has none
        needles = ("unexpected", "'model.layers.0.self_attn.o_proj.bias'")
    save_file(tensors, path)
    refused(folder, "model.safetensors", *needles)
    assert data_reads[0] == 0


def test_pickle_checkpoints_are_refused_and_never_unpickled(tmp_path, data_reads):
    """A .bin-only folder: refused with the reason; the pickle would leave a marker file if loaded."""
    folder = saved(tmp_path)
    os.remove(folder / "model.safetensors")
    marker = tmp_path / "unpickled"

    class Trap:
        def __reduce__(self):
            return (open, (str(marker), "w"))
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(Trap()))
    refused(folder, "pytorch_model.bin", "only safetensors")
    assert not marker.exists() and data_reads[0] == 0
    os.remove(folder / "pytorch_model.bin")
    refused(folder, "neither model.safetensors nor model.safetensors.index.json")


@pytest.mark.parametrize("kind, changes, field", [
    ("llama_gqa", dict(hidden_act="gelu"), "hidden_act"),
    ("qwen2", dict(use_sliding_window=True, sliding_window=8, max_window_layers=0, layer_types=None),
     "use_sliding_window"),
    ("gpt2", dict(scale_attn_by_inverse_layer_idx=True), "scale_attn_by_inverse_layer_idx"),
    ("gpt2", dict(model_type="gptj"), "model_type"),
])
def test_a_config_field_we_cannot_express(kind, changes, field, tmp_path, data_reads):
    folder = saved(tmp_path, kind=kind)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))
    refused(folder, "config.json", field)
    assert data_reads[0] == 0


def test_a_missing_or_broken_config(tmp_path, data_reads):
    folder = saved(tmp_path)
    (folder / "config.json").write_text("{not json")
    refused(folder, "config.json", "cannot read")
    os.remove(folder / "config.json")
    refused(folder, "no config.json")
    assert data_reads[0] == 0


def test_a_tied_head_that_differs_from_the_embedding(tmp_path, data_reads):
    """Found only once both tensors are read: still an error, and no model comes back. (Here the
    counter of the tests above counts: a load reads every tensor.)"""
    folder = saved(tmp_path, kind="llama_tied")
    path = folder / "model.safetensors"
    tensors = load_file(path)
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"] + 1.0
    save_file(tensors, path)
    refused(folder, "model.safetensors", "'lm_head.weight' differs from 'model.embed_tokens.weight'")
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].copy()     # an equal copy is accepted
    save_file(tensors, path)
    data_reads[0] = 0
    ours, _, _ = load_hf_folder(folder)
    assert data_reads[0] == len(tensors)
    np.testing.assert_array_equal(ours.tok_emb.weight.data, tensors["model.embed_tokens.weight"])
