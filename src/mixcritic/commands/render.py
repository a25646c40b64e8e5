"""`mixcritic render`: write one dataset sample as the model hears it, to listen to a flaw."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mixcritic.console import print_json
from mixcritic.options import DataArgument, JsonOption


def render(
    data: DataArgument,
    sample_id: Annotated[str, typer.Argument(metavar="SAMPLE_ID", help="The sample's `id` from DATA/{train,valid,test}.jsonl.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", help="WAV file to write (24 kHz mono, 32-bit float).", show_default=False)],
    raw: Annotated[bool, typer.Option("--raw", help="Skip loudness normalisation (the plain sum of the stems).")] = False,
    json_output: JsonOption = False,
) -> None:
    """Write exactly the audio the model hears for one sample: 24 kHz mono, loudness-normalised.

    The four cached stems over the sample's chunk, the target stem changed by its gain_db, summed and normalised to the dataset's target loudness (--raw skips the normalisation). Samples are not clipped, so the file is 32-bit float.

    Example (the first test sample; jq reads its id):

    \b
      ID=$(head -n 1 toy-data/test.jsonl | jq -r .id)
      mixcritic render toy-data "$ID" --out flaw.wav
    """
    from mixcritic.dataset import open_dataset, write_sample_wav

    dataset = open_dataset(data)
    record = dataset.record(sample_id)
    summary = write_sample_wav(dataset, record, out, normalize=not raw)
    if json_output:
        print_json(summary)
        return
    from mixcritic.console import stdout

    gain = f"{record['target_stem']} {record['gain_db']:+.2f} dB against {record['anchor_stem']}"
    stdout.print(
        f"{out}: {summary['duration_s']:g} s, {summary['sample_rate_hz']} Hz mono, "
        f"{summary['loudness_lufs']:.1f} LUFS{' (raw)' if raw else ''}. "
        f"{record['category']}: {gain}.\nExpected answer: {record['response']}",
        soft_wrap=True,
        markup=False,
    )
