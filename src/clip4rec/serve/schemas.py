"""The HTTP API's request and response bodies (pydantic): what FastAPI validates and documents at /docs.

Ids are strings of at most MAX_ID characters; request bodies also accept JSON integers as ids (MovieLens-style
catalogs), read as their decimal string. Vectors are finite floats, at most 8192 per vector, 16 vectors per item.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, WithJsonSchema

MAX_ID = 256


def _utf8(value: str) -> str:
    """JSON may carry lone surrogates ("\\ud800"); such a string cannot be written back out, so refuse it here."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not a valid Unicode string (lone surrogate)") from None
    return value


def _number_to_str(value: Any) -> Any:
    """Ids are strings in the catalog, but MovieLens-style ids are natural to send as JSON numbers: an integer
    is read as its decimal string (181 -> "181"). Booleans and fractions stay errors (1.0 is not "1")."""
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


ItemId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID), AfterValidator(_utf8)]
# An id in a request body: a string, or an integer read as its decimal string; the schema says both.
RequestId = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID), AfterValidator(_utf8),
                      BeforeValidator(_number_to_str),
                      WithJsonSchema({"anyOf": [{"type": "string", "minLength": 1, "maxLength": MAX_ID},
                                                {"type": "integer"}],
                                      "description": "an id as in the catalog; an integer is read as its decimal "
                                                     "string (181 -> \"181\")"})]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
VectorKey = Annotated[str, StringConstraints(min_length=1, max_length=200), AfterValidator(_utf8)]


# ---- request / response models --------------------------------------------------------------------------
class RecommendRequest(BaseModel):
    # Examples come from the served catalog (see create_app), not from here.
    model_config = ConfigDict(extra="forbid")
    user_id: RequestId | None = Field(None, description="a user of the Run's Dataset: their interactions there "
                                      "(oldest first) are the history, followed by `history` if given; "
                                      "unknown user -> 404")
    history: list[RequestId] = Field(default_factory=list, max_length=1000,
                                     description="item ids, oldest first (strings, or integers read as strings); "
                                                 "unknown ids are reported and skipped")
    k: int = Field(10, ge=1, le=1000, description="how many items to return")
    exclude_seen: bool = Field(True, description="leave out items already in the history")


class Item(BaseModel):
    item_id: str
    title: str | None
    score: float | None = Field(description="the model's score (user vector · item vector) in /recommend, the "
                                            "cosine in /similar; null in the popularity fallback, whose items are "
                                            "ordered by train_count")
    rank: int
    cold_start: bool = Field(description="never seen in training: placed by its content vector alone")
    published: bool = Field(description="added live through POST /items")
    train_count: int
    has_image: bool


class RecommendResponse(BaseModel):
    items: list[Item]
    score_kind: Literal["model", "popularity"] = Field(
        description="'model': items[].score is user vector · item vector (one scale within a response); "
                    "'popularity': no history to score, items[].score is null and train_count orders them")
    user_id: str | None = Field(None, description="the user whose Dataset history was used")
    history_from_user: int = Field(0, description="history ids taken from that user's interactions")
    unknown_ids: list[str] = Field(description="history ids not in the catalog (skipped)")
    history_used: int = Field(description="history items the user tower read")
    truncated: int = Field(description="older known history items dropped to fit the model's window")
    max_len: int = Field(description="the model's window")
    fallback: Literal["popularity"] | None = Field(
        description="'popularity' when no known history item was left: the most trained-on items")
    took_ms: float


class SimilarResponse(BaseModel):
    item_id: str
    by: Literal["image", "text", "fused"]
    source: str
    items: list[Item]


class PublishRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "examples": [{"item_id": "new-1", "title": "A new film", "vectors": {"lite:image": [0.1, 0.2]}}]})
    item_id: ItemId
    title: Annotated[str, StringConstraints(max_length=1000), AfterValidator(_utf8)] | None = None
    vectors: dict[VectorKey, Annotated[list[FiniteFloat], Field(min_length=1, max_length=8192)]] = Field(
        min_length=1, max_length=16,
        description="ENCODER:MODALITY -> raw vector, as written to the store by `clip4rec encode`")


class PublishResponse(BaseModel):
    item_id: str
    created: bool
    row: int
    modalities_used: list[str]
    ignored: list[str] = Field(description="vector keys this Run does not use")
    items: int


class ItemInfo(BaseModel):
    item_id: str
    title: str | None
    cold_start: bool
    published: bool
    train_count: int
    has_image: bool


class Page(BaseModel):
    total: int
    offset: int
    ids: list[str]


class UserSummary(BaseModel):
    user_id: str
    interactions: int


class UsersPage(BaseModel):
    total: int
    offset: int
    users: list[UserSummary]


class UserHistory(BaseModel):
    user_id: str
    history: list[str]
