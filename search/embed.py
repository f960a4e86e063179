"""Query embedding: a query's terms (text, image files, uploads, indexed images) into one vector."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from indexer.errors import PixseekError, UnreadableImage
from search.prompts import embed_texts
from search.query import Term

if TYPE_CHECKING:
    from indexer.model import Encoder


class QueryEmbedder:
    """Embeds with the library's model, loaded on first use by `load`; `stored` reads an indexed image's vector."""

    def __init__(self, load: Callable[[], Encoder], stored: Callable[[int], np.ndarray]) -> None:
        self._load = load
        self._stored = stored
        self._encoder: Encoder | None = None

    @property
    def encoder(self) -> Encoder:
        if self._encoder is None:
            self._encoder = self._load()
        return self._encoder

    @property
    def loaded(self) -> Encoder | None:
        """The model when it has been loaded, without loading it."""
        return self._encoder

    def forget_model(self) -> None:
        """The library's model changed (`index --rebuild`): load the new one when next needed."""
        self._encoder = None

    def text(self, text: str, ensemble: bool = True) -> np.ndarray:
        """The text's embedding, averaged over prompt templates when `ensemble` (search/prompts.py)."""
        return embed_texts(self.encoder, [text], ensemble)[0]

    def image(self, image: str | Path | bytes) -> np.ndarray:
        from indexer.decode import DecodeError, decode_image, to_model_input

        source = io.BytesIO(image) if isinstance(image, bytes) else image
        try:
            decoded = decode_image(source, target_size=self.encoder.preprocess)
        except DecodeError as exc:
            name = "the uploaded image" if isinstance(image, bytes) else f"query image {image}"
            raise UnreadableImage(
                f"cannot read {name}: {exc.reason}", "use a JPEG, PNG, WebP, GIF, BMP, TIFF or HEIC file"
            ) from None
        pixels = to_model_input(decoded.image, self.encoder.preprocess, (decoded.width, decoded.height))
        return self.encoder.encode_pixels(np.stack([pixels]))[0]

    def terms(self, terms: list[Term], extra: list[np.ndarray], dim: int, ensemble: bool = True) -> np.ndarray:
        """Weighted sum of the terms' embeddings (plus `extra` vectors), normalised.

        Negative weights push results away from a term, as in rclip's query arithmetic.
        """
        _, weights, vectors = self.parts(terms, extra, ensemble)
        return self.combine(weights, vectors, dim)

    @staticmethod
    def combine(weights: list[float], vectors: list[np.ndarray], dim: int) -> np.ndarray:
        """The query vector of terms already embedded (`parts`)."""
        total = np.zeros(dim, dtype=np.float32)
        for weight, vec in zip(weights, vectors):
            total += weight * vec
        norm = float(np.linalg.norm(total))
        if norm < 1e-6:
            raise PixseekError("the query's terms cancel each other out", "change the weights or drop a term")
        return total / norm

    def parts(
        self, terms: list[Term], extra: list[np.ndarray], ensemble: bool = True
    ) -> tuple[list[str], list[float], list[np.ndarray]]:
        """(label, weight, embedding) of each term of a query, `extra` vectors (uploads) first, as `terms` sums them."""
        if not terms and not extra:
            raise PixseekError("nothing to search for", "give a text query, --image FILE, or --like FILE")
        if not extra and all(t.weight <= 0 for t in terms):
            raise PixseekError(
                "the query has only negative terms", 'add something to look for, e.g. "beach" - "people"'
            )
        labels, weights, vectors = ["uploaded image"] * len(extra), [1.0] * len(extra), list(extra)
        for term in terms:
            if term.kind == "text":
                vec = self.text(term.value, ensemble)
            elif term.kind == "image":
                vec = self.image(term.value)
            else:
                vec = self._stored(int(term.value))
            labels.append(term.value if term.kind != "id" else f"#{term.value}")
            weights.append(term.weight)
            vectors.append(vec)
        return labels, weights, vectors
