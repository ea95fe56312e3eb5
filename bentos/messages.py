"""Request and response bodies of the Scorer and the Router (pydantic; they make the OpenAPI docs).

Structure is checked by pydantic (unknown top-level keys, wrong types for ids, label values); the
feature values are checked against the model signature by `bentos.validation`, so every feature
problem is reported with the feature's name whatever the model.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

#: What a request id may hold: it is copied into the ``X-Request-ID`` header (Latin-1 only, no control
#: characters), so it is 1-128 visible ASCII characters: letters, digits and punctuation, no spaces.
REQUEST_ID_PATTERN = r"^[!-~]{1,128}$"
REQUEST_ID_RULE = "1-128 visible ASCII characters (letters, digits, punctuation; no spaces, no control characters)"
RequestId = Annotated[str, Field(min_length=1, max_length=128, pattern=REQUEST_ID_PATTERN,
                                 description=f"client id of the request, e.g. the transaction id: {REQUEST_ID_RULE}; "
                                 "generated when absent. /feedback labels refer to it")]
Features = Annotated[dict[str, Any], Field(description="feature name -> number, exactly the columns of the "
                                           "model signature (see the Scorer's /info)")]

#: Response headers carrying the audit fields (also in every body).
HEADER_REQUEST_ID = "X-Request-ID"
HEADER_ARM = "X-Kingmaker-Arm"
HEADER_MODEL_NAME = "X-Model-Name"
HEADER_MODEL_VERSION = "X-Model-Version"
HEADER_MODE = "X-Kingmaker-Mode"
HEADER_FALLBACK = "X-Kingmaker-Fallback"


class ErrorCode(StrEnum):
    """The stable ``code`` of every error answer (``{"code": ..., "error": <message>, ...}``): clients branch on
    the code; the message is for people and may change. Details of server-side failures go to the log only."""

    INVALID_REQUEST = "invalid_request"                # 400: the body or a header is wrong; ``detail`` names fields
    UNAUTHORIZED = "unauthorized"                      # 401: missing or invalid bearer token
    NOT_FOUND = "not_found"                            # 404: no such path
    METHOD_NOT_ALLOWED = "method_not_allowed"          # 405: the endpoints take POST
    TOO_LARGE = "too_large"                            # 413: body or batch over the limit
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"  # 415: send Content-Type: application/json
    INTERNAL = "internal"                              # 500: a bug; the log has the traceback
    NOT_READY = "not_ready"                            # 503: starting, or the champion has not answered yet
    CHAMPION_UNAVAILABLE = "champion_unavailable"      # 503: the champion cannot answer now; retry
    PREDICTION_LOG_UNAVAILABLE = "prediction_log_unavailable"  # 503: the answer could not be logged, so none is given
    LABEL_STORE_UNAVAILABLE = "label_store_unavailable"  # 503: /feedback could not read or write the label log
    DISABLED = "disabled"                              # 503: /feedback without configured tokens
    TIMEOUT = "timeout"                                # 504: the request took longer than the server's timeout


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Empty(_Strict):
    """No parameters (send ``{}`` or nothing)."""


# --- Scorer ----------------------------------------------------------------------------------
class ScoreRequest(_Strict):
    features: Features
    request_id: RequestId | None = None


class ExplainRequest(ScoreRequest):
    top_k: int = Field(5, ge=1, le=1000, description="how many of the largest contributions to return")


class BatchRequest(_Strict):
    rows: list[Features] = Field(description="one object of feature values per row")
    request_ids: list[RequestId] | None = Field(None, description="one id per row (generated when absent)")


class Scored(BaseModel):
    request_id: str
    arm: str
    model_name: str
    model_version: str
    score: float = Field(description="fraud probability in [0, 1]")
    decision: bool = Field(description="score >= threshold: flag the transaction")
    threshold: float


class BatchScored(BaseModel):
    arm: str
    model_name: str
    model_version: str
    threshold: float
    request_ids: list[str]
    scores: list[float]
    decisions: list[bool]


class Contribution(BaseModel):
    feature: str
    value: float
    contribution: float = Field(description="additive contribution to the log-odds (SHAP for XGBoost)")


class Explanation(Scored):
    contributions: list[Contribution] | None = Field(
        description="the top_k features by absolute contribution; null if the model type has no explanation")


class ModelInfo(BaseModel):
    arm: str
    model_name: str
    model_version: str
    alias: str | None
    run_id: str
    flavor: str
    threshold: float
    features: list[str]
    feature_types: list[str]
    model_source: Literal["registry", "cache"] = Field(
        default="registry", description="registry: resolved at start-up (or since); cache: the registry was "
        "unreachable at start-up and this is the locally cached version of the same reference")
    cached_at: float | None = Field(default=None, description="with model_source cache: when it was cached (Unix time)")
    registry_error: str | None = Field(default=None, description="with model_source cache: the last registry failure")


# --- Router ----------------------------------------------------------------------------------
class PredictRequest(_Strict):
    features: Features
    request_id: RequestId | None = None
    ids: dict[str, Annotated[str, Field(max_length=256)]] | None = Field(
        None, description="entity ids that are not model inputs (customer_id, card_id ...); the Router's "
        "routing_field is read from here, falling back to the request id")


class PredictBatchRequest(_Strict):
    rows: list[PredictRequest] = Field(description="requests routed one by one, scored in one call per arm")


class Prediction(Scored):
    mode: str
    fallback: bool = Field(False, description="the challenger was chosen but failed; the champion answered")


class PredictionBatch(BaseModel):
    predictions: list[Prediction]


class Label(_Strict):
    request_id: RequestId
    label: Annotated[StrictInt, Field(ge=0, le=1, description="1 = fraud, 0 = legitimate")]


class FeedbackRequest(_Strict):
    """Either one label (``request_id`` + ``label``) or a batch (``labels``)."""

    request_id: RequestId | None = None
    label: Annotated[StrictInt, Field(ge=0, le=1)] | None = None
    labels: list[Label] | None = None

    @model_validator(mode="after")
    def _one_form(self) -> FeedbackRequest:
        single = self.request_id is not None or self.label is not None
        if single and self.labels is not None:
            raise ValueError("send either request_id+label or labels, not both")
        if single and (self.request_id is None or self.label is None):
            raise ValueError("a single label needs both request_id and label")
        if not single and not self.labels:
            raise ValueError("no labels: send request_id+label, or a non-empty labels list")
        return self

    def items(self) -> list[Label]:
        if self.labels is not None:
            return self.labels
        assert self.request_id is not None and self.label is not None
        return [Label(request_id=self.request_id, label=self.label)]


class FeedbackResult(BaseModel):
    """What happened to each label received: received = written + duplicates + superseded."""

    received: int
    written: int = Field(description="labels appended to the label log (new or changed)")
    duplicates: int = Field(description="labels identical to the one already recorded, or repeated identically in "
                            "this request: nothing written")
    updated: int = Field(description="of the written, labels that replace a different earlier label for the same id")
    superseded: int = Field(0, description="labels followed by a different label for the same id in this request: "
                            "the last label of an id in a request is the one kept")
    superseded_ids: list[str] = Field(default_factory=list, description="up to 100 ids of superseded labels")
    unknown: int = Field(description="labels whose request id is not in the prediction log (still recorded)")
    unknown_ids: list[str] = Field(description="up to 100 of the unknown ids")
