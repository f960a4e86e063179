"""Keyword terms, concepts and explanations end to end through the `pixseek` CLI (in-process), and
the keyword index following every write path: index, move, delete, tag, rebuild, a lost table."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from pixseek_data.shapes import generate_gallery
from tests.harness import assert_one_line_error, cli

WARM = ("red", "orange", "yellow")


@pytest.fixture
def shapes(tmp_path):
    """48 shapes (2 per colour x shape) indexed with the demo model; (env, folder, labels by name)."""
    images = generate_gallery(tmp_path / "images", per_class=2, seed=17)
    env = {"PIXSEEK_LIBRARY": str(tmp_path / "library")}
    cli("index", str(tmp_path / "images"), "--model", "demo", "--workers", "0", env=env)
    return env, tmp_path / "images", {img.path.name: (img.colour, img.shape) for img in images}


def found(env, *args: str) -> list[dict]:
    return json.loads(cli("search", *args, "--json", "-k", "100", env=env).stdout)


def names(results: list[dict]) -> list[str]:
    return [Path(r["path"]).name for r in results]


def test_text_terms_match_file_names_and_say_which_words_matched(shapes):
    env, _, labels = shapes
    hits = found(env, "--text", "triangle")
    assert sorted(names(hits)) == sorted(n for n, (_, shape) in labels.items() if shape == "triangle")
    assert all(r["matched_words"] == ["triangle"] for r in hits)
    assert "matched_words" not in found(env, "a red circle")[0]


def test_a_query_whose_words_are_only_in_one_photo_ranks_it_first(shapes):
    env, folder, labels = shapes
    target = next(n for n, label in labels.items() if label == ("blue", "square"))
    (folder / target).rename(folder / "garden-party-invitation.jpg")
    cli("index", str(folder), env=env)
    semantic = names(found(env, "a red circle"))
    assert labels[semantic[0]] == ("red", "circle")
    hybrid = found(env, 'a red circle text:"garden party"')
    assert names(hybrid)[0] == "garden-party-invitation.jpg"
    assert hybrid[0]["matched_words"] == ["garden party"]
    assert names(found(env, "a red circle", "--text", "party invitation")) == ["garden-party-invitation.jpg"]


def test_the_keyword_index_follows_a_rename_a_delete_a_lost_table_and_a_rebuild(shapes):
    env, folder, labels = shapes
    name = next(n for n, label in labels.items() if label == ("green", "star"))
    [before] = [r for r in found(env, "--text", "green star") if Path(r["path"]).name == name]
    (folder / name).rename(folder / "lantern.jpg")
    cli("index", str(folder), env=env)
    [moved] = found(env, "--text", "lantern")
    assert moved["id"] == before["id"]  # a move keeps the id, and the document follows it
    assert before["id"] not in [r["id"] for r in found(env, "--text", "green star")]
    (folder / "lantern.jpg").unlink()
    cli("index", str(folder), env=env)
    assert found(env, "--text", "lantern") == []
    catalog = Path(env["PIXSEEK_LIBRARY"]) / "catalog.db"
    with sqlite3.connect(catalog) as db:
        db.execute("DROP TABLE keywords_short")
    circles = sum(shape == "circle" for _, shape in labels.values())
    assert len(found(env, "--text", "circle")) == circles  # the next open rebuilt both tables from the rows
    cli("index", str(folder), "--rebuild", env=env)
    assert len(found(env, "--text", "circle")) == circles and found(env, "--text", "lantern") == []


def test_exif_and_xmp_descriptions_and_keywords_are_keywords(shapes):
    from PIL import Image

    env, folder, labels = shapes
    name = next(n for n, label in labels.items() if label == ("red", "circle"))
    with Image.open(folder / name) as img:
        pixels = img.copy()
    exif = Image.Exif()
    exif[0x010E] = "Sunset at Kamakura"  # ImageDescription
    xmp = b"<dc:subject><rdf:Bag><rdf:li>family &amp; friends</rdf:li></rdf:Bag></dc:subject>"
    pixels.save(folder / name, quality=92, exif=exif, xmp=xmp)
    cli("index", str(folder), "--workers", "0", env=env)
    for words in ("kamakura", '"family & friends"'):
        assert names(found(env, "--text", words)) == [name]


def test_tags_are_keywords(shapes, tmp_path):
    env, _, _ = shapes
    labels = tmp_path / "labels.txt"
    labels.write_text("a red shape\na blue shape\n")
    cli("tag", "--labels", str(labels), "--top", "1", "--min-prob", "0.6", env=env)
    red = found(env, "--tag", "a red shape", "a shape")
    assert red and sorted(r["id"] for r in found(env, "--text", "a red shape")) == sorted(r["id"] for r in red)


def teach(env, labels, name="warm") -> dict:
    warm = sorted(n for n, (colour, _) in labels.items() if colour in WARM)
    cold = sorted(n for n, (colour, _) in labels.items() if colour not in WARM)
    folder = Path(env["PIXSEEK_LIBRARY"]).parent / "images"
    args = [a for n in warm[::4][:5] for a in ("--yes", str(folder / n))]
    args += [a for n in cold[::4][:5] for a in ("--no", str(folder / n))]
    return json.loads(cli("concept", "teach", name, *args, "--json", env=env).stdout)


def test_a_concept_taught_from_5_and_5_examples_ranks_warm_colours_first(shapes):
    env, _, labels = shapes
    taught = teach(env, labels)
    assert len(taught["yes"]) == 5 and len(taught["no"]) == 5 and taught["warnings"] == []
    assert taught["held_out_accuracy"] >= 0.7
    examples = set(taught["yes"] + taught["no"])
    ranked = [r for r in found(env, "--concept", "warm") if r["id"] not in examples]
    top = [labels[n][0] in WARM for n in names(ranked)[:10]]
    assert sum(top) >= 9
    assert [r["score"] for r in ranked] == sorted((r["score"] for r in ranked), reverse=True)
    # With a query the concept filters: the circles it keeps first are the warm ones.
    filtered = found(env, "a circle", "--concept", "warm", "--min-prob", "0.5")
    assert all(labels[n] in {(c, "circle") for c in WARM} for n in names(filtered)[:6])


def test_concept_list_show_forget_and_reteaching_adds_examples(shapes):
    env, folder, labels = shapes
    teach(env, labels)
    listed = cli("concept", "list", env=env).stdout
    assert listed.startswith("warm  5 yes, 5 no, held-out accuracy ")
    before = json.loads(cli("concept", "show", "warm", "--json", env=env).stdout)["yes_paths"]
    extra = next(n for n, (colour, _) in sorted(labels.items()) if colour in WARM and str(folder / n) not in before)
    again = json.loads(cli("concept", "teach", "warm", "--yes", str(folder / extra), "--json", env=env).stdout)
    assert len(again["yes"]) == 6 and len(again["no"]) == 5
    shown = json.loads(cli("concept", "show", "warm", "--json", env=env).stdout)
    assert Path(shown["yes_paths"][-1]).name == extra
    assert cli("concept", "forget", "warm", env=env).stdout == "forgot 'warm'\n"
    assert cli("concept", "list", env=env).stdout.startswith("no concepts yet")


def test_few_examples_warn_in_the_output(shapes):
    env, folder, labels = shapes
    red = next(n for n, (c, _) in labels.items() if c == "red")
    blue = next(n for n, (c, _) in labels.items() if c == "blue")
    out = cli("concept", "teach", "red", "--yes", str(folder / red), "--no", str(folder / blue), env=env).stdout
    assert out.splitlines() == [
        "taught 'red' from 1 yes and 1 no examples; held-out accuracy n/a (too few examples)",
        "warning: only 1 yes example: give at least 5 for a concept you can rely on",
        "warning: only 1 no example: give at least 5 for a concept you can rely on",
    ]


def test_explanations_add_up_to_the_score(shapes):
    env, _, labels = shapes
    teach(env, labels)
    for result in found(env, '"a red circle" + 0.5:"a square" - "a blue shape"', "--explain")[:10]:
        why = result["explanation"]
        assert sum(t["contribution"] for t in why["terms"]) == pytest.approx(result["score"], abs=1e-4)
        assert why["semantic_score"] == pytest.approx(result["score"], abs=1e-4) and why["fusion"] == {}
        assert [t["term"] for t in why["terms"]] == ["a red circle", "a square", "a blue shape"]
        assert ("warm" in why["concepts"]) == (why["concepts"].get("warm", 0) >= 0.5)
    for result in found(env, "a red circle", "--text", "square", "--explain"):
        why = result["explanation"]
        assert sum(why["fusion"].values()) == pytest.approx(why["score"], abs=1e-5)
        assert why["score"] == pytest.approx(result["score"], abs=1e-4)
        assert sum(t["contribution"] for t in why["terms"]) == pytest.approx(why["semantic_score"], abs=1e-4)
        assert why["matched_words"] == ["square"] == result["matched_words"]


def test_bad_text_and_concept_input_is_one_line(shapes):
    env, _, labels = shapes
    assert_one_line_error(cli("search", "--text", " ", code=1, env=env), "empty --text")
    assert_one_line_error(cli("search", 'a cat text:""', code=1, env=env), "empty text term")
    assert_one_line_error(cli("search", '"a cat" - text:dog', code=1, env=env), "cannot be subtracted")
    assert_one_line_error(cli("search", "--concept", "nope", code=1, env=env), "no concept named 'nope'")
    assert_one_line_error(cli("concept", "teach", "x", "--yes", "1", code=1, env=env), "both kinds")
    assert_one_line_error(
        cli("concept", "teach", "x", "--yes", "/no/such.jpg", "--no", "2", code=1, env=env), "not in the library"
    )
    teach(env, labels)
    catalog = Path(env["PIXSEEK_LIBRARY"]) / "catalog.db"
    with sqlite3.connect(catalog) as db:
        db.execute("UPDATE settings SET value = 'another-model' WHERE key = 'model_fingerprint'")
    assert_one_line_error(cli("concept", "show", "warm", code=1, env=env), "taught on another model")
