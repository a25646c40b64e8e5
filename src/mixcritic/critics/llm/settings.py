"""The settings that rebuild a trained model and feed it exactly like in training (no torch import).

:class:`CriticSettings` is stored as ``mixcritic.json`` in every checkpoint; ``train --show-config``
resolves it without importing torch. Re-exported by ``mixcritic.critics.llm.critic``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from mixcritic.errors import ModelError
from mixcritic.labels import DEFAULT_TARGET_LUFS, MODEL_SAMPLE_RATE_HZ

LOGMEL_SOURCE = "logmel"
"""The ``--encoder`` value (and ``encoder_source`` in a run's mixcritic.json) that selects the log-mel
front end (:mod:`mixcritic.critics.llm.logmel`); defined here so option handling needs no torch."""

PROJECTOR_ACTIVATIONS = ("relu", "gelu")
"""Hidden-layer activations of the projector: relu (the paper's text), gelu (the authors' published run)."""

AUX_LOSS_NORMS = ("sqrt_d", "d")
"""How the auxiliary loss scales each vector's L2 norm: / sqrt(d) (ours) or / d (the authors' run)."""

SETTINGS_VERSION = 1


@dataclass(frozen=True)
class CriticSettings:
    """Everything needed to rebuild a trained model and feed it exactly like in training."""

    encoder_source: str
    """MERT hub id (e.g. m-a-p/MERT-v1-330M) or local snapshot directory."""
    llm_source: str
    """Qwen2 hub id (e.g. Qwen/Qwen2-7B-Instruct) or local directory."""
    quantize_4bit: bool = True
    """Load the LLM in 4-bit NF4 with double quantisation (QLoRA)."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA alpha (scale alpha / r)."""
    lora_dropout: float = 0.05
    """LoRA dropout."""
    projector_hidden: int | list = 2048
    """Widths of the projector's hidden layers, e.g. [2048, 4096, 4096, 2048]; a single number means
    that width for each of ``projector_depth`` layers. Stored as the list."""
    projector_depth: int = 4
    """Hidden layers of the projector (Linear, activation, LayerNorm, Dropout each); set from
    ``projector_hidden`` when that is a list."""
    projector_activation: str = "relu"
    """Activation of the projector's hidden layers: relu (paper's text) or gelu (authors' run)."""
    projector_dropout: float = 0.1
    """Dropout in the projector."""
    audio_pool: int = 1
    """Average this many consecutive encoder frames before the projector (1 = paper, 75 Hz)."""
    aux_loss_weight: float = 0.05
    """Weight of the embedding-norm matching loss."""
    aux_loss_norm: str = "sqrt_d"
    """Per-vector scale in that loss: L2 norm / sqrt(d) ("sqrt_d", ours: the RMS) or / d ("d", the
    authors' run; at equal weight d times weaker, d = 3584 for Qwen2-7B)."""
    system_message: str | None = None
    """System turn of every prompt; None keeps the chat template's default."""
    autocast_bf16: bool = False
    """Whether training ran under bf16 autocast; inference then runs under it too (CUDA)."""
    standardize_clips: int = 0
    """Standardise the encoder's hidden states per dimension with statistics fitted on this many
    training clips before training (0 = off, as in the paper)."""
    sample_rate_hz: int = MODEL_SAMPLE_RATE_HZ
    """Audio sample rate the encoder expects."""
    segment_s: float = 10.0
    """Clip length used in training; critique cuts songs into segments of this length."""
    target_lufs: float = DEFAULT_TARGET_LUFS
    """Integrated loudness each clip is normalised to before encoding."""
    normalize_input: bool = True
    """Zero-mean unit-variance scaling of each clip before MERT (its feature extractor's do_normalize)."""
    template_version: str = ""
    """Version of the instruction / response templates the model was trained on."""
    prompt_version: str = ""
    """Version of the prompt layout (mixcritic.critics.llm.prompt.PROMPT_VERSION)."""
    max_new_tokens: int = 64
    """Generation limit for answers."""
    gradient_checkpointing: bool = True
    """Activation checkpointing in the LLM during training."""
    tiny_spec: dict | None = None
    """For the tiny preset: the TinySpec that rebuilds the random-init base models."""
    version: int = SETTINGS_VERSION
    """Format version of this settings record."""

    def __post_init__(self) -> None:
        hidden = self.projector_hidden
        widths = [hidden] * self.projector_depth if isinstance(hidden, int) else list(hidden)
        if not widths or not all(isinstance(w, int) and w >= 1 for w in widths):
            raise ModelError(f"invalid --projector-hidden: {hidden!r}; give widths >= 1, e.g. 2048,4096,4096,2048")
        object.__setattr__(self, "projector_hidden", widths)
        object.__setattr__(self, "projector_depth", len(widths))
        choices = {"projector_activation": PROJECTOR_ACTIVATIONS, "aux_loss_norm": AUX_LOSS_NORMS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ModelError(f"invalid --{name.replace('_', '-')}: {getattr(self, name)!r}; use one of {', '.join(allowed)}")
        checks = {
            "audio_pool": self.audio_pool >= 1,
            "standardize_clips": self.standardize_clips >= 0,
            "projector_dropout": 0.0 <= self.projector_dropout < 1.0,
            "aux_loss_weight": self.aux_loss_weight >= 0.0,
            "segment_s": self.segment_s > 0,
            "max_new_tokens": self.max_new_tokens >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ModelError(f"invalid --{name.replace('_', '-')}: {getattr(self, name)!r}")

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "CriticSettings":
        """Inverse of :meth:`to_dict`; unknown keys are an error (a newer format)."""
        known = {f.name for f in fields(cls)}
        extra = sorted(set(data) - known)
        if extra:
            raise ModelError(f"checkpoint settings have unknown fields {extra}; upgrade mixcritic.")
        return cls(**data)

    @property
    def segment_samples(self) -> int:
        """Samples per clip."""
        return int(round(self.segment_s * self.sample_rate_hz))
