"""`mixcritic demo`: toy stems -> flawed session -> synth -> train (tiny) -> critique, offline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mixcritic.options import SeedOption

WorkdirOption = Annotated[
    Optional[Path],
    typer.Option("--workdir", help="Folder for everything the demo writes [default: a new temporary folder, kept for you to inspect].", show_default=False),
]


def demo(workdir: WorkdirOption = None, seed: SeedOption = 0) -> None:
    """Run the whole pipeline on toy songs on a CPU (minutes), with no downloads.

    Generates toy stems, makes one held-out song's bass 9 dB too loud, synthesises a small dataset,
    trains the tiny preset (minutes on a CPU), critiques the flawed song and prints what was injected
    next to what the model said. The tiny model is a wiring demo, not a trained critic.

    Examples:

    \b
      mixcritic demo
      mixcritic demo --workdir demo --seed 1
    """
    import tempfile

    from rich.text import Text

    from mixcritic.commands.critique import print_report
    from mixcritic.console import info, stdout
    from mixcritic.demo import DISCLAIMER, DemoConfig, flaw_category, model_agrees, model_verdict, run_demo, severity_agrees

    folder = workdir if workdir is not None else Path(tempfile.mkdtemp(prefix="mixcritic-demo-"))
    info(f"mixcritic demo in {folder}")
    info(DISCLAIMER)
    result = run_demo(DemoConfig(workdir=folder, seed=seed), log=info)
    print_report(result.report, stdout)
    said = model_verdict(result.report, result.config.flaw_stem)
    stdout.print(Text("Injected  ", style="bold") + Text(result.injected), soft_wrap=True)
    stdout.print(Text("Expected  ", style="bold") + Text(result.expected), soft_wrap=True)
    stdout.print(Text("Model said", style="bold") + Text(f" {said}"), soft_wrap=True)
    category = flaw_category(result.config.flaw_gain_db)
    agrees = model_agrees(result.report, result.config.flaw_stem, category)
    severity = "the severity too" if severity_agrees(result.report, result.config.flaw_stem, category) else "not the severity"
    words = f"yes: stem and direction ({severity})" if agrees else "no: not the stem and direction injected"
    stdout.print(Text("Agreement ", style="bold") + Text(words, style="green" if agrees else "red"), soft_wrap=True)
    stdout.print(Text(DISCLAIMER, style="yellow"), soft_wrap=True)
    total_s = sum(result.stage_s.values())
    info(f"Demo finished in {total_s:.0f} s. Everything is in {folder}; critique it again with:")
    info(f"  mixcritic critique '{result.session_dir}' --anchor {result.config.anchor_stem} --model '{result.run_dir}'")
