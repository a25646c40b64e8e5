"""`mixcritic evaluate`: the paper's tables for a trained model or a baseline, beside the paper's."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mixcritic.console import print_json
from mixcritic.options import TINY_SCORES, WIRING_ONLY, DataArgument, DeviceOption, JsonOption, SeedOption

ModelOption = Annotated[
    Optional[str],
    typer.Option(
        "--model", metavar="RUN|builtin",
        help="Training run folder (`mixcritic train --out RUN`, measured or LLM), or `builtin` for the measured critic "
        "shipped with mixcritic. Not needed with --baseline.",
        show_default=False,
    ),
]
BaselineOption = Annotated[
    Optional[str],
    typer.Option(
        "--baseline",
        help=(
            "Score a non-learned critic instead of a model: loudness (measures the separate stems, which the model "
            "never sees), majority (always the most frequent answer) or random (seeded)."
        ),
        show_default=False,
    ),
]
SplitOption = Annotated[str, typer.Option("--split", help="Dataset split to evaluate: test, valid or train.")]
LimitOption = Annotated[
    Optional[int],
    typer.Option("--limit", min=1, help="Evaluate only N clips, drawn with --seed and stratified by category x stem.", show_default=False),
]
OutOption = Annotated[
    Optional[Path],
    typer.Option(
        "--out",
        help="Report folder (predictions.jsonl, report.json, CSVs). Default: RUN/eval/<split>-<limit|all>-s<seed>, "
        "or DATA/eval/<baseline>-<split>-... . Re-running the same command resumes in it.",
        show_default=False,
    ),
]
BatchOption = Annotated[int, typer.Option("--batch-size", min=1, help="Clips per generate() call on the model.")]
MuteOption = Annotated[
    bool,
    typer.Option(
        "--mute-audio",
        help="Ablation: answer every clip with its audio replaced by digital silence and the same prompt. "
        "A critic that listens scores far lower muted; the report and JSON say the audio was muted.",
    ),
]


def evaluate(
    data: DataArgument,
    model: ModelOption = None,
    baseline: BaselineOption = None,
    split: SplitOption = "test",
    limit: LimitOption = None,
    seed: SeedOption = 0,
    out: OutOption = None,
    batch_size: BatchOption = 8,
    device: DeviceOption = "auto",
    mute_audio: MuteOption = False,
    as_json: JsonOption = False,
) -> None:
    """Score a critic (a run, the built-in one, or a baseline) on a dataset split with the paper's metrics.

    Prints the paper's four tables (by category, by stem, by direction; FP/FN/precision/recall/F1) with the published figure under each of ours, plus the category confusion matrix, the false-alarm rate on no-error clips, flaw claims that name the anchor, the unparseable share and a bootstrap interval of the macro figures. Definitions: docs/evaluation.md.

    Answers are appended to REPORT_DIR/predictions.jsonl as they come: re-run the same command to resume after a crash.

    Several GPUs: `torchrun --nproc_per_node N -m mixcritic evaluate ...` splits the clips across the N processes (one GPU each); the first writes the one report, identical to a single-process run's.

    Examples:

    \b
      mixcritic evaluate data --model run --limit 1000
      mixcritic evaluate data --model builtin
      mixcritic evaluate data --baseline loudness --json > loudness.json
      mixcritic evaluate data --model run --mute-audio   # does the critic listen?
    """
    from mixcritic import console
    from mixcritic.errors import MixcriticError
    from mixcritic.evaluate import EvaluateConfig, evaluate as run_evaluation

    if out is not None and out.exists() and not out.is_dir():
        raise MixcriticError(f"--out {out}: is a file, not a folder; give a folder for the report (new, or one to resume)")

    config = EvaluateConfig(
        data_dir=data, model_dir=model, baseline=baseline, split=split, limit=limit, seed=seed,
        out_dir=out, batch_size=batch_size, device=device, mute_audio=mute_audio,
    )
    from mixcritic.distributed import is_main_process

    if not is_main_process():  # under torchrun: rank 0 shows progress and prints the report
        run_evaluation(config, warn=console.warn)
        return
    with console.progress_bars("Loading the data and the critic") as progress:
        report = run_evaluation(config, progress=progress, warn=console.warn)
    if as_json:
        if report["predictor"].get("wiring_only"):
            console.warn(WIRING_ONLY_CAVEAT)
        print_json(report)
        return
    _print_report(report, console.stdout)
    console.info(f"Wrote {config.out_dir}/report.json, predictions.jsonl and CSV tables.")


def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:.1f} %"


def _accuracy_table(title: str, section: dict, paper_section: dict | None, first: str) -> "Table":
    """Our rows, each followed by a dim "paper" row where the paper published that row."""
    from rich import box
    from rich.table import Table

    keys = ("both", "stem", "direction", "magnitude", "magnitude_given_both")
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column(first)
    table.add_column("N", justify="right")
    for header in ("Both", "Stem", "Direction", "Magnitude", "Mag.|both"):
        table.add_column(header, justify="right")
    paper_rows = dict((paper_section or {}).get("rows", {}))
    if paper_section and "macro" in paper_section:
        paper_rows["macro"] = paper_section["macro"]
    for name, row in [*section["rows"].items(), ("macro", section["macro"])]:
        label = "macro avg" if name == "macro" else name.replace("_", " ")
        table.add_row(label, "–" if name == "macro" else str(row["n"]), *(_pct(row[k]) for k in keys))
        paper = paper_rows.get(name)
        if paper:
            table.add_row("  paper", str(paper.get("n", "")), *(_pct(paper[k]) if k in paper else "" for k in keys), style="dim")
    return table


def _tasks_table(tasks: dict, paper_tasks: dict) -> "Table":
    """TP/FP/FN/precision/recall/F1 per task, each followed by the paper's row."""
    from rich import box
    from rich.table import Table

    table = Table(title="Detection tasks (unparseable = FN on flawed clips, FP on no-error clips)",
                  title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("Task")
    for header in ("TP", "FP", "FN", "Precision", "Recall", "F1"):
        table.add_column(header, justify="right")
    names = {"error_detection": "error detection", "stem_identification": "stem identification", "direction": "direction"}
    for key, row in tasks.items():
        table.add_row(names.get(key, key), str(row["tp"]), str(row["fp"]), str(row["fn"]),
                      _pct(row["precision"]), _pct(row["recall"]), _pct(row["f1"]))
        paper = paper_tasks.get(key)
        if paper:
            table.add_row("  paper", "", str(paper["fp"]), str(paper["fn"]), _pct(paper["precision"]), _pct(paper["recall"]),
                          _pct(paper["f1"]), style="dim")
    return table


def _confusion_table(confusion: dict) -> "Table":
    from rich.table import Table

    from rich import box

    table = Table(title="Category confusion (rows: truth, columns: answer)", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("truth")
    for column in confusion["columns"]:
        table.add_column(column.replace("_", " "), justify="right")
    for name, counts in zip(confusion["rows"], confusion["counts"]):
        table.add_row(name.replace("_", " "), *(str(c) for c in counts))
    return table


WIRING_ONLY_CAVEAT = (
    f"{WIRING_ONLY}: its scores ({TINY_SCORES}, chance on real music) say nothing about what a trained critic can do"
)


def _reliability_table(calibration: dict) -> "Table":
    """Confidence bins: answers, mean confidence, how often right (Both)."""
    from rich import box
    from rich.table import Table

    table = Table(title="Reliability (confidence bins; a calibrated critic has accuracy = confidence)",
                  title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    for header in ("confidence", "N", "mean confidence", "accuracy"):
        table.add_column(header, justify="right")
    for row in calibration["reliability"]:
        if row["count"]:
            table.add_row(f"{row['low']:.1f}-{row['high']:.1f}", str(row["count"]), _pct(row["mean_confidence"]), _pct(row["accuracy"]))
    return table


def _print_report(report: dict, out) -> None:
    from rich.text import Text

    from mixcritic.reference import DERIVED

    metrics, paper, predictor = report["metrics"], report["paper"], report["predictor"]
    if predictor.get("critic"):
        out.print(Text(predictor["critic"]), soft_wrap=True)
    if predictor.get("wiring_only"):
        out.print(Text(f"Caveat: {WIRING_ONLY_CAVEAT}.", style="bold yellow"), soft_wrap=True)
    if predictor.get("name") == "builtin":
        who = "built-in critic"
    else:
        who = f"model {predictor['run_dir']}" if predictor.get("run_dir") else f"baseline {predictor.get('name')}"
    if predictor.get("mute_audio"):
        who += " [yellow](audio muted: silence in, same prompts)[/yellow]"
    out.print(
        f"[bold]{who}[/bold] on {report['data']['dir']} split {report['data']['split']}: "
        f"{metrics['n']} clips ({metrics['n_flawed']} flawed)"
        + (f", a stratified draw of {report['sample']['limit']} (seed {report['sample']['seed']})" if report["sample"]["limit"] else "")
    )
    out.print("Paper: 25,650 MUSDB18-HQ test clips, 5,130 per category (Qwen2-7B + MERT-v1-330M).", style="dim")
    out.print(_accuracy_table("By category", metrics["by_category"], paper["by_category"], "Category"))
    out.print(_accuracy_table("By target stem (no-error clips included, as in the paper)", metrics["by_stem"], paper["by_stem"], "Stem"))
    out.print(_accuracy_table("By direction (flawed clips)", metrics["by_direction"], paper["by_direction"], "Direction"))
    out.print(_tasks_table(metrics["tasks"], paper["tasks"]))
    out.print(_confusion_table(metrics["confusion"]))
    ci = metrics["by_category"].get("macro_ci95", {}).get("both")
    if ci:
        out.print(f"Macro Both {_pct(metrics['by_category']['macro']['both'])}, 95 % bootstrap interval "
                  f"{_pct(ci[0])} - {_pct(ci[1])} (paper: 49.9 % on 25,650 clips).")
    accuracy = metrics["category_accuracy"]
    out.print(
        f"False alarms on no-error clips: {_pct(metrics['false_alarm_rate'])} (paper: {_pct(DERIVED['false_alarm_rate'])}). "
        f"Unparseable answers: {metrics['unparseable']['count']} ({_pct(metrics['unparseable']['share'])}). "
        f"5-way category accuracy: {_pct(accuracy['overall'])} (macro {_pct(accuracy['macro'])}). "
        f"Flaw claims naming the anchor stem (always wrong): {metrics['anchor_named']['count']} "
        f"({_pct(metrics['anchor_named']['share_of_claims'])})."
    )
    calibration = report.get("calibration")
    if calibration:
        out.print(_reliability_table(calibration))
        out.print(
            f"Calibration of the {calibration['n']} confidences: expected calibration error "
            f"{_pct(calibration['expected_calibration_error'])} (mean confidence {_pct(calibration['mean_confidence'])}, "
            f"accuracy {_pct(calibration['accuracy'])}; right = stem and direction both right). The paper gives no confidence."
        )
    for note in report.get("notes", []):
        out.print(f"[yellow]Note:[/yellow] {note}")
