"""`mixcritic synth`: build the dataset of flawed mixes (stem cache + manifests + DPO pairs)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mixcritic.console import print_json
from mixcritic.errors import DatasetError
from mixcritic.options import JsonOption, SeedOption, SegmentOption, WorkersOption


def synth(
    source: Annotated[
        Path,
        typer.Argument(
            metavar="SOURCE",
            help="MUSDB18-HQ root: SOURCE/{train,test}/<track>/{bass,drums,other,vocals}.<wav|flac|...> (mixture.* is ignored).",
            show_default=False,
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Dataset folder to write (new, empty, or an unfinished run to resume).", show_default=False)],
    seed: SeedOption = 0,
    workers: WorkersOption = 1,
    segment_s: SegmentOption = 10.0,
    samples_per_chunk: Annotated[
        str,
        typer.Option("--samples-per-chunk", help="'all' = the full grid (3 targets x 2 anchors x 5 categories = 30 per chunk), or N drawn per chunk."),
    ] = "all",
    valid_fraction: Annotated[float, typer.Option("--valid-fraction", help="Share of train tracks held out (by track) as the validation split.")] = 0.1,
    target_lufs: Annotated[float, typer.Option("--target-lufs", help="Loudness every rendered mix is normalised to (LUFS).")] = -23.0,
    gate_lufs: Annotated[float, typer.Option("--gate-lufs", help="A target/anchor stem must reach this loudness in a chunk (LUFS).")] = -50.0,
    gate_relative_lu: Annotated[
        float, typer.Option("--gate-relative-lu", help="... and be no more than this far below the chunk's mix (LU, <= 0).")
    ] = -20.0,
    min_active_fraction: Annotated[
        float, typer.Option("--min-active-fraction", help="... and have this share of its 400 ms blocks above --gate-lufs.")
    ] = 0.2,
    length_tolerance_s: Annotated[
        float, typer.Option("--length-tolerance-s", help="Stems of a track may differ in length by this much (trimmed to the shortest); more is a broken track.")
    ] = 0.01,
    strict: Annotated[bool, typer.Option("--strict", help="Stop at the first broken track instead of skipping it.")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace a dataset in --out that was built with other settings.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Synthesise flawed mixes from MUSDB18-HQ-style stems: a stem cache, manifests and DPO pairs.

    Writes OUT/{train,valid,test}.jsonl (one sample per line), OUT/dpo/*.jsonl, OUT/dataset.json and the stem cache OUT/cache/ (24 kHz mono). Samples are rendered on the fly from the cache (`mixcritic render`). The format is specified in docs/dataset.md.

    Same inputs + same seed give byte-identical manifests whatever --workers is. An interrupted run resumes: re-run the same command. Broken tracks are skipped with a warning and listed in dataset.json (--strict makes them fatal).

    Examples:

    \b
      mixcritic synth toy --out toy-data --workers 2
      mixcritic synth ~/MUSDB18HQ --out data --workers 8
    """
    from mixcritic.synthesis import SynthConfig, synthesize

    config = SynthConfig(
        seed=seed,
        segment_s=segment_s,
        samples_per_chunk=_parse_samples_per_chunk(samples_per_chunk),
        valid_fraction=valid_fraction,
        target_lufs=target_lufs,
        gate_lufs=gate_lufs,
        gate_relative_lu=gate_relative_lu,
        min_active_fraction=min_active_fraction,
        length_tolerance_s=length_tolerance_s,
    )
    result = synthesize(source, out, config, workers=workers, strict=strict, overwrite=overwrite)
    if json_output:
        summary = {key: result.info[key] for key in ("counts", "totals", "dropped", "broken_tracks", "options")}
        summary.update(out=str(out), elapsed_s=round(result.elapsed_s, 3), tracks_built=result.tracks_built, tracks_resumed=result.tracks_resumed)
        print_json(summary)
    else:
        _print_summary(result)


def _parse_samples_per_chunk(value: str) -> int | None:
    if value.strip().lower() == "all":
        return None
    try:
        return int(value)
    except ValueError:
        raise DatasetError(f"--samples-per-chunk {value!r}: expected 'all' or a positive integer") from None


_SHORT = {"no_error": "no error", "quiet": "quiet", "very_quiet": "v. quiet", "loud": "loud", "very_loud": "v. loud"}


def _print_summary(result) -> None:
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from mixcritic import labels
    from mixcritic.console import stdout

    info = result.info
    table = Table(
        title=f"{escape(str(result.data_dir))}: samples per split and category",
        box=box.SIMPLE_HEAD,
        title_justify="left",
        pad_edge=False,
        show_edge=False,
    )
    for column in ("split", "tracks", "chunks", *(_SHORT[c] for c in labels.CATEGORIES), "samples"):
        table.add_column(column, justify="left" if column == "split" else "right", no_wrap=True)
    for split, counts in info["counts"].items():
        by_category = (str(counts["by_category"][c]) for c in labels.CATEGORIES)
        table.add_row(split, str(counts["tracks"]), str(counts["chunks"]), *by_category, str(counts["samples"]))
    stdout.print(table)
    dropped_chunks: dict[str, int] = {}
    dropped_samples: dict[str, int] = {}
    for dropped in info["dropped"].values():
        for key, value in dropped["chunks"].items():
            dropped_chunks[key] = dropped_chunks.get(key, 0) + value
        for key, value in dropped["samples"].items():
            dropped_samples[key] = dropped_samples.get(key, 0) + value
    partial = sum(d["partial_chunks"] for d in info["dropped"].values())
    partial_s = sum(d["partial_chunk_s"] for d in info["dropped"].values())
    stdout.print(
        f"Dropped by gating: chunks {_reasons(dropped_chunks)}; samples {_reasons(dropped_samples)}. "
        f"Trailing partial chunks: {partial} ({partial_s:.1f} s).",
        soft_wrap=True,
        markup=False,
    )
    broken = len(info["broken_tracks"])
    resumed = f", {result.tracks_resumed} already complete" if result.tracks_resumed else ""
    stdout.print(
        f"{info['totals']['samples']} samples from {info['totals']['tracks']} tracks "
        f"({result.tracks_built} built{resumed}; {broken} broken, skipped and listed in dataset.json) "
        f"in {result.elapsed_s:.1f} s.\nListen to one: mixcritic render {result.data_dir} <id> --out sample.wav",
        soft_wrap=True,
        markup=False,
    )


def _reasons(counter: dict) -> str:
    if not counter:
        return "none"
    return ", ".join(f"{value} {key.replace('_', ' ')}" for key, value in sorted(counter.items()))
