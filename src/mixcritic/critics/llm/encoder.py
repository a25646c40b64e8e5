"""The frozen MERT audio encoder, loaded into transformers' native ``HubertModel``.

MERT-v1 is a HuBERT-shaped model published with remote code. We never run that code
(``trust_remote_code``): its ``config.json`` is mapped onto a :class:`transformers.HubertConfig`
(:func:`hubert_config_from_mert`) and its weights are loaded into ``HubertModel`` with a strict
check that every key matched (:func:`load_encoder`). The same function loads the tiny mock
snapshots that tests and the ``tiny`` preset build, so the real path is the tested path.

Shapes: audio ``(batch, samples)`` float32 at 24 kHz -> hidden states
``(layers + 1, batch, frames, hidden)`` at 75 Hz (749 frames per 10 s).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mixcritic.errors import ModelError

if TYPE_CHECKING:  # pragma: no cover
    import torch

MERT_HUB_ID = "m-a-p/MERT-v1-330M"
"""The paper's encoder. Weights CC-BY-NC-4.0 (non-commercial)."""

REFUSED_WHEN_TRUE = ("deepnorm", "feature_extractor_cqt")
"""MERT config flags that change the architecture in ways ``HubertModel`` cannot represent."""

IGNORED_MERT_FIELDS = {
    "attention_relax": "MERT subtracts the row maximum (scaled) before the attention softmax: "
    "mathematically the same softmax, so HubertModel's attention gives the same output",
    "feature_extractor_cqt_bins": "only used when feature_extractor_cqt is true (refused)",
    "sample_rate": "checked separately: must be 24000",
    "auto_map": "remote-code metadata, never executed",
    "architectures": "metadata",
    "model_type": "metadata ('mert_model')",
    "_name_or_path": "metadata",
    "transformers_version": "metadata",
    "torch_dtype": "metadata",
    "dtype": "metadata",
    "tokenizer_class": "metadata (MERT has no tokenizer)",
    "gradient_checkpointing": "training setting, irrelevant for a frozen encoder",
    "feat_extract_dropout": "pre-training only: dropout on the conv features, inactive in eval mode "
    "(older HubertConfig field, absent from transformers 5.x)",
}
"""MERT config.json fields that are not HubertConfig fields, with the reason each is safe to drop."""

LEGACY_KEY_RENAMES = {
    "weight_g": "parametrizations.weight.original0",
    "weight_v": "parametrizations.weight.original1",
}
"""Old ``torch.nn.utils.weight_norm`` parameter names -> the parametrisation names HubertModel uses."""

KNOWN_PREFIXES = ("mert.", "hubert.", "model.")
"""Prefixes a base-model checkpoint may carry; stripped when every key has the same one."""

MODEL_SAMPLE_RATE_HZ = 24_000


@dataclass(frozen=True)
class EncoderInfo:
    """What the rest of the model needs to know about a loaded encoder."""

    source: str
    """Hub id or local directory it was loaded from."""
    hidden_size: int
    """Width of each hidden state (1024 for MERT-v1-330M)."""
    num_hidden_states: int
    """Transformer layers + 1 (25 for MERT-v1-330M)."""
    normalize_input: bool
    """Whether each clip is scaled to zero mean / unit variance first (MERT's feature extractor
    ``do_normalize``)."""


def hubert_config_from_mert(mert_config: dict[str, Any]):
    """Map a MERT ``config.json`` dict onto a ``HubertConfig``.

    Raises ModelError for flags HubertModel cannot represent (``deepnorm``,
    ``feature_extractor_cqt``) and for a sample rate other than 24 kHz; warns about fields it
    does not know (the strict key check in :func:`load_encoder` still catches any weight that a
    missed architecture option would need).
    """
    from dataclasses import fields

    from transformers import HubertConfig

    for flag in REFUSED_WHEN_TRUE:
        if mert_config.get(flag):
            raise ModelError(
                f"MERT config has {flag}=true, which transformers' HubertModel cannot represent; "
                "use a MERT-v1 checkpoint (e.g. m-a-p/MERT-v1-330M) whose config has it false."
            )
    rate_hz = mert_config.get("sample_rate", MODEL_SAMPLE_RATE_HZ)
    if int(rate_hz) != MODEL_SAMPLE_RATE_HZ:
        raise ModelError(f"MERT config sample_rate is {rate_hz}; mixcritic needs a 24000 Hz MERT-v1 encoder.")
    hubert_fields = {f.name for f in fields(HubertConfig)} | set(_base_config_fields())
    unknown = sorted(k for k in mert_config if k not in hubert_fields and k not in IGNORED_MERT_FIELDS
                     and k not in REFUSED_WHEN_TRUE)
    if unknown:
        from mixcritic.console import warn

        warn(f"MERT config fields not mapped to HubertConfig (ignored): {', '.join(unknown)}")
    kwargs = {k: v for k, v in mert_config.items() if k in hubert_fields and not k.startswith("_")}
    for key in ("architectures", "model_type", "transformers_version", "torch_dtype", "dtype"):
        kwargs.pop(key, None)
    return HubertConfig(**kwargs)


def _base_config_fields() -> tuple[str, ...]:
    """PreTrainedConfig attributes that are fine to pass through (token ids, output flags)."""
    return ("pad_token_id", "bos_token_id", "eos_token_id", "num_feat_extract_layers",
            "output_hidden_states", "return_dict", "output_attentions", "is_encoder_decoder")


def resolve_model_dir(source: str | Path) -> Path:
    """A local directory as is, or a hub id resolved from the local Hugging Face cache only.

    Never downloads: a missing snapshot raises ModelError telling how to fetch it.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if str(source).count("/") == 1 and not path.exists():
        try:
            from huggingface_hub import snapshot_download

            return Path(snapshot_download(str(source), local_files_only=True))
        except Exception:  # noqa: BLE001 - any failure means "not in the local cache"
            pass
    raise ModelError(
        f"model {source!r} is neither a local directory nor in the local Hugging Face cache; "
        f"download it once with `huggingface-cli download {source}` or pass a local directory."
    )


def read_state_dict(model_dir: Path) -> dict[str, "torch.Tensor"]:
    """Read a checkpoint's tensors: safetensors when present, else ``pytorch_model.bin``.

    MERT publishes only a pickle ``pytorch_model.bin``; it is read with
    ``torch.load(weights_only=True)``, which refuses anything but tensors and plain containers.
    """
    import torch

    safe = sorted(model_dir.glob("model*.safetensors"))
    if safe:
        from safetensors.torch import load_file

        state: dict[str, torch.Tensor] = {}
        for file in safe:
            state.update(load_file(str(file)))
        return state
    pickle_file = model_dir / "pytorch_model.bin"
    if pickle_file.is_file():
        try:
            return torch.load(pickle_file, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"cannot read {pickle_file} with torch.load(weights_only=True): {exc}") from exc
    raise ModelError(f"{model_dir} has no model*.safetensors or pytorch_model.bin; is it a MERT snapshot?")


def normalize_state_keys(state: dict[str, "torch.Tensor"]) -> dict[str, "torch.Tensor"]:
    """Strip a shared base-model prefix and rename legacy weight-norm keys (``weight_g``/``weight_v``)."""
    keys = list(state)
    for prefix in KNOWN_PREFIXES:
        if keys and all(k.startswith(prefix) for k in keys):
            state = {k[len(prefix):]: v for k, v in state.items()}
            break
    renamed = {}
    for key, value in state.items():
        head, _, leaf = key.rpartition(".")
        if leaf in LEGACY_KEY_RENAMES:
            key = f"{head}.{LEGACY_KEY_RENAMES[leaf]}"
        renamed[key] = value
    return renamed


def read_normalize_flag(model_dir: Path) -> bool:
    """MERT's feature extractor ``do_normalize`` (preprocessor_config.json); True when absent, as in MERT-v1."""
    file = model_dir / "preprocessor_config.json"
    if not file.is_file():
        return True
    return bool(json.loads(file.read_text()).get("do_normalize", True))


def load_encoder(source: str | Path, device: str = "cpu"):
    """Load a MERT snapshot into a frozen, eval-mode ``HubertModel``.

    Returns ``(model, EncoderInfo)``. Raises ModelError if any checkpoint key is missing or
    unexpected after the legacy renames, so a silently half-initialised encoder cannot happen.
    """
    from transformers import HubertModel

    model_dir = resolve_model_dir(source)
    config_file = model_dir / "config.json"
    if not config_file.is_file():
        raise ModelError(f"{model_dir} has no config.json; pass a MERT snapshot directory.")
    config = hubert_config_from_mert(json.loads(config_file.read_text()))
    state = normalize_state_keys(read_state_dict(model_dir))
    model = HubertModel(config)
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ModelError(
            f"encoder weights in {model_dir} do not match the mapped HubertConfig: "
            f"missing {result.missing_keys[:5]} ({len(result.missing_keys)}), "
            f"unexpected {result.unexpected_keys[:5]} ({len(result.unexpected_keys)})."
        )
    model.to(device).eval().requires_grad_(False)
    info = EncoderInfo(
        source=str(source),
        hidden_size=config.hidden_size,
        num_hidden_states=config.num_hidden_layers + 1,
        normalize_input=read_normalize_flag(model_dir),
    )
    return model, info


def frames_for_samples(conv_kernels: list[int], conv_strides: list[int], samples: int) -> int:
    """Frames the conv feature encoder makes from ``samples`` (no padding): 749 for 240000 at MERT strides."""
    frames = samples
    for kernel, stride in zip(conv_kernels, conv_strides):
        frames = (frames - kernel) // stride + 1
    if frames < 1:
        raise ModelError(f"a clip of {samples} samples is too short for the encoder's convolutions.")
    return frames


def normalize_clips(audio: "torch.Tensor") -> "torch.Tensor":
    """Zero mean, unit variance per clip, as MERT's Wav2Vec2FeatureExtractor(do_normalize=True) does."""
    mean = audio.mean(dim=-1, keepdim=True)
    var = audio.var(dim=-1, keepdim=True, unbiased=False)
    return (audio - mean) / (var + 1e-7).sqrt()


def hidden_states(model, audio: "torch.Tensor", normalize_input: bool) -> "torch.Tensor":
    """All hidden states of a frozen encoder, stacked: ``(layers + 1, batch, frames, hidden)``.

    ``audio``: (batch, samples) float32 at 24 kHz, all clips the same length (no padding, so
    group norm in the conv stack sees exactly the clip). In transformers 5.x the last entry of
    ``hidden_states`` precedes the final layer norm; it is replaced by ``last_hidden_state``.
    """
    import torch

    if normalize_input:
        audio = normalize_clips(audio)
    with torch.no_grad():
        out = model(audio, output_hidden_states=True, return_dict=True)
    states = list(out.hidden_states)
    states[-1] = out.last_hidden_state
    # under autocast the states can mix bf16 and fp32: stack them in fp32
    return torch.stack([state.float() for state in states], dim=0)
