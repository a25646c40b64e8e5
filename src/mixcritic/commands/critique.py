"""`mixcritic critique`: per-segment gain advice on a folder of stems or a mixed file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from mixcritic.console import print_json
from mixcritic.options import TINY_SCORES, WIRING_ONLY, DeviceOption, JsonOption

if TYPE_CHECKING:
    from rich.console import Console

    from mixcritic.critique import CritiqueReport
    from mixcritic.session import Session

InputArgument = Annotated[
    Optional[Path],
    typer.Argument(
        metavar="STEMS_DIR|MIX_FILE",
        help="A folder of stems (bass/drums/vocals/... found by file name) or one mixed audio file.",
        show_default=False,
    ),
]
AnchorOption = Annotated[
    Optional[str],
    typer.Option("--anchor", "-a", help="The stem whose level is right: bass, drums or vocals (aliases like vox work).", show_default=False),
]
StemOption = Annotated[
    Optional[list[str]],
    typer.Option(
        "--stem", metavar="NAME=PATH",
        help="Assign a file to a stem, overriding the name guess (repeatable; several files for one stem are summed).",
        show_default=False,
    ),
]
StemsPresentOption = Annotated[
    Optional[str],
    typer.Option("--stems-present", help="Mixed-file mode: stems in the mix, comma-separated (default: bass,drums,other,vocals).", show_default=False),
]
ModelOption = Annotated[
    Optional[str],
    typer.Option(
        "--model", metavar="RUN|builtin",
        help="Run folder written by `mixcritic train` (measured or LLM), or `builtin` for the measured critic shipped "
        "with mixcritic (default: $MIXCRITIC_MODEL, else <user data dir>/model, else builtin).",
        show_default=False,
    ),
]
EncoderOption = Annotated[Optional[str], typer.Option("--encoder", help="Local folder (or hub id) of the audio encoder, overriding the checkpoint's.", show_default=False)]
LlmOption = Annotated[Optional[str], typer.Option("--llm", help="Local folder (or hub id) of the base LLM, overriding the checkpoint's.", show_default=False)]
BatchOption = Annotated[int, typer.Option("--batch-size", min=1, help="Segments generated together.")]
SegmentOverride = Annotated[
    Optional[float],
    typer.Option("--segment-s", min=1.0, help="Segment length in seconds (default: the critic's, as it was trained).", show_default=False),
]

PadOption = Annotated[
    bool,
    typer.Option("--pad", help="Accept stems much shorter than the others (under 1 s or half the longest) and pad them with silence."),
]

ExportOption = Annotated[
    Optional[Path],
    typer.Option(
        "--export", metavar="DIR",
        help="Also write each judged segment's mix and the same with the advice applied (WAV), "
        "and with matplotlib a PNG of the stem levels, into DIR.",
        show_default=False,
    ),
]

_VERDICT_STYLE = {
    "very_loud": "bold red", "very_quiet": "bold red", "loud": "yellow", "quiet": "yellow",
    "balanced": "green", "silent": "dim", "anchor_inactive": "dim", "no_target": "dim", "unparsed": "magenta",
    "stem_inactive": "dim",
}


def critique(
    source: InputArgument = None,
    anchor: AnchorOption = None,
    stem: StemOption = None,
    stems_present: StemsPresentOption = None,
    model: ModelOption = None,
    encoder: EncoderOption = None,
    llm: LlmOption = None,
    device: DeviceOption = "auto",
    batch_size: BatchOption = 8,
    segment_s: SegmentOverride = None,
    pad: PadOption = False,
    export: ExportOption = None,
    json_output: JsonOption = False,
) -> None:
    """Say, per segment, which stem is out of balance against the anchor and by how many dB.

    Stems are found by file name (vox, lead vocal -> vocals; kit, kick -> drums; bass guitar, sub
    -> bass; anything else -> other). Progress and warnings go to stderr.

    With no model configured, the built-in measured critic judges (it needs the separate stems;
    a single mixed file needs an LLM run). The output says which critic spoke.

    Examples:

    \b
      mixcritic critique ./stems --anchor drums
      mixcritic critique mix.wav --anchor vocals --stems-present bass,drums,vocals
      mixcritic critique ./stems --anchor vocals --stem bass=DI/Bass.wav --json
      mixcritic critique ./stems --anchor drums --export advice
    """
    from mixcritic.console import info, warn
    from mixcritic.critique import resolve_model
    from mixcritic.session import open_session

    if export is not None:
        from mixcritic.export import check_export_dir

        check_export_dir(export)
    with ProgressBar("Reading audio", None) as advance:
        session = open_session(source, anchor, stem, stems_present, progress=lambda path: advance(1), pad=pad)
    report_session(session)
    result = critique_with_model(session, resolve_model(model), device, encoder, llm, batch_size, segment_s, export)
    if json_output:
        info(result.settings["critic"])  # the table prints this line itself; with --json it goes to stderr
        if result.settings["wiring_only"]:
            warn(WIRING_ONLY_CAVEAT)
        print_json(result.to_json())
    else:
        from mixcritic.console import stdout

        print_report(result, stdout)
    info(f"Done: {len(result.segments)} segment(s).")


def write_export(result: "CritiqueReport", folder: Path, typical_db: dict | None = None) -> None:
    """``--export``: the per-segment WAVs and the level plot, reported on stderr."""
    from mixcritic.console import info, warn
    from mixcritic.export import export_report

    exported = export_report(result, folder, typical_db)
    for note in exported.notes:
        warn(note)
    plot = f" and {exported.plot.name}" if exported.plot else ""
    info(f"Exported {len(exported.files)} judged segment(s) to {folder}: WAVs (mix / fixed){plot}; see export.json")


WIRING_ONLY_CAVEAT = (
    f"{WIRING_ONLY}: it has heard only toy songs ({TINY_SCORES}, chance on real music), so its advice is not a "
    "trained critic's; use the built-in critic (no --model) or a run trained on real data"
)


def critique_with_model(
    session: "Session", model: "str | Path", device: str, encoder: str | None, llm: str | None,
    batch_size: int, segment_s: float | None, export: Path | None = None,
) -> "CritiqueReport":
    """Load the critic, warn about setting mismatches, run every segment with a progress bar;
    with ``export``, write the ``--export`` files (the critic may shade its typical ranges)."""
    from mixcritic.console import spinner, warn
    from mixcritic.critique import (
        CritiqueConfig, check_critic_fits_session, check_template_version, critic_device, load_model, num_segments,
        run_critique,
    )

    label = "Loading the built-in critic" if str(model) == "builtin" else f"Loading the model from {model}"
    with spinner(label):
        critic = load_model(model, device, encoder, llm)
    check_critic_fits_session(session, critic)
    config = CritiqueConfig.from_settings(critic.settings, segment_s, batch_size)
    trained_s = critic.settings.get("segment_s")
    if segment_s is not None and trained_s is not None and abs(segment_s - float(trained_s)) > 1e-9:
        warn(f"--segment-s {segment_s:g} differs from the {float(trained_s):g} s segments the model was trained on")
    mismatch = check_template_version(critic.settings)
    if mismatch:
        warn(mismatch)
    if session.duration_s < config.segment_s:
        warn(
            f"the song is {session.duration_s:.2f} s, shorter than one {config.segment_s:g} s segment; "
            "it is padded with silence to the segment length"
        )
    with ProgressBar("Critiquing segments", num_segments(session, config)) as advance:
        report = run_critique(session, critic, config, model, critic_device(critic, "cpu"), advance)
    if export is not None:
        write_export(report, export, typical_range_db(critic, session.anchor_stem))
    return report


def typical_range_db(critic, anchor_stem: str) -> dict | None:
    """``{stem: (low_db, high_db)}``: the level against the anchor a critic expects, when it offers
    one (an optional ``typical_range_db(anchor_stem)`` method); None otherwise (no shading)."""
    method = getattr(critic, "typical_range_db", None)
    return method(anchor_stem) if callable(method) else None


class ProgressBar:
    """A Rich progress bar on stderr as a context manager yielding ``advance(n)``."""

    def __init__(self, label: str, total: int | None) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from mixcritic.console import stderr

        self._bar = Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=stderr,
                             transient=True, disable=not stderr.is_terminal)  # transient: nothing to keep in a log
        self._task = self._bar.add_task(label, total=total)

    def __enter__(self):
        self._bar.start()
        return lambda n: self._bar.advance(self._task, n)

    def __exit__(self, *exc) -> None:
        self._bar.stop()


def report_session(session: "Session") -> None:
    """Warnings and notes about how the input was read, on stderr."""
    from mixcritic.console import info, warn
    from mixcritic.session import SILENT_REASON

    if session.mode == "mix":
        f = session.files[0]
        info(f"Mixed file {f.path.name}: {f.duration_s:.2f} s, {f.rate_hz} Hz, {f.channels} ch; "
             f"stems present: {', '.join(session.stems_present)}; anchor: {session.anchor_stem}")
        return
    for stem in session.audio:
        names = [f.path.name for f in session.files if f.stem == stem]
        note = " (summed)" if len(names) > 1 else ""
        info(f"{stem:<7} <- {', '.join(names)}{note}")
    for f in session.files:
        if f.how.startswith("ambiguous"):
            warn(f"{f.path.name}: name is {f.how}; summed into other — use --stem NAME={f.path.name} to assign it")
        if f.padded_s:
            warn(f"{f.path.name} is {f.padded_s:.3f} s shorter than the longest stem; padded with silence at the end")
    for f in session.ignored:
        if f.reason == SILENT_REASON:
            warn(f"{f.path.name} is {f.reason}")
        else:
            info(f"ignored {f.path.name}: {f.reason}")
    info(f"anchor: {session.anchor_stem}; length {session.duration_s:.2f} s")


def _time(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60.0)
    return f"{int(minutes)}:{rest:04.1f}"


def verdict_label(result) -> tuple[str, str]:
    """Text and Rich style of a segment's verdict column."""
    if result.verdict in ("too_loud", "too_quiet"):
        words = {"loud": "too loud", "very_loud": "much too loud", "quiet": "too quiet", "very_quiet": "much too quiet"}
        return f"{result.stem} {words[result.category]}", _VERDICT_STYLE[result.category]
    words = {
        "balanced": "balanced", "silent": "silent (skipped)", "anchor_inactive": "no anchor (skipped)",
        "no_target": "nothing to compare (skipped)", "unparsed": "not understood",
        "stem_inactive": f"{result.stem} silent here (not judged)",
    }
    return words[result.verdict], _VERDICT_STYLE[result.verdict]


def advice_text(result) -> str:
    """The advice column: the answer *as parsed*, in the templates' words, so that it says exactly
    what the verdict and correction columns say (an answer such as "a bit too hot ... 6 to 12 dB"
    parses as much too loud, and is shown as such). The verbatim answer is in ``--json``; an
    unparsed answer is shown verbatim. Stems silent in the segment are named."""
    from mixcritic.labels import Label
    from mixcritic.templates import render_response

    if result.verdict in ("too_loud", "too_quiet", "balanced"):
        label = Label(result.category, result.stem, tuple(result.correction_db) if result.correction_db else None)
        text = render_response(label, 0)
    elif result.verdict == "unparsed":
        text = result.text or ""
    elif result.verdict == "stem_inactive":
        text = f"The answer was about the {result.stem}, which does not play here; not used."
    else:
        text = ""
    silent = [stem for stem in result.not_judged if not (result.verdict == "stem_inactive" and stem == result.stem)]
    if silent:
        text = f"{text} ({', '.join(silent)} silent here: not judged)".strip()
    return text


def correction_label(result) -> str:
    """Text of a segment's correction column."""
    from mixcritic.critique import correction_words

    if result.correction_db:
        return correction_words(result.correction_db)
    return "none" if result.verdict == "balanced" else "—"


def confidence_label(result) -> str:
    """Text of a segment's confidence column: ``83 %``, or ``—`` when there is none."""
    return "—" if result.confidence is None else f"{round(100 * result.confidence)} %"


def print_report(report: "CritiqueReport", console: "Console") -> None:
    """Which critic spoke, the per-segment table, then the summary and any raw unparsed answers."""
    from rich.table import Table
    from rich.text import Text

    console.print(Text(report.settings["critic"]), soft_wrap=True)
    if report.settings["wiring_only"]:
        console.print(Text(f"Caveat: {WIRING_ONLY_CAVEAT}.", style="bold yellow"), soft_wrap=True)
    with_confidence = any(r.confidence is not None for r in report.segments)
    title = f"mixcritic — {report.session.path.name if report.session.path else 'session'} (anchor: {report.session.anchor_stem})"
    table = Table(title=title, show_lines=False)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("time", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    table.add_column("advice", overflow="fold", ratio=1)
    table.add_column("correction", no_wrap=True)
    if with_confidence:
        table.add_column("confidence", justify="right", no_wrap=True)
    for r in report.segments:
        verdict, style = verdict_label(r)
        time_range = f"{_time(r.start_s)}–{_time(r.end_s)}" + (" (padded)" if r.padded_s else "")
        cells = [str(r.index + 1), time_range, Text(verdict, style=style), Text(advice_text(r)), correction_label(r)]
        table.add_row(*cells, *([confidence_label(r)] if with_confidence else []))
    console.print(table)
    if any(r.text and r.verdict in ("too_loud", "too_quiet", "balanced") and r.text != advice_text(r) for r in report.segments):
        console.print(Text("Advice is each answer as parsed; --json has the critic's words verbatim.", style="dim"), soft_wrap=True)
    console.print(Text("Summary", style="bold"))
    for line in report.summary.lines:
        console.print(Text(f"  {line}"), soft_wrap=True)
    for r in report.segments:
        if r.verdict == "unparsed":
            console.print(Text(f"  could not parse segment {r.index + 1} ({_time(r.start_s)}–{_time(r.end_s)}): {r.text!r}", style="magenta"), soft_wrap=True)
