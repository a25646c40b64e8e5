#!/usr/bin/env bash
# GPU smoke test of the whole LLM path on one CUDA GPU, without weights or internet (issue 11, item 6).
#
#   bench/gpu_smoke.sh [WORKDIR]          # full size on CUDA: MERT-v1-330M + Qwen2-7B-Instruct shapes
#   bench/gpu_smoke.sh --tiny [WORKDIR]   # the same script with tiny models on a CPU (a test of it)
#
# Steps: random-init base models written in the real on-disk layouts (bench/gpu_smoke_models.py);
# toy stems -> synth (10 s segments); `train --preset paper-run` through the HF Trainer for STEPS
# steps, killed (SIGTERM, as by a crash or a scheduler) after the checkpoint at STEPS/2 is complete, then `--resume`d to STEPS;
# `evaluate --limit 32`; `critique` of one toy session. Prints step time, samples/s and peak GPU
# memory (train: torch's max allocated; whole script: nvidia-smi's peak used) as a last JSON line.
#
# Environment: STEPS (20), GRAD_ACCUM (1: paper-run's 4 would make each step 64 clips and the
# smoke run ~4x longer), BATCH_SIZE (paper-run's 16), WORKERS (4), PYTHON (python).
# Needs mixcritic's dependencies, the audio ones included (soundfile, soxr, pyloudnorm).
# Target: under 8 minutes on one H200. Not yet run on a GPU (see docs/performance.md).
set -euo pipefail

TINY=0
if [[ "${1:-}" == "--tiny" ]]; then TINY=1; shift; fi
WORK=$(realpath -m "${1:-$(mktemp -d -t mixcritic-smoke-XXXX)}")
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python}
STEPS=${STEPS:-20}
HALF=$((STEPS / 2))
GRAD_ACCUM=${GRAD_ACCUM:-1}
WORKERS=${WORKERS:-4}
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
mkdir -p "$WORK"
mc() { "$PY" -m mixcritic "$@"; }
now() { date +%s.%N; }
secs() { "$PY" -c "import sys; print(round(float(sys.argv[2]) - float(sys.argv[1]), 1))" "$1" "$2"; }

if [[ $TINY == 1 ]]; then
  DEVICE=cpu; BATCH_SIZE=${BATCH_SIZE:-2}; SECONDS_PER_SONG=6; SEGMENT_S=2; LIMIT=8
  SIZE=(--projector-hidden 64 --audio-pool 4 --no-gradient-checkpointing)
  MODELS_FLAG=(--tiny); WORKERS=0
else
  DEVICE=cuda; BATCH_SIZE=${BATCH_SIZE:-16}; SECONDS_PER_SONG=30; SEGMENT_S=10; LIMIT=32
  SIZE=(); MODELS_FLAG=()
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: use --tiny')"
fi
"$PY" -c "import soundfile, soxr, pyloudnorm" || { echo "gpu_smoke.sh: needs the audio libraries (pip install -e .)" >&2; exit 2; }

MEMLOG="$WORK/nvidia-smi.csv"
if [[ $DEVICE == cuda ]] && command -v nvidia-smi >/dev/null; then
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 > "$MEMLOG" &
  SMI=$!
  trap 'kill $SMI 2>/dev/null || true' EXIT
fi

echo "== models ($WORK/models)" >&2
t0=$(now)
"$PY" "$ROOT/bench/gpu_smoke_models.py" --out "$WORK/models" "${MODELS_FLAG[@]}" > "$WORK/models.json"
t_models=$(secs "$t0" "$(now)")

echo "== data" >&2
t0=$(now)
rm -rf "$WORK/stems" "$WORK/data" "$WORK/run" "$WORK/eval"
mc toy-stems "$WORK/stems" --tracks 4 --seconds "$SECONDS_PER_SONG" >/dev/null
mc synth "$WORK/stems" --out "$WORK/data" --segment-s "$SEGMENT_S" --valid-fraction 0 --workers 2 --json > "$WORK/synth.json"
t_data=$(secs "$t0" "$(now)")

TRAIN=(train "$WORK/data" --out "$WORK/run" --preset paper-run --encoder "$WORK/models/mert" --llm "$WORK/models/qwen2"
       --max-steps "$STEPS" --save-steps "$HALF" --eval-steps 0 --logging-steps 1 --batch-size "$BATCH_SIZE"
       --grad-accum "$GRAD_ACCUM" --workers "$WORKERS" --device "$DEVICE" "${SIZE[@]}" --json)
mc "${TRAIN[@]}" --show-config > "$WORK/config.json"

echo "== train to step $HALF, then interrupt" >&2
t0=$(now)
"$PY" -m mixcritic "${TRAIN[@]}" > "$WORK/train-1.json" 2> "$WORK/train-1.log" &
TRAIN_PID=$!  # python itself (not a subshell), so the kill reaches the training process
interrupted=false
while kill -0 "$TRAIN_PID" 2>/dev/null; do
  if [[ -f "$WORK/run/checkpoint-$HALF/COMPLETE" ]]; then
    kill -TERM "$TRAIN_PID"; interrupted=true; break  # (a background job ignores SIGINT)
  fi
  sleep 1
done
wait "$TRAIN_PID" || true
t_first=$(secs "$t0" "$(now)")
[[ -f "$WORK/run/checkpoint-$HALF/COMPLETE" ]] || { tail -30 "$WORK/train-1.log" >&2; echo "no checkpoint-$HALF" >&2; exit 1; }

echo "== resume to step $STEPS (interrupted: $interrupted)" >&2
t0=$(now)
mc "${TRAIN[@]}" --resume > "$WORK/train-2.json"
t_resume=$(secs "$t0" "$(now)")

echo "== evaluate $LIMIT clips" >&2
t0=$(now)
mc evaluate "$WORK/data" --model "$WORK/run" --limit "$LIMIT" --batch-size 8 --device "$DEVICE" --out "$WORK/eval" --json > "$WORK/evaluate.json"
t_eval=$(secs "$t0" "$(now)")

echo "== critique one session" >&2
SESSION=$(find "$WORK/stems/test" -mindepth 1 -maxdepth 1 -type d | sort | head -1)
t0=$(now)
mc critique "$SESSION" --anchor drums --model "$WORK/run" --device "$DEVICE" --json > "$WORK/critique.json"
t_critique=$(secs "$t0" "$(now)")

[[ -n "${SMI:-}" ]] && { kill "$SMI" 2>/dev/null || true; sleep 0.5; }
"$PY" - "$WORK" "$interrupted" "$t_models" "$t_data" "$t_first" "$t_resume" "$t_eval" "$t_critique" <<'PYEOF'
import json, sys
from pathlib import Path

work = Path(sys.argv[1])
interrupted = sys.argv[2] == "true"
t_models, t_data, t_first, t_resume, t_eval, t_critique = map(float, sys.argv[3:9])
config = json.loads((work / "config.json").read_text())
summary = json.loads((work / "train-2.json").read_text())
evaluation = json.loads((work / "evaluate.json").read_text())
critique = json.loads((work / "critique.json").read_text())
steps = summary["global_step"] - int(Path(summary["resumed_from"]).name.split("-")[1])
clips_per_step = config["batch_size"] * config["grad_accum"]
memlog = work / "nvidia-smi.csv"
used = [int(v) for v in memlog.read_text().split()] if memlog.exists() and memlog.stat().st_size else []
report = {
    "device": "cuda" if used or summary.get("peak_gpu_memory_gib") else "cpu",
    "preset": config["preset"], "batch_size": config["batch_size"], "grad_accum": config["grad_accum"],
    "global_step": summary["global_step"], "interrupted": interrupted, "resumed_from": summary["resumed_from"],
    "step_time_s": round(summary["train_seconds"] / steps, 3),
    "train_samples_per_s": round(steps * clips_per_step / summary["train_seconds"], 2),
    "peak_train_memory_gib": summary.get("peak_gpu_memory_gib"),
    "peak_gpu_memory_used_gib": round(max(used) / 1024, 2) if used else None,
    "evaluated_clips": evaluation["sample"]["n"],
    "critique_keys": sorted(critique)[:6],
    "seconds": {"models": t_models, "data": t_data, "train_to_interrupt": t_first, "resume": t_resume,
                "evaluate": t_eval, "critique": t_critique,
                "total": round(t_models + t_data + t_first + t_resume + t_eval + t_critique, 1)},
}
(work / "smoke.json").write_text(json.dumps(report, indent=2))
print(json.dumps(report))
PYEOF
