#!/usr/bin/env bash
# make reproduce-retuning: addition, parity and DP, each as recursive (Re-Tuning), scratchpad and baseline on the
# same tiny model and budget, trained from scratch on CPU; per task one plot of accuracy by size (trained sizes
# shaded) and one table, then the three tasks beside the paper's averaged claim. About 45-50 min on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
start=$(date +%s)

# reproduce TASK PRESET "MAKE-DATA ARGS" "EVAL TOKENS recursive scratchpad baseline"
reproduce() {
  local task=$1 preset=$2 data_args=$3 tokens=($4) i=0
  local adapters=()
  for format in recursive scratchpad baseline; do
    # shellcheck disable=SC2086
    $BIN/llmft make-data retuning --task "$task" --format "$format" $data_args
    $BIN/llmft train "$preset" --overwrite "retuning.format=$format" \
      "data.train=data/retuning/$task-$format/train.jsonl" "data.eval=data/retuning/$task-$format/eval.jsonl" \
      "train.output_dir=runs/retuning-$task-$format" "eval.max_new_tokens=${tokens[$i]}"
    rm -rf "runs/retuning-$task-$format/eval"
    adapters+=(--adapter "runs/retuning-$task-$format/final")
    i=$((i + 1))
  done
  $BIN/llmft eval "${adapters[@]}" --out "eval-compare/retuning-$task"
  echo "$task: $(( $(date +%s) - start )) s so far"
}

reproduce addition recipes/retuning-addition-tiny.toml "--min-size 3 --max-size 5 --n 20000 --no-resample" "40 200 40"
reproduce parity recipes/retuning-parity-tiny.toml "--max-size 8" "100 100 20"
reproduce dp recipes/retuning-dp-tiny.toml "--max-size 4 --n 3000 --eval-n 50" "300 2400 40"
$BIN/python -m llmft.recipes.retuning.reproduce runs | tee eval-compare/retuning-claim.md
echo "plots: eval-compare/retuning-{addition,parity,dp}/accuracy_by_size.png; table: eval-compare/retuning-claim.md"
echo "reproduce-retuning finished in $(( $(date +%s) - start )) s"
