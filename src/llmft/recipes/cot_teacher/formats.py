"""Every string a teacher or student sees, as the reference's `Formatter` writes it (stripped fields).

Templates: `zs_cot` steps 1 and 2 (the teacher), `ft_cot_token` (Fine-tune-CoT student), `ft_token` (vanilla
fine-tune), `zs` (zero-shot) and `fs_cot` (few-shot-CoT), for decoder and encoder-decoder students.
"""

from __future__ import annotations

from typing import Any, Literal

ModelType = Literal["decoder", "encoder_decoder"]
STUDENT_TEMPLATES = ("ft_cot_token", "ft_token", "zs", "fs_cot")

ZS_COT_STEP1 = "Q: {question}\nA: Let's think step by step."
ZS_COT_STEP2 = "{reasoning_prompt}{reasoning_completion}\nTherefore, the answer is"

# (input, label) per template and model type; None = no label (inference-only template).
TEMPLATES: dict[tuple[str, str], tuple[str, str | None]] = {
    ("ft_cot_token", "decoder"): ("{question} ###", " {reasoning_completion} --> {answer}"),
    ("ft_cot_token", "encoder_decoder"): ("{question}", "{reasoning_completion} --> {answer}"),
    ("ft_token", "decoder"): ("{question} ###", " {answer}"),
    ("ft_token", "encoder_decoder"): ("{question}", "{answer}"),
    ("zs", "decoder"): ("Q: {question}\n\nA:", None),
    ("zs", "encoder_decoder"): ("question: {question}", None),  # the SQuAD-style prompt T5 was trained with
}
STRIPPED = ("question", "answer", "reasoning_completion", "reasoning_prompt")


def _stripped(sample: dict[str, Any]) -> dict[str, Any]:
    # The reference strips these fields before formatting (its note: the paper's GPT-3 runs did not).
    return {k: (v.strip() if k in STRIPPED and isinstance(v, str) else v) for k, v in sample.items()}


def zs_cot_step1(question: str) -> str:
    """Zero-shot-CoT step 1: the reasoning prompt."""
    return ZS_COT_STEP1.format(question=question.strip())


def zs_cot_step2(reasoning_prompt: str, reasoning_completion: str) -> str:
    """Zero-shot-CoT step 2: the answer-extraction prompt (both parts stripped, joined with nothing between)."""
    return ZS_COT_STEP2.format(reasoning_prompt=reasoning_prompt.strip(),
                               reasoning_completion=reasoning_completion.strip())


def student_input(sample: dict[str, Any], template: str, model_type: ModelType, few_shot_prompt: str = "") -> str:
    """What the student is given for a template (`fs_cot` prepends the few-shot exemplars)."""
    sample = _stripped(sample)
    if template == "fs_cot":
        return few_shot_prompt + "\nQ: {question}\nA:".format(question=sample["question"])
    return TEMPLATES[(template, model_type)][0].format(**sample)


def student_label(sample: dict[str, Any], template: str, model_type: ModelType) -> str:
    """What the student learns to write; a `ft_cot_token` label needs the sample's `reasoning_completion`."""
    label = TEMPLATES.get((template, model_type), ("", None))[1]
    if label is None:
        raise ValueError(f"template '{template}' has no label (it is for inference only)")
    return label.format(**_stripped(sample))


def student_record(sample: dict[str, Any], template: str, model_type: ModelType) -> dict[str, Any]:
    """One training record {prompt, completion} plus the fields evaluation reads. Decoders get EOS after the
    completion from the core tokenisation (the reference appends the EOS string); T5's tokenizer adds its own."""
    return {
        "prompt": student_input(sample, template, model_type),
        "completion": student_label(sample, template, model_type),
        "sample_index": sample["sample_index"],
        "completion_index": sample.get("completion_index", 0),
        "answer": sample["answer"],
    }
