"""The request bodies of /v1/completions and /v1/chat/completions (pydantic; unknown fields are kept).

Strict where OpenAI is strict: `"n": "2"`, `"max_tokens": true` or `"stream": "yes"` are 400s, not coerced.
"""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

MAX_N = 16
MAX_LOGPROBS = 20  # top alternatives per token, as vLLM's default cap
# Fields a client may send that change nothing here; any other field the models below do not name is a 400
# unless it holds its neutral value (null, false, 0, an empty list or object; best_of 1).
IGNORED_FIELDS = frozenset({"user", "metadata", "store", "service_tier"})
MAX_STOP_CHARS = 1000  # a stop string longer than any completion llmft would write can never match
INT64 = 2**63  # seeds as vLLM takes them: a signed 64-bit integer


def utf8_text(value: Any) -> Any:
    """A string (or the strings of a list) that encodes as UTF-8: a lone surrogate escape (`\\ud800`) is
    valid JSON but no tokenizer can encode it."""
    for text in [value] if isinstance(value, str) else value if isinstance(value, list) else []:
        if isinstance(text, str):
            try:
                text.encode("utf-8")
            except UnicodeEncodeError:
                raise ValueError("holds a lone surrogate (\\ud800-\\udfff), which is not text") from None
    return value


class SamplingRequest(BaseModel):
    """The fields both endpoints share: the model's name, sampling, streaming and llmft's own options."""

    model_config = ConfigDict(extra="allow", strict=True)
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=MAX_N)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=-INT64, lt=INT64)
    llmft: dict[str, Any] | None = None

    @field_validator("stop")
    @classmethod
    def _stop(cls, value: Any) -> Any:
        if any(len(s) > MAX_STOP_CHARS for s in ([value] if isinstance(value, str) else value or [])):
            raise ValueError(f"a stop string is longer than {MAX_STOP_CHARS} characters")
        return utf8_text(value)


def unsupported_fields(body: BaseModel) -> list[str]:
    """The fields a request sets that the server does not implement (sent with a value that would matter)."""
    extra = body.model_extra or {}
    return sorted(name for name, value in extra.items()
                  if name not in IGNORED_FIELDS and value not in (None, False, 0, [], {}, "")
                  and not (name == "best_of" and value == 1))


class CompletionRequest(SamplingRequest):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(None, ge=0)  # 0 only with echo: the prompt's logprobs alone
    echo: bool = False
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: Any) -> Any:
        return utf8_text(value)


class Message(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)
    role: str
    content: str | list[dict[str, Any]] | None = None

    @field_validator("content")
    @classmethod
    def _content(cls, value: Any) -> Any:
        utf8_text([part.get("text") for part in value] if isinstance(value, list) else value)
        return value


class ChatRequest(SamplingRequest):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS)
