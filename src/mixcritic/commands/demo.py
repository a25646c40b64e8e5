"""`mixcritic demo`: toy stems -> flawed session -> built-in critic -> synth -> train (tiny) -> critique, offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mixcritic.options import SeedOption

WorkdirOption = Annotated[
    Optional[Path],
    typer.Option("--workdir", help="Folder for everything the demo writes (default: a new temporary folder, kept for you to inspect).", show_default=False),
]


def demo(workdir: WorkdirOption = None, seed: SeedOption = 0) -> None:
    """Run the whole pipeline on toy songs on a CPU (minutes), with no downloads.

    Generates toy stems, makes one held-out song's bass 9 dB too loud and judges it first with the
    built-in measured critic (seconds, what `mixcritic critique` uses with no model). Then the learned
    path: synthesises a small dataset, trains the tiny preset (minutes on a CPU), critiques the flawed
    song with it. Each critic's verdict is printed next to what was injected. The tiny model is a
    wiring demo, not a trained critic.

    Examples:

    \b
      mixcritic demo
      mixcritic demo --workdir demo --seed 1
    """
    import tempfile

    from rich.text import Text

    from mixcritic.commands.critique import print_report
    from mixcritic.console import info, stdout
    from mixcritic.demo import DISCLAIMER, DemoConfig, agreement_words, flaw_category, model_verdict, run_demo

    folder = workdir if workdir is not None else Path(tempfile.mkdtemp(prefix="mixcritic-demo-"))
    info(f"mixcritic demo in {folder}")
    info(DISCLAIMER)
    result = run_demo(DemoConfig(workdir=folder, seed=seed), log=info)
    category = flaw_category(result.config.flaw_gain_db)
    for heading, report, who in (
        ("1. The built-in critic (measured stem loudness; no training, no GPU)", result.builtin_report, "Built-in said"),
        ("2. The learned path: the tiny LLM run (a wiring demo)", result.report, "Model said"),
    ):
        stdout.print(Text(heading, style="bold underline"), soft_wrap=True)
        print_report(report, stdout)
        said = model_verdict(report, result.config.flaw_stem)
        agrees = agreement_words(report, result.config.flaw_stem, category)
        style = {"yes": "green", "no": "red"}.get(agrees, "yellow")
        stdout.print(Text("Injected  ", style="bold") + Text(result.injected), soft_wrap=True)
        stdout.print(Text("Expected  ", style="bold") + Text(result.expected), soft_wrap=True)
        stdout.print(Text(who, style="bold") + Text(f" {said}"), soft_wrap=True)
        stdout.print(Text("Agreement ", style="bold") + Text(agrees, style=style), soft_wrap=True)
    stdout.print(Text(DISCLAIMER, style="yellow"), soft_wrap=True)
    total_s = sum(result.stage_s.values())
    info(f"Demo finished in {total_s:.0f} s. Everything is in {folder}; critique it again with:")
    info(f"  mixcritic critique '{result.session_dir}' --anchor {result.config.anchor_stem} --model '{result.run_dir}'")
