"""Output channels: results go to stdout, progress/warnings/errors go to stderr."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from rich.console import Console

stdout = Console(highlight=False)
stderr = Console(stderr=True, highlight=False)


def warn(message: str) -> None:
    """Print a one-line warning on stderr."""
    from rich.markup import escape

    stderr.print(f"[yellow]Warning:[/yellow] {escape(message)}", soft_wrap=True)


def info(message: str) -> None:
    """Print a one-line status message on stderr."""
    stderr.print(message, soft_wrap=True)


def print_json(data) -> None:
    """Print ``data`` as indented JSON on stdout, and nothing else (the ``--json`` channel)."""
    import json

    print(json.dumps(data, indent=2), flush=True)


SPINNER_REPORT_S = 1.0
"""A spinner's block that took at least this long is reported (one line with its time) when it ends."""


@contextlib.contextmanager
def spinner(label: str) -> Iterator[None]:
    """A spinner with the elapsed time on stderr while the block runs (e.g. a model loading); when
    the block ends (and took a second or more), one line says how long it took. When stderr is not
    a terminal (a log), a plain ``label ...`` line replaces the animation. Third-party progress bars
    are silenced."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    quiet_third_party_progress()
    started_s = time.perf_counter()
    if not stderr.is_terminal:
        info(f"{label} ...")  # a log gets the line, not an animation
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=stderr, transient=True,
                  disable=not stderr.is_terminal) as bar:  # a transient display in a log is only blank lines
        bar.add_task(label, total=None)
        yield
    elapsed_s = time.perf_counter() - started_s
    if elapsed_s >= SPINNER_REPORT_S:
        info(f"{label}: {elapsed_s:.1f} s")


@contextlib.contextmanager
def progress_bars(loading_label: str) -> Iterator:
    """A ``progress(iterable, total, description)`` function drawing Rich bars on stderr.

    Until the first bar starts, a transient spinner labelled ``loading_label`` shows the elapsed
    time. An item that is a list (a batch of clips) advances its bar by its length, so the bar
    counts clips when ``total`` does."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn())
    bars = Progress(*columns, console=stderr, transient=False)
    loading = contextlib.ExitStack()
    loading.enter_context(spinner(loading_label))

    def track(items, total, description):
        loading.close()
        bars.start()  # idempotent
        task = bars.add_task(description, total=total)
        for item in items:
            yield item
            bars.advance(task, len(item) if isinstance(item, list) else 1)

    try:
        yield track
    finally:
        loading.close()
        if bars.live.is_started:
            bars.stop()


def quiet_third_party_progress() -> None:
    """Silence transformers' and huggingface_hub's own tqdm bars ("Loading weights", "Writing model
    shards"): mixcritic draws its own progress on stderr. Imports nothing that is not loaded yet."""
    import os
    import sys

    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # read when those libraries are imported
    if os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] in ("", "0"):
        return
    if "transformers" in sys.modules:
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()
