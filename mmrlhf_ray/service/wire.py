"""The scoring service's wire format, defined once: the request and response bodies of
``POST /v1/score`` and ``POST /v1/compare`` and the error body (pydantic). The server
parses requests with these models (``server.py``), the `score` stage's client builds its
requests and reads the answers with the same models (``client.py``), and the OpenAPI
schema of docs/API.md is theirs.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class MediaFields(_Strict):
    image: str | None = Field(None, description="base64 image bytes (PNG/JPEG) or a data: URL")
    image_path: str | None = Field(None, description="path under one of the allowed roots")
    image_url: str | None = Field(None, description="http(s) URL; fetched only with allow_urls")
    video_frames: list[str] | None = Field(None, description="base64 frames of a short video")


class ScoreItem(MediaFields):
    question: str = Field(..., description="the query x")
    response: str = Field(..., description="the response y to score")
    critique: str | None = Field(None, description="use this critique instead of generating one")


class ScoreRequest(_Strict):
    items: list[ScoreItem] = Field(..., description="items to score, each independently")


class CompareRequest(MediaFields):
    question: str = Field(..., description="the query x, shared by all responses")
    responses: list[str] = Field(..., description="K candidate responses")
    critiques: list[str | None] | None = Field(None, description="optional critique per response")


class ScoreResult(BaseModel):
    score: float = Field(..., description="reward r(x, y, c)")
    critique: str = Field(..., description="the critique c the score was conditioned on")


class ScoreResponse(BaseModel):
    results: list[ScoreResult]
    model: str


class PairMargin(BaseModel):
    i: int
    j: int
    margin: float = Field(..., description="scores[i] - scores[j]")


class CompareResponse(BaseModel):
    scores: list[float]
    critiques: list[str]
    margins: list[PairMargin] = Field(..., description="every pair i < j")
    model: str


class ErrorBody(BaseModel):
    field: str
    reason: str


class ErrorResponse(BaseModel):
    error: ErrorBody
