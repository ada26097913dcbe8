import json

import pytest

from llmft.core.errors import LlmftError
from llmft.core.jsonl import write_jsonl
from tests.conftest import eval_run, train_run

from ..conftest import tiny_config


def test_tiny_sft_learns_the_toy_task(tmp_path, caesar_data):
    """Loss falls by more than half and held-out exact match rises from ~0 to >= 0.9."""
    train_file, eval_file = caesar_data
    config = tiny_config(tmp_path, train_file, eval_file,
                         model={"tiny": {"hidden_size": 64}},
                         train={"max_steps": 150, "batch_size": 8, "learning_rate": 3e-3, "lr_scheduler": "cosine",
                                "warmup_steps": 10, "save_steps": 75},
                         data={"pack_length": 256})
    before = tiny_config(tmp_path, train_file, eval_file, model={"tiny": {"hidden_size": 64}},
                         train={"max_steps": 1, "learning_rate": 1e-9, "output_dir": str(tmp_path / "untrained")})
    train_run(before, progress=False)
    untrained, _ = eval_run(tmp_path / "untrained" / "final", [])
    result = train_run(config, progress=False)
    assert result.losses[-1] < 0.5 * result.losses[0]
    metrics, eval_dir = eval_run(tmp_path / "run" / "final", [])
    assert untrained["exact_match"] <= 0.05
    assert metrics["exact_match"] >= 0.9, metrics
    rows = [json.loads(line) for line in (eval_dir / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 100 and set(rows[0]) == {"index", "prompt", "output", "reference", "correct"}
    assert json.loads((eval_dir / "metrics.json").read_text())["exact_match"] == metrics["exact_match"]
    logged = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert logged[-1]["step"] == 150 and logged[-1]["tokens_per_s"] > 0
    for folder in ("final", "checkpoint-75"):
        assert (tmp_path / "run" / folder / "llmft.toml").is_file()
        assert (tmp_path / "run" / folder / "tokenizer.json").is_file()


def test_interrupted_eval_resumes_where_it_stopped(tmp_path, caesar_data):
    train_file, eval_file = caesar_data
    train_run(tiny_config(tmp_path, train_file, eval_file, train={"max_steps": 2}), progress=False)
    folder = tmp_path / "run" / "final"
    eval_run(folder, ["eval.max_examples=30"])
    results = tmp_path / "run" / "eval" / "final" / "results.jsonl"
    lines = results.read_text().splitlines()
    results.write_text("\n".join(lines[:10]) + "\n" + lines[10][:15])  # killed mid-line after 10 rows
    metrics, _ = eval_run(folder, ["eval.max_examples=30"])
    again = results.read_text().splitlines()
    assert metrics["n"] == 30 and len(again) == 30 and again[:10] == lines[:10]


def test_resume_matches_an_uninterrupted_run(tmp_path, caesar_data):
    train_file, _ = caesar_data
    common = {"adapter": {"method": "lora", "r": 4, "alpha": 8, "dropout": 0.1,
                          "target_modules": ["q_proj", "v_proj", "gate_proj"]},
              "train": {"max_steps": 8, "save_steps": 4, "learning_rate": 1e-2, "lr_scheduler": "cosine"}}
    whole = train_run(tiny_config(tmp_path / "a", train_file, **common), progress=False)
    interrupted = tiny_config(tmp_path / "b", train_file, **common)
    first = train_run(interrupted, stop_after_step=4, progress=False)
    assert first.steps == 4 and (tmp_path / "b" / "run" / "checkpoint-4").is_dir()
    with pytest.raises(LlmftError, match="already holds a run"):
        train_run(interrupted, progress=False)
    resumed = train_run(interrupted, resume=True, progress=False)
    assert resumed.steps == 8
    assert resumed.final_loss == pytest.approx(whole.final_loss, rel=1e-4)
    assert first.losses + resumed.losses == pytest.approx(whole.losses, rel=1e-4)
    steps = [json.loads(line)["step"] for line in (tmp_path / "b" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))  # nothing logged twice


def test_gradient_accumulation_is_invariant(tmp_path, caesar_data):
    """Batch 4 x GA 1 and batch 1 x GA 4 take the same steps: loss normalised over the whole window."""
    train_file, _ = caesar_data
    a = train_run(tiny_config(tmp_path / "a", train_file, train={"max_steps": 3, "batch_size": 4, "grad_accum": 1}),
              progress=False)
    b = train_run(tiny_config(tmp_path / "b", train_file, train={"max_steps": 3, "batch_size": 1, "grad_accum": 4}),
              progress=False)
    assert a.losses == pytest.approx(b.losses, rel=1e-5)
    assert sorted(a.trained_on) == sorted(b.trained_on)


def test_an_example_without_trained_tokens_is_an_error(tmp_path):
    """A recipe tokeniser that masks everything must fail loudly, not train on a zero loss."""
    from llmft.core.data import IGNORE, TokenizedExample, load_examples

    path = write_jsonl(tmp_path / "t.jsonl", [{"text": "ok"}, {"text": "all masked"}])

    def masked(record):
        return TokenizedExample([1, 2, 3], [IGNORE, 2, 3] if record["text"] == "ok" else [IGNORE] * 3)

    with pytest.raises(LlmftError, match=r"t.jsonl: line 2 has no trained tokens"):
        load_examples(path, None, 32, masked)


def test_adamw_is_fused_and_matches_the_foreach_step():
    """The fused AdamW (a speed fix) takes the same step as the default implementation."""
    import torch

    from llmft.core.config import config_from_dict
    from llmft.core.trainer import _optimizer

    torch.manual_seed(0)
    weights = [torch.nn.Linear(8, 4), torch.nn.Linear(8, 4)]
    weights[1].load_state_dict(weights[0].state_dict())
    config = config_from_dict({"train": {"learning_rate": 1e-2}})
    fused, _ = _optimizer(weights[0], config, 10)
    plain = torch.optim.AdamW(weights[1].parameters(), lr=1e-2, weight_decay=0.0)
    assert fused.defaults["fused"] is True
    for _ in range(3):
        for model, optimizer in zip(weights, (fused, plain)):
            model(torch.ones(2, 8)).square().sum().backward()
            optimizer.step()
            optimizer.zero_grad()
    for ours, reference in zip(weights[0].parameters(), weights[1].parameters()):
        assert torch.allclose(ours, reference, atol=1e-6)
