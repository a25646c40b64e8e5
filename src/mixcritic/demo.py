"""`mixcritic demo`: the whole pipeline, offline, on toy songs, in a few minutes on a CPU.

Stages (each reported as it runs):

1. toy stems: procedural songs in the MUSDB18-HQ layout (:func:`mixcritic.toy.write_toy_tree`),
   their stems mixed at the typical real balance the built-in critic knows;
2. a flawed session: one held-out test song's stems copied under studio-style file names
   ("Bass Guitar.wav", "Lead Vox.wav", ...) with a known gain error on one stem (+9 dB bass);
3. built-in critic: the flawed session judged by the measured critic shipped with mixcritic
   (seconds), exactly as ``mixcritic critique`` does with no model configured;
4. synth: a small dataset of flawed mixes from the training songs;
5. train: the ``tiny`` preset (log-mel front end + tiny random-init Qwen2, 750 steps of 16 clips:
   about 3 minutes on 2 CPU cores, see docs/training.md);
6. critique: the flawed session with the tiny run, as ``mixcritic critique --model RUN`` does;
and each critic's verdict is printed next to the injected flaw.

The tiny model is a small demo, not a trained critic: it listens (34-63 % macro Both on held-out toy songs of three toy datasets, 10-13 % muted) but it knows only toy songs.
"""

from __future__ import annotations

import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from mixcritic.critics import BUILTIN
from mixcritic.files import atomic_path
from mixcritic.errors import MixcriticError
from mixcritic.labels import GAIN_RANGE_DB, TARGET_STEMS
from mixcritic.options import TINY_MUTED_SCORES, TINY_SCORES

SESSION_FILE_NAMES: dict[str, str] = {
    "bass": "Bass Guitar.wav",
    "drums": "Drum Kit.wav",
    "other": "Keys and Pads.wav",
    "vocals": "Lead Vox.wav",
}
"""File names of the flawed session's stems: studio-style, found through the alias rules."""

DISCLAIMER = (
    "The tiny model is a small demo, not a trained critic: a log-mel front end and a tiny random-init "
    f"Qwen2 trained for a few minutes on a few toy songs. It does listen -- it scored {TINY_SCORES} of three "
    f"toy datasets against {TINY_MUTED_SCORES} with the audio muted (docs/training.md) -- "
    "but it has heard only toy songs and is at chance on real music. Real advice needs `mixcritic train` on MUSDB18-HQ with the paper preset on a GPU."
)


@dataclass(frozen=True)
class DemoConfig:
    """Options of ``mixcritic demo``."""

    workdir: Path
    """Folder holding everything the demo writes (toy stems, session, dataset, run)."""
    seed: int = 0
    """Seed of the toy songs, the dataset and training."""
    tracks: int = 8
    """Toy songs to generate (the last one is held out and flawed). Eight, not four: with three
    training songs the tiny run named the wrong stem on the flawed song; with seven it found it."""
    seconds: float = 24.0
    """Length of each toy song, seconds."""
    flaw_stem: str = "bass"
    """Stem that gets the injected gain error."""
    flaw_gain_db: float = 9.0
    """Injected gain error, dB (+9 dB = very loud)."""
    anchor_stem: str = "drums"
    """Stem whose level is taken as right when critiquing."""
    train_steps: int | None = None
    """Training steps; None keeps the tiny preset's (750 steps of 16 clips; about 3 minutes on 2 CPU cores)."""

    def __post_init__(self) -> None:
        if self.tracks < 2:
            raise MixcriticError(f"demo tracks {self.tracks}: needs at least 2 (train and held-out)")
        if self.seconds < 10.0:
            raise MixcriticError(f"demo seconds {self.seconds}: needs at least 10 s per song")
        if self.flaw_stem not in TARGET_STEMS or self.anchor_stem not in TARGET_STEMS or self.flaw_stem == self.anchor_stem:
            raise MixcriticError("demo flaw and anchor must be two different stems of bass, drums, vocals")
        if self.flaw_gain_db == 0:
            raise MixcriticError("demo flaw_gain_db must not be 0")
        if self.train_steps is not None and self.train_steps < 1:
            raise MixcriticError(f"demo train_steps {self.train_steps}: must be at least 1")


def flaw_category(gain_db: float) -> str:
    """The category a gain error falls in (paper's ranges; a boundary goes to the milder one)."""
    for category in ("no_error", "quiet", "loud", "very_quiet", "very_loud"):
        low, high = GAIN_RANGE_DB[category]
        if low <= gain_db <= high:
            return category
    raise MixcriticError(f"gain {gain_db} dB is outside the flaw ranges (-12..+12 dB)")


def write_flawed_session(track_dir: Path, out_dir: Path, stem: str, gain_db: float) -> Path:
    """Copy a MUSDB-layout track's stems to ``out_dir`` under :data:`SESSION_FILE_NAMES`, with
    ``gain_db`` applied to ``stem`` (float WAV, so nothing clips). Returns ``out_dir``."""
    import soundfile as sf

    from mixcritic.audio import apply_gain_db, read_audio

    out_dir.mkdir(parents=True, exist_ok=True)
    for name, file_name in SESSION_FILE_NAMES.items():
        audio, rate_hz = read_audio(track_dir / f"{name}.wav")
        if name == stem:
            audio = apply_gain_db(audio, gain_db)
        with atomic_path(out_dir / file_name) as tmp:
            sf.write(str(tmp), audio, rate_hz, subtype="FLOAT", format="WAV")
    return out_dir


@dataclass
class DemoResult:
    """What the demo did and what the model said."""

    config: DemoConfig
    session_dir: Path
    run_dir: Path
    injected: str
    """The injected flaw, in words."""
    expected: str
    """The advice a perfect critic would give."""
    report: object
    """The :class:`mixcritic.critique.CritiqueReport` of the flawed session by the tiny run."""
    builtin_report: object = None
    """The same session judged by the built-in measured critic."""
    stage_s: dict[str, float] = field(default_factory=dict)
    """Wall time of each stage, seconds."""


class Stages:
    """Runs named stages, reporting each start and its time through ``log``."""

    def __init__(self, log: Callable[[str], None], total: int) -> None:
        self.log = log
        self.total = total
        self.seconds: dict[str, float] = {}

    @contextmanager
    def stage(self, number: int, name: str, what: str):
        self.log(f"[{number}/{self.total}] {name}: {what}")
        start = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - start
        self.log(f"      done in {self.seconds[name]:.1f} s")


def run_demo(config: DemoConfig, log: Callable[[str], None] = print) -> DemoResult:
    """Run every stage under ``config.workdir``; returns the critique of the flawed song."""
    from mixcritic.critique import CritiqueConfig, load_model, run_critique
    from mixcritic.labels import CORRECTION_DB
    from mixcritic.session import open_session
    from mixcritic.toy import write_toy_tree

    work = config.workdir
    work.mkdir(parents=True, exist_ok=True)
    stages = Stages(log, 6)
    category = flaw_category(config.flaw_gain_db)
    with _cache_in(work / "cache"):
        with stages.stage(1, "toy stems", f"{config.tracks} procedural songs of {config.seconds:g} s"):
            tracks = write_toy_tree(work / "toy-stems", config.tracks, config.seconds, config.seed)
        held_out = [t for t in tracks if t.parent.name == "test"][-1]
        with stages.stage(2, "flawed session", f"{held_out.name} (held out of training), {config.flaw_stem} {config.flaw_gain_db:+g} dB"):
            session_dir = write_flawed_session(held_out, work / "session", config.flaw_stem, config.flaw_gain_db)
        with stages.stage(3, "built-in critic", f"{session_dir} --anchor {config.anchor_stem} (measured, no training)"):
            session = open_session(session_dir, config.anchor_stem)
            for f in session.files:
                log(f"      {f.stem:<7} <- {f.path.name} ({f.how})")
            builtin = load_model(BUILTIN)
            builtin_report = run_critique(session, builtin, CritiqueConfig.from_settings(builtin.settings), BUILTIN, "cpu")
        with stages.stage(4, "synth", "dataset of flawed mixes from the training songs"):
            data_dir = _synth(work / "toy-stems", work / "data", config.seed)
        with stages.stage(5, "train", "tiny preset on CPU (log-mel front end + tiny Qwen2)"):
            run_dir = _train(data_dir, work / "run", config.seed, config.train_steps)
        with stages.stage(6, "critique", f"{session_dir} --anchor {config.anchor_stem} --model {run_dir}"):
            critic = load_model(run_dir, device="cpu")
            report = run_critique(session, critic, CritiqueConfig.from_settings(critic.settings), run_dir, "cpu")
    expected = f"{config.flaw_stem}: {_words(CORRECTION_DB[category])}" if CORRECTION_DB[category] else "no change"
    injected = f"{config.flaw_stem} {config.flaw_gain_db:+g} dB ({category.replace('_', ' ')}) against {config.anchor_stem}"
    return DemoResult(config, session_dir, run_dir, injected, expected, report, builtin_report, stages.seconds)


def train_tiny_run(
    work: Path, seed: int = 0, tracks: int = 4, seconds: float = 24.0, log: Callable[[str], None] = print,
    train_steps: int | None = None,
) -> Path:
    """Toy stems -> synth -> train ``--preset tiny`` under ``work``; returns the run folder.

    The same stages as the demo without the flawed session; used by the benchmark and tests.
    """
    from mixcritic.toy import write_toy_tree

    work.mkdir(parents=True, exist_ok=True)
    stages = Stages(log, 3)
    with _cache_in(work / "cache"):
        with stages.stage(1, "toy stems", f"{tracks} procedural songs of {seconds:g} s"):
            write_toy_tree(work / "toy-stems", tracks, seconds, seed)
        with stages.stage(2, "synth", "dataset of flawed mixes"):
            data_dir = _synth(work / "toy-stems", work / "data", seed)
        with stages.stage(3, "train", "tiny preset on CPU"):
            return _train(data_dir, work / "run", seed, train_steps)


def model_verdict(report, stem: str) -> str:
    """One line for what the model said overall, preferring its consensus on ``stem``."""
    summary = report.summary
    for consensus in summary.stems:
        if consensus.stem == stem:
            return consensus.text
    if summary.stems:
        return summary.stems[0].text
    if summary.balanced:
        return f"balanced in {summary.balanced} of {summary.judged} segments"
    if summary.judged:
        return f"no usable advice: {summary.unparsed} of {summary.judged} answers could not be parsed"
    return "nothing: no segment could be judged"


def model_agrees(report, stem: str, category: str, with_range: bool = True) -> bool:
    """True when the model's most frequent consensus names ``stem`` with ``category``'s direction
    (and, ``with_range``, its correction range) in a majority of the judged segments."""
    from mixcritic.labels import direction_of

    stems = report.summary.stems
    if not stems:
        return category == "no_error" and report.summary.balanced * 2 > report.summary.judged
    top = stems[0]
    direction = direction_of(category)
    wanted = {"decrease": "too_loud", "increase": "too_quiet"}.get(direction or "", "")
    range_ok = top.category == category or not with_range
    return top.stem == stem and top.verdict == wanted and range_ok and top.segments * 2 > top.of_segments


def agreement_words(report, stem: str, category: str) -> str:
    """``yes`` (stem, direction and range), ``stem and direction (not the range)``, or ``no``."""
    if model_agrees(report, stem, category):
        return "yes"
    if model_agrees(report, stem, category, with_range=False):
        return "stem and direction (not the range)"
    return "no"


def _words(correction_db: tuple[int, int]) -> str:
    from mixcritic.critique import correction_words

    return correction_words(correction_db)


@contextmanager
def _cache_in(folder: Path):
    """Point ``MIXCRITIC_CACHE_DIR`` (tiny base models) into the work dir unless the user set it."""
    if os.environ.get("MIXCRITIC_CACHE_DIR"):
        yield
        return
    os.environ["MIXCRITIC_CACHE_DIR"] = str(folder)
    try:
        yield
    finally:
        os.environ.pop("MIXCRITIC_CACHE_DIR", None)


def _synth(stems_root: Path, out_dir: Path, seed: int) -> Path:
    """``mixcritic synth STEMS --out DATA`` with its defaults (full flaw grid, 10 s chunks)."""
    from mixcritic.synthesis import SynthConfig, synthesize

    synthesize(stems_root, out_dir, SynthConfig(seed=seed), workers=1, show_progress=False)
    return out_dir


def _train(data_dir: Path, out_dir: Path, seed: int, max_steps: int | None = None) -> Path:
    """``mixcritic train DATA --out RUN --preset tiny --device cpu`` (resumes an interrupted run)."""
    from mixcritic.critics.llm.checkpoint import is_complete
    from mixcritic.critics.llm.train import TrainRequest, run_training

    if is_complete(out_dir / "model"):
        return out_dir
    resume = out_dir.is_dir() and any(out_dir.glob("checkpoint-*/COMPLETE"))
    overrides = (("seed", seed),) + ((("max_steps", max_steps),) if max_steps is not None else ())
    request = TrainRequest(
        data_dir=data_dir, out_dir=out_dir, preset="tiny", train_overrides=overrides, resume=resume,
        device="cpu", progress=True,
    )
    run_training(request)
    return out_dir
