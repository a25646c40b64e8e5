"""Per-segment gain advice on a session, and the per-stem consensus across segments.

The session (:mod:`mixcritic.session`) is cut into windows of the checkpoint's segment length;
the last window is aligned to the end of the song, so every window has the full length the
model was trained on (a song shorter than one window is padded with silence to the window
length). Each window is measured and gated exactly like a training chunk (BS.1770 loudness from
K-weighted hop energies, ``mixcritic.synthesis.gate_chunk``): windows the training data would
have dropped (mix below -50 LUFS, anchor stem not playing, no other target stem playing) are
reported and not sent to the model. The others are loudness-normalised to the checkpoint's
target, the instruction is rendered with a fixed template and the active stems, and the windows
are judged in batches through the critics' one interface (:mod:`mixcritic.critics`): each
:class:`~mixcritic.critics.Segment` carries the normalised mix and, in stems mode, the separate
stems, and either engine answers with a label, its text and (measured) its confidence. Answers
that could not be read are kept raw.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from mixcritic import __version__
from mixcritic.critics import BUILTIN, Critic, Judgement, Segment, critic_line
from mixcritic.errors import MixcriticError, ModelError
from mixcritic.labels import (
    CORRECTION_DB,
    DEFAULT_TARGET_LUFS,
    MODEL_SAMPLE_RATE_HZ,
    STEMS,
    TARGET_STEMS,
    Label,
)
from mixcritic.session import Session

INSTRUCTION_TEMPLATE_ID = 0
"""The instruction template critique always uses (training draws all of them; id 0 is one it saw)."""

SCHEMA_VERSION = 2
"""Version of the ``--json`` document (``schemas/critique.schema.json``)."""

MODEL_ENV = "MIXCRITIC_MODEL"
"""Environment variable naming the default model: a run folder, or ``builtin``."""

VERDICTS: tuple[str, ...] = (
    "balanced", "too_loud", "too_quiet", "unparsed", "stem_inactive", "silent", "anchor_inactive", "no_target",
)
"""Per-segment verdicts: what the model said, or why it was not asked / not understood.
``stem_inactive``: the answer named a stem that is silent (or absent) in that window, so it is not
used: a stem is never judged where it does not play."""


class StemsRequiredError(ModelError):
    """A critic that reads the separate stems was given a single mixed file."""

    exit_code = 2


@dataclass(frozen=True)
class GateSettings:
    """The training data's loudness gate (``mixcritic synth`` defaults): windows it would have
    dropped are reported instead of judged."""

    gate_lufs: float = -50.0
    """A window whose mix is quieter is ``silent``; a stem quieter than this is inactive."""
    gate_relative_lu: float = -20.0
    """A stem more than this far below the window's mix is inactive (LU)."""
    min_active_fraction: float = 0.2
    """A stem with fewer of its 400 ms blocks above ``gate_lufs`` is inactive."""


@dataclass(frozen=True)
class CritiqueConfig:
    """How a session is cut, normalised and sent to the model."""

    segment_s: float = 10.0
    """Window length in seconds (the checkpoint's, unless overridden)."""
    sample_rate_hz: int = MODEL_SAMPLE_RATE_HZ
    """Rate of the audio given to the model."""
    target_lufs: float = DEFAULT_TARGET_LUFS
    """Integrated loudness every window's mix is normalised to, as in training."""
    batch_size: int = 8
    """Windows generated together."""
    template_id: int = INSTRUCTION_TEMPLATE_ID
    """Instruction template used for every window."""
    gate: GateSettings = field(default_factory=GateSettings)
    """Which windows are judged: the training data's loudness gate."""

    def __post_init__(self) -> None:
        hops = self.segment_s * 10
        if not (math.isfinite(self.segment_s) and self.segment_s >= 1.0 and abs(hops - round(hops)) < 1e-6):
            raise MixcriticError(f"--segment-s {self.segment_s}: must be at least 1 second and a multiple of 0.1 s")
        if self.sample_rate_hz <= 0:
            raise ModelError(f"sample_rate_hz {self.sample_rate_hz}: must be positive")
        if not math.isfinite(self.target_lufs) or self.target_lufs >= 0:
            raise ModelError(f"target_lufs {self.target_lufs}: must be a negative loudness in LUFS")
        if self.batch_size < 1:
            raise MixcriticError(f"--batch-size {self.batch_size}: must be at least 1")

    @property
    def segment_samples(self) -> int:
        """Window length in samples."""
        return int(round(self.segment_s * self.sample_rate_hz))

    @classmethod
    def from_settings(cls, settings: dict, segment_s: float | None = None, batch_size: int = 8) -> "CritiqueConfig":
        """The checkpoint's preprocessing settings, with an optional ``--segment-s`` override."""
        return cls(
            segment_s=float(segment_s if segment_s is not None else settings.get("segment_s", 10.0)),
            sample_rate_hz=int(settings.get("sample_rate_hz", MODEL_SAMPLE_RATE_HZ)),
            target_lufs=float(settings.get("target_lufs", DEFAULT_TARGET_LUFS)),
            batch_size=batch_size,
        )


def segment_starts(num_samples: int, segment_samples: int) -> list[int]:
    """Start sample of every window: back to back from 0, the last one ending at the song's end.

    ``num_samples <= segment_samples`` gives one window at 0 (padded by the caller). A 25 s song
    in 10 s windows gives starts 0, 10 and 15 s.
    """
    if segment_samples <= 0:
        raise ValueError("segment_samples must be positive")
    if num_samples <= segment_samples:
        return [0]
    starts = list(range(0, num_samples - segment_samples + 1, segment_samples))
    if starts[-1] + segment_samples < num_samples:
        starts.append(num_samples - segment_samples)
    return starts


@dataclass(frozen=True)
class SegmentResult:
    """What the critic said about one window."""

    index: int
    """0-based position of the window."""
    start_s: float
    """Window start in the song, seconds."""
    end_s: float
    """Window end in the song, seconds (the song's end for a padded short song)."""
    verdict: str
    """One of :data:`VERDICTS`."""
    stem: str | None = None
    """Stem to change (None when balanced, skipped or unparsed)."""
    category: str | None = None
    """Flaw category (see :data:`mixcritic.labels.CATEGORIES`), None when not judged or unparsed."""
    correction_db: tuple[int, int] | None = None
    """Signed dB change advised, [min, max]; None when no change is advised."""
    text: str | None = None
    """The model's answer, verbatim; None when the window was not sent to the model."""
    mix_lufs: float | None = None
    """Loudness of the window's mix before normalisation (None for digital silence)."""
    padded_s: float = 0.0
    """Silence appended to fill the window (songs shorter than one window)."""
    confidence: float | None = None
    """Probability of the answer under the critic's model, in [0, 1]; None when the critic gives
    none (the LLM) or the window was not judged."""
    probabilities: dict[str, float] | None = None
    """Further named probabilities from the critic (e.g. ``no_error``); None when it gives none."""
    not_judged: tuple[str, ...] = ()
    """Bass/drums/vocals stems of the session that are silent in this window (the training gate):
    not judged here, whatever the critic says about them. Stems mode only."""


def verdict_of(label: Label | None) -> str:
    """``balanced`` / ``too_loud`` / ``too_quiet`` for a parsed label, ``unparsed`` for None."""
    if label is None:
        return "unparsed"
    if label.direction is None:
        return "balanced"
    return "too_quiet" if label.direction == "increase" else "too_loud"


def result_from_answer(index: int, start_s: float, end_s: float, text: str, label: Label | None, **extra) -> SegmentResult:
    """A judged window's result from the model's answer and its parse."""
    if label is None:
        return SegmentResult(index, start_s, end_s, "unparsed", text=text, **extra)
    return SegmentResult(
        index, start_s, end_s, verdict_of(label), label.stem, label.category,
        tuple(label.correction_db) if label.correction_db else None, text, **extra,
    )


@dataclass(frozen=True)
class StemConsensus:
    """How often one stem was judged off in one direction, and the typical correction."""

    stem: str
    """The stem the model named."""
    verdict: str
    """``too_loud`` or ``too_quiet``."""
    segments: int
    """Windows with this verdict for this stem."""
    of_segments: int
    """Windows the model judged."""
    category: str
    """Most common category among those windows (ties go to the milder one)."""
    correction_db: tuple[int, int]
    """That category's correction range, signed dB."""
    text: str
    """One line, e.g. ``bass too loud in 7 of 9 segments — reduce 3-6 dB``."""
    confidence: float | None = None
    """Mean confidence of those windows' answers; None when the critic gives none."""


@dataclass(frozen=True)
class Summary:
    """Counts over all windows and the per-stem consensus."""

    segments: int
    """All windows."""
    judged: int
    """Windows sent to the model."""
    balanced: int
    """Windows the model called balanced."""
    silent: int
    """Windows skipped: mix below the gate."""
    anchor_inactive: int
    """Windows skipped: the anchor stem is not playing."""
    no_target: int
    """Windows skipped: no other bass/drums/vocals stem is playing."""
    unparsed: int
    """Windows whose answer could not be parsed."""
    stems: tuple[StemConsensus, ...]
    """Consensus per (stem, direction), most frequent first."""
    lines: tuple[str, ...]
    """Human-readable summary, one sentence per line."""
    confidence: float | None = None
    """Mean confidence of the judged windows' answers; None when the critic gives none."""


_SEVERITY = {"quiet": 0, "loud": 0, "very_quiet": 1, "very_loud": 1}


def correction_words(correction_db: tuple[int, int]) -> str:
    """``(-6, -3)`` -> ``reduce 3-6 dB``; ``(3, 6)`` -> ``raise 3-6 dB``."""
    low, high = sorted(abs(v) for v in correction_db)
    verb = "reduce" if correction_db[0] < 0 else "raise"
    return f"{verb} {low}-{high} dB"


def mean_confidence(results: list[SegmentResult]) -> float | None:
    """Mean confidence of the results that carry one; None when none does."""
    values = [r.confidence for r in results if r.confidence is not None]
    return float(np.mean(values)) if values else None


def _consensus(stem: str, verdict: str, results: list[SegmentResult], judged: int) -> StemConsensus:
    counts = Counter(r.category for r in results)
    category = max(counts, key=lambda c: (counts[c], -_SEVERITY[c]))
    correction = CORRECTION_DB[category]
    words = verdict.replace("_", " ")
    confidence = mean_confidence(results)
    text = f"{stem} {words} in {len(results)} of {judged} segments — {correction_words(correction)}"
    if confidence is not None:
        text += f" (mean confidence {round(100 * confidence)} %)"
    return StemConsensus(stem, verdict, len(results), judged, category, correction, text, confidence)


def summarise(results: list[SegmentResult], anchor_stem: str | None = None) -> Summary:
    """Counts per verdict and the consensus per (stem, direction), most frequent first. With
    ``anchor_stem``, advice about the anchor itself is flagged as unreliable."""
    count = Counter(r.verdict for r in results)
    judged = sum(count[v] for v in ("balanced", "too_loud", "too_quiet", "unparsed", "stem_inactive"))
    groups: dict[tuple[str, str], list[SegmentResult]] = {}
    for r in results:
        if r.verdict in ("too_loud", "too_quiet"):
            groups.setdefault((r.stem, r.verdict), []).append(r)
    stems = tuple(
        sorted(
            (_consensus(stem, verdict, group, judged) for (stem, verdict), group in groups.items()),
            key=lambda c: (-c.segments, c.stem, c.verdict),
        )
    )
    lines = [c.text for c in stems]
    if judged:
        lines.append(f"balanced in {count['balanced']} of {judged} segments")
    else:
        lines.append("no segment could be judged (each was silent, lacked the anchor or had nothing to compare)")
    on_anchor = sum(c.segments for c in stems if c.stem == anchor_stem)
    if on_anchor:
        lines.append(
            f"note: {on_anchor} answer(s) name the anchor ({anchor_stem}), whose level is taken as right; "
            "the model was never trained to do that, so do not trust them"
        )
    if count["silent"]:
        lines.append(f"{count['silent']} silent segment(s) skipped")
    if count["anchor_inactive"]:
        lines.append(f"{count['anchor_inactive']} segment(s) skipped: the anchor stem is not playing there")
    if count["no_target"]:
        lines.append(f"{count['no_target']} segment(s) skipped: no other bass/drums/vocals stem is playing there")
    if count["unparsed"]:
        lines.append(f"{count['unparsed']} answer(s) could not be parsed (shown raw)")
    if count["stem_inactive"]:
        lines.append(f"{count['stem_inactive']} answer(s) named a stem that is silent in that segment; not used")
    return Summary(
        len(results), judged, count["balanced"], count["silent"], count["anchor_inactive"], count["no_target"],
        count["unparsed"],
        stems, tuple(lines), mean_confidence(results),
    )


@dataclass(frozen=True)
class PreparedSegment:
    """A window ready for the model, or a result that needs no model."""

    index: int
    start_s: float
    end_s: float
    audio: np.ndarray | None
    """``(segment_samples,)`` float32, loudness-normalised; None when skipped."""
    instruction: str | None
    mix_lufs: float | None
    padded_s: float
    skipped: str | None = None
    """``silent`` / ``anchor_inactive`` / ``no_target`` when the window is not sent to the model."""
    stems: dict[str, np.ndarray] | None = None
    """Stems mode: each stem's ``(segment_samples,)`` window at the gains in the mix (not normalised)."""
    stems_present: tuple[str, ...] = ()
    """Stems active in the window (the training gate), or the mixed file's declared stems."""
    not_judged: tuple[str, ...] = ()
    """Stems mode: the session's bass/drums/vocals stems silent in this window."""

    def as_segment(self, anchor_stem: str) -> Segment:
        """What the critic is given."""
        return Segment(self.audio, self.stems, anchor_stem, self.instruction, self.stems_present)


def _pad_to(audio: np.ndarray, num_samples: int) -> np.ndarray:
    if len(audio) >= num_samples:
        return audio
    return np.concatenate([audio, np.zeros(num_samples - len(audio), dtype=np.float32)])


class WindowLoudness:
    """BS.1770 loudness and stem activity of any window, computed the way ``synth`` does.

    The stems (or the mixed file) are K-weighted once over the whole song, so a window's first
    samples see the preceding audio, as in training; a window's per-100 ms-hop cross-energies
    then give the exact integrated loudness of its mix and the training gate's verdict on each
    stem (:func:`mixcritic.synthesis.gate_chunk`) without touching the audio again.
    """

    def __init__(self, session: Session) -> None:
        from mixcritic.stemloudness import kweighting_sos, sosfilt

        self.rate_hz = session.rate_hz
        self.names = STEMS if session.mode == "stems" else ("mix",)
        sos = kweighting_sos(self.rate_hz)
        self._last_gram: tuple[tuple[int, int], np.ndarray] | None = None
        self.weighted = np.zeros((len(self.names), session.num_samples), dtype=np.float32)
        for row, name in enumerate(self.names):  # one stem at a time keeps the float64 peak small
            if name in session.audio:
                self.weighted[row] = sosfilt(sos, session.audio[name])

    def gram(self, start: int, stop: int) -> np.ndarray:
        """``(hops, n, n)`` float64 K-weighted cross-energies of ``[start, stop)`` (partial last hop dropped).

        The last window's is kept: a window's loudness and its gate read the same one."""
        from mixcritic.stemloudness import hop_samples

        cached = self._last_gram
        if cached is not None and cached[0] == (start, stop):
            return cached[1]
        hop = hop_samples(self.rate_hz)
        hops = (stop - start) // hop
        blocks = self.weighted[:, start : start + hops * hop].astype(np.float64)
        blocks = blocks.reshape(len(self.names), hops, hop).transpose(1, 0, 2)
        gram = blocks @ blocks.transpose(0, 2, 1)
        gram.flags.writeable = False
        self._last_gram = ((start, stop), gram)
        return gram

    def mix_lufs(self, start: int, stop: int) -> float:
        """Integrated loudness of the window's mix (all stems at unity gain), LUFS; -inf if silent."""
        from mixcritic.stemloudness import hop_energy, integrated_loudness_lufs

        gram = self.gram(start, stop)
        return integrated_loudness_lufs(hop_energy(gram, np.ones(gram.shape[1])), self.rate_hz)

    def active_stems(self, start: int, stop: int, gate: "GateSettings") -> tuple[str, ...]:
        """Stems the training gate calls active in the window, in :data:`STEMS` order (stems mode only)."""
        from mixcritic.synthesis import SynthConfig, gate_chunk

        config = SynthConfig(
            gate_lufs=gate.gate_lufs, gate_relative_lu=gate.gate_relative_lu, min_active_fraction=gate.min_active_fraction
        )
        return gate_chunk(self.gram(start, stop), config, self.rate_hz).active


def skip_reason(session: Session, active: tuple[str, ...]) -> str | None:
    """Why a (loud enough) window of a stems session is not sent: its anchor is inactive, or no
    other bass/drums/vocals stem is active to judge against it. None when it is sent."""
    if session.anchor_stem not in active:
        return "anchor_inactive"
    if not any(stem in active for stem in TARGET_STEMS if stem != session.anchor_stem):
        return "no_target"
    return None


def prepare_segment(
    session: Session, loudness: WindowLoudness, index: int, start: int, config: CritiqueConfig
) -> PreparedSegment:
    """Mix, measure, gate and normalise one window; decide whether the model hears it."""
    from mixcritic.audio import db_to_amplitude

    rate_hz = config.sample_rate_hz
    stop = min(start + config.segment_samples, session.num_samples)
    start_s, end_s = start / rate_hz, stop / rate_hz
    padded_s = (config.segment_samples - (stop - start)) / rate_hz
    mix_lufs = loudness.mix_lufs(start, stop)
    shown_lufs = mix_lufs if math.isfinite(mix_lufs) else None
    if not mix_lufs >= config.gate.gate_lufs:
        return PreparedSegment(index, start_s, end_s, None, None, shown_lufs, padded_s, "silent")
    stems_present = session.stems_present
    not_judged: tuple[str, ...] = ()
    if session.mode == "stems":
        stems_present = loudness.active_stems(start, stop, config.gate)
        not_judged = tuple(stem for stem in TARGET_STEMS if stem in session.audio and stem not in stems_present)
        reason = skip_reason(session, stems_present)
        if reason is not None:
            return PreparedSegment(index, start_s, end_s, None, None, shown_lufs, padded_s, reason, not_judged=not_judged)
    from mixcritic.templates import render_instruction

    mix = session.mix(start, stop) * np.float32(db_to_amplitude(config.target_lufs - mix_lufs))
    instruction = render_instruction(config.template_id, config.segment_s, list(stems_present), session.anchor_stem)
    stems = None
    if session.mode == "stems":
        stems = {name: _pad_to(audio[start:stop], config.segment_samples) for name, audio in session.audio.items()}
    return PreparedSegment(
        index, start_s, end_s, _pad_to(mix, config.segment_samples), instruction, shown_lufs, padded_s,
        stems=stems, stems_present=tuple(stems_present), not_judged=not_judged,
    )


def _skipped_result(seg: PreparedSegment) -> SegmentResult:
    return SegmentResult(
        seg.index, seg.start_s, seg.end_s, seg.skipped, mix_lufs=seg.mix_lufs, padded_s=seg.padded_s, not_judged=seg.not_judged,
    )


def check_critic_fits_session(session: Session, critic: Critic) -> None:
    """A critic that reads the separate stems cannot judge a single mixed file: StemsRequiredError (exit 2)."""
    if critic.needs_stems and session.mode != "stems":
        where = session.path if session.path is not None else "the input"
        raise StemsRequiredError(
            f"{where}: the {critic.engine} critic needs the separate stems, not one mixed file; "
            "pass a folder of stems, or an LLM run with --model RUN"
        )


def result_from_judgement(seg: PreparedSegment, judgement: Judgement, mode: str = "stems") -> SegmentResult:
    """A judged window's result from the critic's answer. In stems mode an answer about a stem that
    is not playing in the window (silent there, or absent from the session) is not used: verdict
    ``stem_inactive``."""
    extra = dict(
        mix_lufs=seg.mix_lufs, padded_s=seg.padded_s, confidence=judgement.confidence,
        probabilities=dict(judgement.probabilities) or None, not_judged=seg.not_judged,
    )
    label = judgement.label
    if mode == "stems" and label is not None and label.stem is not None and label.stem not in seg.stems_present:
        return SegmentResult(seg.index, seg.start_s, seg.end_s, "stem_inactive", label.stem, text=judgement.text, **extra)
    return result_from_answer(seg.index, seg.start_s, seg.end_s, judgement.text, label, **extra)


def critique_session(
    session: Session, critic: Critic, config: CritiqueConfig, progress: Callable[[int], None] | None = None
) -> list[SegmentResult]:
    """Advice for every window of ``session``, in order. ``progress(n)`` is called after each batch
    with the number of windows finished in it."""
    check_critic_fits_session(session, critic)
    if session.rate_hz != config.sample_rate_hz:
        raise ModelError(
            f"session audio is at {session.rate_hz} Hz but the model expects {config.sample_rate_hz} Hz"
        )
    starts = segment_starts(session.num_samples, config.segment_samples)
    loudness = WindowLoudness(session)
    prepared = [prepare_segment(session, loudness, i, start, config) for i, start in enumerate(starts)]
    results: dict[int, SegmentResult] = {s.index: _skipped_result(s) for s in prepared if s.skipped}
    if progress is not None and results:
        progress(len(results))
    todo = [s for s in prepared if not s.skipped]
    for first in range(0, len(todo), config.batch_size):
        batch = todo[first : first + config.batch_size]
        judgements = critic.judge([s.as_segment(session.anchor_stem) for s in batch])
        if len(judgements) != len(batch):
            raise ModelError(f"the critic returned {len(judgements)} answers for {len(batch)} segments")
        for seg, judgement in zip(batch, judgements):
            results[seg.index] = result_from_judgement(seg, judgement, session.mode)
        if progress is not None:
            progress(len(batch))
    return [results[i] for i in range(len(prepared))]


# ---------------------------------------------------------------- model location


def default_model_dir() -> Path:
    """``<platformdirs user data dir for mixcritic>/model``."""
    import platformdirs

    return Path(platformdirs.user_data_dir("mixcritic")) / "model"


def resolve_model(model: str | Path | None, environ: dict | None = None) -> str | Path:
    """``--model``, else ``$MIXCRITIC_MODEL``, else a run in the user data dir, else the built-in critic.

    Returns :data:`~mixcritic.critics.BUILTIN` or an existing folder; ``builtin`` (either way)
    always means the built-in critic. ModelError when a named folder does not exist.
    """
    import os

    env = os.environ if environ is None else environ
    if model is not None:
        source = "--model"
    elif env.get(MODEL_ENV):
        model, source = env[MODEL_ENV], f"${MODEL_ENV}"
    else:
        fallback = default_model_dir()
        return fallback if fallback.is_dir() else BUILTIN
    if str(model) == BUILTIN:
        return BUILTIN
    model = Path(model).expanduser()
    if not model.is_dir():
        raise ModelError(
            f"{source} {model}: no such folder; point it at a run written by `mixcritic train`, or use `builtin`"
        )
    return model


def _check_source(value: str | None, option: str) -> str | None:
    """A local folder must exist; anything else is passed on as a hub id."""
    if value is None:
        return None
    path = Path(value).expanduser()
    looks_local = path.is_absolute() or value.startswith((".", "~")) or path.exists()
    if looks_local and not path.is_dir():
        raise ModelError(f"{option} {value}: no such folder; give the local snapshot folder of the base model")
    return str(path) if looks_local else value


def load_model(model: str | Path, device: str = "auto", encoder: str | None = None, llm: str | None = None) -> Critic:
    """Load the critic ``model`` names (``builtin`` or a run folder) through :func:`mixcritic.critics.load_critic`;
    ``encoder`` / ``llm`` replace an LLM run's base-model locations (e.g. local snapshot folders
    on an offline machine). Everything else comes from the run."""
    from mixcritic.critics import load_critic

    encoder, llm = _check_source(encoder, "--encoder"), _check_source(llm, "--llm")
    return load_critic(model, device=device, encoder_source=encoder, llm_source=llm)


def critic_device(critic: Critic, fallback: str | None = None) -> str | None:
    """The device the critic runs on, as text (``cpu``, ``cuda:0``, ...); ``fallback`` when it does not say."""
    device = getattr(getattr(critic, "model", None), "device", None) or getattr(critic, "device", None)
    return str(device) if device is not None else fallback


# ---------------------------------------------------------------- the whole job and its JSON


@dataclass
class CritiqueReport:
    """Everything ``mixcritic critique`` reports: inputs, settings, windows, summary."""

    session: Session
    settings: dict
    segments: list[SegmentResult]
    summary: Summary = field(init=False)

    def __post_init__(self) -> None:
        self.summary = summarise(self.segments, self.session.anchor_stem)

    def to_json(self) -> dict:
        """The document ``--json`` prints; validated by ``schemas/critique.schema.json``."""
        return {
            "schema_version": SCHEMA_VERSION,
            "mixcritic_version": __version__,
            "input": session_json(self.session),
            "settings": self.settings,
            "segments": [segment_json(r) for r in self.segments],
            "summary": summary_json(self.summary, self.segments),
        }


def json_schema() -> dict:
    """The JSON Schema of the ``--json`` document, shipped as package data."""
    import json
    from importlib.resources import files

    return json.loads(files("mixcritic").joinpath("schemas/critique.schema.json").read_text(encoding="utf-8"))


def session_json(session: Session) -> dict:
    """The ``input`` object of the JSON document."""
    return {
        "mode": session.mode,
        "path": str(session.path) if session.path is not None else None,
        "duration_s": round(session.duration_s, 6),
        "anchor_stem": session.anchor_stem,
        "stems_present": list(session.stems_present),
        "files": [
            {
                "path": str(f.path), "stem": f.stem, "how": f.how, "duration_s": round(f.duration_s, 6),
                "rate_hz": f.rate_hz, "channels": f.channels, "padded_s": f.padded_s,
            }
            for f in session.files
        ],
        "ignored": [{"path": str(f.path), "reason": f.reason} for f in session.ignored],
    }


def segment_json(result: SegmentResult) -> dict:
    """One entry of ``segments``."""
    data = asdict(result)
    data["start_s"] = round(result.start_s, 6)
    data["end_s"] = round(result.end_s, 6)
    data["correction_db"] = list(result.correction_db) if result.correction_db else None
    data["mix_lufs"] = round(result.mix_lufs, 3) if result.mix_lufs is not None else None
    data["padded_s"] = round(result.padded_s, 6)
    data["confidence"] = _round(result.confidence)
    data["probabilities"] = {k: _round(v) for k, v in result.probabilities.items()} if result.probabilities else None
    data["not_judged"] = list(result.not_judged)
    return data


def _round(value: float | None, digits: int = 6) -> float | None:
    return None if value is None else round(float(value), digits)


def summary_json(summary: Summary, results: list[SegmentResult]) -> dict:
    """The ``summary`` object: counts, per-stem consensus, raw unparsed answers."""
    return {
        "segments": summary.segments,
        "judged": summary.judged,
        "balanced": summary.balanced,
        "silent": summary.silent,
        "anchor_inactive": summary.anchor_inactive,
        "no_target": summary.no_target,
        "unparsed": summary.unparsed,
        "stems": [
            {**asdict(c), "correction_db": list(c.correction_db), "confidence": _round(c.confidence)} for c in summary.stems
        ],
        "confidence": _round(summary.confidence),
        "lines": list(summary.lines),
        "unparsed_answers": [
            {"index": r.index, "start_s": round(r.start_s, 6), "end_s": round(r.end_s, 6), "text": r.text}
            for r in results
            if r.verdict == "unparsed"
        ],
    }


def run_critique(
    session: Session,
    critic: Critic,
    config: CritiqueConfig,
    model: str | Path | None = None,
    device: str | None = None,
    progress: Callable[[int], None] | None = None,
) -> CritiqueReport:
    """Critique a session with a loaded critic: resample to the critic's rate, judge every window.

    ``model``: what ``--model`` resolved to (``builtin`` or the run folder), for the report."""
    from mixcritic.session import resample_session

    check_critic_fits_session(session, critic)
    session = resample_session(session, config.sample_rate_hz)
    results = critique_session(session, critic, config, progress)
    return CritiqueReport(session, report_settings(config, model, critic, device), results)


def num_segments(session: Session, config: CritiqueConfig) -> int:
    """How many windows :func:`critique_session` will produce (for progress bars)."""
    num_samples = int(round(session.duration_s * config.sample_rate_hz))
    return len(segment_starts(num_samples, config.segment_samples))


def check_template_version(settings: dict) -> str | None:
    """A warning when the checkpoint's templates differ from this install's (the parser may not match)."""
    from mixcritic.templates import TEMPLATE_VERSION

    trained = settings.get("template_version")
    if trained is not None and str(trained) != str(TEMPLATE_VERSION):
        return (
            f"the model was trained with templates version {trained}, this install has {TEMPLATE_VERSION}; "
            "its answers may not parse — install the mixcritic version that trained it"
        )
    return None


def report_settings(config: CritiqueConfig, model: str | Path | None, critic: Critic, device: str | None) -> dict:
    """The ``settings`` object of the JSON document: which critic spoke, and how the windows were made."""
    from mixcritic.templates import TEMPLATE_VERSION

    settings = critic.settings
    return {
        "engine": critic.engine,
        "model": str(model) if model is not None else None,
        "critic": critic_line(model, critic),
        "wiring_only": bool(settings.get("wiring_only", False)),
        "device": device,
        "segment_s": config.segment_s,
        "sample_rate_hz": config.sample_rate_hz,
        "target_lufs": config.target_lufs,
        "batch_size": config.batch_size,
        "template_id": config.template_id,
        "template_version": str(settings.get("template_version", TEMPLATE_VERSION)),
        "trained_segment_s": settings.get("segment_s"),
        "gate": asdict(config.gate),
    }


__all__ = [
    "CritiqueConfig", "CritiqueReport", "GateSettings", "INSTRUCTION_TEMPLATE_ID", "MODEL_ENV",
    "SCHEMA_VERSION", "SegmentResult", "StemConsensus", "StemsRequiredError", "Summary", "VERDICTS", "WindowLoudness",
    "check_critic_fits_session", "check_template_version", "correction_words", "critic_device", "critique_session",
    "default_model_dir", "json_schema", "load_model", "mean_confidence", "num_segments", "prepare_segment",
    "report_settings", "resolve_model", "run_critique", "segment_starts", "skip_reason", "summarise", "verdict_of",
]
