#!/usr/bin/env bash
# The GPU path proved in one command, in under 8 minutes on one GPU, written to one JSON record:
#   1. the GPU tests (python -m pytest -m gpu: a run in the default precision, kill and resume, CPU-only tools on a
#      GPU-trained checkpoint, two jobs sharing one GPU through hydra/launcher=gpus, DDP where two GPUs are seen);
#   2. benchmarks/train_speed.py --device cuda: the trainer against a plain loop, in one process;
#   3. the report's 6-job optimizer x lr grid (experiment=optim_grid, 10 epochs) through hydra/launcher=gpus, timed
#      end to end at jobs_per_gpu 1 and 4;
#   4. one experiment=best seed, timed.
#
#   bash benchmarks/gpu_check.sh [OUT_DIR]       (default: outputs/gpu_check/<UTC time>)
#
# PYTHON names the interpreter (default: python); the embedded MNIST is read from its usual place, or DIGITS_DATA.
# A step that fails or runs out of time is recorded as such, and the next one still runs. The record is
# OUT_DIR/gpu_check.json; each step's output is OUT_DIR/<step>.log.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu_check: needs CUDA (a GPU and a CUDA build of torch); nothing was run" >&2
  exit 2
fi

out=${1:-outputs/gpu_check/$(date -u +%Y-%m-%dT%H-%M-%S)}
mkdir -p "$out"
steps="$out/steps.jsonl"
: > "$steps"

step() {  # step NAME SECONDS CMD...: run, time, and record the exit status
  local name=$1 limit=$2
  shift 2
  local start end rc
  start=$(date +%s.%N)
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  rc=$?
  end=$(date +%s.%N)
  printf '{"step": "%s", "rc": %d, "seconds": %.1f, "timed_out": %s}\n' "$name" "$rc" \
    "$(echo "$end - $start" | bc)" "$([ "$rc" = 124 ] && echo true || echo false)" >> "$steps"
  echo "gpu_check: $name: exit $rc" >&2
}

step tests 150 "$PY" -m pytest -o addopts= -m gpu -q -p no:cacheprovider  # no xdist needed
step train_speed 90 "$PY" benchmarks/train_speed.py --device cuda --epochs 3 --record "$out/train_speed.json"
step grid_jobs_per_gpu_1 150 "$PY" -m digits.train experiment=optim_grid trainer=gpu hydra/launcher=gpus \
  hydra.launcher.jobs_per_gpu=1 trainer.enable_progress_bar=false "hydra.sweep.dir=$out/grid_1"
step grid_jobs_per_gpu_4 90 "$PY" -m digits.train experiment=optim_grid trainer=gpu hydra/launcher=gpus \
  hydra.launcher.jobs_per_gpu=4 trainer.enable_progress_bar=false "hydra.sweep.dir=$out/grid_4"
step best 120 "$PY" -m digits.train experiment=best trainer=gpu trainer.enable_progress_bar=false \
  "hydra.run.dir=$out/best"

"$PY" - "$out" <<'EOF'
"""Gather the steps' records into one JSON file."""
import json
import sys
from pathlib import Path

import torch

out = Path(sys.argv[1])
record = {
    "gpu": torch.cuda.get_device_name(0),
    "gpus": torch.cuda.device_count(),
    "torch": torch.__version__,
    "steps": [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines() if line.strip()],
}
speed = out / "train_speed.json"
record["train_speed"] = json.loads(speed.read_text()) if speed.is_file() else None
for name in ("grid_1", "grid_4"):
    jobs = sorted((out / name).glob("*/metrics.json"))
    record[name] = [
        {k: m.get(k) for k in ("status", "test_acc", "train_seconds", "cuda_visible_devices", "precision")}
        | {"job": p.parent.name}
        for p in jobs
        for m in [json.loads(p.read_text())]
    ]
best = out / "best" / "metrics.json"
record["best"] = json.loads(best.read_text()) if best.is_file() else None
(out / "gpu_check.json").write_text(json.dumps(record, indent=2) + "\n")
print(out / "gpu_check.json")
EOF
