"""Request and response bodies of the HTTP API, with the bounds every request is held to."""

from __future__ import annotations

from datetime import date
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

MAX_K = 200  # results per page
MAX_OFFSET = 1000  # how deep paging goes: a search ranks offset + k results
MAX_QUERY_CHARS = 1000  # CLIP reads 77 tokens; this leaves room for weights and operators
MAX_TERMS = 16
MAX_FILTER_CHARS = 1000


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt field is an error, not silently ignored


class SearchFilters(Strict):
    folder: Optional[str] = Field(
        None,
        max_length=4096,
        description="Only photos in this folder or below "
        "(a folder as returned in results; it is compared, never opened).",
    )
    date_from: Optional[date] = Field(None, description="Taken on or after (YYYY-MM-DD).")
    date_to: Optional[date] = Field(None, description="Taken on or before (YYYY-MM-DD).")
    camera: Optional[str] = Field(None, max_length=MAX_FILTER_CHARS, description="Camera make or model contains.")
    gps: Optional[bool] = Field(None, description="Only photos with (true) or without (false) a GPS position.")
    tag: Optional[str] = Field(None, max_length=MAX_FILTER_CHARS, description="Only photos auto-tagged with this.")

    @model_validator(mode="after")
    def _dates_in_order(self) -> SearchFilters:
        if self.date_from and self.date_to and self.date_from > self.date_to:
            raise ValueError("date_from is after date_to")
        return self


class SearchParams(Strict):
    """Everything `pixseek search` takes, except the image, which comes as base64 or as a file part."""

    text: Optional[str] = Field(
        None,
        max_length=MAX_QUERY_CHARS,
        examples=['"cat" + "snow" - "indoor"'],
        description='Query in pixseek\'s syntax: "cat" + "snow" - "indoor", 2:"cat". '
        "Every term is text: paths are not read.",
    )
    like: Optional[int] = Field(None, ge=1, description="More like this: the id of an indexed photo.")
    k: int = Field(20, ge=1, le=MAX_K, description="Results per page.")
    offset: int = Field(0, ge=0, le=MAX_OFFSET, description="Results to skip (paging).")
    min_score: Optional[float] = Field(None, ge=-1, le=1, description="Drop results below this cosine score.")
    min_z: Optional[float] = Field(None, ge=-100, le=100, description="Adaptive cutoff (see pixseek search --help).")
    filters: SearchFilters = Field(default_factory=SearchFilters)
    sort: Literal["score", "date"] = "score"
    dedupe: bool = Field(False, description="Only the best match of each set of near-duplicate photos.")
    ensemble: bool = Field(True, description="Average text over prompt templates.")


class SearchBody(SearchParams):
    image: Optional[str] = Field(None, description="An example image, base64-encoded (or POST /api/search/upload).")


class Links(BaseModel):
    self: str
    thumbnail: str
    file: str


class Photo(BaseModel):
    id: int
    name: str
    path: str
    folder: str
    width: Optional[int]
    height: Optional[int]
    taken_at: Optional[str]
    camera_make: Optional[str]
    camera_model: Optional[str]
    lat: Optional[float]
    lon: Optional[float]
    size: int
    links: Links


class Hit(Photo):
    rank: int
    score: float


class SearchResponse(BaseModel):
    results: list[Hit]
    offset: int
    k: int
    next_offset: Optional[int] = Field(None, description="Offset of the next page; null on the last one.")


class EmbedBody(Strict):
    text: Optional[str] = Field(None, max_length=MAX_QUERY_CHARS, description="Plain text (no query syntax).")
    image: Optional[str] = Field(None, description="An image, base64-encoded (or POST /api/embed/upload).")
    ensemble: bool = Field(True, description="Average text over prompt templates.")

    @model_validator(mode="after")
    def _one_input(self) -> EmbedBody:
        if (self.text is None) == (self.image is None):
            raise ValueError("give exactly one of text and image")
        return self


class Embedding(BaseModel):
    vector: list[float] = Field(description="L2-normalised: cosine similarity is the dot product.")
    dim: int
    model: Optional[str]
    kind: Literal["text", "image"]


class ApiError(BaseModel):
    error: str
    hint: Optional[str]
