"""Packing: rows that lose no example and restart positions, packed logits equal unpacked, width classes,
shared prefixes folded into one example with the same loss."""

import pytest
import torch

from llmft.core.data import IGNORE, TokenizedExample, collate, tokenize_record
from llmft.core.jsonl import write_jsonl
from llmft.core.packing import pack_rows, single_rows
from llmft.core.tokenizers import train_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer(["shift abc = bcd", "reverse xyz = zyx 0123456789"], "char")



def _segment_lengths(row) -> list[int]:
    """Lengths of the examples packed in a row (positions restart at 0 for each)."""
    starts = [i for i, p in enumerate(row.position_ids) if p == 0] + [len(row.position_ids)]
    return [b - a for a, b in zip(starts, starts[1:])]


def _example(ids: list[int], trained_from: int) -> TokenizedExample:
    """ids with every token from `trained_from` on trained (the core rule's prompt/completion shape)."""
    return TokenizedExample(list(ids), [IGNORE] * trained_from + list(ids[trained_from:]))


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

    from llmft.core.packing import batch_order, pack_rows_by_width, width_class

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


def test_merge_prefixes_folds_a_call_into_its_answer_with_the_same_loss(tokenizer):
    """A step record (prompt -> call + EOS) whose tokens begin its next step's record folds into it: one
    sequence, the same targets (the call's EOS included) and the same summed loss as the two apart."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from llmft.core.packing import merge_shared_prefixes
    from llmft.core.scoring import token_loss_sum

    call = tokenize_record({"prompt": "abc =", "completion": " bcd"}, tokenizer, 64)
    answer = tokenize_record({"prompt": "abc = bcd xyz =", "completion": " zyx"}, tokenizer, 64)
    other = tokenize_record({"prompt": "reverse xyz =", "completion": " zyx"}, tokenizer, 64)
    merged = merge_shared_prefixes([call, other, answer])
    assert len(merged) == 2 and merged[0].input_ids == other.input_ids  # order kept, the call gone
    host = merged[1]
    assert host.input_ids == answer.input_ids and host.records == 2
    assert host.trained == call.trained + answer.trained
    eos_at = len(call) - 1
    assert host.labels[eos_at] == tokenizer.eos_token_id != host.input_ids[eos_at]
    assert pack_rows(merged, 128)[0].examples == 3  # a packed row counts the records it stands for

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=2, num_attention_heads=2)).eval()

    def loss(example: TokenizedExample) -> float:
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([example.input_ids]), use_cache=False).logits
        return float(token_loss_sum(logits, torch.tensor([example.labels])))

    assert loss(host) == pytest.approx(loss(call) + loss(answer), rel=1e-5)


def test_merge_prefixes_leaves_duplicates_and_conflicts_and_follows_chains():
    from llmft.core.packing import merge_shared_prefixes

    eos = 9
    twice = [_example([1, 2, 3, eos], 2), _example([1, 2, 3, eos], 2)]  # repeated records stay repeated
    assert len(merge_shared_prefixes(twice)) == 2
    trains_there = [_example([1, 2, eos], 1), _example([1, 2, 5, 6, eos], 1)]  # the host trains position 2
    assert len(merge_shared_prefixes(trains_there)) == 2
    unrelated = [_example([1, 2, eos], 1), _example([1, 3, 5, eos], 3)]
    assert len(merge_shared_prefixes(unrelated)) == 2
    first = _example([1, 2, eos], 2)  # call 1
    second = _example([1, 2, 4, 5, eos], 4)  # call 2, after call 1's return (4)
    final = _example([1, 2, 4, 5, 7, 8, eos], 6)  # the answer
    (host,) = merge_shared_prefixes([first, second, final])
    assert host.input_ids == final.input_ids and host.records == 3
    assert host.labels == [IGNORE, IGNORE, eos, IGNORE, eos, IGNORE, eos]


def test_training_rows_with_merged_prefixes_keep_every_target_on_fewer_tokens(tmp_path, capsys):
    """data.merge_prefixes: the trainer's rows carry the same trained tokens and records, in fewer tokens."""
    from llmft.core.model_setup import build_rows, run_tokenizer
    from llmft.recipes.base import get_recipe
    from tests.conftest import tiny_config

    records = []
    for a in range(10, 40):
        step = f"{a} + 1 = ?\nSolution: "
        records += [{"prompt": step, "completion": f"Call: {a % 10} + 1\n"},
                    {"prompt": f"{step}Call: {a % 10} + 1\nReturn: {a % 10 + 1}\nAnswer: ", "completion": str(a + 1)}]
    train_file = write_jsonl(tmp_path / "train.jsonl", records)
    totals = {}
    for merge in (False, True):
        config = tiny_config(tmp_path, train_file, data={"merge_prefixes": merge},
                             train={"output_dir": str(tmp_path / f"run-{merge}")})
        recipe = get_recipe(config.recipe)
        tokenizer = run_tokenizer(config, recipe, main=True, barrier=lambda: None)
        rows = build_rows(config, recipe, tokenizer)
        totals[merge] = (sum(len(r.input_ids) for r in rows),
                         sum(sum(1 for label in r.labels if label != IGNORE) for r in rows),
                         sum(r.examples for r in rows))
    (tokens, trained, examples), (merged_tokens, merged_trained, merged_examples) = totals[False], totals[True]
    assert (merged_trained, merged_examples) == (trained, examples) and examples == len(records)
    assert merged_tokens < 0.8 * tokens
    assert "30 of 60 examples folded" in capsys.readouterr().err
