"""Fine-tune-CoT (Ho et al., ACL 2023): Zero-shot-CoT teacher, answer filtering, diverse reasoning, students."""

from llmft.recipes.base import register
from llmft.recipes.cot_teacher.recipe import CotTeacherRecipe

register(CotTeacherRecipe())
