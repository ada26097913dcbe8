"""lm-eval's `local-completions` against `llmft serve`: a multiple-choice task from a local JSONL file scores
the same accuracy as llmft's own option log-likelihoods (core/scoring.py) on the same items.

lm-eval is not an llmft dependency: install it in a venv of its own (docs/serve.md) and point
$LLMFT_LM_EVAL at its `lm_eval` executable, or put `lm_eval` on PATH.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from llmft.commands.serve import served_models
from llmft.core.inference import load_for_inference
from llmft.core.jsonl import write_jsonl
from llmft.core.scoring import option_loglikelihoods
from llmft.recipes.sft.toys import toy_split
from llmft.serve.app import create_app

from .conftest import serving

TASK = """task: llmft_choice
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{prompt}}}}"
doc_to_choice: "{{{{options}}}}"
doc_to_target: answer
target_delimiter: ""
metric_list:
  - metric: acc
"""


def lm_eval_executable() -> str:
    found = os.environ.get("LLMFT_LM_EVAL") or shutil.which("lm_eval")
    if not found or not Path(found).exists():
        pytest.fail("lm-eval not found: python3 -m venv /path/venv && /path/venv/bin/pip install torch lm-eval, "
                    "then LLMFT_LM_EVAL=/path/venv/bin/lm_eval (docs/serve.md)")
    return found


def choice_items(n: int) -> list[dict]:
    """Caesar-shift prompts ("shift abc =" -> " bcd"), each with its true completion among the same letters
    shifted by 2, 3 and 4 (the answer's place rotates)."""
    records, _ = toy_split("caesar", n, 0, seed=11)
    items = []
    for i, record in enumerate(records):
        word = record["prompt"][len("shift "):-len(" =")]
        wrong = [" " + "".join(chr((ord(c) - 97 + k) % 26 + 97) for c in word) for k in (2, 3, 4)]
        answer = i % 4
        items.append({"prompt": record["prompt"], "options": wrong[:answer] + [record["completion"]] + wrong[answer:],
                      "answer": answer})
    return items


@pytest.mark.slow
def test_lm_eval_multiple_choice_accuracy_equals_llmft_scoring(two_runs, tmp_path):
    executable = lm_eval_executable()
    shift, _ = two_runs
    items = choice_items(40)
    _, tokenizer, model = load_for_inference(shift)
    logliks = [option_loglikelihoods(model, tokenizer, it["prompt"], it["options"]) for it in items]
    own = [max(range(4), key=scores.__getitem__) for scores in logliks]
    own_accuracy = sum(choice == it["answer"] for choice, it in zip(own, items)) / len(items)
    data = write_jsonl(tmp_path / "items.jsonl", items)
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "llmft_choice.yaml").write_text(TASK.format(data=data))
    app = create_app(served_models([f"shift={shift}"]))
    with serving(app) as url:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
        args = (f"model=shift,base_url={url}/v1/completions,tokenizer={shift},tokenizer_backend=huggingface,"
                "tokenized_requests=True,add_bos_token=True,num_concurrent=4,max_retries=1")
        run = subprocess.run([executable, "--model", "local-completions", "--model_args", args, "--tasks",
                              "llmft_choice", "--include_path", str(tasks), "--output_path", str(tmp_path / "out"),
                              "--log_samples"],
                             capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())
    accuracy = results["results"]["llmft_choice"]["acc,none"]
    assert accuracy == pytest.approx(own_accuracy), (accuracy, own_accuracy)
    # Not only the argmax: every option's log-likelihood through the server equals llmft's own.
    samples = [json.loads(line) for line in next((tmp_path / "out").rglob("samples_llmft_choice_*.jsonl"))
               .read_text().splitlines()]
    served = {sample["doc"]["prompt"]: [float(resp[0]) for resp in sample["filtered_resps"]] for sample in samples}
    assert len(served) == len(items)
    for item, scores in zip(items, logliks):
        assert served[item["prompt"]] == pytest.approx(scores, abs=1e-4), item
