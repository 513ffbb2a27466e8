"""The JSON shapes of the OpenAI-compatible routes (app/api/openai.py): what an OpenAI client sends
and expects back, checked as strictly as the rest of the API (app/schemas.py)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.schemas.fields import Seed, StopText, Strict, Text, TokenId, TopK, TopP


class OpenAIErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class OpenAIError(BaseModel):
    error: OpenAIErrorBody


class StreamOptions(Strict):
    include_usage: bool = False


class CompletionRequest(Strict):
    model: str | None = Field(None, max_length=200, description="ignored: this server has one model")
    prompt: Text | list[Text] | list[TokenId] = Field(
        "", description="text, a list with one text, or token ids")
    max_tokens: int | None = Field(16, ge=1)
    temperature: Annotated[float, Field(ge=0, le=2, allow_inf_nan=False)] | None = 1.0
    top_p: TopP | None = 1.0
    top_k: TopK | None = Field(None, description="an extension, as in vLLM; 0 or null keeps all")
    n: int | None = Field(1, ge=1, le=1, description="one completion per request: 1 only")
    best_of: int | None = Field(None, ge=1, le=1, description="1 only")
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    logprobs: int | None = Field(None, ge=0, le=5, description="top alternatives to report per token")
    echo: bool | None = Field(False, description="give the prompt back before the completion, with each prompt "
                              "token's logprobs (the first has none); logprobs 0 or 1, not with stream")
    stop: StopText | list[StopText] | None = Field(None, description="up to 4 texts that end the completion")
    seed: Seed | None = None
    presence_penalty: Annotated[float, Field(allow_inf_nan=False)] | None = Field(0, description="not supported: 0 only")
    frequency_penalty: Annotated[float, Field(allow_inf_nan=False)] | None = Field(0, description="not supported: 0 only")
    logit_bias: dict[str, Annotated[float, Field(allow_inf_nan=False)]] | None = Field(
        None, description="not supported: empty or null only")
    user: str | None = Field(None, max_length=200)
    suffix: str | None = Field(None, description="not supported: null only")

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"model": "deepdive-tiny", "prompt": "Once upon a time", "max_tokens": 20, "temperature": 0.7,
         "logprobs": 2, "stop": ["."]}]})

    @model_validator(mode="after")
    def _shapes(self) -> "CompletionRequest":
        unsupported = {"presence_penalty": self.presence_penalty,
                       "frequency_penalty": self.frequency_penalty, "logit_bias": self.logit_bias,
                       "suffix": self.suffix}
        for name, value in unsupported.items():
            if value:
                raise ValueError(f"The field {name} is not supported by this server: leave it out")
        if isinstance(self.prompt, list) and self.prompt and isinstance(self.prompt[0], str) and len(self.prompt) != 1:
            raise ValueError("A prompt given as a list of texts must hold exactly one text: this server returns one completion")
        if self.echo and self.stream:
            raise ValueError("The field echo works without stream only: leave one of them out")
        if self.echo and (self.logprobs or 0) > 1:
            raise ValueError("With echo, logprobs can be 0 or 1 (the prompt's tokens come with their most likely "
                             "alternative only): ask for fewer")
        if isinstance(self.stop, list) and len(self.stop) > 4:
            raise ValueError(f"The field stop holds {len(self.stop)} texts: give at most 4")
        return self


class Logprobs(BaseModel):
    tokens: list[str]
    token_logprobs: list[float | None]
    top_logprobs: list[dict[str, float] | None] | None  # None for an echoed prompt's first token
    text_offset: list[int]


class CompletionChoice(BaseModel):
    text: str
    index: int = 0
    logprobs: Logprobs | None = None
    finish_reason: Literal["stop", "length"] | None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "id": "cmpl-5b1c0e9d2f4a4e7b8c6d1a2f", "object": "text_completion", "created": 1767225600,
        "model": "deepdive-tiny",
        "choices": [{"text": " there was a little girl", "index": 0, "logprobs": None, "finish_reason": "length"}],
        "usage": {"prompt_tokens": 4, "completion_tokens": 5, "total_tokens": 9}}]})


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "deepdive"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "object": "list", "data": [{"id": "deepdive-tiny", "object": "model", "created": 1767225600,
                                    "owned_by": "deepdive"}]}]})
