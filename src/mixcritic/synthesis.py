"""``mixcritic synth``: MUSDB18-HQ stems -> stem cache, gated flaw grid, manifests and DPO pairs.

The pipeline, one track at a time (a *work unit*, see ``docs/dataset.md``):

1. read the four stems (any libsndfile format), downmix to mono, resample to 24 kHz (soxr);
2. write the stem cache ``(4, samples)`` float32 and the K-weighted per-hop energies;
3. cut non-overlapping chunks, gate every stem per chunk by loudness;
4. draw the flaw grid (3 targets x 2 anchors x 5 categories, or N per chunk) with randomness
   hashed from (seed, split, track, chunk, target, anchor, category), never from worker order;
5. write the track's rows to ``DATA/work/<track_key>.json``, atomically, last.

Finally the per-track units are assembled into ``DATA/{train,valid,test}.jsonl``,
``DATA/dpo/*.jsonl`` and ``DATA/dataset.json`` (written last: its presence means "complete").
Re-running skips complete units, so an interrupted run resumes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import random
import re
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from mixcritic import __version__, labels
from mixcritic.dataset import (
    CACHE_DIR,
    DPO_DIR,
    FORMAT,
    FORMAT_VERSION,
    INFO_FILE,
    SPLITS,
    dpo_path,
    hops_cache_path,
    manifest_path,
    stems_cache_path,
)
from mixcritic.errors import AudioError, DatasetError
from mixcritic.files import write_text_atomic

WORK_DIR = "work"
OPTIONS_FILE = "_options.json"
SOURCE_SPLITS: tuple[str, ...] = ("train", "test")
AUDIO_SUFFIXES = frozenset(
    ["wav", "wave", "flac", "ogg", "oga", "opus", "mp3", "aif", "aiff", "aifc", "caf", "w64", "rf64", "au", "snd"]
)
"""File extensions accepted as stems (any format libsndfile reads)."""

GAIN_STEP_DB = 0.01
"""Gains are drawn uniformly on this grid, stored exactly, and applied exactly when rendering."""


@dataclass(frozen=True)
class SynthConfig:
    """Everything that determines a dataset's content. Written to ``dataset.json`` as ``options``."""

    seed: int = 0
    """Seed for the validation split, the flaw draws, templates and DPO rejections."""
    segment_s: float = 10.0
    """Chunk length in seconds (a multiple of 0.1 s, at least 1 s); trailing partial chunks are dropped."""
    samples_per_chunk: int | None = None
    """None: the full grid (3 targets x 2 anchors x 5 categories = 30 per chunk); N: N drawn per chunk."""
    valid_fraction: float = 0.1
    """Share of the train tracks held out, by track, as the validation split (0 <= f < 1)."""
    target_lufs: float = labels.DEFAULT_TARGET_LUFS
    """Integrated loudness (BS.1770) every rendered mix is normalised to."""
    gate_lufs: float = -50.0
    """Absolute gate: a stem is active in a chunk only if its loudness there is at least this."""
    gate_relative_lu: float = -20.0
    """Relative gate: ... and at least the chunk's unmodified mix loudness plus this (LU, <= 0)."""
    min_active_fraction: float = 0.2
    """... and at least this share of the chunk's 400 ms blocks are at or above ``gate_lufs``."""
    length_tolerance_s: float = 0.01
    """Stems of one track may differ in length by at most this; they are trimmed to the shortest."""

    def __post_init__(self) -> None:
        hops = self.segment_s * 10
        if not (self.segment_s >= 1.0 and abs(hops - round(hops)) < 1e-6):
            raise DatasetError(f"--segment-s {self.segment_s}: must be at least 1 and a multiple of 0.1 s")
        if self.samples_per_chunk is not None and self.samples_per_chunk < 1:
            raise DatasetError(f"--samples-per-chunk {self.samples_per_chunk}: must be 'all' or a positive integer")
        if not 0.0 <= self.valid_fraction < 1.0:
            raise DatasetError(f"--valid-fraction {self.valid_fraction}: must be in [0, 1)")
        if not -70.0 < self.target_lufs < 0.0:
            raise DatasetError(f"--target-lufs {self.target_lufs}: must be between -70 and 0 LUFS")
        if not -70.0 <= self.gate_lufs < 0.0:
            raise DatasetError(f"--gate-lufs {self.gate_lufs}: must be between -70 and 0 LUFS")
        if self.gate_relative_lu > 0.0:
            raise DatasetError(f"--gate-relative-lu {self.gate_relative_lu}: must be <= 0 (LU below the mix)")
        if not 0.0 <= self.min_active_fraction <= 1.0:
            raise DatasetError(f"--min-active-fraction {self.min_active_fraction}: must be in [0, 1]")
        if self.length_tolerance_s < 0.0:
            raise DatasetError(f"length tolerance {self.length_tolerance_s}: must be >= 0 s")

    @property
    def segment_hops(self) -> int:
        """Chunk length in 100 ms hops."""
        return int(round(self.segment_s * 10))

    def options(self) -> dict:
        """The options as a JSON-ready dict (``samples_per_chunk`` is ``"all"`` or an int)."""
        options = asdict(self)
        options["samples_per_chunk"] = "all" if self.samples_per_chunk is None else self.samples_per_chunk
        return options


@dataclass(frozen=True)
class Track:
    """One track folder of the source tree."""

    source_split: str
    """Folder it was found in: ``train`` or ``test``."""
    name: str
    """Folder name, e.g. ``AvaLuna - Waterduct``."""
    folder: Path
    """The track folder."""
    files: tuple[tuple[str, tuple[Path, ...]], ...]
    """``(stem, candidate files)`` per stem in ``labels.STEMS`` order."""
    split: str = ""
    """Assigned split: ``train``, ``valid`` or ``test``."""
    key: str = ""
    """Unique, filesystem-safe slug used in ids and cache names."""


@dataclass
class SynthResult:
    """What a ``synthesize`` run did; ``info`` is the written ``dataset.json``."""

    data_dir: Path
    info: dict
    elapsed_s: float
    tracks_built: int
    tracks_resumed: int
    warnings: list[str] = field(default_factory=list)


class BrokenTrack(Exception):
    """A track that cannot be used: ``file`` names the culprit, ``reason`` says why."""

    def __init__(self, file: Path, reason: str) -> None:
        super().__init__(f"{file}: {reason}")
        self.file = Path(file)
        self.reason = reason


# ------------------------------------------------------------------------------------------------
# Discovery and split assignment


def discover_tracks(source: Path) -> list[Track]:
    """All track folders under ``source/{train,test}``, sorted. Raises DatasetError if there are none."""
    source = Path(source)
    if not source.is_dir():
        raise DatasetError(f"{source}: not a folder; pass a MUSDB18-HQ root (with train/ and test/)")
    tracks = []
    for source_split in SOURCE_SPLITS:
        split_dir = source / source_split
        if not split_dir.is_dir():
            continue
        for folder in sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            files = tuple((stem, _stem_files(folder, stem)) for stem in labels.STEMS)
            if any(candidates for _, candidates in files):
                tracks.append(Track(source_split, folder.name, folder, files))
    if not tracks:
        raise DatasetError(
            f"{source}: no tracks found; expected the MUSDB18-HQ layout "
            f"{source}/train/<track>/bass.wav (and drums, other, vocals; any libsndfile format), "
            "e.g. from `mixcritic toy-stems` (decode MUSDB18 .stem.mp4 files first)"
        )
    return tracks


def _stem_files(folder: Path, stem: str) -> tuple[Path, ...]:
    return tuple(
        sorted(
            path
            for path in folder.iterdir()
            if path.is_file()
            and not path.name.startswith(".")
            and path.name.partition(".")[0] == stem
            and path.name.partition(".")[2].lower() in AUDIO_SUFFIXES
        )
    )


def assign_splits(tracks: list[Track], seed: int, valid_fraction: float) -> list[Track]:
    """Give each track its split and key. ``valid`` is carved from ``train`` by track.

    The validation tracks are the train tracks with the smallest hash of (seed, name):
    ``round(valid_fraction * n_train)`` of them, at least 1 when there are >= 2 train tracks and
    ``valid_fraction > 0``, and never all of them.
    """
    train_names = sorted(t.name for t in tracks if t.source_split == "train")
    n_valid = round(valid_fraction * len(train_names))
    if valid_fraction > 0 and len(train_names) >= 2:
        n_valid = max(n_valid, 1)
    n_valid = min(n_valid, max(len(train_names) - 1, 0))
    valid = set(sorted(train_names, key=lambda name: _digest("valid", seed, name))[:n_valid])
    keys = track_keys([(t.source_split, t.name) for t in tracks])
    out = []
    for track in tracks:
        split = "test" if track.source_split == "test" else ("valid" if track.name in valid else "train")
        out.append(Track(track.source_split, track.name, track.folder, track.files, split, keys[(track.source_split, track.name)]))
    return out


def track_keys(names: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
    """Readable unique slugs: ``AvaLuna - Waterduct`` -> ``avaluna-waterduct``.

    When two tracks share a slug (or a name in both train and test), each gets a short hash suffix.
    """
    slugs = {item: re.sub(r"[^a-z0-9]+", "-", item[1].lower()).strip("-") or "track" for item in names}
    counts: dict[str, int] = {}
    for slug in slugs.values():
        counts[slug] = counts.get(slug, 0) + 1
    return {
        item: slug if counts[slug] == 1 else f"{slug}-{_digest('key', *item)[:6]}"
        for item, slug in slugs.items()
    }


def _digest(*parts: object) -> str:
    return hashlib.blake2b("\x1f".join(map(str, parts)).encode("utf-8"), digest_size=16).hexdigest()


def seeded_rng(*parts: object) -> random.Random:
    """A ``random.Random`` seeded from a hash of ``parts``: the same parts always draw the same."""
    return random.Random(int(_digest(*parts), 16))


# ------------------------------------------------------------------------------------------------
# One track: stems -> cache


def load_track(track: Track, tolerance_s: float, threads: int = 1) -> tuple[list[np.ndarray], np.ndarray]:
    """The track's stems, mono at 24 kHz, trimmed to the shortest, and their per-hop K-weighted energies.

    Returns ``(stems: 4 x (samples,) float32 in labels.STEMS order, hop_gram (hops, 4, 4) float64)``. The four stems are
    read, downmixed, resampled and K-weighted in ``threads`` threads (the libraries release the GIL).
    Raises BrokenTrack naming the file for a missing, ambiguous, unreadable, empty or non-finite
    stem (the first in ``labels.STEMS`` order), or when stem durations differ by more than ``tolerance_s``.
    """
    from mixcritic.stemloudness import gram_from_kweighted

    paths = []
    for stem, candidates in track.files:
        if not candidates:
            raise BrokenTrack(track.folder / f"{stem}.wav", f"missing stem '{stem}' (no {stem}.<wav|flac|...> file)")
        if len(candidates) > 1:
            names = ", ".join(p.name for p in candidates)
            raise BrokenTrack(candidates[0], f"{len(candidates)} files for stem '{stem}' ({names}); keep one")
        paths.append(candidates[0])
    if threads > 1:
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(min(threads, len(paths))) as pool:
            futures = [pool.submit(_load_stem, path) for path in paths]
            concurrent.futures.wait(futures)
            loaded = [future.result() for future in futures]  # re-raises the first broken stem, in stem order
    else:
        loaded = [_load_stem(path) for path in paths]
    durations = sorted((duration_s, path) for (_, _, duration_s), path in zip(loaded, paths))
    (short_s, short_file), (long_s, long_file) = durations[0], durations[-1]
    if long_s - short_s > tolerance_s:
        raise BrokenTrack(
            short_file,
            f"is {short_s:.3f} s but {long_file.name} is {long_s:.3f} s (stems may differ by at most "
            f"{tolerance_s} s); the file may be truncated",
        )
    samples = min(mono.shape[0] for mono, _, _ in loaded)
    gram = gram_from_kweighted([weighted for _, weighted, _ in loaded], labels.MODEL_SAMPLE_RATE_HZ)
    return [mono[:samples] for mono, _, _ in loaded], gram


def _load_stem(path: Path) -> tuple[np.ndarray, np.ndarray, float]:
    """``(mono 24 kHz float32, its K-weighted copy, source duration_s)``; raises BrokenTrack."""
    from mixcritic.audio import read_audio, resample, to_mono
    from mixcritic.stemloudness import kweighted

    try:
        audio, source_hz = read_audio(path)
    except AudioError as exc:
        raise BrokenTrack(path, str(exc).removeprefix(f"{path}: ")) from None
    mono = resample(to_mono(audio), source_hz, labels.MODEL_SAMPLE_RATE_HZ)
    if not np.isfinite(mono).all():
        raise BrokenTrack(path, "is non-finite after resampling")
    return mono, kweighted(mono, labels.MODEL_SAMPLE_RATE_HZ), audio.shape[0] / source_hz


# ------------------------------------------------------------------------------------------------
# Gating and the flaw grid


@dataclass(frozen=True)
class ChunkGate:
    """Loudness of one chunk's stems and which are active."""

    mix_lufs: float
    stem_lufs: dict[str, float]
    active_fraction: dict[str, float]
    active: tuple[str, ...]
    """Active stems in ``labels.STEMS`` order."""


def gate_chunk(gram: np.ndarray, config: SynthConfig, rate_hz: int = labels.MODEL_SAMPLE_RATE_HZ) -> ChunkGate:
    """Gate the stems of one chunk from its per-hop K-weighted cross-energies ``(hops, 4, 4)``.

    A stem is active when its integrated loudness is >= ``gate_lufs`` and >= the unmodified mix's
    loudness + ``gate_relative_lu``, and at least ``min_active_fraction`` of its 400 ms blocks are
    >= ``gate_lufs``.
    """
    from mixcritic.stemloudness import block_loudness_lufs, hop_energy, integrated_loudness_lufs

    mix_lufs = integrated_loudness_lufs(hop_energy(gram, np.ones(gram.shape[1])), rate_hz)
    stem_lufs, fractions, active = {}, {}, []
    for index, stem in enumerate(labels.STEMS):
        energy = gram[:, index, index]
        loudness = integrated_loudness_lufs(energy, rate_hz)
        fraction = float(np.mean(block_loudness_lufs(energy, rate_hz) >= config.gate_lufs))
        stem_lufs[stem], fractions[stem] = loudness, fraction
        if (
            loudness >= config.gate_lufs
            and loudness >= mix_lufs + config.gate_relative_lu
            and fraction >= config.min_active_fraction
        ):
            active.append(stem)
    return ChunkGate(mix_lufs, stem_lufs, fractions, tuple(active))


def full_grid(active: tuple[str, ...]) -> list[tuple[str, str, str]]:
    """Every (target, anchor, category) whose target and anchor are active, in grid order."""
    targets = [stem for stem in labels.TARGET_STEMS if stem in active]
    return [
        (target, anchor, category)
        for target in targets
        for anchor in targets
        if anchor != target
        for category in labels.CATEGORIES
    ]


FULL_GRID = full_grid(labels.TARGET_STEMS)
"""The 30 (target, anchor, category) entries of a chunk where bass, drums and vocals are all active."""


def chunk_drop_reason(gate: ChunkGate, config: SynthConfig) -> str | None:
    """Why a whole chunk yields no sample (None when it is kept)."""
    if gate.mix_lufs < config.gate_lufs:
        return "silent_mix"
    if sum(stem in gate.active for stem in labels.TARGET_STEMS) < 2:
        return "fewer_than_two_active_targets"
    return None


def grid_loss_reason(target: str, anchor: str, active: tuple[str, ...]) -> str | None:
    """Why a full-grid sample is not drawn in a chunk (None when it is drawn)."""
    if target not in active:
        return "target_inactive"
    if anchor not in active:
        return "anchor_inactive"
    return None


def draw_samples(grid: list[tuple[str, str, str]], count: int | None, rng: random.Random, category_offset: int) -> list[tuple[str, str, str]]:
    """``count`` distinct grid entries (all of them when None or when there are fewer), grid order.

    Categories go round-robin from ``category_offset`` so they stay balanced; within a category the
    (target, anchor) pair is drawn uniformly from those not used yet in this chunk.
    """
    if count is None or count >= len(grid):
        return list(grid)
    by_category = {category: [entry for entry in grid if entry[2] == category] for category in labels.CATEGORIES}
    chosen: set[tuple[str, str, str]] = set()
    slot = 0
    while len(chosen) < count:
        category = labels.CATEGORIES[(category_offset + slot) % len(labels.CATEGORIES)]
        slot += 1
        left = [entry for entry in by_category[category] if entry not in chosen]
        if left:
            chosen.add(left[rng.randrange(len(left))])
    return [entry for entry in grid if entry in chosen]


def gain_steps(category: str) -> tuple[int, int]:
    """Inclusive range of a category's gain in 0.01 dB steps.

    Ranges do not overlap: a shared boundary belongs to the milder category (-3 dB is no_error,
    -6 dB is quiet, +6 dB is loud).
    """
    low_db, high_db = labels.GAIN_RANGE_DB[category]
    low, high = round(low_db / GAIN_STEP_DB), round(high_db / GAIN_STEP_DB)
    if category != "no_error":
        if abs(low) < abs(high):
            low += 1
        else:
            high -= 1
    return low, high


def draw_gain_db(category: str, rng: random.Random) -> float:
    """A gain for ``category``, uniform on the 0.01 dB grid, as an exactly stored float."""
    low, high = gain_steps(category)
    return round(rng.randint(low, high) * GAIN_STEP_DB, 2)


# ------------------------------------------------------------------------------------------------
# One track: the work unit


@dataclass(frozen=True)
class TrackJob:
    """Everything a worker process needs to build one track's unit (picklable)."""

    track: Track
    config: SynthConfig
    data_dir: Path
    digest: str
    threads: int = 1
    """Threads for the four stems of the track (not part of the output's identity)."""


def build_track(job: TrackJob) -> dict:
    """Build one track's work unit: cache files, then ``DATA/work/<key>.json``. Returns a status.

    Returns ``{"key", "ok": True, "samples"}`` or ``{"key", "ok": False, "file", "reason"}``.
    """
    track, config = job.track, job.config
    try:
        stems, gram = load_track(track, config.length_tolerance_s, job.threads)
    except BrokenTrack as exc:
        return {"key": track.key, "ok": False, "file": str(exc.file), "reason": exc.reason}
    save_npy_atomic(stems_cache_path(job.data_dir, track.key), stems)
    save_npy_atomic(hops_cache_path(job.data_dir, track.key), gram)
    unit = track_unit(track, config, stems[0].shape[0], gram)
    unit["digest"] = job.digest
    write_text_atomic(unit_path(job.data_dir, track.key), json.dumps(unit, ensure_ascii=False))
    return {"key": track.key, "ok": True, "samples": len(unit["records"])}


def track_unit(track: Track, config: SynthConfig, samples: int, gram: np.ndarray) -> dict:
    """A track's rows, DPO pairs and statistics from its cache (pure; no I/O)."""
    rate_hz = labels.MODEL_SAMPLE_RATE_HZ
    hops = config.segment_hops
    n_chunks = gram.shape[0] // hops
    stats = {
        "chunks": n_chunks,
        "kept_chunks": 0,
        "dropped_chunks": {},
        "dropped_samples": {},
        "partial_chunk_s": round(samples / rate_hz - n_chunks * config.segment_s, 6),
    }
    per_chunk = len(FULL_GRID) if config.samples_per_chunk is None else config.samples_per_chunk
    records, pairs = [], []
    ever_active: set[str] = set()
    track_offset = int(_digest("categories", config.seed, track.split, track.key), 16) % len(labels.CATEGORIES)
    for chunk in range(n_chunks):
        gate = gate_chunk(gram[chunk * hops : (chunk + 1) * hops], config, rate_hz)
        ever_active.update(gate.active)
        reason = chunk_drop_reason(gate, config)
        if reason:
            _count(stats["dropped_chunks"], reason)
            _count(stats["dropped_samples"], reason, per_chunk)
            continue
        grid = full_grid(gate.active)
        if config.samples_per_chunk is None:
            for target, anchor, _ in FULL_GRID:
                loss = grid_loss_reason(target, anchor, gate.active)
                if loss:
                    _count(stats["dropped_samples"], loss)
        elif len(grid) < per_chunk:
            _count(stats["dropped_samples"], "fewer_combinations_than_requested", per_chunk - len(grid))
        rng = seeded_rng("chunk", config.seed, track.split, track.key, chunk)
        offset = (track_offset + stats["kept_chunks"] * per_chunk) % len(labels.CATEGORIES)
        stats["kept_chunks"] += 1
        for target, anchor, category in draw_samples(grid, config.samples_per_chunk, rng, offset):
            record, pair = make_sample(track, config, chunk, gate, target, anchor, category)
            records.append(record)
            pairs.append(pair)
    return {
        "format_version": FORMAT_VERSION,
        "track": track.name,
        "track_key": track.key,
        "split": track.split,
        "source_split": track.source_split,
        "files": {stem: str(candidates[0]) for stem, candidates in track.files},
        "samples_24k": samples,
        "hops": int(gram.shape[0]),
        "duration_s": round(samples / rate_hz, 6),
        "inactive_stems": [stem for stem in labels.STEMS if stem not in ever_active],
        "stats": stats,
        "records": records,
        "dpo": pairs,
    }


def _count(counter: dict, key: str, amount: int = 1) -> None:
    counter[key] = counter.get(key, 0) + amount


def make_sample(track: Track, config: SynthConfig, chunk: int, gate: ChunkGate, target: str, anchor: str, category: str) -> tuple[dict, dict]:
    """The manifest row and the DPO pair of one sample; all randomness hashed from its identity."""
    from mixcritic import templates

    rng = seeded_rng("sample", config.seed, track.split, track.key, chunk, target, anchor, category)
    gain_db = draw_gain_db(category, rng)
    instruction_template = rng.randrange(len(templates.INSTRUCTION_TEMPLATES))
    response_template = rng.randrange(len(templates.RESPONSE_TEMPLATES[category]))
    stems_present = [stem for stem in labels.STEMS if stem in gate.active]
    label = labels.Label.for_flaw(category, target)
    instruction = templates.render_instruction(instruction_template, config.segment_s, stems_present, anchor)
    response = templates.render_response(label, response_template)
    sample_id = f"{track.key}.{chunk:04d}.{target}-vs-{anchor}.{category}"
    record = {
        "id": sample_id,
        "split": track.split,
        "track": track.name,
        "track_key": track.key,
        "chunk_index": chunk,
        "start_s": round(chunk * config.segment_s, 6),
        "duration_s": config.segment_s,
        "stems_present": stems_present,
        "anchor_stem": anchor,
        "target_stem": target,
        "category": category,
        "gain_db": gain_db,
        "correction_db": list(label.correction_db) if label.correction_db else None,
        "instruction": instruction,
        "response": response,
        "instruction_template": instruction_template,
        "response_template": response_template,
        "template_version": templates.TEMPLATE_VERSION,
        "stem_lufs": {stem: _round_lufs(value) for stem, value in gate.stem_lufs.items()},
    }
    dpo_rng = np.random.default_rng(int(_digest("dpo", config.seed, track.split, track.key, chunk, target, anchor, category), 16))
    rejected_label, rejected_kind = templates.make_rejected(label, dpo_rng)
    rejected_template = response_template % len(templates.RESPONSE_TEMPLATES[rejected_label.category])
    pair = {
        "id": sample_id,
        "split": track.split,
        "instruction": instruction,
        "chosen": response,
        "rejected": templates.render_response(rejected_label, rejected_template),
        "rejected_kind": rejected_kind,
        "chosen_label": _label_json(label),
        "rejected_label": _label_json(rejected_label),
    }
    return record, pair


def _label_json(label: labels.Label) -> dict:
    return {
        "category": label.category,
        "stem": label.stem,
        "correction_db": list(label.correction_db) if label.correction_db else None,
    }


def _round_lufs(value: float) -> float | None:
    return round(value, 2) if math.isfinite(value) else None


# ------------------------------------------------------------------------------------------------
# Files: atomic writes, units, options


def save_npy_atomic(path: Path, array) -> None:
    """Save an array, or a list of equal-length 1-D rows as one 2-D array, as ``.npy`` to ``path``.

    Written via a temporary file and ``os.replace``; rows are written one by one (no stacked copy).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as handle:
            if isinstance(array, np.ndarray):
                np.save(handle, array)
            else:
                rows = [np.ascontiguousarray(row) for row in array]
                header = {"descr": np.lib.format.dtype_to_descr(rows[0].dtype), "fortran_order": False, "shape": (len(rows), rows[0].shape[0])}
                np.lib.format.write_array_header_1_0(handle, header)
                for row in rows:
                    row.tofile(handle)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def unit_path(data_dir: Path, key: str) -> Path:
    """``DATA/work/<track_key>.json``."""
    return Path(data_dir) / WORK_DIR / f"{key}.json"


def load_unit(data_dir: Path, key: str, digest: str) -> dict | None:
    """A complete work unit of this configuration, or None (missing, half-written, stale, bad cache)."""
    try:
        unit = json.loads(unit_path(data_dir, key).read_text(encoding="utf-8"))
        if unit.get("digest") != digest or unit.get("track_key") != key:
            return None
        stems = np.load(stems_cache_path(data_dir, key), mmap_mode="r")
        hops = np.load(hops_cache_path(data_dir, key), mmap_mode="r")
    except (OSError, ValueError, json.JSONDecodeError):
        return None
    n_stems = len(labels.STEMS)
    if stems.shape != (n_stems, unit["samples_24k"]) or stems.dtype != np.float32:
        return None
    if hops.shape != (unit["hops"], n_stems, n_stems) or hops.dtype != np.float64:
        return None
    return unit


def run_identity(source: Path, config: SynthConfig) -> dict:
    """What must match for an existing DATA folder to be resumed or reused."""
    from mixcritic import templates

    return {
        "format_version": FORMAT_VERSION,
        "source": str(Path(source).resolve()),
        "template_version": templates.TEMPLATE_VERSION,
        "options": config.options(),
    }


def prepare_data_dir(data_dir: Path, identity: dict, overwrite: bool) -> str:
    """Create or check ``data_dir`` for a run with ``identity``; return the identity digest.

    Raises DatasetError when it holds a dataset built with other options (unless ``overwrite``)
    or files that are not a mixcritic dataset.
    """
    data_dir = Path(data_dir)
    options_file = data_dir / WORK_DIR / OPTIONS_FILE
    previous = _previous_identity(data_dir)
    if previous is not None and previous != identity:
        if not overwrite:
            raise DatasetError(
                f"{data_dir}: was built with other settings ({_describe_difference(previous, identity)}); "
                "use a new --out folder, or --overwrite to replace it"
            )
        _remove_dataset(data_dir)
    elif previous is None and data_dir.is_dir() and any(data_dir.iterdir()):
        raise DatasetError(f"{data_dir}: exists and is not a mixcritic dataset; choose an empty or new --out folder")
    if not options_file.is_file():
        write_text_atomic(options_file, json.dumps(identity, indent=2, sort_keys=True) + "\n")
    return _digest(json.dumps(identity, sort_keys=True))


def _previous_identity(data_dir: Path) -> dict | None:
    for path in (data_dir / WORK_DIR / OPTIONS_FILE, data_dir / INFO_FILE):
        if path.is_file():
            try:
                data = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError):
                raise DatasetError(f"{path}: unreadable; delete {data_dir} or use --overwrite") from None
            if path.name == INFO_FILE:
                data = {key: data.get(key) for key in ("format_version", "source", "template_version", "options")}
            return data
    return None


def _describe_difference(old: dict, new: dict) -> str:
    flat_old = {**{k: v for k, v in old.items() if k != "options"}, **old.get("options", {})}
    flat_new = {**{k: v for k, v in new.items() if k != "options"}, **new.get("options", {})}
    changed = [f"{key} {flat_old.get(key)!r} -> {flat_new.get(key)!r}" for key in flat_new if flat_old.get(key) != flat_new.get(key)]
    return ", ".join(changed) or "unknown difference"


def _remove_dataset(data_dir: Path) -> None:
    """Delete only what synth writes."""
    for name in (CACHE_DIR, DPO_DIR, WORK_DIR):
        shutil.rmtree(data_dir / name, ignore_errors=True)
    for name in [INFO_FILE] + [f"{split}.jsonl" for split in SPLITS]:
        (data_dir / name).unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------------
# The run


def synthesize(
    source: str | Path,
    data_dir: str | Path,
    config: SynthConfig,
    workers: int = 1,
    strict: bool = False,
    overwrite: bool = False,
    show_progress: bool = True,
) -> SynthResult:
    """Build (or resume) the dataset ``data_dir`` from the MUSDB18-HQ tree ``source``.

    Broken tracks are skipped with a one-line warning and listed in ``dataset.json``; with
    ``strict`` the first one raises DatasetError naming its file. Output does not depend on
    ``workers``.
    """

    started = time.perf_counter()
    source, data_dir = Path(source), Path(data_dir)
    check_out_dir(data_dir)
    tracks = assign_splits(discover_tracks(source), config.seed, config.valid_fraction)
    identity = run_identity(source, config)
    existed = data_dir.exists()
    fresh = not existed or not any(data_dir.iterdir())
    digest = prepare_data_dir(data_dir, identity, overwrite)
    try:
        return _build(source, data_dir, tracks, config, identity, digest, workers, strict, show_progress, started)
    except Exception:
        if fresh:  # a new dataset that failed leaves nothing behind, so a retry (any options) starts clean
            _remove_dataset(data_dir)
            _remove_stray_tmp(data_dir)
            if not existed:
                with contextlib.suppress(OSError):
                    data_dir.rmdir()
        raise


def check_out_dir(data_dir: Path) -> None:
    """DatasetError when ``--out`` names something other than a folder."""
    if data_dir.exists() and not data_dir.is_dir():
        raise DatasetError(f"--out {data_dir}: is a file, not a folder; give a new or empty folder for the dataset")


def _build(
    source: Path, data_dir: Path, tracks: list[Track], config: SynthConfig, identity: dict, digest: str,
    workers: int, strict: bool, show_progress: bool, started: float,
) -> SynthResult:
    """The body of :func:`synthesize` once ``data_dir`` is claimed: work units, then assembly."""
    from mixcritic.console import warn

    done = {t.key: unit for t in tracks if (unit := load_unit(data_dir, t.key, digest)) is not None}
    threads = stem_threads(workers)
    jobs = [TrackJob(t, config, data_dir, digest, threads) for t in tracks if t.key not in done]
    broken: list[dict] = []
    warnings: list[str] = []
    by_key = {t.key: t for t in tracks}

    def on_status(status: dict) -> None:
        if status["ok"]:
            return
        track = by_key[status["key"]]
        if strict:
            raise DatasetError(f"{status['file']}: {status['reason']} (--strict stops at the first broken track; fix it or drop --strict to skip it)")
        message = f"{status['file']}: {status['reason']}; skipping track {track.name!r}"
        warnings.append(message)
        warn(message)
        broken.append({"split": track.split, "track": track.name, "file": status["file"], "reason": status["reason"]})

    with _sigterm_as_interrupt():
        _run_jobs(jobs, workers, on_status, show_progress, total=len(tracks), already_done=len(done))
    for job in jobs:
        unit = load_unit(data_dir, job.track.key, digest)
        if unit is not None:
            done[job.track.key] = unit
    check_broken_splits(source, tracks, broken)
    if not any(unit["records"] for unit in done.values()):
        raise DatasetError(
            f"{source}: no samples: {len(broken)} of {len(tracks)} tracks are broken and the rest gave no chunk "
            f"with two active target stems of {config.segment_s:g} s; check the warnings, --segment-s and the gates "
            "(--gate-lufs, --gate-relative-lu, --min-active-fraction)"
        )
    info = assemble(data_dir, tracks, done, broken, identity)
    _remove_stray_tmp(data_dir)
    return SynthResult(data_dir, info, time.perf_counter() - started, len(jobs) - len(broken), len(tracks) - len(jobs), warnings)


def check_broken_splits(source: Path, tracks: list[Track], broken: list[dict]) -> None:
    """DatasetError when every track of a source split (``train/`` or ``test/``) is broken: that
    split of the dataset would be empty, which no later command can use."""
    broken_tracks = {(b["split"], b["track"]) for b in broken}
    for source_split in SOURCE_SPLITS:
        split_tracks = {(t.split, t.name) for t in tracks if t.source_split == source_split}
        if split_tracks and split_tracks <= broken_tracks:
            files = ", ".join(b["file"] for b in broken if (b["split"], b["track"]) in split_tracks)
            raise DatasetError(
                f"{source / source_split}: every track is broken ({files}); no dataset was written. "
                "Fix or replace those files (see the warnings above) and run the same command again"
            )


def stem_threads(workers: int) -> int:
    """Threads per track: spare CPU cores shared among the worker processes, 1 to 4."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(len(labels.STEMS), cores // max(workers, 1)))


def _run_jobs(jobs: list[TrackJob], workers: int, on_status: Callable[[dict], None], show_progress: bool, total: int, already_done: int) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from mixcritic.console import stderr

    columns = [TextColumn("synth"), BarColumn(), MofNCompleteColumn(), TextColumn("tracks"), TimeElapsedColumn(), TimeRemainingColumn()]
    with Progress(*columns, console=stderr, disable=not show_progress, transient=False) as progress:
        task = progress.add_task("synth", total=total, completed=already_done)
        if workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                on_status(build_track(job))
                progress.advance(task)
            return
        import multiprocessing

        if "forkserver" in multiprocessing.get_all_start_methods():
            context = multiprocessing.get_context("forkserver")
            # Workers fork from a server that has imported the heavy modules once.
            context.set_forkserver_preload(["mixcritic.synthesis", "mixcritic.templates", "scipy.signal", "soxr", "soundfile"])
        else:
            context = multiprocessing.get_context("spawn")
        # Leaving the block (done, Ctrl-C, SIGTERM, --strict) terminates the workers at once; a
        # half-built track leaves only a temporary file, which never counts as done.
        with context.Pool(min(workers, len(jobs)), initializer=_exit_with_parent, initargs=(os.getpid(),)) as pool:
            for status in pool.imap_unordered(build_track, jobs):
                on_status(status)
                progress.advance(task)


def _exit_with_parent(parent_pid: int) -> None:
    """Pool initializer: end this worker once the synth process is gone (killed), never idle forever."""
    import threading

    def watch() -> None:
        while True:
            time.sleep(1.0)
            try:
                os.kill(parent_pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:
                pass

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """Inside the block, SIGTERM (e.g. from ``timeout`` or a job scheduler) acts like Ctrl-C."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def assemble(data_dir: Path, tracks: list[Track], units: dict[str, dict], broken: list[dict], identity: dict) -> dict:
    """Write the manifests, DPO files and ``dataset.json`` (last) from the work units."""
    ordered = [units[t.key] for t in sorted(tracks, key=lambda t: t.key) if t.key in units]
    for split in SPLITS:
        split_units = [unit for unit in ordered if unit["split"] == split]
        write_text_atomic(manifest_path(data_dir, split), _jsonl(row for unit in split_units for row in unit["records"]))
        write_text_atomic(dpo_path(data_dir, split), _jsonl(pair for unit in split_units for pair in unit["dpo"]))
    info = dataset_info(tracks, ordered, broken, identity)
    write_text_atomic(data_dir / INFO_FILE, json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    return info


def _jsonl(rows) -> str:
    return "".join(json.dumps(row, ensure_ascii=False, separators=(",", ":")) + "\n" for row in rows)


def dataset_info(tracks: list[Track], units: list[dict], broken: list[dict], identity: dict) -> dict:
    """The content of ``dataset.json`` (deterministic: no timings, no worker count)."""
    options = identity["options"]
    counts, dropped, listing = {}, {}, {}
    for split in SPLITS:
        split_units = [unit for unit in units if unit["split"] == split]
        rows = [row for unit in split_units for row in unit["records"]]
        counts[split] = {
            "tracks": len(split_units),
            "chunks": sum(unit["stats"]["kept_chunks"] for unit in split_units),
            "chunk_audio_s": round(sum(unit["stats"]["kept_chunks"] for unit in split_units) * options["segment_s"], 3),
            "samples": len(rows),
            "by_category": {c: sum(r["category"] == c for r in rows) for c in labels.CATEGORIES},
            "by_target": {s: sum(r["target_stem"] == s for r in rows) for s in labels.TARGET_STEMS},
            "by_anchor": {s: sum(r["anchor_stem"] == s for r in rows) for s in labels.TARGET_STEMS},
        }
        dropped_chunks: dict[str, int] = {}
        dropped_samples: dict[str, int] = {}
        for unit in split_units:
            for key, value in unit["stats"]["dropped_chunks"].items():
                _count(dropped_chunks, key, value)
            for key, value in unit["stats"]["dropped_samples"].items():
                _count(dropped_samples, key, value)
        dropped[split] = {
            "chunks": dict(sorted(dropped_chunks.items())),
            "samples": dict(sorted(dropped_samples.items())),
            "partial_chunks": sum(unit["stats"]["partial_chunk_s"] > 0 for unit in split_units),
            "partial_chunk_s": round(sum(unit["stats"]["partial_chunk_s"] for unit in split_units), 3),
        }
        listing[split] = [
            {
                "track": unit["track"],
                "track_key": unit["track_key"],
                "duration_s": unit["duration_s"],
                "chunks": unit["stats"]["chunks"],
                "kept_chunks": unit["stats"]["kept_chunks"],
                "samples": len(unit["records"]),
                "inactive_stems": unit["inactive_stems"],
            }
            for unit in split_units
        ]
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mixcritic_version": __version__,
        "template_version": identity["template_version"],
        "source": identity["source"],
        "options": options,
        "sample_rate_hz": labels.MODEL_SAMPLE_RATE_HZ,
        "stems": list(labels.STEMS),
        "target_stems": list(labels.TARGET_STEMS),
        "categories": list(labels.CATEGORIES),
        "gain_step_db": GAIN_STEP_DB,
        "gain_range_db": {c: [round(v * GAIN_STEP_DB, 2) for v in gain_steps(c)] for c in labels.CATEGORIES},
        "correction_db": {c: list(r) if r else None for c, r in labels.CORRECTION_DB.items()},
        "gating": {
            "gate_lufs": options["gate_lufs"],
            "gate_relative_lu": options["gate_relative_lu"],
            "min_active_fraction": options["min_active_fraction"],
            "rule": (
                "a stem is active in a chunk when its BS.1770 integrated loudness there is >= gate_lufs "
                "and >= the unmodified mix loudness + gate_relative_lu, and at least min_active_fraction "
                "of its 400 ms blocks are >= gate_lufs; target and anchor must both be active"
            ),
        },
        "counts": counts,
        "totals": {
            "tracks": sum(c["tracks"] for c in counts.values()),
            "samples": sum(c["samples"] for c in counts.values()),
            "by_category": {cat: sum(c["by_category"][cat] for c in counts.values()) for cat in labels.CATEGORIES},
        },
        "dropped": dropped,
        "broken_tracks": sorted(broken, key=lambda b: (SPLITS.index(b["split"]), b["track"])),
        "tracks": listing,
        "files": {
            "manifests": {split: manifest_path(Path(""), split).as_posix() for split in SPLITS},
            "dpo": {split: dpo_path(Path(""), split).as_posix() for split in SPLITS},
            "cache": f"{CACHE_DIR}/<track_key>.npy and {CACHE_DIR}/<track_key>.hops.npy",
        },
    }


def _remove_stray_tmp(data_dir: Path) -> None:
    for folder in (data_dir, data_dir / CACHE_DIR, data_dir / WORK_DIR, data_dir / DPO_DIR):
        if folder.is_dir():
            for path in folder.glob(".*.tmp-*"):
                path.unlink(missing_ok=True)
