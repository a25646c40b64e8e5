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

PRESETS = ("paper", "tiny")
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

    def __post_init__(self) -> None:
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
        }
        for name, ok in rules.items():
            if not ok:
                raise ModelError(f"invalid --{name.replace('_', '-')}: {getattr(self, name)!r}")


def preset_settings(preset: str) -> tuple[TrainSettings, dict]:
    """(TrainSettings, model-settings dict) of a preset.

    ``paper``: the paper's recipe on MERT-v1-330M + Qwen2-7B-Instruct (4-bit).
    ``tiny``: the same code on tiny random-init models on CPU in about a minute: a much larger
    learning rate (random tiny models learn nothing at 1e-5 in 60 steps), no accumulation, and
    ``audio_pool`` 4 (187 instead of 749 audio positions: ~2x faster steps on a CPU).
    """
    from mixcritic.critics.llm.encoder import MERT_HUB_ID
    from mixcritic.critics.llm.language_model import QWEN_HUB_ID

    if preset == "paper":
        return TrainSettings(), {"encoder_source": MERT_HUB_ID, "llm_source": QWEN_HUB_ID}
    if preset == "tiny":
        train = TrainSettings(
            epochs=1.0, learning_rate=3e-3, weight_decay=0.0, batch_size=4, grad_accum=1, max_grad_norm=1.0,
            logging_steps=5, eval_steps=20, save_steps=20, max_steps=60, max_eval_samples=16, workers=1,
        )
        return train, {"projector_hidden": 64, "lora_r": 8, "lora_alpha": 16, "gradient_checkpointing": False,
                       "audio_pool": 4}
    raise ModelError(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")


# -- data ------------------------------------------------------------------------------------

class ClipDataset:
    """Torch map-style dataset: renders each record's mix on the fly (normalised) with its texts."""

    def __init__(self, source, records: list[dict], samples: int) -> None:
        self.source = source
        self.records = records
        self.samples = samples

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
        return {"audio": audio, "instruction": record["instruction"], "response": record["response"]}


class CriticCollator:
    """Tokenises prompts with ``n_audio`` audio positions and stacks the clips."""

    def __init__(self, tokenizer, n_audio: int) -> None:
        self.tokenizer = tokenizer
        self.n_audio = n_audio

    def __call__(self, items: list[dict]) -> dict:
        import numpy as np
        import torch

        from mixcritic.critics.llm.prompt import build_example, collate_examples

        examples = [build_example(self.tokenizer, it["instruction"], self.n_audio, it["response"]) for it in items]
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
    """paper or tiny."""
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


def resolve_settings(request: TrainRequest, source) -> tuple[TrainSettings, Any]:
    """Preset + overrides + the dataset's audio settings -> (TrainSettings, CriticSettings)."""
    from mixcritic.critics.llm.critic import CriticSettings
    from mixcritic.critics.llm.prompt import PROMPT_VERSION

    train, model = preset_settings(request.preset)
    train = replace(train, **dict(request.train_overrides))
    model = model | dict(request.model_overrides) | dataset_audio_settings(source) | {"prompt_version": PROMPT_VERSION}
    if request.preset == "tiny" and not ({"encoder_source", "llm_source"} & set(dict(request.model_overrides))):
        from mixcritic.critics.llm.tiny import TinySpec, ensure_tiny_base

        spec = TinySpec(**(model.get("tiny_spec") or {}))
        mert_dir, llm_dir = ensure_tiny_base(spec)
        model |= {"encoder_source": str(mert_dir), "llm_source": str(llm_dir), "tiny_spec": asdict(spec)}
    return train, CriticSettings(**model)


def check_resume_compatible(run_dir: Path, settings) -> None:
    """Refuse to resume a run with different model settings (it would load mismatched tensors)."""
    from mixcritic.critics.llm.checkpoint import read_settings

    previous = read_settings(run_dir).to_dict()
    current = settings.to_dict()
    differing = sorted(k for k in current if previous.get(k) != current[k])
    if differing:
        raise ModelError(f"--resume: the run in {run_dir.parent} used different settings ({', '.join(differing)}); "
                         "resume with the same options or start a new --out folder.")


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


def training_arguments(train: TrainSettings, out_dir: Path, device: str, has_eval: bool):
    """The Hugging Face TrainingArguments for these settings."""
    import torch
    from transformers import TrainingArguments

    bf16 = train.bf16 and device.startswith("cuda") and torch.cuda.is_bf16_supported()
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


def prepare_run_dir(out_dir: Path, resume: bool, settings) -> Path | None:
    """Check ``out_dir`` for a new run or a resume; returns the checkpoint to resume from."""
    from mixcritic.critics.llm.checkpoint import last_complete_checkpoint

    resume_from = None
    if resume:
        resume_from = last_complete_checkpoint(out_dir)
        if resume_from is None:
            raise ModelError(f"--resume: {out_dir} has no complete checkpoint-N folder; start without --resume.")
        check_resume_compatible(resume_from, settings)
        drop_incomplete_checkpoints(out_dir)
    elif out_dir.exists() and (any(out_dir.glob("checkpoint-*")) or (out_dir / "model").exists()):
        raise ModelError(f"{out_dir} already holds a run; pass --resume to continue it or choose a new --out.")
    out_dir.mkdir(parents=True, exist_ok=True)
    return resume_from


def clip_datasets(source, train: TrainSettings, samples: int) -> tuple[ClipDataset, ClipDataset | None]:
    """The training split, and a fixed random subset of the validation split (None without one)."""
    train_set = ClipDataset(source, source.records(TRAIN_SPLIT), samples)
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
    from transformers.trainer_callback import PrinterCallback

    from mixcritic.critics.llm.checkpoint import COMPLETE_MARKER, mark_complete, write_json_atomic

    device = resolve_device(request.device)
    train, settings = resolve_settings(request, source)
    out_dir = Path(request.out_dir)
    train_set, eval_set = clip_datasets(source, train, settings.segment_samples)
    args = training_arguments(train, out_dir, device, eval_set is not None)
    resume_from = prepare_run_dir(out_dir, request.resume, settings)

    torch.manual_seed(train.seed)
    model = build_critic(settings, device, training=True)
    if model.feature_norm is not None and resume_from is None:
        fit_feature_norm(model, train_set, settings.standardize_clips, train.seed)
    extras = {"run_train_settings": asdict(train), "run_data_dir": str(Path(request.data_dir).resolve())}
    trainer = make_trainer_class()(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=CriticCollator(model.tokenizer, model.frames_per_clip(settings.segment_samples)),
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
        "log_history": history,
    }
