"""Prompt layout: the tokenizer's own chat template with the audio spliced into the user turn.

An optional system turn comes first (None: the chat template's own default). The user message
is ``"<|audio|>\\n" + instruction``. The rendered prompt is split at the
placeholder string; both halves are tokenised on their own and ``n_audio`` positions are left
between them for the projected audio frames (marked in ``audio_mask``). The placeholder is never
a token, so the LLM's vocabulary and embedding table stay untouched. Labels cover only the
assistant's answer and its end-of-turn token; everything else is -100.
"""

from __future__ import annotations

from dataclasses import dataclass

from mixcritic.errors import ModelError
from mixcritic.critics.llm.language_model import END_OF_TURN

AUDIO_PLACEHOLDER = "<|audio|>"
"""Marks where the audio frames go inside the user turn."""

PROMPT_VERSION = "1"
"""Bumped whenever the prompt layout changes (stored in every checkpoint)."""

IGNORE_INDEX = -100
"""Label value the loss ignores."""


@dataclass(frozen=True)
class Example:
    """One tokenised sample before padding."""

    input_ids: list[int]
    """Token ids; audio positions hold the pad id (they are replaced by audio embeddings)."""
    audio_mask: list[bool]
    """True exactly at the ``n_audio`` audio positions."""
    labels: list[int]
    """Answer tokens + end of turn; IGNORE_INDEX elsewhere."""


def user_message(instruction: str) -> str:
    """The user turn's text, with the audio placeholder first."""
    return f"{AUDIO_PLACEHOLDER}\n{instruction}"


def chat_messages(instruction: str, system_message: str | None = None) -> list[dict]:
    """The conversation: an optional system turn (None = the chat template's default), then the user turn."""
    system = [{"role": "system", "content": system_message}] if system_message else []
    return system + [{"role": "user", "content": user_message(instruction)}]


def prompt_token_parts(tokenizer, instruction: str, system_message: str | None = None) -> tuple[list[int], list[int]]:
    """Token ids before and after the audio placeholder, ending with the assistant header."""
    text = tokenizer.apply_chat_template(
        chat_messages(instruction, system_message), tokenize=False, add_generation_prompt=True
    )
    before, found, after = text.partition(AUDIO_PLACEHOLDER)
    if not found or AUDIO_PLACEHOLDER in after:
        raise ModelError("the chat template must render the user message exactly once")
    encode = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    return encode(before), encode(after)


def answer_token_ids(tokenizer, answer: str) -> list[int]:
    """The answer's ids followed by the end-of-turn token."""
    return tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.convert_tokens_to_ids(END_OF_TURN)]


def build_example(tokenizer, instruction: str, n_audio: int, answer: str | None = None,
                  system_message: str | None = None) -> Example:
    """Tokenise one prompt (and answer, for training) with ``n_audio`` audio positions.

    ``system_message``: the system turn (the run's ``CriticSettings.system_message``); None keeps
    the chat template's default system turn.
    """
    before, after = prompt_token_parts(tokenizer, instruction, system_message)
    ids = before + [tokenizer.pad_token_id] * n_audio + after
    audio = [False] * len(before) + [True] * n_audio + [False] * len(after)
    labels = [IGNORE_INDEX] * len(ids)
    if answer is not None:
        answer_ids = answer_token_ids(tokenizer, answer)
        ids += answer_ids
        audio += [False] * len(answer_ids)
        labels += answer_ids
    return Example(ids, audio, labels)


def collate_examples(examples: list[Example], pad_id: int, padding_side: str = "right") -> dict:
    """Pad a batch: ``input_ids``, ``attention_mask``, ``audio_mask``, ``labels`` as (batch, tokens) tensors.

    Right padding for training, left padding for generation.
    """
    import torch

    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    width = max(len(e.input_ids) for e in examples)
    rows: dict[str, list] = {"input_ids": [], "attention_mask": [], "audio_mask": [], "labels": []}
    for e in examples:
        fill = width - len(e.input_ids)
        parts = {
            "input_ids": (e.input_ids, pad_id),
            "attention_mask": ([1] * len(e.input_ids), 0),
            "audio_mask": (e.audio_mask, False),
            "labels": (e.labels, IGNORE_INDEX),
        }
        for key, (values, pad) in parts.items():
            rows[key].append([pad] * fill + list(values) if padding_side == "left" else list(values) + [pad] * fill)
    return {
        "input_ids": torch.tensor(rows["input_ids"], dtype=torch.long),
        "attention_mask": torch.tensor(rows["attention_mask"], dtype=torch.long),
        "audio_mask": torch.tensor(rows["audio_mask"], dtype=torch.bool),
        "labels": torch.tensor(rows["labels"], dtype=torch.long),
    }
