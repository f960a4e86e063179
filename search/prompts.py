"""Prompt ensembling (CLIP paper, section 3.1.4): embed a text through several templates and average.

CLIP learnt from captions, so "a photo of a dog" sits closer to dog photos than the bare word
"dog" does, and averaging a few phrasings cancels the quirks of any single one. The bare text is
one of the templates, so queries that are already sentences lose nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from indexer.model import Encoder

# Article-free, so they read well around a bare noun ("snow"), a plural ("dogs") or a phrase
# that brings its own article ("a dog on a beach").
TEMPLATES: tuple[str, ...] = (
    "{}",
    "a photo of {}",
    "a picture of {}",
    "an image of {}",
    "a close-up photo of {}",
    "a cropped photo of {}",
    "a good photo of {}",
    "a bright photo of {}",
)

# Texts per forward pass of the text tower: bounds memory when tagging with many labels.
BATCH = 256


def prompts(text: str) -> list[str]:
    """The phrasings of `text` whose embeddings are averaged."""
    return [template.format(text) for template in TEMPLATES]


def embed_texts(encoder: Encoder, texts: list[str], ensemble: bool = True) -> np.ndarray:
    """(len(texts), dim) L2-normalised embeddings, each the mean over its prompts when `ensemble`."""
    per_text = len(TEMPLATES) if ensemble else 1
    expanded = [p for t in texts for p in prompts(t)] if ensemble else list(texts)
    vecs = np.concatenate([encoder.encode_texts(expanded[i : i + BATCH]) for i in range(0, len(expanded), BATCH)])
    mean = vecs.reshape(len(texts), per_text, -1).mean(axis=1)
    return mean / np.linalg.norm(mean, axis=1, keepdims=True)
