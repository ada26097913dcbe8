#!/usr/bin/env bash
# make demo: the main job on a fresh machine, a tiny model trained from scratch on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
start=$(date +%s)
$BIN/llmft make-data sft --toy caesar --n 2000
$BIN/llmft train recipes/sft-tiny.toml --overwrite
$BIN/llmft eval --adapter runs/sft-tiny/final
echo "demo finished in $(( $(date +%s) - start )) s"
