"""`llmft serve`: trained runs behind an OpenAI-compatible HTTP API (app, routes, batching, backends)."""
