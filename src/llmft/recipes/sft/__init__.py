"""The generic `sft` recipe: any prompt/completion JSONL, evaluated by exact match."""

from llmft.recipes.base import register
from llmft.recipes.sft.recipe import SftRecipe

register(SftRecipe())
