"""Encoder-decoder (T5 / Flan-T5) models in the shared trainer and generator: which models are, how their
prompt/completion records become encoder inputs and decoder targets, and how those batch.

Decoder-only rows put prompt and completion in one sequence and shift labels by one; here the prompt feeds the
encoder, the completion (+ EOS) is the decoder's target at every position (no shift), and the decoder input is
the target moved right behind the model's decoder start token, as transformers' T5 builds it from `labels`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmft.core.data import IGNORE, TokenizedExample, encode_prompt
from llmft.core.errors import LlmftError
from llmft.core.jsonl import iter_numbered
from llmft.core.packing import Row


def is_seq2seq(model: Any) -> bool:
    """Whether a (possibly PEFT-wrapped) model is an encoder-decoder."""
    return bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))


def is_seq2seq_folder(path: str) -> bool:
    """Whether the hub id or folder holds an encoder-decoder (reads only its config)."""
    from transformers import AutoConfig

    try:
        return bool(getattr(AutoConfig.from_pretrained(path), "is_encoder_decoder", False))
    except (OSError, ValueError):
        return False


def seq2seq_examples(path: str | Path, tokenizer: Any, max_length: int) -> list[TokenizedExample]:
    """Prompt/completion records: input_ids = the encoder's prompt, labels = completion + EOS (all trained);
    each side cut to max_length (the reference truncates input and label to 512 each)."""
    examples = []
    for line, record in iter_numbered(path, what="data.train"):
        if "prompt" not in record or "completion" not in record:
            raise LlmftError(f"data.train: {path}: line {line} needs 'prompt' and 'completion' "
                             "(an encoder-decoder model trains on prompt/completion records only)")
        prompt = encode_prompt(tokenizer, str(record["prompt"]))[:max_length]
        target = tokenizer(str(record["completion"]), add_special_tokens=False)["input_ids"]
        target = (target + [tokenizer.eos_token_id])[:max_length]
        examples.append(TokenizedExample(prompt, target))
    if not examples:
        raise LlmftError(f"data.train: {path} has no records")
    return examples


def seq2seq_rows(examples: Sequence[TokenizedExample]) -> list[Row]:
    """One example per row, labels kept whole (no packing: the encoder sees one prompt)."""
    return [Row(e.input_ids, e.labels, [], examples=1) for e in examples]


def collate_seq2seq(rows: Sequence[Row], pad_id: int, decoder_start_id: int) -> dict[str, Any]:
    """Right-padded encoder inputs with their mask, targets (IGNORE at padding) and decoder inputs."""
    import torch

    width = max(len(row.input_ids) for row in rows)
    target_width = max(len(row.labels) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), target_width), IGNORE, dtype=torch.long)
    decoder_ids = torch.full((len(rows), target_width), pad_id, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, :len(row.input_ids)] = torch.tensor(row.input_ids)
        mask[i, :len(row.input_ids)] = 1
        labels[i, :len(row.labels)] = torch.tensor(row.labels)
        decoder_ids[i, :len(row.labels)] = torch.tensor([decoder_start_id] + row.labels[:-1])
    return {"input_ids": ids, "attention_mask": mask, "decoder_input_ids": decoder_ids, "labels": labels}


def build_tiny_t5(tiny: Any, tokenizer: Any, seed: int) -> Any:
    """A T5 (Flan-T5's gated-GELU layout) from [model.tiny], sized to the tokenizer, seeded."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    t5_config = T5Config(
        vocab_size=len(tokenizer),
        d_model=tiny.hidden_size,
        d_kv=tiny.hidden_size // tiny.num_heads,
        d_ff=tiny.intermediate_size or 2 * tiny.hidden_size,
        num_layers=tiny.num_layers,
        num_decoder_layers=tiny.num_layers,
        num_heads=tiny.num_heads,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    return T5ForConditionalGeneration(t5_config)
