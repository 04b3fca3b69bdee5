"""The calculator tool (reasoning/tools.py) and the token-forcing hook of sampling.generate."""
import numpy as np
import pytest

from reasoning_fakes import ScriptedModel, after_think, one_hot
from tinygrad_reason.generate import SamplingConfig, generate, generate_stream, log_softmax
from tinygrad_reason.generate.tools import CalculatorTool
from tinygrad_reason.tokenizer import Tokenizer


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.default(512)


def scripts(tok):
    e = tok.encode
    return {
        10: e(" 3 * 4 = <<3*4=") + e("99>>") + e("99 ok") + [tok.step_id, tok.answer_id] + e(" 99") + [tok.eot_id],
        11: e(" 3 */ 4 = <<3*/4=") + e("99>>") + e("99") + [tok.step_id, tok.answer_id] + e(" 99") + [tok.eot_id],
        12: e(" 5 + 1 = 6") + [tok.step_id, tok.answer_id] + e(" 6") + [tok.eot_id],
    }


def scripted(tok):
    table = scripts(tok)

    def policy(tokens):
        if tok.think_id not in tokens:                 # inside the prompt: anything
            return np.zeros(tok.vocab_size)
        marker = tokens[1]
        gen = after_think(tokens, tok)
        script = table[marker]
        return one_hot(tok.vocab_size, script[len(gen)] if len(gen) < len(script) else tok.eot_id)
    return ScriptedModel(tok.vocab_size, policy)


def prompts(tok):
    return [[tok.question_id, m, tok.think_id] for m in (10, 11, 12)]


def test_tool_forces_the_exact_result_and_leaves_other_rows_alone(tok):
    model = scripted(tok)
    cfg = SamplingConfig(temperature=0.0, max_new_tokens=40, stop_ids=(tok.eot_id,))
    plain = generate(model, prompts(tok), cfg)
    tool = CalculatorTool(tok)
    res = generate(model, prompts(tok), cfg, tool=tool)
    s = scripts(tok)
    assert plain.tokens == [s[10], s[11], s[12]]                      # without the tool: the script
    opener = tok.encode(" 3 * 4 = <<3*4=")
    forced = tok.encode("12>>")
    expect0 = opener + forced + s[10][len(opener) + len(forced):]
    assert res.tokens[0] == expect0
    assert tok.decode(res.tokens[0]).startswith(" 3 * 4 = <<3*4=12>>99 ok")
    assert res.forced[0].tolist() == [False] * len(opener) + [True] * len(forced) + \
        [False] * (len(expect0) - len(opener) - len(forced))
    # invalid expression: nothing forced; no annotation: nothing forced (other rows unaffected)
    assert res.tokens[1] == plain.tokens[1] and res.tokens[2] == plain.tokens[2]
    assert not res.forced[1].any() and not res.forced[2].any()
    np.testing.assert_array_equal(res.logprobs[2], plain.logprobs[2])
    assert res.finish_reasons == ["stop"] * 3 and len(res.tokens[2]) < len(res.tokens[0])   # per-row stops
    assert tool.fired == 1 and tool.invalid == 1
    # forced tokens: the model's log-prob of the forced token, sample log-prob 0
    for j, t in enumerate(forced):
        want = s[10][len(opener) + j]                                   # what the model wanted to write
        expected = log_softmax(one_hot(tok.vocab_size, want)[None])[0, t]
        assert res.logprobs[0][len(opener) + j] == pytest.approx(expected)
        assert res.sample_logprobs[0][len(opener) + j] == 0.0
    # the streaming generator takes the same tool
    assert list(generate_stream(model, prompts(tok)[0], cfg, tool=CalculatorTool(tok))) == expect0


def test_forced_tokens_count_against_the_budget(tok):
    model = scripted(tok)
    n = len(tok.encode(" 3 * 4 = <<3*4=")) + 2
    res = generate(model, prompts(tok)[:1], SamplingConfig(temperature=0.0, max_new_tokens=n,
                                                           stop_ids=(tok.eot_id,)), tool=CalculatorTool(tok))
    assert len(res.tokens[0]) == n and res.finish_reasons == ["length"]
    assert tok.decode(res.tokens[0]).endswith("<<3*4=12")


def test_sampled_rows_with_a_tool_are_deterministic(tok):
    model = scripted(tok)
    cfg = SamplingConfig(temperature=0.7, max_new_tokens=40, stop_ids=(tok.eot_id,), seed=3)
    a = generate(model, prompts(tok), cfg, tool=CalculatorTool(tok))
    b = generate(model, prompts(tok), cfg, tool=CalculatorTool(tok))
    assert a.tokens == b.tokens and "<<3*4=12>>" in tok.decode(a.tokens[0])


@pytest.mark.parametrize("text, forced", [
    (" 3 * 4 = <<3*4=", "12>>"),
    ("x <<16-3-4=", "9>>"),
    ("<<7/3=", "7/3>>"),
    ("<<5/2=", "2.5>>"),
    ("<<(2+3)*4=", "20>>"),
    ("<<2-5=", "-3>>"),
    ("<<3*4=12>>", None),          # already closed
    ("<<3*4=12", None),            # the model is writing its own result: not the opener any more
    ("<<3*/4=", None),             # invalid expression
    ("<<1/0=", None),              # division by zero
    ("<<=", None),                 # empty
    ("3*4=", None),                # no opener
    ("<<3*4= ", None),             # the opener must be the very end
])
def test_calculator_detection(tok, text, forced):
    tool = CalculatorTool(tok)
    out = tool(tok.encode(text))
    assert (None if out is None else tok.decode(out)) == forced


def test_calculator_looks_only_at_the_current_step(tok):
    tool = CalculatorTool(tok)
    ids = tok.encode("<<") + [tok.step_id] + tok.encode("3*4=")
    assert tool(ids) is None
    assert tok.decode(tool(tok.encode("done") + [tok.step_id] + tok.encode(" <<3*4="))) == "12>>"
    assert tool([]) is None and tool([tok.eot_id]) is None


def test_a_tool_forcing_ids_outside_the_vocabulary_is_an_error(tok):
    model = scripted(tok)
    cfg = SamplingConfig(temperature=0.0, max_new_tokens=5, stop_ids=(tok.eot_id,))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        generate(model, prompts(tok), cfg, tool=lambda gen: [10 ** 6])
