"""The checked field types the API's requests are built from (app/schemas/requests.py, and the OpenAI-shaped
ones in app/api/openai_schemas.py), and the strict base they share: unknown fields are refused.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


# above every loaded model's vocabulary (GPT-2's 50,257, Llama 3's 128,256, Qwen2's 151,936): the engine
# checks ids against the loaded model's own and says its range
VOCAB = 262_144


def whole_characters(text: str) -> str:
    """JSON can spell a lone UTF-16 surrogate ("\\ud800"), which no UTF-8 text holds: make it U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


Text = Annotated[str, AfterValidator(whole_characters)]
TokenId = Annotated[int, Field(ge=0, lt=VOCAB, description="a token id of the loaded model (GPT-2: 0 to 50,256)")]
Temperature = Annotated[float, Field(ge=0, le=10, allow_inf_nan=False,
                                     description="divides the logits: below 1 sharpens, above 1 flattens; 0 is greedy")]
TopK = Annotated[int, Field(ge=0, le=VOCAB, description="keep the k most likely tokens; 0 keeps all")]
# from 1e-6: the cut compares in float32, where a smaller p is 0 and would keep nothing
TopP = Annotated[float, Field(ge=1e-6, le=1, allow_inf_nan=False,
                              description="keep the fewest most likely tokens whose probability reaches p "
                                          "(0.000001 to 1; 1 keeps all)")]
Seed = Annotated[int, Field(ge=0, le=2**63 - 1, description="makes sampling repeatable")]
StopText = Annotated[str, Field(min_length=1, max_length=200), AfterValidator(whole_characters)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")
