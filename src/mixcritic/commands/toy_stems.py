"""`mixcritic toy-stems`: write procedural multitrack songs in the MUSDB18-HQ layout."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from mixcritic.options import SeedOption


def toy_stems(
    out: Annotated[
        Path,
        typer.Argument(
            metavar="OUT",
            help="Folder to write: OUT/train/<track>/{bass,drums,other,vocals}.wav and OUT/test/<track>/...",
            show_default=False,
        ),
    ],
    tracks: Annotated[int, typer.Option("--tracks", min=1, help="Number of songs to write.")] = 8,
    seconds: Annotated[
        float, typer.Option("--seconds", min=1.0, max=600.0, help="Length of each song in seconds (1 to 600).")
    ] = 30.0,
    seed: SeedOption = 0,
    test_fraction: Annotated[
        float,
        typer.Option(
            "--test-fraction",
            min=0.0,
            max=0.99,
            help="Share of the songs put in test/ (at least one once there are 2+ songs).",
        ),
    ] = 0.25,
) -> None:
    """Write procedural songs as MUSDB18-HQ-style stems (44.1 kHz stereo 16-bit WAV).

    Each song has drums (kick, snare, hats), a bass line, a vocal-like melody with vibrato and rests, and chord pads in `other`; tempo, key, stereo placement and levels vary per song. Use OUT as SOURCE for `mixcritic synth` to try the whole pipeline without MUSDB18-HQ.

    Interrupted runs resume: re-run the same command and complete songs are kept. OUT must be new, empty, or a toy tree written with the same options.

    Example:

    \b
      mixcritic toy-stems toy --tracks 8 --seconds 30
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from mixcritic.console import stderr, stdout
    from mixcritic.toy import claim_toy_tree, toy_test_count, write_toy_tree

    claim_toy_tree(out, tracks, seconds, seed, test_fraction)  # fail before drawing a progress bar
    started_s = time.perf_counter()
    skipped = 0
    with Progress(
        TextColumn("[bold]toy-stems[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("songs"),
        TimeElapsedColumn(),
        console=stderr,
        transient=False,
    ) as progress:
        task = progress.add_task("songs", total=tracks)

        def advance(track_dir: Path, was_skipped: bool) -> None:
            nonlocal skipped
            skipped += was_skipped
            progress.advance(task)

        write_toy_tree(out, tracks, seconds, seed, test_fraction=test_fraction, on_track=advance)

    n_test = toy_test_count(tracks, test_fraction)
    elapsed_s = time.perf_counter() - started_s
    resumed = f"; {skipped} were already complete and kept" if skipped else ""
    stdout.print(
        f"{out}: {tracks} toy songs of {seconds:g} s ({tracks * seconds / 60:.1f} min of audio), "
        f"{tracks - n_test} in train/, {n_test} in test/, written in {elapsed_s:.1f} s{resumed}.\n"
        f"Next: mixcritic synth {out} --out DATA",
        soft_wrap=True,
        markup=False,
    )
