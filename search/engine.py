"""The library as a reader sees it: `Library.open(path).search(...)`.

query -> terms -> embed -> ANN candidates -> exact re-rank -> filter -> results. The CLI and the
page call only this module (and `Result`), never the indexer's internals.
"""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from indexer import ann
from indexer.catalog import INDEXED, Catalog, ImageRow, path_from_db
from indexer.errors import PixseekError
from indexer.library import DIM, MODEL_FINGERPRINT, LibraryPaths, check_same_model, recorded_spec
from indexer.model import Encoder, ModelSpec, load_encoder
from indexer.vectors import VectorStore
from search import rank
from search.filters import Filters
from search.prompts import embed_texts
from search.query import Term, parse_query
from search.tags import check_tag

# With filters, scoring every allowed image exactly is cheaper than over-fetching ANN candidates
# until this many images (about 100 MB of float16 vectors at 512 dimensions).
EXACT_FILTER_MAX = 100_000
# IVF-PQ only shortlists; the exact re-rank looks at this many candidates per wanted result.
RERANK_FACTOR = 10
# --dedupe scores this many candidates per wanted result, so collapsing copies still leaves k.
DEDUPE_FACTOR = 4


@dataclass
class Result:
    id: int
    path: str
    score: float
    folder: str
    width: int | None
    height: int | None
    taken_at: str | None
    camera_make: str | None
    camera_model: str | None
    lat: float | None
    lon: float | None
    size: int
    hash: str | None = None  # content hash: keys caches (thumbnails) that must change with the file

    @classmethod
    def from_row(cls, row: ImageRow, score: float) -> Result:
        return cls(row.id, row.path, float(score), row.folder, row.width, row.height, row.taken_at,
                   row.camera_make, row.camera_model, row.lat, row.lon, row.size, row.hash)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["score"] = round(self.score, 4)
        return out


class Library:
    def __init__(self, paths: LibraryPaths, model: ModelSpec | None = None, device: str | None = None) -> None:
        if not paths.exists():
            raise PixseekError(f"no library at {paths.root}", "run `pixseek index FOLDER` first (or pass --library DIR)")
        self.paths = paths
        self.catalog = Catalog(paths.catalog)
        self.settings = self.catalog.settings()
        self._model_override = model
        if model is not None:
            check_same_model(self.settings, model, paths.root)
        self.device = device
        self._encoder: Encoder | None = None
        self._ann = None
        self._ann_mtime = 0.0
        self.vectors = VectorStore(paths.vectors, int(self.settings.get(DIM) or 0))

    @classmethod
    def open(cls, path: str | Path | None = None, *, model: ModelSpec | None = None, device: str | None = None) -> Library:
        return cls(LibraryPaths.at(path), model, device)

    def close(self) -> None:
        self.catalog.close()

    def _follow_index_runs(self) -> None:
        """Take in what index runs changed since this Library was opened (the UI keeps one open).

        A first index of an empty library, or `--rebuild` with another model, changes the model:
        queries must then be embedded by the new one, into vectors of the new size.
        """
        settings = self.catalog.settings()
        if settings == self.settings:
            return
        if settings.get(MODEL_FINGERPRINT) != self.settings.get(MODEL_FINGERPRINT):
            self._encoder = None
        self.settings = settings
        self.vectors = VectorStore(self.paths.vectors, int(settings.get(DIM) or 0))

    # model and index, loaded on first use --------------------------------------------------
    @property
    def model_spec(self) -> ModelSpec | None:
        return self._model_override or recorded_spec(self.settings)

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            spec = self.model_spec
            if spec is None:
                raise PixseekError("this library has no images yet", "run `pixseek index FOLDER` first")
            if spec.local_dir is not None and not spec.local_dir.is_dir():
                raise PixseekError(f"the library's model folder {spec.local_dir} is gone",
                                   "pass --model local-dir:/new/place/of/that/folder")
            # Weights replaced under the same name would embed queries into another space.
            check_same_model(self.settings, spec, self.paths.root)
            self._encoder = load_encoder(spec, self.device)
        return self._encoder

    def _index(self):
        """The ANN index, re-read when an index run has replaced the file since."""
        try:
            mtime = self.paths.ann.stat().st_mtime
        except FileNotFoundError:
            self._ann = None
            return None
        if self._ann is None or mtime != self._ann_mtime:
            self._ann, self._ann_mtime = ann.load(self.paths.ann), mtime
        return self._ann

    # embedding queries ----------------------------------------------------------------------
    def embed_text(self, text: str, ensemble: bool = True) -> np.ndarray:
        """The text's embedding, averaged over prompt templates when `ensemble` (search/prompts.py)."""
        return embed_texts(self.encoder, [text], ensemble)[0]

    def embed_image(self, image: str | Path | bytes) -> np.ndarray:
        from indexer.decode import DecodeError, decode_image

        source = io.BytesIO(image) if isinstance(image, bytes) else image
        try:
            decoded = decode_image(source, target_size=self.encoder.preprocess)
        except DecodeError as exc:
            name = "the uploaded image" if isinstance(image, bytes) else f"query image {image}"
            raise PixseekError(f"cannot read {name}: {exc.reason}",
                               "use a JPEG, PNG, WebP, GIF, BMP, TIFF or HEIC file") from None
        return self.encoder.encode_images([decoded.image])[0]

    def stored_vector(self, image_id: int) -> np.ndarray:
        row = self.catalog.get(image_id)
        if row is None or row.status != INDEXED:
            raise PixseekError(f"image {image_id} is not in the library", "pick an id from search results or info")
        return self.vectors.get(np.array([image_id]))[0]

    def find_id(self, path: str | Path) -> int | None:
        row = self.catalog.by_path(str(Path(path).expanduser().resolve()))
        return row.id if row is not None and row.status == INDEXED else None

    def embed_terms(self, terms: list[Term], extra: list[np.ndarray] = (), ensemble: bool = True) -> np.ndarray:
        """Weighted sum of the terms' embeddings (plus `extra` vectors), normalised.

        Negative weights push results away from a term, as in rclip's query arithmetic.
        """
        if not terms and not len(extra):
            raise PixseekError("nothing to search for", "give a text query, --image FILE, or --like FILE")
        if not len(extra) and all(t.weight <= 0 for t in terms):
            raise PixseekError("the query has only negative terms", 'add something to look for, e.g. "beach" - "people"')
        total = np.zeros(self._dim(), dtype=np.float32)
        for vec in extra:
            total += vec
        for term in terms:
            if term.kind == "text":
                vec = self.embed_text(term.value, ensemble)
            elif term.kind == "image":
                vec = self.embed_image(term.value)
            else:
                vec = self.stored_vector(int(term.value))
            total += term.weight * vec
        norm = float(np.linalg.norm(total))
        if norm < 1e-6:
            raise PixseekError("the query's terms cancel each other out", "change the weights or drop a term")
        return total / norm

    def _dim(self) -> int:
        dim = int(self.settings.get(DIM) or 0)
        if dim == 0:
            raise PixseekError("this library has no images yet", "run `pixseek index FOLDER` first")
        return dim

    # searching ------------------------------------------------------------------------------
    def search(
        self,
        query: str | None = None,
        *,
        image: str | Path | bytes | None = None,
        like: int | str | Path | None = None,
        terms: list[Term] | None = None,
        k: int = 20,
        min_score: float | None = None,
        min_z: float | None = None,
        filters: Filters | None = None,
        allow_paths: bool = True,
        ensemble: bool = True,
        dedupe: bool = False,
        sort: str = "score",
    ) -> list[Result]:
        """Ranked results for a text query, an example image, an indexed image (`like`), or a mix.

        allow_paths=False reads every query term as text (see `parse_query`). ensemble=False
        embeds text terms as typed, without prompt templates. For min_z, dedupe and sort see
        `search_vector`.
        """
        if k < 1:
            raise PixseekError(f"-k must be at least 1, not {k}")
        self._follow_index_runs()
        all_terms = list(terms or [])
        if query:
            all_terms += parse_query(query, allow_paths)
        if image is not None and not isinstance(image, bytes):
            all_terms.append(Term("image", str(image)))
        exclude: set[int] = set()
        if like is not None:
            like_id = like if isinstance(like, int) else self.find_id(like)
            if like_id is None:
                raise PixseekError(f"{like} is not in the library", "index its folder first, or search with --image")
            all_terms.append(Term("id", str(like_id)))
            exclude.add(like_id)
        self.check_not_empty()
        uploads = [self.embed_image(image)] if isinstance(image, bytes) else []
        vec = self.embed_terms(all_terms, uploads, ensemble)
        return self.search_vector(vec, k=k, min_score=min_score, min_z=min_z, filters=filters, exclude=exclude,
                                  dedupe=dedupe, sort=sort)

    def check_not_empty(self) -> None:
        if self.catalog.counts().get(INDEXED, 0) == 0:
            raise PixseekError(f"the library at {self.paths.root} has no indexed images",
                               "run `pixseek index FOLDER` first")

    def search_vector(self, vec: np.ndarray, *, k: int = 20, min_score: float | None = None,
                      min_z: float | None = None, filters: Filters | None = None, exclude: set[int] | None = None,
                      dedupe: bool = False, sort: str = "score") -> list[Result]:
        """The k best matches of a query vector scoring at least min_score (cosine) and at least
        min_z robust standard deviations above the query's median score over the library
        (`rank.z_floor`). dedupe keeps only the best of each set of near-duplicates; sort is
        "score" or "date" (`rank.sort_results`)."""
        rank.check_sort(sort)
        self._follow_index_runs()
        filters = filters or Filters()
        if filters.tag is not None:
            check_tag(self.catalog, filters.tag.strip())
        exclude = exclude or set()
        floor = max(-np.inf if min_score is None else min_score,
                    -np.inf if min_z is None else self._z_floor(vec, min_z))
        want = k * (DEDUPE_FACTOR if dedupe else 1) + len(exclude)
        if filters.active():
            ids, scores = self._exact_filtered(vec, filters, want)
        else:
            ids, scores = self._ann_then_exact(vec, want)
        rows = self._rows(ids)
        ranked = [(rows[i], score) for i, score in zip(ids.tolist(), scores.tolist())
                  if i in rows and i not in exclude and score >= floor]
        if dedupe:
            ranked = rank.collapse_near_duplicates(ranked)
        return rank.sort_results([Result.from_row(row, score) for row, score in ranked[:k]], sort)

    def _z_floor(self, vec: np.ndarray, min_z: float) -> float:
        """`rank.z_floor` over this query's scores on an evenly spread sample of the library."""
        stride = max(1, self.catalog.counts().get(INDEXED, 0) // rank.Z_SAMPLE)
        sample = self._ids("id % ? = 0", [stride])
        return rank.z_floor(self.vectors.get(sample) @ vec, min_z)

    def _rows(self, ids: np.ndarray) -> dict[int, ImageRow]:
        if len(ids) == 0:
            return {}
        marks = ",".join("?" * len(ids))
        return {r.id: r for r in self.catalog.rows(f"status = '{INDEXED}' AND id IN ({marks})", ids.tolist())}

    def _exact(self, vec: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact cosine scores of `ids`, best k first (vectors are read in bounded chunks)."""
        best_ids, best_scores = np.empty(0, np.int64), np.empty(0, np.float32)
        for start in range(0, len(ids), 65_536):
            chunk = ids[start : start + 65_536]
            scores = self.vectors.get(chunk) @ vec
            best_ids = np.concatenate([best_ids, chunk])
            best_scores = np.concatenate([best_scores, scores])
            if len(best_ids) > k:
                top = np.argpartition(-best_scores, k - 1)[:k]
                best_ids, best_scores = best_ids[top], best_scores[top]
        order = np.argsort(-best_scores, kind="stable")
        return best_ids[order], best_scores[order]

    def _ids(self, where: str, params: list[Any]) -> np.ndarray:
        sql = f"SELECT id FROM images WHERE status = ? {'AND ' + where if where else ''}"
        return np.array([r[0] for r in self.catalog.db.execute(sql, [INDEXED, *params])], dtype=np.int64)

    def _exact_filtered(self, vec: np.ndarray, filters: Filters, k: int) -> tuple[np.ndarray, np.ndarray]:
        where, params = filters.sql()
        allowed = self._ids(where, params)
        if len(allowed) <= EXACT_FILTER_MAX:
            return self._exact(vec, allowed, k)
        ids, scores = self._ann_then_exact(vec, k * RERANK_FACTOR * 10)
        keep = np.isin(ids, allowed)
        return ids[keep][:k], scores[keep][:k]

    def _ann_then_exact(self, vec: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        index = self._index()
        # Images indexed after the ANN file was written (a run in progress) are scored exactly;
        # without the file (deleted, or a run stopped before writing it) all of them are.
        fresh = self._ids("in_ann = 0" if index is not None else "", [])
        candidates = fresh
        if index is not None:
            ann_ids, _ = ann.search(index, vec, max(k * RERANK_FACTOR, 100))
            candidates = np.union1d(ann_ids, fresh)
        return self._exact(vec, candidates, k)

    # about the library ----------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        self._follow_index_runs()
        counts = self.catalog.counts()
        index = self._index()
        reasons: dict[str, int] = {}
        for row in self.catalog.skipped():
            reasons[row.reason or "unknown"] = reasons.get(row.reason or "unknown", 0) + 1
        spec = self.model_spec
        return {
            "library": str(self.paths.root),
            "images": counts.get(INDEXED, 0),
            "skipped": counts.get("skipped", 0),
            "pending": counts.get("pending", 0),
            "skipped_reasons": reasons,
            "model": str(spec) if spec else None,
            "model_fingerprint": self.settings.get("model_fingerprint"),
            "embedding_dim": int(self.settings.get(DIM) or 0) or None,
            "index": ann.describe(index) if index is not None else {"type": "none", "vectors": 0},
            "last_indexed_at": self.settings.get("last_indexed_at"),
            "schema_version": int(self.settings.get("schema_version") or 0),
        }

    def skipped(self) -> list[ImageRow]:
        return self.catalog.skipped()

    def folders(self) -> list[str]:
        """Folders holding indexed images, sorted: the choices of a folder filter."""
        cur = self.catalog.db.execute("SELECT DISTINCT folder FROM images WHERE status = ? ORDER BY folder", [INDEXED])
        return [path_from_db(r[0]) for r in cur]

    def date_span(self) -> tuple[str | None, str | None]:
        """Earliest and latest date taken (YYYY-MM-DD) among indexed images; None when none has one."""
        first, last = self.catalog.db.execute(
            "SELECT MIN(taken_at), MAX(taken_at) FROM images WHERE status = ?", [INDEXED]).fetchone()
        return (first[:10] if first else None, last[:10] if last else None)
