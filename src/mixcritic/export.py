"""``mixcritic critique --export DIR``: hear and see what the critic judged.

For every judged segment (one the critic was asked about) two WAV files, named by segment and
verdict, so the advice can be A/B-ed:

* ``segNN_<verdict>_mix.wav``: the segment's mix as the stems sum (the critic's sample rate, mono,
  32-bit float, *not* loudness-normalised, so both files keep their real level difference);
* ``segNN_<verdict>_fixed.wav``: the same segment with the suggested correction applied: the
  advised range's midpoint, in dB, on the named stem (``reduce 6-12 dB`` -> -9 dB). A balanced
  or unparsed segment has no correction: its ``fixed`` file equals its ``mix`` file.

A mixed-file session has no separate stems, so only the ``mix`` files are written.
``export.json`` lists every file with its segment, stem and the gain applied. With matplotlib
(the ``[plot]`` extra) ``levels.png`` shows each stem's level relative to the anchor across the
song (1 s windows every 0.5 s), the typical range a critic expects shaded when it provides one,
and the flagged segments marked. The level is the measured critic's own feature (K-weighted mean
power of 2048-sample Hann frames, 20 Hz-12 kHz, no gating, dB), so the plotted curve and the
measured critic's ``typical_range_db`` are on the same scale; ``export.json`` records the ranges.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mixcritic.errors import MixcriticError

LEVEL_WINDOW_S = 1.0
"""Length of the windows the level plot measures, seconds."""

LEVEL_STEP_S = 0.5
"""Step between level windows, seconds."""

MANIFEST_FILE = "export.json"
"""The list of exported files."""

PLOT_FILE = "levels.png"
"""The level plot (with matplotlib)."""

SILENT_LEVEL_DB = -70.0
"""A window whose K-weighted level is below this (dB re full scale) counts as silent (NaN)."""

JUDGED_VERDICTS = ("too_loud", "too_quiet", "balanced", "unparsed", "stem_inactive")
"""Verdicts of segments the critic was asked about (the others were skipped before it)."""


class ExportError(MixcriticError):
    """An ``--export`` folder that cannot be written."""


@dataclass
class ExportResult:
    """What :func:`export_report` wrote."""

    folder: Path
    """The export folder."""
    files: list[dict] = field(default_factory=list)
    """One entry per segment: index, start_s, end_s, verdict, stem, gain_db, mix, fixed (file names)."""
    plot: Path | None = None
    """``levels.png``, or None without matplotlib."""
    notes: list[str] = field(default_factory=list)
    """Why something was not written (e.g. no stems in mixed-file mode, no matplotlib)."""


def check_export_dir(folder: Path) -> Path:
    """ExportError when ``--export`` names a file; call it before any work is done."""
    folder = Path(folder).expanduser()
    if folder.exists() and not folder.is_dir():
        raise ExportError(f"--export {folder}: is a file, not a folder; give a folder for the WAV and PNG files")
    return folder


def correction_midpoint_db(correction_db) -> float:
    """The advised gain change: the midpoint of a signed range, ``(-12, -6)`` -> ``-9.0``; 0 for None."""
    if not correction_db:
        return 0.0
    low, high = correction_db
    return (float(low) + float(high)) / 2.0


def apply_correction(stems: dict[str, np.ndarray], stem: str | None, gain_db: float) -> np.ndarray:
    """The mix of ``stems`` (each ``(samples,)`` float32) with ``gain_db`` on ``stem``, ``(samples,)`` float32."""
    from mixcritic.audio import db_to_amplitude

    out = np.zeros(len(next(iter(stems.values()))), dtype=np.float64)
    for name, audio in stems.items():
        factor = db_to_amplitude(gain_db) if name == stem else 1.0
        out += factor * audio.astype(np.float64)
    return out.astype(np.float32)


def segment_name(index: int, verdict: str, stem: str | None, category: str | None) -> str:
    """``seg03_bass-much-too-loud`` / ``seg01_balanced``: 1-based segment number and verdict words."""
    words = {"loud": "too-loud", "very_loud": "much-too-loud", "quiet": "too-quiet", "very_quiet": "much-too-quiet"}
    if verdict in ("too_loud", "too_quiet") and stem and category in words:
        label = f"{stem}-{words[category]}"
    else:
        label = verdict.replace("_", "-")
    return f"seg{index + 1:02d}_{re.sub(r'[^a-z0-9-]+', '-', label.lower())}"


def _write_wav(path: Path, audio: np.ndarray, rate_hz: int) -> None:
    import soundfile as sf

    from mixcritic.files import atomic_path

    with atomic_path(path) as tmp:
        sf.write(str(tmp), audio, rate_hz, subtype="FLOAT", format="WAV")


def export_report(report, folder: Path, typical_db: dict[str, tuple[float, float]] | None = None) -> ExportResult:
    """Write the per-segment WAVs, ``export.json`` and (with matplotlib) ``levels.png`` for a
    :class:`mixcritic.critique.CritiqueReport`. ``typical_db``: per stem, the range of level
    relative to the anchor (dB) a critic expects, shaded in the plot; None omits the shading."""
    from mixcritic.files import write_json_atomic

    folder = check_export_dir(folder)
    folder.mkdir(parents=True, exist_ok=True)
    session = report.session
    rate_hz = session.rate_hz
    result = ExportResult(folder)
    stems_mode = session.mode == "stems"
    if not stems_mode:
        result.notes.append("a mixed file has no separate stems, so no corrected version can be made; only the mix is written")
    for segment in report.segments:
        if segment.verdict not in JUDGED_VERDICTS:
            continue
        start, stop = int(round(segment.start_s * rate_hz)), int(round(segment.end_s * rate_hz))
        parts = {stem: audio[start:stop] for stem, audio in session.audio.items()}
        name = segment_name(segment.index, segment.verdict, segment.stem, segment.category)
        gain_db = correction_midpoint_db(segment.correction_db) if segment.stem in parts else 0.0
        entry = {
            "index": segment.index, "start_s": round(segment.start_s, 6), "end_s": round(segment.end_s, 6),
            "verdict": segment.verdict, "stem": segment.stem, "category": segment.category,
            "gain_db": gain_db, "mix": f"{name}_mix.wav", "fixed": None,
        }
        _write_wav(folder / entry["mix"], apply_correction(parts, None, 0.0), rate_hz)
        if stems_mode:
            entry["fixed"] = f"{name}_fixed.wav"
            _write_wav(folder / entry["fixed"], apply_correction(parts, segment.stem, gain_db), rate_hz)
        result.files.append(entry)
    try:
        result.plot = plot_levels(report, folder / PLOT_FILE, typical_db) if stems_mode else None
    except ImportError:
        result.notes.append("matplotlib is not installed, so no levels.png (pip install 'mixcritic[plot]')")
    write_json_atomic(folder / MANIFEST_FILE, {
        "rate_hz": rate_hz, "anchor_stem": session.anchor_stem, "segments": result.files,
        "plot": result.plot.name if result.plot else None, "notes": result.notes,
        "level_measure": LEVEL_MEASURE,
        "typical_range_db": {stem: [round(float(lo), 4), round(float(hi), 4)] for stem, (lo, hi) in typical_db.items()}
        if typical_db else None,
    })
    return result


BROADBAND_HZ = (20.0, 12000.0)
"""The band the level plot measures (the measured critic's broadband layout)."""


LEVEL_MEASURE = "K-weighted mean power, 20 Hz-12 kHz, dB relative to the anchor (the measured critic's feature)"
"""What ``levels.png`` plots, as recorded in ``export.json``."""


def stem_levels_db(session, window_s: float = LEVEL_WINDOW_S, step_s: float = LEVEL_STEP_S) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Each stem's level relative to the anchor's, per window: ``(times_s, {stem: dB})``.

    The level is the measured critic's broadband feature (:func:`mixcritic.critics.measured.features.band_levels_db`
    over 20 Hz-12 kHz: K-weighted mean power, no gating), so a gain of g dB on a stem moves its
    curve by exactly g dB and the measured critic's typical ranges apply. ``times_s`` are window
    centres; a window where the stem or the anchor is below ``SILENT_LEVEL_DB`` is NaN. The anchor
    itself is not in the dict (it is 0 dB by definition)."""
    from mixcritic.critics.measured.features import band_levels_db

    rate_hz = session.rate_hz
    window, step = max(1, int(round(window_s * rate_hz))), max(1, int(round(step_s * rate_hz)))
    total = min(len(audio) for audio in session.audio.values())
    starts = list(range(0, max(total - window, 0) + 1, step))
    times_s = np.array([(start + min(window, total) / 2) / rate_hz for start in starts])

    def level(stem: str) -> np.ndarray:
        out = []
        for start in starts:
            measured = band_levels_db(session.audio[stem][start : start + window], rate_hz, BROADBAND_HZ, 40.0)
            out.append(float(measured[0]) if measured is not None and measured[0] >= SILENT_LEVEL_DB else math.nan)
        return np.array(out)

    anchor = level(session.anchor_stem)
    return times_s, {stem: level(stem) - anchor for stem in session.audio if stem != session.anchor_stem}


_COLOURS = {"bass": "tab:blue", "drums": "tab:orange", "vocals": "tab:green", "other": "tab:gray"}


def plot_levels(report, path: Path, typical_db: dict[str, tuple[float, float]] | None = None) -> Path:
    """``levels.png``: each stem's level relative to the anchor across the song, the typical ranges
    shaded (when given), flagged segments marked. Raises ImportError without matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mixcritic.files import atomic_path

    session = report.session
    times_s, levels = stem_levels_db(session)
    fig, ax = plt.subplots(figsize=(10, 4.5), dpi=100)
    for stem, values in levels.items():
        colour = _COLOURS.get(stem, "tab:purple")
        if typical_db and stem in typical_db:
            low, high = typical_db[stem]
            ax.axhspan(low, high, color=colour, alpha=0.08, lw=0, label=f"{stem}: typical range")
            for edge_db in (low, high):  # edges in the stem's colour: overlapping ranges stay readable
                ax.axhline(edge_db, color=colour, lw=0.9, ls=":", alpha=0.8)
        ax.plot(times_s, values, color=colour, lw=1.6, label=stem)
    ax.axhline(0.0, color="black", lw=0.8, ls="--", label=f"{session.anchor_stem} (anchor)")
    flagged = [s for s in report.segments if s.verdict in ("too_loud", "too_quiet")]
    for row, segment in enumerate(flagged):
        colour = _COLOURS.get(segment.stem or "", "tab:red")
        middle_s = (segment.start_s + segment.end_s) / 2
        ax.axvspan(segment.start_s, segment.end_s, color="tab:red", alpha=0.07, lw=0)
        words = segment_name(segment.index, segment.verdict, segment.stem, segment.category).partition("_")[2]
        ax.annotate(f"{segment.index + 1}: {words.replace('-', ' ')}", xy=(middle_s, 0.98 - 0.06 * (row % 2)),
                    xycoords=("data", "axes fraction"), ha="center", va="top", fontsize=8, color=colour)
        inside = (times_s >= segment.start_s) & (times_s <= segment.end_s)
        values = levels.get(segment.stem, np.array([]))[inside] if segment.stem in levels else np.array([])
        level_db = float(np.nanmedian(values)) if values.size and np.isfinite(values).any() else 0.0
        ax.plot([middle_s], [level_db], marker="v" if segment.verdict == "too_loud" else "^", color=colour, ms=8)
    ax.set_xlim(0, session.duration_s)
    ax.set_xlabel("time (s)")
    ax.set_ylabel(f"level relative to {session.anchor_stem} (dB, K-weighted)")
    title = session.path.name if session.path is not None else "session"
    shaded = "; typical range shaded" if typical_db else ""
    ax.set_title(f"{title}: stem levels ({LEVEL_WINDOW_S:g} s windows){shaded}; flagged segments shaded", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, ncol=2)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


__all__ = [
    "ExportError", "ExportResult", "apply_correction", "check_export_dir", "correction_midpoint_db",
    "export_report", "plot_levels", "segment_name", "stem_levels_db",
]
