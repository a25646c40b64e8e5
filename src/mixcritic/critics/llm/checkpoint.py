"""Checkpoints hold only trained tensors (safetensors) plus the settings that rebuild the model.

Layout of a checkpoint folder (``RUN/model/`` or ``RUN/checkpoint-<step>/``)::

    trained.safetensors   layer weights, projector, LoRA adapter -- nothing of the base models
    mixcritic.json        CriticSettings: base model ids/paths, every preprocessing setting
    COMPLETE              written last; a folder without it is an interrupted save and is ignored

Training-state files for ``--resume`` (optimizer, scheduler, RNG) are written beside them by
``mixcritic.critics.llm.train``, also without pickle.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

from mixcritic.errors import ModelError
from mixcritic.files import atomic_path, write_json_atomic

if TYPE_CHECKING:  # pragma: no cover
    from mixcritic.critics.llm.critic import CriticSettings, MixCritic

TRAINED_FILE = "trained.safetensors"
SETTINGS_FILE = "mixcritic.json"
COMPLETE_MARKER = "COMPLETE"
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")


def save_trained(critic: "MixCritic", out_dir: Path, extra_settings: dict | None = None) -> Path:
    """Write ``trained.safetensors`` and ``mixcritic.json`` into ``out_dir`` (no COMPLETE marker)."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in critic.trained_state().items()}
    with atomic_path(out_dir / TRAINED_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "pt", "producer": "mixcritic"})
    settings = critic.settings.to_dict() | (extra_settings or {})
    write_json_atomic(out_dir / SETTINGS_FILE, settings, sort_keys=True)
    return out_dir


def mark_complete(out_dir: Path) -> None:
    """Write the completion marker (last step of any save)."""
    (out_dir / COMPLETE_MARKER).write_text("complete\n")


def is_complete(folder: Path) -> bool:
    """True when a checkpoint folder finished saving."""
    return (folder / COMPLETE_MARKER).is_file() and (folder / TRAINED_FILE).is_file() and (folder / SETTINGS_FILE).is_file()


def read_settings(folder: Path) -> "CriticSettings":
    """The CriticSettings stored in a checkpoint folder."""
    from mixcritic.critics.llm.settings import CriticSettings

    file = folder / SETTINGS_FILE
    if not file.is_file():
        raise ModelError(f"{folder} has no {SETTINGS_FILE}; is it a mixcritic run or checkpoint folder?")
    data = json.loads(file.read_text())
    data = {k: v for k, v in data.items() if not k.startswith("run_")}
    return CriticSettings.from_dict(data)


def read_trained(folder: Path) -> dict:
    """The trained tensors of a checkpoint folder."""
    from safetensors.torch import load_file

    return load_file(str(folder / TRAINED_FILE))


def last_complete_checkpoint(run_dir: Path) -> Path | None:
    """The highest-step ``checkpoint-N`` folder with a completion marker, or None."""
    found = []
    for child in run_dir.iterdir() if run_dir.is_dir() else []:
        match = CHECKPOINT_PATTERN.match(child.name)
        if match and child.is_dir() and is_complete(child):
            found.append((int(match.group(1)), child))
    return max(found)[1] if found else None


def find_model_folder(run_dir: Path) -> Path:
    """``RUN/model`` if complete, else the last complete checkpoint; ``run_dir`` itself if it is one."""
    run_dir = Path(run_dir)
    if is_complete(run_dir):
        return run_dir
    if is_complete(run_dir / "model"):
        return run_dir / "model"
    last = last_complete_checkpoint(run_dir)
    if last is not None:
        return last
    raise ModelError(
        f"{run_dir} holds no complete trained model (model/ or checkpoint-N/ with a COMPLETE marker); "
        "train one with `mixcritic train DATA --out RUN`."
    )
