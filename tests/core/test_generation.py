import pytest
import torch

from llmft.core.generation import Generator, HFGenerator, cut_at_stop
from llmft.core.tokenizers import train_tokenizer


@pytest.fixture(scope="module")
def generator():
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = train_tokenizer(["abcdefghij 0123456789 =+\n"], "char")
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    return HFGenerator(LlamaForCausalLM(config).eval(), tokenizer, batch_size=4)


PROMPTS = ["a", "bcd =", "0123456789", "ab", "ja+ij =", "99"]


def test_batched_greedy_equals_one_at_a_time(generator):
    assert isinstance(generator, Generator)
    batched = generator.generate(PROMPTS, max_new_tokens=10)
    single = [generator.generate([p], max_new_tokens=10)[0] for p in PROMPTS]
    assert batched == single
    assert all(len(generator.tokenizer(o, add_special_tokens=False)["input_ids"]) <= 10 for o in batched)


def test_batched_greedy_equals_a_plain_generate_loop(generator):
    """The CPU static KV cache changes nothing: same text as one default (dynamic-cache) generate per prompt."""
    from llmft.core.data import encode_prompt

    tokenizer, eos = generator.tokenizer, generator.tokenizer.eos_token_id
    plain = []
    for prompt in PROMPTS:
        ids = torch.tensor([encode_prompt(tokenizer, prompt)])
        new = generator.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=10,
                                       do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                       eos_token_id=eos)[0, ids.shape[1]:].tolist()
        plain.append(tokenizer.decode(new[:new.index(eos)] if eos in new else new))
    assert generator.generate(PROMPTS, max_new_tokens=10) == plain


def test_cpu_decoding_uses_a_static_cache_except_for_beams(generator, monkeypatch):
    seen = []
    real = generator.model.generate

    def spy(**kwargs):
        seen.append(kwargs.get("cache_implementation"))
        return real(**kwargs)

    monkeypatch.setattr(generator.model, "generate", spy)
    generator.generate(PROMPTS[:2], max_new_tokens=3)
    generator.generate(PROMPTS[:2], max_new_tokens=3, num_beams=2)
    assert seen == ["static", None]


def test_sampling_is_seeded_and_beams_run(generator):
    a = generator.generate(PROMPTS, max_new_tokens=8, temperature=1.0, seed=3)
    b = generator.generate(PROMPTS, max_new_tokens=8, temperature=1.0, seed=3)
    assert a == b
    assert len(generator.generate(PROMPTS[:2], max_new_tokens=5, num_beams=3)) == 2


def test_stop_strings_cut_the_text(generator):
    free = generator.generate(PROMPTS, max_new_tokens=12)
    stop = next(ch for ch in "abcdefghij0123456789=+" if any(ch in o[1:] for o in free))
    cut = generator.generate(PROMPTS, max_new_tokens=12, stop=[stop])
    for full, short in zip(free, cut):
        assert stop not in short and full.startswith(short)
    assert cut_at_stop("x}yz}", ["}"]) == ("x", True)
    assert cut_at_stop("xyz", ["}"]) == ("xyz", False)


def test_vllm_backend_without_vllm_is_one_line():
    from llmft.core.errors import LlmftError
    from llmft.core.vllm_backend import lora_rank_for, require_vllm

    with pytest.raises(LlmftError, match="pip install 'llmft\\[vllm\\]'"):
        require_vllm()
    assert lora_rank_for(4) == 8 and lora_rank_for(64) == 64 and lora_rank_for(65) == 128


def test_vllm_refuses_new_token_adapters(tmp_path):
    import json

    from llmft.core.errors import LlmftError
    from llmft.core.vllm_backend import check_adapter_servable

    (tmp_path / "adapter_config.json").write_text(json.dumps({"trainable_token_indices": {"embed_tokens": [5]}}))
    with pytest.raises(LlmftError, match="llmft export"):
        check_adapter_servable(tmp_path)


def test_digit_aligned_decoding_equals_recomputing_every_step(generator):
    """The KV-cached loop for digit-aligned positions gives what a full forward per new token gives, batched
    with left padding, and with stop strings; the positions change the text (the loop is not plain decoding)."""
    from transformers import LlamaForCausalLM

    from llmft.core.data import encode_prompt
    from llmft.core.positions import DigitAlignment, PositionRules, digit_token_ids

    tokenizer, eos = generator.tokenizer, generator.tokenizer.eos_token_id
    torch.manual_seed(1)
    # Larger initial weights than the fixture's: attention sharp enough that positions change the text.
    model = LlamaForCausalLM(generator.model.config.__class__(**{**generator.model.config.to_dict(),
                                                                 "initializer_range": 0.5})).eval()
    rule = DigitAlignment(digit_token_ids(tokenizer), stride=16)
    aligned = HFGenerator(model, tokenizer, batch_size=4, positions=PositionRules(rule))
    expected = []
    for prompt in PROMPTS:
        ids = encode_prompt(tokenizer, prompt)
        new: list[int] = []
        for _ in range(10):
            sequence = ids + new
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([sequence]),
                               position_ids=torch.tensor([rule.positions(sequence)])).logits
            token = int(logits[0, -1].argmax())
            if token == eos:
                break
            new.append(token)
        expected.append(tokenizer.decode(new))
    assert aligned.generate(PROMPTS, max_new_tokens=10) == expected
    assert expected != HFGenerator(model, tokenizer, batch_size=4).generate(PROMPTS, max_new_tokens=10)
    stop = [text[2:4] for text in expected if len(text) >= 4][:1]
    cut = aligned.generate(PROMPTS, max_new_tokens=10, stop=stop)
    assert cut == [cut_at_stop(text, stop)[0] for text in expected]
    with pytest.raises(Exception, match="beam search"):
        aligned.generate(PROMPTS, max_new_tokens=4, num_beams=2)
