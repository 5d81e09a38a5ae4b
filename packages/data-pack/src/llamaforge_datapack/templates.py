"""Chat templates for SFT: a conversation becomes token ids plus labels on assistant turns only.

Each template turns a conversation into segments — text to tokenise, special tokens, and whether
the segment is learned (assistant content and the token that ends its turn) — so that masking is
exact at token level. ``tokenizer`` uses the tokenizer's own ``chat_template`` (rendered with
transformers, split at turn boundaries).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from llamaforge_datapack.errors import DataPackError

Message = tuple[str, str]  # (role, content) with role in user / assistant / system


@dataclass(frozen=True)
class Segment:
    """Text (tokenised without special tokens) or a special token, learned or not."""

    text: str = ""
    token: str | None = None
    learn: bool = False


def _llama2(messages: list[Message]) -> list[Segment]:
    system = ""
    if messages and messages[0][0] == "system":
        system = f"<<SYS>>\n{messages[0][1]}\n<</SYS>>\n\n"
        messages = messages[1:]
    out: list[Segment] = []
    for k in range(0, len(messages), 2):
        role, user = messages[k]
        if role != "user" or k + 1 >= len(messages) or messages[k + 1][0] != "assistant":
            raise DataPackError("llama2 template needs alternating user / assistant turns")
        prefix = system if k == 0 else ""
        out += [
            Segment(token="bos"),
            Segment(f"[INST] {prefix}{user.strip()} [/INST]"),
            Segment(messages[k + 1][1].strip(), learn=True),
            Segment(token="eos", learn=True),
        ]
    return out


def _llama3(messages: list[Message]) -> list[Segment]:
    out = [Segment(token="<|begin_of_text|>")]
    for role, content in messages:
        learn = role == "assistant"
        out += [
            Segment(token="<|start_header_id|>"),
            Segment(role),
            Segment(token="<|end_header_id|>"),
            Segment("\n\n"),
            Segment(content.strip(), learn=learn),
            Segment(token="<|eot_id|>", learn=learn),
        ]
    return out


def _chatml(messages: list[Message]) -> list[Segment]:
    out: list[Segment] = []
    for role, content in messages:
        learn = role == "assistant"
        out += [
            Segment(token="<|im_start|>"),
            Segment(f"{role}\n"),
            Segment(content, learn=learn),
            Segment(token="<|im_end|>", learn=learn),
            Segment("\n"),
        ]
    return out


TEMPLATES: dict[str, Callable[[list[Message]], list[Segment]]] = {
    "llama2": _llama2,
    "llama3": _llama3,
    "chatml": _chatml,
}
TOKENIZER_TEMPLATE = "tokenizer"


def template_names() -> list[str]:
    return [*TEMPLATES, TOKENIZER_TEMPLATE]


def check_template(name: str) -> str:
    """Return ``name`` if known; else raise listing the known templates."""
    if name not in TEMPLATES and name != TOKENIZER_TEMPLATE:
        raise DataPackError(
            f"unknown template {name!r}; choose one of {', '.join(template_names())}"
        )
    return name


def segments_from_tokenizer(tokenizer, messages: list[Message]) -> list[Segment]:
    """Segments from the tokenizer's own ``chat_template``, split where each turn starts/ends.

    The template is rendered for each prefix of the conversation; the text an assistant turn
    adds after the generation prompt is learned. Raises when the template is not prefix-stable.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise DataPackError(
            "template 'tokenizer': this tokenizer has no chat_template; choose "
            f"one of {', '.join(TEMPLATES)}"
        )
    chat = [{"role": r, "content": c} for r, c in messages]
    segments: list[Segment] = []
    done = ""
    for k, (role, _) in enumerate(messages):
        if role != "assistant":
            continue
        prompt = tokenizer.apply_chat_template(chat[:k], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(chat[: k + 1], tokenize=False)
        if not prompt.startswith(done) or not full.startswith(prompt):
            raise DataPackError(
                "template 'tokenizer': the chat_template does not render "
                "conversations prefix by prefix; use a named template"
            )
        segments += [Segment(prompt[len(done) :]), Segment(full[len(prompt) :], learn=True)]
        done = full
    return [s for s in segments if s.text]
