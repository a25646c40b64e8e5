"""A deterministic log-mel front end with the encoder's interface (``--encoder logmel``).

The tiny random MERT barely tells clips apart (its clip features differ by ~3 % of their
spread), so a CPU-trained critic on it can only answer from the prompt. This stand-in is
informative and has no weights: log-mel frames at MERT's 75 Hz (hop 320 at 24 kHz, one frame
per 400-sample MERT frame, 749 per 10 s clip), returned as several "hidden states" so that the
layer weights, pooling and projector are used exactly as with MERT:

====  ===================================================================================
0     the log-mel frame itself
1     averaged over ~0.2 s (15 frames, centred)
2     averaged over ~1 s (75 frames, centred)
3     averaged over the whole clip (the clip's mean spectrum, the same at every frame)
====  ===================================================================================

Each is ``n_mels`` (16) dims in dB, scaled by a fixed affine map (``(dB + 45) / 20``: the bands of a
mix at -23 LUFS have mean ~0 and std ~1.2 on toy songs); nothing is fitted here. ``--standardize-clips``
may still fit a per-dimension standardisation on top, as for MERT. Sixteen wide bands, not 64 narrow
ones: a stem's energy then stays in the same bands whatever key a song is in, so what a critic
learns on a few songs carries over to others (linear and MLP probes on the clip-mean spectrum of
held-out toy songs, two toy datasets: 58-74 % macro Both with 16 bands, 38-63 % with 64;
docs/training.md).

Shapes: audio ``(batch, samples)`` float32 at 24 kHz -> ``hidden_states`` tuple of
``(batch, frames, n_mels)``, frames = ``(samples - 400) // 320 + 1`` (MERT's count).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch
from torch import nn

from mixcritic.critics.llm.settings import LOGMEL_SOURCE  # noqa: F401 - re-exported: the --encoder value


@dataclass(frozen=True)
class LogMelSpec:
    """The front end's fixed parameters (not options: a run records only ``encoder_source='logmel'``)."""

    sample_rate_hz: int = 24_000
    """Input sample rate (MERT's)."""
    frame_samples: int = 400
    """Nominal frame length: with ``hop_samples`` it gives MERT's frame count, ``(n - 400) // 320 + 1``."""
    hop_samples: int = 320
    """Hop between frames: 75 Hz at 24 kHz."""
    fft_samples: int = 1024
    """FFT (and Hann window) length, centred on each nominal frame: 23 Hz bins, fine enough for bass."""
    n_mels: int = 16
    """Mel bands: the width of every hidden state."""
    min_hz: float = 30.0
    """Lowest mel band edge."""
    max_hz: float = 12_000.0
    """Highest mel band edge (Nyquist)."""
    smoothing_frames: tuple[int, ...] = (15, 75)
    """Centred moving-average lengths (frames) of the smoothed states, between the raw and the clip-mean state."""
    db_offset: float = -45.0
    """Fixed scaling: features are ``(dB - db_offset) / db_scale``."""
    db_scale: float = 20.0
    """Fixed scaling divisor (see ``db_offset``)."""
    floor_power: float = 1e-10
    """Power floor before the logarithm (-100 dB): digital silence gives finite features."""

    @property
    def num_states(self) -> int:
        """Raw + smoothed + clip-mean."""
        return len(self.smoothing_frames) + 2


def hz_to_mel(hz):
    """HTK mel scale: ``2595 log10(1 + f / 700)``."""
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(hz, dtype=torch.float64) / 700.0)


def mel_to_hz(mel):
    """Inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (torch.as_tensor(mel, dtype=torch.float64) / 2595.0) - 1.0)


def mel_filterbank(spec: LogMelSpec) -> torch.Tensor:
    """Triangular filters, ``(fft_samples // 2 + 1, n_mels)`` float32, equal area (each column sums to 1).

    Equal area makes each band the *mean* power of its bins, so the log-mel of white noise is flat.
    """
    bins_hz = torch.linspace(0.0, spec.sample_rate_hz / 2, spec.fft_samples // 2 + 1, dtype=torch.float64)
    edges = mel_to_hz(torch.linspace(float(hz_to_mel(spec.min_hz)), float(hz_to_mel(spec.max_hz)), spec.n_mels + 2, dtype=torch.float64))
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]
    rising = (bins_hz[:, None] - lower) / (centre - lower)
    falling = (upper - bins_hz[:, None]) / (upper - centre)
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0)
    empty = weights.sum(0) == 0  # a band narrower than one bin: take its nearest bin
    if bool(empty.any()):
        nearest = (bins_hz[:, None] - centre[empty]).abs().argmin(0)
        weights[nearest, empty.nonzero().squeeze(1)] = 1.0
    return (weights / weights.sum(0)).float()


def moving_average(frames: torch.Tensor, length: int) -> torch.Tensor:
    """Centred moving average over time of ``(batch, frames, dims)``; the edges average what exists."""
    if length <= 1:
        return frames
    count = frames.shape[1]
    sums = nn.functional.pad(frames.double().cumsum(dim=1), (0, 0, 1, 0))  # sums[:, i] = sum of frames[:, :i]
    index = torch.arange(count, device=frames.device)
    start = (index - length // 2).clamp(min=0)
    stop = (index - length // 2 + length).clamp(max=count)
    window = (sums[:, stop] - sums[:, start]) / (stop - start).to(sums.dtype)[None, :, None]
    return window.to(frames.dtype)


class LogMelEncoder(nn.Module):
    """Log-mel "encoder": ``forward(audio)`` returns ``hidden_states`` and ``last_hidden_state`` like HubertModel.

    ``config`` carries what the rest of the model reads from an encoder: ``hidden_size``,
    ``num_hidden_layers`` (states - 1), ``conv_kernel`` / ``conv_stride`` (frame count).
    """

    def __init__(self, spec: LogMelSpec | None = None) -> None:
        super().__init__()
        self.spec = spec or LogMelSpec()
        self.config = SimpleNamespace(
            hidden_size=self.spec.n_mels,
            num_hidden_layers=self.spec.num_states - 1,
            conv_kernel=[self.spec.frame_samples],
            conv_stride=[self.spec.hop_samples],
            model_type=LOGMEL_SOURCE,
        )
        self.register_buffer("window", torch.hann_window(self.spec.fft_samples, periodic=True), persistent=False)
        self.register_buffer("filters", mel_filterbank(self.spec), persistent=False)

    def log_mel_db(self, audio: torch.Tensor) -> torch.Tensor:
        """(batch, samples) -> (batch, frames, n_mels) mean power per FFT bin of each band, in dB.

        Scaled so that white noise of variance s^2 gives ``10 log10(s^2)`` in every band.
        """
        spec = self.spec
        frames = (audio.shape[-1] - spec.frame_samples) // spec.hop_samples + 1
        if frames < 1:
            raise ValueError(f"a clip of {audio.shape[-1]} samples is shorter than one {spec.frame_samples}-sample frame")
        side = (spec.fft_samples - spec.frame_samples) // 2
        padded = nn.functional.pad(audio.unsqueeze(1), (side, spec.fft_samples - spec.frame_samples - side)).squeeze(1)
        chunks = padded.unfold(-1, spec.fft_samples, spec.hop_samples)[:, :frames]  # (batch, frames, fft)
        power = torch.view_as_real(torch.fft.rfft(chunks * self.window, dim=-1)).pow(2).sum(-1) / self.window.pow(2).sum()
        return 10.0 * torch.log10((power @ self.filters).clamp(min=spec.floor_power))

    def forward(self, audio: torch.Tensor, output_hidden_states: bool = True, return_dict: bool = True):
        """(batch, samples) float32 24 kHz -> namespace(hidden_states=(raw, smoothed..., clip mean), last_hidden_state)."""
        spec = self.spec
        db = self.log_mel_db(audio.float())
        raw = (db - spec.db_offset) / spec.db_scale
        states = [raw, *(moving_average(raw, n) for n in spec.smoothing_frames)]
        states.append(raw.mean(dim=1, keepdim=True).expand_as(raw))
        return SimpleNamespace(hidden_states=tuple(states), last_hidden_state=states[-1])


def is_logmel(source) -> bool:
    """True when an ``encoder_source`` names this front end."""
    return str(source) == LOGMEL_SOURCE


def load_logmel_encoder(device: str = "cpu"):
    """The log-mel front end, frozen and in eval mode, with its ``EncoderInfo``."""
    from mixcritic.critics.llm.encoder import EncoderInfo

    model = LogMelEncoder().to(device).eval().requires_grad_(False)
    info = EncoderInfo(source=LOGMEL_SOURCE, hidden_size=model.spec.n_mels,
                       num_hidden_states=model.spec.num_states, normalize_input=True)
    return model, info
