"""``mixcritic evaluate``: answers for a dataset split, then the paper's tables on them.

The run, in order:

1. pick the records of the split (all, or ``--limit`` of them stratified by category x stem);
2. answer each one, with a critic (``builtin`` or a run of either engine, through the one
   interface of :mod:`mixcritic.critics`: each record becomes a ``Segment`` with its normalised
   mix and its separate stems) or a baseline from :mod:`mixcritic.baselines`, appending
   ``{"id", "response", "confidence"?, ...}`` to
   ``REPORT_DIR/predictions.jsonl`` after every batch, so an interrupted run resumes where it
   stopped (ids already answered are skipped; a half-written last line is dropped);
3. parse every answer with :func:`mixcritic.templates.parse_response` (an unparseable answer is
   kept and counts as wrong) and compute :func:`mixcritic.metrics.build_report`;
4. for a predictor that gives confidences (the measured critic), measure their calibration:
   expected calibration error and a reliability table (:func:`calibration_report`);
5. write ``report.json``, one CSV per table, and ``confusion.png`` (plus ``reliability.png``)
   when matplotlib is installed.

Under torchrun / accelerate launch, every process answers its share of the batches into
``predictions.rank<R>.jsonl``; after a barrier, rank 0 merges them into ``predictions.jsonl``
(in record order) and writes the one report, identical to a single-process run's.

Baseline answers are rendered to text with the response templates and parsed back, so models and
baselines go through exactly the same path.
"""

from __future__ import annotations

import csv
import io
import json
import os
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from mixcritic import __version__
from mixcritic.baselines import BASELINES
from mixcritic.critics import BUILTIN, critic_line
from mixcritic.errors import DatasetError, MixcriticError
from mixcritic.files import atomic_path, write_text_atomic
from mixcritic.labels import CATEGORIES, TARGET_STEMS, Label
from mixcritic.metrics import ACCURACY_KEYS, Case, build_report

CALIBRATION_BINS = 10
"""Equal-width confidence bins of the reliability table and the expected calibration error."""
from mixcritic.reference import PAPER

REPORT_SCHEMA_VERSION = 1
"""Bumped when the layout of ``report.json`` changes (see ``schemas/evaluate.schema.json``)."""

PREDICTIONS_FILE = "predictions.jsonl"
RUN_FILE = "evaluation.json"
PREDICTOR_FILE = "predictor.json"
REPORT_FILE = "report.json"
MUTED_NOTE = ("audio muted (--mute-audio): every clip was answered with digital silence and its usual prompt; "
              "compare with the unmuted report to see how much the critic listens")
TRAIN_SPLIT, VALIDATION_SPLIT = "train", "valid"

Progress = Callable[[Iterable, int, str], Iterable]
"""``progress(iterable, total, description)`` -> the same items (a Rich bar in the CLI). An item
that is a list (a batch) counts as its length, so ``total`` counts clips, not batches."""


@dataclass
class EvaluateConfig:
    """What ``mixcritic evaluate`` evaluates and where it writes."""

    data_dir: Path
    """Dataset folder written by ``mixcritic synth``."""
    model_dir: Path | str | None = None
    """Training run folder (``mixcritic train --out``, either engine) or ``builtin``; None with a baseline."""
    baseline: str | None = None
    """``loudness``, ``majority`` or ``random`` instead of a model."""
    split: str = "test"
    """Manifest split to evaluate."""
    limit: int | None = None
    """Evaluate this many records, stratified by category x target stem; None = all."""
    seed: int = 0
    """Seed of the ``--limit`` draw and of the random baseline."""
    out_dir: Path | None = None
    """Report folder; None = ``RUN/eval/<split>-<limit|all>-s<seed>`` or ``DATA/eval/<baseline>-<split>-...``."""
    batch_size: int = 8
    """Clips per ``generate`` call."""
    device: str = "auto"
    """Device for the model."""
    mute_audio: bool = False
    """Ablation: answer every clip with its audio replaced by digital silence (same prompt)."""

    def __post_init__(self) -> None:
        self.data_dir = Path(self.data_dir)
        if (self.model_dir is None) == (self.baseline is None):
            raise MixcriticError("give either --model RUN or --baseline NAME (exactly one)")
        if self.baseline is not None and self.baseline not in BASELINES:
            raise MixcriticError(f"--baseline {self.baseline!r} is unknown; use one of {', '.join(BASELINES)}")
        if self.model_dir is not None:
            self.model_dir = BUILTIN if str(self.model_dir) == BUILTIN else Path(self.model_dir)
        if self.mute_audio and self.model_dir is None:
            raise MixcriticError("--mute-audio needs --model RUN: baselines read the separate stems, not the audio the model hears")
        if self.limit is not None and self.limit < 1:
            raise MixcriticError(f"--limit must be >= 1 (got {self.limit})")
        if self.batch_size < 1:
            raise MixcriticError(f"--batch-size must be >= 1 (got {self.batch_size})")
        if self.out_dir is None:
            self.out_dir = default_out_dir(self)
        self.out_dir = Path(self.out_dir)

    @property
    def builtin(self) -> bool:
        """True when the built-in measured critic answers."""
        return self.model_dir == BUILTIN

    @property
    def predictor_name(self) -> str:
        """``model``, ``builtin`` or the baseline's name."""
        return self.baseline or (BUILTIN if self.builtin else "model")


def default_out_dir(config: EvaluateConfig) -> Path:
    """``RUN/eval/<split>-<n|all>-s<seed>`` for a run, ``DATA/eval/<builtin|baseline>-<split>-...`` otherwise."""
    name = f"{config.split}-{config.limit or 'all'}-s{config.seed}" + ("-muted" if config.mute_audio else "")
    if config.baseline or config.builtin:
        return config.data_dir / "eval" / f"{config.predictor_name}-{name}"
    return Path(config.model_dir) / "eval" / name


# ---------------------------------------------------------------------------------------------
# Choosing the records


def stratified_sample(records: Sequence[dict], limit: int | None, seed: int) -> list[dict]:
    """``limit`` records spread over (category, target stem) in proportion to their counts.

    Quotas use the largest-remainder rule (ties in category, stem order); records inside a cell
    are drawn with ``seed``. The result keeps manifest order. ``limit`` None or >= len: all.
    """
    import numpy as np

    if limit is None or limit >= len(records):
        return list(records)
    cells: dict[tuple[str, str], list[int]] = {}
    for index, record in enumerate(records):
        cells.setdefault((record["category"], record["target_stem"]), []).append(index)
    keys = sorted(cells, key=lambda k: (CATEGORIES.index(k[0]), TARGET_STEMS.index(k[1])))
    exact = {k: limit * len(cells[k]) / len(records) for k in keys}
    quota = {k: int(exact[k]) for k in keys}
    by_remainder = sorted(keys, key=lambda k: -(exact[k] - quota[k]))  # stable: ties keep cell order
    for k in by_remainder[: limit - sum(quota.values())]:
        quota[k] += 1
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for k in keys:
        chosen.extend(int(i) for i in rng.permutation(cells[k])[: quota[k]])
    return [records[i] for i in sorted(chosen)]


# ---------------------------------------------------------------------------------------------
# predictions.jsonl


def read_predictions(path: Path) -> dict[str, dict]:
    """Predictions already written, by id. A half-written last line is cut off the file.

    Every complete line ends with a newline, so whatever follows the last newline is the remains
    of an interrupted write. Raises DatasetError for a damaged line before that.
    """
    if not path.exists():
        return {}
    data = path.read_bytes()
    complete, _, partial = data.rpartition(b"\n")
    out: dict[str, dict] = {}
    for number, line in enumerate(complete.split(b"\n") if complete else [], start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            out[entry["id"]] = entry
        except (ValueError, KeyError, TypeError):
            raise DatasetError(f"{path}:{number}: damaged line; delete the file to start this evaluation over") from None
    if partial:
        with open(path, "r+b") as handle:
            handle.truncate(len(data) - len(partial))
    return out


def append_predictions(path: Path, entries: Iterable[dict]) -> None:
    """Append one JSON line per entry and flush it to disk."""
    with open(path, "a", encoding="utf-8") as handle:
        for entry in entries:
            handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def rank_predictions_path(path: Path, rank: int) -> Path:
    """Where process ``rank`` of a launched run appends its answers."""
    return path.with_name(f"{path.stem}.rank{rank}{path.suffix}")


def read_rank_predictions(path: Path) -> dict[str, dict]:
    """Answers in the per-process files of a launched run (any world size), by id."""
    out: dict[str, dict] = {}
    for shard_file in sorted(path.parent.glob(f"{path.stem}.rank*{path.suffix}")):
        out.update(read_predictions(shard_file))
    return out


def merge_rank_predictions(path: Path, records: Sequence[dict], done: dict[str, dict]) -> None:
    """Rewrite ``path`` with every answer in record order and delete the per-process files."""
    shards = sorted(path.parent.glob(f"{path.stem}.rank*{path.suffix}"))
    if not shards:
        return
    lines = [json.dumps(done[r["id"]], ensure_ascii=False) + "\n" for r in records if r["id"] in done]
    write_text_atomic(path, "".join(lines))
    for shard_file in shards:
        shard_file.unlink()


def batched(items: Sequence, size: int) -> Iterator[list]:
    """Consecutive slices of ``size`` (the last may be shorter)."""
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


# ---------------------------------------------------------------------------------------------
# Answering


def response_template_id(sample_id: str, label: Label) -> int:
    """Which response template a baseline's answer uses: a stable function of the sample id."""
    from mixcritic.templates import RESPONSE_TEMPLATES

    return zlib.crc32(sample_id.encode("utf-8")) % len(RESPONSE_TEMPLATES[label.category])


class BaselinePredictor:
    """Answers with a baseline's label rendered through the response templates."""

    def __init__(self, baseline, dataset) -> None:
        self.baseline = baseline
        self.dataset = dataset

    def describe(self) -> dict:
        """What the report says about the answering side."""
        return {"kind": "baseline", **self.baseline.describe()}

    def answer(self, records: list[dict]) -> list[dict]:
        """``{"id", "response", "detail"?}`` per record, in order."""
        from mixcritic.templates import render_response

        out = []
        for record in records:
            label, detail = self.baseline.predict(self.dataset, record)
            text = render_response(label, response_template_id(record["id"], label))
            out.append({"id": record["id"], "response": text, **({"detail": detail} if detail else {})})
        return out


def mute_clips(clips: list) -> list:
    """The ``--mute-audio`` ablation: each clip replaced by digital silence of the same length."""
    import numpy as np

    return [np.zeros_like(clip) for clip in clips]


class ModelPredictor:
    """Answers with a critic of either engine: each record becomes a Segment (normalised mix, separate
    stems, instruction) and the critic judges it; its confidence is kept when it gives one."""

    def __init__(self, critic, dataset, model_dir: Path | str, warn: Callable[[str], None] | None = None,
                 mute_audio: bool = False) -> None:
        from mixcritic.templates import TEMPLATE_VERSION

        self.critic = critic
        self.mute_audio = mute_audio
        self.dataset = dataset
        self.model_dir = model_dir
        settings = dict(critic.settings)
        rate_hz = int(settings.get("sample_rate_hz", dataset_rate_hz(dataset)))
        if rate_hz != dataset_rate_hz(dataset):
            raise MixcriticError(
                f"{model_dir}: the model expects {rate_hz} Hz audio but {dataset.root} holds {dataset_rate_hz(dataset)} Hz; "
                "evaluate on a dataset synthesised for this model"
            )
        trained_version = str(settings.get("template_version") or "")
        if warn and trained_version and trained_version != TEMPLATE_VERSION:
            warn(f"{model_dir} was trained on response templates v{trained_version}, this parser reads v{TEMPLATE_VERSION}; "
                 "answers in wording it does not know count as unparseable")
        target = settings.get("target_lufs")
        self.level_shift_db = 0.0 if target is None else float(target) - dataset_target_lufs(dataset)

    def describe(self) -> dict:
        """What the report says about the answering side: which critic, the run and its settings."""
        settings = {k: v for k, v in dict(self.critic.settings).items() if _jsonable(v)}
        return {"kind": "model", "name": "builtin" if self.model_dir == BUILTIN else "model", "engine": self.critic.engine,
                "critic": critic_line(self.model_dir, self.critic), "wiring_only": bool(settings.get("wiring_only", False)),
                "run_dir": str(self.model_dir), "settings": settings, "level_shift_db": self.level_shift_db,
                "mute_audio": self.mute_audio}

    def segment(self, record: dict):
        """The :class:`~mixcritic.critics.Segment` of a record: its normalised mix (shifted to the
        critic's target loudness), its separate stems at the gains in the mix, its instruction."""
        from mixcritic.audio import apply_gain_db
        from mixcritic.critics import Segment

        mix = self.dataset.render(record, normalize=True)
        if self.level_shift_db:
            mix = apply_gain_db(mix, self.level_shift_db)
        stems = self.dataset.render_stems(record)
        if self.mute_audio:  # the ablation: digital silence in, the same prompt
            mix, stems = mute_clips([mix])[0], dict(zip(stems, mute_clips(list(stems.values()))))
        return Segment(mix, stems, record["anchor_stem"], record["instruction"],
                       tuple(record.get("stems_present") or ()))

    def answer(self, records: list[dict]) -> list[dict]:
        """``{"id", "response", "confidence"?, "probabilities"?}`` per record, in order."""
        judgements = self.critic.judge([self.segment(r) for r in records])
        if len(judgements) != len(records):
            raise MixcriticError(f"{self.model_dir}: the critic returned {len(judgements)} answers for {len(records)} clips")
        out = []
        for record, judgement in zip(records, judgements):
            entry = {"id": record["id"], "response": judgement.text}
            if judgement.confidence is not None:
                entry["confidence"] = float(judgement.confidence)
            if judgement.probabilities:
                entry["probabilities"] = {k: float(v) for k, v in judgement.probabilities.items()}
            out.append(entry)
        return out


def _jsonable(value) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def dataset_rate_hz(dataset) -> int:
    """The dataset's sample rate (24 kHz unless ``dataset.json`` says otherwise)."""
    from mixcritic.labels import MODEL_SAMPLE_RATE_HZ

    return int(getattr(dataset, "sample_rate_hz", None) or dataset.info.get("sample_rate_hz", MODEL_SAMPLE_RATE_HZ))


def dataset_target_lufs(dataset) -> float:
    """Loudness the dataset normalises rendered mixes to."""
    from mixcritic.labels import DEFAULT_TARGET_LUFS

    value = getattr(dataset, "target_lufs", None)
    if value is None:
        value = dataset.info.get("options", {}).get("target_lufs", DEFAULT_TARGET_LUFS)
    return float(value)


def make_predictor(config: EvaluateConfig, dataset, progress: Progress | None = None, warn: Callable[[str], None] | None = None):
    """The model or baseline that answers, fitted or loaded as needed."""
    from mixcritic import baselines

    if config.model_dir is not None:
        from mixcritic.critics import load_critic

        return ModelPredictor(load_critic(config.model_dir, device=config.device), dataset, config.model_dir, warn,
                              config.mute_audio)
    if config.baseline == "majority":
        return BaselinePredictor(baselines.MajorityBaseline.fit(dataset, TRAIN_SPLIT), dataset)
    if config.baseline == "random":
        return BaselinePredictor(baselines.RandomBaseline.fit(dataset, TRAIN_SPLIT, config.seed), dataset)
    validation = VALIDATION_SPLIT if _has_records(dataset, VALIDATION_SPLIT) else None
    if warn and config.split in (TRAIN_SPLIT, validation):
        warn(f"the loudness baseline is fitted on '{config.split}' itself, so its scores there are optimistic; evaluate on 'test'")
    if validation is None and warn:
        warn(f"{config.data_dir} has no '{VALIDATION_SPLIT}' records: the loudness thresholds are fitted on '{TRAIN_SPLIT}'")
    fitted = baselines.LoudnessBaseline.fit(
        dataset, TRAIN_SPLIT, validation, dataset_rate_hz(dataset), baselines.LoudnessBaselineConfig(seed=config.seed), progress
    )
    return BaselinePredictor(fitted, dataset)


def _has_records(dataset, split: str) -> bool:
    try:
        return bool(dataset.records(split))
    except MixcriticError:
        return False


# ---------------------------------------------------------------------------------------------
# The run


def run_identity(config: EvaluateConfig, dataset) -> dict:
    """What must match for ``predictions.jsonl`` in ``out_dir`` to be resumed."""
    from mixcritic.templates import TEMPLATE_VERSION

    return {
        "data_dir": str(config.data_dir.resolve()),
        "dataset_options": dataset.info.get("options"),
        "split": config.split,
        "limit": config.limit,
        "seed": config.seed,
        "predictor": config.predictor_name,
        "model_dir": _model_identity(config.model_dir),
        "model_sha256": model_fingerprint(config.model_dir) if config.model_dir else None,
        "template_version": TEMPLATE_VERSION,
        "mute_audio": config.mute_audio,
    }


def _model_identity(model: Path | str | None) -> str | None:
    if model is None or model == BUILTIN:
        return model
    return str(Path(model).resolve())


def model_fingerprint(model: Path | str) -> str:
    """SHA-256 over the files of the model folder that ``load_critic`` would load (either engine).

    Keeps answers of a retrained (or resumed) run from being mixed with older ones. The built-in
    critic is fingerprinted by the files it saves as (its fitted numbers).
    """
    if model == BUILTIN:
        import tempfile

        from mixcritic.critics.measured import load_builtin, save_measured

        with tempfile.TemporaryDirectory(prefix="mixcritic-builtin-") as tmp:
            return _folder_sha256(save_measured(load_builtin(), Path(tmp)))
    from mixcritic.critics import model_folder

    return _folder_sha256(model_folder(Path(model)))


def _folder_sha256(folder: Path) -> str:
    """SHA-256 over every file below ``folder``: relative path and content."""
    import hashlib

    folder = Path(folder)
    if folder.is_file():
        folder = folder.parent
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode("utf-8") + b"\0")
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def check_or_write_identity(out_dir: Path, identity: dict) -> None:
    """Refuse to mix predictions of different runs in one folder."""
    path = out_dir / RUN_FILE
    if path.exists():
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            previous = None
        if previous != identity:
            diff = sorted(k for k in identity if not isinstance(previous, dict) or previous.get(k) != identity[k])
            raise MixcriticError(
                f"{out_dir} holds predictions of a different evaluation (differs in: {', '.join(diff) or 'format'}); "
                "pass another --out or delete that folder"
            )
        return
    write_text_atomic(path, json.dumps(identity, indent=2) + "\n")


def evaluate(config: EvaluateConfig, progress: Progress | None = None, warn: Callable[[str], None] | None = None,
             dataset=None) -> dict:
    """Answer the chosen records (resuming), score them, write the report files; return the report.

    ``dataset`` defaults to ``open_dataset(config.data_dir)``. Under a launcher each process
    answers its share of the batches; rank 0 merges and returns the report, the others None.
    """
    from mixcritic import distributed

    rank, world = distributed.rank_and_world()
    wrap = progress or (lambda it, total, desc: it)
    if dataset is None:
        from mixcritic.dataset import open_dataset

        dataset = open_dataset(config.data_dir)
    split_records = dataset.records(config.split)
    if not split_records:
        raise DatasetError(f"{config.data_dir}: split {config.split!r} has no records; choose another --split")
    records = stratified_sample(split_records, config.limit, config.seed)
    config.out_dir.mkdir(parents=True, exist_ok=True)
    check_or_write_identity(config.out_dir, run_identity(config, dataset))

    predictions_path = config.out_dir / PREDICTIONS_FILE
    done = read_predictions(predictions_path) | read_rank_predictions(predictions_path)
    todo = [r for r in records if r["id"] not in done]
    predictor_path = config.out_dir / PREDICTOR_FILE
    if todo or not predictor_path.exists():  # nothing left to answer: no need to load a model
        predictor = make_predictor(config, dataset, progress, warn)
        if warn:
            warn_if_fitted_on(predictor, records, config.split, warn)
        if rank == 0:
            write_text_atomic(predictor_path, json.dumps(predictor.describe(), indent=2) + "\n")
        batches = distributed.shard(list(batched(todo, config.batch_size)), rank, world)
        own_path = predictions_path if world == 1 else rank_predictions_path(predictions_path, rank)
        clips = sum(len(batch) for batch in batches)  # the bar counts clips (this process's share)
        for batch in wrap(batches, clips, f"Answering {len(todo)} of {len(records)} clips"):
            answers = predictor.answer(batch)
            append_predictions(own_path, answers)
            done.update((a["id"], a) for a in answers)
    distributed.barrier()
    if rank != 0:
        return None
    done |= read_rank_predictions(predictions_path)
    merge_rank_predictions(predictions_path, records, done)
    description = json.loads(predictor_path.read_text(encoding="utf-8"))
    report = assemble_report(config, dataset, records, done, description, len(split_records))
    write_report_files(report, config.out_dir)
    return report


def warn_if_fitted_on(predictor, records: Sequence[dict], split: str, warn: Callable[[str], None]) -> None:
    """Warn when the critic was fitted on songs it is now scored on (a measured critic records them)."""
    fitted = getattr(getattr(predictor, "critic", None), "fitted_tracks", frozenset())
    songs = {record["track"] for record in records}
    seen = songs & fitted
    if seen:
        warn(f"{len(seen)} of the {len(songs)} songs in split '{split}' were used to fit this critic, so its scores there "
             "are optimistic; evaluate it on songs it has not seen (e.g. a critic trained on this dataset, on 'test')")


def cases_from(records: Sequence[dict], predictions: dict[str, dict]) -> list[Case]:
    """Parse each record's answer into a :class:`~mixcritic.metrics.Case`."""
    from mixcritic.templates import parse_response

    cases = []
    for record in records:
        text = predictions[record["id"]]["response"]
        cases.append(Case(record["id"], record["category"], record["target_stem"], parse_response(text), record.get("anchor_stem")))
    return cases


def assemble_report(config: EvaluateConfig, dataset, records: Sequence[dict], predictions: dict[str, dict],
                    predictor: dict, split_size: int) -> dict:
    """The report dict (see ``schemas/evaluate.schema.json``)."""
    from mixcritic.templates import TEMPLATE_VERSION

    cases = cases_from(records, predictions)
    notes = []
    if predictor.get("sees_separate_stems"):
        notes.append(predictor["note"])
    if predictor.get("mute_audio"):
        notes.append(MUTED_NOTE)
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "mixcritic_version": __version__,
        "data": {
            "dir": str(config.data_dir),
            "split": config.split,
            "split_records": split_size,
            "dataset_seed": (dataset.info.get("options") or {}).get("seed"),
            "dataset_format_version": dataset.info.get("format_version"),
            "dataset_template_version": dataset.info.get("template_version"),
        },
        "sample": {"limit": config.limit, "seed": config.seed, "n": len(records)},
        "predictor": predictor,
        "template_version": TEMPLATE_VERSION,
        "metrics": build_report(cases),
        "calibration": calibration_report(cases, predictions),
        "paper": PAPER,
        "notes": notes,
    }


def calibration_report(cases: Sequence[Case], predictions: dict[str, dict], bins: int = CALIBRATION_BINS) -> dict | None:
    """How well the answers' confidences match how often they are right; None when none has one.

    An answer counts as right when stem and direction are both right (for a no-error clip: it says
    no adjustment is needed), the paper's "Both". ``expected_calibration_error`` is the mean gap
    between confidence and accuracy over ``bins`` equal-width bins, weighted by their counts.
    """
    from mixcritic.metrics import both_correct, expected_calibration_error, reliability_table

    pairs = [(float(predictions[c.sample_id]["confidence"]), both_correct(c))
             for c in cases if predictions[c.sample_id].get("confidence") is not None]
    if not pairs:
        return None
    confidences, correct = [p[0] for p in pairs], [p[1] for p in pairs]
    return {
        "n": len(pairs),
        "correct_means": "both",
        "bins": bins,
        "mean_confidence": sum(confidences) / len(pairs),
        "accuracy": sum(correct) / len(pairs),
        "expected_calibration_error": expected_calibration_error(confidences, correct, bins),
        "reliability": reliability_table(confidences, correct, bins),
    }


# ---------------------------------------------------------------------------------------------
# Writing




def table_csv(section: dict, paper_section: dict | None, label: str) -> str:
    """One accuracy table (rows + macro) as CSV, with the paper's figures beside ours."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    keys = [*ACCURACY_KEYS, "unparseable"]
    paper_keys = ["both", "stem", "direction", "magnitude"]
    writer.writerow([label, "n", "n_flawed", *keys, *(f"paper_{k}" for k in paper_keys)])
    paper_rows = (paper_section or {}).get("rows", {})
    for name, row in [*section["rows"].items(), ("macro", section["macro"])]:
        paper = paper_rows.get(name) if name != "macro" else (paper_section or {}).get("macro")
        writer.writerow([name, row["n"], row["n_flawed"], *(_fmt(row[k]) for k in keys),
                         *(_fmt((paper or {}).get(k)) for k in paper_keys)])
    return buffer.getvalue()


def tasks_csv(tasks: dict, paper_tasks: dict) -> str:
    """The FP / FN / precision / recall / F1 table as CSV, with the paper's figures."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    keys = ["tp", "fp", "fn", "precision", "recall", "f1", "fp_unparseable", "fn_unparseable"]
    paper_keys = ["fp", "fn", "precision", "recall", "f1"]
    writer.writerow(["task", *keys, *(f"paper_{k}" for k in paper_keys)])
    for name, row in tasks.items():
        writer.writerow([name, *(_fmt(row[k]) for k in keys), *(_fmt(paper_tasks.get(name, {}).get(k)) for k in paper_keys)])
    return buffer.getvalue()


def confusion_csv(confusion: dict) -> str:
    """The category confusion matrix as CSV (rows = truth, columns = answer)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["truth \\ answer", *confusion["columns"]])
    for name, counts in zip(confusion["rows"], confusion["counts"]):
        writer.writerow([name, *counts])
    return buffer.getvalue()


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6f}"
    return str(value)


def write_report_files(report: dict, out_dir: Path) -> list[Path]:
    """``report.json``, ``by_category.csv``, ``by_stem.csv``, ``by_direction.csv``, ``tasks.csv``,
    ``confusion.csv`` and, with matplotlib, ``confusion.png``. Returns the paths written."""
    metrics, paper = report["metrics"], report["paper"]
    files = {
        REPORT_FILE: json.dumps(report, indent=2) + "\n",
        "by_category.csv": table_csv(metrics["by_category"], paper["by_category"], "category"),
        "by_stem.csv": table_csv(metrics["by_stem"], paper["by_stem"], "stem"),
        "by_direction.csv": table_csv(metrics["by_direction"], paper["by_direction"], "direction"),
        "tasks.csv": tasks_csv(metrics["tasks"], paper["tasks"]),
        "confusion.csv": confusion_csv(metrics["confusion"]),
    }
    calibration = report.get("calibration")
    if calibration:
        files["reliability.csv"] = reliability_csv(calibration)
    written = []
    for name, text in files.items():
        write_text_atomic(out_dir / name, text)
        written.append(out_dir / name)
    png = write_confusion_png(metrics["confusion"], out_dir / "confusion.png", report["predictor"].get("name", ""))
    if png:
        written.append(png)
    if calibration:
        png = write_reliability_png(calibration, out_dir / "reliability.png", report["predictor"].get("name", ""))
        if png:
            written.append(png)
    return written


def reliability_csv(calibration: dict) -> str:
    """The reliability table as CSV: one row per confidence bin."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["low", "high", "count", "mean_confidence", "accuracy"])
    for row in calibration["reliability"]:
        writer.writerow([_fmt(row["low"]), _fmt(row["high"]), row["count"], _fmt(row["mean_confidence"]), _fmt(row["accuracy"])])
    return buffer.getvalue()


def write_reliability_png(calibration: dict, path: Path, title: str) -> Path | None:
    """Reliability diagram (accuracy against confidence per bin, the diagonal is perfect calibration);
    None (nothing written) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    rows = [r for r in calibration["reliability"] if r["count"]]
    fig, ax = plt.subplots(figsize=(4.8, 4.5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    width = calibration["reliability"][0]["high"] - calibration["reliability"][0]["low"]
    ax.bar([r["low"] for r in rows], [r["accuracy"] for r in rows], width=width, align="edge", alpha=0.7,
           edgecolor="black", label="accuracy (Both)")
    ax.plot([r["mean_confidence"] for r in rows], [r["accuracy"] for r in rows], "o", color="black", markersize=3)
    for r in rows:
        ax.text(r["low"] + width / 2, min(r["accuracy"] + 0.02, 0.97), str(r["count"]), ha="center", fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ece = calibration["expected_calibration_error"]
    ax.set_title(f"Reliability ({title}), ECE {100 * ece:.1f} %" if title else f"Reliability, ECE {100 * ece:.1f} %")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path


def write_confusion_png(confusion: dict, path: Path, title: str) -> Path | None:
    """Row-normalised confusion heat map; None (nothing written) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    import numpy as np

    counts = np.asarray(confusion["counts"], dtype=np.float64)
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(confusion["columns"])), [c.replace("_", " ") for c in confusion["columns"]], rotation=30)
    ax.set_yticks(range(len(confusion["rows"])), [r.replace("_", " ") for r in confusion["rows"]])
    ax.set_xlabel("answer")
    ax.set_ylabel("truth")
    ax.set_title(f"Category confusion ({title})" if title else "Category confusion")
    for (i, j), count in np.ndenumerate(counts):
        ax.text(j, i, f"{int(count)}\n{shares[i, j]:.0%}", ha="center", va="center", fontsize=7,
                color="white" if shares[i, j] > 0.5 else "black")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)
    return path
