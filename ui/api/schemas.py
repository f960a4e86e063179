"""Request and response bodies of the HTTP API, with the bounds every request is held to."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, model_validator

from search.concepts import MAX_NAME_CHARS
from search.keywords import RRF_K

MAX_K = 200  # results per page
MAX_OFFSET = 1000  # how deep paging goes: a search ranks offset + k results
MAX_QUERY_CHARS = 1000  # CLIP reads 77 tokens; this leaves room for weights and operators
MAX_TERMS = 16
MAX_FILTER_CHARS = 1000
MAX_EXAMPLES = 1000  # photos given to teach a concept at once


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
    words: Optional[str] = Field(
        None,
        max_length=MAX_QUERY_CHARS,
        examples=['total "42.50"'],
        description='Words or "quoted phrases" each result\'s text must hold (the text read in it by '
        "`pixseek ocr`, its file and folder names, its tags), ranked by how well they match and fused with "
        'the query\'s ranking; the same as text:"..." in the query, or `pixseek search --text`.',
    )
    concept: Optional[str] = Field(
        None,
        max_length=MAX_NAME_CHARS,
        description="A taught concept (POST /api/concepts): with nothing else to search for, results are "
        "ranked by its probability; otherwise it keeps the photos at min_prob or above.",
    )
    min_prob: float = Field(0.5, ge=0, le=1, description="With a concept and a query: the probability a photo needs.")
    explain: bool = Field(False, description="Give each result its explanation: why it matched.")


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


class TermPart(BaseModel):
    term: str = Field(description="The query term as written: a text, or an image (#id for more like this).")
    weight: float
    similarity: float = Field(description="Cosine of the term's embedding with the photo.")
    contribution: float = Field(description="The term's part of semantic_score: the parts add up to it.")


class Explanation(BaseModel):
    score: float = Field(description="The result's score.")
    terms: list[TermPart]
    semantic_score: Optional[float] = Field(
        description="The cosine of the query with the photo: the terms' contributions add up to it "
        "(null: nothing was embedded)."
    )
    fusion: dict[str, float] = Field(
        description=f"With words: each ranking's part 1 / ({RRF_K} + rank) of the fused score; they add up to score."
    )
    matched_words: list[str]
    tags: list[str]
    concepts: dict[str, float] = Field(description="Concepts that apply (probability >= 0.5, or the one asked for).")


class Hit(Photo):
    rank: int
    score: float
    matched_words: Optional[list[str]] = Field(
        None, description="With words: the spans of the photo's text they matched, as written there."
    )
    explanation: Optional[Explanation] = Field(None, description="With explain: why it matched.")


class SearchResponse(BaseModel):
    results: list[Hit]
    offset: int
    k: int
    next_offset: Optional[int] = Field(None, description="Offset of the next page; null on the last one.")
    note: Optional[str] = Field(
        None, description="While an index run is going: how far it is (results cover the photos embedded so far)."
    )


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


# A photo as teaching names it: its id, or its path as results give it.
PhotoRef = Union[Annotated[int, Field(ge=1, le=2**62)], Annotated[str, Field(min_length=1, max_length=4096)]]


class TeachBody(Strict):
    name: str = Field(min_length=1, max_length=MAX_NAME_CHARS, description="The concept's name.")
    yes: list[PhotoRef] = Field(
        max_length=MAX_EXAMPLES,
        description="Photos that show it: ids, or paths as search results give them (compared with the "
        "catalog's, never opened).",
    )
    no: list[PhotoRef] = Field(max_length=MAX_EXAMPLES, description="Photos that don't, the same way.")


class ConceptSummary(BaseModel):
    name: str
    yes: list[int] = Field(description="Ids of the photos that show it.")
    no: list[int] = Field(description="Ids of the photos that don't.")
    held_out_accuracy: Optional[float] = Field(
        description="Leave-one-out accuracy over the examples (null: too few to tell)."
    )
    warnings: list[str] = Field(description="Too few examples on a side, and what to do.")


class ConceptDetail(ConceptSummary):
    yes_paths: list[str]
    no_paths: list[str]
