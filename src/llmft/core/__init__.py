"""The shared core: knows no paper."""

import logging

# bitsandbytes on CPU logs a warning about an optional `kernels` package at import; it is harmless
# (PERF-NOTES) and would break the one-line contract of our error messages.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
