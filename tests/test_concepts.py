"""Concepts taught from a few examples, on the demo model's embeddings of a generated gallery."""

from __future__ import annotations

import random

import numpy as np
import pytest
from PIL import Image

from indexer.errors import PixseekError
from pixseek_data.shapes import COLOURS, UNNAMED_COLOURS, generate_gallery, plain_queries
from search.concepts import MIN_EXAMPLES, Concept, teach
from search.prompts import embed_texts

WARM = ("red", "orange", "yellow")
K = 20


@pytest.fixture(scope="module")
def gallery(tmp_path_factory, demo_encoder):
    """72 shapes (3 per colour x shape), their demo-model vectors, and which are warm-coloured."""
    shapes = generate_gallery(tmp_path_factory.mktemp("concept-gallery"), per_class=3, seed=7)
    vectors = demo_encoder.encode_images([Image.open(s.path).convert("RGB") for s in shapes])
    warm = np.array([s.colour in WARM for s in shapes])
    return shapes, vectors, warm


def examples(warm: np.ndarray, n_yes: int, n_no: int, seed: int) -> tuple[list[int], list[int]]:
    rng = random.Random(seed)
    return (rng.sample(list(np.flatnonzero(warm)), n_yes), rng.sample(list(np.flatnonzero(~warm)), n_no))


def precision_at_k(scores: np.ndarray, relevant: np.ndarray) -> float:
    return float(relevant[np.argsort(-scores, kind="stable")[:K]].mean())


def text_queries() -> list[str]:
    """Every single text query a fair user might try for "warm colours" in the shapes world."""
    return plain_queries() + [
        "a warm coloured shape",
        "a warm colour",
        "a red, orange or yellow shape",
        "red or orange or yellow",
    ]


@pytest.fixture(scope="module")
def pink_gallery(tmp_path_factory, demo_encoder, gallery):
    """The gallery and 32 pink shapes (8 per shape): a colour the demo model was never taught a word
    for. Returns (vectors, which are pink)."""
    _, vectors, _ = gallery
    folder = tmp_path_factory.mktemp("pink-shapes")
    pink = generate_gallery(folder, per_class=8, seed=1, colours=tuple(UNNAMED_COLOURS))
    pink_vectors = demo_encoder.encode_images([Image.open(s.path).convert("RGB") for s in pink])
    return np.vstack([vectors, pink_vectors]), np.arange(len(vectors) + len(pink)) >= len(vectors)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_warm_colours_from_5_yes_and_5_no_reach_precision_at_20_and_match_the_best_text_query(
    gallery, demo_encoder, seed
):
    shapes, vectors, warm = gallery
    yes, no = examples(warm, 5, 5, seed)
    concept = teach(vectors[yes], vectors[no], name="warm colours", yes_ids=yes, no_ids=no)
    rest = np.array([i for i in range(len(shapes)) if i not in yes + no])
    concept_p = precision_at_k(concept.score(vectors[rest]), warm[rest])
    queries = embed_texts(demo_encoder, text_queries())
    best_text = max(precision_at_k(vectors[rest] @ q, warm[rest]) for q in queries)
    assert concept_p >= 0.9
    # The demo model's text side names its own world perfectly ("an orange shape" ranks every
    # warm shape first), so the probe can at best draw level at precision@20 here.
    assert concept_p >= best_text
    assert concept.loo_accuracy is not None and concept.loo_accuracy >= 0.7
    assert concept.warnings == []


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pink_a_colour_with_no_word_is_taught_from_5_yes_and_5_no_and_beats_every_text_query(
    pink_gallery, demo_encoder, seed
):
    vectors, pink = pink_gallery
    yes, no = examples(pink, 5, 5, seed)
    concept = teach(vectors[yes], vectors[no], name="pink", yes_ids=yes, no_ids=no)
    rest = np.array([i for i in range(len(pink)) if i not in yes + no])
    concept_p = precision_at_k(concept.score(vectors[rest]), pink[rest])
    # Its own name and the named colours nearest to it, as a person would try them.
    queries = plain_queries([*COLOURS, *UNNAMED_COLOURS]) + ["pink", "a light red shape", "a red or purple shape"]
    best_text = max(precision_at_k(vectors[rest] @ q, pink[rest]) for q in embed_texts(demo_encoder, queries))
    assert concept_p >= 0.9
    assert concept_p > best_text


def test_the_probe_separates_the_examples_it_was_taught_with_probabilities(gallery):
    _, vectors, warm = gallery
    yes, no = examples(warm, 5, 5, seed=3)
    concept = teach(vectors[yes], vectors[no])
    assert (concept.score(vectors[yes]) > 0.5).all() and (concept.score(vectors[no]) < 0.5).all()
    assert ((0 < concept.score(vectors)) & (concept.score(vectors) < 1)).all()


def test_scores_do_not_depend_on_the_length_of_the_stored_vectors(gallery):
    _, vectors, warm = gallery
    yes, no = examples(warm, 5, 5, seed=4)
    concept = teach(vectors[yes] * 3.0, vectors[no])
    np.testing.assert_allclose(
        concept.score(vectors * 0.25), teach(vectors[yes], vectors[no]).score(vectors), rtol=1e-5
    )


def test_too_few_examples_warn_per_side_and_leave_one_out_needs_two_per_side(gallery):
    _, vectors, warm = gallery
    yes, no = examples(warm, 3, 1, seed=5)
    concept = teach(vectors[yes], vectors[no], yes_ids=yes, no_ids=no)
    assert len(concept.warnings) == 2
    assert "only 3 yes examples" in concept.warnings[0] and "only 1 no example:" in concept.warnings[1]
    assert all(str(MIN_EXAMPLES) in w for w in concept.warnings)
    assert concept.loo_accuracy is None


def test_more_examples_are_checked_by_leave_one_out(gallery):
    _, vectors, warm = gallery
    yes, no = examples(warm, 8, 8, seed=6)
    concept = teach(vectors[yes], vectors[no], yes_ids=yes, no_ids=no)
    assert concept.loo_accuracy >= 0.8 and concept.warnings == []


def test_a_concept_survives_json_with_its_examples(gallery):
    _, vectors, warm = gallery
    yes, no = examples(warm, 5, 5, seed=7)
    concept = teach(vectors[yes], vectors[no], name="warm", yes_ids=yes, no_ids=no, model="demo-fingerprint")
    again = Concept.from_json(concept.to_json())
    assert (again.name, again.yes_ids, again.no_ids, again.model) == ("warm", yes, no, "demo-fingerprint")
    assert again.loo_accuracy == concept.loo_accuracy
    np.testing.assert_allclose(again.score(vectors), concept.score(vectors), rtol=1e-6)


def test_examples_missing_on_one_side_or_on_both_sides_are_refused(gallery):
    _, vectors, _ = gallery
    with pytest.raises(PixseekError, match="both kinds"):
        teach(vectors[:3], vectors[:0])
    with pytest.raises(PixseekError, match="both yes and no: 2"):
        teach(vectors[:2], vectors[2:4], yes_ids=[1, 2], no_ids=[2, 3])
    with pytest.raises(PixseekError, match="unknown format"):
        Concept.from_json('{"format": 99}')
