"""`make-data --show` tokenises exactly as training does: same tokenizer builder, same recipe rule."""

from pathlib import Path

from click.testing import CliRunner
from transformers import AutoTokenizer

from llmft.cli import cli
from llmft.core.inspect import render_example
from llmft.core.jsonl import write_jsonl
from llmft.core.model_setup import build_tokenizer, training_examples
from llmft.recipes.base import load_recipe_config
from tests.conftest import tiny_config, train_run


def trained_examples(config, recipe, count):
    """The run's saved tokenizer and the first examples as the trainer tokenised them."""
    tokenizer = AutoTokenizer.from_pretrained(Path(config.train.output_dir) / "tokenizer")
    return tokenizer, training_examples(config, recipe, tokenizer, limit=count)


def test_show_equals_training_for_a_recipe_with_special_tokens(tmp_path):
    data = tmp_path / "data"
    options = ["--synthetic", "30", "--system-prompt", "", "--no-instruction", "--num-pause-tokens", "2"]
    made = CliRunner().invoke(cli, ["make-data", "squad", *options, "--out", str(data)])
    assert made.exit_code == 0, made.output
    toml = tmp_path / "squad.toml"
    toml.write_text(f'''# llmft train squad.toml
recipe = "squad"
[model]
tokenizer = "bpe"
vocab_size = 300
[model.tiny]
hidden_size = 32
num_heads = 2
[adapter]
method = "full"
[data]
train = "{data / 'train.jsonl'}"
eval = "{data / 'test.jsonl'}"
[train]
output_dir = "{tmp_path / 'run'}"
max_steps = 1
batch_size = 2
bf16 = "false"
[squad]
num_pause_tokens = 2
''')
    config, recipe = load_recipe_config(toml)
    train_run(config, progress=False)
    run_tokenizer, trained = trained_examples(config, recipe, 3)
    pause = run_tokenizer.convert_tokens_to_ids("<blah_1>")
    assert all(pause in example.input_ids for example in trained)

    shown_tokenizer = build_tokenizer(config, recipe)
    assert shown_tokenizer.get_vocab() == run_tokenizer.get_vocab()
    shown = training_examples(config, recipe, shown_tokenizer, limit=3)
    assert [(e.input_ids, e.labels) for e in shown] == [(e.input_ids, e.labels) for e in trained]

    printed = CliRunner().invoke(cli, ["make-data", "squad", *options, "--out", str(data), "--show", "3",
                                       "--config", str(toml)])
    assert printed.exit_code == 0, printed.output
    for example in trained:
        assert render_example(run_tokenizer, example, color=False) in printed.output


def test_show_equals_training_for_an_init_from_run(tmp_path):
    records = [{"prompt": f"<cue> shift {w} =", "completion": f" {w[::-1]}"} for w in ("ab", "cd", "ef", "gh")] * 5
    data = write_jsonl(tmp_path / "cue.jsonl", records)
    stage1 = tiny_config(tmp_path / "s1", data, adapter={"method": "full", "new_tokens": ["<cue>"]},
                         train={"max_steps": 1})
    train_run(stage1, progress=False)
    stage2 = tiny_config(tmp_path / "s2", data, adapter={"method": "lora", "r": 2, "new_tokens": ["<cue>"],
                                                          "init_from": str(tmp_path / "s1" / "run" / "final")},
                         train={"max_steps": 1})
    train_run(stage2, progress=False)
    from llmft.recipes.base import get_recipe

    recipe = get_recipe("sft")
    run_tokenizer, trained = trained_examples(stage2, recipe, 4)
    shown_tokenizer = build_tokenizer(stage2, recipe)
    assert shown_tokenizer.get_vocab() == run_tokenizer.get_vocab()
    assert [e.input_ids for e in training_examples(stage2, recipe, shown_tokenizer, limit=4)] == [
        e.input_ids for e in trained]
    assert run_tokenizer.convert_tokens_to_ids("<cue>") in trained[0].input_ids
