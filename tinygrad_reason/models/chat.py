"""Render chat conversations the way a model's own chat template would, without running Jinja.

A chat template is a Jinja program, and executing untrusted programs from model files is what
we avoid.  Instead :meth:`ChatTemplate.parse` reads the template's structure -- its ``{% %}``
statements and the string pieces its ``{{ }}`` expressions print -- and recognises one of the
supported families, keeping only the data the family needs:

* ``chatml``: ``<|im_start|>{role}\\n{content}<|im_end|>\\n`` per message, and
  ``<|im_start|>assistant\\n`` as the generation prompt;
* ``chatml-default-system``: the same, plus a fixed system message printed first when the first
  message is not a system message (SmolLM2, Qwen2).  Its text is taken from the template.

A model without a template gets plain ChatML.  Whitespace follows transformers' Jinja settings
(``trim_blocks`` and ``lstrip_blocks``) and the ``-`` markers, so multi-line templates parse
too; anything printed that the family does not explain makes the template unsupported
(:class:`ChatTemplateError`) rather than rendered approximately.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

__all__ = ["ChatTemplateError", "ChatTemplate", "SUPPORTED_FAMILIES", "render_chat"]

SUPPORTED_FAMILIES = ("chatml", "chatml-default-system")

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
GENERATION_PROMPT = IM_START + "assistant\n"


class ChatTemplateError(ValueError):
    """A chat template is not of a supported family, or a conversation is malformed."""


# The message expression's variable parts.
ROLE, CONTENT = object(), object()


@dataclass(frozen=True)
class ChatTemplate:
    family: str
    default_system: str | None = None

    @classmethod
    def parse(cls, template: str | None) -> "ChatTemplate":
        """Recognise ``template`` (None: the model has none -> plain ChatML)."""
        if template is None:
            return cls("chatml")
        if not isinstance(template, str):
            raise ChatTemplateError(f"a chat template must be a string, got {type(template).__name__}")
        try:
            return _recognise(_tags(template))
        except _NoMatch as e:
            raise ChatTemplateError(f"unsupported chat template ({e}); supported families: "
                                    f"{', '.join(SUPPORTED_FAMILIES)} "
                                    f"(<|im_start|>role\\ncontent<|im_end|>\\n)") from None

    def render(self, messages: Sequence[dict], add_generation_prompt: bool = False) -> str:
        """The prompt text, character for character what the template prints."""
        messages = _checked(messages)
        out = []
        if self.default_system is not None and messages and messages[0]["role"] != "system":
            out.append(f"{IM_START}system\n{self.default_system}{IM_END}\n")
        out += [f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n" for m in messages]
        if add_generation_prompt:
            out.append(GENERATION_PROMPT)
        return "".join(out)


def render_chat(messages: Sequence[dict], template: str | None = None,
                add_generation_prompt: bool = False) -> str:
    """Render ``messages`` ([{"role", "content"}, ...]) with a model's chat template string."""
    return ChatTemplate.parse(template).render(messages, add_generation_prompt)


def _checked(messages) -> list[dict]:
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise ChatTemplateError(f"messages must be a list of {{'role', 'content'}} dicts, "
                                f"got {type(messages).__name__}")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) \
                or not isinstance(m.get("content"), str):
            raise ChatTemplateError(f"messages[{i}] must be a dict with string 'role' and 'content', "
                                    f"got {m!r}")
    return list(messages)


# ----------------------------------------------------------------------------- template reading
class _NoMatch(Exception):
    pass


_TAG = re.compile(r"(\{%|\{\{|\{#)(-?)(.*?)(-?)(%\}|\}\}|#\})", re.S)
_STRING = r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*\""""
_TERM = re.compile(rf"""\s*(?:({_STRING})|message(?:\[\s*({_STRING})\s*\]|\.(\w+))|(\+))\s*""", re.S)


def _tags(template: str) -> list[tuple[str, str]]:
    """The template as (kind, body) tags: kind '%' (statement, whitespace collapsed, quotes made
    single) or '{' (output, kept verbatim).  Text between tags must vanish under Jinja's
    whitespace rules (``-`` markers, trim_blocks, lstrip_blocks as transformers sets them), else
    the template prints text we would have to model."""
    tags, pos, line_start, trim_next = [], 0, True, None
    for m in list(_TAG.finditer(template)) + [None]:
        text = template[pos:m.start()] if m else template[pos:]
        if trim_next == "-":
            text = text.lstrip()
        elif trim_next == "block" and text.startswith("\n"):      # trim_blocks
            text, line_start = text[1:], True
        if m and m.group(2) == "-":
            text = text.rstrip()
        elif m and m.group(1) != "{{":                             # lstrip_blocks
            cut = text.rfind("\n") + 1
            if (cut > 0 or line_start) and not text[cut:].strip(" \t\r\f\v"):
                text = text[:cut]
        if text:
            raise _NoMatch(f"it prints the literal text {text[:40]!r}")
        if m is None:
            break
        opener, body = m.group(1), m.group(3)
        if opener == "{%":
            tags.append(("%", " ".join(body.replace('"', "'").split())))
        elif opener == "{{":
            tags.append(("{", body.strip()))
        trim_next = "-" if m.group(4) == "-" else (None if opener == "{{" else "block")
        line_start, pos = False, m.end()
    return tags


def _unquote(literal: str) -> str:
    """A Jinja string literal's value (Jinja's own unescaping)."""
    return literal[1:-1].encode("ascii", "backslashreplace").decode("unicode-escape")


def _output_parts(expression: str) -> list:
    """An output expression as its '+'-joined parts: strings, ROLE or CONTENT; else _NoMatch."""
    parts, pos, want_term = [], 0, True
    while pos < len(expression):
        m = _TERM.match(expression, pos)
        if not m or m.end() == pos or (m.group(4) is not None) == want_term:
            raise _NoMatch(f"it prints {{{{ {expression} }}}}")
        pos = m.end()
        want_term = m.group(4) is not None
        if m.group(1):
            parts.append(_unquote(m.group(1)))
        elif m.group(4) is None:
            field = _unquote(m.group(2)) if m.group(2) else m.group(3)
            if field not in ("role", "content"):
                raise _NoMatch(f"it prints message field {field!r}")
            parts.append(ROLE if field == "role" else CONTENT)
    if want_term:
        raise _NoMatch(f"it prints {{{{ {expression} }}}}")
    return parts


def _merged(parts: list) -> list:
    """Adjacent strings joined, empty strings dropped."""
    out = []
    for p in parts:
        if isinstance(p, str) and out and isinstance(out[-1], str):
            out[-1] += p
        elif p != "":
            out.append(p)
    return out


_FIRST_NOT_SYSTEM = {
    "if loop.first and messages[0]['role'] != 'system'",
    "if messages[0]['role'] != 'system' and loop.first",
    "if loop.index0 == 0 and messages[0]['role'] != 'system'",
}
_MESSAGE_BODY = [IM_START, ROLE, "\n", CONTENT, IM_END + "\n"]


def _recognise(tags: list[tuple[str, str]]) -> ChatTemplate:
    """Match the statement skeleton of the ChatML family and read its printed strings."""
    pos = 0

    def statement(*accepted):
        nonlocal pos
        if pos < len(tags) and tags[pos][0] == "%" and tags[pos][1] in accepted:
            pos += 1
            return True
        return False

    def printed() -> list:
        nonlocal pos
        parts = []
        while pos < len(tags) and tags[pos][0] == "{":
            parts += _output_parts(tags[pos][1])
            pos += 1
        return _merged(parts)

    def need(*accepted):
        if not statement(*accepted):
            found = f"{{% {tags[pos][1]} %}}" if pos < len(tags) and tags[pos][0] == "%" else \
                (f"{{{{ {tags[pos][1]} }}}}" if pos < len(tags) else "the end")
            raise _NoMatch(f"expected {{% {accepted[0]} %}}, found {found}")

    need("for message in messages")
    default_system = None
    if statement(*_FIRST_NOT_SYSTEM):
        text = printed()
        head, tail = f"{IM_START}system\n", f"{IM_END}\n"
        if len(text) != 1 or not isinstance(text[0], str) or not text[0].startswith(head) \
                or not text[0].endswith(tail) or len(text[0]) < len(head) + len(tail):
            raise _NoMatch("the default system message is not <|im_start|>system\\n...<|im_end|>\\n")
        default_system = text[0][len(head):-len(tail)]
        need("endif")
    body = printed()
    if body != _MESSAGE_BODY:
        raise _NoMatch("a message is not printed as <|im_start|>role\\ncontent<|im_end|>\\n")
    need("endfor")
    need("if add_generation_prompt")
    if printed() != [GENERATION_PROMPT]:
        raise _NoMatch("the generation prompt is not <|im_start|>assistant\\n")
    need("endif")
    if pos != len(tags):
        raise _NoMatch(f"unexpected {tags[pos][1]!r} after the generation prompt")
    return ChatTemplate("chatml" if default_system is None else "chatml-default-system", default_system)
