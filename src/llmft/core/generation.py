"""The Generator protocol every evaluation, recursion engine and server talks to, and its backends."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

# Below this, sampling is greedy decoding (and dividing the logits by it would overflow to inf).
MIN_TEMPERATURE = 1e-5

if TYPE_CHECKING:
    from llmft.core.positions import PositionRules


@dataclass(frozen=True)
class Sampling:
    """Decoding settings of one request (an eval run or a served call). temperature 0 = greedy."""

    max_new_tokens: int = 64
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: tuple[str, ...] = ()
    num_beams: int = 1

    @classmethod
    def from_eval(cls, eval_config: Any) -> Sampling:
        """The decoding an evaluation uses ([eval] section of a config)."""
        return cls(max_new_tokens=eval_config.max_new_tokens, temperature=eval_config.temperature,
                   seed=eval_config.seed, num_beams=eval_config.num_beams)

    def kwargs(self) -> dict[str, Any]:
        """As keyword arguments of `Generator.generate`."""
        return {"max_new_tokens": self.max_new_tokens, "temperature": self.temperature, "top_p": self.top_p,
                "seed": self.seed, "stop": self.stop, "num_beams": self.num_beams}


@dataclass
class Decoded:
    """A recipe-decoded output: the text a user sees, and recipe-specific detail (e.g. a recursion trace)."""

    text: str
    extra: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Generator(Protocol):
    """Batched text generation: one completion (without the prompt) per prompt, in order."""

    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int = 64,
        stop: Sequence[str] = (),
        num_beams: int = 1,
        temperature: float = 0.0,
        seed: int = 0,
        top_p: float = 1.0,
    ) -> list[str]:
        """Complete each prompt; text stops before the first stop string or at EOS. temperature 0 = greedy."""
        ...


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """Text up to (not including) the earliest stop string, and whether one was found."""
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class HFGenerator:
    """transformers `generate` over batches of prompts: left padding, sorted by length, KV cache (static on CPU).

    Greedy when temperature is 0, sampling otherwise (seeded), beam search when num_beams > 1. Stop strings
    are handed to `generate` (its StopStringCriteria matches token suffixes, no re-decoding per step).
    """

    def __init__(self, model: Any, tokenizer: Any, batch_size: int = 64,
                 positions: PositionRules | None = None):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        # Rules whose positions `generate` cannot feed per token (llmft.core.positions): then a decoding
        # loop of ours places each new token.
        self.positions = positions if positions is not None and positions.own_decoding else None

    def generate(
        self,
        prompts: Sequence[str],
        *,
        max_new_tokens: int = 64,
        stop: Sequence[str] = (),
        num_beams: int = 1,
        temperature: float = 0.0,
        seed: int = 0,
        top_p: float = 1.0,
    ) -> list[str]:
        import torch

        from llmft.core.data import encode_prompt

        if not prompts:
            return []
        if temperature < MIN_TEMPERATURE:
            temperature = 0.0
        encoded = [encode_prompt(self.tokenizer, p) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
        outputs: list[str] = [""] * len(prompts)
        device = next(self.model.parameters()).device
        pad = self.tokenizer.pad_token_id
        torch.manual_seed(seed)
        self.model.eval()
        watchable = bool(stop) and self.positions is None and stops_watchable(self.tokenizer, stop)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            width = max(len(encoded[i]) for i in chunk)
            ids = torch.full((len(chunk), width), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, i in enumerate(chunk):
                n = len(encoded[i])
                ids[row, width - n:] = torch.tensor(encoded[i])
                mask[row, width - n:] = 1
            if self.positions is not None:
                texts = decode_stepwise(self.model, self.tokenizer, self.positions, ids, mask,
                                        max_new_tokens, stop, num_beams, temperature, top_p)
                for row, i in enumerate(chunk):
                    outputs[i] = texts[row]
                continue
            kwargs: dict[str, Any] = {
                "max_new_tokens": max_new_tokens,
                "num_beams": num_beams,
                "do_sample": temperature > 0,
                "pad_token_id": pad,
                "eos_token_id": self.tokenizer.eos_token_id,
            }
            if temperature > 0:
                kwargs.update(temperature=temperature, top_k=0, top_p=top_p)
            if watchable:
                kwargs.update(stop_strings=list(stop), tokenizer=self.tokenizer)
            seq2seq = bool(getattr(self.model.config, "is_encoder_decoder", False))
            if device.type == "cpu" and num_beams == 1 and not seq2seq:
                # A preallocated cache instead of one torch.cat per layer and step: 1.3x faster decoding at
                # batch 64 on CPU (bench/generate.py). Not on GPUs: there transformers would torch.compile the
                # forward for a static cache, recompiling for every new batch shape.
                kwargs["cache_implementation"] = "static"
            with torch.inference_mode():
                generated = self.model.generate(
                    input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=True, **kwargs
                )
            eos, pad_ids = self.tokenizer.eos_token_id, {pad, self.tokenizer.eos_token_id}
            for row, i in enumerate(chunk):
                # An encoder-decoder returns only decoder ids, behind its decoder start token.
                new_ids = generated[row, 1:].tolist() if seq2seq else generated[row, width:].tolist()
                if eos in new_ids:
                    new_ids = new_ids[:new_ids.index(eos)]
                # Recipe tokens (pause, planning) stay in the text; only padding goes.
                text = self.tokenizer.decode([t for t in new_ids if t not in pad_ids])
                outputs[i] = cut_at_stop(text, stop)[0] if stop else text
        return outputs


def stops_watchable(tokenizer: Any, stop: Sequence[str]) -> bool:
    """Whether transformers can end generation at these stop strings: it refuses any that no token sequence of
    the vocabulary spells. The text is cut at every stop string after generation either way."""
    from transformers import StopStringCriteria

    try:
        StopStringCriteria(tokenizer, list(stop))
    except ValueError:
        return False
    return True


def decode_stepwise(model: Any, tokenizer: Any, positions: PositionRules, ids: Any, mask: Any,
                    max_new_tokens: int, stop: Sequence[str], num_beams: int, temperature: float,
                    top_p: float) -> list[str]:
    """Greedy or sampled decoding of left-padded prompts, each token at the position the rules give, KV-cached.

    Written by hand because transformers' `generate` derives each new position from the last one.
    """
    import inspect

    import torch
    from transformers import DynamicCache, StaticCache

    from llmft.core.errors import LlmftError
    from llmft.core.positions import OWN_POSITIONS

    if num_beams > 1:
        raise LlmftError(f"beam search is not available for a model with {OWN_POSITIONS}; use num_beams = 1")
    device = next(model.parameters()).device
    rows, width = ids.shape
    states = [positions.decoding_state() for _ in range(rows)]
    positions = torch.zeros_like(ids)
    for r in range(rows):
        real = int(mask[r].sum())
        positions[r, width - real:] = torch.tensor([states[r].advance(int(t)) for t in ids[r, width - real:]])
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    new_ids: list[list[int]] = [[] for _ in range(rows)]
    done = [False] * rows
    mask = mask.to(device)
    # A preallocated cache on CPU, as HFGenerator's own decoding (no torch.cat per layer and step).
    cache = StaticCache(config=model.config, max_cache_len=width + max_new_tokens) if device.type == "cpu" \
        else DynamicCache()
    step_ids, step_positions = ids.to(device), positions.to(device)
    filled = 0
    # A stop string first completes in the newest token and spans at most its own length in tokens (each >= 1
    # character), so only that tail is decoded per step; twice the length leaves room for byte-level pieces.
    tail = 2 * max((len(s) for s in stop), default=0)
    # transformers 5 deprecates `past_key_values` for `cache`; a PEFT wrapper takes **kwargs and passes either on.
    cache_key = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    with torch.inference_mode():
        for _ in range(max_new_tokens):
            length = step_ids.shape[1]
            out = model(input_ids=step_ids, attention_mask=mask, position_ids=step_positions, **{cache_key: cache},
                        cache_position=torch.arange(filled, filled + length, device=device), use_cache=True,
                        logits_to_keep=1)
            filled += length
            logits = out.logits[:, -1].float()
            if temperature > 0:
                probs = nucleus(torch.softmax(logits / temperature, dim=-1), top_p)
                chosen = torch.multinomial(probs, 1).squeeze(1).tolist()
            else:
                chosen = logits.argmax(-1).tolist()
            next_positions = []
            for r in range(rows):
                token = pad if done[r] else chosen[r]
                chosen[r] = token
                if not done[r]:
                    if token == eos:
                        done[r] = True
                    else:
                        new_ids[r].append(token)
                        if stop:
                            done[r] = cut_at_stop(tokenizer.decode(new_ids[r][-tail:]), stop)[1]
                next_positions.append(states[r].advance(token))
            if all(done):
                break
            step_ids = torch.tensor(chosen, device=device)[:, None]
            step_positions = torch.tensor(next_positions, device=device)[:, None]
            mask = torch.cat([mask, torch.ones((rows, 1), dtype=mask.dtype, device=device)], dim=1)
    return [cut_at_stop(tokenizer.decode(new_ids[r]), stop)[0] for r in range(rows)]


def nucleus(probs: Any, top_p: float) -> Any:
    """Probabilities restricted to the smallest set whose mass reaches top_p (renormalised by multinomial)."""
    if top_p >= 1.0:
        return probs
    import torch

    ordered, order = probs.sort(dim=-1, descending=True)
    keep = ordered.cumsum(-1) - ordered < top_p
    return torch.zeros_like(probs).scatter(-1, order, ordered * keep)
