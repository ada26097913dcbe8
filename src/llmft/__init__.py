"""llmft: five fine-tuning papers as one command-line tool."""

__version__ = "0.1.0"
