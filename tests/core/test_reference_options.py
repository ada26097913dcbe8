"""Trainer and loading options the reference implementations need: per-sequence loss, Adam betas, no BOS,
QLoRA quantisation settings."""

import pytest

from llmft.core.errors import LlmftError
from tests.conftest import train_run

from ..conftest import tiny_config


def _first_window(config, result):
    """(trained tokens, examples) of the rows the first step saw, rebuilt as the trainer built them."""
    from transformers import AutoTokenizer

    from llmft.core.model_setup import build_rows
    from llmft.recipes.base import get_recipe

    tokenizer = AutoTokenizer.from_pretrained(result.output_dir / "tokenizer")
    rows = build_rows(config, get_recipe(config.recipe), tokenizer)
    window = [rows[i] for i in result.trained_on]
    tokens = sum(sum(1 for label in row.labels[1:] if label != -100) for row in window)
    return tokens, sum(row.examples for row in window)


def test_sequence_reduction_divides_by_the_examples_each_packed_row_holds(tmp_path, caesar_data):
    """Same first forward pass: token loss x trained tokens == sequence loss x examples (packed rows count
    every example they hold)."""
    train_file, _ = caesar_data
    runs = {}
    for reduction in ("token", "sequence"):
        config = tiny_config(tmp_path / reduction, train_file, data={"pack_length": 64},
                             train={"max_steps": 1, "batch_size": 2, "grad_accum": 2,
                                    "loss_reduction": reduction})
        runs[reduction] = (config, train_run(config, progress=False))
    config, result = runs["sequence"]
    tokens, examples = _first_window(config, result)
    assert examples > 2 * 2  # the rows really are packed: more examples than rows
    assert result.trained_on == runs["token"][1].trained_on
    total = runs["token"][1].losses[0] * tokens
    assert result.losses[0] == pytest.approx(total / examples, rel=1e-5)
    assert result.losses[0] > 3 * runs["token"][1].losses[0]  # a sum over each example's tokens


def test_sequence_reduction_is_invariant_to_gradient_accumulation(tmp_path, caesar_data):
    train_file, _ = caesar_data
    common = {"loss_reduction": "sequence", "max_steps": 3, "learning_rate": 1e-3}
    a = train_run(tiny_config(tmp_path / "a", train_file, train={**common, "batch_size": 4, "grad_accum": 1}),
                  progress=False)
    b = train_run(tiny_config(tmp_path / "b", train_file, train={**common, "batch_size": 1, "grad_accum": 4}),
                  progress=False)
    assert a.losses == pytest.approx(b.losses, rel=1e-5)


def test_example_loss_weights_give_each_example_its_mean():
    import torch

    from llmft.core.data import example_loss_weights

    batch = {"labels": torch.tensor([[-100, 5, 6, -100, -100, 7], [-100, -100, 1, 2, 3, -100]]),
             "position_ids": torch.tensor([[0, 1, 2, 0, 1, 2], [0, 1, 2, 3, 0, 1]])}
    assert example_loss_weights(batch).tolist() == [[0, 0.5, 0.5, 0, 0, 1.0], [0, 0, 0.5, 0.5, 1.0, 0]]
    unpacked = {"labels": torch.tensor([[-100, 4, 4, 4, 4]])}  # no position ids: one example per row
    assert example_loss_weights(unpacked).tolist() == [[0, 0.25, 0.25, 0.25, 0.25]]


def test_example_reduction_averages_each_examples_mean_loss(tmp_path, caesar_data):
    """A step at a negligible learning rate leaves the weights as they were, so the first loss must equal the
    mean over the window's examples of each one's mean token loss, scored one example at a time."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmft.core.data import TokenizedExample
    from llmft.core.model_setup import build_rows
    from llmft.core.scoring import example_losses
    from llmft.recipes.base import get_recipe

    train_file, _ = caesar_data
    config = tiny_config(tmp_path, train_file, data={"pack_length": 64},
                         train={"max_steps": 1, "batch_size": 2, "grad_accum": 2, "learning_rate": 1e-30,
                                "loss_reduction": "example"})
    result = train_run(config, progress=False)
    tokenizer = AutoTokenizer.from_pretrained(result.output_dir / "tokenizer")
    rows = build_rows(config, get_recipe(config.recipe), tokenizer)
    examples = []
    for row in (rows[i] for i in result.trained_on):
        starts = [i for i, p in enumerate(row.position_ids) if p == 0] + [len(row.input_ids)]
        examples += [TokenizedExample(row.input_ids[a:b], row.labels[a:b]) for a, b in zip(starts, starts[1:])]
    assert len(examples) > 4  # packed: more examples than the window's 4 rows
    model = AutoModelForCausalLM.from_pretrained(result.output_dir / "final")
    means = example_losses(model, examples, tokenizer.pad_token_id, reduction="mean")
    assert result.losses[0] == pytest.approx(sum(means) / len(means), rel=1e-4)


def test_adam_betas_reach_the_optimizer(tmp_path):
    import torch

    from llmft.core.config import config_from_dict
    from llmft.core.trainer import _optimizer

    config = config_from_dict({"train": {"adam_beta1": 0.9, "adam_beta2": 0.95}})
    optimizer, _ = _optimizer(torch.nn.Linear(4, 4), config, 10)
    assert optimizer.defaults["betas"] == (0.9, 0.95)
    assert config_from_dict({}).train.adam_beta2 == 0.999
    with pytest.raises(LlmftError, match=r"key 'train.adam_beta2' must be in \[0, 1\), got 1.0"):
        config_from_dict({"train": {"adam_beta2": 1.0}})


def test_without_bos_training_eval_and_reload_agree(tmp_path, caesar_data):
    """model.add_bos = false: no BOS in the training rows, in the saved tokenizer or in generation prompts."""
    from llmft.core.data import encode_prompt
    from llmft.core.inference import load_for_inference
    from llmft.core.model_setup import build_tokenizer, training_examples
    from llmft.recipes.base import get_recipe

    train_file, _ = caesar_data
    config = tiny_config(tmp_path, train_file, model={"add_bos": False}, train={"max_steps": 1})
    recipe = get_recipe("sft")
    tokenizer = build_tokenizer(config, recipe)
    bos = tokenizer.bos_token_id
    examples = training_examples(config, recipe, tokenizer, limit=20)
    assert all(bos not in e.input_ids for e in examples)
    with_bos = tiny_config(tmp_path / "b", train_file)
    assert training_examples(with_bos, recipe, build_tokenizer(with_bos, recipe), limit=1)[0].input_ids[0] == bos
    train_run(config, progress=False)
    _, reloaded, _ = load_for_inference(tmp_path / "run" / "final")
    assert encode_prompt(reloaded, "shift abc =") == encode_prompt(tokenizer, "shift abc =")
    assert bos not in encode_prompt(reloaded, "shift abc =")


def test_qlora_quantisation_follows_the_adapter_keys():
    import torch

    from llmft.core.config import config_from_dict
    from llmft.core.models import qlora_quantization

    default = qlora_quantization(config_from_dict({}))
    assert default.bnb_4bit_use_double_quant is True
    squad = qlora_quantization(config_from_dict({"adapter": {"double_quant": False, "compute_dtype": "float16"}}))
    assert squad.bnb_4bit_use_double_quant is False
    assert squad.bnb_4bit_compute_dtype == torch.float16
    assert squad.bnb_4bit_quant_type == "nf4"


def test_lora_on_lm_head_with_new_tokens_trains_and_reloads(tmp_path, caesar_data):
    """llama-squad's all-linear LoRA includes lm_head; new tokens then train their input rows only (PEFT
    cannot put trainable rows on a LoRA layer) and the LoRA on lm_head adapts the output."""
    from llmft.core.inference import load_for_inference

    train_file, _ = caesar_data
    config = tiny_config(tmp_path, train_file, adapter={
        "method": "qlora", "r": 4, "alpha": 8, "new_tokens": ["<blah>"], "double_quant": False,
        "compute_dtype": "float16", "target_modules": ["q_proj", "v_proj", "lm_head"]}, train={"max_steps": 2})
    train_run(config, progress=False)
    _, _, model = load_for_inference(tmp_path / "run" / "final")
    names = [name for name, _ in model.named_modules()]
    assert any(name.endswith("lm_head.lora_A") for name in names)
    assert any(name.endswith("embed_tokens.token_adapter") for name in names)
    assert not any(name.endswith("lm_head.token_adapter") for name in names)


def test_a_schedule_horizon_shorter_than_the_run_is_an_error(tmp_path, caesar_data):
    train_file, _ = caesar_data
    config = tiny_config(tmp_path, train_file, train={"max_steps": 10, "lr_schedule_steps": 5})
    with pytest.raises(LlmftError, match=r"train.lr_schedule_steps \(5\) is shorter than the run \(10 steps\)"):
        train_run(config, progress=False)
