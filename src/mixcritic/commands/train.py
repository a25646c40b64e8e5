"""`mixcritic train`: fit a critic on a synth dataset: the measured engine (seconds, CPU) or the
LLM engine (the projector, layer weights and LoRA adapter, the paper's fine-tuning)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from mixcritic.console import print_json
from mixcritic.errors import Interrupted, MixcriticError, ModelError
from mixcritic.options import TINY_MUTED_SCORES, TINY_SCORES, DataArgument, DeviceOption, JsonOption

PRESET_HELP = (
    "paper: MERT-v1-330M + Qwen2-7B-Instruct in 4-bit, the recipe in the paper's text (needs a GPU and local weights). "
    "paper-run: the same models with the authors' published run (GELU projector 2048-4096-4096-2048, aux 0.1 on "
    "norms/d, wd 0.05, clip 1.0, batch 16x4, 10 epochs, seed 42, augmentation, system message). "
    "tiny: log-mel front end + tiny random-init Qwen2, 750 steps of 16 clips, minutes on a CPU; it listens "
    f"({TINY_SCORES}, {TINY_MUTED_SCORES} muted) but knows only toy songs (offline default). LLM engine only; see the values with --show-config."
)
ENGINE_HELP = (
    "measured: fit the measured critic (stem levels against a model of natural balance; needs the separate stems "
    "at critique time) in seconds on a CPU, on the train and valid songs (it cross-validates by song itself). "
    "llm: fine-tune the paper's MERT -> Qwen2 critic, which hears the mix."
)
ENGINES = ("measured", "llm")
_OPTION_NAMES = {"from_run": "--from", "learning_rate": "--lr", "encoder_source": "--encoder", "llm_source": "--llm", "quantize_4bit": "--4bit"}
"""Command-line spelling of the settings whose option name differs from the field name."""

Opt = typer.Option


def train(
    ctx: typer.Context,
    data: DataArgument,
    out: Annotated[Path, Opt("--out", help="Run folder: model/ (both engines), checkpoint-N/ and train_summary.json (llm).")],
    engine: Annotated[str, Opt("--engine", help=ENGINE_HELP)] = "llm",
    preset: Annotated[Optional[str], Opt("--preset", help=PRESET_HELP + " (default: tiny)", show_default=False)] = None,
    max_steps: Annotated[Optional[int], Opt("--max-steps", help="Stop after N optimizer steps (default: all epochs; tiny: 750).")] = None,
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
    projector_hidden: Annotated[Optional[str], Opt("--projector-hidden", help="Projector hidden widths, comma-separated (paper-run 2048,4096,4096,2048); one number = that width x 4 layers (paper 2048).")] = None,
    projector_activation: Annotated[Optional[str], Opt("--projector-activation", help="relu (paper) or gelu (paper-run).")] = None,
    projector_dropout: Annotated[Optional[float], Opt("--projector-dropout", help="Projector dropout (paper 0.1).")] = None,
    aux_loss_weight: Annotated[Optional[float], Opt("--aux-loss-weight", help="Auxiliary loss weight (paper 0.05, paper-run 0.1).")] = None,
    aux_loss_norm: Annotated[Optional[str], Opt("--aux-loss-norm", help="Aux loss compares L2 norms / sqrt(d) (sqrt_d, ours) or / d (d, paper-run).")] = None,
    system_message: Annotated[Optional[str], Opt("--system-message", help="System turn of every prompt (default: the chat template's own).")] = None,
    augment_gain_db: Annotated[Optional[float], Opt("--augment-gain-db", help="Training only: random gain within +-N dB (0 = off; paper-run 3).")] = None,
    augment_noise_snr_db: Annotated[Optional[str], Opt("--augment-noise-snr-db", help="Training only: noise at an SNR within LOW,HIGH dB (paper-run 40,60; 'off' = none).")] = None,
    augment_dc_offset: Annotated[Optional[float], Opt("--augment-dc-offset", help="Training only: random DC offset within +-N (0 = off; paper-run 0.005).")] = None,
    standardize_clips: Annotated[Optional[int], Opt("--standardize-clips", help="Standardise encoder features with statistics from N training clips (0 = off, paper).")] = None,
    gradient_checkpointing: Annotated[Optional[bool], Opt("--gradient-checkpointing/--no-gradient-checkpointing", help="Activation checkpointing in the LLM.")] = None,
    stage: Annotated[str, Opt("--stage", help="sft: supervised training (default). dpo: preference training on DATA/dpo/ pairs, continuing --from an SFT run.")] = "sft",
    from_run: Annotated[Optional[Path], Opt("--from", help="--stage dpo: the finished SFT run to start from (its model settings are kept).")] = None,
    beta: Annotated[Optional[float], Opt("--beta", help="--stage dpo: DPO beta, the strength of the pull towards the SFT model (default 0.1).")] = None,
    rejected_kinds: Annotated[Optional[str], Opt("--rejected-kinds", help="--stage dpo: train only on pairs with these rejected kinds, comma-separated (false_alarm, missed_flaw, wrong_stem, wrong_direction, wrong_severity; default all).")] = None,
    device: DeviceOption = "auto",
    show_config: Annotated[bool, Opt("--show-config", help="Print the resolved LLM settings (preset + options) and exit: trains nothing, writes nothing.")] = False,
    json_out: JsonOption = False,
) -> None:
    """Train a critic on a dataset from `mixcritic synth`: measured (seconds) or MERT -> projector -> Qwen2 (QLoRA).

    Both engines write RUN/model/mixcritic.json naming the engine; `critique --model RUN` and
    `evaluate --model RUN` take either. LLM checkpoints hold only trained tensors (safetensors) and
    settings (JSON). Under `accelerate launch` or `torchrun` the same command trains an LLM run
    data-parallel on several GPUs; without a launcher it trains on one device (--device cuda:N)
    and says how to use them all.

    After Ctrl-C, the command printed continues the LLM run from its last complete checkpoint.

    Examples:

    \b
      mixcritic train toy-data --engine measured --out toy-run
      mixcritic train toy-data --out toy-run
      mixcritic train data --out run --preset paper \\
          --encoder ./MERT-v1-330M --llm ./Qwen2-7B-Instruct
      mixcritic train data --out run --preset paper --resume
      mixcritic train data --out run --preset paper-run --show-config
    """

    train_values = {
        "max_steps": max_steps, "epochs": epochs, "learning_rate": lr, "weight_decay": weight_decay,
        "batch_size": batch_size, "grad_accum": grad_accum, "max_grad_norm": max_grad_norm,
        "lr_scheduler": lr_scheduler, "warmup_steps": warmup_steps, "logging_steps": logging_steps,
        "eval_steps": eval_steps, "save_steps": save_steps, "save_total_limit": save_total_limit,
        "max_eval_samples": max_eval_samples, "workers": workers, "seed": seed, "bf16": bf16,
        "augment_gain_db": augment_gain_db, "augment_dc_offset": augment_dc_offset,
        "augment_noise_snr_db": parse_numbers(augment_noise_snr_db, "--augment-noise-snr-db", float, allow_off=True),
    }
    model_values = {
        "encoder_source": encoder, "llm_source": llm, "quantize_4bit": quantize, "audio_pool": audio_pool,
        "lora_r": lora_r, "lora_alpha": lora_alpha, "lora_dropout": lora_dropout,
        "projector_hidden": parse_numbers(projector_hidden, "--projector-hidden", int),
        "projector_activation": projector_activation, "projector_dropout": projector_dropout,
        "aux_loss_weight": aux_loss_weight, "aux_loss_norm": aux_loss_norm, "system_message": system_message,
        "gradient_checkpointing": gradient_checkpointing, "standardize_clips": standardize_clips,
    }
    if engine not in ENGINES:
        raise MixcriticError(f"--engine {engine!r} is unknown; use one of {', '.join(ENGINES)}")
    if engine == "measured":
        llm_only = {"preset": preset, "resume": resume or None, "show_config": show_config or None,
                    "stage": None if stage == "sft" else stage, "from_run": from_run, "beta": beta,
                    "rejected_kinds": rejected_kinds, **train_values, **model_values}
        given = [_OPTION_NAMES.get(name, f"--{name.replace('_', '-')}") for name, value in llm_only.items() if value is not None]
        if given:
            raise MixcriticError(f"{', '.join(given)}: LLM training option(s), not used by --engine measured; drop them")
        check_options(data, out, None)
        report(train_measured(data, out), json_out)
        return
    check_stage_options(stage, from_run, beta, rejected_kinds)
    check_options(data, out, preset)  # fail in a second, before torch and transformers load
    from mixcritic.critics.llm.train import TrainRequest, resolved_config

    request = TrainRequest(
        data_dir=data,
        out_dir=out,
        preset=preset or "tiny",
        train_overrides=tuple((k, None if v is OFF else v) for k, v in train_values.items() if v is not None),
        model_overrides=tuple((k, v) for k, v in model_values.items() if v is not None),
        resume=resume,
        device=device,
        progress=not json_out,
    )
    if show_config:
        print_config(stage_config(resolved_config(request), request, stage, from_run, beta, rejected_kinds), json_out)
        return
    try:
        summary = run_stage(request, stage, from_run, beta, rejected_kinds)
    except KeyboardInterrupt:
        raise Interrupted(interrupt_hint(ctx, out)) from None
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


def run_stage(request, stage: str, from_run: Optional[Path], beta: Optional[float], rejected_kinds: Optional[str]) -> dict:
    """SFT (``run_training``) or DPO (``run_dpo``), after checking the stage options belong together."""
    check_stage_options(stage, from_run, beta, rejected_kinds)
    if stage == "sft":
        from mixcritic.critics.llm.train import run_training

        return run_training(request)
    from mixcritic.critics.llm.dpo import DpoRequest, run_dpo

    return run_dpo(DpoRequest(train=request, sft_run=from_run, dpo=dpo_settings(beta, rejected_kinds)))


def check_stage_options(stage: str, from_run: Optional[Path], beta: Optional[float], rejected_kinds: Optional[str]) -> None:
    """--from, --beta and --rejected-kinds only with --stage dpo, which needs --from."""
    if stage not in ("sft", "dpo"):
        raise ModelError(f"--stage must be sft or dpo, got {stage!r}")
    if stage == "sft":
        given = [name for name, value in (("--from", from_run), ("--beta", beta), ("--rejected-kinds", rejected_kinds)) if value is not None]
        if given:
            raise ModelError(f"{', '.join(given)} only apply to --stage dpo; add --stage dpo --from SFT_RUN.")
    elif from_run is None:
        raise ModelError("--stage dpo needs --from SFT_RUN, the finished SFT run to continue (`mixcritic train DATA --out SFT_RUN`).")
    else:
        dpo_settings(beta, rejected_kinds)  # --beta and --rejected-kinds checked before any heavy import


def dpo_settings(beta: Optional[float], rejected_kinds: Optional[str]):
    """The DpoSettings of the command's --beta and --rejected-kinds."""
    from mixcritic.critics.llm.dpo import DpoSettings, parse_kinds

    return DpoSettings(beta=0.1 if beta is None else beta, rejected_kinds=parse_kinds(rejected_kinds))


def stage_config(config: dict, request, stage: str, from_run: Optional[Path], beta: Optional[float],
                 rejected_kinds: Optional[str]) -> dict:
    """--show-config for a stage: SFT's as is; DPO's adds stage, --from, beta, kinds and its learning-rate default."""
    if stage != "dpo":
        return config
    from mixcritic.critics.llm.dpo import show_config

    return show_config(config, request, from_run, dpo_settings(beta, rejected_kinds))


def check_options(data: Path, out: Path, preset: str | None) -> None:
    """The checks that need no heavy import: the preset's name, ``--out`` not a file, DATA a dataset."""
    from mixcritic.critics.llm.train import PRESETS
    from mixcritic.dataset import open_dataset

    if preset is not None and preset not in PRESETS:
        raise ModelError(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    if out.exists() and not out.is_dir():
        raise ModelError(f"--out {out}: is a file, not a folder; give a new folder for the run (or an existing run with --resume)")
    open_dataset(data)


def interrupt_hint(ctx, out: Path) -> str:
    """What to type after Ctrl-C: the same command with ``--resume`` once a complete checkpoint
    exists; otherwise (nothing saved yet) the same command, after removing half-written checkpoints."""
    from mixcritic.critics.llm.checkpoint import last_complete_checkpoint

    if last_complete_checkpoint(out) is not None:
        return f"Checkpoints are kept; continue with: {command_line(ctx, resume=True)}"
    _drop_half_saved(out)
    return f"No checkpoint was complete yet; start again with: {command_line(ctx, resume=False)}"


def _drop_half_saved(out: Path) -> None:
    import shutil

    from mixcritic.critics.llm.checkpoint import CHECKPOINT_PATTERN

    for folder in out.glob("checkpoint-*") if out.is_dir() else []:
        if CHECKPOINT_PATTERN.match(folder.name):
            shutil.rmtree(folder, ignore_errors=True)


def command_line(ctx, resume: bool) -> str:
    """The command as the user typed it (only the options they gave), with ``--resume`` set or cleared."""
    import shlex

    parts = ["mixcritic", ctx.info_name]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if param.name == "resume":
            continue
        if param.param_type_name == "argument":
            parts.append(str(value))
        elif getattr(ctx.get_parameter_source(param.name), "name", None) in ("COMMANDLINE", "ENVIRONMENT"):
            if param.is_flag:
                flag = param.opts[0] if value else (param.secondary_opts or [None])[0]
                parts += [flag] if flag else []
            else:
                parts += [param.opts[0], str(value)]
    if resume:
        parts.append("--resume")
    return " ".join(shlex.quote(part) for part in parts)


OFF = object()
"""An option turned off explicitly (``--augment-noise-snr-db off``): the override value None."""


def parse_numbers(text: str | None, option: str, kind, allow_off: bool = False):
    """``"2048,4096"`` -> [2048, 4096]; ``"64"`` -> 64 (a single number); None -> None (not given).

    With ``allow_off``, ``off`` means "none" and becomes the override value None.
    """
    if text is None:
        return None
    if allow_off and text.strip().lower() in ("off", "none"):
        return OFF
    try:
        values = [kind(part) for part in text.split(",")]
    except ValueError:
        raise MixcriticError(f"invalid {option}: {text!r}; give comma-separated numbers, e.g. 2048,4096,4096,2048") from None
    return values[0] if len(values) == 1 and kind is int else values


def print_config(config: dict, as_json: bool) -> None:
    """The resolved settings: JSON on stdout, or a Rich table."""
    if as_json:
        print_json(config)
        return
    from rich.table import Table

    from mixcritic.console import stdout

    table = Table(title=f"mixcritic train --preset {config['preset']} (resolved settings)", show_header=True)
    table.add_column("setting")
    table.add_column("value")
    for name, value in config.items():
        table.add_row(name, "-" if value is None else str(value))
    stdout.print(table)


def train_measured(data: Path, out: Path) -> dict:
    """Fit the measured critic on the dataset's train and valid splits and save it as ``out/model``; its
    summary. It cross-validates by song itself, so the validation split is one more song to learn from."""
    import time

    from mixcritic.console import progress_bars
    from mixcritic.critics.measured import fit_measured, save_measured

    started = time.perf_counter()
    with progress_bars("Reading the dataset") as progress:
        critic = fit_measured(data, split=("train", "valid"), progress=progress)
    saved = save_measured(critic, out)
    return {
        "engine": "measured", "run_dir": str(out), "model_dir": str(saved.parent if saved.is_file() else saved),
        "critic": critic.describe(), "train_seconds": round(time.perf_counter() - started, 2),
        "cross_validation": critic.fit_summary.get("cross_validation", {}),
    }


def cross_validation_line(report: dict) -> str:
    """What the fit's cross-validation expects on unseen songs, in one line (or why there is none)."""
    if "macro_both" not in report:
        return report.get("note", "not cross-validated")
    return (f"macro Both {100 * report['macro_both']:.1f} %, no_error Both {100 * report['no_error_both']:.1f} % "
            f"(leave-one-song-out over {report['songs']} songs, the prior chosen on the same folds); chose {report['band_layout']}, "
            f"shrinkage {report['shrinkage']}, no_error prior {report['no_error_prior']}")


def print_measured_summary(summary: dict) -> None:
    """A Rich table of a measured fit on stdout."""
    from rich.table import Table

    from mixcritic.console import stdout

    table = Table(title="mixcritic train --engine measured", show_header=False)
    for name, key in (("critic", "critic"), ("model", "model_dir")):
        table.add_row(name, str(summary[key]))
    table.add_row("cross-validated", cross_validation_line(summary.get("cross_validation", {})))
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
