"""``mixcritic train``: fine-tune projector, layer weights and LoRA on the Hugging Face ``Trainer``.

Data: the stem cache of a ``mixcritic synth`` dataset, mixes rendered on the fly in DataLoader
workers by ``Dataset.render(record, normalize=True)`` (the same loudness normalisation as
``mixcritic render`` and critique). MERT features are not cached: at 25 x 749 x 1024 values
per 10 s clip a cache would hold ~38 MB per sample in bf16 (~3.8 TB for 100k samples), and the
frozen encoder costs little next to the 7B LLM.

Checkpoints (``RUN/checkpoint-<step>/``, final ``RUN/model/``) are written by this module, never
by the Trainer's defaults: trained tensors and optimizer state as safetensors, everything else
as JSON -- no pickle -- and a ``COMPLETE`` marker last. ``--resume`` picks the last complete one.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from mixcritic.errors import DatasetError, ModelError

PRESETS = ("paper", "paper-run", "tiny")
TINY_MERT_SOURCE = "tiny-mert"
"""``--encoder`` value of the tiny preset's random-init MERT (tests the real MERT loading code; learns nothing)."""

AUTHORS_SYSTEM_MESSAGE = (
    "You are a mixing engineer. You are given a segment of a track and you need to provide gain balancing advice."
)
"""The system message of the authors' published run (``paper-run``)."""

RESUME_LOCKED = {"batch_size": "--batch-size", "grad_accum": "--grad-accum", "learning_rate": "--lr",
                 "epochs": "--epochs", "lr_scheduler": "--lr-scheduler", "warmup_steps": "--warmup-steps"}
"""Training settings that ``--resume`` refuses to change (they change what a step or the schedule
means), with their option names. ``--max-steps`` may change: it extends or shortens a run."""
TRAIN_SPLIT = "train"
VALIDATION_SPLIT = "valid"


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings. Defaults are the paper's (section III-C)."""

    epochs: float = 3.0
    """Passes over the training split."""
    learning_rate: float = 1e-5
    """Peak learning rate (AdamW)."""
    weight_decay: float = 0.01
    """AdamW weight decay (not applied to biases and norms)."""
    batch_size: int = 4
    """Clips per device per step."""
    grad_accum: int = 16
    """Gradient accumulation steps (effective batch = batch_size x grad_accum x devices)."""
    max_grad_norm: float = 0.8
    """Gradient clipping norm."""
    lr_scheduler: str = "cosine"
    """Learning-rate schedule (transformers name)."""
    warmup_steps: int = 0
    """Linear warmup steps (paper: none)."""
    logging_steps: int = 5
    """Log the training loss every N optimizer steps."""
    eval_steps: int = 200
    """Validation loss every N optimizer steps (0 = never)."""
    save_steps: int = 200
    """Checkpoint every N optimizer steps."""
    save_total_limit: int = 3
    """Keep at most this many checkpoints (older ones are deleted)."""
    max_steps: int = -1
    """Stop after N optimizer steps (-1 = run all epochs)."""
    max_eval_samples: int = 512
    """Validation clips used per evaluation (a fixed subset, the same every time)."""
    workers: int = 4
    """DataLoader worker processes rendering mixes."""
    seed: int = 0
    """Seed for initialisation and data order."""
    bf16: bool = True
    """bf16 autocast where the device supports it (CUDA with bf16); ignored elsewhere."""
    augment_gain_db: float = 0.0
    """Training only: a random gain, uniform in +-N dB, on each clip after loudness normalisation (0 = off)."""
    augment_noise_snr_db: list | None = None
    """Training only: white noise at a random SNR, uniform in [low, high] dB (None = off)."""
    augment_dc_offset: float = 0.0
    """Training only: a random DC offset, uniform in +-N (full scale 1.0; 0 = off)."""

    def __post_init__(self) -> None:
        snr = self.augment_noise_snr_db
        if snr is not None:
            snr = [float(v) for v in snr]
            if len(snr) != 2 or snr[0] > snr[1]:
                raise ModelError(f"invalid --augment-noise-snr-db: {self.augment_noise_snr_db!r}; give LOW,HIGH, e.g. 40,60")
            object.__setattr__(self, "augment_noise_snr_db", snr)
        rules = {
            "epochs": self.epochs > 0,
            "learning_rate": self.learning_rate > 0,
            "weight_decay": self.weight_decay >= 0,
            "batch_size": self.batch_size >= 1,
            "grad_accum": self.grad_accum >= 1,
            "max_grad_norm": self.max_grad_norm > 0,
            "warmup_steps": self.warmup_steps >= 0,
            "logging_steps": self.logging_steps >= 1,
            "eval_steps": self.eval_steps >= 0,
            "save_steps": self.save_steps >= 1,
            "save_total_limit": self.save_total_limit >= 1,
            "max_steps": self.max_steps == -1 or self.max_steps >= 1,
            "max_eval_samples": self.max_eval_samples >= 1,
            "workers": self.workers >= 0,
            "augment_gain_db": self.augment_gain_db >= 0,
            "augment_dc_offset": self.augment_dc_offset >= 0,
        }
        for name, ok in rules.items():
            if not ok:
                raise ModelError(f"invalid --{name.replace('_', '-')}: {getattr(self, name)!r}")


def preset_settings(preset: str) -> tuple[TrainSettings, dict]:
    """(TrainSettings, model-settings dict) of a preset.

    ``paper``: the paper's text on MERT-v1-330M + Qwen2-7B-Instruct (4-bit).
    ``paper-run``: the authors' published run (their repository's "gelu r16a32" configs, whose
    evaluation equals the paper's tables): GELU projector 2048-4096-4096-2048, aux loss 0.1 on
    norms / d, LoRA dropout 0.1, lr 1e-5 cosine, wd 0.05, clip 1.0, batch 16 x 4, 10 epochs,
    seed 42, training-only augmentation and their system message.
    ``tiny``: the same code on CPU in a few minutes, built to show that the learned path listens:
    the deterministic log-mel front end (``--encoder logmel``; ``tiny-mert`` selects the tiny
    random MERT) with fitted feature standardisation, the tiny Qwen2 unquantised (4-bit costs
    ~2.4x per step on a CPU), ``audio_pool`` 75 (one audio position per second), no dropout, a much
    larger learning rate, and 750 steps of 16 clips: batches of 4 left the gradient too noisy to
    learn from the few answer tokens that carry the decision (see docs/training.md, "Does the tiny
    critic listen?").
    """
    from mixcritic.critics.llm.encoder import MERT_HUB_ID
    from mixcritic.critics.llm.language_model import QWEN_HUB_ID
    from mixcritic.critics.llm.settings import LOGMEL_SOURCE

    if preset == "paper":
        return TrainSettings(), {"encoder_source": MERT_HUB_ID, "llm_source": QWEN_HUB_ID}
    if preset == "paper-run":
        train = TrainSettings(
            epochs=10.0, learning_rate=1e-5, weight_decay=0.05, batch_size=16, grad_accum=4, max_grad_norm=1.0,
            lr_scheduler="cosine", warmup_steps=0, seed=42, bf16=True,
            augment_gain_db=3.0, augment_noise_snr_db=[40.0, 60.0], augment_dc_offset=0.005,
        )
        return train, {
            "encoder_source": MERT_HUB_ID, "llm_source": QWEN_HUB_ID, "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.1,
            "projector_hidden": [2048, 4096, 4096, 2048], "projector_activation": "gelu", "projector_dropout": 0.1,
            "aux_loss_weight": 0.1, "aux_loss_norm": "d", "system_message": AUTHORS_SYSTEM_MESSAGE,
        }
    if preset == "tiny":
        train = TrainSettings(
            epochs=1.0, learning_rate=5e-3, weight_decay=0.0, batch_size=16, grad_accum=1, max_grad_norm=1.0,
            logging_steps=10, eval_steps=250, save_steps=250, max_steps=750, max_eval_samples=16, workers=1,
        )
        return train, {"encoder_source": LOGMEL_SOURCE, "audio_pool": 75, "standardize_clips": 64,
                       "quantize_4bit": False, "projector_hidden": 64, "projector_dropout": 0.0,
                       "lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "gradient_checkpointing": False}
    raise ModelError(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")


# -- data ------------------------------------------------------------------------------------

class ClipDataset:
    """Torch map-style dataset: renders each record's mix on the fly (normalised) with its texts.

    ``augment``: the training split's augmentation settings (gain, noise, DC offset), drawn anew
    for every item from torch's RNG (seeded per DataLoader worker, saved in checkpoints); None
    for validation and evaluation.
    """

    def __init__(self, source, records: list[dict], samples: int, augment: "TrainSettings | None" = None) -> None:
        self.source = source
        self.records = records
        self.samples = samples
        self.augment = augment if augment is not None and augmentation_enabled(augment) else None

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        audio = self.source.render(record, normalize=True)
        if audio.shape != (self.samples,):
            raise DatasetError(
                f"sample {record.get('id')} renders {audio.shape} samples, expected ({self.samples},); "
                "all clips of a dataset must have the training segment length."
            )
        if self.augment is not None:
            audio = self.augmented(audio)
        return {"audio": audio, "instruction": record["instruction"], "response": record["response"]}

    def augmented(self, audio):
        """One random draw of the augmentation applied to ``audio``."""
        import numpy as np
        import torch

        from mixcritic.critics.llm.augment import random_augmentation

        rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
        a = self.augment
        return random_augmentation(audio, rng, a.augment_gain_db, a.augment_noise_snr_db, a.augment_dc_offset)


def augmentation_enabled(train: "TrainSettings") -> bool:
    """True when any training augmentation is on."""
    return train.augment_gain_db > 0 or train.augment_noise_snr_db is not None or train.augment_dc_offset > 0


class CriticCollator:
    """Tokenises prompts (with the run's system message) with ``n_audio`` audio positions and stacks the clips."""

    def __init__(self, tokenizer, n_audio: int, system_message: str | None = None) -> None:
        self.tokenizer = tokenizer
        self.n_audio = n_audio
        self.system_message = system_message

    def __call__(self, items: list[dict]) -> dict:
        import numpy as np
        import torch

        from mixcritic.critics.llm.prompt import build_example, collate_examples

        examples = [build_example(self.tokenizer, it["instruction"], self.n_audio, it["response"],
                                  system_message=self.system_message) for it in items]
        batch = collate_examples(examples, self.tokenizer.pad_token_id, padding_side="right")
        batch["audio"] = torch.from_numpy(np.stack([it["audio"] for it in items]).astype(np.float32))
        return batch


def validation_split(source) -> str | None:
    """``valid`` when the dataset has validation samples, else None (no validation loss)."""
    try:
        return VALIDATION_SPLIT if source.records(VALIDATION_SPLIT) else None
    except DatasetError:
        return None


def dataset_audio_settings(source) -> dict:
    """segment_s, target_lufs and template_version of a dataset (its ``dataset.json``)."""
    from mixcritic.labels import MODEL_SAMPLE_RATE_HZ

    info = source.info
    try:
        options = info["options"]
        settings = {
            "segment_s": float(options["segment_s"]),
            "target_lufs": float(options["target_lufs"]),
            "template_version": str(info["template_version"]),
        }
        rate_hz = int(info["sample_rate_hz"])
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"dataset.json lacks {exc}; re-run `mixcritic synth` with this version of mixcritic.") from None
    if rate_hz != MODEL_SAMPLE_RATE_HZ:
        raise DatasetError(f"dataset sample rate is {rate_hz} Hz; the encoder needs {MODEL_SAMPLE_RATE_HZ} Hz.")
    if not source.records(TRAIN_SPLIT):
        raise DatasetError("the dataset's train split is empty; run `mixcritic synth` on more tracks.")
    return settings


# -- safe training-state files ---------------------------------------------------------------

def save_optimizer_state(optimizer, folder: Path) -> None:
    """Optimizer state as ``optimizer.safetensors`` (tensors) + ``optimizer.json`` (the rest)."""
    import torch
    from safetensors.torch import save_file

    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, values in state["state"].items():
        for key, value in values.items():
            name = f"{index}.{key}"
            if isinstance(value, torch.Tensor):
                tensors[name] = value.detach().to("cpu").contiguous()
            else:
                scalars[name] = value
    save_file(tensors, str(folder / "optimizer.safetensors"))
    (folder / "optimizer.json").write_text(json.dumps({"param_groups": state["param_groups"], "scalars": scalars}))


def load_optimizer_state(optimizer, folder: Path) -> None:
    """Inverse of :func:`save_optimizer_state`."""
    from safetensors.torch import load_file

    tensors = load_file(str(folder / "optimizer.safetensors"))
    meta = json.loads((folder / "optimizer.json").read_text())
    state: dict[int, dict[str, Any]] = {}
    for name, value in list(tensors.items()) + list(meta["scalars"].items()):
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def rng_state_to_files(folder: Path, rank: int) -> None:
    """Python, numpy, torch (and CUDA) RNG states without pickle."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors = {"cpu": torch.random.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda{i}"] = s
    save_file(tensors, str(folder / f"rng_state_{rank}.safetensors"))
    meta = {"python": [version, list(internal), gauss], "numpy": [kind, keys.tolist(), pos, has_gauss, cached]}
    (folder / f"rng_state_{rank}.json").write_text(json.dumps(meta))


def rng_state_from_files(folder: Path, rank: int) -> bool:
    """Restore what :func:`rng_state_to_files` wrote; False when the files are absent."""
    import numpy as np
    import torch
    from safetensors.torch import load_file

    meta_file = folder / f"rng_state_{rank}.json"
    if not meta_file.is_file():
        return False
    meta = json.loads(meta_file.read_text())
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    tensors = load_file(str(folder / f"rng_state_{rank}.safetensors"))
    torch.random.set_rng_state(tensors["cpu"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda"))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    return True


# -- the Trainer -----------------------------------------------------------------------------

def make_trainer_class():
    """Build the Trainer subclass lazily (transformers is a heavy import)."""
    from transformers import Trainer

    from mixcritic.critics.llm.checkpoint import mark_complete, read_trained, save_trained, write_json_atomic

    class CriticTrainer(Trainer):
        """Trainer that logs both loss parts and saves only trained tensors, without pickle."""

        loss_is_scaled_for_ga = False

        def __init__(self, *args, run_extras: dict | None = None, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.run_extras = run_extras or {}
            self._parts = {"train": [0.0, 0.0, 0], "eval": [0.0, 0.0, 0]}

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            out = model(**inputs)
            part = self._parts["train" if model.training else "eval"]
            part[0] += float(out.lm_loss)
            part[1] += float(out.aux_loss)
            part[2] += 1
            return (out.loss, {"loss": out.loss}) if return_outputs else out.loss

        def log(self, logs: dict, start_time=None) -> None:
            for kind, prefix, key in (("train", "", "loss"), ("eval", "eval_", "eval_loss")):
                lm, aux, count = self._parts[kind]
                if key in logs and count:
                    logs[f"{prefix}lm_loss"] = lm / count
                    logs[f"{prefix}aux_loss"] = aux / count
                    self._parts[kind] = [0.0, 0.0, 0]
            super().log(logs, start_time)

        def _save(self, output_dir=None, state_dict=None) -> None:
            if not self.args.should_save:  # the Trainer calls _save on every process
                return
            folder = Path(output_dir or self.args.output_dir)
            save_trained(self.accelerator.unwrap_model(self.model), folder, self.run_extras)

        def _save_checkpoint(self, model, trial) -> None:
            super()._save_checkpoint(model, trial)
            self.accelerator.wait_for_everyone()
            if self.args.should_save:
                folder = Path(self.args.output_dir) / f"checkpoint-{self.state.global_step}"
                mark_complete(folder)

        def _save_optimizer_and_scheduler(self, output_dir: str) -> None:
            folder = Path(output_dir)
            folder.mkdir(parents=True, exist_ok=True)
            if self.args.should_save:
                save_optimizer_state(self.optimizer, folder)
                write_json_atomic(folder / "scheduler.json", json_safe(self.lr_scheduler.state_dict()))

        def _save_scaler(self, output_dir: str) -> None:
            if getattr(self.accelerator, "scaler", None) is not None:
                raise ModelError("fp16 loss scaling is not supported; mixcritic trains in bf16 or fp32.")

        def _save_rng_state(self, output_dir: str) -> None:
            folder = Path(output_dir)
            folder.mkdir(parents=True, exist_ok=True)
            rng_state_to_files(folder, self.args.process_index)

        def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
            self.accelerator.unwrap_model(self.model).load_trained_state(read_trained(Path(resume_from_checkpoint)))

        def _load_optimizer_and_scheduler(self, checkpoint) -> None:
            if checkpoint is None:
                return
            folder = Path(checkpoint)
            load_optimizer_state(self.optimizer, folder)
            self.lr_scheduler.load_state_dict(json.loads((folder / "scheduler.json").read_text()))

        def _load_rng_state(self, checkpoint) -> None:
            if checkpoint is not None:
                rng_state_from_files(Path(checkpoint), self.args.process_index)

        def _load_scaler(self, checkpoint) -> None:
            return None

    return CriticTrainer


def json_safe(value):
    """Scheduler state as plain JSON values (callables become None)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    if hasattr(value, "item"):
        return value.item()
    return None


def rich_progress_callback(enabled: bool):
    """A Trainer callback drawing a Rich progress bar on stderr, with one line per log/eval."""
    from transformers import TrainerCallback

    class RichProgress(TrainerCallback):
        def __init__(self) -> None:
            self.progress = None
            self.task = None

        def on_train_begin(self, args, state, control, **kwargs):
            if not enabled or not state.is_world_process_zero:
                return
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            from mixcritic.console import stderr

            self.progress = Progress(
                TextColumn("training"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=stderr
            )
            self.progress.start()
            self.task = self.progress.add_task("train", total=state.max_steps, completed=state.global_step)

        def on_step_end(self, args, state, control, **kwargs):
            if self.progress is not None:
                self.progress.update(self.task, completed=state.global_step)

        def on_log(self, args, state, control, logs=None, **kwargs):
            if self.progress is None or not logs:
                return
            shown = {k: v for k, v in logs.items() if "loss" in k or "rewards/" in k or k in ("learning_rate", "grad_norm")}
            if shown:
                text = "  ".join(f"{k}={v:.4g}" for k, v in shown.items())
                self.progress.console.print(f"step {state.global_step}: {text}", highlight=False)

        def on_train_end(self, args, state, control, **kwargs):
            if self.progress is not None:
                self.progress.stop()
                self.progress = None

    return RichProgress()


# -- the run ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class TrainRequest:
    """What ``mixcritic train`` was asked to do."""

    data_dir: Path
    """Dataset folder from ``mixcritic synth``."""
    out_dir: Path
    """Run folder: checkpoints, final model/, train_summary.json."""
    preset: str = "tiny"
    """paper, paper-run or tiny."""
    train_overrides: tuple = ()
    """(name, value) pairs replacing TrainSettings fields."""
    model_overrides: tuple = ()
    """(name, value) pairs replacing CriticSettings fields."""
    resume: bool = False
    """Continue from the last complete checkpoint in out_dir."""
    device: str = "auto"
    """auto, cpu, cuda, cuda:N or mps."""
    progress: bool = True
    """Show a Rich progress bar on stderr."""


def resolve_settings(request: TrainRequest, source, inspect_sources: bool = True) -> tuple[TrainSettings, Any]:
    """Preset + overrides + the dataset's audio settings -> (TrainSettings, CriticSettings).

    ``inspect_sources``: build the tiny base models when the tiny preset needs them and read the
    encoder snapshot's ``do_normalize``. False for ``--show-config``, which must write nothing
    and load nothing (the settings then show the preset's sources as they are).
    """
    from mixcritic.critics.llm import resolve_device
    from mixcritic.critics.llm.settings import CriticSettings
    from mixcritic.critics.llm.prompt import PROMPT_VERSION

    train, model = preset_settings(request.preset)
    train = replace(train, **dict(request.train_overrides))
    model = model | dict(request.model_overrides) | dataset_audio_settings(source) | {"prompt_version": PROMPT_VERSION}
    if inspect_sources:
        if request.preset == "tiny":
            model = tiny_base_sources(model, "llm_source" in dict(request.model_overrides))
        flag = snapshot_normalize_flag(model["encoder_source"])
        if flag is not None:
            model["normalize_input"] = flag
        model["autocast_bf16"] = uses_bf16(train, resolve_device(request.device))
    else:
        for key in ("encoder_source", "llm_source"):
            model.setdefault(key, "tiny random-init model (built on first use)")
    return train, CriticSettings(**model)


def tiny_base_sources(model: dict, llm_given: bool) -> dict:
    """Tiny preset: the tiny Qwen2 (unless ``--llm`` was given) and, for ``--encoder tiny-mert``, the
    tiny random MERT, both built once into the cache; ``tiny_spec`` is recorded to rebuild them."""
    from mixcritic.critics.llm.tiny import TinySpec, ensure_tiny_base

    if llm_given and model.get("encoder_source") != TINY_MERT_SOURCE:
        return model
    spec = TinySpec(**(model.get("tiny_spec") or {}))
    mert_dir, llm_dir = ensure_tiny_base(spec)
    if model.get("encoder_source") == TINY_MERT_SOURCE:
        model = model | {"encoder_source": str(mert_dir)}
    if not llm_given:
        model = model | {"llm_source": str(llm_dir), "tiny_spec": asdict(spec)}
    return model


SHOWN_NAMES = {"learning_rate": "lr", "encoder_source": "encoder", "llm_source": "llm"}
"""Settings whose option name differs from the field name (``--lr``, ``--encoder``, ``--llm``)."""

SHOWN_MODEL_FIELDS = ("encoder_source", "llm_source", "quantize_4bit", "audio_pool", "lora_r", "lora_alpha",
                      "lora_dropout", "projector_hidden", "projector_activation", "projector_dropout",
                      "aux_loss_weight", "aux_loss_norm", "standardize_clips", "gradient_checkpointing", "system_message")
"""CriticSettings fields that are ``train`` options (the rest come from the dataset or the code)."""


def resolved_config(request: TrainRequest, source=None) -> dict:
    """The settings a ``train`` command would use, after preset and overrides, keyed by option name
    in snake_case (``lr``, ``batch_size``, ``projector_hidden`` as a list, ...). Loads no model and
    writes nothing (``train --show-config``); ``quantize_4bit`` is the ``--4bit`` option."""
    if source is None:
        from mixcritic.dataset import open_dataset

        source = open_dataset(request.data_dir)
    train, settings = resolve_settings(request, source, inspect_sources=False)
    model = settings.to_dict()
    shown = {"preset": request.preset}
    shown |= {SHOWN_NAMES.get(k, k): v for k, v in asdict(train).items()}
    shown |= {SHOWN_NAMES.get(k, k): model[k] for k in SHOWN_MODEL_FIELDS}
    return shown


def snapshot_normalize_flag(source: str) -> bool | None:
    """The encoder snapshot's ``do_normalize`` (preprocessor_config.json), None when the snapshot is
    not available here (loading reports that with the fix)."""
    from mixcritic.critics.llm.encoder import read_normalize_flag, resolve_model_dir

    try:
        return read_normalize_flag(resolve_model_dir(source))
    except ModelError:
        return None


def uses_bf16(train: TrainSettings, device: str) -> bool:
    """Whether training runs under bf16 autocast: asked for, on a CUDA device that supports it."""
    import torch

    return bool(train.bf16 and device.startswith("cuda") and torch.cuda.is_bf16_supported())


def check_resume_compatible(checkpoint: Path, settings, train: TrainSettings | None = None) -> None:
    """Refuse to resume a run with different model settings (it would load mismatched tensors) or a
    different batch size, accumulation, learning rate, epochs or schedule (``RESUME_LOCKED``)."""
    from mixcritic.critics.llm.checkpoint import SETTINGS_FILE, read_settings

    previous = read_settings(checkpoint).to_dict()
    current = settings.to_dict()
    differing = sorted(k for k in current if previous.get(k) != current[k])
    if differing:
        raise ModelError(f"--resume: the run in {checkpoint.parent} used different settings ({', '.join(differing)}); "
                         "resume with the same options or start a new --out folder.")
    if train is None:
        return
    stored = json.loads((checkpoint / SETTINGS_FILE).read_text()).get("run_train_settings") or {}
    changes = [f"{option} was {stored[name]} when the run started, now {getattr(train, name)}"
               for name, option in RESUME_LOCKED.items() if name in stored and stored[name] != getattr(train, name)]
    if changes:
        raise ModelError(f"--resume: {'; '.join(changes)} (in {checkpoint.parent}); resume with the run's values "
                         "or start a new --out folder.")


def check_steps_left(checkpoint: Path, train: TrainSettings | None) -> None:
    """Refuse to resume a run that already reached ``--max-steps`` (the Trainer would run one step more)."""
    from mixcritic.critics.llm.checkpoint import CHECKPOINT_PATTERN

    match = CHECKPOINT_PATTERN.match(checkpoint.name)
    if train is None or train.max_steps < 1 or match is None:
        return
    step = int(match.group(1))
    if step >= train.max_steps:
        raise ModelError(f"--resume: {checkpoint} is at step {step}, already at --max-steps {train.max_steps}; "
                         "pass a larger --max-steps to train further.")


def drop_incomplete_checkpoints(run_dir: Path) -> list[Path]:
    """Delete ``checkpoint-N`` folders without a COMPLETE marker (interrupted saves); returns them."""
    import shutil

    from mixcritic.console import warn
    from mixcritic.critics.llm.checkpoint import CHECKPOINT_PATTERN, is_complete

    dropped = []
    for child in sorted(run_dir.iterdir()):
        if CHECKPOINT_PATTERN.match(child.name) and child.is_dir() and not is_complete(child):
            warn(f"{child} is an interrupted save (no COMPLETE marker); removing it before resuming.")
            shutil.rmtree(child)
            dropped.append(child)
    return dropped


# -- devices ---------------------------------------------------------------------------------

def launched() -> bool:
    """True under torchrun / accelerate launch (they set LOCAL_RANK and WORLD_SIZE)."""
    import os

    return "LOCAL_RANK" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1


def single_process_device(device: str) -> tuple[str, str | None]:
    """The one device a process trains on, and a note when GPUs are left idle.

    Without a launcher, a machine with several GPUs still trains on one (``cuda:0``, or the
    ``--device cuda:N`` asked for): the Trainer would otherwise wrap the 4-bit model in
    ``DataParallel``, which crashes. The note says how to use all of them.
    """
    import torch

    if not device.startswith("cuda"):
        return device, None
    if device == "cuda" and not launched():
        device = "cuda:0"
    count = torch.cuda.device_count()
    if launched() or count <= 1:
        return device, None
    return device, (
        f"{count} GPUs found; without a launcher mixcritic trains on {device} only. To train on all {count} "
        f"(data parallel): torchrun --nproc_per_node {count} -m mixcritic train ... "
        "(or accelerate launch -m mixcritic train ...)."
    )


def pin_single_device(args, device: str) -> None:
    """Make the Trainer use exactly ``device`` (``cuda:N``) and no DataParallel, outside a launcher.

    TrainingArguments picks ``cuda:0`` and counts every visible GPU (``n_gpu``); with ``n_gpu > 1``
    the Trainer wraps the model in ``DataParallel``. Both are overridden here. No effect under a
    launcher (one GPU per process already) or on CPU / MPS.
    """
    import torch

    if not device.startswith("cuda") or launched():
        return
    target = torch.device(device if ":" in device else "cuda:0")
    _ = args.device  # let TrainingArguments set itself up first
    torch.cuda.set_device(target)
    args.__dict__["_setup_devices"] = target  # the cached value behind args.device
    args._n_gpu = 1


def training_arguments(train: TrainSettings, out_dir: Path, device: str, has_eval: bool):
    """The Hugging Face TrainingArguments for these settings."""
    from transformers import TrainingArguments

    bf16 = uses_bf16(train, device)
    try:
        return _training_arguments(TrainingArguments, train, out_dir, device, has_eval, bf16)
    except ValueError as exc:
        raise ModelError(f"invalid training option: {str(exc).splitlines()[0]}") from None


def _training_arguments(TrainingArguments, train: TrainSettings, out_dir: Path, device: str, has_eval: bool, bf16: bool):
    """TrainingArguments for mixcritic: no tqdm, no reports, own checkpointing, columns kept."""
    return TrainingArguments(
        output_dir=str(out_dir),
        num_train_epochs=train.epochs,
        max_steps=train.max_steps,
        per_device_train_batch_size=train.batch_size,
        per_device_eval_batch_size=train.batch_size,
        gradient_accumulation_steps=train.grad_accum,
        learning_rate=train.learning_rate,
        weight_decay=train.weight_decay,
        lr_scheduler_type=train.lr_scheduler,
        warmup_steps=train.warmup_steps,
        max_grad_norm=train.max_grad_norm,
        logging_steps=train.logging_steps,
        eval_strategy="steps" if has_eval and train.eval_steps > 0 else "no",
        eval_steps=train.eval_steps if has_eval and train.eval_steps > 0 else None,
        save_strategy="steps",
        save_steps=train.save_steps,
        save_total_limit=train.save_total_limit,
        seed=train.seed,
        data_seed=train.seed,
        dataloader_num_workers=train.workers,
        dataloader_pin_memory=device.startswith("cuda"),
        dataloader_persistent_workers=train.workers > 0,
        bf16=bf16,
        use_cpu=device == "cpu",
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
        label_names=["labels"],
        prediction_loss_only=True,
        save_only_model=False,
        log_level="error",
        ddp_find_unused_parameters=False,
    )


def prepare_run_dir(out_dir: Path, resume: bool, settings, train: TrainSettings | None = None,
                    is_main: bool = True, barrier=None) -> Path | None:
    """Check ``out_dir`` for a new run or a resume; returns the checkpoint to resume from.

    Every process checks; only the main one (``is_main``) removes interrupted checkpoints and
    creates the folder, then all meet at ``barrier`` (under torchrun several processes share it).
    """
    from mixcritic.critics.llm.checkpoint import last_complete_checkpoint

    resume_from = None
    if resume:
        resume_from = last_complete_checkpoint(out_dir)
        if resume_from is None:
            raise ModelError(f"--resume: {out_dir} has no complete checkpoint-N folder; start without --resume.")
        check_resume_compatible(resume_from, settings, train)
        check_steps_left(resume_from, train)
        if is_main:
            drop_incomplete_checkpoints(out_dir)
    elif out_dir.exists() and (any(out_dir.glob("checkpoint-*")) or (out_dir / "model").exists()):
        raise ModelError(f"{out_dir} already holds a run; pass --resume to continue it or choose a new --out.")
    if is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
    if barrier is not None:
        barrier()
    return resume_from


def clip_datasets(source, train: TrainSettings, samples: int) -> tuple[ClipDataset, ClipDataset | None]:
    """The training split, and a fixed random subset of the validation split (None without one)."""
    train_set = ClipDataset(source, source.records(TRAIN_SPLIT), samples, augment=train)
    val_name = validation_split(source)
    if val_name is None:
        return train_set, None
    val_records = source.records(val_name)
    picks = random.Random(train.seed).sample(range(len(val_records)), min(train.max_eval_samples, len(val_records)))
    return train_set, ClipDataset(source, [val_records[i] for i in sorted(picks)], samples)


def fit_feature_norm(model, train_set: ClipDataset, clips: int, seed: int, batch_size: int = 4) -> int:
    """Fit the encoder-feature standardisation on ``clips`` random training clips; returns frames seen."""
    import numpy as np
    import torch

    picks = sorted(random.Random(seed).sample(range(len(train_set)), min(clips, len(train_set))))

    def batches():
        for start in range(0, len(picks), batch_size):
            audio = np.stack([train_set[i]["audio"] for i in picks[start:start + batch_size]])
            yield model.encoder_states(torch.from_numpy(audio))

    return model.feature_norm.fit(batches())


def run_training(request: TrainRequest, source=None) -> dict:
    """Train (or resume) a run; returns the summary also written to ``RUN/train_summary.json``.

    ``source``: an already-open dataset (anything with ``info``, ``records(split)`` and
    ``render(record, normalize=True)``); opened from ``request.data_dir`` when None.
    """
    if source is None:  # a bad dataset is reported before any heavy import
        from mixcritic.dataset import open_dataset

        source = open_dataset(request.data_dir)

    from mixcritic.critics.llm import build_critic, resolve_device  # first: quiets bitsandbytes' logger

    import torch
    from accelerate import PartialState
    from transformers.trainer_callback import PrinterCallback

    from mixcritic.console import warn
    from mixcritic.critics.llm.checkpoint import COMPLETE_MARKER, mark_complete, write_json_atomic
    from mixcritic.distributed import close_process_group

    device, note = single_process_device(resolve_device(request.device))
    train, settings = resolve_settings(replace(request, device=device), source)
    out_dir = Path(request.out_dir)
    train_set, eval_set = clip_datasets(source, train, settings.segment_samples)
    args = training_arguments(train, out_dir, device, eval_set is not None)
    pin_single_device(args, device)  # one GPU without a launcher: no DataParallel
    _ = args.device  # under a launcher: sets up the process group the barrier below uses
    if note:
        warn(note)
    resume_from = prepare_run_dir(out_dir, request.resume, settings, train, is_main=args.process_index == 0,
                                  barrier=PartialState().wait_for_everyone)

    torch.manual_seed(train.seed)
    model = build_critic(settings, device, training=True, seed=train.seed)
    if model.feature_norm is not None and resume_from is None:
        fit_feature_norm(model, train_set, settings.standardize_clips, train.seed)
    extras = {"run_train_settings": asdict(train), "run_data_dir": str(Path(request.data_dir).resolve()),
              "run_preset": request.preset}  # the tiny preset marks a wiring-only run (inference.is_wiring_only)
    trainer = make_trainer_class()(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=CriticCollator(model.tokenizer, model.frames_per_clip(settings.segment_samples), settings.system_message),
        callbacks=[rich_progress_callback(request.progress)],
        run_extras=extras,
    )
    trainer.remove_callback(PrinterCallback)  # stdout is for results; progress goes to stderr
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    seconds = time.perf_counter() - started
    final = out_dir / "model"
    if trainer.args.should_save:
        (final / COMPLETE_MARKER).unlink(missing_ok=True)  # a resumed run replaces an older final model
    trainer.save_model(str(final))
    trainer.accelerator.wait_for_everyone()
    summary = summarize(trainer, result, seconds, train, settings, out_dir, resume_from, len(train_set))
    if trainer.args.should_save:
        mark_complete(final)
        write_json_atomic(out_dir / "train_summary.json", summary)
    close_process_group()
    return summary


def summarize(trainer, result, seconds, train, settings, out_dir, resume_from, train_samples) -> dict:
    """The run's final numbers: steps, losses, timings, where the model is."""
    history = trainer.state.log_history
    train_logs = [h for h in history if "loss" in h]
    eval_logs = [h for h in history if "eval_loss" in h]
    steps_done = trainer.state.global_step
    samples = result.metrics.get("train_samples_per_second")
    return {
        "run_dir": str(out_dir),
        "model_dir": str(out_dir / "model"),
        "global_step": steps_done,
        "resumed_from": str(resume_from) if resume_from else None,
        "train_samples": train_samples,
        "first_loss": train_logs[0]["loss"] if train_logs else None,
        "final_loss": train_logs[-1]["loss"] if train_logs else None,
        "final_lm_loss": train_logs[-1].get("lm_loss") if train_logs else None,
        "final_aux_loss": train_logs[-1].get("aux_loss") if train_logs else None,
        "final_eval_loss": eval_logs[-1]["eval_loss"] if eval_logs else None,
        "train_seconds": round(seconds, 2),
        "samples_per_second": samples,
        "effective_batch": train.batch_size * train.grad_accum * trainer.args.world_size,
        "epochs": math.ceil(trainer.state.epoch or 0),
        "audio_pool": settings.audio_pool,
        "peak_gpu_memory_gib": peak_gpu_memory_gib(trainer.args.device),
        "log_history": history,
    }


def peak_gpu_memory_gib(device) -> float | None:
    """Peak memory torch allocated on a CUDA ``device`` in this process (GiB); None elsewhere."""
    import torch

    if torch.device(device).type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
