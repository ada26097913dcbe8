"""Encoder-decoder (T5) support: batches match transformers' own T5 loss, and a tiny T5 trains (full and LoRA)
and generates through the shared trainer and HFGenerator."""

import pytest

from llmft.core.generation import HFGenerator
from llmft.core.jsonl import write_jsonl
from llmft.core.seq2seq import collate_seq2seq, seq2seq_examples, seq2seq_rows
from llmft.core.tokenizers import train_tokenizer
from llmft.recipes.base import get_recipe
from tests.conftest import tiny_config

T5 = {"name": "tiny", "tokenizer": "char", "tiny": {"architecture": "t5", "hidden_size": 32, "num_layers": 2,
                                                      "num_heads": 2}}


def test_batches_give_transformers_t5_loss(tmp_path):
    import torch

    from llmft.core.config import Config
    from llmft.core.models import build_tiny_model
    from llmft.core.scoring import token_loss_sum

    records = [{"prompt": "abc", "completion": "cba"}, {"prompt": "hello there", "completion": "x"}]
    path = write_jsonl(tmp_path / "t.jsonl", records)
    tokenizer = train_tokenizer([r["prompt"] + r["completion"] for r in records])
    config = Config()
    config.model.tiny.architecture = "t5"
    model = build_tiny_model(config, tokenizer)
    examples = seq2seq_examples(path, tokenizer, 512)
    assert examples[1].labels == tokenizer("x", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    batch = collate_seq2seq(seq2seq_rows(examples), tokenizer.pad_token_id, model.config.decoder_start_token_id)
    assert batch["decoder_input_ids"][1, 0] == model.config.decoder_start_token_id
    with torch.no_grad():
        ours = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                     decoder_input_ids=batch["decoder_input_ids"]).logits
        reference = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                          labels=batch["labels"]).loss
    trained = (batch["labels"] != -100).sum()
    assert float(token_loss_sum(ours, batch["labels"], shift=False) / trained) == pytest.approx(float(reference),
                                                                                              rel=1e-5)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_tiny_t5_trains_and_generates(tmp_path, caesar_data, method):
    from llmft.core.inference import load_for_inference
    from llmft.core.trainer import train

    train_file, _ = caesar_data
    lr = 3e-3 if method == "full" else 1e-2
    config = tiny_config(tmp_path, train_file, model=T5, data={"packing": "none"},
                         adapter={"method": method, "target_modules": ["q", "k", "v", "o"]},
                         train={"max_steps": 40, "learning_rate": lr})
    result = train(config, get_recipe("sft"), progress=False)
    assert result.losses[-1] < 0.75 * result.losses[0]
    _, tokenizer, model = load_for_inference(tmp_path / "run" / "final")
    assert model.config.is_encoder_decoder
    texts = HFGenerator(model, tokenizer).generate(["shift abc =", "shift hello ="], max_new_tokens=8)
    assert len(texts) == 2 and all(isinstance(t, str) and "shift" not in t for t in texts)
    if method == "lora":
        from llmft.core.export import export_merged

        report = export_merged(tmp_path / "run" / "final", tmp_path / "merged")
        assert report["max_abs_logit_diff"] < 1e-4
        _, _, merged = load_for_inference(tmp_path / "merged")
        assert merged.config.is_encoder_decoder


def test_packed_rows_are_refused_for_t5(tmp_path, caesar_data):
    from llmft.core.errors import LlmftError
    from llmft.core.trainer import train

    config = tiny_config(tmp_path, caesar_data[0], model=T5, data={"packing": "rows"})
    with pytest.raises(LlmftError, match="encoder-decoder model"):
        train(config, get_recipe("sft"), progress=False)
