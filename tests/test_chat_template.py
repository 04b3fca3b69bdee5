"""Chat templates rendered without Jinja, compared with transformers' apply_chat_template."""
import os

import pytest

from tinygrad_reason.models.chat import SUPPORTED_FAMILIES, ChatTemplate, ChatTemplateError, render_chat

transformers = pytest.importorskip("transformers")
pytest.importorskip("jinja2")   # transformers renders the reference with it

CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
          "{% endif %}")
# Qwen2's shape: a default system message, another text
QWEN2 = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
         "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
         "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
         "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
# written over lines: relies on '-' markers, trim_blocks and lstrip_blocks; double quotes, escapes,
# message.role attribute access and the message split over three expressions
MULTILINE = """{#- a comment #}
{%- for message in messages %}
    {%- if loop.first and messages[0]["role"] != "system" %}
        {{- "<|im_start|>system\\nYou're \\"careful\\"\\tand brief.<|im_end|>\\n" }}
    {%- endif %}
    {{- '<|im_start|>' + message.role + '\\n' }}{{ message['content'] }}{{ '<|im_end|>' + '\\n' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
{%- endif %}
"""
# the same structure without '-' markers: Jinja's trim_blocks/lstrip_blocks alone remove the layout
BLOCK_LAYOUT = """{% for message in messages %}
  {% if loop.first and messages[0]['role'] != 'system' %}
{{ '<|im_start|>system\\nBe kind.<|im_end|>\\n' }}{% endif %}
{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}
{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"""

LLAMA2 = ("{% for message in messages %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + "
          "message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' ' + "
          "message['content'] + ' ' + eos_token }}{% endif %}{% endfor %}")

CONVERSATIONS = [
    [{"role": "user", "content": "What is 2 + 3?"}],
    [{"role": "system", "content": "You solve math."}, {"role": "user", "content": "17 * 3?"}],
    [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
     {"role": "user", "content": "Count to 3.\nThen stop."}],
    [{"role": "system", "content": ""}, {"role": "user", "content": "  spaced  \n\n"},
     {"role": "assistant", "content": "ok"}],
    [{"role": "user", "content": "ünïcode 中文 👍 {{ not jinja }} {% raw %} <|im_end|>"}],
    [{"role": "assistant", "content": "I speak first."}, {"role": "tool", "content": "42"}],
]


@pytest.fixture(scope="module")
def hf_tok(smollm2_gguf):
    from transformers import AutoTokenizer
    folder, name = os.path.split(smollm2_gguf)
    return AutoTokenizer.from_pretrained(folder, gguf_file=name)


def reference(hf_tok, messages, generation_prompt, template=None):
    return hf_tok.apply_chat_template(messages, chat_template=template, tokenize=False,
                                      add_generation_prompt=generation_prompt)


@pytest.mark.parametrize("generation_prompt", [False, True])
@pytest.mark.parametrize("conversation", range(len(CONVERSATIONS)))
def test_smollm2_template_equals_transformers(hf_tok, conversation, generation_prompt):
    messages = CONVERSATIONS[conversation]
    assert render_chat(messages, hf_tok.chat_template, generation_prompt) == \
        reference(hf_tok, messages, generation_prompt)


def test_smollm2_default_system_is_read_from_the_template(hf_tok):
    template = ChatTemplate.parse(hf_tok.chat_template)
    assert template.family == "chatml-default-system"
    assert template.default_system == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"


@pytest.mark.parametrize("template_string, family, default_system", [
    (CHATML, "chatml", None),
    (QWEN2, "chatml-default-system", "You are a helpful assistant."),
    (MULTILINE, "chatml-default-system", "You're \"careful\"\tand brief."),
    (BLOCK_LAYOUT, "chatml-default-system", "Be kind."),
])
def test_other_chatml_templates_equal_transformers(hf_tok, template_string, family, default_system):
    template = ChatTemplate.parse(template_string)
    assert (template.family, template.default_system) == (family, default_system)
    for messages in CONVERSATIONS:
        for generation_prompt in (False, True):
            assert template.render(messages, generation_prompt) == \
                reference(hf_tok, messages, generation_prompt, template_string)


def test_no_template_is_plain_chatml(hf_tok):
    assert ChatTemplate.parse(None) == ChatTemplate.parse(CHATML) == ChatTemplate("chatml")
    for messages in CONVERSATIONS:
        assert render_chat(messages, None, True) == reference(hf_tok, messages, True, CHATML)


@pytest.mark.parametrize("template_string", [
    LLAMA2,
    "",
    CHATML.replace("message['content']", "message['content'] | trim"),      # changes the content
    CHATML.replace("'\n'}}", "'\n'}}\n"),                                  # prints a newline per turn
    CHATML.replace("'<|im_end|>' + '\n'", "'<|im_end|>'"),                  # no newline after a turn
    CHATML.replace("'<|im_start|>assistant\n'", "'<|im_start|>assistant\n<think>'"),
    QWEN2.replace("!= 'system'", "== 'user'"),                               # another condition
    QWEN2.replace("system\nYou are", "user\nYou are"),                       # not a system message
    CHATML.replace("message['role']", "message['name']"),
])
def test_unknown_templates_are_refused(template_string):
    assert template_string not in (CHATML, QWEN2)   # each replace() above changed something
    with pytest.raises(ChatTemplateError) as e:
        ChatTemplate.parse(template_string)
    assert all(family in str(e.value) for family in SUPPORTED_FAMILIES)


def test_bad_messages_are_refused():
    for bad in ["hi", [{"role": "user"}], [{"role": "user", "content": 3}], [("user", "hi")]]:
        with pytest.raises(ChatTemplateError, match="messages"):
            render_chat(bad)


def test_rendered_prompt_tokenizes_like_transformers(hf_tok, smollm2_gguf):
    """The whole prompt path: render, then encode with the special tokens parsed."""
    gguf = pytest.importorskip("gguf")
    from tinygrad_reason.models.pretrained_tokenizer import PretrainedTokenizer
    reader = gguf.GGUFReader(smollm2_gguf)
    meta = {k: f.contents() for k, f in reader.fields.items() if k.startswith("tokenizer.")}
    tok = PretrainedTokenizer.from_gguf_metadata(meta, smollm2_gguf)
    assert tok.chat_template == hf_tok.chat_template
    messages = CONVERSATIONS[2]   # no run of 2+ spaces before a digit, where transformers' GGUF split differs
    prompt = ChatTemplate.parse(tok.chat_template).render(messages, True)
    ids = tok.encode(prompt, allow_special=True)
    expected = hf_tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    expected = expected["input_ids"] if hasattr(expected, "keys") else expected
    assert ids == list(expected)
    assert ids.count(tok.special_ids["<|im_start|>"]) == len(messages) + 2   # + default system, prompt
    assert tok.decode(ids) == prompt
