"""Loading a trained LLM run and generating answers (greedy, batched, deterministic).

:class:`LLMCritic` is this engine's side of the seam in :mod:`mixcritic.critics`: it turns
segments into generated answers and parses them (``judge``). Underneath, the contract
(docs/architecture.md) is::

    critic = load_critic(run_dir, device="auto", encoder=None, llm=None)
    critic.settings          # sample_rate_hz, segment_s, target_lufs, audio_pool, template_version, ...
    critic.generate(audio, instructions) -> list[str]

``audio`` is ``(batch, samples)`` float32, 24 kHz mono, already loudness-normalised to
``settings["target_lufs"]`` (every clip in a batch the same length, normally ``segment_s``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mixcritic.errors import ModelError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from mixcritic.critics import Judgement, Segment
    from mixcritic.critics.llm.critic import MixCritic

WIRING_ONLY_PRESETS = ("tiny",)
"""Training presets whose runs only prove the wiring: their advice is weak (docs/training.md)."""


class Critic:
    """A trained MixCritic ready to answer instructions about audio clips."""

    def __init__(self, model: "MixCritic", folder: Path) -> None:
        self.model = model.eval()
        self.folder = folder

    @property
    def settings(self) -> dict:
        """The run's settings: preprocessing (sample_rate_hz, segment_s, target_lufs, audio_pool,
        normalize_input), template_version, base model sources, LoRA / projector sizes."""
        return self.model.settings.to_dict()

    def generate(self, audio, instructions: list[str], max_new_tokens: int | None = None) -> list[str]:
        """Greedy answers, one per clip: ``audio`` (batch, samples) float32 24 kHz mono normalised."""
        import torch

        clips = torch.as_tensor(audio, dtype=torch.float32)
        if clips.ndim == 1:
            clips = clips.unsqueeze(0)
        if clips.ndim != 2:
            raise ModelError(f"audio must be (batch, samples), got shape {tuple(clips.shape)}")
        if clips.shape[0] != len(instructions):
            raise ModelError(f"{clips.shape[0]} clips but {len(instructions)} instructions")
        if not torch.isfinite(clips).all():
            raise ModelError("audio contains NaN or Inf samples")
        limit = max_new_tokens or self.model.settings.max_new_tokens
        with torch.inference_mode(), inference_autocast(self.model.device, self.model.settings.autocast_bf16):
            ids = greedy_generate(self.model, clips, instructions, limit)
        tokenizer = self.model.tokenizer
        return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in ids]


def bf16_supported(device) -> bool:
    """True on a CUDA device with bf16 support (where training runs under bf16 autocast)."""
    import torch

    return torch.device(device).type == "cuda" and torch.cuda.is_bf16_supported()


def inference_autocast(device, trained_bf16: bool):
    """The autocast training ran under: bf16 when the run trained with it and ``device`` supports it.

    Training (the Trainer with ``bf16=True``) runs the encoder, projector and LLM under
    ``torch.autocast(dtype=bfloat16)``; generating in fp32 would feed the model numbers it never saw.
    """
    import contextlib

    import torch

    if trained_bf16 and bf16_supported(device):
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def stop_token_ids(tokenizer) -> set[int]:
    """End-of-turn, end-of-text and the tokenizer's eos ids: generation stops at any of them."""
    from mixcritic.critics.llm.language_model import END_OF_TEXT, END_OF_TURN

    ids = {tokenizer.convert_tokens_to_ids(END_OF_TURN)}
    end_of_text = tokenizer.convert_tokens_to_ids(END_OF_TEXT)
    if end_of_text is not None and end_of_text != tokenizer.unk_token_id:
        ids.add(end_of_text)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def cache_argument_name(llm) -> str:
    """``cache`` (transformers >= 5.2x) or ``past_key_values`` (older): the KV-cache keyword of the LM."""
    import inspect

    base = llm.get_base_model() if hasattr(llm, "get_base_model") else llm
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def greedy_generate(model: "MixCritic", clips: "torch.Tensor", instructions: list[str], max_new_tokens: int) -> list[list[int]]:
    """Greedy decoding with a KV cache on left-padded prompts; returns new token ids per row (stop token excluded)."""
    import torch

    from mixcritic.critics.llm.prompt import build_example, collate_examples

    tokenizer = model.tokenizer
    n_audio = model.frames_per_clip(clips.shape[1])
    system = model.settings.system_message
    examples = [build_example(tokenizer, text, n_audio, system_message=system) for text in instructions]
    batch = collate_examples(examples, tokenizer.pad_token_id, padding_side="left")
    device = model.device
    attention = batch["attention_mask"].to(device)
    embeds, _ = model.splice(batch["input_ids"].to(device), batch["audio_mask"].to(device), model.audio_embeddings(clips))
    positions = (attention.cumsum(dim=1) - 1).clamp(min=0)
    stops = torch.tensor(sorted(stop_token_ids(tokenizer)), device=device)
    done = torch.zeros(len(examples), dtype=torch.bool, device=device)
    out: list[list[int]] = [[] for _ in examples]
    past = None
    embed_table = model.llm.get_input_embeddings()
    cache_arg = cache_argument_name(model.llm)
    for _ in range(max_new_tokens):
        result = model.llm(  # logits_to_keep=1: vocabulary logits only where the next token is read
            inputs_embeds=embeds, attention_mask=attention, position_ids=positions, use_cache=True, logits_to_keep=1,
            **{cache_arg: past},
        )
        past = getattr(result, cache_arg, None) if cache_arg == "cache" else result.past_key_values
        next_ids = result.logits[:, -1].float().argmax(dim=-1)
        done |= torch.isin(next_ids, stops)
        for row, token in enumerate(next_ids.tolist()):
            if not done[row]:
                out[row].append(token)
        if bool(done.all()):
            break
        next_ids = torch.where(done, torch.full_like(next_ids, tokenizer.pad_token_id), next_ids)
        embeds = embed_table(next_ids.unsqueeze(1))
        attention = torch.cat([attention, torch.ones_like(attention[:, :1])], dim=1)
        positions = positions[:, -1:] + 1
    return out


def load_critic(
    run_dir,
    device: str = "auto",
    encoder=None,
    llm=None,
    encoder_source: str | None = None,
    llm_source: str | None = None,
) -> Critic:
    """Load a trained run (``RUN/``, ``RUN/model/`` or a ``checkpoint-N`` folder) for inference.

    ``encoder`` / ``llm``: already-loaded base models to reuse (the bare HubertModel and the bare
    causal LM, e.g. to evaluate several runs on one set of base weights); loaded from the
    sources in the run's settings when None. ``encoder_source`` / ``llm_source``: hub ids or
    local folders that replace those sources (e.g. local snapshots on an offline machine);
    every other setting still comes from the checkpoint.
    """
    import dataclasses

    from mixcritic.critics.llm import build_critic, resolve_device
    from mixcritic.critics.llm.checkpoint import (
        find_model_folder,
        read_settings,
        read_trained,
    )

    folder = find_model_folder(Path(run_dir))
    settings = read_settings(folder)
    settings = dataclasses.replace(
        settings,
        encoder_source=encoder_source or settings.encoder_source,
        llm_source=llm_source or settings.llm_source,
    )
    model = build_critic(settings, resolve_device(device), encoder=encoder, llm=llm, training=False)
    model.load_trained_state(read_trained(folder))
    return Critic(model.eval(), folder)


class LLMCritic:
    """The LLM engine behind the :class:`mixcritic.critics.Critic` interface: hears only the mix.

    ``judge`` generates one answer per segment from its normalised ``mix`` and ``instruction``
    (segments of equal length share a ``generate`` call; the encoder runs without padding) and
    parses it. The LLM gives no probability, so ``confidence`` is None.
    """

    engine = "llm"
    needs_stems = False

    def __init__(self, generator: Critic, run_dir: Path, wiring_only: bool = False) -> None:
        self.generator = generator
        self.run_dir = Path(run_dir)
        self.wiring_only = wiring_only

    @property
    def model(self) -> "MixCritic":
        """The underlying module (its ``device`` says where it runs)."""
        return self.generator.model

    @property
    def settings(self) -> dict:
        """The run's settings plus ``engine`` and ``wiring_only``."""
        return {**self.generator.settings, "engine": self.engine, "wiring_only": self.wiring_only}

    def describe(self) -> str:
        """What this critic is, in a few plain words."""
        if self.wiring_only:
            return "LLM wiring check (tiny preset: hears the mix, its advice is weak)"
        return "LLM hearing only the mix (MERT + Qwen2, as in the paper)"

    def judge(self, segments: "list[Segment]") -> "list[Judgement]":
        """One parsed answer per segment, in order."""
        import numpy as np

        from mixcritic.critics import Judgement
        from mixcritic.templates import parse_response

        groups: dict[int, list[int]] = {}
        for index, segment in enumerate(segments):
            if segment.mix is None:
                raise ModelError("the LLM critic hears the mix, but a segment came without one")
            groups.setdefault(len(segment.mix), []).append(index)
        texts: list[str | None] = [None] * len(segments)
        for indices in groups.values():
            clips = np.stack([segments[i].mix for i in indices]).astype(np.float32, copy=False)
            answers = self.generator.generate(clips, [segments[i].instruction for i in indices])
            if len(answers) != len(indices):
                raise ModelError(f"the model returned {len(answers)} answers for {len(indices)} segments")
            for i, text in zip(indices, answers):
                texts[i] = text
        return [Judgement(parse_response(text), text) for text in texts]


def is_wiring_only(folder: Path) -> bool:
    """True when the run in ``folder`` was trained with a wiring-only preset (``tiny``).

    Runs record their preset as ``run_preset``; older ones are recognised by their ``tiny_spec``.
    """
    import json

    from mixcritic.critics.llm.checkpoint import SETTINGS_FILE

    try:
        data = json.loads((folder / SETTINGS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if "run_preset" in data:
        return data["run_preset"] in WIRING_ONLY_PRESETS
    return data.get("tiny_spec") is not None


def load_llm_critic(run_dir, device: str = "auto", encoder_source: str | None = None, llm_source: str | None = None) -> LLMCritic:
    """:func:`load_critic` wrapped as an :class:`LLMCritic` (what ``mixcritic.critics.load_critic`` returns)."""
    generator = load_critic(run_dir, device=device, encoder_source=encoder_source, llm_source=llm_source)
    return LLMCritic(generator, Path(run_dir), is_wiring_only(generator.folder))
