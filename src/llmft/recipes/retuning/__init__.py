"""Re-Tuning (Pasewark et al., ACL 2024): recursive data, wave-batched recursion, accuracy by size."""

from llmft.recipes.base import register
from llmft.recipes.retuning.recipe import RetuningRecipe

register(RetuningRecipe())
