"""The pixseek page, run by `pixseek ui` (Streamlit, through ui/page_server.py). The library comes
from $PIXSEEK_LIBRARY.

Presentation only, over ui/page_backend.py. The page never opens a path a user typed or sent:
typed text is parsed text-only, an upload is decoded in memory, "more like this" uses the stored
vector of a catalog id, and every picture shown is a catalog file served by id.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Literal

import streamlit as st

from ui.grid import photo_grid, picked
from ui.page_backend import (
    MAX_NAME_CHARS,
    MAX_QUERY_CHARS,
    MIN_EXAMPLES,
    SUPPORTED_EXTENSIONS,
    DecodeError,
    DupeGroup,
    Filters,
    LibraryInfo,
    PageLibrary,
    PixseekError,
    Result,
    SearchRequest,
    build_request,
    library_root,
    shared_library,
)
from ui.page_text import duplicates_csv, file_name, file_size, literal, model_name, moment, shown
from ui.server import MAX_UPLOAD_MB
from ui.thumbs import upload_preview

PAGE_SIZES = (20, 40, 60, 100)
# Ranking has no natural end; paging stops here.
MAX_RESULTS = 1000
LATEST = 40  # photos on the start page
START_CHOICES = 12  # folders and tags offered on the start page
DUPE_GROUPS_SHOWN = 30
EXAMPLES = ("a dog on a beach", "sunset over the sea", '"cat" + "snow" - "indoor"')
GRID_KEY = "grid"
SIDES = {"yes": "teach_yes", "no": "teach_no"}  # a side of a concept's examples -> its picker's key


@dataclass(frozen=True)
class Query:
    """What the results are for: the last thing the user typed, uploaded or picked."""

    kind: Literal["text", "image", "like"]
    label: str  # the text, the upload's file name, or the chosen photo's file name (displayable)
    text: str = ""
    image: bytes = b""
    like: int = 0


# cached queries: one copy per library version, shared by every session ---------------------------
# `version` is the library's version (PageLibrary.version): an index or tag run that commits
# changes it, and the next rerun reads the new state.
@st.cache_data(show_spinner=False, max_entries=8)
def _summary(root: str, version: str) -> LibraryInfo:
    return shared_library(Path(root)).summary()


@st.cache_data(show_spinner=False, max_entries=8)
def _folders(root: str, version: str) -> list[tuple[str, int]]:
    return shared_library(Path(root)).folder_counts()


@st.cache_data(show_spinner=False, max_entries=8)
def _tags(root: str, version: str) -> list[tuple[str, int]]:
    return shared_library(Path(root)).tag_counts()


@st.cache_data(show_spinner=False, max_entries=8)
def _date_span(root: str, version: str) -> tuple[str | None, str | None]:
    return shared_library(Path(root)).date_span()


@st.cache_data(show_spinner=False, max_entries=8)
def _latest(root: str, version: str) -> list[Result]:
    return shared_library(Path(root)).browse(Filters(), LATEST)


@st.cache_data(show_spinner="Looking for duplicates…", max_entries=2)
def _duplicates(root: str, version: str) -> list[DupeGroup]:
    return shared_library(Path(root)).duplicates()


# callbacks: each user action replaces the query, so what the page shows is what was asked last ----
def _go_to_page(page: int) -> None:
    st.session_state.page = page


def _on_text() -> None:
    text = st.session_state.q.strip()
    st.session_state.query = Query("text", text, text=text) if text else None
    st.session_state.upload_key += 1  # a new key clears the uploader
    _go_to_page(1)


def _on_upload() -> None:
    upload = st.session_state[f"upload-{st.session_state.upload_key}"]
    st.session_state.query = Query("image", shown(upload.name), image=upload.getvalue()) if upload else None
    st.session_state.q = ""
    _go_to_page(1)


def _like(image_id: int) -> None:
    photo = shared_library(library_root()).get(image_id)
    st.session_state.query = Query("like", file_name(photo.path) if photo else f"photo {image_id}", like=image_id)
    st.session_state.q = ""
    st.session_state.upload_key += 1
    _go_to_page(1)


def _on_grid_like() -> None:
    _like(int(picked(GRID_KEY, "like")))


def _pick_tag(label: str) -> None:
    st.session_state.tag = label
    st.session_state.view = "Photos"
    _go_to_page(1)


def _on_grid_tag() -> None:
    _pick_tag(picked(GRID_KEY, "tag"))


def _on_grid_mark() -> None:
    """A photo ticked as showing (yes) or not showing (no) the concept being taught: onto that
    side, off the other."""
    mark = picked(GRID_KEY, "mark")
    image_id = int(mark["id"])
    for side, key in SIDES.items():
        others = [i for i in st.session_state.get(key, []) if i != image_id]
        st.session_state[key] = [*others, image_id] if side == mark["side"] else others


def _teach(lib: PageLibrary) -> None:
    state = st.session_state
    try:
        concept = lib.teach(state.get("teach_name", ""), state.get("teach_yes", []), state.get("teach_no", []))
    except PixseekError as exc:
        state.taught = (st.error, str(exc), [])
        return
    accuracy = "n/a (too few examples)" if concept.loo_accuracy is None else f"{concept.loo_accuracy:.2f}"
    state.taught = (
        st.success,
        f"Taught **{literal(concept.name)}** from {len(concept.yes_ids)} yes and {len(concept.no_ids)} no "
        f"examples · held-out accuracy {accuracy}",
        concept.warnings,
    )
    state.teach_yes, state.teach_no = [], []


def _pick_folder(index: int) -> None:
    st.session_state.folder = index
    _go_to_page(1)


# searching --------------------------------------------------------------------------------------
def _checked_upload(query: Query) -> bytes:
    if len(query.image) > MAX_UPLOAD_MB * 1024 * 1024:
        raise PixseekError(
            f"{query.label} is {len(query.image) / 1024 / 1024:.0f} MB, over the "
            f"{MAX_UPLOAD_MB} MB limit for example photos",
            "upload a smaller copy",
        )
    return query.image


def _request(query: Query | None, words: str, concept: str | None, filters: Filters, k: int) -> SearchRequest | None:
    """The search to show, made as the CLI and the API make theirs; None: browse the filtered photos."""
    if query is None and not words and concept is None:
        return None
    kind = query.kind if query is not None else None
    return build_request(
        query.text if kind == "text" else None,
        words=words or None,
        image=_checked_upload(query) if kind == "image" else None,
        like=query.like if kind == "like" else None,
        k=k,
        filters=filters,
        concept=concept,
        allow_paths=False,
    )


def _results(lib: PageLibrary, request: SearchRequest | None, filters: Filters, k: int) -> list[Result]:
    """Results for the request (or, without one, the filtered photos latest first), kept in the
    session so reruns (paging back, another tab of the sidebar) are free."""
    key = (request, filters, k)
    cached = st.session_state.get("results")
    if cached is not None and cached[0] == key:
        return cached[1]
    results = lib.browse(filters, k) if request is None else lib.search(request)
    st.session_state.results = (key, results)
    return results


def _explanation(lib: PageLibrary, request: SearchRequest, image_id: int) -> dict | None:
    key = (request, image_id)
    cached = st.session_state.get("explained")
    if cached is None or cached[0] != key:
        st.session_state.explained = cached = (key, lib.explain(request, image_id))
    return cached[1]


# presentation -----------------------------------------------------------------------------------
def _sidebar(
    root: str, version: str, summary: LibraryInfo, concepts: list[str], runtime: str | None
) -> tuple[Filters, int, str, str | None]:
    folders = _folders(root, version)
    tags = _tags(root, version)
    first, last = _date_span(root, version)
    with st.sidebar:
        view = (
            st.segmented_control(
                "View", ["Photos", "Duplicates"], key="view", label_visibility="collapsed", width="stretch"
            )
            or "Photos"
        )
        st.markdown("### Narrow down")
        # Choices are indices: a folder name need not be UTF-8, and only its displayable form is sent.
        folder = st.selectbox(
            "Folder",
            range(len(folders)),
            index=None,
            key="folder",
            placeholder="All folders",
            format_func=lambda i: f"{shown(folders[i][0])} ({folders[i][1]:,})",
            on_change=_go_to_page,
            args=(1,),
        )
        tag = st.selectbox(
            "Tag",
            [label for label, _ in tags],
            index=None,
            key="tag",
            placeholder="Any tag",
            disabled=not tags,
            on_change=_go_to_page,
            args=(1,),
            help=None if tags else "Run `pixseek tag --labels labels.txt` to tag the photos.",
        )
        if first is None:
            st.date_input(
                "Taken between",
                value=(),
                key="dates",
                disabled=True,
                help="No photo in this library records the date it was taken.",
            )
            dates: tuple[date, ...] = ()
        else:
            dates = st.date_input(
                "Taken between",
                value=(),
                min_value=date.fromisoformat(first),
                max_value=date.fromisoformat(last),
                key="dates",
                format="YYYY-MM-DD",
                on_change=_go_to_page,
                args=(1,),
            )
        concept = st.selectbox(
            "Concept",
            concepts,
            index=None,
            key="concept",
            placeholder="No concept",
            disabled=not concepts,
            on_change=_go_to_page,
            args=(1,),
            help="Ranks by a concept you taught, or with a search keeps the photos likely to show it."
            if concepts
            else "Teach one below the results: tick photos that show it and photos that don't.",
        )
        per_page = st.selectbox("Photos per page", PAGE_SIZES, key="per_page", on_change=_go_to_page, args=(1,))
        _about(summary, root, runtime)
    filters = Filters(
        folder=None if folder is None or folder >= len(folders) else folders[folder][0],
        tag=tag,
        date_from=dates[0].isoformat() if len(dates) > 0 else None,
        date_to=dates[1].isoformat() if len(dates) > 1 else None,
    )
    return filters, per_page, view, concept


def _about(summary: LibraryInfo, root: str, runtime: str | None) -> None:
    st.markdown("### Library")
    st.caption(
        f"**{summary.images:,}** photos · indexed {moment(summary.last_indexed_at)}  \n"
        f"Model {literal(model_name(summary.model))} · index {literal(summary.index['type'])}  \n"
        + (f"Runtime {literal(runtime)}  \n" if runtime else "")
        + literal(root)
    )
    if summary.skipped:
        with st.expander(f"{summary.skipped:,} files skipped"):
            for reason, n in sorted(summary.skipped_reasons.items(), key=lambda kv: -kv[1]):
                st.caption(f"**{n:,}** · {literal(reason)}")


def _search_bar() -> None:
    text_col, words_col, upload_col = st.columns([4, 2, 1], vertical_alignment="bottom")
    text_col.text_input(
        "Search",
        key="q",
        on_change=_on_text,
        type="search",
        label_visibility="collapsed",
        max_chars=MAX_QUERY_CHARS,
        placeholder='Describe a photo: a dog on a beach, "cat" + "snow" - "indoor"',
    )
    words_col.text_input(
        "Words in photo",
        key="words",
        on_change=_go_to_page,
        args=(1,),
        type="search",
        label_visibility="collapsed",
        max_chars=MAX_QUERY_CHARS,
        placeholder='Words in photo: total "42.50"',
        help='Only photos whose text holds every word or "quoted phrase" (the text read by pixseek ocr, '
        "file and folder names, tags), ranked with the search.",
    )
    with upload_col.popover("By photo", width="stretch", help="Search by an example photo"):
        st.file_uploader(
            f"Find photos like this one (up to {MAX_UPLOAD_MB} MB)",
            type=sorted(SUPPORTED_EXTENSIONS),
            max_upload_size=MAX_UPLOAD_MB,
            key=f"upload-{st.session_state.upload_key}",
            on_change=_on_upload,
        )


def _start_page(lib: PageLibrary, root: str, version: str) -> None:
    """Before the first query: the latest photos, the folders and the tags, each one click away."""
    st.caption(
        "Describe a photo to find it, e.g. "
        + ", ".join(literal(e) for e in EXAMPLES)
        + ". Join ideas with **+**, leave things out with **-**, or search by an example photo."
    )
    folders = _folders(root, version)
    tags = _tags(root, version)
    if folders:
        with st.container(horizontal=True, gap="small", key="start-folders"):
            st.markdown("**Folders**", width="content")
            for i, (folder, n) in enumerate(folders[:START_CHOICES]):
                st.button(
                    f"{literal(Path(folder).name or folder)} · {n:,}",
                    key=f"folder-{i}",
                    type="tertiary",
                    help=literal(folder),
                    on_click=_pick_folder,
                    args=(i,),
                )
    if tags:
        with st.container(horizontal=True, gap="small", key="start-tags"):
            st.markdown("**Tags**", width="content")
            for i, (label, n) in enumerate(tags[:START_CHOICES]):
                st.button(
                    f"{literal(label)} · {n:,}", key=f"tag-{i}", type="tertiary", on_click=_pick_tag, args=(label,)
                )
    latest = _latest(root, version)
    st.markdown("#### Latest photos", help="By the date they were taken")
    photo_grid(
        latest,
        lib.tags_of([p.id for p in latest]),
        scored=False,
        key=GRID_KEY,
        on_like=_on_grid_like,
        on_tag=_on_grid_tag,
    )


def _query_heading(query: Query | None, words: str, concept: str | None, filters: Filters) -> None:
    if query is None and not words and concept is None:
        st.markdown("#### " + literal(" · ".join(p for p in (filters.tag, filters.folder) if p) or "Photos"))
    elif query is None:
        st.markdown("#### Photos")
    elif query.kind == "like":
        st.markdown(f"#### Photos like **{literal(query.label)}**")
    elif query.kind == "image":
        left, right = st.columns([1, 11], vertical_alignment="center")
        try:
            # Searching has already decoded these bytes safely; the raw upload is never handed to st.image.
            left.image(upload_preview(query.image), width="stretch")
        except DecodeError:
            pass
        right.markdown(f"#### Photos like your **{literal(query.label)}**")
    also = ([f"with the words **{literal(words)}**"] if words else []) + (
        [f"concept **{literal(concept)}**"] if concept else []
    )
    if also:
        st.caption(" · ".join(also))


def _pager(page: int, has_next: bool) -> None:
    prev, label, nxt = st.columns([1, 2, 1], vertical_alignment="center")
    prev.button(
        "Previous",
        key="previous",
        icon=":material/chevron_left:",
        disabled=page == 1,
        on_click=_go_to_page,
        args=(page - 1,),
        width="stretch",
    )
    label.markdown(f"Page {page}", text_alignment="center")
    nxt.button(
        "Next",
        key="next",
        icon=":material/chevron_right:",
        icon_position="right",
        disabled=not has_next,
        on_click=_go_to_page,
        args=(page + 1,),
        width="stretch",
    )


def _photos(
    lib: PageLibrary,
    root: str,
    version: str,
    filters: Filters,
    per_page: int,
    concept: str | None,
    start: float,
) -> None:
    query: Query | None = st.session_state.get("query")
    words = st.session_state.get("words", "").strip()
    if query is None and not words and concept is None and not filters.active():
        _start_page(lib, root, version)
        return
    page = st.session_state.page
    want = min(page * per_page, MAX_RESULTS)
    try:
        # One more than the page needs tells whether there is a next page.
        request = _request(query, words, concept, filters, min(want + 1, MAX_RESULTS))
        results = _results(lib, request, filters, min(want + 1, MAX_RESULTS))
    except PixseekError as exc:
        (st.error if query is not None and query.kind == "image" else st.warning)(str(exc))
        return
    _query_heading(query, words, concept, filters)
    shown_now = results[(page - 1) * per_page : want]
    if not shown_now:
        hint = " in this folder, tag or date range: widen the filters" if filters.active() else ""
        st.info(f"No photos found{hint}.")
        return
    first = (page - 1) * per_page + 1
    order = "Best matches first" if request is not None else "Latest first"
    st.caption(f"{order} · {first}–{first + len(shown_now) - 1} · {time.perf_counter() - start:.2f} s")
    progress = lib.in_progress()
    if progress is not None:
        st.caption(f"Note: {progress}.")
    photo_grid(
        shown_now,
        lib.tags_of([p.id for p in shown_now]),
        scored=request is not None,
        key=GRID_KEY,
        on_like=_on_grid_like,
        on_tag=_on_grid_tag,
        on_mark=_on_grid_mark,
    )
    _pager(page, has_next=len(results) > want)
    if request is not None:
        _explain_view(lib, request, shown_now)
    _teach_view(lib, shown_now)


def _choice(photo: Result) -> str:
    # Two folders may hold files of the same name, and a picker must tell its choices apart.
    return f"{file_name(photo.path)} · #{photo.id}"


def _explain_view(lib: PageLibrary, request: SearchRequest, photos: list[Result]) -> None:
    """Why a result matched: each term's part of its score, the words matched, its tags and concepts."""
    names = {p.id: _choice(p) for p in photos}
    picked_one = st.session_state.get("explain_id") is not None
    with st.expander("Why did this match?", icon=":material/help:", expanded=picked_one):
        image_id = st.selectbox(
            "Result", list(names), index=None, key="explain_id", placeholder="Pick a result", format_func=names.get
        )
        if image_id is None:
            return
        why = _explanation(lib, request, image_id)
        if why is None:
            st.info("That photo is no longer among the results.")
            return
        st.markdown(f"Score **{why['score']:.4f}**")
        if why["fusion"]:
            parts = " + ".join(f"{name} {part:.4f}" for name, part in why["fusion"].items())
            st.caption(f"Rankings fused, each adding its reciprocal rank: {parts}")
        if why["terms"]:
            st.caption(f"Meaning: cosine {why['semantic_score']:.4f}, the sum of the terms' contributions")
            st.dataframe(
                [
                    {
                        "Term": shown(t["term"]),
                        "Weight": t["weight"],
                        "Similarity": t["similarity"],
                        "Contribution": t["contribution"],
                    }
                    for t in why["terms"]
                ],
                hide_index=True,
                key="explain_terms",
            )
        for label, values in (
            ("Words matched", why["matched_words"]),
            ("Tags", why["tags"]),
            ("Concepts", [f"{name} {p:.2f}" for name, p in why["concepts"].items()]),
        ):
            st.markdown(f"**{label}** " + (literal(", ".join(values)) if values else "none"))


def _teach_view(lib: PageLibrary, photos: list[Result]) -> None:
    """Teach a concept from ticked results: those that show it and those that don't."""
    state = st.session_state
    names = state.setdefault("teach_names", {})
    names.update({p.id: _choice(p) for p in photos})
    ticked = [*state.get("teach_yes", []), *state.get("teach_no", [])]
    # Photos ticked on another page stay offered, so paging keeps the examples.
    options = list(dict.fromkeys([p.id for p in photos] + ticked))
    taught = state.pop("taught", None)
    with st.expander("Teach a concept", icon=":material/school:", expanded=bool(ticked or taught)):
        st.caption(
            "Tick photos that show it and photos that don't (Yes / No in the large view, or here), "
            f"at least {MIN_EXAMPLES} of each; then pick it under Concept. Teaching a name again adds examples."
        )
        st.text_input("Name", key="teach_name", max_chars=MAX_NAME_CHARS, placeholder="e.g. our kitchen")
        yes_col, no_col = st.columns(2)
        yes_col.multiselect("Shows it", options, key="teach_yes", format_func=names.get, placeholder="Yes photos")
        no_col.multiselect("Doesn't show it", options, key="teach_no", format_func=names.get, placeholder="No photos")
        st.button("Teach", key="teach", icon=":material/school:", on_click=_teach, args=(lib,))
        if taught is not None:
            say, message, warnings = taught
            say(message)
            for warning in warnings:
                st.warning(warning)


@st.fragment
def _duplicates_view(lib: PageLibrary, root: str, version: str) -> None:
    """Groups of copies side by side; the copy to keep is marked in the catalog. Nothing is deleted."""
    problem = st.session_state.pop("dupes_problem", None)
    if problem:
        st.warning(problem)
    groups = _duplicates(root, version)
    if not groups:
        st.info("No duplicates found: no two photos in this library are copies of each other.")
        return
    kept = lib.kept()
    decided = {i for keep, others in kept.items() for i in (keep, *others)}
    left, right = st.columns([3, 1], vertical_alignment="center")
    left.markdown(
        f"#### {len(groups):,} groups of duplicates · {sum(g.photos[0].id in decided for g in groups):,} decided"
    )
    right.download_button(
        "Export the list",
        duplicates_csv(groups, kept),
        file_name="pixseek-duplicates.csv",
        mime="text/csv",
        icon=":material/download:",
        width="stretch",
        help="One row per file: its group, keep / copy / undecided, and its path. "
        "pixseek never deletes or moves a file.",
    )
    for n, group in enumerate(groups[:DUPE_GROUPS_SHOWN]):
        ids = [p.id for p in group.photos]
        keep = next((k for k in kept if k in ids), None)
        with st.container(border=True, key=f"dupes-{n}"):
            st.caption(f"{'Same file' if group.kind == 'exact' else 'Same picture'} · {len(ids)} copies")
            columns = st.columns(min(len(ids), 6))
            for column, photo in zip(columns, group.photos):
                with column:
                    photo_grid([photo], {}, scored=False, key=f"dupe-{photo.id}")
                    dims = f"{photo.width} × {photo.height} px · " if photo.width and photo.height else ""
                    st.caption(f"{literal(file_name(photo.path))}  \n{dims}{file_size(photo.size)}")
                    st.button(
                        "Keep" if keep != photo.id else "Kept",
                        key=f"keep-{photo.id}",
                        type="primary" if keep == photo.id else "secondary",
                        width="stretch",
                        icon=":material/check:" if keep == photo.id else None,
                        on_click=_mark_keep,
                        args=(lib, photo.id, ids),
                    )
    if len(groups) > DUPE_GROUPS_SHOWN:
        st.caption(f"… and {len(groups) - DUPE_GROUPS_SHOWN:,} more groups in the exported list")


def _mark_keep(lib: PageLibrary, keep: int, group: list[int]) -> None:
    try:
        lib.mark_keep(keep, group)
    except PixseekError as exc:
        st.session_state.dupes_problem = str(exc)


def main() -> None:
    start = time.perf_counter()
    st.set_page_config(page_title="pixseek", page_icon="🔎", layout="wide")
    # Streamlit's top margin leaves room for a toolbar the viewer mode hides: give it to photos.
    st.html("<style>[data-testid='stMainBlockContainer'] {padding-top: 4.25rem}</style>")
    st.session_state.setdefault("page", 1)
    st.session_state.setdefault("upload_key", 0)
    root = library_root()
    try:
        lib = shared_library(root)
        version = lib.version()
        summary = _summary(str(root), version)
        if summary.images == 0:
            raise PixseekError(
                f"the library at {root} has no photos yet", f"run `pixseek index FOLDER --library {root}` to add some"
            )
    except PixseekError as exc:
        st.info(str(exc))
        return
    filters, per_page, view, concept = _sidebar(str(root), version, summary, lib.concepts(), lib.runtime_in_use())
    if view == "Duplicates":
        _duplicates_view(lib, str(root), version)
        return
    _search_bar()
    try:
        with st.spinner("Loading the model (once)…"):
            lib.load_model()
    except PixseekError as exc:
        st.error(str(exc))
        return
    _photos(lib, str(root), version, filters, per_page, concept, start)


main()
