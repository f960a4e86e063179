"""`pixseek demo`: the first thing a new user runs, offline, in about ten seconds."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

# Per language: the bundled model that reads it, example searches, and the one to try next.
DEMOS = {
    "en": ("demo", ("a red circle", "a blue star", '"triangle" - "green"'), "a yellow square"),
    "zh": ("demo-zh", ("红色的圆形", "蓝色的星形", '"三角形" - "绿色"'), "黄色的正方形"),
}


def default_demo_dir(lang: str = "en") -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("pixseek")) / ("demo" if lang == "en" else f"demo-{lang}")


def run_demo(folder: Path | None, per_class: int, echo: Callable[[str], None], lang: str = "en") -> Path:
    """Generate a shapes gallery, index it with the bundled model for `lang`, and show example searches.

    Returns the demo library's folder."""
    from indexer.runner import IndexOptions, run_index
    from pixseek_data.shapes import generate_gallery
    from search import Library, ModelSpec

    model, examples, next_query = DEMOS[lang]
    folder = (folder or default_demo_dir(lang)).expanduser().resolve()
    images = folder / "images"
    images.mkdir(parents=True, exist_ok=True)
    gallery = generate_gallery(images, per_class=per_class, seed=7)
    echo(f"generated {len(gallery)} images of coloured shapes in {images}")
    library = folder / "library"
    report = run_index(library, [images], IndexOptions(model=ModelSpec.parse(model)))
    echo(f"indexed: added {report.added}, unchanged {report.unchanged} ({report.seconds:.1f}s), library {library}")
    with Library.open(library) as lib:
        for query in examples:
            names = [Path(r.path).name for r in lib.search(query, k=5)]
            echo(f"\npixseek search '{query}'\n  " + "\n  ".join(names))
        example = gallery[0].path
        names = [Path(r.path).name for r in lib.search(image=example, k=5)]
        echo(f"\npixseek search --image {example.name}\n  " + "\n  ".join(names))
    echo(f'\nTry your own: pixseek search "{next_query}" --library {library}')
    echo(f"Or browse:    pixseek ui --library {library}")
    return library
