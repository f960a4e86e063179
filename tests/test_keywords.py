"""The keyword index (FTS5 trigram) over an in-memory SQLite database, the text-term syntax,
reciprocal rank fusion, and hybrid ranking against the demo model's semantic scores."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from indexer.errors import PixseekError
from indexer.library.keywords import (
    KeywordDoc,
    delete_documents,
    document,
    ensure_table,
    keyword_search,
    rebuild,
    split_name,
    upsert,
)
from search.keywords import matched_words, parse_text_terms, rrf, text_terms

DOCS = {
    1: KeywordDoc(ocr="TOTAL 42.50\nThank you", name="IMG 2041"),
    2: KeywordDoc(ocr="北京欢迎你", name="trip", folders="2019 China"),
    3: KeywordDoc(ocr="Coffeeshop OPEN", tags="cafe morning"),
    4: KeywordDoc(ocr="出口 EXIT", exif="Station exit, Shanghai"),
    5: KeywordDoc(name="beach sunset", folders="Holidays 2023 Japan"),
}


@pytest.fixture
def conn():
    db = sqlite3.connect(":memory:")
    assert ensure_table(db) is True
    assert ensure_table(db) is False  # already there: nothing to rebuild
    upsert(db, DOCS.items())
    return db


def ids(conn, *terms: str) -> list[int]:
    return [i for i, _ in keyword_search(conn, list(terms))]


def test_english_words_match_case_insensitively_in_any_column(conn):
    assert ids(conn, "total") == [1]
    assert ids(conn, "CAFE") == [3]
    assert ids(conn, "shanghai") == [4]
    assert ids(conn, "japan") == [5]


def test_a_word_glued_to_another_by_ocr_is_still_found(conn):
    assert ids(conn, "shop") == [3]


def test_chinese_words_of_two_and_of_three_or_more_characters_match(conn):
    assert ids(conn, "北京") == [2]  # two characters: no trigram, found in the short table
    assert ids(conn, "欢迎你") == [2]
    assert ids(conn, "出口") == [4]


def test_every_term_must_occur(conn):
    assert ids(conn, "exit") == [4]
    assert ids(conn, "exit", "出口") == [4]
    assert ids(conn, "exit", "北京") == []
    assert ids(conn, "total", "42") == [1]


def test_terms_under_three_characters_match_whole_words_and_numbers(conn):
    upsert(conn, [(6, KeywordDoc(ocr="TOTAL42 TV-set", name="IMG 2041"))])
    assert sorted(ids(conn, "42")) == [1, 6]  # "TOTAL42": OCR glued the number to the word
    assert ids(conn, "20") == []  # not a number of its own in "2041"
    assert ids(conn, "tv") == [6] and ids(conn, "OP") == []  # not the start of "OPEN"
    assert ids(conn, "京欢") == [2]  # CJK characters in sequence, wherever they stand


def test_a_phrase_matches_only_as_written(conn):
    assert ids(conn, "total 42.50") == [1]
    assert ids(conn, "42.50 total") == []


def test_quotes_and_like_wildcards_in_terms_are_literal(conn):
    assert ids(conn, '"total') == []
    assert ids(conn, '"') == []
    assert ids(conn, "%") == []
    assert ids(conn, "_") == []


def test_bm25_ranks_the_document_where_the_word_weighs_more_first():
    db = sqlite3.connect(":memory:")
    ensure_table(db)
    upsert(
        db,
        [
            (1, KeywordDoc(ocr="menu of the day: soup, bread, salad, coffee, cake and more")),
            (2, KeywordDoc(ocr="coffee coffee")),
        ],
    )
    assert ids(db, "coffee") == [2, 1]


def test_upsert_replaces_and_delete_removes_and_rebuild_restores(conn):
    # A rename gives the same id a new document: the old name no longer finds it, in either table.
    upsert(conn, [(5, KeywordDoc(name="renamed picture 上海"))])
    assert ids(conn, "sunset") == [] and ids(conn, "2023") == []
    assert ids(conn, "renamed") == [5] and ids(conn, "上海") == [5]
    delete_documents(conn, [1, 5])
    assert ids(conn, "total") == [] and ids(conn, "42") == [] and ids(conn, "上海") == []
    rebuild(conn, DOCS.items())
    assert ids(conn, "total") == [1] and ids(conn, "42") == [1] and ids(conn, "sunset") == [5]
    assert ids(conn, "renamed") == []


def test_a_missing_table_is_recreated_empty_for_a_rebuild(conn):
    conn.execute("DROP TABLE keywords_short")
    assert ensure_table(conn) is True
    assert ids(conn, "total") == [] and ids(conn, "北京") == []


def test_document_splits_file_and_folder_names_into_words(tmp_path):
    root = tmp_path / "Photos"
    doc = document(
        root / "2023 Japan_trip" / "day-2" / "IMG_2041-beachSunset.jpg",
        root=root,
        ocr_text=" TOTAL 42.50 ",
        tags=["beach", "sea"],
        description="Sunset at Kamakura",
        keywords=["holiday"],
    )
    assert doc.name == "IMG 2041 beach Sunset"
    assert doc.folders == "2023 Japan trip day 2"
    assert doc.ocr == "TOTAL 42.50" and doc.tags == "beach sea"
    assert doc.exif == "Sunset at Kamakura\nholiday"
    # Without the root, only the nearest folders: those further up are shared by every photo.
    assert document(Path("/home/ann/Pictures/2023/Japan/x.jpg")).folders == "Pictures 2023 Japan"
    assert split_name("holidayPhotos2023") == "holiday Photos 2023"


def test_text_terms_in_a_query_are_split_from_the_semantic_part():
    assert parse_text_terms('a receipt text:"total 42.50"') == ("a receipt", ["total 42.50"])
    assert parse_text_terms('"beach" + text:sunset') == ('"beach"', ["sunset"])
    assert parse_text_terms('text:exit text:出口 "a station"') == ('"a station"', ["exit", "出口"])
    assert parse_text_terms("context:foo bar") == ("context:foo bar", [])
    assert parse_text_terms("text:menu") == ("", ["menu"])
    assert text_terms('total "thank you"  出口') == ["total", "thank you", "出口"]
    with pytest.raises(PixseekError, match="cannot be subtracted"):
        parse_text_terms('"beach" - text:people')


def test_matched_words_gives_the_spans_as_written_in_the_text():
    text = "TOTAL 42.50\nThank  you\n北京欢迎你"
    assert matched_words(["total", "thank you", "北京", "missing"], text) == ["TOTAL", "Thank  you", "北京"]
    assert matched_words(["42.50 thank"], text) == []  # not across lines: nor does the index
    assert matched_words(["42", "20", "ta"], "TOTAL42 IMG 2041") == ["42"]  # short: whole numbers and words


def test_rrf_adds_reciprocal_ranks_and_keeps_semantic_order_on_ties():
    fused = dict(rrf([10, 20, 30], [30, 40], k=60))
    assert fused[30] == pytest.approx(1 / 63 + 1 / 61)
    assert fused[10] == pytest.approx(1 / 61)
    assert fused[40] == pytest.approx(1 / 62)
    assert [i for i, _ in rrf([10, 20, 30], [30, 40])] == [30, 10, 20, 40]  # 20 and 40 tie at 1/62
    assert [i for i, _ in rrf([1, 2], [2, 1])] == [1, 2]  # equal scores: semantic order
    assert [i for i, _ in rrf([1, 2], [2], keyword_weight=0.0)] == [1, 2]


def test_hybrid_ranks_first_the_one_photo_whose_text_holds_the_query_words(tmp_path, demo_encoder):
    """Semantic scores from the demo model over a shapes gallery; one photo (a blue square) also
    carries the words "garden party" in its keyword document. The query asks for red circles plus
    those words: the semantic side alone ranks red circles first, fusion puts that photo first."""
    from pixseek_data.shapes import generate_gallery
    from search.prompts import embed_texts

    shapes = generate_gallery(tmp_path, per_class=2, seed=5)
    vectors = demo_encoder.encode_images([Image.open(s.path).convert("RGB") for s in shapes])
    target = next(i for i, s in enumerate(shapes) if (s.colour, s.shape) == ("blue", "square"))
    db = sqlite3.connect(":memory:")
    ensure_table(db)
    upsert(
        db,
        [(i, document(s.path, ocr_text="garden party tonight" if i == target else "")) for i, s in enumerate(shapes)],
    )
    semantic_part, text = parse_text_terms('a red circle text:"garden party"')
    query = embed_texts(demo_encoder, [semantic_part])[0]
    semantic = [int(i) for i in np.argsort(-(vectors @ query), kind="stable")]
    assert shapes[semantic[0]].colour == "red" and semantic.index(target) > 0
    fused = rrf(semantic, [i for i, _ in keyword_search(db, text)])
    assert fused[0][0] == target
    assert matched_words(text, "garden party tonight") == ["garden party"]
