import pytest
import torch

from llmft.core.data import (
    IGNORE,
    TokenizedExample,
    collate,
    load_examples,
    pack_rows,
    single_rows,
    tokenize_record,
)
from llmft.core.errors import LlmftError
from llmft.core.inspect import render_example, trained_text
from llmft.core.jsonl import write_jsonl
from llmft.core.tokenizers import train_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(["shift abc = bcd", "reverse xyz = zyx 0123456789"], "char")


def test_completion_and_eos_are_trained_prompt_is_not(tokenizer):
    example = tokenize_record({"prompt": "shift abc =", "completion": " bcd"}, tokenizer, 64)
    assert example.input_ids[0] == tokenizer.bos_token_id
    assert example.input_ids[-1] == tokenizer.eos_token_id
    assert trained_text(tokenizer, example) == " bcd</s>"
    assert example.trained == 5  # four characters + EOS
    assert all(label == IGNORE for label in example.labels[:12])


def test_text_records_train_everything_but_the_first_token(tokenizer):
    example = tokenize_record({"text": "abc"}, tokenizer, 64)
    assert example.labels[0] == IGNORE and example.trained == 4  # a, b, c, EOS


def test_show_brackets_exactly_the_trained_tokens(tokenizer):
    example = tokenize_record({"prompt": "shift ab =", "completion": " bc"}, tokenizer, 64)
    assert render_example(tokenizer, example, color=False) == "<s>shift ab =[[ bc</s>]]"


def test_truncation_keeps_the_completion(tokenizer):
    example = tokenize_record({"prompt": "shift " + "a" * 50 + " =", "completion": " bcd"}, tokenizer, 20)
    assert len(example) == 20 and trained_text(tokenizer, example) == " bcd</s>"


def test_batched_tokenisation_equals_one_record_at_a_time(tokenizer):
    from llmft.core.data import tokenize_records

    records = [{"prompt": "shift abc =", "completion": " bcd"}, {"text": "xyz 12"},
               {"prompt": "<s>reverse xyz =", "completion": " zyx"}, {"prompt": "a" * 30, "completion": " b"}]
    batched = tokenize_records(records, tokenizer, 20)
    assert batched == [tokenize_record(r, tokenizer, 20) for r in records]


def test_pack_rows_loses_nothing_and_restarts_positions():
    examples = [TokenizedExample(list(range(1, n + 1)), [IGNORE] + list(range(2, n + 1))) for n in
                (5, 9, 3, 7, 2, 8, 4)]
    rows = pack_rows(examples, row_length=12)
    assert sum(row.examples for row in rows) == len(examples)
    assert sorted(t for r in rows for t in r.input_ids) == sorted(t for e in examples for t in e.input_ids)
    assert len(rows) == 4  # 38 tokens in rows of 12: best fit needs no more than ceil(38 / 12) bins here
    assert all(len(row.input_ids) <= 12 for row in rows)
    assert sum(len(r.input_ids) for r in rows) == sum(len(e) for e in examples)
    for row in rows:
        starts = [i for i, p in enumerate(row.position_ids) if p == 0]
        assert all(row.labels[i] == IGNORE for i in starts)  # no target crosses an example boundary
    batch = collate(rows, pad_id=0, packed=True)
    assert "attention_mask" not in batch and batch["position_ids"].shape == batch["input_ids"].shape


def test_malformed_jsonl_names_file_and_line(tmp_path, tokenizer):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a", \n')
    with pytest.raises(LlmftError, match=r"bad.jsonl: line 2 is not JSON"):
        load_examples(path, tokenizer, 32)
    write_jsonl(path, [{"prompt": "a"}])
    with pytest.raises(LlmftError, match=r"line 1 needs 'prompt' and 'completion', or 'text'"):
        load_examples(path, tokenizer, 32)


def test_packed_logits_and_loss_equal_unpacked(tokenizer):
    """Packed rows (position_ids, no mask, use_cache=False) give the logits of each example run alone."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from llmft.core.scoring import token_loss_sum

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=2)).eval()
    records = [{"prompt": "shift abc =", "completion": " bcd"}, {"prompt": "reverse xyz =", "completion": " zyx"},
               {"text": "0123456789 abc"}]
    examples = [tokenize_record(r, tokenizer, 64) for r in records]
    rows = pack_rows(examples, row_length=128)
    assert len(rows) == 1
    packed = collate(rows, tokenizer.pad_token_id, packed=True)
    with torch.no_grad():
        packed_logits = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"],
                              use_cache=False).logits[0]
        packed_loss = token_loss_sum(packed_logits[None], packed["labels"])
        offset, total, count = 0, 0.0, 0
        order = sorted(range(3), key=lambda i: (-len(examples[i]), i))  # packing order (best-fit decreasing)
        for i in order:
            ids = torch.tensor([examples[i].input_ids])
            alone = model(input_ids=ids, use_cache=False).logits[0]
            n = ids.shape[1]
            torch.testing.assert_close(packed_logits[offset:offset + n], alone, atol=1e-5, rtol=0)
            total += float(token_loss_sum(alone[None], torch.tensor([examples[i].labels])))
            count += examples[i].trained
            offset += n
    assert float(packed_loss) == pytest.approx(total, rel=1e-5)
    assert int((packed["labels"][:, 1:] != IGNORE).sum()) == count


def test_unpacked_right_padded_batch_needs_no_mask(tokenizer):
    """Right padding under causal attention: each example's logits equal its logits run alone."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=2)).eval()
    examples = [tokenize_record(r, tokenizer, 64) for r in
                ({"prompt": "shift abc =", "completion": " bcd"}, {"text": "0123456789 abc"})]
    batch = collate(single_rows(examples), tokenizer.pad_token_id, packed=False)
    assert set(batch) == {"input_ids", "labels"} and len(examples[0]) != len(examples[1])
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], use_cache=False).logits
        for i, example in enumerate(examples):
            alone = model(input_ids=torch.tensor([example.input_ids]), use_cache=False).logits[0]
            torch.testing.assert_close(logits[i, :len(example)], alone, atol=1e-5, rtol=0)


def test_rows_by_width_lose_nothing_and_batches_keep_one_width():
    import random as stdlib_random

    from llmft.core.data import batch_order, pack_rows_by_width, width_class

    rng = stdlib_random.Random(0)
    lengths = [min(max(int(rng.lognormvariate(4.25, 0.6)), 5), 400) for _ in range(400)]  # median ~70
    examples = [TokenizedExample(list(range(n)), [IGNORE] + list(range(1, n))) for n in lengths]
    widths = [64, 128, 256, 512]
    rows = pack_rows_by_width(examples, widths)
    assert sum(r.examples for r in rows) == 400
    assert sorted(n for r in rows for n in _segment_lengths(r)) == sorted(lengths)
    for row in rows:  # every example sits in the narrowest width that holds it
        assert all(width_class(n, widths) == width_class(len(row.input_ids), widths) or
                   len(row.input_ids) <= width_class(n, widths) for n in _segment_lengths(row))
    narrow = sum(len(r.input_ids) <= 128 for r in rows)
    assert narrow > len(rows) / 2  # most rows are narrow for these lengths
    for epoch in (0, 1):
        order = batch_order(rows, 2, seed=3, epoch=epoch, strategy="random", widths=widths)
        assert sorted(i for batch in order for i in batch) == list(range(len(rows)))
        for batch in order:
            classes = {width_class(len(rows[i].input_ids), widths) for i in batch}
            assert len(classes) == 1 and len(batch) <= 2 * 512 // classes.pop()
        assert len(order) == len(batch_order(rows, 2, seed=3, epoch=0, strategy="random", widths=widths))


def _segment_lengths(row) -> list[int]:
    """Lengths of the examples packed in a row (positions restart at 0 for each)."""
    starts = [i for i, p in enumerate(row.position_ids) if p == 0] + [len(row.position_ids)]
    return [b - a for a, b in zip(starts, starts[1:])]


def test_training_with_row_widths_learns(tmp_path, caesar_data):
    from tests.conftest import tiny_config, train_run

    train_file, _ = caesar_data
    common = {"train": {"max_steps": 40, "batch_size": 2, "learning_rate": 5e-3}}
    plain = train_run(tiny_config(tmp_path / "a", train_file, data={"pack_length": 128}, **common), progress=False)
    narrow = train_run(tiny_config(tmp_path / "b", train_file, data={"row_widths": [32, 64], "pack_length": 128},
                                   **common), progress=False)
    assert narrow.losses[-1] < 0.7 * narrow.losses[0]
    tail = sum(narrow.losses[-5:]) / 5
    assert tail < 1.1 * sum(plain.losses[-5:]) / 5  # the same tokens per step learn as fast
