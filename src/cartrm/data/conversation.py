"""Text forms of a preference example: plain text, conversational messages, HH-RLHF transcripts.

Every form is turned into a pair ``(prompt_text, response_text)`` whose concatenation is the text the
reward model reads; keeping the two apart lets later phases pool activations over response tokens only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

Message: TypeAlias = dict[str, str]
Turns: TypeAlias = str | list[Message]

HH_ASSISTANT = "\n\nAssistant:"
HH_HUMAN = "\n\nHuman:"
PLAIN_SEPARATOR = "\n"


def is_conversation(value: Any) -> bool:
    return isinstance(value, list)


def validate_messages(value: list, field: str) -> list[Message]:
    """Check a conversational value; return it with only ``role``/``content`` kept. Raises ValueError."""
    messages = []
    for i, message in enumerate(value):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise ValueError(f"message {i} must be an object with 'role' and 'content'")
        role, content = message["role"], message["content"]
        if not isinstance(role, str) or not isinstance(content, str):
            raise ValueError(f"message {i}: 'role' and 'content' must be strings")
        messages.append({"role": role, "content": content})
    if not messages:
        raise ValueError(f"'{field}' is an empty conversation")
    if not any(m["content"].strip() for m in messages):
        raise ValueError(f"'{field}' has only empty messages")
    return messages


def is_hh_transcript(text: str) -> bool:
    return text.startswith(HH_HUMAN) and HH_ASSISTANT in text


def split_hh_transcript(text: str) -> tuple[str, str]:
    """Split ``"\\n\\nHuman: …\\n\\nAssistant: …"`` at its last Assistant turn into (prompt, response)."""
    cut = text.rindex(HH_ASSISTANT) + len(HH_ASSISTANT)
    return text[:cut], text[cut:].strip()


def split_implicit_prompt(
    chosen: list[Message], rejected: list[Message]
) -> tuple[list[Message], list[Message], list[Message]]:
    """TRL's implicit-prompt form: the shared leading messages are the prompt."""
    shared = 0
    while shared < min(len(chosen), len(rejected)) - 1 and chosen[shared] == rejected[shared]:
        shared += 1
    return chosen[:shared], chosen[shared:], rejected[shared:]


def render_plain_messages(messages: Sequence[Message]) -> str:
    return "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages)


def render(prompt: Turns, response: Turns, tokenizer: Any = None) -> tuple[str, str]:
    """Render one (prompt, response) into text; the model reads ``prompt_text + response_text``.

    Conversations use the tokenizer's chat template when it has one, else a plain ``Role: content`` layout.
    """
    if isinstance(response, str):
        prompt_text = prompt if isinstance(prompt, str) else render_plain_messages(prompt)
        if not prompt_text:
            return "", response
        return prompt_text + PLAIN_SEPARATOR, response
    prompt_messages = [] if isinstance(prompt, str) and not prompt else _as_messages(prompt)
    if getattr(tokenizer, "chat_template", None):
        return _render_with_template(prompt_messages, response, tokenizer)
    prompt_text = render_plain_messages(prompt_messages)
    response_text = render_plain_messages(response)
    return (prompt_text + "\n\n", response_text) if prompt_text else ("", response_text)


def _as_messages(prompt: Turns) -> list[Message]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def _render_with_template(prompt: list[Message], response: list[Message], tokenizer: Any) -> tuple[str, str]:
    full = tokenizer.apply_chat_template(prompt + response, tokenize=False)
    if not prompt:
        return "", full
    prompt_text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    if full.startswith(prompt_text):
        return prompt_text, full[len(prompt_text) :]
    return "", full
