"""The request bodies of /v1/completions and /v1/chat/completions (pydantic; unknown fields are kept)."""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

MAX_N = 16


class SamplingRequest(BaseModel):
    """The fields both endpoints share: the model's name, sampling, streaming and llmft's own options."""

    model_config = ConfigDict(extra="allow")
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    n: int = Field(1, ge=1, le=MAX_N)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    llmft: dict[str, Any] | None = None


class CompletionRequest(SamplingRequest):
    prompt: str | list[str]


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(SamplingRequest):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
