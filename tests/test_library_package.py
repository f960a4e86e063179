"""The library package's promises: the image table is declared once (ImageRow), every write takes
the one write lock, and the search API's types are made from the same declarations."""

from __future__ import annotations

import sqlite3
from dataclasses import fields

import pytest

from indexer.library import write_lock
from indexer.library.catalog import Catalog
from indexer.library.rows import API_FIELDS, ImageRow
from indexer.library.schema import SCHEMA_VERSION
from search import Library, PixseekError, Result, SearchRequest
from search.tags import tag_images


def test_a_new_catalog_has_exactly_image_rows_columns(tmp_path):
    Catalog(tmp_path / "catalog.db", create=True).close()
    conn = sqlite3.connect(tmp_path / "catalog.db")
    try:
        columns = {row[1] for row in conn.execute("PRAGMA table_info(images)")}
        version = conn.execute("SELECT value FROM settings WHERE key = 'schema_version'").fetchone()[0]
    finally:
        conn.close()
    assert columns == {f.name for f in fields(ImageRow)}
    assert int(version) == SCHEMA_VERSION


def test_a_result_is_the_rows_public_columns_and_the_score():
    row = ImageRow(
        id=7,
        path="/p/a.jpg",
        folder="/p",
        width=3,
        height=2,
        size=99,
        hash="h",
        phash="f0",
        status="indexed",
        mtime_ns=5,
    )
    out = Result.from_row(row, 0.123456).as_dict()
    assert out == {**{name: getattr(row, name) for name in API_FIELDS}, "score": 0.1235}
    assert "phash" not in out and "status" not in out


def test_tagging_waits_its_turn_behind_the_write_lock(shapes_library):
    with Library.open(shapes_library.root) as lib, write_lock(shapes_library):
        with pytest.raises(PixseekError, match="is already updating"):
            tag_images(lib, ["circle", "square"])


def test_a_request_and_its_fields_by_name_search_alike(shapes_library):
    with Library.open(shapes_library.root) as lib:
        by_request = lib.search(SearchRequest(text="a red circle", k=5, dedupe=True))
        assert [r.as_dict() for r in by_request] == [r.as_dict() for r in lib.search("a red circle", k=5, dedupe=True)]
        assert lib.get(by_request[0].id).path == by_request[0].path
        with pytest.raises(PixseekError, match="image 0 is not in the library"):
            lib.get(0)


@pytest.mark.parametrize(
    ("fields_", "words"),
    [
        ({"text": "a cat", "k": 0}, "-k must be at least 1"),
        ({"text": "a cat", "sort": "size"}, "unknown sort 'size'"),
        ({}, "nothing to search for"),
    ],
)
def test_a_bad_request_is_refused_when_made(fields_, words):
    with pytest.raises(PixseekError, match=words):
        SearchRequest(**fields_)
