"""A user's session as the critic hears it: stems found by file name, read, summed, padded.

Two kinds of input:

* a **folder of stems** (bounced tracks). Each audio file in the folder (not sub-folders) is
  assigned to a canonical stem by its file name (:func:`stem_for_name`); files that match no
  stem are summed into ``other``; full mixes, clicks and guide tracks are ignored; non-audio
  files are ignored. ``--stem NAME=PATH`` overrides the guess.
* a **single mixed file**: the model hears the mix as it is; the stems it is told are present
  default to all four.

Everything is read with libsndfile (any rate, channel count, bit depth), downmixed to mono and
resampled to the model's rate. Stems of unequal length are padded with silence at the end and
the padding is reported. A file that is digitally silent (every sample zero) is never judged: it is
listed among the ignored files with the reason. A file much shorter than the others (under
:data:`MIN_DURATION_S`, or under :data:`MIN_LENGTH_RATIO` of the longest) is a broken export and is
refused unless the caller accepts padding it (``--pad``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from mixcritic.errors import MixcriticError
from mixcritic.labels import MODEL_SAMPLE_RATE_HZ, STEMS, TARGET_STEMS

AUDIO_SUFFIXES: frozenset[str] = frozenset(
    {".wav", ".wave", ".bwf", ".rf64", ".w64", ".flac", ".aif", ".aiff", ".aifc", ".ogg", ".oga", ".opus", ".mp3", ".caf"}
)
"""File extensions treated as audio (all read by libsndfile); compared case-insensitively."""

MIN_DURATION_S = 1.0
"""Shortest song the critic accepts, in seconds."""

MIN_LENGTH_RATIO = 0.5
"""A stem shorter than this share of the longest one is taken for a truncated export (see ``--pad``)."""

SILENT_REASON = "digitally silent (every sample is zero): not judged and not listed as present"
"""Why a silent file is ignored (shown per file)."""

PAD_REPORT_S = 0.001
"""Length differences below this (resampling rounding) are padded silently."""

STEM_ALIASES: dict[str, tuple[str, ...]] = {
    "vocals": (
        "vocals", "vocal", "vox", "voc", "vocs", "voice", "voices", "vocalist", "singer", "singing",
        "leadvocal", "leadvocals", "leadvox", "lead vocal", "lead vocals", "lead vox", "lead voice",
        "lv", "bv", "bvs", "bgv", "bgvs", "backing vocal", "backing vocals", "backing vox",
        "backingvocals", "harmony", "harmonies", "choir", "adlib", "adlibs", "ad lib", "ad libs",
    ),
    "drums": (
        "drums", "drum", "drm", "drms", "kit", "drumkit", "kick", "kicks", "kik", "snare", "snares",
        "snr", "hat", "hats", "hihat", "hihats", "hi hat", "hi hats", "hh", "tom", "toms", "overhead",
        "overheads", "oh", "ohs", "cymbal", "cymbals", "ride", "crash", "perc", "percussion", "clap",
        "claps", "shaker", "tamb", "tambourine", "breakbeat", "bass drum", "kick drum", "sub kick",
        "kick sub", "bd", "sd",
    ),
    "bass": (
        "bass", "basses", "bassline", "bass guitar", "bassgtr", "bassguitar", "sub", "subs",
        "subbass", "sub bass", "synth bass", "bass synth", "synthbass", "basssynth", "contrabass",
        "double bass", "upright bass",
    ),
    "other": ("other", "others", "rest", "remainder"),
}
"""Name aliases per canonical stem, as lower-case token sequences (see :func:`name_tokens`)."""

IGNORED_NAMES: dict[str, tuple[str, ...]] = {
    "a full mix, not a stem": (
        "mix", "mixture", "mixdown", "master", "mastered", "premaster", "full mix", "stereo mix", "2mix",
    ),
    "a click/guide/reference track, not part of the mix": (
        "click", "metronome", "guide", "reference", "ref", "cue", "talkback", "timecode", "ltc",
    ),
}
"""Names of audio files that are not stems; used only when no stem alias matches."""


class InputError(MixcriticError):
    """Session input that cannot be critiqued (no audio, missing anchor, bad option)."""


def name_tokens(name: str) -> tuple[str, ...]:
    """Lower-case word tokens of a file name: camelCase, digits and punctuation split.

    ``"01_LeadVox-v2"`` -> ``("01", "lead", "vox", "v", "2")``.
    """
    spaced = re.sub(r"([a-z])([A-Z])", r"\1 \2", name)
    return tuple(re.findall(r"[a-z]+|[0-9]+", spaced.lower()))


def _alias_matches(tokens: tuple[str, ...], table: dict[str, tuple[str, ...]]) -> list[tuple[int, str]]:
    """``(alias length in tokens, key)`` for every alias of ``table`` found as a contiguous run in ``tokens``."""
    found = []
    for key, aliases in table.items():
        for alias in aliases:
            words = tuple(alias.split())
            n = len(words)
            if any(tokens[i : i + n] == words for i in range(len(tokens) - n + 1)):
                found.append((n, key))
    return found


def stem_for_name(name: str) -> tuple[str | None, str]:
    """Which canonical stem a file name (without extension) belongs to.

    Returns ``(stem, why)``: ``stem`` is one of :data:`STEMS`, or None when no alias matches
    (``why`` is then ``"unmatched"``, ``"ambiguous: ..."`` or the reason it is ignored, e.g. a
    full mix). Rules: the name is split into tokens (:func:`name_tokens`); every alias found as
    a whole-token run counts; the longest matching alias wins ("bass drum" -> drums beats
    "bass"); if the longest matches point at different stems the name is ambiguous.
    Ignored names (mix, click, ...) count only when no stem alias matches ("drum mix" -> drums).
    """
    tokens = name_tokens(name)
    matches = _alias_matches(tokens, STEM_ALIASES)
    if matches:
        longest = max(n for n, _ in matches)
        stems = sorted({stem for n, stem in matches if n == longest})
        if len(stems) == 1:
            return stems[0], "name"
        return None, f"ambiguous: matches {' and '.join(stems)}"
    ignored = _alias_matches(tokens, IGNORED_NAMES)
    if ignored:
        return None, max(ignored)[1]
    return None, "unmatched"


def canonical_stem(name: str, option: str, allowed: tuple[str, ...] = STEMS) -> str:
    """Resolve a stem name typed by the user (canonical or alias, any case) or raise InputError."""
    stem, _ = stem_for_name(name.strip())
    if name.strip().lower() in allowed:
        return name.strip().lower()
    if stem in allowed:
        return stem
    raise InputError(f"{option}: unknown stem {name!r}; use one of {', '.join(allowed)}")


def parse_anchor(anchor: str | None) -> str:
    """The anchor stem from ``--anchor`` (alias allowed), or InputError when missing/unknown."""
    if anchor is None or not anchor.strip():
        raise InputError(
            f"--anchor is required: name the stem whose level is right, one of {', '.join(TARGET_STEMS)}"
        )
    if anchor.strip().lower() in STEM_ALIASES["other"]:
        raise InputError(
            f"--anchor {anchor}: 'other' cannot be the anchor: it is everything that is not bass, drums or vocals, "
            f"so it has no typical level to be right about (the critic never judges it); use one of {', '.join(TARGET_STEMS)}"
        )
    return canonical_stem(anchor, "--anchor", TARGET_STEMS)


def parse_stem_overrides(values: list[str] | None, base_dir: Path | None) -> dict[Path, str]:
    """``--stem NAME=PATH`` options -> ``{path: stem}``. Relative paths are tried as given, then in ``base_dir``."""
    overrides: dict[Path, str] = {}
    for value in values or []:
        name, sep, raw_path = value.partition("=")
        if not sep or not name.strip() or not raw_path.strip():
            raise InputError(f"--stem {value!r}: expected NAME=PATH, e.g. --stem vocals=Lead.wav")
        stem = canonical_stem(name, "--stem")
        path = Path(raw_path.strip()).expanduser()
        if not path.exists() and base_dir is not None and (base_dir / path).exists():
            path = base_dir / path
        if not path.is_file():
            raise InputError(f"--stem {value!r}: file {path} not found")
        overrides[path.resolve()] = stem
    return overrides


def parse_stems_present(value: str | None, anchor: str) -> tuple[str, ...]:
    """``--stems-present bass,drums,vocals`` (aliases allowed) -> canonical stems in :data:`STEMS` order."""
    if value is None:
        return STEMS
    names = [part for part in re.split(r"[,\s]+", value) if part]
    if not names:
        raise InputError("--stems-present: give a comma-separated list, e.g. bass,drums,vocals")
    stems = {canonical_stem(name, "--stems-present") for name in names}
    if anchor not in stems:
        raise InputError(f"--stems-present {value!r} does not include the anchor stem {anchor!r}; add it")
    return tuple(stem for stem in STEMS if stem in stems)


@dataclass(frozen=True)
class SessionFile:
    """One audio file of the session and what it was used as."""

    path: Path
    """The file as found on disk."""
    stem: str
    """The canonical stem it was summed into, or ``"mix"`` in single-file mode."""
    how: str
    """Why: ``"name"`` (alias match), ``"unmatched"`` / ``"ambiguous: ..."`` (summed into other),
    ``"override"`` (``--stem``) or ``"mix"``."""
    duration_s: float = 0.0
    """Length of the file itself, seconds."""
    rate_hz: int = 0
    """The file's own sample rate."""
    channels: int = 0
    """The file's own channel count."""
    padded_s: float = 0.0
    """Silence appended so it matches the longest file, seconds."""


@dataclass(frozen=True)
class IgnoredFile:
    """A file in the folder that was not used, and why."""

    path: Path
    reason: str


@dataclass
class Session:
    """A session ready to critique: mono stems at ``rate_hz``, all of the same length."""

    mode: str
    """``"stems"`` (a folder or ``--stem`` files) or ``"mix"`` (one mixed file)."""
    path: Path | None
    """The folder or file given on the command line (None when only ``--stem`` was used)."""
    anchor_stem: str
    """The stem whose level is taken as right."""
    stems_present: tuple[str, ...]
    """Stems the model is told are in the mix, in :data:`STEMS` order."""
    audio: dict[str, np.ndarray]
    """``{stem: (samples,) float32}`` mono at ``rate_hz``; in mix mode ``{"mix": ...}``."""
    rate_hz: int
    """Sample rate of ``audio``."""
    files: list[SessionFile] = field(default_factory=list)
    """Every audio file that was used."""
    ignored: list[IgnoredFile] = field(default_factory=list)
    """Files that were not used, with the reason."""

    @property
    def duration_s(self) -> float:
        """Length of the (padded) session in seconds."""
        return self.num_samples / self.rate_hz

    @property
    def num_samples(self) -> int:
        """Length of the (padded) session in samples."""
        return len(next(iter(self.audio.values())))

    def mix(self, start: int, stop: int) -> np.ndarray:
        """The summed mix of samples ``[start, stop)``, ``(samples,)`` float32, not normalised."""
        out = np.zeros(stop - start, dtype=np.float32)
        for audio in self.audio.values():
            out += audio[start:stop]
        return out


def classify_folder(folder: Path) -> tuple[list[tuple[Path, str, str]], list[IgnoredFile]]:
    """Sort a folder's entries: ``([(path, stem, how)], ignored)``. Sub-folders are not searched."""
    used: list[tuple[Path, str, str]] = []
    ignored: list[IgnoredFile] = []
    for path in sorted(folder.iterdir(), key=lambda p: p.name.lower()):
        if path.is_dir():
            ignored.append(IgnoredFile(path, "a folder (not searched; pass files in it with --stem)"))
        elif path.name.startswith("."):
            ignored.append(IgnoredFile(path, "a hidden file"))
        elif path.suffix.lower() not in AUDIO_SUFFIXES:
            ignored.append(IgnoredFile(path, "not an audio file"))
        else:
            stem, why = stem_for_name(path.stem)
            if stem is not None:
                used.append((path, stem, why))
            elif why == "unmatched" or why.startswith("ambiguous"):
                used.append((path, "other", why))
            else:
                ignored.append(IgnoredFile(path, why))
    return used, ignored


def _apply_overrides(
    used: list[tuple[Path, str, str]], overrides: dict[Path, str]
) -> list[tuple[Path, str, str]]:
    """Replace guessed assignments: an overridden stem keeps only its ``--stem`` files."""
    overridden_stems = set(overrides.values())
    kept = [
        (path, stem, how)
        for path, stem, how in used
        if path.resolve() not in overrides and stem not in overridden_stems
    ]
    return kept + [(path, stem, "override") for path, stem in overrides.items()]


def _read_mono(path: Path, rate_hz: int) -> tuple[np.ndarray, SessionFile]:
    """Read one file as mono float32 at ``rate_hz`` and describe it."""
    from mixcritic.audio import read_audio, resample, to_mono

    audio, file_rate_hz = read_audio(path)
    info = SessionFile(path, "", "", audio.shape[0] / file_rate_hz, file_rate_hz, audio.shape[1])
    return resample(to_mono(audio), file_rate_hz, rate_hz), info


def _sum_padded(arrays: list[np.ndarray], num_samples: int) -> np.ndarray:
    """Sum mono arrays into one of ``num_samples``, each padded with silence at the end."""
    out = np.zeros(num_samples, dtype=np.float32)
    for audio in arrays:
        out[: len(audio)] += audio
    return out


def load_stems(
    assignments: list[tuple[Path, str, str]],
    rate_hz: int,
    progress: Callable[[Path], None] | None = None,
    pad: bool = False,
) -> tuple[dict[str, np.ndarray], list[SessionFile], list[IgnoredFile]]:
    """Read every assigned file, set aside digitally silent ones, check lengths, sum per stem and
    pad to the longest. Returns ``(audio, files, silent)``; ``progress(path)`` is called after each
    file. InputError names a file much shorter than the others unless ``pad`` is true."""
    per_stem: dict[str, list[np.ndarray]] = {}
    files: list[SessionFile] = []
    silent: list[IgnoredFile] = []
    for path, stem, how in assignments:
        audio, info = _read_mono(path, rate_hz)
        if progress is not None:
            progress(path)
        if not np.any(audio):
            silent.append(IgnoredFile(path, SILENT_REASON))
            continue
        per_stem.setdefault(stem, []).append(audio)
        files.append(SessionFile(path, stem, how, info.duration_s, info.rate_hz, info.channels))
    if not files:
        return {}, [], silent
    longest_s = max(f.duration_s for f in files)
    if not pad:
        check_lengths(files, longest_s)
    num_samples = max(len(a) for arrays in per_stem.values() for a in arrays)
    files = [_with_padding(f, longest_s) for f in files]
    ordered = {stem: _sum_padded(per_stem[stem], num_samples) for stem in STEMS if stem in per_stem}
    return ordered, files, silent


def check_lengths(files: list[SessionFile], longest_s: float) -> None:
    """InputError naming the first file under :data:`MIN_DURATION_S` or under
    :data:`MIN_LENGTH_RATIO` of ``longest_s`` (a truncated export)."""
    for f in files:
        if f.duration_s < MIN_DURATION_S or f.duration_s < MIN_LENGTH_RATIO * longest_s:
            raise InputError(
                f"{f.path}: {f.duration_s:.3f} s long beside a {longest_s:.2f} s stem, which looks like a truncated "
                "or broken export; export it again at full length, or pass --pad to pad it with silence"
            )


def _with_padding(info: SessionFile, longest_s: float) -> SessionFile:
    padded_s = longest_s - info.duration_s
    return SessionFile(
        info.path, info.stem, info.how, info.duration_s, info.rate_hz, info.channels,
        round(padded_s, 6) if padded_s >= PAD_REPORT_S else 0.0,
    )


def check_duration(duration_s: float, where: Path | str) -> None:
    """InputError when a session is shorter than :data:`MIN_DURATION_S`."""
    if duration_s < MIN_DURATION_S:
        raise InputError(
            f"{where}: {duration_s:.2f} s of audio is too short to critique (needs at least {MIN_DURATION_S:g} s)"
        )


def _describe(assignments: list[tuple[Path, str, str]]) -> str:
    found = [f"{stem} <- {path.name}" for path, stem, _ in assignments]
    return f" (found: {', '.join(found)})" if found else ""


def open_stem_folder(
    folder: Path | None,
    anchor_stem: str,
    overrides: dict[Path, str] | None = None,
    rate_hz: int = MODEL_SAMPLE_RATE_HZ,
    progress: Callable[[Path], None] | None = None,
    pad: bool = False,
) -> Session:
    """Discover, read and sum the stems of a folder (and/or ``--stem`` overrides).

    Digitally silent files are moved to ``ignored`` (a stem whose files are all silent is not
    present). Raises InputError when no audio is found, the anchor stem is absent or silent, a
    file is much shorter than the others (unless ``pad``; see :func:`check_lengths`), or the
    session is under :data:`MIN_DURATION_S`; AudioError naming a file that cannot be read or
    holds NaN/Inf samples.
    """
    overrides = overrides or {}
    used, ignored = classify_folder(folder) if folder is not None else ([], [])
    ignored = [f for f in ignored if f.path.resolve() not in overrides]
    assignments = _apply_overrides(used, overrides)
    where = folder if folder is not None else "--stem"
    if not assignments:
        mixes = [f.path.name for f in ignored if f.reason.startswith("a full mix")]
        hint = f"; to critique the full mix run: mixcritic critique {folder / mixes[0]} --anchor ..." if mixes else ""
        raise InputError(f"{where}: no stem audio found ({', '.join(sorted(AUDIO_SUFFIXES))}){hint}")
    if anchor_stem not in {stem for _, stem, _ in assignments}:
        raise InputError(
            f"{where}: anchor stem {anchor_stem!r} not found: no file name matches it{_describe(assignments)}; "
            f"rename its file or pass --stem {anchor_stem}=PATH"
        )
    audio, files, silent = load_stems(assignments, rate_hz, progress, pad)
    if anchor_stem not in audio:
        names = ", ".join(path.name for path, stem, _ in assignments if stem == anchor_stem)
        raise InputError(f"{where}: anchor stem {anchor_stem!r} ({names}) is silent; choose another --anchor")
    session = Session("stems", folder, anchor_stem, tuple(audio), audio, rate_hz, files, ignored + silent)
    check_duration(session.duration_s, where)
    return session


def open_mix_file(
    path: Path, anchor_stem: str, stems_present: tuple[str, ...] = STEMS, rate_hz: int = MODEL_SAMPLE_RATE_HZ
) -> Session:
    """Read one mixed file. Raises AudioError for unreadable files, InputError when under 1 s."""
    if path.suffix.lower() not in AUDIO_SUFFIXES:
        raise InputError(f"{path}: not an audio file (expected one of {', '.join(sorted(AUDIO_SUFFIXES))})")
    if anchor_stem not in stems_present:
        raise InputError(f"--stems-present does not include the anchor stem {anchor_stem!r}; add it")
    audio, info = _read_mono(path, rate_hz)
    files = [SessionFile(path, "mix", "mix", info.duration_s, info.rate_hz, info.channels)]
    session = Session("mix", path, anchor_stem, stems_present, {"mix": audio}, rate_hz, files, [])
    check_duration(info.duration_s, path)
    return session


def open_session(
    path: Path | None,
    anchor: str | None,
    stem_options: list[str] | None = None,
    stems_present: str | None = None,
    rate_hz: int = MODEL_SAMPLE_RATE_HZ,
    progress: Callable[[Path], None] | None = None,
    pad: bool = False,
) -> Session:
    """Open whatever the user pointed at: a folder of stems, a mixed file, or ``--stem`` files only.
    ``pad`` accepts stems much shorter than the others (padded with silence)."""
    anchor_stem = parse_anchor(anchor)
    if path is not None and not path.exists():
        raise InputError(f"{path}: no such file or folder")
    if path is not None and path.is_file():
        if stem_options:
            raise InputError("--stem needs a folder of stems; for a single mixed file use --stems-present")
        return open_mix_file(path, anchor_stem, parse_stems_present(stems_present, anchor_stem), rate_hz)
    if stems_present is not None:
        raise InputError("--stems-present applies to a single mixed file; in a folder the stems are found by name")
    if path is None and not stem_options:
        raise InputError("give a folder of stems, a mixed audio file, or --stem NAME=PATH options")
    overrides = parse_stem_overrides(stem_options, path)
    return open_stem_folder(path, anchor_stem, overrides, rate_hz, progress, pad)


def resample_session(session: Session, rate_hz: int) -> Session:
    """The same session at another sample rate (a no-op when it already matches)."""
    if session.rate_hz == rate_hz:
        return session
    from mixcritic.audio import resample

    audio = {stem: resample(a, session.rate_hz, rate_hz) for stem, a in session.audio.items()}
    return Session(
        session.mode, session.path, session.anchor_stem, session.stems_present, audio, rate_hz,
        session.files, session.ignored,
    )


__all__ = [
    "AUDIO_SUFFIXES", "IGNORED_NAMES", "InputError", "MIN_DURATION_S", "MIN_LENGTH_RATIO", "SILENT_REASON",
    "STEM_ALIASES", "check_lengths",
    "IgnoredFile", "Session", "SessionFile", "canonical_stem", "classify_folder", "name_tokens",
    "open_mix_file", "open_session", "open_stem_folder", "parse_anchor", "parse_stem_overrides",
    "parse_stems_present", "resample_session", "stem_for_name",
]
