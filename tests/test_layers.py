"""The layer rule, read from the source: search/ reads libraries only through indexer.library (plus
the encoder, the decoder for query images and its guarded open, and the errors); ui/ sees only the
search API, the errors, the indexer's entry points for `pixseek index`, the demo and `pixseek check`, and
the recommended models (plain data); the HTTP API (ui/api/) sees only the search API, the errors, and the
page's server and thumbnail helpers."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FIRST_PARTY = {"indexer", "search", "ui", "pixseek_data", "tests"}
ALLOWED = {
    "search": (
        "search",
        "indexer.library",
        "indexer.model",
        "indexer.runtime",  # which runtime embeds queries (the facade re-exports its request check)
        "indexer.decode",
        "indexer.regular_file",
        "indexer.errors",
    ),
    "ui": (
        "ui",
        "search",
        "indexer.errors",
        "indexer.runner",
        "indexer.check",
        "indexer.model_choices",
        "pixseek_data",
    ),
    "ui/api": ("ui.api", "ui.server", "ui.thumbs", "search", "indexer.errors"),
}


def first_party_imports(path: Path) -> set[str]:
    """Every module of this project that `path` imports, at any depth (TYPE_CHECKING blocks too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found.update(name for name in names if name.split(".")[0] in FIRST_PARTY)
    return found


def _within(module: str, allowed: tuple[str, ...]) -> bool:
    return any(module == a or module.startswith(a + ".") for a in allowed)


def _cases():
    for layer in ALLOWED:
        for path in sorted((REPO / layer).glob("*.py")):
            yield pytest.param(layer, path, id=str(path.relative_to(REPO)))


@pytest.mark.parametrize(("layer", "path"), list(_cases()))
def test_a_layer_imports_only_what_its_rule_allows(layer, path):
    outside = sorted(m for m in first_party_imports(path) if not _within(m, ALLOWED[layer]))
    assert outside == [], f"{path.name} imports {outside}; {layer}/ may import only {ALLOWED[layer]}"


def test_the_rule_reader_sees_imports_inside_functions_and_type_checking_blocks(tmp_path):
    source = tmp_path / "sample.py"
    source.write_text(
        "from typing import TYPE_CHECKING\nimport os\nif TYPE_CHECKING:\n    import indexer.walk\n"
        "def f():\n    from indexer.plan import Job\n    from . import sibling\n"
    )
    assert first_party_imports(source) == {"indexer.walk", "indexer.plan"}


def test_every_package_folder_is_installed():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    setup = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    found = {
        ".".join(init.parent.relative_to(REPO).parts)
        for layer in ("indexer", "search", "ui")
        for init in (REPO / layer).rglob("__init__.py")
    }
    assert found <= set(setup["packages"]), "a package a non-editable install would leave out"
