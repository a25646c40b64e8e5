"""Peak tensor memory of SFT vs DPO training, and what a reference-model copy would add (CPU).

    PYTHONPATH=src python bench/dpo_memory.py DATA SFT_RUN [--steps 2] [--kinds false_alarm] [--out dpo_memory.json]

Runs ``train --preset tiny`` (SFT) and ``train --stage dpo --from SFT_RUN`` for ``--steps`` steps
each, same batch size, inside :class:`PeakTensorBytes`, and builds the model once more to count
the bytes of one copy of it (what a DPO implementation holding a frozen reference model keeps in
memory on top). Prints JSON. The tracker counts the storages of every tensor created by a torch
operation while it is active (views counted once, freed storages subtracted): CPU has no
allocator statistics like ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import weakref
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class PeakTensorBytes(TorchDispatchMode):
    """Live and peak bytes of tensor storages created while active (any device)."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: dict[int, int] = {}
        self.current = 0
        self.peak = 0

    def _free(self, key: int) -> None:
        self.current -= self.sizes.pop(key, 0)

    def _see(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key, size = storage._cdata, storage.nbytes()
        old = self.sizes.get(key)
        if old is None:
            weakref.finalize(storage, self._free, key)
        self.sizes[key] = size
        self.current += size - (old or 0)
        self.peak = max(self.peak, self.current)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor) and not leaf.is_meta:
                try:
                    self._see(leaf)
                except (RuntimeError, NotImplementedError):  # tensors without a storage (e.g. sparse)
                    pass
        return out


def model_bytes(model: torch.nn.Module) -> int:
    """Bytes of all parameters and buffers of a module (storages counted once)."""
    seen: dict[int, int] = {}
    for tensor in list(model.parameters()) + list(model.buffers()):
        storage = tensor.untyped_storage()
        seen[storage._cdata] = storage.nbytes()
    return sum(seen.values())


def measure(data_dir: Path, sft_run: Path, steps: int, work: Path, kinds: tuple[str, ...] = ("false_alarm",)) -> dict:
    """Peak bytes of an SFT run and a DPO run, and the bytes of one model copy."""
    from mixcritic.critics.llm import build_critic
    from mixcritic.critics.llm.checkpoint import read_settings
    from mixcritic.critics.llm.dpo import DpoRequest, DpoSettings, run_dpo, sft_model_folder
    from mixcritic.critics.llm.train import TrainRequest, run_training

    overrides = (("max_steps", steps), ("save_steps", steps), ("eval_steps", 0), ("workers", 0), ("logging_steps", 1))

    def request(name: str) -> TrainRequest:
        return TrainRequest(data_dir=data_dir, out_dir=work / name, preset="tiny", train_overrides=overrides, device="cpu",
                            progress=False)

    with PeakTensorBytes() as sft:
        run_training(request("sft"))
    with PeakTensorBytes() as dpo:
        run_dpo(DpoRequest(train=request("dpo"), sft_run=sft_run, dpo=DpoSettings(rejected_kinds=kinds)))
    copy = model_bytes(build_critic(read_settings(sft_model_folder(sft_run)), "cpu", training=True))
    return {"steps": steps, "sft_peak_bytes": sft.peak, "dpo_peak_bytes": dpo.peak, "model_copy_bytes": copy,
            "dpo_over_sft": round(dpo.peak / sft.peak, 4), "dpo_with_copy_over_sft": round((dpo.peak + copy) / sft.peak, 4)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("sft_run", type=Path)
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--kinds", default="false_alarm", help="rejected kinds of the DPO pairs (fewer pairs: a shorter reference pass)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        result = measure(args.data, args.sft_run, args.steps, Path(work), tuple(args.kinds.split(",")))
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
