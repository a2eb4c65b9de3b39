#!/usr/bin/env bash
# Copy the small files of a finished sweep into results/<study>/: each job's metrics.json and its softmax outputs in
# compact form (softmax.npz: float16, ~100 kB a run, so ensembles of committed runs can be recomputed), the summary,
# and the figures digits.report draws (curves.png for every job, curves_top<K>.png for the K best). Checkpoints and
# event files stay in the sweep dir.
#   results/collect.sh <study> <sweep dir> [K]
set -euo pipefail
study=$1
sweep=$2
top=${3:-}
cd "$(dirname "$0")/.."
out=results/$study
mkdir -p "$out"
python -m digits.report "$sweep" >/dev/null
[ -n "$top" ] && python -m digits.report "$sweep" --top "$top" >/dev/null
for job in "$sweep"/*/; do
  [ -f "$job/metrics.json" ] || continue
  mkdir -p "$out/$(basename "$job")"
  cp "$job/metrics.json" "$out/$(basename "$job")/"
  if [ -f "$job/predictions.npz" ]; then
    python -c 'import sys; from pathlib import Path; from digits.runs import RunDir; RunDir(sys.argv[1]).write_compact_softmax(Path(sys.argv[2]))' \
      "$job" "$out/$(basename "$job")/softmax.npz"
  fi
done
cp "$sweep"/summary.csv "$sweep"/summary.md "$sweep"/curves*.png "$out/"
# A search's own record: the study (SQLite, from which its numbers are recomputed), its results and figures.
for f in study.db optimization_results.yaml search.json optimization_history.png param_importances.png; do
  [ -f "$sweep/$f" ] && cp "$sweep/$f" "$out/"
done
echo "$out"
