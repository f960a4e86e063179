#!/usr/bin/env python3
"""Search quality on a generated shapes gallery with the project's small CLIP (data/demo-model).

    python3 benchmarks/search_quality.py [--per-class 10] [--seed 2024] [--json]

Ground truth is the generator's labels, so every figure is exact:
  - precision@10 of every colour x shape query ("a red circle"), and of every colour-only and
    shape-only query, with and without prompt ensembling, plus the query latency of each; and the
    mean average precision of the colour x shape queries over the whole ranking and their mean
    margin (weakest match's score minus strongest non-match's), which still move when
    precision@10 is already perfect;
  - zero-shot tagging accuracy: the share of images whose best tag among circle/square/triangle/
    star (and among the six colours) is their true shape (colour);
  - the adaptive cutoff (--min-z 2 and 3): results kept for matching queries and for nonsense ones.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from indexer.library import LibraryPaths
from indexer.model import ModelSpec
from indexer.runner import run_index
from pixseek_data.shapes import COLOURS, SHAPES, ShapeImage, caption, generate_gallery
from search import Library
from search.tags import tag_images

K = 10
MIN_Z = (2.0, 3.0)
NONSENSE = ("quantum tax accountant", "a symphony orchestra", "breakfast cereal")


def precision_at_k(lib: Library, truth: dict[str, ShapeImage], query: str, relevant, ensemble: bool) -> float:
    results = lib.search(query, k=K, ensemble=ensemble)
    return sum(relevant(truth[r.path]) for r in results) / K


def ranking(lib: Library, truth: dict[str, ShapeImage], query: str, relevant, ensemble: bool) -> tuple[float, float]:
    """(average precision, margin) of the query's full ranking."""
    results = lib.search(query, k=len(truth), ensemble=ensemble)
    hits = np.array([relevant(truth[r.path]) for r in results])
    scores = np.array([r.score for r in results])
    found = np.cumsum(hits)
    average = float(sum(found[i] / (i + 1) for i in np.flatnonzero(hits)) / found[-1])
    return average, float(scores[hits].min() - scores[~hits].max())


def measure_precision(lib: Library, truth: dict[str, ShapeImage], ensemble: bool) -> dict[str, float]:
    lib.search("warm-up", k=1, ensemble=ensemble)  # the first query loads the model
    start = time.perf_counter()
    full = [
        precision_at_k(lib, truth, caption(c, s), lambda t, c=c, s=s: (t.colour, t.shape) == (c, s), ensemble)
        for c in COLOURS
        for s in SHAPES
    ]
    seconds = (time.perf_counter() - start) / len(full)
    colour = [precision_at_k(lib, truth, c, lambda t, c=c: t.colour == c, ensemble) for c in COLOURS]
    shape = [precision_at_k(lib, truth, s, lambda t, s=s: t.shape == s, ensemble) for s in SHAPES]
    ranked = [
        ranking(lib, truth, caption(c, s), lambda t, c=c, s=s: (t.colour, t.shape) == (c, s), ensemble)
        for c in COLOURS
        for s in SHAPES
    ]
    return {
        "colour_x_shape": statistics.mean(full),
        "colour_only": statistics.mean(colour),
        "shape_only": statistics.mean(shape),
        "map_colour_x_shape": statistics.mean(a for a, _ in ranked),
        "margin_colour_x_shape": statistics.mean(m for _, m in ranked),
        "ms_per_query": seconds * 1000,
    }


def tagging_accuracy(lib: Library, gallery: list[ShapeImage], labels: list[str], field: str) -> dict[str, float]:
    tag_images(lib, labels)
    best = dict(
        lib.catalog.db.execute(
            "SELECT i.path, t.label FROM tags t JOIN images i ON i.id = t.image_id "
            "WHERE t.score = (SELECT MAX(score) FROM tags WHERE image_id = t.image_id)"
        ).fetchall()
    )
    right = sum(best.get(str(g.path.resolve())) == getattr(g, field) for g in gallery)
    return {"accuracy": right / len(gallery), "untagged": len(gallery) - len(best)}


def cutoff_counts(lib: Library, n: int, min_z: float) -> dict[str, float]:
    matching = [len(lib.search(caption(c, s), k=n, min_z=min_z)) for c in COLOURS for s in SHAPES]
    nonsense = [len(lib.search(q, k=n, min_z=min_z)) for q in NONSENSE]
    return {"min_z": min_z, "matching_mean": statistics.mean(matching), "nonsense_mean": statistics.mean(nonsense)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-class", type=int, default=10, help="images per colour x shape (24 classes)")
    parser.add_argument("--seed", type=int, default=2024)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        gallery = generate_gallery(Path(tmp) / "gallery", per_class=args.per_class, seed=args.seed)
        paths = LibraryPaths.at(Path(tmp) / "library")
        run_index(paths, [Path(tmp) / "gallery"], model=ModelSpec.parse("demo"), workers=0)
        truth = {str(g.path.resolve()): g for g in gallery}
        lib = Library.open(paths.root)
        try:
            figures = {
                "images": len(gallery),
                "text_queries": {
                    "ensemble": measure_precision(lib, truth, True),
                    "no_ensemble": measure_precision(lib, truth, False),
                },
                "tagging": {
                    "shape": tagging_accuracy(lib, gallery, list(SHAPES), "shape"),
                    "colour": tagging_accuracy(lib, gallery, list(COLOURS), "colour"),
                },
                "results_kept_by_min_z": [cutoff_counts(lib, len(gallery), z) for z in MIN_Z],
            }
        finally:
            lib.close()
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"shapes gallery: {figures['images']} images, demo model, seed {args.seed}")
    for name, row in figures["text_queries"].items():
        print(
            f"  {name:12} P@10 colour x shape {row['colour_x_shape']:.3f}  colour {row['colour_only']:.3f}  "
            f"shape {row['shape_only']:.3f}; colour x shape mAP {row['map_colour_x_shape']:.4f} "
            f"margin {row['margin_colour_x_shape']:+.4f}  ({row['ms_per_query']:.1f} ms/query)"
        )
    for name, row in figures["tagging"].items():
        print(f"  tagging by {name:6}: {row['accuracy']:.1%} right, {row['untagged']} untagged")
    for cut in figures["results_kept_by_min_z"]:
        print(
            f"  --min-z {cut['min_z']:g}: {cut['matching_mean']:.1f} results per colour x shape query "
            f"({args.per_class} relevant), {cut['nonsense_mean']:.1f} per nonsense query"
        )


if __name__ == "__main__":
    main()
