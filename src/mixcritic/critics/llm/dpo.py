"""``mixcritic train --stage dpo``: Direct Preference Optimisation on the synth's preference pairs.

A DPO run continues a finished SFT run (``--from SFT_RUN``) and trains the same tensors (layer
weights, projector, LoRA adapter) on ``DATA/dpo/<split>.jsonl``: for every sample the correct
answer (*chosen*) and a plausible wrong one (*rejected*, of a recorded kind). The loss
(Rafailov et al. 2023, TRL's ``sigmoid`` loss) is::

    loss = -log sigmoid( beta * [(log pi(chosen) - log ref(chosen)) - (log pi(rejected) - log ref(rejected))] )

where ``log pi`` is the policy's summed log-probability of an answer and ``ref`` the SFT model's.

**No second model in memory.** The reference log-probabilities are computed once, with the SFT
weights loaded into the very model that is then trained, before the first step, and stored beside
the run (``RUN/reference_logps.safetensors``, one ``(2,)`` tensor ``[chosen, rejected]`` per
sample id; reused on ``--resume``). Dropout is switched off in the policy (as TRL's
``disable_dropout``), so at step 0 the policy equals the reference exactly.

**Peak memory as SFT.** A training step never holds the graphs of both answers: the rejected
answer's log-prob is first computed without a graph; the chosen pass then back-propagates
``L(pi_c, sg(pi_r))``; the rejected pass back-propagates ``L(sg(pi_c), pi_r)``. The two gradients
add up to the exact DPO gradient (``L`` depends on the parameters only through ``pi_c`` and
``pi_r``), at the cost of one extra forward pass without a graph. The auxiliary norm-matching
loss of SFT is kept (added once, in the chosen pass).

Checkpoints, ``--resume`` and the run folder are SFT's (:mod:`mixcritic.critics.llm.train`);
``mixcritic.json`` records ``run_stage: "dpo"``, the SFT model folder and the DPO settings.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from mixcritic.errors import DatasetError, ModelError

REFERENCE_FILE = "reference_logps.safetensors"
"""Reference log-probs beside the run: ``{sample id: tensor([chosen, rejected])}``."""
REFERENCE_FORMAT = "mixcritic-dpo-reference-1"
STAGES = ("sft", "dpo")
TRAIN_SPLIT, VALIDATION_SPLIT = "train", "valid"
REWARD_KEYS = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
               "logps/chosen", "logps/rejected", "dpo_loss", "aux_loss")
"""What each log line carries besides ``loss`` (TRL's names for the rewards and log-probs)."""
DPO_LR_FACTOR = 0.1
"""Without --lr, DPO uses a tenth of the preset's SFT learning rate (paper: 1e-6, TRL's DPO default; tiny: 3e-4)."""
MODEL_OPTIONS_ALLOWED = ("encoder_source", "llm_source")
"""Model options a DPO run may override (where the base weights are); everything else is SFT_RUN's."""


@dataclass(frozen=True)
class DpoSettings:
    """Settings of the DPO stage."""

    beta: float = 0.1
    """Strength of the implicit KL penalty: rewards are beta x (log pi - log ref)."""
    rejected_kinds: tuple[str, ...] = ()
    """Train only on pairs whose rejected answer is of these kinds (empty = all kinds)."""

    def __post_init__(self) -> None:
        from mixcritic.templates import REJECTION_KINDS

        if not (self.beta > 0 and math.isfinite(self.beta)):
            raise ModelError(f"invalid --beta: {self.beta!r}; use a positive number (default 0.1).")
        unknown = sorted(set(self.rejected_kinds) - set(REJECTION_KINDS))
        if unknown:
            raise ModelError(f"--rejected-kinds: unknown kind(s) {', '.join(unknown)}; use any of {', '.join(REJECTION_KINDS)}.")
        object.__setattr__(self, "rejected_kinds", tuple(sorted(set(self.rejected_kinds))))


@dataclass(frozen=True)
class DpoRequest:
    """What ``mixcritic train --stage dpo`` was asked to do."""

    train: "object"
    """The :class:`mixcritic.critics.llm.train.TrainRequest` (data, out, preset, options, resume, device)."""
    sft_run: Path
    """The finished SFT run (``RUN``, ``RUN/model`` or a ``checkpoint-N`` folder) to start from."""
    dpo: DpoSettings = field(default_factory=DpoSettings)
    """beta and the rejected kinds."""


def parse_kinds(text: str | None) -> tuple[str, ...]:
    """``"false_alarm, wrong_stem"`` -> ("false_alarm", "wrong_stem"); None or "" -> () (all kinds)."""
    if not text:
        return ()
    return tuple(part.strip() for part in text.split(",") if part.strip())


# -- the loss ----------------------------------------------------------------------------------

def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float):
    """Per-pair DPO loss and the implicit rewards.

    All inputs are ``(batch,)`` summed answer log-probabilities. Returns ``(loss, chosen_rewards,
    rejected_rewards)``, each ``(batch,)``; rewards are ``beta * (policy - reference)``, detached.
    """
    import torch.nn.functional as F

    chosen = beta * (policy_chosen - ref_chosen)
    rejected = beta * (policy_rejected - ref_rejected)
    return -F.logsigmoid(chosen - rejected), chosen.detach(), rejected.detach()


# -- data --------------------------------------------------------------------------------------

def read_pairs(source, split: str, kinds: tuple[str, ...]) -> list[dict]:
    """The preference pairs of ``split`` (all, or those with a rejected answer of ``kinds``)."""
    try:
        pairs = source.dpo_pairs(split)
    except (DatasetError, FileNotFoundError, OSError):
        return []
    return [p for p in pairs if not kinds or p.get("rejected_kind") in kinds]


class PairDataset:
    """Torch map-style dataset: a pair's clip rendered on the fly (as SFT renders it) and its texts."""

    def __init__(self, source, pairs: list[dict], split: str, samples: int) -> None:
        by_id = {record["id"]: record for record in source.records(split)}
        missing = [p["id"] for p in pairs if p["id"] not in by_id]
        if missing:
            raise DatasetError(f"DPO pairs without a manifest row in {split}.jsonl (e.g. {missing[0]!r}); re-run `mixcritic synth`.")
        self.source = source
        self.pairs = pairs
        self.records = [by_id[p["id"]] for p in pairs]
        self.samples = samples

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict:
        pair, record = self.pairs[index], self.records[index]
        audio = self.source.render(record, normalize=True)
        if audio.shape != (self.samples,):
            raise DatasetError(f"sample {pair['id']} renders {audio.shape} samples, expected ({self.samples},).")
        return {"id": pair["id"], "audio": audio, "instruction": pair["instruction"],
                "chosen": pair["chosen"], "rejected": pair["rejected"]}


class PairCollator:
    """Tokenises each pair's prompt with both answers; adds the stored reference log-probs when known."""

    def __init__(self, tokenizer, n_audio: int, reference: dict | None = None, system_message: str | None = None) -> None:
        self.tokenizer = tokenizer
        self.n_audio = n_audio
        self.reference = reference
        self.system_message = system_message

    def __call__(self, items: list[dict]) -> dict:
        import numpy as np
        import torch

        from mixcritic.critics.llm.prompt import build_example, collate_examples

        batch = {"audio": torch.from_numpy(np.stack([it["audio"] for it in items]).astype(np.float32)),
                 "ids": [it["id"] for it in items]}
        for side in ("chosen", "rejected"):
            examples = [build_example(self.tokenizer, it["instruction"], self.n_audio, it[side], self.system_message)
                        for it in items]
            for key, value in collate_examples(examples, self.tokenizer.pad_token_id, padding_side="right").items():
                batch[f"{side}_{key}"] = value
        if self.reference is not None:
            refs = torch.stack([self.reference[it["id"]] for it in items])
            batch["ref_chosen"], batch["ref_rejected"] = refs[:, 0], refs[:, 1]
        return batch


def side_inputs(batch: dict, side: str) -> dict:
    """The MixCritic forward arguments for one answer of each pair."""
    return {"audio": batch["audio"], "input_ids": batch[f"{side}_input_ids"], "attention_mask": batch[f"{side}_attention_mask"],
            "audio_mask": batch[f"{side}_audio_mask"], "labels": batch[f"{side}_labels"], "answer_logps": True}


def pair_datasets(source, train, dpo: DpoSettings, samples: int) -> tuple[PairDataset, PairDataset | None]:
    """Training pairs, and a fixed random subset of the validation pairs (None without any)."""
    pairs = read_pairs(source, TRAIN_SPLIT, dpo.rejected_kinds)
    if not pairs:
        which = f" with --rejected-kinds {','.join(dpo.rejected_kinds)}" if dpo.rejected_kinds else ""
        raise DatasetError(f"the dataset has no DPO pairs in dpo/{TRAIN_SPLIT}.jsonl{which}; "
                           "re-run `mixcritic synth` (it writes them) or choose other kinds.")
    val = read_pairs(source, VALIDATION_SPLIT, dpo.rejected_kinds)
    train_set = PairDataset(source, pairs, TRAIN_SPLIT, samples)
    if not val:
        return train_set, None
    picks = random.Random(train.seed).sample(range(len(val)), min(train.max_eval_samples, len(val)))
    return train_set, PairDataset(source, [val[i] for i in sorted(picks)], VALIDATION_SPLIT, samples)


# -- the SFT run and the reference log-probs ----------------------------------------------------

def sft_model_folder(sft_run: Path) -> Path:
    """The finished model of an SFT run: ``RUN/model`` (or the folder itself if it is a complete checkpoint)."""
    from mixcritic.critics.llm.checkpoint import is_complete

    sft_run = Path(sft_run)
    for folder in (sft_run / "model", sft_run):
        if is_complete(folder):
            return folder
    raise ModelError(f"--from {sft_run}: no finished model (RUN/model/ or a checkpoint-N/ with a COMPLETE marker); "
                     "finish the SFT run first (`mixcritic train DATA --out RUN`, or --resume it).")


def file_sha256(path: Path) -> str:
    """Hex SHA-256 of a file (identifies the SFT weights the reference came from)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def disable_dropout(model) -> int:
    """Set every dropout probability to 0 (TRL's ``disable_dropout``); returns how many modules changed."""
    from torch import nn

    changed = 0
    for module in model.modules():
        if isinstance(module, nn.Dropout) and module.p != 0:
            module.p = 0.0
            changed += 1
    return changed


def compute_reference(model, datasets: list[PairDataset], collator: PairCollator, batch_size: int, workers: int,
                      autocast_bf16: bool, progress: bool) -> dict:
    """``{sample id: tensor([log ref(chosen), log ref(rejected)])}`` with the model's current (SFT) weights."""
    import torch
    from torch.utils.data import ConcatDataset, DataLoader

    from mixcritic.console import stderr

    loader = DataLoader(ConcatDataset(datasets), batch_size=batch_size, shuffle=False, num_workers=workers, collate_fn=collator)
    device = model.device
    out: dict = {}
    was_training = model.training
    model.eval()
    total = sum(len(d) for d in datasets)
    started = time.perf_counter()
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast_bf16):
        for batch in loader:
            # one answer side per forward: a joint batch would double the encoder's activations (its
            # conv front end dominates the tiny model's peak) and exceed SFT's peak memory
            logps = [model(**side_inputs(batch, side)).answer_logps.float().cpu() for side in ("chosen", "rejected")]
            for row, sample_id in enumerate(batch["ids"]):
                out[sample_id] = torch.stack([logps[0][row], logps[1][row]])
    model.train(was_training)
    if progress:
        stderr.print(f"reference log-probs of {total} pairs computed with the SFT weights in {time.perf_counter() - started:.1f} s",
                     highlight=False)
    return out


def save_reference(path: Path, reference: dict, metadata: dict) -> None:
    """Write the reference table atomically (safetensors, string metadata)."""
    from safetensors.torch import save_file

    from mixcritic.files import atomic_path

    tensors = {key: value.contiguous() for key, value in reference.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={k: str(v) for k, v in metadata.items()})


def load_reference(path: Path, metadata: dict, needed: set[str]) -> dict | None:
    """The stored reference table if it was made from the same SFT weights and covers ``needed``; else None."""
    from safetensors import safe_open

    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            stored = handle.metadata() or {}
            if any(stored.get(k) != str(v) for k, v in metadata.items()) or not needed <= set(handle.keys()):
                return None
            return {key: handle.get_tensor(key) for key in needed}
    except Exception:  # noqa: BLE001 - a damaged file is recomputed, never trusted
        return None


def reference_table(model, out_dir: Path, datasets: list[PairDataset], collator: PairCollator, train, metadata: dict,
                    autocast_bf16: bool, is_main: bool, progress: bool) -> tuple[dict, bool]:
    """Load ``RUN/reference_logps.safetensors`` or compute and store it; returns (table, reused)."""
    needed = {pair["id"] for d in datasets for pair in d.pairs}
    path = out_dir / REFERENCE_FILE
    stored = load_reference(path, metadata, needed)
    if stored is not None:
        return stored, True
    table = compute_reference(model, datasets, collator, train.batch_size, train.workers, autocast_bf16, progress)
    if is_main:
        save_reference(path, table, metadata)
    return table, False


# -- one training step -------------------------------------------------------------------------

@dataclass
class StepResult:
    """What one DPO step reports: the loss value (DPO + aux, detached) and its metrics in REWARD_KEYS order."""

    loss: "object"
    metrics: "object"


def step_metrics(loss, aux, logp_c, logp_r, reward_c, reward_r):
    """One row of REWARD_KEYS (CPU float tensor) from a batch's detached values."""
    import torch

    return torch.stack([
        reward_c.mean(), reward_r.mean(), (reward_c > reward_r).float().mean(), (reward_c - reward_r).mean(),
        logp_c.mean(), logp_r.mean(), loss.mean(), aux,
    ]).float().cpu()


def dpo_backward(forward, backward, ref_chosen, ref_rejected, beta: float, aux_weight: float) -> StepResult:
    """Accumulate the exact DPO gradient of a batch while holding one answer's graph at a time.

    ``forward(side, grad)`` runs the model on the ``"chosen"`` or ``"rejected"`` answers (returning a
    CriticOutput with ``answer_logps`` and ``aux_loss``); ``backward(loss)`` back-propagates a scalar.
    Pass 0 (no graph): ``pi_r``. Pass 1: ``mean L(pi_c, sg(pi_r)) + aux_weight * aux``. Pass 2:
    ``mean L(sg(pi_c), pi_r)``. Since ``L`` depends on the parameters only through ``pi_c`` and ``pi_r``,
    the two gradients sum to the gradient of ``mean L(pi_c, pi_r) + aux_weight * aux``; this needs
    the model to be deterministic between the passes (dropout off, :func:`disable_dropout`).
    """
    logp_r = forward("rejected", False).answer_logps.float()
    out = forward("chosen", True)
    logp_c, aux = out.answer_logps.float(), out.aux_loss.float()
    loss, _, _ = dpo_loss(logp_c, logp_r, ref_chosen, ref_rejected, beta)
    backward(loss.mean() + aux_weight * aux)
    logp_c, aux = logp_c.detach(), aux.detach()
    del out, loss
    logp_r = forward("rejected", True).answer_logps.float()
    loss, reward_c, reward_r = dpo_loss(logp_c, logp_r, ref_chosen, ref_rejected, beta)
    backward(loss.mean())
    loss = loss.detach()
    return StepResult(loss.mean() + aux_weight * aux, step_metrics(loss, aux, logp_c, logp_r.detach(), reward_c, reward_r))


# -- the Trainer -------------------------------------------------------------------------------

def make_dpo_trainer_class():
    """The SFT Trainer (own checkpoints, resume, logging) with DPO's loss, step and metrics."""
    import torch

    from mixcritic.critics.llm.train import make_trainer_class

    class DpoTrainer(make_trainer_class()):
        """Two backward passes per step (chosen, then rejected), so only one answer's graph is alive."""

        def __init__(self, *args, dpo: DpoSettings, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self.dpo = dpo
            self._metrics = {"train": [], "eval": []}

        def training_step(self, model, inputs, num_items_in_batch=None):
            model.train()
            if hasattr(self.optimizer, "train") and callable(self.optimizer.train):
                self.optimizer.train()
            inputs = self._prepare_inputs(inputs)
            scale = 1.0 / self.current_gradient_accumulation_steps
            aux_weight = self.accelerator.unwrap_model(model).settings.aux_loss_weight

            def forward(side: str, grad: bool):
                with torch.set_grad_enabled(grad), self.compute_loss_context_manager():
                    return model(**side_inputs(inputs, side))

            step = dpo_backward(forward, lambda loss: self.accelerator.backward(loss * scale), inputs["ref_chosen"],
                                inputs["ref_rejected"], self.dpo.beta, aux_weight)
            self._metrics["train"].append(step.metrics)
            return step.loss * scale

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            """The full DPO loss in one go (used for the validation loss; training uses :meth:`training_step`)."""
            aux_weight = self.accelerator.unwrap_model(model).settings.aux_loss_weight
            chosen, rejected = (model(**side_inputs(inputs, side)) for side in ("chosen", "rejected"))
            logp_c, logp_r = chosen.answer_logps.float(), rejected.answer_logps.float()
            loss, reward_c, reward_r = dpo_loss(logp_c, logp_r, inputs["ref_chosen"], inputs["ref_rejected"], self.dpo.beta)
            aux = chosen.aux_loss.float()
            total = loss.mean() + aux_weight * aux
            self._metrics["train" if model.training else "eval"].append(
                step_metrics(loss.detach(), aux.detach(), logp_c.detach(), logp_r.detach(), reward_c, reward_r))
            return (total, {"loss": total}) if return_outputs else total

        def log(self, logs: dict, start_time=None) -> None:
            for kind, prefix, key in (("train", "", "loss"), ("eval", "eval_", "eval_loss")):
                rows = self._metrics[kind]
                if key in logs and rows:
                    means = torch.stack(rows).mean(dim=0).to(self.args.device)
                    means = self.accelerator.reduce(means, reduction="mean").cpu().tolist()
                    logs.update({f"{prefix}{name}": value for name, value in zip(REWARD_KEYS, means)})
                    self._metrics[kind] = []
            super().log(logs, start_time)

    return DpoTrainer


# -- the run -----------------------------------------------------------------------------------

def dpo_critic_settings(sft_folder: Path, request, source):
    """SFT_RUN's model settings (only the base-model locations may be overridden), checked against the dataset."""
    from mixcritic.critics.llm.checkpoint import read_settings
    from mixcritic.critics.llm.train import dataset_audio_settings

    overrides = dict(request.train.model_overrides)
    refused = sorted(k for k in overrides if k not in MODEL_OPTIONS_ALLOWED)
    if refused:
        names = ", ".join(f"--{k.replace('_', '-')}" for k in refused)
        raise ModelError(f"--stage dpo: {names} cannot change; the model comes from --from {request.sft_run} "
                         "(only --encoder and --llm, where its base weights are, may be given).")
    settings = replace(read_settings(sft_folder), **overrides)
    audio = dataset_audio_settings(source)
    differing = sorted(k for k, v in audio.items() if getattr(settings, k) != v)
    if differing:
        raise DatasetError(f"--from {request.sft_run} was trained with other {', '.join(differing)} than this dataset; "
                           "run DPO on a dataset written with the same `mixcritic synth` options.")
    return settings


def dpo_train_settings(preset, overrides: tuple):
    """The preset's TrainSettings with DPO's learning-rate default and no augmentation, then the overrides.

    Training-only augmentation is off: the stored reference log-probs are those of the clean clips.
    """
    augment = {"augment_gain_db": 0.0, "augment_noise_snr_db": None, "augment_dc_offset": 0.0}
    given = sorted(k for k, v in overrides if k in augment and v)
    if given:
        raise ModelError(f"{', '.join('--' + k.replace('_', '-') for k in given)}: no augmentation in --stage dpo "
                         "(the reference log-probs are computed once, on the clean clips); drop the option.")
    defaults = {"learning_rate": float(f"{preset.learning_rate * DPO_LR_FACTOR:.6g}"), **augment}
    return replace(preset, **(defaults | dict(overrides)))


def check_dpo_resume(resume_from: Path, extras: dict) -> None:
    """Refuse to resume a DPO run with another beta, other kinds or other SFT weights."""
    stored = json.loads((resume_from / "mixcritic.json").read_text()).get("run_dpo")
    if stored != extras["run_dpo"]:
        raise ModelError(f"--resume: {resume_from.parent} was a DPO run with other settings ({stored}); "
                         "resume with the same --from, --beta and --rejected-kinds, or start a new --out folder.")


def run_dpo(request: DpoRequest, source=None) -> dict:
    """Train (or resume) a DPO run; returns the summary also written to ``RUN/train_summary.json``."""
    base = request.train
    if source is None:  # a bad dataset or --from is reported before any heavy import
        from mixcritic.dataset import open_dataset

        source = open_dataset(base.data_dir)
    sft_folder = sft_model_folder(request.sft_run)

    from mixcritic.critics.llm import build_critic, resolve_device  # first: quiets bitsandbytes' logger

    import torch
    from transformers.trainer_callback import PrinterCallback

    from mixcritic.critics.llm.checkpoint import (
        COMPLETE_MARKER,
        TRAINED_FILE,
        last_complete_checkpoint,
        mark_complete,
        read_trained,
        write_json_atomic,
    )
    from accelerate import PartialState

    from mixcritic.console import warn
    from mixcritic.distributed import close_process_group
    from mixcritic.critics.llm.train import (
        pin_single_device,
        prepare_run_dir,
        preset_settings,
        rich_progress_callback,
        single_process_device,
        summarize,
        training_arguments,
    )

    device, note = single_process_device(resolve_device(base.device))
    train = dpo_train_settings(preset_settings(base.preset)[0], base.train_overrides)
    settings = dpo_critic_settings(sft_folder, request, source)
    out_dir = Path(base.out_dir)
    train_set, eval_set = pair_datasets(source, train, request.dpo, settings.segment_samples)
    args = training_arguments(train, out_dir, device, eval_set is not None)
    args.label_names = ["chosen_labels", "rejected_labels"]
    pin_single_device(args, device)
    _ = args.device  # sets up the process group under a launcher
    if note:
        warn(note)
    sft_hash = file_sha256(sft_folder / TRAINED_FILE)
    sft_config = json.loads((sft_folder / "mixcritic.json").read_text())
    extras = {"run_train_settings": asdict(train), "run_data_dir": str(Path(base.data_dir).resolve()), "run_stage": "dpo",
              "run_preset": sft_config.get("run_preset", base.preset),
              "run_sft_model": str(sft_folder.resolve()),
              "run_dpo": {"beta": request.dpo.beta, "rejected_kinds": list(request.dpo.rejected_kinds), "sft_trained_sha256": sft_hash}}
    last = last_complete_checkpoint(out_dir) if base.resume else None
    if last is not None:  # other DPO settings first: the most specific reason to refuse
        check_dpo_resume(last, extras)
    resume_from = prepare_run_dir(out_dir, base.resume, settings, train, is_main=args.process_index == 0,
                                  barrier=PartialState().wait_for_everyone)

    torch.manual_seed(train.seed)
    model = build_critic(settings, device, training=True, seed=train.seed)
    model.load_trained_state(read_trained(sft_folder))  # the reference, and the start of training
    disable_dropout(model)
    n_audio = model.frames_per_clip(settings.segment_samples)
    metadata = {"format": REFERENCE_FORMAT, "sft_trained_sha256": sft_hash}
    reference, reused = reference_table(model, out_dir, [d for d in (train_set, eval_set) if d is not None],
                                        PairCollator(model.tokenizer, n_audio, None, settings.system_message), train,
                                        metadata, bool(args.bf16),
                                        args.should_save, base.progress)
    trainer = make_dpo_trainer_class()(
        model=model, args=args, train_dataset=train_set, eval_dataset=eval_set,
        data_collator=PairCollator(model.tokenizer, n_audio, reference, settings.system_message),
        callbacks=[rich_progress_callback(base.progress)], run_extras=extras, dpo=request.dpo,
    )
    trainer.remove_callback(PrinterCallback)
    started = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    seconds = time.perf_counter() - started
    final = out_dir / "model"
    if trainer.args.should_save:
        (final / COMPLETE_MARKER).unlink(missing_ok=True)
    trainer.save_model(str(final))
    trainer.accelerator.wait_for_everyone()
    summary = summarize(trainer, result, seconds, train, settings, out_dir, resume_from, len(train_set))
    summary |= dpo_summary(summary["log_history"], request, sft_folder, reused)
    if trainer.args.should_save:
        mark_complete(final)
        write_json_atomic(out_dir / "train_summary.json", summary)
    close_process_group()
    return summary


def dpo_summary(history: list[dict], request: DpoRequest, sft_folder: Path, reference_reused: bool) -> dict:
    """The DPO part of ``train_summary.json``: stage, origin, settings and the reward trend."""
    logs = [h for h in history if "rewards/margins" in h]
    third = max(len(logs) // 3, 1)

    def mean(rows, key):
        return sum(r[key] for r in rows) / len(rows) if rows else None

    return {
        "stage": "dpo",
        "sft_run": str(Path(request.sft_run)),
        "sft_model": str(sft_folder),
        "beta": request.dpo.beta,
        "rejected_kinds": list(request.dpo.rejected_kinds) or "all",
        "reference_file": REFERENCE_FILE,
        "reference_reused": reference_reused,
        "first_third_margins": mean(logs[:third], "rewards/margins"),
        "last_third_margins": mean(logs[-third:], "rewards/margins"),
        "final_rewards": {k: logs[-1][k] for k in REWARD_KEYS if k.startswith("rewards/")} if logs else None,
    }


def show_config(config: dict, request, sft_run: Path | None, dpo: DpoSettings) -> dict:
    """``train --stage dpo --show-config``: SFT's resolved settings with DPO's training defaults, the
    SFT run's model settings (what a DPO run keeps), and stage, --from, beta and kinds."""
    from dataclasses import fields

    from mixcritic.critics.llm.checkpoint import read_settings
    from mixcritic.critics.llm.train import SHOWN_MODEL_FIELDS, SHOWN_NAMES, preset_settings

    train = dpo_train_settings(preset_settings(request.preset)[0], request.train_overrides)
    shown = {"preset": config.get("preset"), "stage": "dpo", "from": str(sft_run) if sft_run else None,
             "beta": dpo.beta, "rejected_kinds": list(dpo.rejected_kinds) or "all"}
    shown |= {k: v for k, v in config.items() if k not in shown}
    shown |= {SHOWN_NAMES.get(f.name, f.name): getattr(train, f.name) for f in fields(train)}
    if sft_run is not None:
        model = replace(read_settings(sft_model_folder(sft_run)), **{k: v for k, v in request.model_overrides
                                                                      if k in MODEL_OPTIONS_ALLOWED}).to_dict()
        shown |= {SHOWN_NAMES.get(k, k): model[k] for k in SHOWN_MODEL_FIELDS if k in model}
    return shown
