"""The reference's evaluation: force-answer prompts completed to the closing brace, lenient JSON parsing,
its five-column table (raw string equality), and beside it the official SQuAD v2 normalised EM and F1.
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from llmft.core import runs
from llmft.core.generation import Sampling
from llmft.core.jsonl import read_jsonl
from llmft.core.plots import bar_plot
from llmft.core.results import eval_records, evaluate_batched
from llmft.recipes.squad.chat import answer_prompt
from llmft.recipes.squad.data import NO_ANSWER, force_prefix

# (metrics key, the reference README's column header); the last two are ours.
TABLE_COLUMNS = [
    ("valid_json", "% Valid JSON"),
    ("exact_match", "% Exact Match"),
    ("exact_match_valid_json", "% EM for Valid JSON"),
    ("no_answer", "% Correct No Answer"),
    ("has_answer", "% Correct Has Answer"),
    ("squad_em", "SQuAD EM"),
    ("squad_f1", "SQuAD F1"),
]
PUNCTUATION = frozenset(string.punctuation)


# --------------------------------------------------------------------------------------------------
# Parsing and scoring one answer


def extract_answer(text: str) -> Any:
    """The reference's lenient parse: from the first "{" to the first "}" after it, read with json5; the value
    of "answer" (any JSON value), or None when there is no such object."""
    import json5

    start = text.find("{")
    end = text.find("}", start)
    if start < 0 or end < 0:
        return None
    try:
        parsed = json5.loads(text[start:end + 1])
    except ValueError:
        return None
    return parsed.get("answer") if isinstance(parsed, dict) else None


def is_exact_match(answer: Any, golds: Sequence[str]) -> bool:
    """The reference's EM: the parsed answer equals one gold string exactly (no normalisation)."""
    return answer is not None and answer in golds


def is_no_answer(golds: Sequence[str]) -> bool:
    """Gold is the no-answer marker. The reference's latest summarize_results.py tests the JSON text against
    '[?"]' (a missing quote), which no gold list matches, so it reported 100% correct no-answer; this is the
    intended '["?"]' check (as in its 2023 version)."""
    return json.dumps(list(golds)) == json.dumps([NO_ANSWER])


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower-case, drop punctuation, drop the articles a/an/the, collapse whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def token_f1(prediction: str, gold: str) -> float:
    """SQuAD's bag-of-tokens F1 after normalisation; two empty answers agree (F1 1), one empty scores 0."""
    pred_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_scores(answer: Any, golds: Sequence[str]) -> tuple[int, float]:
    """Official SQuAD v2 (EM, F1), best over the gold answers.

    As the official script, golds that normalise to nothing ("?") mean "no answer", which only an answer
    that also normalises to nothing ("?", "") matches. Invalid JSON (None) scores 0; a non-string answer
    is scored as its JSON text (1905 -> "1905").
    """
    if answer is None:
        return 0, 0.0
    prediction = answer if isinstance(answer, str) else json.dumps(answer)
    references = [g for g in golds if normalize_answer(g)] or [""]
    exact = max(int(normalize_answer(g) == normalize_answer(prediction)) for g in references)
    return exact, max(token_f1(prediction, g) for g in references)


def score_response(response: str, golds: Sequence[str]) -> dict[str, Any]:
    """Every per-example column for one model response."""
    answer = extract_answer(response)
    exact, f1 = squad_scores(answer, golds)
    return {
        "answer": answer,
        "valid_json": answer is not None,
        "exact_match": is_exact_match(answer, golds),
        "squad_em": exact,
        "squad_f1": f1,
    }


# --------------------------------------------------------------------------------------------------
# The table


def _percent(count: float, total: int) -> float | None:
    return 100.0 * count / total if total else None


def squad_table(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The reference's table (in %) plus normalised EM/F1, from rows holding "response" and "answers".

    A column with no examples (no unanswerable questions, say) is None; the reference divided by zero or
    reported 100%.
    """
    scored = [{**score_response(row["response"], row["answers"]), "no": is_no_answer(row["answers"])}
              for row in rows]
    n = len(scored)
    valid = sum(s["valid_json"] for s in scored)
    exact = sum(s["exact_match"] for s in scored)
    no_answer = [s for s in scored if s["no"]]
    has_answer = [s for s in scored if not s["no"]]
    return {
        "examples": n,
        "valid_json": _percent(valid, n),
        "exact_match": _percent(exact, n),
        # EM among valid JSON answers: an exact match is always valid JSON, so EM count / valid count.
        "exact_match_valid_json": _percent(exact, valid),
        "no_answer": _percent(sum(s["exact_match"] for s in no_answer), len(no_answer)),
        "has_answer": _percent(sum(s["exact_match"] for s in has_answer), len(has_answer)),
        "squad_em": _percent(sum(s["squad_em"] for s in scored), n),
        "squad_f1": _percent(sum(s["squad_f1"] for s in scored), n),
        "no_answer_examples": len(no_answer),
        "has_answer_examples": len(has_answer),
    }


def summarize_results(path: str | Path) -> dict[str, Any]:
    """The table for a results.jsonl (or any JSONL of {"response", "answers"} rows)."""
    return squad_table(read_jsonl(path, what="results"))


def table_markdown(metrics_by_run: dict[str, dict[str, Any]]) -> str:
    """A Markdown table in the reference README's layout, one row per run."""
    header = "| Model | " + " | ".join(title for _, title in TABLE_COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(TABLE_COLUMNS) + 1)]
    for name, metrics in metrics_by_run.items():
        cells = [f"{metrics[key]:.2f}%" if isinstance(metrics.get(key), (int, float)) else "N/A"
                 for key, _ in TABLE_COLUMNS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------
# Generation


def complete_turns(generator: Any, prompts: list[str], sampling: Sampling, force_answer: bool) -> list[str]:
    """One assistant turn per prompt. Forced answers stop at the first "}" (the reference stopped after
    the token holding it), which is put back; otherwise the model writes freely."""
    options = sampling.kwargs()
    if not force_answer:
        return generator.generate(prompts, **options)
    options["stop"] = [*options["stop"], "}"]
    # The Generator does not say whether it stopped at "}" or at EOS / the token limit; an answer cut
    # short inside its string still fails to parse, so closing it unconditionally costs little.
    return [text + "}" for text in generator.generate(prompts, **options)]


def answer_conversations(
    generator: Any, conversations: list[list[dict[str, str]]], pause: str, config: Any, force_answer: bool
) -> list[list[str]]:
    """Every assistant turn of each conversation generated in order, the model's own earlier turns in the
    history (the multi-turn variant); returns each conversation's responses."""
    live = [list(messages) for messages in conversations]
    turns = [[i for i, m in enumerate(messages) if m["role"] == "assistant"] for messages in conversations]
    responses: list[list[str]] = [[] for _ in conversations]
    for t in range(max((len(x) for x in turns), default=0)):
        active = [c for c in range(len(live)) if len(turns[c]) > t]
        prompts = [answer_prompt(generator.tokenizer, live[c][:turns[c][t]], pause, force_answer) for c in active]
        texts = complete_turns(generator, prompts, Sampling.from_eval(config.eval), force_answer)
        for c, text in zip(active, texts, strict=True):
            responses[c].append(text)
            # The history gets the turn closed as training data closes it (the reference left off the "```").
            content = f"{force_prefix(pause)}{text}\n```" if force_answer else text
            live[c][turns[c][t]] = {"role": "assistant", "content": content}
    return responses


def evaluate_squad(generator: Any, config: Any, eval_dir: Path, pause: str, force_answer: bool) -> dict[str, Any]:
    """Answer every record of data.eval, append rows to results.jsonl (resuming past ones), write the table
    as table.md and a bar plot, and return the metrics."""
    records = eval_records(config)

    def answer(chunk: list[int]) -> list[list[str]]:
        return answer_conversations(generator, [records[i]["messages"] for i in chunk], pause, config, force_answer)

    def row(i: int, responses: list[str]) -> dict[str, Any]:
        record = records[i]
        scored = {"id": record["id"], "answers": record["answers"], "is_impossible": record["is_impossible"],
                  "response": responses[-1], **score_response(responses[-1], record["answers"])}
        return {**scored, "turns": responses} if len(responses) > 1 else scored

    done = evaluate_batched(eval_dir / runs.RESULTS_NAME, range(len(records)), config.eval.batch_size, answer, row)
    metrics = squad_table(done)
    (eval_dir / "table.md").write_text(table_markdown({Path(config.train.output_dir).name: metrics}),
                                       encoding="utf-8")
    plot_table({"this run": metrics}, eval_dir / "squad.png")
    return metrics


# --------------------------------------------------------------------------------------------------
# Plots


def plot_table(metrics_by_run: dict[str, dict[str, Any]], path: Path) -> Path:
    """Grouped bars: one group per table column, one bar per run."""
    groups = [title.replace("% ", "") for _, title in TABLE_COLUMNS]
    bars = {name: [metrics.get(key) or 0.0 for key, _ in TABLE_COLUMNS] for name, metrics in metrics_by_run.items()}
    return bar_plot(path, groups, bars, title="SQuAD v2", ylabel="%", ylim=(0, 100))
