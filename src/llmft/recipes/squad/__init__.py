"""llama-squad (teticio/llama-squad): SQuAD v2 as chat prompts answered in JSON, loss on the answer only."""

from llmft.recipes.base import register
from llmft.recipes.squad.recipe import SquadConfig, SquadRecipe

__all__ = ["SquadConfig", "SquadRecipe"]

register(SquadRecipe())
