"""`pixseek demo`: the first thing a new user runs, offline, in about ten seconds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

EXAMPLES = ("a red circle", "a blue star", '"triangle" - "green"')


def default_demo_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("pixseek")) / "demo"


def run_demo(folder: Path | None, per_class: int, echo: Callable[[str], None]) -> Path:
    """Generate a shapes gallery, index it with the bundled model, and show example searches.

    Returns the demo library's folder."""
    from indexer.runner import IndexOptions, run_index
    from pixseek_data.shapes import generate_gallery
    from search import Library, ModelSpec

    folder = (folder or default_demo_dir()).expanduser().resolve()
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    gallery = generate_gallery(images, per_class=per_class, seed=7)
    echo(f"generated {len(gallery)} images of coloured shapes in {images}")
    library = folder / "library"
    report = run_index(library, [images], IndexOptions(model=ModelSpec.parse("demo")))
    echo(f"indexed: added {report.added}, unchanged {report.unchanged} ({report.seconds:.1f}s), library {library}")
    with Library.open(library) as lib:
        for query in EXAMPLES:
            names = [Path(r.path).name for r in lib.search(query, k=5)]
            echo(f"\npixseek search '{query}'\n  " + "\n  ".join(names))
        example = gallery[0].path
        names = [Path(r.path).name for r in lib.search(image=example, k=5)]
        echo(f"\npixseek search --image {example.name}\n  " + "\n  ".join(names))
    echo(f'\nTry your own: pixseek search "a yellow square" --library {library}')
    echo(f"Or browse:    pixseek ui --library {library}")
    return library
