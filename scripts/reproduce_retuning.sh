#!/usr/bin/env bash
# make reproduce-retuning: recursive, scratchpad and baseline addition on the same tiny model and budget,
# evaluated on sizes 1-10 and drawn on one plot (the paper's Figure in miniature). About 30 min on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
for format in recursive scratchpad baseline; do
  $BIN/llmft make-data retuning --task addition --format "$format" --min-size 3 --max-size 5 --n 20000 --no-resample
  $BIN/llmft train recipes/retuning-addition-tiny.toml --overwrite \
    "data.train=data/retuning/addition-$format/train.jsonl" "data.eval=data/retuning/addition-$format/eval.jsonl" \
    "retuning.format=$format" "train.output_dir=runs/retuning-addition-$format"
  rm -rf "runs/retuning-addition-$format/eval"
done
$BIN/llmft eval --adapter runs/retuning-addition-recursive/final --adapter runs/retuning-addition-scratchpad/final \
  --adapter runs/retuning-addition-baseline/final --out eval-compare/retuning-addition eval.max_new_tokens=200
