"""Loading a data set from the Hugging Face hub with one-line errors (offline machines, unknown names)."""

from __future__ import annotations

from typing import Any

from llmft.core.errors import LlmftError


def load_hub_dataset(name: str, *args: Any, what: str = "--source", **kwargs: Any) -> Any:
    """`datasets.load_dataset(name, ...)`; no network, no cache or a wrong name is a one-line LlmftError."""
    import datasets

    try:
        return datasets.load_dataset(name, *args, **kwargs)
    except (ConnectionError, OSError, ValueError, FileNotFoundError) as exc:
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise LlmftError(f"{what}: cannot load '{name}' from the hub ({reason}); on an offline machine download it "
                         "elsewhere and pass the saved folder or file instead") from None
    except Exception as exc:  # datasets wraps hub failures in its own exception types, which vary by version
        if type(exc).__module__.split(".")[0] not in ("datasets", "huggingface_hub", "requests", "httpx"):
            raise
        reason = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise LlmftError(f"{what}: cannot load '{name}' from the hub ({reason}); on an offline machine download it "
                         "elsewhere and pass the saved folder or file instead") from None
