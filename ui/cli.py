"""The `pixseek` command line. Every command has --help; the ones that print data have --json."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import click
import typer
from typer.core import TyperGroup

from indexer.errors import PixseekError
from search import ENV_LIBRARY, ENV_PRECISION, ENV_RUNTIME


class _Commands(TyperGroup):
    def invoke(self, ctx: click.Context) -> Any:
        # Here rather than in main(), so that every way of running a command (the console script,
        # typer's CliRunner in tests) prints the same one line and exits with the error's code.
        try:
            return super().invoke(ctx)
        except PixseekError as exc:
            exc.show()
            ctx.exit(exc.exit_code)


app = typer.Typer(
    cls=_Commands,
    help="Semantic search over your photo folders: index them once, then find photos by text or by example.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

LibraryOpt = Annotated[
    Optional[Path],
    typer.Option(
        "--library",
        "-L",
        envvar=ENV_LIBRARY,
        help="Library folder (catalog, vectors, index). Default: your user data folder, or $PIXSEEK_LIBRARY.",
        show_default=False,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of a table.")]
ModelOpt = Annotated[
    Optional[str],
    typer.Option(
        "--model",
        "-m",
        help="open_clip model: a built-in name (ViT-B-32), hf-hub:org/repo or local-dir:/path/to/folder "
        "(offline); a transformers model (CLIP, SigLIP, ALIGN, Chinese-CLIP, ...): hf:org/repo or "
        "hf-dir:/path/to/folder (offline); or 'demo' / 'demo-zh' for the bundled shapes models. "
        "Default: the library's own model, or ViT-B-32 for a new library.",
        show_default=False,
    ),
]
PretrainedOpt = Annotated[
    Optional[str],
    typer.Option(
        "--pretrained",
        help="Weights tag for a built-in model name (default for ViT-B-32: "
        "laion2b_s34b_b79k). Ignored for hf-hub:, local-dir:, hf: and hf-dir:.",
        show_default=False,
    ),
]
DeviceOpt = Annotated[
    Optional[str], typer.Option("--device", help="cpu or cuda (default: cuda when present).", show_default=False)
]
RuntimeOpt = Annotated[
    str,
    typer.Option(
        "--runtime",
        envvar=ENV_RUNTIME,
        help="torch (default), onnx (ONNX Runtime) "
        "or auto: ONNX where it keeps results equal, int8 weights only where the library's first "
        "index run checked them on its photos (see pixseek info).",
    ),
]
PrecisionOpt = Annotated[
    Optional[str],
    typer.Option(
        "--precision",
        envvar=ENV_PRECISION,
        help="fp32, int8 (CPU) or fp16 (GPU), with ONNX Runtime (default: what auto picks for the device).",
        show_default=False,
    ),
]


def _spec(model: str | None, pretrained: str | None):
    from search import ModelSpec

    if model is None:
        if pretrained is not None:
            raise PixseekError("--pretrained needs --model", "e.g. --model ViT-B-32 --pretrained laion2b_s34b_b79k")
        return None
    return ModelSpec.parse(model, pretrained)


def _echo_json(data: object) -> None:
    text = json.dumps(data, indent=2, ensure_ascii=False)
    # A non-UTF-8 file name reaches here as lone surrogates (PEP 383); as \udcXX escapes the output
    # stays valid UTF-8 JSON, and json.loads gives back a str that opens the file.
    typer.echo(re.sub("[\ud800-\udfff]", lambda m: f"\\u{ord(m.group()):04x}", text))


def _shown(path: str) -> str:
    """A file name fit for a terminal: control characters (newlines, escape sequences, and the
    C1 bytes of a non-UTF-8 name, which some terminals obey) as backslash escapes; the other bytes of
    a non-UTF-8 name go out as they are, as `ls` prints them. --json keeps names exact."""
    return re.sub(r"[\x00-\x1f\x7f-\x9f\udc80-\udc9f\\]", _escape_char, path)


def _escape_char(match: re.Match) -> str:
    ch = match.group()
    if ch == "\\":
        return "\\\\"
    code = ord(ch)
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else ch.encode("unicode_escape").decode()


@app.command()
def index(
    folders: Annotated[
        list[str],
        typer.Argument(
            help="Photo folders to index (recursively), or object storage URIs: s3://, gs://, file://.",
            show_default=False,
        ),
    ],
    library: LibraryOpt = None,
    model: ModelOpt = None,
    pretrained: PretrainedOpt = None,
    index_type: Annotated[
        Optional[str],
        typer.Option(
            "--index",
            help="ANN index: auto (exact while small, "
            "IVF-PQ from 50,000 images), flat or ivfpq. Remembered by the library.",
            show_default=False,
        ),
    ] = None,
    rebuild: Annotated[
        bool, typer.Option("--rebuild", help="Re-embed every image (e.g. with another --model).")
    ] = False,
    workers: Annotated[
        Optional[int], typer.Option("--workers", help="Decoding processes (default: one per core).", show_default=False)
    ] = None,
    batch_size: Annotated[
        Optional[int],
        typer.Option(
            "--batch-size", help="Images per model batch (default: 32 on CPU, 256 on GPU).", show_default=False
        ),
    ] = None,
    device: DeviceOpt = None,
    ocr: Annotated[
        Optional[bool],
        typer.Option(
            "--ocr/--no-ocr",
            help="Also read the text in new photos (pixseek ocr) after embedding them. Remembered by the library.",
            show_default=False,
        ),
    ] = None,
    runtime: RuntimeOpt = "torch",
    precision: PrecisionOpt = None,
    ray: Annotated[
        bool,
        typer.Option(
            "--ray",
            help="Decode and embed on a Ray cluster (pip install 'pixseek\\[ray]'); alone, on a Ray instance "
            "started for the run on this machine. --workers does not apply.",
        ),
    ] = False,
    ray_address: Annotated[
        Optional[str],
        typer.Option(
            "--ray-address",
            help="The cluster for --ray (implies it): auto (the one this machine is in), ray://HOST:PORT or "
            "HOST:PORT; default: local, a new instance.",
            show_default=False,
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log each stage while running.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Add new photos to the library and bring changed, moved and deleted ones up to date.

    Safe to re-run at any time: only new or changed files are embedded, and an interrupted run
    continues where it stopped.
    """
    from indexer.runner import IndexOptions, run_index
    from search import LibraryPaths

    if verbose:
        # Only pixseek's own stages at INFO: open_clip and FAISS log their loading steps there too.
        logging.basicConfig(
            level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr, force=True
        )
        for package in ("indexer", "search", "ui"):
            logging.getLogger(package).setLevel(logging.INFO)
    paths = LibraryPaths.at(library)
    with _progress(as_json) as stage:
        options = IndexOptions(
            model=_spec(model, pretrained),
            index_kind=index_type,
            rebuild=rebuild,
            workers=workers,
            batch_size=batch_size,
            device=device,
            runtime=runtime,
            precision=precision,
            ray=ray_address or ("local" if ray else None),
            on_progress=stage("embedding"),
            ocr=ocr,
            on_ocr_progress=stage("reading text"),
        )
        report = run_index(paths, folders, options)
    if as_json:
        _echo_json({"library": str(paths.root), **report.as_dict()})
        return
    typer.echo(
        f"added {report.added}, updated {report.updated}, moved {report.moved}, removed {report.removed}, "
        f"unchanged {report.unchanged}, skipped {len(report.skipped)}"
    )
    if report.runtime:
        typer.echo(f"runtime: {report.runtime}")
    if report.repaired:
        typer.echo(f"  repaired: {report.repaired} damaged vectors marked for embedding again")
    for folder in report.unreadable:
        typer.echo(f"  unreadable folder {_shown(folder)}: cannot be listed, its photos are kept")
    for path, reason in report.skipped[:20]:
        typer.echo(f"  skipped {_shown(path)}: {reason}")
    if len(report.skipped) > 20:
        typer.echo(f"  ... and {len(report.skipped) - 20} more (pixseek info --skipped)")
    stages = ", ".join(f"{k} {v:.2f}s" for k, v in sorted(report.stages.items(), key=lambda kv: -kv[1]))
    # "embedded" also counts files a stopped or failed earlier run had found but not embedded.
    rate = f", {report.embedded} embedded at {report.images_per_second:.1f} images/s" if report.embedded else ""
    typer.echo(f"{report.seconds:.1f}s{rate} ({stages}); library {paths.root}")
    if report.ocr is not None:
        _echo_ocr(report.ocr)


def _echo_ocr(report: dict[str, Any]) -> None:
    typer.echo(
        f"text read in {report['read']} photos ({report['with_text']} with text, "
        f"{len(report['failed'])} unreadable) in {report['seconds']:.1f}s"
    )
    for item in report["failed"][:20]:
        typer.echo(f"  unreadable {item['path']}: {item['reason']}")


@app.command(name="ocr")
def ocr_command(
    library: LibraryOpt = None,
    workers: Annotated[
        Optional[int],
        typer.Option(
            "--workers", help="OCR processes (default: one per core; 0 reads in this process).", show_default=False
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Read the text in every indexed photo not read yet (signs, receipts, screenshots; English and Chinese).

    Incremental like index: a second run reads only new or changed photos, and a stopped run
    continues where it stopped. Then find photos by their text: pixseek search --text WORDS.
    """
    from indexer.runner import run_ocr
    from search import LibraryPaths

    paths = LibraryPaths.at(library)
    with _progress(as_json) as stage:
        report = run_ocr(paths, workers, stage("reading text")).as_dict()
    if as_json:
        _echo_json({"library": str(paths.root), **report})
        return
    _echo_ocr(report)


class _progress:
    """Progress bars on stderr for interactive runs, one per stage; silent for --json and pipes.

    Entered, it gives `stage(what)`: the (done, total) callback of a bar labelled `what`, shown
    once the stage reports (None when silent).
    """

    def __init__(self, quiet: bool) -> None:
        self.enabled = not quiet and sys.stderr.isatty()
        self._bar = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                transient=True,
            )
            self._bar.start()
        return self.stage

    def stage(self, what: str):
        if self._bar is None:
            return None
        task = None

        def update(done: int, total: int) -> None:
            nonlocal task
            if task is None:
                task = self._bar.add_task(what, total=total)
            self._bar.update(task, completed=done, total=total)

        return update

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


@app.command()
def search(
    query: Annotated[
        Optional[str],
        typer.Argument(
            help='What to look for. Combine terms: "cat" + "snow" - "indoor"; weight them: 2:"cat"; '
            "mix in image files by path.",
            show_default=False,
        ),
    ] = None,
    image: Annotated[
        Optional[Path], typer.Option("--image", "-i", help="Search by an example image file.", show_default=False)
    ] = None,
    like: Annotated[
        Optional[str],
        typer.Option(
            "--like", help="More like this: an indexed image (path or id), using its stored vector.", show_default=False
        ),
    ] = None,
    k: Annotated[int, typer.Option("-k", "--limit", help="How many results.")] = 20,
    min_score: Annotated[
        Optional[float], typer.Option("--min-score", help="Drop results below this cosine score.", show_default=False)
    ] = None,
    folder: Annotated[
        Optional[Path], typer.Option("--folder", help="Only photos in this folder or below.", show_default=False)
    ] = None,
    date_from: Annotated[
        Optional[str], typer.Option("--from", help="Taken on or after YYYY-MM-DD.", show_default=False)
    ] = None,
    date_to: Annotated[
        Optional[str], typer.Option("--to", help="Taken on or before YYYY-MM-DD.", show_default=False)
    ] = None,
    camera: Annotated[
        Optional[str], typer.Option("--camera", help="Camera make or model contains this text.", show_default=False)
    ] = None,
    not_: Annotated[
        Optional[list[str]],
        typer.Option(
            "--not",
            help='Push results away from this text (repeatable); the same as adding - "TEXT" to the query.',
            show_default=False,
        ),
    ] = None,
    min_z: Annotated[
        Optional[float],
        typer.Option(
            "--min-z",
            help="Adaptive cutoff: keep results scoring at "
            "least Z standard deviations above this query's median score over the whole library (the "
            "spread measured robustly, by the median absolute deviation). Unlike --min-score it means "
            "the same for every query: 2 to 3 keeps images that clearly stand out, and a query "
            "nothing matches returns little or nothing.",
            show_default=False,
        ),
    ] = None,
    ensemble: Annotated[
        bool,
        typer.Option(
            "--ensemble/--no-ensemble",
            help="Embed text through several "
            'prompts ("a photo of ...") and average them, as in the CLIP paper; --no-ensemble '
            "embeds the text exactly as typed.",
        ),
    ] = True,
    dedupe: Annotated[
        bool,
        typer.Option(
            "--dedupe", help="Show only the best match of each set of near-duplicate photos (see pixseek dupes)."
        ),
    ] = False,
    sort: Annotated[
        str,
        typer.Option(
            "--sort", help="score: best match first; date: the same results, newest taken first (undated last)."
        ),
    ] = "score",
    gps: Annotated[
        Optional[bool],
        typer.Option(
            "--gps/--no-gps", help="Only photos with (--gps) or without (--no-gps) a GPS position.", show_default=False
        ),
    ] = None,
    tag: Annotated[
        Optional[str],
        typer.Option("--tag", help="Only photos auto-tagged with this label (see pixseek tag).", show_default=False),
    ] = None,
    text: Annotated[
        Optional[str],
        typer.Option(
            "--text",
            help="Only photos whose words hold every one of "
            'these words or "quoted phrases" (the text read by pixseek ocr, file and folder names, '
            "tags), ranked by how well they match, fused with the query's ranking; the same as "
            'text:"..." in the query.',
            show_default=False,
        ),
    ] = None,
    concept: Annotated[
        Optional[str],
        typer.Option(
            "--concept",
            help="A concept taught with pixseek concept "
            "teach: ranks by its probability, or with a query keeps photos at --min-prob or above.",
            show_default=False,
        ),
    ] = None,
    min_prob: Annotated[
        float, typer.Option("--min-prob", help="With --concept and a query: the probability a photo needs.")
    ] = 0.5,
    explain: Annotated[
        bool,
        typer.Option(
            "--explain",
            help="Show why each photo matched: each term's part of "
            "the score, the words matched, its tags and concepts.",
        ),
    ] = False,
    library: LibraryOpt = None,
    model: ModelOpt = None,
    pretrained: PretrainedOpt = None,
    device: DeviceOpt = None,
    runtime: RuntimeOpt = "torch",
    precision: PrecisionOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Find photos by text, by an example image, by an indexed photo, by the words in them, or a mix."""
    from search import Filters, Library
    from search.request import build_request

    if image is not None and not image.is_file():
        raise PixseekError(f"query image not found: {image}", "check the path")
    folder_text = str(folder.expanduser().resolve()) if folder else None  # the catalog holds absolute paths
    filters = Filters(folder=folder_text, date_from=date_from, date_to=date_to, camera=camera, has_gps=gps, tag=tag)
    like_ref: int | str | None = int(like) if like is not None and like.isdigit() else like
    request = build_request(
        query,
        words=text,
        avoid=not_ or (),
        image=image,
        like=like_ref,
        k=k,
        min_score=min_score,
        min_z=min_z,
        filters=filters,
        ensemble=ensemble,
        dedupe=dedupe,
        sort=sort,
        concept=concept,
        min_prob=min_prob,
        explain=explain,
    )
    with Library.open(
        library, model=_spec(model, pretrained), device=device, runtime=runtime, precision=precision
    ) as lib:
        results = lib.search(request)
        damage, progress = lib.damage(), lib.in_progress()
    if damage is not None:
        typer.echo(f"warning: {damage}", err=True)
    if progress is not None:
        typer.echo(f"note: {progress}", err=True)
    if as_json:
        _echo_json([r.as_dict() for r in results])
        return
    if not results:
        typer.echo("no results")
        return
    for rank, r in enumerate(results, 1):
        when = (r.taken_at or "")[:10]
        typer.echo(f"{rank:>3}  {r.score:6.3f}  {when:10}  {_shown(r.path)}")
        if r.explanation is not None:
            _echo_explanation(r.explanation)
        elif r.matched_words:
            typer.echo(f"     matched: {', '.join(r.matched_words)}")


def _echo_explanation(why: dict[str, Any]) -> None:
    if why["fusion"]:
        typer.echo("     fused: " + " + ".join(f"{name} {part:.4f}" for name, part in why["fusion"].items()))
    if why["terms"]:
        parts = ", ".join(f'"{t["term"]}" {t["contribution"]:+.3f}' for t in why["terms"])
        typer.echo(f"     semantic {why['semantic_score']:.3f} = {parts}")
    for label, key in (("matched", "matched_words"), ("tags", "tags")):
        if why[key]:
            typer.echo(f"     {label}: {', '.join(why[key])}")
    if why["concepts"]:
        typer.echo("     concepts: " + ", ".join(f"{n} {p:.2f}" for n, p in why["concepts"].items()))


@app.command()
def dupes(
    library: LibraryOpt = None,
    max_distance: Annotated[
        Optional[int],
        typer.Option(
            "--max-distance",
            help="Near duplicates: perceptual "
            "hashes differing in at most this many of 256 bits (default 16: resized and "
            "re-encoded copies; at most 32, where different photos start to match).",
            show_default=False,
        ),
    ] = None,
    similarity: Annotated[
        Optional[float],
        typer.Option(
            "--similarity",
            help="Also pair photos whose embeddings "
            "have at least this cosine similarity, e.g. 0.95: finds crops and edits the hash misses. "
            "Compares every pair: minutes on 100,000 photos.",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Find duplicate photos: exact copies (same content) and near copies (resized, re-encoded, edited).

    Uses what indexing stored (content hash, perceptual hash, embedding); no photo is read again.
    Each group lists the largest copy first.
    """
    from search import Library
    from search.dupes import find_duplicates

    with Library.open(library) as lib:
        groups = find_duplicates(lib.catalog, lib.vectors, **_given(max_distance=max_distance, min_cosine=similarity))
        unhashed = lib.catalog.missing_phash()
    if as_json:
        _echo_json({"groups": [g.as_dict() for g in groups], "images_without_phash": unhashed})
        return
    for g in groups:
        typer.echo(f"{g.kind} duplicates: {len(g.images)} images")
        for r in g.images:
            typer.echo(f"  {r.width or '?'}x{r.height or '?'}  {r.size / 1e6:7.2f} MB  {_shown(r.path)}")
    spare = sum(r.size for g in groups for r in g.images[1:])
    typer.echo(
        f"{len(groups)} groups; keeping the first of each frees {spare / 1e6:.1f} MB"
        if groups
        else "no duplicates found"
    )
    if unhashed:
        typer.echo(
            f"note: {unhashed} images were indexed before perceptual hashes were stored; compare them "
            "with --similarity 0.95, or run `pixseek index --rebuild FOLDER`"
        )


@app.command()
def tag(
    labels: Annotated[
        Optional[Path],
        typer.Option(
            "--labels",
            help="Text file, one label per line (beach, birthday, cat...). Default: the labels of the last run.",
            show_default=False,
        ),
    ] = None,
    top: Annotated[
        Optional[int], typer.Option("--top", help="At most this many tags per photo (default 3).", show_default=False)
    ] = None,
    min_prob: Annotated[
        Optional[float],
        typer.Option(
            "--min-prob",
            help="Tag only labels at least this likely "
            "(0-1; default 0.2), so a photo that fits none of the labels gets no tag.",
            show_default=False,
        ),
    ] = None,
    ensemble: Annotated[
        bool,
        typer.Option("--ensemble/--no-ensemble", help='Average each label over several prompts ("a photo of ...").'),
    ] = True,
    library: LibraryOpt = None,
    device: DeviceOpt = None,
    runtime: RuntimeOpt = "torch",
    precision: PrecisionOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Auto-tag every photo with its most likely labels from your list (zero-shot, like CLIP).

    Works from the stored embeddings, so no photo is read again; re-run after indexing new photos.
    Then filter searches with --tag LABEL.
    """
    from search import Library
    from search.tags import read_labels, stored_labels, tag_images

    with Library.open(library, device=device, runtime=runtime, precision=precision) as lib:
        names = read_labels(labels) if labels is not None else stored_labels(lib)
        if not names:
            raise PixseekError("this library has no labels yet", "pass --labels labels.txt (one label per line)")
        counts = tag_images(lib, names, ensemble=ensemble, **_given(top=top, min_prob=min_prob))
    if as_json:
        _echo_json({"library": str(lib.paths.root), "tagged": counts})
        return
    for label, n in counts.items():
        typer.echo(f"{n:>7}  {label}")


def _given(**options: object) -> dict[str, object]:
    """The options the user set: the rest keep the defaults of the function they are passed to."""
    return {k: v for k, v in options.items() if v is not None}


concept_app = typer.Typer(
    help="Concepts taught from a few examples: 'my dog Rex', 'our kitchen'.", no_args_is_help=True
)
app.add_typer(concept_app, name="concept")


@concept_app.command("teach")
def concept_teach(
    name: Annotated[str, typer.Argument(help="The concept's name.", show_default=False)],
    yes: Annotated[
        Optional[list[str]],
        typer.Option(
            "--yes", help="A photo that shows it (indexed; path or id); repeat for each photo.", show_default=False
        ),
    ] = None,
    no: Annotated[
        Optional[list[str]],
        typer.Option("--no", help="A photo that does not show it; repeat for each.", show_default=False),
    ] = None,
    library: LibraryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Teach a concept from photos that show it and photos that don't; re-teaching adds examples.

    A linear probe on the stored embeddings (no photo is read again). Then: pixseek search --concept NAME.
    """
    from search import Library
    from search.concepts import teach_concept

    with Library.open(library) as lib:
        concept = teach_concept(lib, name, yes or [], no or [])
    summary = concept.as_dict()
    if as_json:
        _echo_json(summary)
        return
    accuracy = "n/a (too few examples)" if concept.loo_accuracy is None else f"{concept.loo_accuracy:.2f}"
    typer.echo(
        f"taught '{concept.name}' from {len(concept.yes_ids)} yes and {len(concept.no_ids)} no examples; "
        f"held-out accuracy {accuracy}"
    )
    for warning in concept.warnings:
        typer.echo(f"warning: {warning}")


@concept_app.command("list")
def concept_list(library: LibraryOpt = None, as_json: JsonOpt = False) -> None:
    """The library's concepts, with their examples and held-out accuracy."""
    from search import Library
    from search.concepts import all_concepts

    with Library.open(library) as lib:
        concepts = all_concepts(lib)
    if as_json:
        _echo_json([c.as_dict() for c in concepts])
        return
    if not concepts:
        typer.echo("no concepts yet: pixseek concept teach NAME --yes PHOTO... --no PHOTO...")
    for c in concepts:
        accuracy = "n/a" if c.loo_accuracy is None else f"{c.loo_accuracy:.2f}"
        typer.echo(f"{c.name}  {len(c.yes_ids)} yes, {len(c.no_ids)} no, held-out accuracy {accuracy}")


@concept_app.command("show")
def concept_show(
    name: Annotated[str, typer.Argument(help="The concept's name.", show_default=False)],
    library: LibraryOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """A concept's examples (paths) and held-out accuracy."""
    from search import Library
    from search.concepts import example_paths, load_concept

    with Library.open(library) as lib:
        concept = load_concept(lib, name)
        paths = example_paths(lib, concept)
    if as_json:
        _echo_json(
            {
                **concept.as_dict(),
                "yes_paths": [paths[i] for i in concept.yes_ids],
                "no_paths": [paths[i] for i in concept.no_ids],
            }
        )
        return
    accuracy = "n/a" if concept.loo_accuracy is None else f"{concept.loo_accuracy:.2f}"
    typer.echo(f"{concept.name}: held-out accuracy {accuracy}")
    for side, ids in (("yes", concept.yes_ids), ("no", concept.no_ids)):
        for i in ids:
            typer.echo(f"  {side:3} {i:>6}  {paths[i]}")
    for warning in concept.warnings:
        typer.echo(f"warning: {warning}")


@concept_app.command("forget")
def concept_forget(
    name: Annotated[str, typer.Argument(help="The concept's name.", show_default=False)], library: LibraryOpt = None
) -> None:
    """Delete a concept."""
    from search import Library
    from search.concepts import forget_concept

    with Library.open(library) as lib:
        forget_concept(lib, name)
    typer.echo(f"forgot '{name}'")


@app.command()
def info(
    library: LibraryOpt = None,
    skipped: Annotated[
        bool, typer.Option("--skipped", help="List every file that could not be indexed, with the reason.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """What is in the library: image count, model, index type, skipped files."""
    from search import Library

    with Library.open(library) as lib:
        data = lib.info().as_dict()
        if skipped:
            data["skipped_files"] = [{"path": r.path, "reason": r.reason} for r in lib.skipped()]
    if as_json:
        _echo_json(data)
        return
    typer.echo(f"library     {data['library']}")
    typer.echo(f"images      {data['images']} indexed, {data['skipped']} skipped, {data['pending']} pending")
    if data["model"] is None:
        typer.echo("model       none yet: `pixseek index FOLDER` picks one")
    else:
        typer.echo(f"model       {data['model']} ({data['embedding_dim']} dimensions)")
    index_desc = ", ".join(f"{k} {v}" for k, v in data["index"].items() if k != "type")
    typer.echo(f"index       {data['index']['type']} ({index_desc})")
    check = data["runtime_check"]
    if check is not None:
        rates = ", ".join(f"{label} {rate:g}" for label, rate in check["rates"].items())
        typer.echo(
            f"runtime     auto picks {check['picked']} (checked on {check['photos']} photos, "
            f"images/s: {rates}; int8 recall@10 {check['int8_recall']:.3f}, "
            f"from text {check['text_int8_recall'] or 0:.3f})"
        )
    typer.echo(f"indexed at  {data['last_indexed_at'] or 'never'}")
    typer.echo(
        f"text        read in {data['text_read']} photos, {data['with_text']} with text"
        f"{' (index --ocr is on)' if data['ocr_on_index'] else ''}"
    )
    if data["concepts"]:
        typer.echo(f"concepts    {', '.join(data['concepts'])}")
    for problem in data["damage"]:
        typer.echo(f"damaged     {problem} (run `pixseek check --repair`)")
    for reason, n in sorted(data["skipped_reasons"].items(), key=lambda kv: -kv[1]):
        typer.echo(f"  {n:>5} skipped: {reason}")
    for item in data.get("skipped_files", []):
        typer.echo(f"  {_shown(item['path'])}: {item['reason']}")


@app.command()
def check(
    library: LibraryOpt = None,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Rebuild a damaged index file, drop orphan rows, and "
            "embed damaged vectors again (now if the model loads, else on the next index run).",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check the library for damage: catalog integrity, every vector, the index file, orphan rows.

    Exits 1 when damage remains (without --repair, or when the catalog itself is damaged).
    """
    from indexer.check import check_library

    report = check_library(library, repair=repair)
    healthy = report.healthy or (repair and not report.catalog)
    if as_json:
        _echo_json(report.as_dict())
    else:
        typer.echo(f"library     {report.library}")
        typer.echo(f"catalog     {'ok' if not report.catalog else 'damaged: ' + '; '.join(report.catalog[:3])}")
        if not report.catalog:
            typer.echo(f"vectors     {report.images - len(report.damaged_vectors)} of {report.images} intact")
            typer.echo(f"index       {report.index or 'ok'}")
            typer.echo(f"tags        {f'{report.orphan_tags} orphan rows' if report.orphan_tags else 'ok'}")
        for done in report.repaired:
            typer.echo(f"repaired    {done}")
        if report.pending:
            typer.echo(f"pending     {report.pending} rows wait for an index run")
        for advice in report.advice:
            typer.echo(f"next        {advice}")
    if not healthy:
        raise typer.Exit(1)


@app.command()
def models(
    as_json: JsonOpt = False,
    show_all: Annotated[
        bool, typer.Option("--all", help="Also list every open_clip built-in name and pretrained tag.")
    ] = False,
) -> None:
    """The recommended models (quality published by open_clip, cost measured here); --all: every built-in one."""
    from indexer.model_choices import choices_json, render_choices

    pairs = []
    if show_all:
        import open_clip

        pairs = open_clip.list_pretrained()
    if as_json:
        _echo_json({"recommended": choices_json(), "all": [{"model": m, "pretrained": p} for m, p in pairs]})
        return
    typer.echo(render_choices())
    if pairs:
        typer.echo("\nEvery open_clip built-in model and pretrained tag:")
    for m, p in pairs:
        typer.echo(f"{m:40} {p}")


@app.command()
def demo(
    folder: Annotated[
        Optional[Path],
        typer.Option(
            "--dir",
            help="Where to put the demo images and library (default: a 'demo' folder in your user data folder).",
            show_default=False,
        ),
    ] = None,
    per_class: Annotated[int, typer.Option("--per-class", help="Images per colour and shape.")] = 5,
    lang: Annotated[
        str,
        typer.Option(
            "--lang",
            help="en: the English demo model (open_clip); zh: the bilingual one (transformers' ALIGN), searched"
            " in Chinese or English. zh needs the hf extra: pip install 'pixseek[hf]'.",
        ),
    ] = "en",
) -> None:
    """Offline tour: generate coloured shapes, index them with the bundled model, run example searches."""
    from ui.demo import DEMOS, run_demo

    if lang not in DEMOS:
        raise PixseekError(f"no demo in language '{lang}'", f"use one of: {', '.join(DEMOS)}")
    run_demo(folder, per_class, typer.echo, lang)


@app.command()
def ui(
    library: LibraryOpt = None,
    port: Annotated[int, typer.Option("--port", help="Port for the page.")] = 8501,
    host: Annotated[
        str,
        typer.Option(
            "--host",
            help="Address to listen on. The default keeps the page on "
            "this computer; 0.0.0.0 opens it (and your photos) to your network.",
        ),
    ] = "127.0.0.1",
    runtime: RuntimeOpt = "torch",
    precision: PrecisionOpt = None,
) -> None:
    """Serve the search page and print its address: find photos by text or example, filter, page through."""
    from unittest.mock import patch

    from search import LibraryPaths
    from ui.server import serve

    paths = LibraryPaths.at(library)
    if not paths.exists():
        raise PixseekError(f"no library at {paths.root}", "run `pixseek index FOLDER` first (or pass --library DIR)")
    # The page is a child process that inherits this environment (ui/server.py), read by its Library;
    # patched only while it runs, so this process (a test's, say) keeps its own.
    choice = {ENV_RUNTIME: runtime, **({ENV_PRECISION: precision} if precision else {})}
    with patch.dict(os.environ, choice):
        serve(paths, host, port, typer.echo)


@app.command()
def thumbs(library: LibraryOpt = None, as_json: JsonOpt = False) -> None:
    """Make the page's thumbnails of every indexed photo now, so no page waits for them later.

    Safe to re-run: only missing thumbnails are made. `pixseek ui` makes any still missing on demand.
    """
    from search import Filters, LibraryPaths
    from ui.page_backend import PageLibrary
    from ui.thumbs import make_ahead

    lib = PageLibrary(LibraryPaths.at(library).root)
    try:
        photos = lib.browse(Filters())
    finally:
        lib.close()
    with _progress(as_json) as stage:
        counts = make_ahead(lib.thumbs_dir, photos, stage("thumbnails"))
    if as_json:
        _echo_json({"library": str(lib.root), **counts})
        return
    typer.echo(
        f"thumbnails ready for {counts['ready']} photos, {counts['failed']} could not be read; in {lib.thumbs_dir}"
    )


@app.command("serve")
def serve_api(
    library: LibraryOpt = None,
    port: Annotated[int, typer.Option("--port", help="Port for the API.")] = 8700,
    host: Annotated[
        str,
        typer.Option(
            "--host",
            help="Address to listen on. The default keeps the API on this "
            "computer; any other address needs a token (one is made and printed if none is given).",
        ),
    ] = "127.0.0.1",
    token: Annotated[
        Optional[str],
        typer.Option(
            "--token",
            envvar="PIXSEEK_TOKEN",
            help="API token: every request but /healthz must then send Authorization: Bearer TOKEN.",
            show_default=False,
        ),
    ] = None,
    cors_origin: Annotated[
        Optional[list[str]],
        typer.Option(
            "--cors-origin",
            help="A web origin allowed to call "
            "the API from a browser, e.g. https://photos.example (repeatable; default: none).",
            show_default=False,
        ),
    ] = None,
    allowed_host: Annotated[
        Optional[list[str]],
        typer.Option(
            "--allowed-host",
            help="A host name clients use to reach the server (repeatable); requests naming another host are refused.",
            show_default=False,
        ),
    ] = None,
    max_upload_mb: Annotated[float, typer.Option("--max-upload-mb", help="Largest query image accepted.")] = 20.0,
    device: DeviceOpt = None,
    runtime: RuntimeOpt = "torch",
    precision: PrecisionOpt = None,
    workers: Annotated[
        int,
        typer.Option(
            "--workers",
            help="Server processes, each with its own copy of the model: one process serves from "
            "about one core, so give one per core that searches may use. /metrics counts the "
            "requests of the process that answers it.",
        ),
    ] = 1,
) -> None:
    """Serve the library as an HTTP API (search, thumbnails, files, embeddings); docs at /docs."""
    from search import LibraryPaths, check_runtime_request
    from ui.api.serve import ServeOptions, run

    check_runtime_request(runtime, precision)

    run(
        ServeOptions(
            LibraryPaths.at(library),
            host,
            port,
            token,
            tuple(cors_origin or ()),
            tuple(allowed_host or ()),
            max_upload_mb,
            device,
            runtime,
            precision,
            workers,
        ),
        typer.echo,
    )


def main() -> None:
    """Console entry point: a bug, too, becomes one line on stderr (user errors are `_Commands`')."""
    # Libraries underneath (open_clip, huggingface_hub) log retries and warnings to the root
    # logger; without a handler Python prints them all. --verbose installs a real one.
    logging.getLogger().addHandler(logging.NullHandler())
    try:
        app()
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug: still one line, with a way to get the traceback
        if os.environ.get("PIXSEEK_DEBUG"):
            raise
        typer.echo(f"error: unexpected {type(exc).__name__}: {exc} (set PIXSEEK_DEBUG=1 for details)", err=True)
        sys.exit(2)
