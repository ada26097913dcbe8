import pytest

from llmft.core.data import IGNORE, load_examples, tokenize_record
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


@pytest.mark.parametrize("add_bos", [True, False])
def test_backend_batch_encoding_equals_the_tokenizer_call(add_bos):
    """encode_batch (the Rust backend directly) gives the transformers call's ids, BOS setting included."""
    from llmft.core.data import encode_batch
    from llmft.core.models import set_bos

    bpe = train_tokenizer(["the cat sat on the mat 12345", "a dog ran 678 times"] * 20, "bpe", vocab_size=300)
    set_bos(bpe, add_bos)
    texts = ["the cat ran 4096 times", "", "mat dog", "<s>the cat"]
    for special in (True, False):
        assert encode_batch(bpe, texts, special) == bpe(texts, add_special_tokens=special)["input_ids"]
    assert (encode_batch(bpe, ["cat"], True)[0][0] == bpe.bos_token_id) == add_bos


@pytest.mark.parametrize("add_bos", [True, False])
def test_char_level_encoding_equals_the_rust_backend(add_bos):
    """The char-level fast path gives the backend's ids: unknown characters, added and special tokens inside a
    text (longest first), BOS on or off; any other tokenizer keeps the backend."""
    from llmft.core.data import encode_batch
    from llmft.core.models import set_bos
    from llmft.core.tokenizers import char_level_encoder

    char = train_tokenizer(["abc 123\n+", "Call: Return:"], "char", extra_tokens=["<mem>", "<mem><mem>x"])
    set_bos(char, add_bos)
    texts = ["abc", "", "Call: 12 + 3\n", "zé☃ unknown", "<s>abc</s>", "<|user|>\nhi</s>\n<|assistant|>\n",
             "<mem><mem>x<mem>a<mem", "<|user|<|user|>>"]
    backend = char.backend_tokenizer
    assert char_level_encoder(char) is not None
    for special in (True, False):
        expected = [e.ids for e in backend.encode_batch(texts, add_special_tokens=special)]
        assert encode_batch(char, texts, special) == expected
        assert expected == char(texts, add_special_tokens=special)["input_ids"]
    assert (encode_batch(char, ["a"], True)[0][0] == char.bos_token_id) == add_bos
    assert char_level_encoder(train_tokenizer(["the cat sat"] * 20, "bpe", vocab_size=300)) is None


def test_malformed_jsonl_names_file_and_line(tmp_path, tokenizer):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a", "completion": "b"}\n{"prompt": "a", \n')
    with pytest.raises(LlmftError, match=r"bad.jsonl: line 2 is not JSON"):
        load_examples(path, tokenizer, 32)
    write_jsonl(path, [{"prompt": "a"}])
    with pytest.raises(LlmftError, match=r"line 1 needs 'prompt' and 'completion', or 'text'"):
        load_examples(path, tokenizer, 32)


def test_paused_gc_restores_the_collector_as_it_found_it():
    import gc

    from llmft.core.data import paused_gc

    with pytest.raises(ValueError):
        with paused_gc():
            assert not gc.isenabled()
            raise ValueError
    assert gc.isenabled()
    gc.disable()
    try:
        with paused_gc():
            pass
        assert not gc.isenabled()  # a caller that had it off keeps it off
    finally:
        gc.enable()
