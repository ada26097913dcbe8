#!/usr/bin/env bash
# make demo: Re-Tuning's recursive addition on a tiny Llama trained from scratch on CPU, then its
# accuracy by problem size (in and beyond the training range) and a plot. Arguments are overrides for the
# training, e.g. `bash scripts/demo.sh train.bf16=false train.seed=1` (make demo ARGS="...").
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
start=$(date +%s)
$BIN/llmft make-data retuning --task addition --format recursive --min-size 3 --max-size 5 --n 20000 --no-resample --show 1
made=$(date +%s)
log=$(mktemp)
$BIN/llmft train recipes/retuning-addition-tiny.toml --overwrite "$@" | tee "$log"
precision=$(grep -m1 -o "precision [^(]*" "$log" || true)
rm -f "$log"
trained=$(date +%s)
rm -rf runs/retuning-addition-tiny/eval
$BIN/llmft eval --adapter runs/retuning-addition-tiny/final
end=$(date +%s)
echo "plot: runs/retuning-addition-tiny/eval/final/accuracy_by_size.png"
echo "demo finished in $((end - start)) s (make-data $((made - start)) s, train $((trained - made)) s, eval $((end - trained)) s; ${precision% })"
