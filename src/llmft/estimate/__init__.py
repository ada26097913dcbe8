"""`llmft estimate`: GradEx, the fine-tuning outcome of data subsets estimated from projected gradients."""
