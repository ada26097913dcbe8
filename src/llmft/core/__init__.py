"""The shared core: knows no paper."""

import logging

# bitsandbytes on CPU logs a warning about an optional `kernels` package at import; it is harmless
# (PERF-NOTES) and would break the one-line contract of our error messages.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
# With `kernels` installed (transformers >= 5.25 brings it), that lookup also logs, offline, that it skips the hub's
# publisher check for kernels-community's bitsandbytes kernel; bitsandbytes then runs its own CPU ops.
logging.getLogger("kernels").setLevel(logging.ERROR)
