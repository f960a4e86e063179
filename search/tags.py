"""Zero-shot auto-tags: each image's most likely labels from a user's list, from its stored vector.

Like CLIP's zero-shot classifier: every label is embedded (prompt-ensembled), an image's cosine
scores against all labels go through a softmax at the model's own logit scale, and the labels
with the highest probabilities become its tags. No image is decoded again.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from indexer.errors import PixseekError
from indexer.library import storage_errors, write_lock
from indexer.library.catalog import Catalog
from indexer.regular_file import open_regular
from search.prompts import embed_texts

if TYPE_CHECKING:
    from search.library import Library

DEFAULT_TOP = 3
# A label needs this probability to become a tag: with softmax over the user's labels, a photo
# that fits none of them spreads its mass thinly and gets no tag rather than a wrong one.
DEFAULT_MIN_PROB = 0.2
_CHUNK = 65_536  # images scored per block of vectors
MAX_LABELS_BYTES = 1 << 20


def read_labels(path: Path) -> list[str]:
    """One label per line; blank lines and lines starting with # are ignored, repeats dropped."""
    try:
        with open_regular(path) as fh:  # /dev/zero or a FIFO would be read without end
            data = fh.read(MAX_LABELS_BYTES + 1)
        if len(data) > MAX_LABELS_BYTES:
            raise PixseekError(
                f"labels file {path} is over {MAX_LABELS_BYTES >> 20} MB",
                "a labels file holds one short label per line",
            )
        lines = data.decode("utf-8").splitlines()
    except OSError as exc:
        raise PixseekError(f"cannot read labels file {path} ({exc.strerror or exc})", "check the path") from None
    except UnicodeDecodeError:
        raise PixseekError(f"labels file {path} is not UTF-8 text", "save it as plain UTF-8 text") from None
    labels = list(dict.fromkeys(s.strip() for s in lines if s.strip() and not s.strip().startswith("#")))
    if len(labels) < 2:
        raise PixseekError(
            f"{path} has {len(labels)} label(s); tagging compares labels with each other",
            "write at least two labels, one per line",
        )
    return labels


def tag_images(
    library: Library,
    labels: list[str],
    *,
    top: int = DEFAULT_TOP,
    min_prob: float = DEFAULT_MIN_PROB,
    ensemble: bool = True,
) -> dict[str, int]:
    """Replace every indexed image's tags; returns how many images got each label."""
    if top < 1:
        raise PixseekError(f"--top must be at least 1, not {top}")
    if not 0 <= min_prob <= 1:
        raise PixseekError(f"--min-prob must be between 0 and 1, not {min_prob}")
    library.check_not_empty()
    # A writer like `pixseek index`, under the same lock from the first read, so no run changes
    # the images between scoring them and storing their tags; the same one-line storage errors.
    with storage_errors(library.paths.root), write_lock(library.paths):
        ids = np.array(library.catalog.indexed_ids(), dtype=np.int64)
        encoder = library.encoder
        label_vecs = embed_texts(encoder, labels, ensemble)
        scale = encoder.logit_scale
        top = min(top, len(labels))
        rows = []
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            logits = scale * (library.vectors.get(chunk) @ label_vecs.T)
            probs = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs /= probs.sum(axis=1, keepdims=True)
            best = np.argsort(-probs, axis=1)[:, :top]
            for image_id, picks, p in zip(chunk.tolist(), best, probs):
                rows += [(image_id, labels[j], round(float(p[j]), 4)) for j in picks if p[j] >= min_prob]
        library.catalog.replace_tags(rows, labels)
    counts = Counter(label for _, label, _ in rows)
    return {label: counts[label] for label in labels}


def stored_labels(library: Library) -> list[str]:
    """The labels of the last tagging run, so `pixseek tag` can re-run without --labels."""
    return library.catalog.settings().labels


def check_tag(catalog: Catalog, label: str) -> None:
    """A --tag nothing carries is a typo or a missing tagging run: say so rather than show nothing."""
    if catalog.has_tag(label):
        return
    known = catalog.settings().labels
    if not known:
        raise PixseekError(
            f"no image is tagged '{label}': this library has no tags yet", "run `pixseek tag --labels labels.txt` first"
        )
    raise PixseekError(f"no image is tagged '{label}'", f"tags in this library: {', '.join(known[:20])}")
