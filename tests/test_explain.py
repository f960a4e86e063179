"""Per-term contributions add up to the score the search engine gives a result."""

from __future__ import annotations

import numpy as np
import pytest

from search.explain import contributions, explain
from search.library import Library
from search.query import parse_query

QUERY = '"a red circle" + 0.5:"a square" - "a blue shape"'


@pytest.fixture(scope="module")
def library(shapes_library):
    lib = Library.open(shapes_library.root)
    yield lib
    lib.close()


def test_contributions_add_up_to_the_engines_score_for_every_result(library):
    terms = parse_query(QUERY, allow_paths=False)
    embeddings = np.stack([library.embed_text(t.value) for t in terms])
    results = library.search(QUERY, k=10, allow_paths=False)
    assert len(results) == 10
    for result in results:
        why = explain(
            [t.value for t in terms],
            [t.weight for t in terms],
            embeddings,
            library.stored_vector(result.id),
            matched_words=["TOTAL"],
            tags=["red"],
            concepts={"warm": 0.93},
        )
        assert sum(t.contribution for t in why.terms) == pytest.approx(why.score, abs=1e-12)
        assert why.score == pytest.approx(result.score, abs=1e-4)
        assert [t.term for t in why.terms] == ["a red circle", "a square", "a blue shape"]
        assert why.as_dict()["matched_words"] == ["TOTAL"] and why.concepts == {"warm": 0.93}


def test_a_subtracted_term_the_photo_resembles_counts_against_it(library):
    terms = parse_query(QUERY, allow_paths=False)
    embeddings = np.stack([library.embed_text(t.value) for t in terms])
    blue = library.search("a blue circle", k=1)[0]
    why = explain([t.value for t in terms], [t.weight for t in terms], embeddings, library.stored_vector(blue.id))
    blue_part = why.terms[2]
    assert blue_part.weight == -1.0 and blue_part.similarity > 0 and blue_part.contribution < 0
    assert blue_part.contribution == min(t.contribution for t in why.terms)


def test_contributions_of_many_photos_at_once_match_one_by_one(library):
    terms = parse_query(QUERY, allow_paths=False)
    embeddings = np.stack([library.embed_text(t.value) for t in terms])
    ids = [r.id for r in library.search(QUERY, k=5, allow_paths=False)]
    vectors = np.stack([library.stored_vector(i) for i in ids])
    table = contributions([t.value for t in terms], [t.weight for t in terms], embeddings, vectors)
    for row, vector in zip(table, vectors):
        one = explain([t.value for t in terms], [t.weight for t in terms], embeddings, vector)
        np.testing.assert_allclose(row, [t.contribution for t in one.terms])


def test_terms_that_cancel_out_have_no_contributions(library):
    e = library.embed_text("a red circle")
    with pytest.raises(ValueError, match="cancel"):
        contributions(["a", "b"], [1.0, -1.0], np.stack([e, e]), e)
