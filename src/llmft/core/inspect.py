"""`make-data --show`: print tokenised examples with trained and masked tokens told apart."""

from __future__ import annotations

from typing import Any

from llmft.core.data import IGNORE, TokenizedExample

GREEN, DIM, RESET = "\033[32m", "\033[2m", "\033[0m"


def render_example(tokenizer: Any, example: TokenizedExample, color: bool) -> str:
    """The example's tokens in order; trained ones green (colour) or inside [[ ]] (plain text)."""
    pieces = []
    run: list[int] = []
    run_trained = None

    def flush() -> None:
        if not run:
            return
        text = tokenizer.decode(run)
        if color:
            pieces.append(f"{GREEN}{text}{RESET}" if run_trained else f"{DIM}{text}{RESET}")
        else:
            pieces.append(f"[[{text}]]" if run_trained else text)

    for position, token in enumerate(example.input_ids):
        trained = position > 0 and example.labels[position] != IGNORE
        if trained != run_trained:
            flush()
            run, run_trained = [], trained
        run.append(token)
    flush()
    return "".join(pieces)


def trained_text(tokenizer: Any, example: TokenizedExample) -> str:
    """Only the trained tokens, decoded (what the loss covers)."""
    ids = [t for p, (t, label) in enumerate(zip(example.input_ids, example.labels)) if p > 0 and label != IGNORE]
    return tokenizer.decode(ids)
