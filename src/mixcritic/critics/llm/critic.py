"""The whole model: frozen MERT -> layer weights -> pooling -> projector -> Qwen2 + LoRA.

:class:`MixCritic` is a plain ``nn.Module`` around the pieces. It never forks the LLM: the
prompt's token embeddings are computed, the projected audio frames are written into the
placeholder positions (``audio_mask``), and the LLM runs on ``inputs_embeds``.

Loss = LM cross-entropy on the answer tokens + ``aux_loss_weight`` x :func:`norm_matching_loss`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mixcritic.errors import ModelError
from mixcritic.critics.llm.encoder import frames_for_samples, hidden_states
from mixcritic.critics.llm.settings import SETTINGS_VERSION, CriticSettings  # noqa: F401 - re-exported
from mixcritic.critics.llm.projector import (
    FeatureStandardizer,
    LayerWeights,
    Projector,
    norm_matching_loss,
    pool_frames,
    pooled_frame_count,
)


@dataclass
class CriticOutput:
    """Loss parts and logits of one forward pass."""

    loss: torch.Tensor | None
    lm_loss: torch.Tensor | None
    aux_loss: torch.Tensor | None
    logits: torch.Tensor | None = None
    answer_logps: torch.Tensor | None = None
    """(batch,) summed log-probability of each row's answer tokens (with ``answer_logps=True``; DPO)."""


class MixCritic(nn.Module):
    """Frozen encoder + trainable layer weights and projector + LLM with a LoRA adapter."""

    def __init__(self, encoder, llm, tokenizer, settings: CriticSettings, encoder_hidden: int, num_states: int) -> None:
        super().__init__()
        self.settings = settings
        self.tokenizer = tokenizer
        self.encoder = encoder
        self.llm = llm
        self.layer_weights = LayerWeights(num_states)
        self.feature_norm = FeatureStandardizer(num_states, encoder_hidden) if settings.standardize_clips else None
        llm_hidden = llm.get_input_embeddings().embedding_dim
        self.projector = Projector(
            encoder_hidden, llm_hidden, settings.projector_hidden, settings.projector_depth, settings.projector_dropout,
            settings.projector_activation,
        )

    # -- structure -------------------------------------------------------------------------
    def train(self, mode: bool = True) -> "MixCritic":
        """Train mode for everything but the frozen encoder, which stays in eval (no dropout/masking)."""
        super().train(mode)
        self.encoder.eval()
        return self

    def frames_per_clip(self, samples: int) -> int:
        """Audio positions one clip of ``samples`` occupies in the prompt (after pooling)."""
        cfg = self.encoder.config
        frames = frames_for_samples(cfg.conv_kernel, cfg.conv_stride, samples)
        if frames < self.settings.audio_pool:
            raise ModelError(f"a clip of {samples} samples gives {frames} encoder frames, fewer than --audio-pool "
                             f"{self.settings.audio_pool}; use longer clips or a smaller --audio-pool.")
        return pooled_frame_count(frames, self.settings.audio_pool)

    @property
    def device(self) -> torch.device:
        return self.projector.net[0].weight.device

    # -- forward ---------------------------------------------------------------------------
    def audio_embeddings(self, audio: torch.Tensor) -> torch.Tensor:
        """(batch, samples) float32 24 kHz -> (batch, audio positions, LLM hidden)."""
        states = self.encoder_states(audio)
        if self.feature_norm is not None:
            states = self.feature_norm(states)
        frames = pool_frames(self.layer_weights(states), self.settings.audio_pool)
        return self.projector(frames)

    def encoder_states(self, audio: torch.Tensor) -> torch.Tensor:
        """The frozen encoder's hidden states: (layers + 1, batch, frames, hidden)."""
        return hidden_states(self.encoder, audio.to(self.device, torch.float32), self.settings.normalize_input)

    def splice(self, input_ids: torch.Tensor, audio_mask: torch.Tensor, audio_embeds: torch.Tensor):
        """Token embeddings with the audio frames written at the ``audio_mask`` positions.

        Returns ``(inputs_embeds, text_embeds)``; the latter is the embedding table's output
        (used by the auxiliary loss).
        """
        text_embeds = self.llm.get_input_embeddings()(input_ids)
        per_row = audio_mask.sum(dim=1)
        if not bool((per_row == audio_embeds.shape[1]).all()):
            raise ModelError(
                f"prompt has {per_row.tolist()} audio positions per row but the clip gives {audio_embeds.shape[1]} frames"
            )
        mask = audio_mask.unsqueeze(-1).expand_as(text_embeds)
        embeds = text_embeds.masked_scatter(mask, audio_embeds.to(text_embeds.dtype))
        return embeds, text_embeds

    def forward(self, audio, input_ids, attention_mask, audio_mask, labels=None, answer_logps: bool = False) -> CriticOutput:
        """LM loss on the answer + weighted auxiliary loss; logits are returned when no labels are given.

        ``answer_logps``: also return each row's summed answer log-probability (the DPO stage's input).
        """
        audio_embeds = self.audio_embeddings(audio)
        embeds, text_embeds = self.splice(input_ids.to(self.device), audio_mask.to(self.device), audio_embeds)
        attention_mask = attention_mask.to(self.device)
        if labels is None:
            out = self.llm(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False)
            return CriticOutput(None, None, None, out.logits)
        labels = labels.to(self.device)
        keep = logits_needed(labels)
        out = self.llm(inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False, logits_to_keep=keep)
        kept_labels = labels[:, labels.shape[1] - keep:]
        lm_loss = causal_lm_loss(out.logits, kept_labels)
        logps = sequence_logps(out.logits, kept_labels) if answer_logps else None
        text_rows = attention_mask.bool() & ~audio_mask.to(self.device)
        aux = norm_matching_loss(audio_embeds, text_embeds[text_rows], self.settings.aux_loss_norm)
        loss = lm_loss + self.settings.aux_loss_weight * aux
        if answer_logps:  # the DPO stage differentiates through the log-probs and the aux loss
            return CriticOutput(loss, lm_loss.detach(), aux, None, logps)
        return CriticOutput(loss, lm_loss.detach(), aux.detach(), None)

    # -- parameters ------------------------------------------------------------------------
    def trained_state(self) -> dict[str, torch.Tensor]:
        """Only what training changes: layer weights, projector, LoRA adapter (+ fitted feature statistics)."""
        from peft import get_peft_model_state_dict

        state = {f"layer_weights.{k}": v for k, v in self.layer_weights.state_dict().items()}
        if self.feature_norm is not None:
            state.update({f"feature_norm.{k}": v for k, v in self.feature_norm.state_dict().items()})
        state.update({f"projector.{k}": v for k, v in self.projector.state_dict().items()})
        state.update({f"lora.{k}": v for k, v in get_peft_model_state_dict(self.llm).items()})
        return state

    def load_trained_state(self, state: dict[str, torch.Tensor]) -> None:
        """Inverse of :meth:`trained_state`; every key must be used and every trained tensor present."""
        from peft import set_peft_model_state_dict

        groups: dict[str, dict[str, torch.Tensor]] = {"layer_weights": {}, "projector": {}, "lora": {}}
        if self.feature_norm is not None:
            groups["feature_norm"] = {}
        for key, value in state.items():
            group, _, name = key.partition(".")
            if group not in groups:
                raise ModelError(f"checkpoint tensor {key!r} belongs to no trained part")
            groups[group][name] = value
        parts = [("layer_weights", self.layer_weights), ("feature_norm", self.feature_norm), ("projector", self.projector)]
        for name, module in parts:
            if module is None:
                continue
            try:
                module.load_state_dict(groups[name], strict=True)
            except RuntimeError as error:  # shape mismatch: another encoder width, projector or front-end version
                detail = next((line.strip() for line in str(error).splitlines()[1:]), str(error))  # torch: header, then one line per tensor
                raise ModelError(f"the checkpoint's {name} tensors do not fit this model ({detail}): it was "
                                 "trained with other model settings or an earlier version of the encoder front end; "
                                 "retrain it with this version") from None
        expected = set(get_peft_model_state_dict_keys(self.llm))
        if set(groups["lora"]) != expected:
            missing, extra = expected - set(groups["lora"]), set(groups["lora"]) - expected
            raise ModelError(f"LoRA tensors do not match the model: missing {sorted(missing)[:3]}, extra {sorted(extra)[:3]}")
        result = set_peft_model_state_dict(self.llm, groups["lora"])
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise ModelError(f"LoRA tensors not used by the model: {unexpected[:3]}")


def get_peft_model_state_dict_keys(llm) -> list[str]:
    """Keys of the adapter's state dict."""
    from peft import get_peft_model_state_dict

    return list(get_peft_model_state_dict(llm).keys())


def logits_needed(labels: torch.Tensor) -> int:
    """How many trailing positions need logits: from the one before the earliest label to the end.

    Computing the vocabulary logits only there saves most of the logits memory (the audio
    frames are ~80 % of a sample's positions and a 152k vocabulary is large).
    """
    labelled = (labels != -100).any(dim=0).nonzero()
    if labelled.numel() == 0:
        raise ModelError("a training batch has no answer tokens to learn")
    return labels.shape[1] - max(int(labelled[0]) - 1, 0)


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over positions whose (shifted) label is not -100."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    return nn.functional.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1), ignore_index=-100
    )


def sequence_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """(batch,) sum of next-token log-probabilities over the positions whose (shifted) label is not -100."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    keep = shift_labels != -100
    picked = shift_logits.log_softmax(dim=-1).gather(-1, shift_labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * keep).sum(dim=1)
