"""Several processes under a launcher (torchrun / accelerate launch): rank, world size, barrier.

Training leaves all of this to the Hugging Face Trainer; ``evaluate`` uses it to split the clips
across processes and write one report. Without a launcher every function is a no-op (rank 0 of 1).
The process group for these barriers is gloo (CPU), which works beside CUDA too: nothing but
barriers goes through it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence


def rank_and_world() -> tuple[int, int]:
    """(RANK, WORLD_SIZE) set by the launcher; (0, 1) without one."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """True for rank 0 (the process that merges, reports and prints)."""
    return rank_and_world()[0] == 0


def shard(items: Sequence, rank: int, world: int) -> list:
    """Every ``world``-th item from ``rank``: ranks get disjoint shares that together are ``items``."""
    return list(items[rank::world])


def barrier() -> None:
    """Wait until every process of the launch gets here (no-op for a single process)."""
    _, world = rank_and_world()
    if world <= 1:
        return
    import torch.distributed as dist

    if not dist.is_initialized():
        import atexit

        dist.init_process_group(backend="gloo")
        atexit.register(lambda: dist.is_initialized() and dist.destroy_process_group())
    dist.barrier()


def close_process_group() -> None:
    """Under a launcher: wait for every process, then tear the process group down (no-op otherwise).

    A group left for the interpreter's exit can abort the process that exits while another still
    works ("terminate called without an active exception", SIGABRT) after all its work is done;
    the Trainer's group (set up by accelerate) is closed this way at the end of a training run.
    """
    _, world = rank_and_world()
    if world <= 1:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
