"""`mixcritic train`: fine-tune the projector, layer weights and LoRA adapter on a synth dataset."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from mixcritic.console import print_json
from mixcritic.options import DataArgument, DeviceOption, JsonOption

PRESET_HELP = (
    "paper: MERT-v1-330M + Qwen2-7B-Instruct in 4-bit, the paper's recipe (needs a GPU and local weights). "
    "tiny: tiny random-init models, runs on a CPU in about a minute (offline default)."
)

Opt = typer.Option


def train(
    data: DataArgument,
    out: Annotated[Path, Opt("--out", help="Run folder: checkpoint-N/, model/, train_summary.json.")],
    preset: Annotated[str, Opt("--preset", help=PRESET_HELP)] = "tiny",
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
    stage: Annotated[str, Opt("--stage", help="sft: supervised training (default). dpo: preference training on DATA/dpo/ pairs, continuing --from an SFT run.")] = "sft",
    from_run: Annotated[Optional[Path], Opt("--from", help="--stage dpo: the finished SFT run to start from (its model settings are kept).")] = None,
    beta: Annotated[Optional[float], Opt("--beta", help="--stage dpo: DPO beta, the strength of the pull towards the SFT model (default 0.1).")] = None,
    rejected_kinds: Annotated[Optional[str], Opt("--rejected-kinds", help="--stage dpo: train only on pairs with these rejected kinds, comma-separated (false_alarm, missed_flaw, wrong_stem, wrong_direction, wrong_severity; default all).")] = None,
    device: DeviceOption = "auto",
    json_out: JsonOption = False,
) -> None:
    """Train MERT -> projector -> Qwen2 (QLoRA) on a dataset from `mixcritic synth`.

    Checkpoints hold only trained tensors (safetensors) and settings (JSON). Under
    `accelerate launch` or `torchrun` the same command trains data-parallel on several GPUs.
    """
    from mixcritic.critics.llm.train import TrainRequest

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
    request = TrainRequest(
        data_dir=data,
        out_dir=out,
        preset=preset,
        train_overrides=tuple((k, v) for k, v in train_values.items() if v is not None),
        model_overrides=tuple((k, v) for k, v in model_values.items() if v is not None),
        resume=resume,
        device=device,
        progress=not json_out,
    )
    summary = run_stage(request, stage, from_run, beta, rejected_kinds)
    if int(os.environ.get("RANK", "0")) != 0:
        return  # data-parallel run: only the first process reports
    if json_out:
        print_json({k: v for k, v in summary.items() if k != "log_history"})
    else:
        print_summary(summary)


def run_stage(request, stage: str, from_run: Optional[Path], beta: Optional[float], rejected_kinds: Optional[str]) -> dict:
    """SFT (``run_training``) or DPO (``run_dpo``), after checking the stage options belong together."""
    from mixcritic.errors import ModelError

    if stage not in ("sft", "dpo"):
        raise ModelError(f"--stage must be sft or dpo, got {stage!r}")
    if stage == "sft":
        given = [name for name, value in (("--from", from_run), ("--beta", beta), ("--rejected-kinds", rejected_kinds)) if value is not None]
        if given:
            raise ModelError(f"{', '.join(given)} only apply to --stage dpo; add --stage dpo --from SFT_RUN.")
        from mixcritic.critics.llm.train import run_training

        return run_training(request)
    if from_run is None:
        raise ModelError("--stage dpo needs --from SFT_RUN, the finished SFT run to continue (`mixcritic train DATA --out SFT_RUN`).")
    from mixcritic.critics.llm.dpo import DpoRequest, DpoSettings, parse_kinds, run_dpo

    dpo = DpoSettings(beta=0.1 if beta is None else beta, rejected_kinds=parse_kinds(rejected_kinds))
    return run_dpo(DpoRequest(train=request, sft_run=from_run, dpo=dpo))


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
    if summary.get("stage") == "dpo":
        rewards = summary.get("final_rewards") or {}
        rows[4:4] = [("stage", f"dpo from {summary['sft_run']} (beta {summary['beta']}, kinds {summary['rejected_kinds']})"),
                     ("final rewards/margins", fmt(rewards.get("rewards/margins"))),
                     ("final rewards/accuracies", fmt(rewards.get("rewards/accuracies")))]
    for name, value in rows:
        table.add_row(name, str(value))
    stdout.print(table)


def fmt(value) -> str:
    """A loss for display."""
    return "-" if value is None else f"{value:.4f}"
