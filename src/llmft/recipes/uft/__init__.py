"""The `uft` recipe: feature-tagged stories, deletion and recovery fine-tuning, and what the model still knows."""

from llmft.recipes.base import register
from llmft.recipes.uft.recipe import UftRecipe

register(UftRecipe())
