"""The library as a reader sees it: `Library.open(path).search("a red circle")`.

query (query.py) -> embed (embed.py) -> retrieve (retrieve.py) -> rank (rank.py). The CLI and
the page call only this facade and the types it returns, never the indexer's internals.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from indexer.errors import NotInLibrary, PixseekError
from indexer.library import LibraryPaths, index_file, lock, storage_errors, write_lock
from indexer.library.catalog import Catalog
from indexer.library.filters import Filters
from indexer.library.index_file import CachedIndex
from indexer.library.rows import INDEXED, PENDING, SKIPPED, ImageRow
from indexer.library.vectors import VectorStore
from search import ENV_PRECISION, ENV_RUNTIME, hybrid, rank, retrieve
from search.cache import LibraryCache
from search.concepts import Concept, load_concept
from search.dupes import DEFAULT_MAX_DISTANCE, DupeGroup, find_duplicates
from search.embed import QueryEmbedder
from search.explain import explain_results
from search.info import LibraryInfo
from search.keywords import matched_words, parse_text_terms
from search.query import Term, parse_query
from search.request import SearchRequest
from search.result import Result
from search.tags import check_tag

if TYPE_CHECKING:
    from indexer.model import Encoder, ModelSpec, Preprocess

_REQUEST_FIELDS = frozenset(f.name for f in fields(SearchRequest))


class Library:
    def __init__(
        self,
        paths: LibraryPaths,
        model: ModelSpec | None = None,
        device: str | None = None,
        runtime: str | None = None,
        precision: str | None = None,
        encoder: Encoder | None = None,
    ) -> None:
        try:
            if paths.root.is_file():
                raise PixseekError(f"{paths.root} is a file, not a library folder", "pass --library a folder")
            found = paths.exists()
        except PermissionError:
            raise PixseekError(
                f"no permission to read the library folder {paths.root}",
                "fix its permissions or choose another with --library",
            ) from None
        if not found:
            raise PixseekError(
                f"no library at {paths.root}", "run `pixseek index FOLDER` first (or pass --library DIR)"
            )
        self.paths = paths
        self.catalog = Catalog(paths.catalog)
        self.settings = self.catalog.settings()
        self._model_override = model
        if model is not None:
            self.settings.check_same_model(model, paths.root)
        self.device = device
        # torch, onnx or auto; auto follows the check the library's first index run recorded.
        self.runtime = runtime or os.environ.get(ENV_RUNTIME) or "torch"
        self.precision = precision or os.environ.get(ENV_PRECISION) or None
        self._shared_encoder = encoder
        self.vectors = VectorStore(paths.vectors, self.settings.dim)
        self._index = CachedIndex(paths.ann, self.settings.ann_record)
        self._cache = LibraryCache(self.catalog.state)
        self._followed = self.catalog.state()
        self._embedder = QueryEmbedder(self._load_encoder, self.stored_vector)

    @classmethod
    def open(
        cls,
        path: str | Path | None = None,
        *,
        model: ModelSpec | None = None,
        device: str | None = None,
        runtime: str | None = None,
        precision: str | None = None,
        encoder: Encoder | None = None,
    ) -> Library:
        """`runtime` (torch, onnx or auto) and `precision` default to $PIXSEEK_RUNTIME and
        $PIXSEEK_PRECISION, else torch. encoder: a model already loaded elsewhere, used while it is
        the library's model, so that several Libraries (one per thread: a Library is not
        thread-safe) hold one copy of it."""
        return cls(LibraryPaths.at(path), model, device, runtime, precision, encoder)

    def close(self) -> None:
        self.catalog.close()

    def __enter__(self) -> Library:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _follow_index_runs(self) -> None:
        """Take in what index runs changed since this Library was opened (the page keeps one open).

        A first index of an empty library, or `--rebuild` with another model, changes the model:
        queries must then be embedded by the new one, into vectors of the new size.
        """
        state = self.catalog.state()
        if state == self._followed:  # one cheap read per query instead of reading the settings
            return
        self._followed = state
        settings = self.catalog.settings()
        if settings == self.settings:
            return
        if settings.model_fingerprint != self.settings.model_fingerprint:
            self._embedder.forget_model()
        self.settings = settings
        self.vectors = VectorStore(self.paths.vectors, settings.dim)
        self._index.record = settings.ann_record

    # the model ------------------------------------------------------------------------------
    @property
    def model_spec(self) -> ModelSpec | None:
        return self._model_override or self.settings.model_spec()

    @property
    def encoder(self) -> Encoder:
        return self._embedder.encoder

    @property
    def preprocess(self) -> Preprocess:
        """How the model sees an image: its input size (what previews need not exceed), resize and crop."""
        from indexer.model import preprocess_for

        spec = self.model_spec
        return (preprocess_for(spec) if spec is not None else None) or self.encoder.preprocess

    def _load_encoder(self) -> Encoder:
        from indexer.model import load_encoder

        shared = self._shared_encoder
        if shared is not None and shared.fingerprint() == self.settings.model_fingerprint:
            return shared
        spec = self.model_spec
        if spec is None:
            raise PixseekError("this library has no images yet", "run `pixseek index FOLDER` first")
        if spec.folder is not None and not spec.folder.is_dir():
            raise PixseekError(
                f"the library's model folder {spec.folder} is gone",
                f"pass --model {spec.name.split(':')[0]}:/new/place/of/that/folder",
            )
        # Weights replaced under the same name would embed queries into another space.
        self.settings.check_same_model(spec, self.paths.root)
        return load_encoder(
            spec, self.device, runtime=self.runtime, precision=self.precision, recorded=self.settings.recorded_runtime()
        )

    def runtime_in_use(self) -> str | None:
        """Which runtime embeds queries and why (indexer/runtime.py's one line), once the model is loaded."""
        choice = getattr(self._embedder.loaded, "choice", None)
        return None if choice is None else choice.reason

    def embed_text(self, text: str, ensemble: bool = True) -> np.ndarray:
        """The text's embedding, averaged over prompt templates when `ensemble` (search/prompts.py)."""
        return self._embedder.text(text, ensemble)

    def embed_image(self, image: str | Path | bytes) -> np.ndarray:
        return self._embedder.image(image)

    def embed_query(self, text: str, *, allow_paths: bool = True, ensemble: bool = True) -> np.ndarray:
        """The unit vector a text query (in the syntax of search/query.py) searches for."""
        self._follow_index_runs()
        return self._embedder.terms(parse_query(text, allow_paths), [], self._dim(), ensemble)

    def stored_vector(self, image_id: int) -> np.ndarray:
        """The stored embedding of the indexed image `image_id`."""
        self.get(image_id)
        return self.vectors.get(np.array([image_id]))[0]

    # searching ------------------------------------------------------------------------------
    def search(self, request: SearchRequest | str | None = None, **fields: Any) -> list[Result]:
        """Ranked results for a SearchRequest, or for its fields by name: `search("a red circle", k=10)`,
        `search(image="q.jpg")`, `search(like=42)`. Fields given by name override the request's."""
        unknown = set(fields) - _REQUEST_FIELDS
        if unknown:
            raise TypeError(f"unknown search options: {', '.join(sorted(unknown))}")
        if isinstance(request, SearchRequest):
            request = replace(request, **fields)
        else:
            request = SearchRequest(**{"text": request, **fields})
        self._follow_index_runs()
        rest, query_words = parse_text_terms(request.text) if request.text else ("", [])
        words = [*request.text_terms, *query_words]
        terms = parse_query(rest, request.allow_paths) if rest else []
        if request.image is not None and not isinstance(request.image, bytes):
            terms.append(Term("image", str(request.image)))
        exclude: set[int] = set()
        if request.like is not None:
            like_id = request.like if isinstance(request.like, int) else self.find_id(request.like)
            if like_id is None:
                raise NotInLibrary(
                    f"{request.like} is not in the library", "index its folder first, or search with --image"
                )
            terms.append(Term("id", str(like_id)))
            exclude.add(like_id)
        self.check_not_empty()
        uploads = [self.embed_image(request.image)] if isinstance(request.image, bytes) else []
        concept = load_concept(self, request.concept) if request.concept is not None else None
        if not terms and not uploads and (words or concept is not None):
            if request.min_score is not None or request.min_z is not None:
                raise PixseekError(
                    "--min-score and --min-z apply to a query's embedding", "add a text or image query, or drop them"
                )
            return self._ranked(request, None, ([], [], []), words, concept, exclude)
        parts = self._embedder.parts(terms, uploads, request.ensemble)
        vec = self._embedder.combine(parts[1], parts[2], self._dim())
        if not words and concept is None and not request.explain:
            return self.search_vector(
                vec,
                k=request.k,
                min_score=request.min_score,
                min_z=request.min_z,
                filters=request.filters,
                exclude=exclude,
                dedupe=request.dedupe,
                sort=request.sort,
            )
        return self._ranked(request, vec, parts, words, concept, exclude)

    def _ranked(
        self,
        request: SearchRequest,
        vec: np.ndarray | None,
        parts: tuple[list, list, list],
        words: list[str],
        concept: Concept | None,
        exclude: set[int],
    ) -> list[Result]:
        """A search with keyword terms, a concept or an explanation (search/hybrid.py, search/explain.py)."""
        filters = self._resolved(request.filters)
        if filters.tag is not None:
            check_tag(self.catalog, filters.tag)
        floor = self._floor(vec, request.min_score, request.min_z) if vec is not None else -np.inf
        want = request.k * (rank.DEDUPE_FACTOR if request.dedupe else 1) + len(exclude)
        scored = hybrid.score(
            self.catalog, self.vectors, self._index, vec, want, filters, floor, words, concept, request.min_prob
        )
        results = rank.ranked(
            self.catalog.indexed_rows(scored.ids.tolist()),
            scored.ids,
            scored.scores,
            k=request.k,
            floor=-np.inf,
            exclude=exclude,
            dedupe=request.dedupe,
            sort=request.sort,
        )
        ids = [r.id for r in results]
        docs = self.catalog.keyword_documents(ids) if words else {}
        matched = {i: matched_words(words, docs[i].text) if i in docs else [] for i in ids}
        if not request.explain:
            return [replace(r, matched_words=matched[r.id]) if words else r for r in results]
        return explain_results(self, results, scored, parts, matched if words else None, concept)

    def search_vector(
        self,
        vec: np.ndarray,
        *,
        k: int = 20,
        min_score: float | None = None,
        min_z: float | None = None,
        filters: Filters | None = None,
        exclude: set[int] | None = None,
        dedupe: bool = False,
        sort: str = "score",
    ) -> list[Result]:
        """The k best matches of a query vector scoring at least min_score (cosine) and at least
        min_z robust standard deviations above the query's median score over the library
        (`rank.z_floor`). dedupe keeps only the best of each set of near-duplicates; sort is
        "score" or "date" (`rank.sort_results`)."""
        rank.check_sort(sort)
        self._follow_index_runs()
        filters = self._resolved(filters or Filters())
        if filters.tag is not None:
            check_tag(self.catalog, filters.tag)
        if filters.folder is not None and not self.catalog.any_filtered(Filters(folder=filters.folder)):
            raise PixseekError(
                f"no indexed photos in {filters.folder}",
                "index it first (pixseek index FOLDER), or pick a folder that holds indexed photos",
            )
        exclude = exclude or set()
        floor = self._floor(vec, min_score, min_z)
        want = k * (rank.DEDUPE_FACTOR if dedupe else 1) + len(exclude)
        ids, scores = retrieve.candidates(
            self.catalog, self.vectors, self._index, vec, want, filters, cache=self._cache
        )
        return rank.ranked(
            self.catalog.indexed_rows(ids.tolist()),
            ids,
            scores,
            k=k,
            floor=floor,
            exclude=exclude,
            dedupe=dedupe,
            sort=sort,
        )

    def _floor(self, vec: np.ndarray, min_score: float | None, min_z: float | None) -> float:
        return max(
            -np.inf if min_score is None else min_score,
            -np.inf if min_z is None else retrieve.z_floor(self.vectors, vec, self._z_sample(), min_z),
        )

    def _z_sample(self) -> np.ndarray:
        """Every n-th indexed id, about `rank.Z_SAMPLE` of them: what `min_z` measures a query against."""

        def sample() -> np.ndarray:
            stride = max(1, self.catalog.indexed_count() // rank.Z_SAMPLE)
            return np.array(self.catalog.sample_ids(stride), dtype=np.int64)

        return self._cache.get("z_sample", sample)

    def _resolved(self, filters: Filters) -> Filters:
        """`filters` with the library's cameras that `camera` names, so the catalog looks them up by index."""
        if filters.camera is None or filters.cameras is not None:
            return filters
        return replace(filters, cameras=tuple(pair for pair in self._cameras() if filters.camera_matches(*pair)))

    def in_progress(self) -> str | None:
        """With photos still to embed (an index run, a `--rebuild` too, going or stopped): how far it
        is, to show beside results, which cover only the photos embedded so far. None otherwise."""
        # Asked with every search: cached per catalog state, and counted only when rows are pending.
        if not self._cache.get("has pending", self.catalog.has_pending):
            return None
        counts = self._cache.get("counts", self.catalog.counts)
        pending, done = counts.get(PENDING, 0), counts.get(INDEXED, 0)
        if lock.held(self.paths):
            return f"an index run is going: {done:,} of {done + pending:,} photos embedded so far; results cover those"
        return (
            f"{pending:,} of {done + pending:,} photos are not embedded yet (an index run stopped early); "
            "results leave them out until `pixseek index` embeds them"
        )

    def damage(self) -> str | None:
        """One line on the damage searches have met so far, with what to do; None when there is none.

        A damaged index file is a cache gone bad: searches score exactly meanwhile and nothing is
        missed. Damaged vectors are left out of results until they are embedded again.
        """
        parts = []
        index_damage = self._index.damage
        if index_damage is not None and not self.catalog.ann_stale():  # stale: a run is replacing the file
            parts.append(f"{index_damage}, searching without it")
        if self.vectors.damaged:
            parts.append(f"{len(self.vectors.damaged)} damaged vectors left out of the results")
        if not parts:
            return None
        return f"library damaged: {'; '.join(parts)} (run `pixseek check --repair`)"

    def check_not_empty(self) -> None:
        if not self.catalog.has_indexed():
            if self.catalog.counts().get(PENDING) and lock.held(self.paths):
                raise PixseekError(
                    f"the library at {self.paths.root} is being indexed (or rebuilt)",
                    "search again once its first images are saved",
                )
            raise PixseekError(
                f"the library at {self.paths.root} has no indexed images", "run `pixseek index FOLDER` first"
            )

    def _dim(self) -> int:
        if self.settings.dim == 0:
            raise PixseekError("this library has no images yet", "run `pixseek index FOLDER` first")
        return self.settings.dim

    # about the library ----------------------------------------------------------------------
    def get(self, image_id: int) -> Result:
        """The indexed image `image_id` as a result (score 0: it answers no query)."""
        row = self.catalog.get(image_id)
        if row is None or row.status != INDEXED:
            raise NotInLibrary(f"image {image_id} is not in the library", "pick an id from search results or info")
        return Result.from_row(row, 0.0)

    def find_id(self, path: str | Path) -> int | None:
        """The id of the indexed image at `path`, or None."""
        row = self.catalog.by_path(str(Path(path).expanduser().resolve()))
        return row.id if row is not None and row.status == INDEXED else None

    @property
    def thumbs_dir(self) -> Path:
        return self.paths.thumbs

    def info(self) -> LibraryInfo:
        self._follow_index_runs()
        counts = self.catalog.counts()
        index = self._index.get()
        spec = self.model_spec
        read, with_text = self.catalog.ocr_counts()
        return LibraryInfo(
            library=str(self.paths.root),
            images=counts.get(INDEXED, 0),
            skipped=counts.get(SKIPPED, 0),
            pending=counts.get(PENDING, 0),
            skipped_reasons=dict(Counter(row.reason or "unknown" for row in self.catalog.skipped())),
            model=str(spec) if spec else None,
            model_fingerprint=self.settings.model_fingerprint,
            embedding_dim=self.settings.dim or None,
            index=index_file.describe(index) if index is not None else dict(index_file.NONE),
            last_indexed_at=self.settings.last_indexed_at,
            schema_version=self.settings.schema_version,
            text_read=read,
            with_text=with_text,
            ocr_on_index=bool(self.settings.ocr),
            concepts=tuple(self.catalog.concept_names()),
            runtime_check=asdict(check) if (check := self.settings.recorded_runtime()) is not None else None,
            damage=self._quick_damage(),
        )

    def _quick_damage(self) -> list[str]:
        """What `info` can tell without reading every vector (`pixseek check` does that)."""
        found = [self._index.damage] if self._index.damage is not None and not self.catalog.ann_stale() else []
        ids = self.catalog.indexed_ids()
        if ids and self.vectors.rows <= ids[-1]:
            found.append(f"{self.paths.vectors.name} holds {self.vectors.rows} rows, indexed ids reach {ids[-1]}")
        return found

    def skipped(self) -> list[ImageRow]:
        """Files that could not be indexed, by path; `reason` says why."""
        return self.catalog.skipped()

    # The choices of the page's filters: read once per committed state (search/cache.py).
    def folders(self) -> list[str]:
        """Folders holding indexed images, sorted: the choices of a folder filter."""
        return list(self._cache.get("folders", self.catalog.folders))

    def date_span(self) -> tuple[str | None, str | None]:
        """Earliest and latest date taken (YYYY-MM-DD) among indexed images; None when none has one."""
        first, last = self._cache.get("taken_span", self.catalog.taken_span)
        return (first[:10] if first else None, last[:10] if last else None)

    def cameras(self) -> list[str]:
        """The cameras of indexed images ("make model"), sorted: the choices of a camera filter."""
        return [" ".join(part for part in pair if part) for pair in self._cameras()]

    def _cameras(self) -> list[tuple[str | None, str | None]]:
        return self._cache.get("cameras", self.catalog.cameras)

    # the page: its start page and the review of duplicates -----------------------------------
    def latest(self, k: int | None = None, filters: Filters | None = None) -> list[Result]:
        """Indexed images passing `filters`, latest taken first (undated last), at most k; score 0."""
        return [Result.from_row(row, 0.0) for row in self.catalog.latest(k, self._resolved(filters or Filters()))]

    def folder_counts(self) -> list[tuple[str, int]]:
        """(folder, indexed images directly in it), largest first."""
        return list(self._cache.get("folder_counts", self.catalog.folder_counts))

    def tag_counts(self) -> list[tuple[str, int]]:
        """(auto-tag, indexed images carrying it), most common first."""
        return list(self._cache.get("tag_counts", self.catalog.tag_counts))

    def tags_of(self, ids: list[int]) -> dict[int, list[str]]:
        """Each image's auto-tags, most likely first."""
        return self.catalog.tags_of(ids)

    def dupes(self, max_distance: int = DEFAULT_MAX_DISTANCE, min_cosine: float | None = None) -> list[DupeGroup]:
        """Groups of copies of one picture, exact groups first (see `search.dupes.find_duplicates`)."""
        return find_duplicates(self.catalog, self.vectors, max_distance, min_cosine)

    def kept(self) -> dict[int, list[int]]:
        """Marks from reviewing duplicates: the id of the copy to keep -> the ids of its other copies."""
        return self.catalog.settings().keep_marks

    def mark_keep(self, keep: int, group: list[int]) -> None:
        """Mark `keep` as the copy to keep of the duplicates `group`. A catalog write, under the write
        lock: refused (PixseekError) while an index run is going. No file is moved or deleted."""
        with storage_errors(self.paths.root), write_lock(self.paths):
            self.catalog.mark_keep(keep, group)

    def version(self) -> str:
        """Changes whenever an index or tag run commits: what a long-lived reader keys its caches on.

        The catalog's data_version changes when another connection commits (a tag run leaves
        last_indexed_at alone); last_indexed_at also tells a library replaced by another apart.
        """
        return f"{self.catalog.settings().last_indexed_at}|{self.catalog.data_version()}"
