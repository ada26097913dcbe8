"""The shared core: knows no paper."""
