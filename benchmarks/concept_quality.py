#!/usr/bin/env python3
"""A concept taught from 5 yes and 5 no examples against the best single text query, demo model.

    python3 benchmarks/concept_quality.py [--per-class 3] [--draws 10] [--smoke]

A generated shapes gallery (data/shapes.py, PER_CLASS pictures per colour x shape) embedded with
the demo model, and two concepts: "warm colours" (red, orange, yellow) in it, which the demo
model's text side names perfectly, and "pink" (a colour it was never taught a word for,
UNNAMED_COLOURS) over the gallery and 32 pink shapes. Each draw picks 5 relevant and 5 other
pictures as examples and scores the rest. Printed per regularisation strength: the
concept's precision@20 and average precision over the rest (mean and worst over the draws) and
its leave-one-out accuracy; then the same for every single text query a fair user might try
(each colour, each shape, and phrasings of "warm colours"), and which query is best.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
from pathlib import Path

import _common  # noqa: F401  (puts the repository on sys.path)
import numpy as np
from _common import machine

WARM = ("red", "orange", "yellow")
K = 20
STRENGTHS = (0.001, 0.01, 0.1, 1.0, 10.0)


def precision_at_k(scores: np.ndarray, relevant: np.ndarray) -> float:
    return float(relevant[np.argsort(-scores, kind="stable")[:K]].mean())


def average_precision(scores: np.ndarray, relevant: np.ndarray) -> float:
    hits = relevant[np.argsort(-scores, kind="stable")]
    return float((np.cumsum(hits) / np.arange(1, len(hits) + 1))[hits].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=3)
    parser.add_argument("--draws", type=int, default=10)
    parser.add_argument("--smoke", action="store_true", help="2 draws")
    args = parser.parse_args()
    draws = 2 if args.smoke else args.draws

    from PIL import Image

    from indexer.model import ModelSpec, load_encoder
    from pixseek_data.shapes import COLOURS, UNNAMED_COLOURS, generate_gallery, plain_queries
    from search.concepts import REGULARISATION, teach
    from search.prompts import embed_texts

    encoder = load_encoder(ModelSpec.parse("demo"), "cpu")
    with tempfile.TemporaryDirectory(prefix="pixseek-concepts-") as tmp:
        shapes = generate_gallery(Path(tmp) / "named", per_class=args.per_class, seed=7)
        pink = generate_gallery(Path(tmp) / "pink", per_class=8, seed=1, colours=tuple(UNNAMED_COLOURS))
        vectors = encoder.encode_images([Image.open(s.path).convert("RGB") for s in shapes + pink])
    named = np.arange(len(vectors)) < len(shapes)
    warm = np.array([s.colour in WARM for s in shapes] + [False] * len(pink))
    cases = [
        (
            "warm colours",
            named,
            warm,
            plain_queries()
            + ["a warm coloured shape", "a warm colour", "a red, orange or yellow shape", "red or orange or yellow"],
        ),
        (
            "pink, a colour the model has no word for",
            np.ones(len(vectors), bool),
            ~named,
            plain_queries([*COLOURS, *UNNAMED_COLOURS]) + ["pink", "a light red shape", "a red or purple shape"],
        ),
    ]
    print(f"machine: {machine()}; {len(shapes)} named-colour pictures and {len(pink)} pink ones; {draws} draws")
    for name, gallery, relevant, queries in cases:
        print(f"\n== {name}: {int(gallery.sum())} pictures, {int(relevant[gallery].sum())} relevant ==")
        query_vectors = embed_texts(encoder, queries)
        report(vectors[gallery], relevant[gallery], query_vectors, queries, draws, teach, REGULARISATION)


def report(vectors, relevant, query_vectors, queries, draws, teach, default_strength) -> None:
    splits = []
    for draw in range(draws):
        rng = random.Random(draw)
        yes = rng.sample(list(np.flatnonzero(relevant)), 5)
        no = rng.sample(list(np.flatnonzero(~relevant)), 5)
        splits.append((yes, no, np.array([i for i in range(len(vectors)) if i not in yes + no])))

    def row(label: str, p20: list[float], ap: list[float], extra: str = "") -> None:
        print(
            f"{label:<40} precision@20 mean {statistics.mean(p20):.3f} worst {min(p20):.3f}   "
            f"AP mean {statistics.mean(ap):.3f} worst {min(ap):.3f}{extra}"
        )

    for strength in STRENGTHS:
        p20, ap, loo = [], [], []
        for yes, no, rest in splits:
            concept = teach(vectors[yes], vectors[no], regularisation=strength)
            scores = concept.score(vectors[rest])
            p20.append(precision_at_k(scores, relevant[rest]))
            ap.append(average_precision(scores, relevant[rest]))
            loo.append(concept.loo_accuracy)
        default = " (default)" if strength == default_strength else ""
        row(f"concept, regularisation {strength:g}{default}", p20, ap, f"   leave-one-out {statistics.mean(loo):.3f}")
    best = None
    for query, qv in zip(queries, query_vectors):
        p20 = [precision_at_k(vectors[rest] @ qv, relevant[rest]) for _, _, rest in splits]
        ap = [average_precision(vectors[rest] @ qv, relevant[rest]) for _, _, rest in splits]
        row(f'text "{query}"', p20, ap)
        if best is None or (statistics.mean(p20), statistics.mean(ap)) > best[1:]:
            best = (query, statistics.mean(p20), statistics.mean(ap))
    print(f'best text query: "{best[0]}" (precision@20 {best[1]:.3f}, AP {best[2]:.3f})')


if __name__ == "__main__":
    main()
