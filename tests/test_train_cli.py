"""`mixcritic train` end to end on toy data through the CLI (tiny models, CPU)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from mixcritic.cli import app

torch.set_num_threads(1)
runner = CliRunner()


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    result = runner.invoke(app, ["toy-stems", str(root / "stems"), "--tracks", "4", "--seconds", "6"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["synth", str(root / "stems"), "--out", str(root / "data"), "--segment-s", "2",
                                 "--samples-per-chunk", "3", "--valid-fraction", "0.34"])
    assert result.exit_code == 0, result.output
    return root / "data"


def test_train_cli_on_toy_data_then_generate(toy_data, tiny_base, tmp_path):
    from mixcritic.dataset import open_dataset
    from mixcritic.critics.llm.inference import load_critic

    mert_dir, llm_dir = tiny_base
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", str(toy_data), "--out", str(run), "--preset", "tiny", "--max-steps", "3",
                                 "--encoder", str(mert_dir), "--llm", str(llm_dir), "--workers", "1",
                                 "--eval-steps", "3", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)  # stdout holds only the JSON summary
    assert summary["global_step"] == 3 and summary["final_eval_loss"] is not None
    assert (run / "model" / "COMPLETE").is_file()
    critic = load_critic(run, device="cpu")
    assert critic.settings["segment_s"] == 2.0 and critic.settings["target_lufs"] == -23.0
    assert critic.settings["template_version"] == open_dataset(toy_data).info["template_version"]
    dataset = open_dataset(toy_data)
    records = dataset.records("test")[:2]
    clips = torch.stack([torch.from_numpy(dataset.render(r)) for r in records]).numpy()
    answers = critic.generate(clips, [r["instruction"] for r in records])
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)


PAPER_RUN_RECIPE = {
    "preset": "paper-run",
    "epochs": 10.0, "lr": 1e-05, "weight_decay": 0.05, "batch_size": 16, "grad_accum": 4, "max_grad_norm": 1.0,
    "lr_scheduler": "cosine", "warmup_steps": 0, "logging_steps": 5, "eval_steps": 200, "save_steps": 200,
    "save_total_limit": 3, "max_steps": -1, "max_eval_samples": 512, "workers": 4, "seed": 42, "bf16": True,
    "augment_gain_db": 3.0, "augment_noise_snr_db": [40.0, 60.0], "augment_dc_offset": 0.005,
    "encoder": "m-a-p/MERT-v1-330M", "llm": "Qwen/Qwen2-7B-Instruct", "quantize_4bit": True, "audio_pool": 1,
    "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.1, "projector_hidden": [2048, 4096, 4096, 2048],
    "projector_activation": "gelu", "projector_dropout": 0.1, "aux_loss_weight": 0.1, "aux_loss_norm": "d",
    "standardize_clips": 0, "gradient_checkpointing": True,
    "system_message": "You are a mixing engineer. You are given a segment of a track and you need to provide gain "
                      "balancing advice.",
}
"""The authors' published run (issue 11, REFERENCE.md), as `train --show-config --json` prints it."""


def test_show_config_prints_the_paper_run_recipe_and_writes_nothing(toy_data, tmp_path):
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", str(toy_data), "--out", str(run), "--preset", "paper-run", "--show-config", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == PAPER_RUN_RECIPE
    assert not run.exists()


def test_show_config_imports_neither_torch_nor_transformers(toy_data, tmp_path):
    """Fast: no model is loaded, not even torch is imported."""
    import subprocess
    import sys

    code = ("import sys\nfrom typer.testing import CliRunner\nfrom mixcritic.cli import app\n"
            f"r = CliRunner().invoke(app, ['train', {str(toy_data)!r}, '--out', {str(tmp_path / 'run')!r}, "
            "'--preset', 'paper-run', '--show-config', '--json'])\n"
            "assert r.exit_code == 0, r.output\n"
            "print(sorted(m for m in ('torch', 'transformers', 'bitsandbytes') if m in sys.modules))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": ":".join(sys.path), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


def test_show_config_applies_overrides_and_shows_a_table(toy_data, tmp_path, monkeypatch):
    import mixcritic.critics.llm.tiny as tiny

    monkeypatch.setattr(tiny, "ensure_tiny_base", lambda *a, **k: pytest.fail("--show-config built the tiny models"))
    run = tmp_path / "run"
    result = runner.invoke(app, ["train", str(toy_data), "--out", str(run), "--preset", "paper", "--lr", "2e-5",
                                 "--projector-hidden", "1024,512", "--augment-noise-snr-db", "30,50", "--show-config", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert (shown["lr"], shown["projector_hidden"], shown["augment_noise_snr_db"]) == (2e-5, [1024, 512], [30.0, 50.0])
    assert (shown["projector_activation"], shown["aux_loss_norm"], shown["system_message"]) == ("relu", "sqrt_d", None)
    result = runner.invoke(app, ["train", str(toy_data), "--out", str(run), "--preset", "paper-run",
                                 "--augment-noise-snr-db", "off", "--show-config"])
    assert result.exit_code == 0, result.output
    assert "projector_activation" in result.stdout and "gelu" in result.stdout and "augment_noise_snr_db" in result.stdout
    result = runner.invoke(app, ["train", str(toy_data), "--out", str(run), "--preset", "tiny", "--show-config", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["preset"] == "tiny"
    assert not run.exists()
    result = runner.invoke(app, ["train", str(toy_data), "--out", str(run), "--projector-hidden", "wide", "--show-config"])
    assert result.exit_code == 1 and "--projector-hidden" in result.stderr


def test_train_cli_errors_are_one_line(tmp_path):
    result = runner.invoke(app, ["train", str(tmp_path / "missing"), "--out", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert "Error:" in result.stderr and "mixcritic synth" in result.stderr and "Traceback" not in result.stderr


def test_train_cli_rejects_unknown_preset(toy_data, tmp_path):
    result = runner.invoke(app, ["train", str(toy_data), "--out", str(tmp_path / "run"), "--preset", "huge"])
    assert result.exit_code == 1 and "--preset must be one of paper, paper-run, tiny" in result.stderr


def test_unknown_preset_is_refused_within_3_s_before_heavy_imports(toy_data, tmp_path):
    import subprocess
    import sys
    import time

    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from mixcritic.cli import app\n"
        f"r = CliRunner().invoke(app, ['train', {str(toy_data)!r}, '--out', {str(tmp_path / 'run')!r}, '--preset', 'huge'])\n"
        "print(r.exit_code, [m for m in ('torch', 'transformers', 'bitsandbytes') if m in sys.modules])\n"
    )
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1 []"
    assert time.perf_counter() - started < 3.0


def test_out_that_is_a_file_and_wrong_data_folders_get_the_right_hint(toy_data, tmp_path):
    afile = tmp_path / "run.txt"
    afile.write_text("keep")
    stems = toy_data.parent / "stems"
    song = next((stems / "train").iterdir())
    cases = [
        ([str(toy_data), "--out", str(afile)],
         f"Error: --out {afile}: is a file, not a folder; give a new folder for the run (or an existing run with --resume)"),
        ([str(tmp_path / "typo"), "--out", str(tmp_path / "r")],
         f"Error: {tmp_path / 'typo'}: no such folder; pass the DATA folder written by `mixcritic synth SOURCE --out DATA`"),
        ([str(stems), "--out", str(tmp_path / "r")],
         f"Error: {stems}: holds stems (a MUSDB18-HQ-style source), not a dataset; build one from it first: "
         f"mixcritic synth {stems} --out DATA, then pass DATA"),
        ([str(song), "--out", str(tmp_path / "r")],
         f"Error: {song}: holds audio files, not a dataset; to critique these stems run: mixcritic critique {song} --anchor STEM; "
         "a dataset comes from `mixcritic synth SOURCE --out DATA` on a MUSDB18-HQ-style SOURCE/{train,test}/<track>/"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["train", *args])
        assert result.exit_code == 1 and "Traceback" not in result.output
        assert result.stderr.strip() == message
    assert afile.read_text() == "keep" and not (tmp_path / "r").exists()


def test_ctrl_c_then_exactly_the_hinted_command_continues(toy_data, tiny_base, tmp_path, monkeypatch):
    import shlex

    from transformers import TrainerCallback

    import mixcritic.critics.llm.train as train_module

    real_callback = train_module.rich_progress_callback

    class CtrlC(TrainerCallback):
        def __init__(self, at_step):
            self.at_step = at_step

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == self.at_step:
                raise KeyboardInterrupt

    def hinted_after_ctrl_c(args: list[str], at_step: int) -> list[str]:
        monkeypatch.setattr(train_module, "rich_progress_callback", lambda enabled: CtrlC(at_step))
        result = runner.invoke(app, args)
        monkeypatch.setattr(train_module, "rich_progress_callback", real_callback)
        assert result.exit_code == 130, result.output
        line = result.stderr.strip().splitlines()[-1]
        assert line.startswith("Interrupted. ") and ": mixcritic train " in line
        return line, shlex.split(line.partition(": ")[2])[1:]

    mert_dir, llm_dir = tiny_base
    run = tmp_path / "my run"
    first = ["train", str(toy_data), "--out", str(run), "--max-steps", "4", "--eval-steps", "0", "--save-steps", "2",
             "--workers", "0", "--no-bf16", "--encoder", str(mert_dir), "--llm", str(llm_dir), "--device", "cpu"]
    line, hinted = hinted_after_ctrl_c(first, at_step=1)  # before any checkpoint: start again, same command
    assert line.startswith("Interrupted. No checkpoint was complete yet; start again with: mixcritic train")
    assert hinted == first
    line, hinted = hinted_after_ctrl_c(hinted, at_step=3)  # checkpoint-2 is complete: resume
    assert line.startswith("Interrupted. Checkpoints are kept; continue with: mixcritic train")
    assert hinted == first + ["--resume"]
    result = runner.invoke(app, hinted)
    assert result.exit_code == 0, result.output
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["global_step"] == 4 and summary["resumed_from"] == str(run / "checkpoint-2")


def torchrun(tmp_path, name: str, *args: str) -> dict[str, str]:
    """Run ``mixcritic ARGS`` under torchrun with 2 CPU processes (gloo); returns stdout per rank."""
    import os
    import socket
    import subprocess
    import sys

    with socket.socket() as sock:  # a free port, so parallel test runs do not collide
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    logs = tmp_path / f"logs-{name}"
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
               "--log-dir", str(logs), "--redirects", "3", "-m", "mixcritic", *args]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    text = "\n".join(f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted(logs.rglob("std*.log")))
    assert proc.returncode == 0, text
    return {p.parent.name: p.read_text() for p in logs.rglob("stdout.log")}


def test_two_process_train_interrupt_resume_and_evaluate_on_cpu(toy_data, tiny_base, tmp_path):
    """torchrun, 2 CPU processes (gloo): train (effective batch 8, per-rank RNG state, one report),
    an interrupted save, resume (only rank 0 cleans up; same weights as the uninterrupted run), then
    evaluate split across the ranks into one report identical to a single-process evaluation."""
    import shutil

    from mixcritic.critics.llm.checkpoint import read_trained

    mert_dir, llm_dir = tiny_base
    run = tmp_path / "run"
    common = [str(toy_data), "--out", str(run), "--preset", "tiny", "--batch-size", "4", "--save-steps", "2", "--logging-steps", "1",
              "--eval-steps", "0", "--workers", "0", "--encoder", str(mert_dir), "--llm", str(llm_dir),
              "--device", "cpu", "--json"]
    stdout = torchrun(tmp_path, "train", "train", *common, "--max-steps", "4")
    assert stdout["1"] == ""  # only rank 0 reports
    summary = json.loads(stdout["0"])
    assert summary["global_step"] == 4 and summary["effective_batch"] == 8
    names = {p.name for p in (run / "checkpoint-4").iterdir()}
    assert {"rng_state_0.json", "rng_state_1.json", "COMPLETE", "trained.safetensors"} <= names
    assert (run / "model" / "COMPLETE").is_file()
    uninterrupted = read_trained(run / "model")

    shutil.rmtree(run / "model")  # interrupted while saving step 4: no final model, checkpoint-4 incomplete
    (run / "checkpoint-4" / "COMPLETE").unlink()
    stdout = torchrun(tmp_path, "resume", "train", *common, "--max-steps", "4", "--resume")
    resumed = json.loads(stdout["0"])
    assert resumed["resumed_from"] == str(run / "checkpoint-2") and resumed["global_step"] == 4
    again = read_trained(run / "model")
    assert again.keys() == uninterrupted.keys()
    for key in again:
        assert torch.equal(again[key], uninterrupted[key]), key

    launched, single = tmp_path / "eval-2", tmp_path / "eval-1"
    evaluate = ["evaluate", str(toy_data), "--model", str(run), "--limit", "6", "--batch-size", "2", "--device", "cpu"]
    stdout = torchrun(tmp_path, "evaluate", *evaluate, "--out", str(launched), "--json")
    assert stdout["1"] == "" and json.loads(stdout["0"])["sample"]["n"] == 6
    result = runner.invoke(app, [*evaluate, "--out", str(single), "--json"])
    assert result.exit_code == 0, result.output
    assert (launched / "report.json").read_text() == (single / "report.json").read_text()
    assert (launched / "predictions.jsonl").read_text() == (single / "predictions.jsonl").read_text()
    assert not list(launched.glob("predictions.rank*"))


def test_train_cli_rejects_an_unknown_scheduler_before_building_models(toy_data, tmp_path):
    result = runner.invoke(app, ["train", str(toy_data), "--out", str(tmp_path / "run"), "--lr-scheduler", "zigzag"])
    assert result.exit_code == 1 and "invalid training option" in result.stderr
    assert not (tmp_path / "run").exists()


def test_paper_preset_without_local_weights_says_how_to_get_them(toy_data, tmp_path):
    result = runner.invoke(app, ["train", str(toy_data), "--out", str(tmp_path / "run"), "--preset", "paper",
                                 "--encoder", str(tmp_path / "no-such-mert"), "--device", "cpu"])
    assert result.exit_code == 1
    assert "no-such-mert" in result.stderr and "huggingface-cli download" in result.stderr
    result = runner.invoke(app, ["train", str(toy_data), "--out", str(tmp_path / "run2"), "--preset", "paper",
                                 "--device", "cpu"])
    assert result.exit_code == 1 and "m-a-p/MERT-v1-330M" in result.stderr and "Traceback" not in result.stderr
