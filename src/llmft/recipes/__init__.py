"""Recipe packages: importing this module registers every recipe."""

from llmft.recipes import sft  # noqa: F401
