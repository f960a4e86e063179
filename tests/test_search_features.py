"""Search that finds what people mean (issue 6): prompt ensembles, query arithmetic, more like
this, the adaptive cutoff, sorting and metadata filters, non-ASCII queries. Semantics are checked
on the project's small CLIP against the shapes generator's labels."""

from __future__ import annotations

import json
import random
import statistics
from pathlib import Path

import numpy as np
import pytest
from PIL import ExifTags, Image
from PIL.TiffImagePlugin import IFDRational

from indexer.errors import PixseekError
from indexer.library import LibraryPaths
from indexer.runner import run_index
from pixseek_data.shapes import COLOURS, SHAPES, caption, draw_shape, generate_gallery
from search import Filters, Library
from search.prompts import TEMPLATES, prompts
from search.query import parse_query
from tests.conftest import TEST_WORKERS
from tests.harness import cli

NONSENSE = ("quantum tax accountant", "a symphony orchestra", "breakfast cereal")


@pytest.fixture(scope="module")
def labels(shapes_gallery) -> dict[str, tuple[str, str]]:
    _, images = shapes_gallery
    return {str(img.path.resolve()): (img.colour, img.shape) for img in images}


@pytest.fixture(scope="module")
def lib(shapes_library):
    library = Library.open(shapes_library.root)
    yield library
    library.close()


def _precision_at_10(lib: Library, labels, ensemble: bool) -> float:
    hits = []
    for colour in COLOURS:
        for shape in SHAPES:
            results = lib.search(caption(colour, shape), k=10, ensemble=ensemble)
            hits.append(sum(labels[r.path] == (colour, shape) for r in results) / 10)
    return statistics.mean(hits)


# prompt ensembling -------------------------------------------------------------------------------
def test_prompt_ensembling_is_not_worse_than_plain_text_queries(lib, labels):
    with_ensemble, plain = _precision_at_10(lib, labels, True), _precision_at_10(lib, labels, False)
    assert with_ensemble >= plain - 0.02, (with_ensemble, plain)
    assert with_ensemble >= 0.9


def test_ensembled_text_embedding_is_the_normalised_mean_of_its_prompts(lib):
    text = "a yellow star"
    assert prompts(text)[0] == text and len(prompts(text)) == len(TEMPLATES)
    each = lib.encoder.encode_texts(prompts(text))
    mean = each.mean(axis=0)
    np.testing.assert_allclose(lib.embed_text(text), mean / np.linalg.norm(mean), atol=1e-5)
    np.testing.assert_allclose(lib.embed_text(text, ensemble=False), each[0], atol=1e-5)


# query arithmetic -------------------------------------------------------------------------------
def test_subtracting_red_ranks_other_circles_above_red_circles(lib, labels):
    everything = len(labels)
    plain = [labels[r.path] for r in lib.search('"circle"', k=everything)]
    minus = [labels[r.path] for r in lib.search('"circle" - "red"', k=everything)]
    circles = sum(shape == "circle" for _, shape in plain)
    # Without the minus term red circles are among the top circles; with it they fall below all others.
    assert ("red", "circle") in plain[:circles]
    circle_ranks = [(colour == "red", i) for i, (colour, shape) in enumerate(minus) if shape == "circle"]
    worst_other = max(i for red, i in circle_ranks if not red)
    best_red = min(i for red, i in circle_ranks if red)
    assert worst_other < best_red, minus
    assert all(shape == "circle" and colour != "red" for colour, shape in minus[:10])


def test_weights_shift_the_balance_between_terms(lib, labels):
    def reds_and_stars(query: str) -> tuple[int, int]:
        top = [labels[r.path] for r in lib.search(query, k=20)]
        return sum(c == "red" for c, _ in top), sum(s == "star" for _, s in top)

    red_heavy, star_heavy = reds_and_stars('3:"red" + "star"'), reds_and_stars('"red" + 3:"star"')
    assert red_heavy[0] > star_heavy[0] and star_heavy[1] > red_heavy[1], (red_heavy, star_heavy)


def test_image_path_in_a_query_mixes_with_text(lib, labels, tmp_path):
    example = tmp_path / "red-square.png"
    draw_shape("red", "square", random.Random(5)).save(example)
    results = lib.search(f'{example} - "red" + "blue"', k=5)
    assert [labels[r.path] for r in results] == [("blue", "square")] * 5


def test_not_option_is_the_same_as_a_minus_term(shapes_library):
    common = ["--library", str(shapes_library.root), "--json", "-k", "8"]
    by_option = cli("search", "circle", "--not", "red", "--not", "blue", *common)
    by_syntax = cli("search", '"circle" - "red" - "blue"', *common)
    assert json.loads(by_option.stdout) == json.loads(by_syntax.stdout)
    assert json.loads(by_option.stdout) != json.loads(cli("search", "circle", *common).stdout)


@pytest.mark.parametrize(
    ("query", "words"),
    [
        ('"cat" + "snow', "unbalanced quotes"),
        ('"cat" + ', "empty term"),
        ("cat + + dog", "empty term"),
        ('2:"" + dog', "empty term"),
        ('"cat" "dog"', "stray quote"),
        ('"cat" + 3:', "empty term"),
    ],
)
def test_malformed_queries_raise_a_clear_error(query, words):
    with pytest.raises(PixseekError, match=words):
        parse_query(query)


def test_negative_only_queries_are_refused(shapes_library):
    refused = cli("search", "--not", "red", "--library", str(shapes_library.root), code=1)
    assert refused.output == (
        'error: the query has only negative terms: add something to look for, e.g. "beach" - "people"\n'
    )


# more like this ----------------------------------------------------------------------------------
def test_more_like_this_uses_the_stored_vector_and_leaves_the_image_out(tmp_path, demo_spec):
    gallery = generate_gallery(tmp_path / "images", per_class=3, seed=31)
    paths = LibraryPaths.at(tmp_path / "library")
    run_index(paths, [tmp_path / "images"], model=demo_spec, workers=TEST_WORKERS)
    query = next(g for g in gallery if (g.colour, g.shape) == ("green", "triangle"))
    query.path.write_bytes(b"not an image any more")  # decoding it now would fail
    truth = {str(g.path.resolve()): (g.colour, g.shape) for g in gallery}
    lib = Library.open(paths.root)
    by_path = lib.search(like=query.path, k=2)
    by_id = lib.search(like=lib.find_id(query.path), k=2)
    assert [r.path for r in by_path] == [r.path for r in by_id]
    assert str(query.path.resolve()) not in {r.path for r in by_path}
    assert [truth[r.path] for r in by_path] == [("green", "triangle")] * 2


# adaptive cutoff ---------------------------------------------------------------------------------
def test_z_cutoff_keeps_fewer_results_for_nonsense_than_for_a_matching_query(lib, labels):
    everything = len(labels)
    matching = lib.search("a red circle", k=everything, min_z=2)
    assert len(matching) >= 5
    assert all(labels[r.path][0] == "red" or labels[r.path][1] == "circle" for r in matching)
    for query in NONSENSE:
        assert len(lib.search(query, k=everything, min_z=2)) < len(matching), query


def test_z_cutoff_is_a_floor_at_median_plus_z_robust_deviations_of_the_librarys_scores(lib):
    vec = lib.embed_text("a blue square")
    ids = np.array(lib.catalog.indexed_ids())
    scores = lib.vectors.get(ids) @ vec
    median = np.median(scores)
    floor = median + 1 * 1.4826 * np.median(np.abs(scores - median))
    results = lib.search("a blue square", k=len(ids), min_z=1)
    assert len(results) == int((scores >= floor - 1e-6).sum()) > 0
    assert min(r.score for r in results) >= floor - 1e-6


# sorting and filters -----------------------------------------------------------------------------
# (colour, shape, date taken, make, model, GPS (lat, lon))
PHOTOS = [
    ("red", "circle", "2019:03:01 10:00:00", "Canon", "EOS 5D", (52.5, 13.4)),
    ("red", "square", "2021:07:15 18:30:00", "NIKON CORPORATION", "D750", None),
    ("blue", "circle", "2020:01:10 08:00:00", "Canon", "EOS R", (48.85, 2.35)),
    ("green", "star", None, None, None, None),
    ("yellow", "triangle", "2018:12:24 20:00:00", "Apple", "iPhone 12", (40.7, -74.0)),
    ("purple", "circle", "2022:02:02 02:02:02", "NIKON CORPORATION", "Z6", None),
]


def _rational(value: float) -> tuple[IFDRational, IFDRational, IFDRational]:
    return IFDRational(int(abs(value) * 10_000), 10_000), IFDRational(0, 1), IFDRational(0, 1)


def _save_with_exif(path: Path, colour: str, shape: str, taken, make, model, gps, seed: int) -> None:
    exif = Image.Exif()
    if make:
        exif[0x010F], exif[0x0110] = make, model
    if taken:
        exif.get_ifd(ExifTags.IFD.Exif)[0x9003] = taken
    if gps:
        lat, lon = gps
        exif.get_ifd(ExifTags.IFD.GPSInfo).update(
            {1: "N" if lat >= 0 else "S", 2: _rational(lat), 3: "E" if lon >= 0 else "W", 4: _rational(lon)}
        )
    draw_shape(colour, shape, random.Random(seed)).save(path, "JPEG", quality=92, exif=exif)


@pytest.fixture(scope="module")
def photos(tmp_path_factory, demo_spec):
    root = tmp_path_factory.mktemp("exif")
    (root / "images" / "trip").mkdir(parents=True)
    files = []
    for i, (colour, shape, taken, make, model, gps) in enumerate(PHOTOS):
        folder = root / "images" / ("trip" if i % 2 else "")
        path = (folder / f"{colour}-{shape}.jpg").resolve()
        _save_with_exif(path, colour, shape, taken, make, model, gps, seed=i)
        files.append(path)
    paths = LibraryPaths.at(root / "library")
    run_index(paths, [root / "images"], model=demo_spec, workers=TEST_WORKERS)
    library = Library.open(paths.root)
    yield library, files, root / "images"
    library.close()


def _expected(files: list[Path], keep) -> set[str]:
    return {str(f) for f, photo in zip(files, PHOTOS) if keep(*photo)}


def test_sort_by_date_puts_the_newest_first_and_undated_last(photos):
    lib, files, _ = photos
    results = lib.search("a circle", k=len(files), sort="date")
    dated = sorted((p[2], str(f)) for f, p in zip(files, PHOTOS) if p[2])
    assert [r.path for r in results] == [f for _, f in reversed(dated)] + sorted(_expected(files, lambda *p: not p[2]))
    by_score = lib.search("a circle", k=len(files))
    assert [r.score for r in by_score] == sorted((r.score for r in by_score), reverse=True)
    with pytest.raises(PixseekError, match="unknown sort"):
        lib.search("a circle", sort="size")


@pytest.mark.parametrize(
    ("filters", "keep"),
    [
        (Filters(camera="canon"), lambda c, s, t, make, m, g: make == "Canon"),
        (Filters(camera="nikon corporation z6"), lambda c, s, t, make, m, g: m == "Z6"),
        (Filters(has_gps=True), lambda c, s, t, make, m, g: g is not None),
        (Filters(has_gps=False), lambda c, s, t, make, m, g: g is None),
        (
            Filters(date_from="2019-03-01", date_to="2021-07-15"),
            lambda c, s, t, make, m, g: t is not None and "2019:03:01" <= t[:10] <= "2021:07:15",
        ),
        (Filters(date_to="2020-01-09"), lambda c, s, t, make, m, g: t is not None and t[:10] <= "2020:01:09"),
    ],
)
def test_metadata_filters_select_the_right_photos(photos, filters, keep):
    lib, files, _ = photos
    results = lib.search("a shape", k=len(files), filters=filters)
    assert {r.path for r in results} == _expected(files, keep)


def test_folder_filter_and_gps_flag_on_the_command_line(photos):
    lib, files, images = photos
    common = ["--library", str(lib.paths.root), "--json", "-k", "10"]
    found = cli("search", "a shape", "--folder", str(images / "trip"), "--no-gps", *common)
    in_trip = {str(f) for i, f in enumerate(files) if i % 2}
    assert {r["path"] for r in json.loads(found.stdout)} == in_trip & _expected(files, lambda *p: p[5] is None)
    found = cli("search", "a shape", "--sort", "date", *common)
    dates = [r["taken_at"] for r in json.loads(found.stdout) if r["taken_at"]]
    assert dates == sorted(dates, reverse=True) and len(dates) == sum(p[2] is not None for p in PHOTOS)


# multilingual text -------------------------------------------------------------------------------
def test_non_ascii_queries_pass_through_the_parser_and_the_tokenizer(lib):
    query = '"café crème" + 2:"猫と雪" - "ñandú"'
    terms = parse_query(query)
    assert [(t.value, t.weight) for t in terms] == [("café crème", 1.0), ("猫と雪", 2.0), ("ñandú", -1.0)]
    tokens = lib.encoder.tokenizer(["猫と雪", "ñandú"])
    assert tokens.shape[0] == 2 and (tokens != 0).sum() > 4
    vec = lib.embed_query(query)
    assert np.isfinite(vec).all() and abs(np.linalg.norm(vec) - 1) < 1e-5
    assert len(lib.search(query, k=3)) == 3


def test_encoder_uses_the_tokenizer_and_context_length_of_the_models_config(lib, demo_spec):
    import open_clip

    config = json.loads((demo_spec.local_dir / "open_clip_config.json").read_text())
    expected = open_clip.get_tokenizer(demo_spec.name)
    assert type(lib.encoder.tokenizer) is type(expected)
    assert lib.encoder.tokenizer.context_length == config["model_cfg"]["text_cfg"]["context_length"]
    assert lib.encoder.tokenizer(["a long query " * 40]).shape[1] == lib.encoder.tokenizer.context_length
