"""The `pixseek` command line. Every command has --help; the ones that print data have --json."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from indexer.errors import Interrupted, PixseekError
from indexer.library import ENV_LIBRARY, LibraryPaths

app = typer.Typer(
    help="Semantic search over your photo folders: index them once, then find photos by text or by example.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

LibraryOpt = Annotated[
    Optional[Path],
    typer.Option("--library", "-L", envvar=ENV_LIBRARY, help="Library folder (catalog, vectors, index). "
                 "Default: your user data folder, or $PIXSEEK_LIBRARY.", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]
ModelOpt = Annotated[
    Optional[str],
    typer.Option("--model", "-m", help="open_clip model: a built-in name (ViT-B-32), hf-hub:org/repo, "
                 "local-dir:/path/to/folder (offline), or 'demo' for the bundled shapes model. "
                 "Default: the library's own model, or ViT-B-32 for a new library.", show_default=False),
]
PretrainedOpt = Annotated[
    Optional[str],
    typer.Option("--pretrained", help="Weights tag for a built-in model name (default for ViT-B-32: "
                 "laion2b_s34b_b79k). Ignored for hf-hub: and local-dir:.", show_default=False),
]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="cpu or cuda (default: cuda when present).",
                                                  show_default=False)]


def _spec(model: str | None, pretrained: str | None):
    from indexer.model import ModelSpec

    if model is None:
        if pretrained is not None:
            raise PixseekError("--pretrained needs --model", "e.g. --model ViT-B-32 --pretrained laion2b_s34b_b79k")
        return None
    return ModelSpec.parse(model, pretrained)


def _echo_json(data: object) -> None:
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


@app.command()
def index(
    folders: Annotated[list[Path], typer.Argument(help="Photo folders to index (recursively).", show_default=False)],
    library: LibraryOpt = None,
    model: ModelOpt = None,
    pretrained: PretrainedOpt = None,
    index_type: Annotated[Optional[str], typer.Option("--index", help="ANN index: auto (exact while small, "
                          "IVF-PQ from 50,000 images), flat or ivfpq. Remembered by the library.",
                          show_default=False)] = None,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Re-embed every image (e.g. with another --model).")] = False,
    workers: Annotated[Optional[int], typer.Option("--workers", help="Decoding processes (default: cores - 1).",
                       show_default=False)] = None,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", help="Images per model batch "
                          "(default: 32 on CPU, 256 on GPU).", show_default=False)] = None,
    device: DeviceOpt = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log each stage while running.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Add new photos to the library and bring changed, moved and deleted ones up to date.

    Safe to re-run at any time: only new or changed files are embedded, and an interrupted run
    continues where it stopped.
    """
    from indexer.runner import run_index

    if verbose:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    paths = LibraryPaths.at(library)
    with _progress(as_json) as on_progress:
        report = run_index(paths, folders, model=_spec(model, pretrained), index_kind=index_type, rebuild=rebuild,
                           workers=workers, batch_size=batch_size, device=device, on_progress=on_progress)
    if as_json:
        _echo_json({"library": str(paths.root), **report.as_dict()})
        return
    typer.echo(f"added {report.added}, updated {report.updated}, moved {report.moved}, removed {report.removed}, "
               f"unchanged {report.unchanged}, skipped {len(report.skipped)}")
    for path, reason in report.skipped[:20]:
        typer.echo(f"  skipped {path}: {reason}")
    if len(report.skipped) > 20:
        typer.echo(f"  ... and {len(report.skipped) - 20} more (pixseek info --skipped)")
    stages = ", ".join(f"{k} {v:.2f}s" for k, v in sorted(report.stages.items(), key=lambda kv: -kv[1]))
    rate = f", {report.images_per_second:.1f} images/s" if report.embedded else ""
    typer.echo(f"{report.seconds:.1f}s{rate} ({stages}); library {paths.root}")


class _progress:
    """A progress bar on stderr for interactive runs; silent for --json and pipes."""

    def __init__(self, quiet: bool) -> None:
        self.enabled = not quiet and sys.stderr.isatty()
        self._bar = None

    def __enter__(self):
        if not self.enabled:
            return None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        self._bar = Progress("embedding", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), transient=True)
        self._bar.start()
        task = self._bar.add_task("embed", total=None)

        def update(done: int, total: int) -> None:
            self._bar.update(task, completed=done, total=total)

        return update

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


@app.command()
def search(
    query: Annotated[Optional[str], typer.Argument(
        help='What to look for. Combine terms: "cat" + "snow" - "indoor"; weight them: 2:"cat"; '
             "mix in image files by path.", show_default=False)] = None,
    image: Annotated[Optional[Path], typer.Option("--image", "-i", help="Search by an example image file.",
                     show_default=False)] = None,
    like: Annotated[Optional[str], typer.Option("--like", help="More like this: an indexed image (path or id), "
                    "using its stored vector.", show_default=False)] = None,
    k: Annotated[int, typer.Option("-k", "--limit", help="How many results.")] = 20,
    min_score: Annotated[Optional[float], typer.Option("--min-score", help="Drop results below this cosine score.",
                         show_default=False)] = None,
    folder: Annotated[Optional[Path], typer.Option("--folder", help="Only photos in this folder or below.",
                      show_default=False)] = None,
    date_from: Annotated[Optional[str], typer.Option("--from", help="Taken on or after YYYY-MM-DD.",
                         show_default=False)] = None,
    date_to: Annotated[Optional[str], typer.Option("--to", help="Taken on or before YYYY-MM-DD.",
                       show_default=False)] = None,
    camera: Annotated[Optional[str], typer.Option("--camera", help="Camera make or model contains this text.",
                      show_default=False)] = None,
    library: LibraryOpt = None,
    model: ModelOpt = None,
    pretrained: PretrainedOpt = None,
    device: DeviceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Find photos by text, by an example image, by an indexed photo, or a mix of them."""
    from search.engine import Library
    from search.filters import Filters

    if query is None and image is None and like is None:
        raise PixseekError("nothing to search for", 'give a query (pixseek search "a dog"), --image FILE or --like FILE')
    if image is not None and not image.is_file():
        raise PixseekError(f"query image not found: {image}", "check the path")
    filters = Filters(folder=str(folder) if folder else None, date_from=date_from, date_to=date_to, camera=camera)
    lib = Library.open(library, model=_spec(model, pretrained), device=device)
    like_ref: int | str | None = int(like) if like is not None and like.isdigit() else like
    results = lib.search(query, image=image, like=like_ref, k=k, min_score=min_score, filters=filters)
    if as_json:
        _echo_json([r.as_dict() for r in results])
        return
    if not results:
        typer.echo("no results")
        return
    for rank, r in enumerate(results, 1):
        when = (r.taken_at or "")[:10]
        typer.echo(f"{rank:>3}  {r.score:6.3f}  {when:10}  {r.path}")


@app.command()
def info(
    library: LibraryOpt = None,
    skipped: Annotated[bool, typer.Option("--skipped", help="List every file that could not be indexed, "
                       "with the reason.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """What is in the library: image count, model, index type, skipped files."""
    from search.engine import Library

    lib = Library.open(library)
    data = lib.info()
    if skipped:
        data["skipped_files"] = [{"path": r.path, "reason": r.reason} for r in lib.skipped()]
    if as_json:
        _echo_json(data)
        return
    typer.echo(f"library     {data['library']}")
    typer.echo(f"images      {data['images']} indexed, {data['skipped']} skipped, {data['pending']} pending")
    typer.echo(f"model       {data['model']} ({data['embedding_dim']} dimensions)")
    index_desc = ", ".join(f"{k} {v}" for k, v in data["index"].items() if k != "type")
    typer.echo(f"index       {data['index']['type']} ({index_desc})")
    typer.echo(f"indexed at  {data['last_indexed_at']}")
    for reason, n in sorted(data["skipped_reasons"].items(), key=lambda kv: -kv[1]):
        typer.echo(f"  {n:>5} skipped: {reason}")
    for item in data.get("skipped_files", []):
        typer.echo(f"  {item['path']}: {item['reason']}")


@app.command()
def models(as_json: JsonOpt = False) -> None:
    """List open_clip's built-in model names and their pretrained tags."""
    import open_clip

    pairs = open_clip.list_pretrained()
    if as_json:
        _echo_json([{"model": m, "pretrained": p} for m, p in pairs])
        return
    for m, p in pairs:
        typer.echo(f"{m:40} {p}")


@app.command()
def demo(
    folder: Annotated[Optional[Path], typer.Option("--dir", help="Where to put the demo images and library "
                      "(default: a 'demo' folder in your user data folder).", show_default=False)] = None,
    per_class: Annotated[int, typer.Option("--per-class", help="Images per colour and shape.")] = 5,
) -> None:
    """Offline tour: generate coloured shapes, index them with the bundled model, run example searches."""
    from ui.demo import run_demo

    run_demo(folder, per_class, typer.echo)


def main() -> None:
    """Console entry point: user errors become one line on stderr and a non-zero exit."""
    try:
        app()
    except PixseekError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(130 if isinstance(exc, Interrupted) else 1)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug: still one line, with a way to get the traceback
        if os.environ.get("PIXSEEK_DEBUG"):
            raise
        typer.echo(f"error: unexpected {type(exc).__name__}: {exc} (set PIXSEEK_DEBUG=1 for details)", err=True)
        sys.exit(2)
