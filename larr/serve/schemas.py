"""The HTTP contract: request and response models, with the server's limits built in.

FastAPI publishes these as ``/openapi.json``; that spec *is* the contract (clients can be
generated from it, and the tests fuzz the server against it). Limits (candidate count, string
lengths, scene size) come from :class:`~larr.serve.settings.ServeSettings`, which is why the
request model is made by a factory: the published maxima are the enforced ones.

Values are strict JSON types (no "12" for 12): an id is an integer or a non-empty string; a
scene value is a string, an integer, a finite number or a boolean, and must suit its feature's
kind (checked against the model, 422 naming the feature).
"""
from __future__ import annotations

from typing import Annotated, Union

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from larr.serve.settings import ServeSettings

INT64 = dict(ge=-(2**63), le=2**63 - 1)


def _ids(settings: ServeSettings):
    return Union[Annotated[StrictInt, Field(**INT64)],
                 Annotated[StrictStr, Field(min_length=1, max_length=settings.max_string_length)]]


def rank_request_model(settings: ServeSettings) -> type[BaseModel]:
    """``RankRequest`` with ``settings``' limits (see the module docstring)."""
    Id = _ids(settings)
    Name = Annotated[StrictStr, Field(min_length=1, max_length=settings.max_string_length)]
    Value = Union[StrictBool, Annotated[StrictInt, Field(**INT64)], Annotated[StrictFloat, Field(allow_inf_nan=False)],
                  Annotated[StrictStr, Field(max_length=settings.max_string_length)]]

    class RankRequest(BaseModel):
        """Rank ``candidates`` for ``user_id`` in the real-time ``scene``."""

        model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{
            "user_id": 7, "scene": {"weather": "typhoon", "hour": 12, "time_slot": "lunch"},
            "candidates": [3, 5, 8], "top_k": 2}]})

        user_id: Id = Field(description="User id; unknown users are scored with the out-of-vocabulary embedding.")
        scene: dict[Name, Value] = Field(
            max_length=settings.max_scene_features,
            description="Scene feature → value. A feature left out uses the unknown row; a value never seen is "
            "encoded by the frozen LLM once and cached; a feature the model does not have is a 422.")
        candidates: list[Id] = Field(min_length=1, max_length=settings.max_candidates,
                                     description="Shop ids to rank, all scored in one batched forward.")
        top_k: int | None = Field(None, ge=1, le=settings.max_candidates,
                                  description="Return only the best k (default: all).")

    return RankRequest


class ScoredShop(BaseModel):
    shop_id: int | str
    score: float = Field(description="Predicted click probability.")


class RankResponse(BaseModel):
    model: str = Field(description="Row of the run directory being served, e.g. larr_seed0.")
    version: str = Field(description="<run>/<row>@<sha256 of the weights>: changes exactly when the weights do.")
    items: list[ScoredShop] = Field(description="Candidates, best first.")
    unknown_user: bool
    unknown_shops: int = Field(description="Candidates scored with the out-of-vocabulary shop embedding.")
    scene_sources: dict[str, str] = Field(
        description="Where each scene feature's LLM vector came from: table | cache | store | encoded | fallback "
        "(the unknown row, after an LLM timeout or error) | missing (not in the request: the unknown row).")


class Health(BaseModel):
    status: str = Field(description="ok | loading | error")
    model: str | None = None
    version: str | None = None
    backend: str | None = None
    error: str | None = None


class ErrorBody(BaseModel):
    detail: str | list = Field(description="What is wrong: a message, or the validation errors (loc, msg, type).")
    message: str | None = Field(None, description="The first problem, as one line.")
