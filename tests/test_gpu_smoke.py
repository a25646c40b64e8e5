"""bench/gpu_smoke.sh: its shell is valid and its model builder writes layouts the real loaders accept.

The whole script runs on a CPU with `bench/gpu_smoke.sh --tiny` (a few minutes; run by hand, see
docs/performance.md); on a GPU it has not run yet.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_smoke_script_is_valid_bash():
    proc = subprocess.run(["bash", "-n", str(ROOT / "bench" / "gpu_smoke.sh")], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_smoke_models_load_through_the_real_loaders(tmp_path):
    from mixcritic.critics.llm.encoder import load_encoder
    from mixcritic.critics.llm.language_model import load_llm, load_tokenizer

    env = os.environ | {"PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_smoke_models.py"), "--out", str(tmp_path), "--tiny"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    written = json.loads(proc.stdout.strip().splitlines()[-1])
    mert, qwen2 = Path(written["mert"]), Path(written["qwen2"])
    assert (mert / "pytorch_model.bin").is_file() and (mert / "preprocessor_config.json").is_file()
    config = json.loads((mert / "config.json").read_text())
    assert config["feat_extract_norm"] == "group" and config["conv_bias"] is False
    encoder, info = load_encoder(mert)  # strict: every key must match
    assert info.num_hidden_states == config["num_hidden_layers"] + 1
    tokenizer = load_tokenizer(qwen2)
    llm = load_llm(qwen2, "cpu", quantize_4bit=True)
    assert llm.config.eos_token_id == tokenizer.eos_token_id
    assert json.loads((qwen2 / "config.json").read_text())["hidden_act"] == "silu"
