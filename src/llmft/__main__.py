"""`python -m llmft` and `accelerate launch -m llmft` enter here."""

from llmft.cli import main

if __name__ == "__main__":
    main()
