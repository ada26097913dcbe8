"""Disentangling Memory and Reasoning (MingyuJ666/Disentangling-Memory-and-Reasoning): CoT steps typed by
trained <memory_i>/<reason_i> planning tokens, LoRA on the MLP plus the new tokens' input and output rows."""

from llmft.recipes.base import register
from llmft.recipes.memreason.recipe import MemreasonConfig, MemreasonRecipe

__all__ = ["MemreasonConfig", "MemreasonRecipe"]

register(MemreasonRecipe())
