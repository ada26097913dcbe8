# llmft: `make demo` and `make test` work on a fresh machine (they create .venv and install first).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
EXTRAS  := $(VENV)/.installed-extras
TORCH   ?= torch==2.13.0
export TOKENIZERS_PARALLELISM := false
export HF_HUB_OFFLINE := 1
export PYTHONUNBUFFERED := 1

.PHONY: install demo test test-slow bench lint reproduce-retuning clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# torch first (the CPU build here; a GPU user installs their torch before `make`), then the package.
# `make demo` needs only the package; tests, lint and benchmarks add the extras (bitsandbytes, pytest, ruff,
# the serving stack), which would cost the demo ~10 s more to install.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e .
	touch $(STAMP)

$(EXTRAS): $(STAMP)
	$(BIN)/python -m pip install -q -e ".[dev,quant]"
	touch $(EXTRAS)

# `llmft` lives in .venv/bin: a make target cannot change its caller's PATH, so it says how (README, first lines).
ACTIVATE := @echo "llmft is installed in $(VENV): run 'source $(VENV)/bin/activate' to put llmft on your PATH"

install: $(EXTRAS)
	$(ACTIVATE)

# ARGS: overrides for the demo's training, e.g. make demo ARGS="train.bf16=false train.seed=1"
demo: $(STAMP)
	bash scripts/demo.sh $(ARGS)
	$(ACTIVATE)

# Budget: a fresh clone's `make test` takes ~5 min on 2 idle cores (install ~1.5 min, pytest ~3.5 min; the demo's
# canary ~1 min of it); keep it under 15 min, and mark longer end-to-end runs `slow` (make test-slow).
test: $(EXTRAS)
	$(BIN)/python -m pytest -q
	$(ACTIVATE)

test-slow: $(EXTRAS)
	$(BIN)/python -m pytest -q -m slow

bench: $(EXTRAS)
	$(BIN)/python bench/run_all.py

lint: $(EXTRAS)
	$(BIN)/ruff check src tests bench

# Re-Tuning's miniature over seeds 0-2 into reproduce/retuning/report.md; ARGS: e.g. ARGS="--quick"
reproduce-retuning: $(STAMP)
	$(BIN)/llmft reproduce retuning $(ARGS)

clean:
	rm -rf runs data eval-compare
