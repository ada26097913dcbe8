"""Third-party chatter off by default: hub/transformers progress bars, advisory warnings, known-harmless lines.

`llmft --verbose` skips all of it. Set before the libraries load (environment) and after (their switches), so
it holds however early something imported transformers.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

ENVIRONMENT = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # hub downloads; transformers' own bars follow this at import
    "TRANSFORMERS_VERBOSITY": "error",
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    "DATASETS_VERBOSITY": "error",
}
# Loggers whose warnings are noise for a llmft user (each names a library, never llmft).
LOGGERS = ("bitsandbytes", "huggingface_hub", "accelerate", "datasets", "peft", "torch.distributed.elastic")


def quiet_libraries(verbose: bool = False) -> None:
    """Silence third-party bars and warnings unless `verbose`; child processes inherit the environment."""
    if verbose:
        os.environ["LLMFT_VERBOSE"] = "1"
        return
    for key, value in ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    # Deprecation notices raised inside the libraries (e.g. transformers' `is_gradient_checkpointing`,
    # called by peft) are for their maintainers, not for someone training a model.
    for module in ("transformers", "peft", "accelerate", "torch", "bitsandbytes", "datasets", "huggingface_hub"):
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)
    warnings.filterwarnings("ignore", message=".*TypedStorage is deprecated.*")
    for name in LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    if "transformers" in sys.modules:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    if "huggingface_hub" in sys.modules:
        from huggingface_hub.utils import disable_progress_bars

        disable_progress_bars()


def is_verbose() -> bool:
    """Whether `--verbose` was given (also in child processes of a launcher)."""
    return os.environ.get("LLMFT_VERBOSE") == "1"
