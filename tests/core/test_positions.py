"""Position levers for length generalisation: no positional encoding (NoPE), randomised positions and
digit-aligned positions."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from llmft.core.data import collate
from llmft.core.errors import LlmftError
from llmft.core.models import rope_parameters
from llmft.core.packing import Row
from llmft.core.positions import DigitAlignment, align_digit_positions, digit_token_ids, randomize_positions
from tests.conftest import tiny_config, train_run


def _llama(positions: str = "rope", attn: str = "sdpa"):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=20, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, attn_implementation=attn,
                         rope_parameters=rope_parameters(SimpleNamespace(positions=positions, rope_theta=10000.0,
                                                                           rope_factor=1.0)))
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval()


def test_no_positions_ignores_position_ids_and_survives_a_reload(tmp_path):
    from transformers import LlamaForCausalLM

    ids = torch.tensor([[1, 2, 3, 4, 5]])
    far = torch.tensor([[100, 101, 102, 150, 400]])
    nope, rope = _llama("none"), _llama("rope")
    with torch.no_grad():
        assert torch.equal(nope(ids).logits, nope(ids, position_ids=far).logits)
        assert not torch.allclose(rope(ids).logits, rope(ids, position_ids=far).logits)
        nope.save_pretrained(tmp_path)
        again = LlamaForCausalLM.from_pretrained(tmp_path)
        assert torch.equal(again(ids, position_ids=far).logits, nope(ids).logits)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_random_positions_keep_packed_examples_apart(attn):
    """A packed row with random positions gives each example the logits it has alone at those positions."""
    model = _llama(attn=attn)
    a, b = [1, 2, 3, 4, 5], [6, 7, 8]
    batch = collate([Row(a + b, a + b, [0, 1, 2, 3, 4, 0, 1, 2], 2), Row(b, b, [0, 1, 2])], 0, packed=True)
    drawn = randomize_positions(batch, 64, torch.Generator().manual_seed(0), additive=attn == "eager")
    positions = drawn["position_ids"]
    for start, end in [(0, 5), (5, 8)]:
        segment = positions[0, start:end]
        assert torch.all(segment[1:] > segment[:-1]) and 0 <= segment.min() and segment.max() < 64
    assert not torch.equal(positions[0, :5], torch.arange(5))
    with torch.no_grad():
        packed = model(input_ids=drawn["input_ids"], position_ids=positions,
                       attention_mask=drawn["attention_mask"]).logits
        alone_a = model(input_ids=torch.tensor([a]), position_ids=positions[:1, :5]).logits
        alone_b = model(input_ids=torch.tensor([b]), position_ids=positions[:1, 5:8]).logits
    assert torch.allclose(packed[0, :5], alone_a[0], atol=1e-5)
    assert torch.allclose(packed[0, 5:8], alone_b[0], atol=1e-5)


def test_random_positions_need_a_span_longer_than_the_rows():
    batch = collate([Row([1, 2, 3, 4], [1, 2, 3, 4], [0, 1, 2, 3])], 0, packed=True)
    with pytest.raises(LlmftError, match="train.random_positions"):
        randomize_positions(batch, 3, torch.Generator(), additive=False)


def _trained_whole_and_resumed(tmp_path, train_file, eval_file, sections: dict, stop_after_step: int):
    """Trains `sections` in one go (under tmp_path/a) and stopped then resumed (tmp_path/b); asserts both give the
    same losses and returns the whole run."""
    whole = train_run(tiny_config(tmp_path / "a", train_file, eval_file, **sections), progress=False)
    split = tiny_config(tmp_path / "b", train_file, eval_file, **sections)
    first = train_run(split, stop_after_step=stop_after_step, progress=False)
    resumed = train_run(split, resume=True, progress=False)
    assert first.losses + resumed.losses == pytest.approx(whole.losses, rel=1e-4)
    return whole


def test_training_with_random_positions_learns_and_resumes_identically(tmp_path, caesar_data):
    train_file, _ = caesar_data
    common = {"train": {"max_steps": 30, "save_steps": 15, "random_positions": 256, "learning_rate": 1e-2}}
    whole = _trained_whole_and_resumed(tmp_path, train_file, None, common, stop_after_step=15)
    assert sum(whole.losses[-5:]) < 0.8 * sum(whole.losses[:5])  # 2.96 -> 2.13 nats measured


def test_auto_attention_is_eager_for_narrow_rows_and_blocks_for_wide(tmp_path, caesar_data):
    from llmft.core import attention
    from llmft.core.models import EAGER_MAX_WIDTH, attention_for_width

    model = _llama()
    attention_for_width(model, EAGER_MAX_WIDTH)
    assert model.config._attn_implementation == "eager"
    attention_for_width(model, EAGER_MAX_WIDTH + 1)
    assert model.config._attn_implementation == attention.NAME
    train_file, _ = caesar_data
    runs = {attn: train_run(tiny_config(tmp_path / attn, train_file, model={"attn_implementation": attn}),
                            progress=False) for attn in ("auto", "eager")}
    assert runs["auto"].losses == runs["eager"].losses  # rows of 128: the same eager attention, step for step


RULE = DigitAlignment(frozenset(range(10, 20)), stride=8)  # ids 10..19 play the digits in the rows below


def test_digit_positions_put_every_number_on_one_scale():
    """BOS 1 2 _ + _ 3 4 5 \\n S: text tokens 8 apart, the k-th digit of a number k after the text before it."""
    ids = [1, 11, 12, 3, 4, 3, 13, 14, 15, 5, 6]
    assert RULE.positions(ids) == [0, 1, 2, 8, 16, 24, 25, 26, 27, 32, 40]
    # The text after a number sits at the same positions whatever the number's length.
    longer = [1, 11, 12, 13, 14, 3, 4, 3, 15, 5, 6]
    assert RULE.positions(longer) == [0, 1, 2, 3, 4, 8, 16, 24, 25, 32, 40]
    # digit_ends: the text token after a number takes the slot after its last digit, off the grid.
    ends = DigitAlignment(RULE.digits, stride=8, attach_ends=True)
    assert ends.positions(ids) == [0, 1, 2, 3, 16, 24, 25, 26, 27, 28, 40]
    assert ends.positions(longer) == [0, 1, 2, 3, 4, 5, 16, 24, 25, 26, 40]


def test_joiners_make_a_list_one_number():
    """With joiners, "[1, 0, 1]" is one number: its items keep their offsets whatever the list's length."""
    joined = DigitAlignment(RULE.digits, stride=8, joiners=frozenset({7, 8}))  # 7 ",", 8 " ", 2 "[", 9 "]"
    short, longer = [2, 11, 7, 8, 10, 9, 5], [2, 11, 7, 8, 10, 7, 8, 11, 9, 5]
    assert joined.positions(short) == [0, 1, 2, 3, 4, 8, 16]
    assert joined.positions(longer) == [0, 1, 2, 3, 4, 5, 6, 7, 8, 16]
    assert joined.positions([7, 8, 11]) == [0, 8, 9]  # a joiner before any digit is text
    assert RULE.positions(short) == [0, 1, 8, 16, 17, 24, 32]  # without joiners every item is its own number


def test_slots_give_every_number_the_stride_and_text_one_step():
    """layout "slots": text tokens one apart, each number `stride` positions, so offsets hold at short range."""
    slots = DigitAlignment(RULE.digits, stride=8, layout="slots")
    ids = [1, 11, 12, 3, 4, 3, 13, 14, 15, 5, 6]
    assert slots.positions(ids) == [0, 1, 2, 9, 10, 11, 12, 13, 14, 20, 21]
    longer = [1, 11, 12, 13, 14, 3, 4, 3, 15, 5, 6]
    assert slots.positions(longer) == [0, 1, 2, 3, 4, 9, 10, 11, 12, 20, 21]
    # Same as the grid: a number's k-th digit sits a fixed distance from the next number's k-th digit.
    assert slots.positions(ids)[6] - slots.positions(ids)[1] == slots.positions(longer)[8] - slots.positions(longer)[1]


def test_the_config_keys_reach_the_rule():
    """model.tiny.digit_joiners and digit_layout give the run's rule its joiner ids and layout."""
    from llmft.core.config import config_from_dict
    from llmft.core.positions import digit_alignment
    from llmft.core.tokenizers import train_tokenizer

    tokenizer = train_tokenizer(["[1, 0] ab 0123456789\n"], "char")
    config = config_from_dict({"recipe": "sft", "model": {"name": "tiny", "tiny": {
        "positions": "digits", "digit_stride": 16, "digit_joiners": ", ", "digit_layout": "slots"}}})
    rule = digit_alignment(config, tokenizer)
    assert {tokenizer.decode([i]) for i in rule.joiners} == {",", " "}
    assert (rule.stride, rule.layout) == (16, "slots")
    ids = tokenizer("[1, 0]x", add_special_tokens=False)["input_ids"]
    assert rule.positions(ids) == [0, 1, 2, 3, 4, 17, 18]  # "[" then one number of 4 tokens, its slot of 16


def test_signs_start_a_number_so_the_text_after_a_list_keeps_its_place():
    """model.tiny.digit_signs = "-": "[-2, 4]" and "[2, 4]" are one number each, and "]" sits on the same slot."""
    from llmft.core.config import config_from_dict
    from llmft.core.positions import digit_alignment
    from llmft.core.tokenizers import train_tokenizer

    tokenizer = train_tokenizer(["[-1, 0] ab 0123456789\n"], "char")
    tiny = {"positions": "digits", "digit_stride": 16, "digit_joiners": ", "}
    plain = digit_alignment(config_from_dict({"recipe": "sft", "model": {"name": "tiny", "tiny": tiny}}), tokenizer)
    signed = digit_alignment(config_from_dict({"recipe": "sft", "model": {"name": "tiny", "tiny": {
        **tiny, "digit_signs": "-"}}}), tokenizer)
    negative, positive = (tokenizer(t, add_special_tokens=False)["input_ids"] for t in ("[-2, 4]a", "[2, 4]a"))
    assert signed.positions(negative) == [0, 1, 2, 3, 4, 5, 16, 32]
    assert signed.positions(positive) == [0, 1, 2, 3, 4, 16, 32]
    assert plain.positions(negative) == [0, 16, 17, 18, 19, 20, 32, 48]  # the sign is text: the grid shifts
    with pytest.raises(LlmftError, match="digit_signs"):
        config_from_dict({"recipe": "sft", "model": {"name": "tiny", "tiny": {**tiny, "digit_signs": "-1"}}})


def test_an_offset_moves_every_number_and_leaves_the_text_on_its_grid():
    """digit_offset's rule: digits (and an attached end) move by the offset, text tokens stay where they were."""
    ids = [1, 11, 12, 3, 13, 2]  # text, 2 digits, text, 1 digit, text
    assert RULE.positions(ids, 0) == [0, 1, 2, 8, 9, 16]
    assert RULE.positions(ids, 3) == [0, 4, 5, 8, 12, 16]
    ends = DigitAlignment(RULE.digits, RULE.stride, attach_ends=True)
    assert ends.positions(ids, 3) == [0, 4, 5, 6, 12, 13]


def test_training_offsets_are_one_draw_per_packed_example_and_repeat_with_the_seed():
    """align_digit_positions(max_offset=k): each example of a packed row gets its own offset in 0..k, the same
    generator seed gives the same offsets, and the key is checked against the stride."""
    from llmft.core.config import config_from_dict

    a, b = [1, 11, 12, 3, 13], [2, 14, 15, 16]
    batch = collate([Row(a + b, a + b, [0, 1, 2, 3, 4, 0, 1, 2, 3], 2)], 0, packed=True)
    seen = set()
    for seed in range(30):
        aligned = align_digit_positions(batch, RULE, additive=False, max_offset=4,
                                        generator=torch.Generator().manual_seed(seed))
        again = align_digit_positions(batch, RULE, additive=False, max_offset=4,
                                      generator=torch.Generator().manual_seed(seed))
        positions = aligned["position_ids"][0].tolist()
        assert positions == again["position_ids"][0].tolist()
        offsets = tuple(next(o for o in range(5) if RULE.positions(ids, o) == part)
                        for ids, part in ((a, positions[:5]), (b, positions[5:])))
        seen.add(offsets)
    assert {o for pair in seen for o in pair} == set(range(5)) and len(seen) > 10
    assert align_digit_positions(batch, RULE, additive=False)["position_ids"][0].tolist() == \
        RULE.positions(a) + RULE.positions(b)
    with pytest.raises(LlmftError, match="digit_offset"):
        config_from_dict({"recipe": "sft", "model": {"name": "tiny", "tiny": {
            "positions": "digits", "digit_stride": 8, "digit_offset": 8}}})


def test_training_with_a_digit_offset_learns_and_resumes_identically(tmp_path):
    """The offsets are drawn per step from the seed, so a resumed run sees the same positions; the loss falls."""
    import random

    from llmft.core.jsonl import write_jsonl

    rng = random.Random(5)
    records = [{"prompt": f"copy {x} =", "completion": f" {x}"}
               for x in (str(rng.randint(10, 10 ** rng.randint(2, 5))) for _ in range(400))]
    train_file = write_jsonl(tmp_path / "train.jsonl", records)
    common = {"model": {"tiny": {"hidden_size": 32, "positions": "digits", "digit_stride": 16, "digit_offset": 6}},
              "train": {"max_steps": 24, "batch_size": 8, "learning_rate": 3e-3, "save_steps": 12},
              "data": {"pack_length": 64}}
    whole = _trained_whole_and_resumed(tmp_path, train_file, train_file, common, stop_after_step=12)
    assert whole.losses[-1] < 0.7 * whole.losses[0]
    unshifted = train_run(tiny_config(tmp_path / "c", train_file, train_file, **{
        **common, "model": {"tiny": {**common["model"]["tiny"], "digit_offset": 0}}}), progress=False)
    assert unshifted.losses != pytest.approx(whole.losses, rel=1e-4)  # the offsets reached the model


def test_digit_token_ids_of_a_char_tokenizer():
    from llmft.core.tokenizers import train_tokenizer

    tokenizer = train_tokenizer(["ab 0123456789 +\n"], "char")
    assert {tokenizer.decode([i]) for i in digit_token_ids(tokenizer)} == set("0123456789")


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_digit_positions_keep_packed_examples_apart(attn):
    """A packed row with digit-aligned positions gives each example the logits it has alone."""
    model = _llama(attn=attn)
    a, b = [1, 11, 12, 3, 13], [2, 14, 15, 16]
    batch = collate([Row(a + b, a + b, [0, 1, 2, 3, 4, 0, 1, 2, 3], 2)], 0, packed=True)
    aligned = align_digit_positions(batch, RULE, additive=attn == "eager")
    positions = aligned["position_ids"]
    assert positions[0].tolist() == RULE.positions(a) + RULE.positions(b)
    with torch.no_grad():
        packed = model(input_ids=aligned["input_ids"], position_ids=positions,
                       attention_mask=aligned["attention_mask"]).logits
        alone_a = model(input_ids=torch.tensor([a]), position_ids=positions[:1, :5]).logits
        alone_b = model(input_ids=torch.tensor([b]), position_ids=positions[:1, 5:]).logits
    assert torch.allclose(packed[0, :5], alone_a[0], atol=1e-5)
    assert torch.allclose(packed[0, 5:], alone_b[0], atol=1e-5)


def test_a_model_trained_with_digit_positions_learns_and_is_evaluated_with_them(tmp_path):
    """Copying numbers learns under digit-aligned positions, resumes identically, and eval decodes with the
    rule: the same weights read with plain positions score lower."""
    import random

    from llmft.core.jsonl import write_jsonl
    from tests.conftest import eval_run

    rng = random.Random(3)
    numbers = [str(rng.randint(10, 10 ** rng.randint(2, 6))) for _ in range(2060)]
    records = [{"prompt": f"copy {x} =", "completion": f" {x}"} for x in numbers]
    train, held_out = records[:2000], records[2000:]
    train_file, eval_file = write_jsonl(tmp_path / "train.jsonl", train), write_jsonl(tmp_path / "eval.jsonl", held_out)
    common = {"model": {"tiny": {"hidden_size": 64, "positions": "digits", "digit_stride": 8}},
              "train": {"max_steps": 160, "batch_size": 16, "learning_rate": 3e-3, "lr_scheduler": "cosine",
                        "warmup_steps": 10, "save_steps": 80},
              "data": {"pack_length": 64}}
    whole = _trained_whole_and_resumed(tmp_path, train_file, eval_file, common, stop_after_step=80)
    assert whole.losses[-1] < 0.5 * whole.losses[0]
    folder = tmp_path / "a" / "run" / "final"
    aligned, _ = eval_run(folder, [])
    plain, _ = eval_run(folder, ["model.tiny.positions=rope"], out=tmp_path / "plain")
    assert aligned["settings"]["positions"] == {"rule": "digits", "digit_stride": 8, "digit_ends": False,
                                                 "digit_joiners": "", "digit_layout": "grid"}
    assert aligned["exact_match"] >= 0.5, aligned
    assert plain["exact_match"] < aligned["exact_match"] - 0.2, (plain["exact_match"], aligned["exact_match"])
    with pytest.raises(LlmftError, match="needs llmft's own decoding"):
        eval_run(folder, ["eval.backend=vllm"], out=tmp_path / "vllm")
    from llmft.core.export import export_merged

    report = export_merged(folder, tmp_path / "exported")
    assert "digit-aligned positions" in report["warning"] and report["max_abs_logit_diff"] == 0
