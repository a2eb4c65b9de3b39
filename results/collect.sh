#!/usr/bin/env bash
# Copy the small files of a finished sweep into results/<study>/: each job's metrics.json, the summary, and the
# figures digits.report draws (curves.png for every job, curves_top<K>.png for the K best). Checkpoints, event files
# and predictions stay in the sweep dir.
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
done
cp "$sweep"/summary.csv "$sweep"/summary.md "$sweep"/curves*.png "$out/"
echo "$out"
