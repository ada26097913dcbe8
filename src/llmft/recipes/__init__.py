"""Recipe packages: importing this module registers every recipe."""

from llmft.recipes import (
    cot_teacher,  # noqa: F401
    memreason,  # noqa: F401
    retuning,  # noqa: F401
    sft,  # noqa: F401
    squad,  # noqa: F401
    uft,  # noqa: F401
)
