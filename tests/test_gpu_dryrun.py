"""bench/gpu_dryrun.py runs (tiny, CPU) without the audio I/O libraries the GPU machine lacks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_dryrun_tiny_runs_without_audio_libraries(tmp_path):
    code = (
        "import sys, runpy\n"
        "for name in ('soundfile', 'soxr', 'pyloudnorm', 'typer'):\n"
        "    sys.modules[name] = None  # absent on the GPU machine: importing them raises\n"
        f"sys.argv = ['gpu_dryrun.py', '--tiny', '--steps', '1', '--seconds', '1', '--out', {str(tmp_path / 'r.json')!r}]\n"
        f"runpy.run_path({str(ROOT / 'bench' / 'gpu_dryrun.py')!r}, run_name='__main__')\n"
    )
    env = {"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["nf4_linear_layers"] == 14 and report["lora_4bit_layers"] == 14
    assert [r["audio_pool"] for r in report["runs"]] == [1, 4]
    assert [r["audio_positions"] for r in report["runs"]] == [74, 18]
    assert all(r["samples_per_s"] > 0 and len(r["losses"]) == 1 for r in report["runs"])
