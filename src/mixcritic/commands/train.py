"""`mixcritic train`: fit a critic on a synth dataset: the measured engine (seconds, CPU) or the
LLM engine (the projector, layer weights and LoRA adapter, the paper's fine-tuning)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from mixcritic.console import print_json
from mixcritic.errors import MixcriticError
from mixcritic.options import DataArgument, DeviceOption, JsonOption

PRESET_HELP = (
    "paper: MERT-v1-330M + Qwen2-7B-Instruct in 4-bit, the paper's recipe (needs a GPU and local weights). "
    "tiny: tiny random-init models, runs on a CPU in about a minute; a wiring check whose advice is near chance "
    "(offline default). LLM engine only."
)
ENGINE_HELP = (
    "measured: fit the measured critic (stem levels against a model of natural balance; needs the separate stems "
    "at critique time) in seconds on a CPU. llm: fine-tune the paper's MERT -> Qwen2 critic, which hears the mix."
)
ENGINES = ("measured", "llm")

Opt = typer.Option


def train(
    data: DataArgument,
    out: Annotated[Path, Opt("--out", help="Run folder: model/ (both engines), checkpoint-N/ and train_summary.json (llm).")],
    engine: Annotated[str, Opt("--engine", help=ENGINE_HELP)] = "llm",
    preset: Annotated[Optional[str], Opt("--preset", help=PRESET_HELP + " \\[default: tiny]", show_default=False)] = None,
    max_steps: Annotated[Optional[int], Opt("--max-steps", help="Stop after N optimizer steps (default: all epochs; tiny: 60).")] = None,
    resume: Annotated[bool, Opt("--resume", help="Continue from the last complete checkpoint in --out.")] = False,
    epochs: Annotated[Optional[float], Opt("--epochs", help="Epochs (paper 3).")] = None,
    lr: Annotated[Optional[float], Opt("--lr", help="Peak learning rate (paper 1e-5).")] = None,
    weight_decay: Annotated[Optional[float], Opt("--weight-decay", help="AdamW weight decay (paper 0.01).")] = None,
    batch_size: Annotated[Optional[int], Opt("--batch-size", help="Clips per device per step (paper 4).")] = None,
    grad_accum: Annotated[Optional[int], Opt("--grad-accum", help="Gradient accumulation steps (paper 16).")] = None,
    max_grad_norm: Annotated[Optional[float], Opt("--max-grad-norm", help="Gradient clipping (paper 0.8).")] = None,
    lr_scheduler: Annotated[Optional[str], Opt("--lr-scheduler", help="Schedule name (paper cosine).")] = None,
    warmup_steps: Annotated[Optional[int], Opt("--warmup-steps", help="Warmup steps (paper 0).")] = None,
    logging_steps: Annotated[Optional[int], Opt("--logging-steps", help="Log every N steps (paper 5).")] = None,
    eval_steps: Annotated[Optional[int], Opt("--eval-steps", help="Validation loss every N steps (0 = never).")] = None,
    save_steps: Annotated[Optional[int], Opt("--save-steps", help="Checkpoint every N steps.")] = None,
    save_total_limit: Annotated[Optional[int], Opt("--save-total-limit", help="Checkpoints kept.")] = None,
    max_eval_samples: Annotated[Optional[int], Opt("--max-eval-samples", help="Validation clips per evaluation.")] = None,
    workers: Annotated[Optional[int], Opt("--workers", help="DataLoader processes rendering mixes.")] = None,
    seed: Annotated[Optional[int], Opt("--seed", help="Seed for initialisation and data order.")] = None,
    bf16: Annotated[Optional[bool], Opt("--bf16/--no-bf16", help="bf16 autocast on GPUs that support it.")] = None,
    encoder: Annotated[Optional[str], Opt("--encoder", help="MERT hub id or local snapshot dir (paper m-a-p/MERT-v1-330M).")] = None,
    llm: Annotated[Optional[str], Opt("--llm", help="Qwen2 hub id or local dir (paper Qwen/Qwen2-7B-Instruct).")] = None,
    quantize: Annotated[Optional[bool], Opt("--4bit/--no-4bit", help="Load the LLM in 4-bit NF4 (QLoRA; default on).")] = None,
    audio_pool: Annotated[Optional[int], Opt("--audio-pool", help="Average N encoder frames before the projector (1 = paper).")] = None,
    lora_r: Annotated[Optional[int], Opt("--lora-r", help="LoRA rank (paper 16).")] = None,
    lora_alpha: Annotated[Optional[int], Opt("--lora-alpha", help="LoRA alpha (paper 32).")] = None,
    lora_dropout: Annotated[Optional[float], Opt("--lora-dropout", help="LoRA dropout (0.05).")] = None,
    projector_hidden: Annotated[Optional[int], Opt("--projector-hidden", help="Projector width (paper 2048).")] = None,
    projector_dropout: Annotated[Optional[float], Opt("--projector-dropout", help="Projector dropout (paper 0.1).")] = None,
    aux_loss_weight: Annotated[Optional[float], Opt("--aux-loss-weight", help="Auxiliary loss weight (paper 0.05).")] = None,
    standardize_clips: Annotated[Optional[int], Opt("--standardize-clips", help="Standardise encoder features with statistics from N training clips (0 = off, paper).")] = None,
    gradient_checkpointing: Annotated[Optional[bool], Opt("--gradient-checkpointing/--no-gradient-checkpointing", help="Activation checkpointing in the LLM.")] = None,
    device: DeviceOption = "auto",
    json_out: JsonOption = False,
) -> None:
    """Train a critic on a dataset from `mixcritic synth`: measured (seconds) or MERT -> projector -> Qwen2 (QLoRA).

    Both engines write RUN/model/mixcritic.json naming the engine; `critique --model RUN` and
    `evaluate --model RUN` take either. LLM checkpoints hold only trained tensors (safetensors) and
    settings (JSON). Under `accelerate launch` or `torchrun` the same command trains an LLM run
    data-parallel on several GPUs.

    Examples:

      mixcritic train DATA --engine measured --out RUN

      mixcritic train DATA --out RUN --preset paper
    """

    train_values = {
        "max_steps": max_steps, "epochs": epochs, "learning_rate": lr, "weight_decay": weight_decay,
        "batch_size": batch_size, "grad_accum": grad_accum, "max_grad_norm": max_grad_norm,
        "lr_scheduler": lr_scheduler, "warmup_steps": warmup_steps, "logging_steps": logging_steps,
        "eval_steps": eval_steps, "save_steps": save_steps, "save_total_limit": save_total_limit,
        "max_eval_samples": max_eval_samples, "workers": workers, "seed": seed, "bf16": bf16,
    }
    model_values = {
        "encoder_source": encoder, "llm_source": llm, "quantize_4bit": quantize, "audio_pool": audio_pool,
        "lora_r": lora_r, "lora_alpha": lora_alpha, "lora_dropout": lora_dropout,
        "projector_hidden": projector_hidden, "projector_dropout": projector_dropout,
        "aux_loss_weight": aux_loss_weight, "gradient_checkpointing": gradient_checkpointing,
        "standardize_clips": standardize_clips,
    }
    if engine not in ENGINES:
        raise MixcriticError(f"--engine {engine!r} is unknown; use one of {', '.join(ENGINES)}")
    if engine == "measured":
        llm_only = {"preset": preset, "resume": resume or None, **train_values, **model_values}
        given = [f"--{name.replace('_', '-')}" for name, value in llm_only.items() if value is not None]
        if given:
            raise MixcriticError(f"{', '.join(given)}: LLM training option(s), not used by --engine measured; drop them")
        report(train_measured(data, out), json_out)
        return
    from mixcritic.critics.llm.train import TrainRequest, run_training

    request = TrainRequest(
        data_dir=data,
        out_dir=out,
        preset=preset or "tiny",
        train_overrides=tuple((k, v) for k, v in train_values.items() if v is not None),
        model_overrides=tuple((k, v) for k, v in model_values.items() if v is not None),
        resume=resume,
        device=device,
        progress=not json_out,
    )
    summary = run_training(request)
    if int(os.environ.get("RANK", "0")) != 0:
        return  # data-parallel run: only the first process reports
    report(summary, json_out)


def report(summary: dict, json_out: bool) -> None:
    """The run's summary: JSON (without the log history) or a Rich table."""
    if json_out:
        print_json({k: v for k, v in summary.items() if k != "log_history"})
    elif summary.get("engine") == "measured":
        print_measured_summary(summary)
    else:
        print_summary(summary)


def train_measured(data: Path, out: Path) -> dict:
    """Fit the measured critic on the dataset's train split and save it as ``out/model``; its summary."""
    import time

    from mixcritic.critics.measured import fit_measured, save_measured

    started = time.perf_counter()
    critic = fit_measured(data, split="train")
    saved = save_measured(critic, out)
    return {
        "engine": "measured", "run_dir": str(out), "model_dir": str(saved.parent if saved.is_file() else saved),
        "critic": critic.describe(), "train_seconds": round(time.perf_counter() - started, 2),
    }


def print_measured_summary(summary: dict) -> None:
    """A Rich table of a measured fit on stdout."""
    from rich.table import Table

    from mixcritic.console import stdout

    table = Table(title="mixcritic train --engine measured", show_header=False)
    for name, key in (("critic", "critic"), ("model", "model_dir")):
        table.add_row(name, str(summary[key]))
    table.add_row("time", f"{summary['train_seconds']:.1f} s")
    stdout.print(table)


def print_summary(summary: dict) -> None:
    """A Rich table of the run's final numbers on stdout."""
    from rich.table import Table

    from mixcritic.console import stdout

    table = Table(title="mixcritic train", show_header=False)
    rows = [
        ("steps", summary["global_step"]), ("resumed from", summary["resumed_from"] or "-"),
        ("train samples", summary["train_samples"]), ("effective batch", summary["effective_batch"]),
        ("first / final loss", f"{fmt(summary['first_loss'])} / {fmt(summary['final_loss'])}"),
        ("final LM / aux loss", f"{fmt(summary['final_lm_loss'])} / {fmt(summary['final_aux_loss'])}"),
        ("final validation loss", fmt(summary["final_eval_loss"])),
        ("time", f"{summary['train_seconds']:.1f} s"), ("model", summary["model_dir"]),
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    stdout.print(table)


def fmt(value) -> str:
    """A loss for display."""
    return "-" if value is None else f"{value:.4f}"
