"""Every string a teacher or student sees, as the reference's `Formatter` writes it (stripped fields).

Templates: `zs_cot` steps 1 and 2 (the teacher), `ft_cot_token` (Fine-tune-CoT student), `ft_cot_natural`
(its natural-language variant), `ft_cot_token_gpt3` (the strings of the paper's GPT-3 runs), `ft_token` (vanilla
fine-tune), `zs` (zero-shot) and `fs_cot` (few-shot-CoT), for decoder and encoder-decoder students.
"""

from __future__ import annotations

from typing import Any, Literal

from llmft.core.errors import LlmftError

ModelType = Literal["decoder", "encoder_decoder"]
STUDENT_TEMPLATES = ("ft_cot_token", "ft_cot_natural", "ft_cot_token_gpt3", "ft_token", "zs", "fs_cot")
# Templates trained on the teacher's rationales.
COT_TEMPLATES = ("ft_cot_token", "ft_cot_natural", "ft_cot_token_gpt3")

ZS_COT_STEP1 = "Q: {question}\nA: Let's think step by step."
ZS_COT_STEP2 = "{reasoning_prompt}{reasoning_completion}\nTherefore, the answer is"

# (input, label) per template and model type; None = no label (inference-only template).
TEMPLATES: dict[tuple[str, str], tuple[str, str | None]] = {
    ("ft_cot_token", "decoder"): ("{question} ###", " {reasoning_completion} --> {answer}"),
    ("ft_cot_token", "encoder_decoder"): ("{question}", "{reasoning_completion} --> {answer}"),
    # The reference's label says "Therefore the answer is" while its Evaluator looks for "Therefore, the answer
    # is" (with a comma): a student that learned the label is scored on the last candidate. Kept as written.
    ("ft_cot_natural", "decoder"): ("Q: {question}\n\nA: Let's think step by step.\n\n",
                                    " {reasoning_completion}\n\nTherefore the answer is {answer}"),
    # The paper's GPT-3 students (the reference's REPRODUCTION NOTE): these strings, fields not stripped.
    ("ft_cot_token_gpt3", "decoder"): ("{question}\n\n###\n\n", " {reasoning_completion}\n\n-->\n\n{answer}"),
    ("ft_token", "decoder"): ("{question} ###", " {answer}"),
    ("ft_token", "encoder_decoder"): ("{question}", "{answer}"),
    ("zs", "decoder"): ("Q: {question}\n\nA:", None),
    ("zs", "encoder_decoder"): ("question: {question}", None),  # the SQuAD-style prompt T5 was trained with
}
STRIPPED = ("question", "answer", "reasoning_completion", "reasoning_prompt")
UNSTRIPPED_TEMPLATES = ("ft_cot_token_gpt3",)


def _stripped(sample: dict[str, Any], template: str = "") -> dict[str, Any]:
    # The reference strips these fields before formatting (its note: the paper's GPT-3 runs did not).
    if template in UNSTRIPPED_TEMPLATES:
        return sample
    return {k: (v.strip() if k in STRIPPED and isinstance(v, str) else v) for k, v in sample.items()}


def check_template(template: str, model_type: ModelType) -> None:
    """The natural and GPT-3 templates exist for decoder students only (the reference raises otherwise)."""
    if template not in ("zs", "fs_cot") and (template, model_type) not in TEMPLATES:
        raise LlmftError(f"--format {template}: not defined for --model-type {model_type} (decoder students only)")


def zs_cot_step1(question: str) -> str:
    """Zero-shot-CoT step 1: the reasoning prompt."""
    return ZS_COT_STEP1.format(question=question.strip())


def zs_cot_step2(reasoning_prompt: str, reasoning_completion: str) -> str:
    """Zero-shot-CoT step 2: the answer-extraction prompt (both parts stripped, joined with nothing between)."""
    return ZS_COT_STEP2.format(reasoning_prompt=reasoning_prompt.strip(),
                               reasoning_completion=reasoning_completion.strip())


def student_input(sample: dict[str, Any], template: str, model_type: ModelType, few_shot_prompt: str = "") -> str:
    """What the student is given for a template (`fs_cot` prepends the few-shot exemplars)."""
    sample = _stripped(sample, template)
    if template == "fs_cot":
        return few_shot_prompt + "\nQ: {question}\nA:".format(question=sample["question"])
    return TEMPLATES[(template, model_type)][0].format(**sample)


def student_label(sample: dict[str, Any], template: str, model_type: ModelType) -> str:
    """What the student learns to write; a `ft_cot_token` label needs the sample's `reasoning_completion`."""
    label = TEMPLATES.get((template, model_type), ("", None))[1]
    if label is None:
        raise ValueError(f"template '{template}' has no label (it is for inference only)")
    return label.format(**_stripped(sample, template))


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
