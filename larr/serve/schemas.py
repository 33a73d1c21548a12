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

        model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra={"examples": [{
            "user_id": 7, "scene": {"weather": "typhoon", "hour": 12, "time_slot": "lunch"},
            "candidates": [3, 5, 8], "top_k": 2}]})

        user_id: Id = Field(description="User id; unknown users are scored with the out-of-vocabulary embedding.")
        scene: dict[Name, Value] = Field(
            max_length=settings.max_scene_features,
            description="Scene feature → value. A feature left out uses the unknown row; a value never seen is "
            "encoded by the frozen LLM once and cached; a feature the model does not have is a 422.")
        candidates: list[Id] = Field(min_length=1, max_length=settings.max_candidates,
                                     description="Shop ids to rank, all scored in one batched forward.")
        top_k: Annotated[StrictInt, Field(ge=1, le=settings.max_candidates)] | None = Field(
            None, description="Return only the best k (default: all); an integer (not \"2\", 2.0 or true).")

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
        description="Where each scene feature's LLM vector came from: table | cache | store | encoded | pending "
        "(never seen: answered with the unknown row now, encoded in the background for later requests) | "
        "fallback (the unknown row: encode queue full, no encoder, a cap reached) | missing (not in the request).")


class Health(BaseModel):
    status: str = Field(description="ok | degraded (200: the store is slow or down, or new vectors are not being "
                        "written; requests are still answered from the cache and the fallback) | loading | error")
    degraded: list[str] | None = Field(None, description="Why the server is degraded.")
    model: str | None = None
    version: str | None = None
    backend: str | None = None
    error: str | None = None


class ErrorBody(BaseModel):
    detail: str | list = Field(description="What is wrong: a message, or the validation errors (loc, msg, type).")
    message: str | None = Field(None, description="The first problem, as one line.")


# ---------------------------------------------------------------------------- the scene explorer's read-only endpoints


class UserInfo(BaseModel):
    user_id: int | str
    home_district: str | None = None
    work_district: str | None = None
    profile: str | None = None


class UserList(BaseModel):
    users: list[UserInfo]
    total: int = Field(description="Users matching the query (only the first `limit` are listed).")


class ShopInfo(BaseModel):
    shop_id: int | str
    name: str | None = None
    category: str | None = None
    district: str | None = None
    price_level: int | None = None


class ShopList(BaseModel):
    shops: list[ShopInfo]
    total: int


class SceneFeatureInfo(BaseModel):
    name: str
    kind: str = Field(description="str | int | float | bool")
    template: str = Field(description="How a value is rendered into the text the LLM encodes.")
    doc: str = ""
    values: list[str] = Field(description="Values the model was trained with (canonical strings).")
    range: list[float] | None = Field(None, description="[lo, hi] a numeric value must fall in (422 outside).")


class SceneFeatures(BaseModel):
    model: str
    version: str
    scene_encoder: str | None = Field(description="per_feature models encode each feature; whole_text one text.")
    features: list[SceneFeatureInfo]
    example: dict[str, str | int | float | bool] = Field(default_factory=dict,
                                                           description="A scene of the run's data (the page starts there).")


class Neighbour(BaseModel):
    value: str
    similarity: float = Field(description="Cosine similarity of the standardised LLM vectors.")


class Neighbours(BaseModel):
    feature: str
    value: str
    source: str = Field(description="Where the value's vector came from (as in RankResponse.scene_sources); "
                        "pending: being encoded now, ask again shortly.")
    known: bool = Field(description="The model was trained with this value.")
    neighbours: list[Neighbour] = Field(description="Nearest values the model was trained with, most similar first.")
