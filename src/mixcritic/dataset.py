"""A synthesised dataset on disk, and rendering its samples: the training data path.

Layout of a dataset folder ``DATA`` (written by :mod:`mixcritic.synthesis`, specified in
``docs/dataset.md``)::

    DATA/dataset.json                 version, options, gating thresholds, counts, broken tracks
    DATA/{train,valid,test}.jsonl     one sample per line (the manifest)
    DATA/dpo/{train,valid,test}.jsonl DPO preference pairs for the same samples
    DATA/cache/<track_key>.npy        (4, samples) float32: the stems of a track, mono, 24 kHz
    DATA/cache/<track_key>.hops.npy   (hops, 4, 4) float64: K-weighted energies per 100 ms hop

A sample is rendered on the fly: the four cached stems over the sample's chunk, the target stem
scaled by ``gain_db``, summed, then loudness-normalised to the dataset's target. Cache files are
memory-mapped lazily and never pickled, so a :class:`Dataset` is safe to hand to DataLoader workers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from mixcritic import labels
from mixcritic.errors import DatasetError, SilentAudioError
from mixcritic.files import atomic_path

FORMAT = "mixcritic-dataset"
FORMAT_VERSION = 1
SPLITS: tuple[str, ...] = ("train", "valid", "test")
INFO_FILE = "dataset.json"
CACHE_DIR = "cache"
DPO_DIR = "dpo"


def manifest_path(data_dir: Path, split: str) -> Path:
    """``DATA/<split>.jsonl``."""
    return Path(data_dir) / f"{split}.jsonl"


def dpo_path(data_dir: Path, split: str) -> Path:
    """``DATA/dpo/<split>.jsonl``."""
    return Path(data_dir) / DPO_DIR / f"{split}.jsonl"


def stems_cache_path(data_dir: Path, track_key: str) -> Path:
    """``DATA/cache/<track_key>.npy``: ``(4, samples)`` float32 stems in ``labels.STEMS`` order."""
    return Path(data_dir) / CACHE_DIR / f"{track_key}.npy"


def hops_cache_path(data_dir: Path, track_key: str) -> Path:
    """``DATA/cache/<track_key>.hops.npy``: ``(hops, 4, 4)`` K-weighted cross-energies per 100 ms."""
    return Path(data_dir) / CACHE_DIR / f"{track_key}.hops.npy"


def read_jsonl(path: Path) -> list[dict]:
    """All rows of a JSON-lines file. Raises DatasetError naming the file and line."""
    rows = []
    try:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if line.strip():
                    rows.append(json.loads(line))
    except FileNotFoundError:
        raise DatasetError(f"{path}: not found; re-run `mixcritic synth` to complete the dataset") from None
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{path}:{number}: not valid JSON ({exc.msg}); re-run `mixcritic synth`") from None
    return rows


def open_dataset(data_dir: str | Path) -> "Dataset":
    """Open a dataset folder written by ``mixcritic synth``. Raises DatasetError if incomplete."""
    data_dir = Path(data_dir)
    info_file = data_dir / INFO_FILE
    if not info_file.is_file():
        raise DatasetError(f"{data_dir}: {not_a_dataset_hint(data_dir)}")
    try:
        info = json.loads(info_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise DatasetError(f"{info_file}: unreadable ({exc}); re-run `mixcritic synth`") from None
    if info.get("format") != FORMAT or info.get("format_version") != FORMAT_VERSION:
        raise DatasetError(
            f"{info_file}: format {info.get('format')!r} v{info.get('format_version')} is not "
            f"{FORMAT!r} v{FORMAT_VERSION}; re-run `mixcritic synth` with this version of mixcritic"
        )
    return Dataset(data_dir, info)


def not_a_dataset_hint(data_dir: Path) -> str:
    """Why ``data_dir`` (which has no ``dataset.json``) is not a dataset, and the command that helps."""
    from mixcritic.session import AUDIO_SUFFIXES

    if not data_dir.exists():
        return "no such folder; pass the DATA folder written by `mixcritic synth SOURCE --out DATA`"
    if not data_dir.is_dir():
        return "is a file; pass the DATA folder written by `mixcritic synth SOURCE --out DATA`"
    if (data_dir / "work").is_dir():
        return f"`mixcritic synth` did not finish here; re-run the same synth command (--out {data_dir}) to resume it"

    def has_audio(folder: Path) -> bool:
        return any(p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES for p in folder.iterdir())

    if any((data_dir / split).is_dir() for split in ("train", "test")):
        return (f"holds stems (a MUSDB18-HQ-style source), not a dataset; build one from it first: "
                f"mixcritic synth {data_dir} --out DATA, then pass DATA")
    if has_audio(data_dir):
        return (f"holds audio files, not a dataset; to critique these stems run: mixcritic critique {data_dir} --anchor STEM; "
                "a dataset comes from `mixcritic synth SOURCE --out DATA` on a MUSDB18-HQ-style SOURCE/{train,test}/<track>/")
    return f"no {INFO_FILE}; this is not a dataset: pass the DATA folder written by `mixcritic synth SOURCE --out DATA`"


class Dataset:
    """A finished dataset folder: manifests, DPO pairs, and sample rendering from the stem cache."""

    def __init__(self, root: Path, info: dict) -> None:
        self.root = Path(root)
        self.info = info
        """The parsed ``dataset.json``."""
        self._records: dict[str, list[dict]] = {}
        self._by_id: dict[str, dict] | None = None
        self._stems: dict[str, np.ndarray] = {}
        self._hops: dict[str, np.ndarray] = {}
        self._pid = os.getpid()

    # -- pickling: never carry open memory maps into another process ---------------------------
    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_stems"], state["_hops"], state["_by_id"] = {}, {}, None
        return state

    @property
    def sample_rate_hz(self) -> int:
        """Rate of the stem cache and of every rendered sample (24 kHz)."""
        return int(self.info["sample_rate_hz"])

    @property
    def target_lufs(self) -> float:
        """Integrated loudness every rendered sample is normalised to."""
        return float(self.info["options"]["target_lufs"])

    @property
    def segment_s(self) -> float:
        """Chunk length in seconds."""
        return float(self.info["options"]["segment_s"])

    def records(self, split: str) -> list[dict]:
        """Manifest rows of ``split`` (train, valid or test), in manifest order."""
        if split not in SPLITS:
            raise DatasetError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        if split not in self._records:
            self._records[split] = read_jsonl(manifest_path(self.root, split))
        return self._records[split]

    def dpo_pairs(self, split: str) -> list[dict]:
        """DPO preference pairs of ``split`` (``DATA/dpo/<split>.jsonl``)."""
        if split not in SPLITS:
            raise DatasetError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        return read_jsonl(dpo_path(self.root, split))

    def record(self, sample_id: str) -> dict:
        """The manifest row with ``id == sample_id`` from any split. Raises DatasetError if unknown."""
        if self._by_id is None:
            self._by_id = {row["id"]: row for split in SPLITS for row in self.records(split)}
        try:
            return self._by_id[sample_id]
        except KeyError:
            import difflib

            same_track = [known for known in self._by_id if known.partition(".")[0] == sample_id.partition(".")[0]]
            close = difflib.get_close_matches(sample_id, same_track or list(self._by_id), n=3, cutoff=0.75)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise DatasetError(
                f"{self.root}: no sample with id {sample_id!r}. Ids are the `id` field of "
                f"{', '.join(f'{s}.jsonl' for s in SPLITS)} (e.g. `head -n 1 {manifest_path(self.root, 'test')}`).{hint}"
            ) from None

    # -- rendering --------------------------------------------------------------------------------
    def render(self, record: dict, normalize: bool = True) -> np.ndarray:
        """The mix the model hears for ``record``: ``(samples,)`` float32, 24 kHz mono.

        All four cached stems over the record's chunk, the target stem scaled by ``gain_db``,
        summed; with ``normalize`` (default) scaled to the dataset's ``target_lufs``
        (BS.1770 integrated loudness). Not clipped: peaks may exceed 1.0.
        """
        from mixcritic.audio import db_to_amplitude, is_silent, loudness_lufs

        stems, start, gains = self._segment(record)
        if not normalize:
            return _mix(stems, gains)
        loudness = self._cached_loudness_lufs(record["track_key"], start, stems.shape[1], gains)
        if loudness is None:  # not on the 100 ms hop grid: measure the mix itself
            mix = _mix(stems, gains)
            loudness = loudness_lufs(mix, self.sample_rate_hz, name=f"sample {record.get('id')!r}")
        else:  # fold the normalising gain into the stem gains: one pass over the audio
            mix = None
        if is_silent(loudness):
            raise SilentAudioError(f"sample {record.get('id')!r}: the rendered mix is silent, so it cannot be normalised")
        scale = db_to_amplitude(self.target_lufs - loudness)
        if mix is None:
            return _mix(stems, gains * scale)
        mix *= np.float32(scale)
        return mix

    def render_stems(self, record: dict) -> dict[str, np.ndarray]:
        """Each stem over the record's chunk, the target scaled by ``gain_db``; not normalised.

        Returns ``{stem: (samples,) float32}`` for every stem in ``labels.STEMS``; their sum is
        ``render(record, normalize=False)`` up to float rounding.
        """
        stems, _, gains = self._segment(record)
        return {
            stem: np.multiply(stems[index], np.float32(gains[index]), dtype=np.float32)
            for index, stem in enumerate(labels.STEMS)
        }

    def stems(self, track_key: str) -> np.ndarray:
        """The cached stems of a track, memory-mapped read-only: ``(4, samples)`` float32."""
        self._forget_after_fork()
        if track_key not in self._stems:
            path = stems_cache_path(self.root, track_key)
            try:
                # A plain ndarray view of the map: arithmetic on np.memmap subclasses is slow.
                self._stems[track_key] = np.asarray(np.load(path, mmap_mode="r"))
            except (OSError, ValueError) as exc:
                raise DatasetError(f"{path}: unreadable stem cache ({exc}); re-run `mixcritic synth` to rebuild it") from None
        return self._stems[track_key]

    def _hop_gram(self, track_key: str) -> np.ndarray:
        self._forget_after_fork()
        if track_key not in self._hops:
            path = hops_cache_path(self.root, track_key)
            try:
                self._hops[track_key] = np.load(path)
            except (OSError, ValueError) as exc:
                raise DatasetError(f"{path}: unreadable loudness cache ({exc}); re-run `mixcritic synth`") from None
        return self._hops[track_key]

    def _forget_after_fork(self) -> None:
        if os.getpid() != self._pid:
            self._stems, self._hops, self._pid = {}, {}, os.getpid()

    def _segment(self, record: dict) -> tuple[np.ndarray, int, np.ndarray]:
        """``(stems (4, samples) view, start sample, gains (4,) float64)`` for a record."""
        from mixcritic.audio import db_to_amplitude

        try:
            track_key = record["track_key"]
            target = labels.STEMS.index(record["target_stem"])
            gain_db = float(record["gain_db"])
            start = round(float(record["start_s"]) * self.sample_rate_hz)
            length = round(float(record["duration_s"]) * self.sample_rate_hz)
        except (KeyError, TypeError, ValueError) as exc:
            raise DatasetError(f"record {record.get('id')!r}: missing or bad field ({exc}); use rows from the manifest") from None
        stems = self.stems(track_key)
        if start < 0 or length <= 0 or start + length > stems.shape[1]:
            raise DatasetError(
                f"record {record.get('id')!r}: {record['start_s']} s + {record['duration_s']} s lies outside "
                f"{stems_cache_path(self.root, track_key)}; the cache does not belong to this manifest"
            )
        gains = np.ones(len(labels.STEMS), dtype=np.float64)
        gains[target] = db_to_amplitude(gain_db)
        return stems[:, start : start + length], start, gains

    def _cached_loudness_lufs(self, track_key: str, start: int, length: int, gains: np.ndarray) -> float | None:
        """Integrated loudness of the gain-weighted mix from the hop cache; None when not hop-aligned."""
        from mixcritic import stemloudness

        hop = stemloudness.hop_samples(self.sample_rate_hz)
        if start % hop or length % hop:
            return None
        gram = self._hop_gram(track_key)[start // hop : (start + length) // hop]
        if gram.shape[0] != length // hop:
            return None
        return stemloudness.integrated_loudness_lufs(stemloudness.hop_energy(gram, gains), self.sample_rate_hz)


def _mix(stems: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """``sum_i gains[i] * stems[i]``: ``(n, samples)`` float32 -> ``(samples,)`` float32.

    einsum runs single-threaded in numpy itself: a multi-threaded BLAS gemv here is no faster and
    stalls badly when other processes (DataLoader workers, training) hold the cores.
    """
    return np.einsum("i,ij->j", gains.astype(np.float32), stems)


def write_sample_wav(dataset: Dataset, record: dict, path: str | Path, normalize: bool = True) -> dict:
    """Render ``record`` and write it as a 24 kHz mono 32-bit float WAV, atomically.

    Returns ``{"id", "out", "duration_s", "sample_rate_hz", "loudness_lufs", "normalized", "peak"}``.
    """
    import soundfile as sf

    from mixcritic.audio import loudness_lufs

    path = Path(path)
    if path.suffix.lower() != ".wav":
        raise DatasetError(f"--out {path}: must end in .wav")
    audio = dataset.render(record, normalize=normalize)
    try:
        with atomic_path(path) as tmp:
            sf.write(str(tmp), audio, dataset.sample_rate_hz, subtype="FLOAT", format="WAV")
    except OSError as exc:
        raise DatasetError(f"--out {path}: cannot write ({exc.strerror or exc})") from None
    return {
        "id": record["id"],
        "out": str(path),
        "duration_s": audio.shape[0] / dataset.sample_rate_hz,
        "sample_rate_hz": dataset.sample_rate_hz,
        "loudness_lufs": round(loudness_lufs(audio, dataset.sample_rate_hz, name=record["id"]), 2),
        "normalized": normalize,
        "peak": round(float(abs(audio).max()), 4),
    }
