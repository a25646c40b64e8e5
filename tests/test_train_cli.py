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


def test_train_cli_errors_are_one_line(tmp_path):
    result = runner.invoke(app, ["train", str(tmp_path / "missing"), "--out", str(tmp_path / "run")])
    assert result.exit_code == 1
    assert "Error:" in result.stderr and "mixcritic synth" in result.stderr and "Traceback" not in result.stderr


def test_train_cli_rejects_unknown_preset(toy_data, tmp_path):
    result = runner.invoke(app, ["train", str(toy_data), "--out", str(tmp_path / "run"), "--preset", "huge"])
    assert result.exit_code == 1 and "--preset must be one of paper, tiny" in result.stderr


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


def test_two_process_data_parallel_run_on_cpu(toy_data, tiny_base, tmp_path):
    """torchrun with 2 CPU processes (gloo): one run, effective batch 8, per-rank RNG state, one report."""
    import os
    import subprocess
    import sys

    import socket

    with socket.socket() as sock:  # a free port, so parallel test runs do not collide
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mert_dir, llm_dir = tiny_base
    run = tmp_path / "run"
    env = os.environ | {"OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
               "--log-dir", str(tmp_path / "logs"), "--redirects", "3",
               "-m", "mixcritic", "train", str(toy_data), "--out", str(run), "--preset", "tiny", "--max-steps", "2",
               "--save-steps", "2", "--logging-steps", "1", "--eval-steps", "0", "--workers", "0",
               "--encoder", str(mert_dir), "--llm", str(llm_dir), "--device", "cpu", "--json"]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    logs = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for p in sorted((tmp_path / "logs").rglob("std*.log")))
    assert proc.returncode == 0, logs
    stdout = {p.parent.name: p.read_text() for p in (tmp_path / "logs").rglob("stdout.log")}
    assert stdout["1"] == ""  # only rank 0 reports
    summary = json.loads(stdout["0"])
    assert summary["global_step"] == 2 and summary["effective_batch"] == 8
    names = {p.name for p in (run / "checkpoint-2").iterdir()}
    assert {"rng_state_0.json", "rng_state_1.json", "COMPLETE", "trained.safetensors"} <= names
    assert (run / "model" / "COMPLETE").is_file()


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
