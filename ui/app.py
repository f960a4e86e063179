"""The pixseek page, run by `pixseek ui` (Streamlit). The library comes from $PIXSEEK_LIBRARY.

Presentation only, over `search.engine.Library` and `ui.thumbs`. The page never opens a path a
user typed or sent: typed text is parsed text-only, an upload is decoded in memory, "more like
this" uses the stored vector of a catalog id, and every picture shown is a catalog file.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Literal

import streamlit as st

from indexer.decode import SUPPORTED_EXTENSIONS
from indexer.errors import PixseekError
from indexer.library import LibraryPaths
from indexer.model import Encoder
from search.engine import Library, Result
from search.filters import Filters
from ui.thumbs import GRID, LARGE, thumbnail, thumbnails, upload_preview

MAX_UPLOAD_MB = 20
PAGE_SIZES = (20, 40, 60, 100)
CARD_WIDTH = 220  # px: cards flow into as many columns as the window has room for
# Ranking has no natural end; paging stops here.
MAX_RESULTS = 1000
ALL_FOLDERS = "All folders"
EXAMPLES = ("a dog on a beach", "sunset over the sea", '"cat" + "snow" - "indoor"')


@dataclass(frozen=True)
class Query:
    """What the results are for: the last thing the user typed, uploaded or picked."""

    kind: Literal["text", "image", "like"]
    label: str  # the text, the upload's file name, or the chosen photo's file name
    text: str = ""
    image: bytes = b""
    like: int = 0


@dataclass
class Shared:
    """One per process and library, shared by every browser tab."""

    library: Library
    # Sessions run in threads; the catalog connection and the model are not made for concurrent use.
    lock: threading.Lock


@st.cache_resource(show_spinner=False)
def _open(root: str) -> Shared:
    """Catalog and index, opened once. Raising keeps it out of the cache, so it is retried."""
    library = Library.open(root)
    if library.info()["images"] == 0:
        library.close()
        raise PixseekError(f"the library at {root} has no photos yet",
                           f"run `pixseek index FOLDER --library {root}` to add some")
    return Shared(library, threading.Lock())


@st.cache_resource(show_spinner=False)
def _load_model(root: str) -> Encoder:
    """The model, loaded once per process (the cached Library keeps it too)."""
    shared = _open(root)
    with shared.lock:
        return shared.library.encoder


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
    st.session_state.query = Query("image", upload.name, image=upload.getvalue()) if upload else None
    st.session_state.q = ""
    _go_to_page(1)


def _on_like(image_id: int, name: str) -> None:
    st.session_state.query = Query("like", name, like=image_id)
    st.session_state.q = ""
    st.session_state.upload_key += 1
    _go_to_page(1)


# searching --------------------------------------------------------------------------------------
def _checked_upload(query: Query) -> bytes:
    if len(query.image) > MAX_UPLOAD_MB * 1024 * 1024:
        raise PixseekError(f"{query.label} is {len(query.image) / 1024 / 1024:.0f} MB, over the "
                           f"{MAX_UPLOAD_MB} MB limit for example photos", "upload a smaller copy")
    return query.image


def _search(shared: Shared, query: Query, filters: Filters, k: int) -> list[Result]:
    """Results for the query, kept in the session so reruns (paging back, opening a photo) are free."""
    key = (query, filters, k)
    cached = st.session_state.get("results")
    if cached is not None and cached[0] == key:
        return cached[1]
    lib = shared.library
    with shared.lock:
        if query.kind == "text":
            results = lib.search(query.text, k=k, filters=filters, allow_paths=False)
        elif query.kind == "image":
            results = lib.search(image=_checked_upload(query), k=k, filters=filters)
        else:
            results = lib.search(like=query.like, k=k, filters=filters)
    st.session_state.results = (key, results)
    return results


# presentation -----------------------------------------------------------------------------------
def _day(iso: str | None) -> str:
    return "" if not iso else f"{int(iso[8:10])} {date.fromisoformat(iso[:10]):%b %Y}"


def _md(text: str) -> str:
    """File names shown as Markdown: `$`, `*`, `_`... in a name must not turn into maths or emphasis."""
    return re.sub(r"([\\`*_$\[\]<>~|])", r"\\\1", text)


def _file_size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{max(1, round(n / 1e3))} KB"


def _model_name(spec: str | None) -> str:
    if spec and spec.startswith("local-dir:"):
        return f"{Path(spec[len('local-dir:'):]).name} (local folder)"
    return spec or "none"


def _sidebar(shared: Shared) -> tuple[Filters, int]:
    lib = shared.library
    with shared.lock:
        info = lib.info()
        folders = lib.folders()
        first, last = lib.date_span()
    with st.sidebar:
        st.markdown("### :material/photo_library: Library")
        st.metric("Photos", f"{info['images']:,}")
        indexed = info["last_indexed_at"]
        local = datetime.fromisoformat(indexed).astimezone() if indexed else None
        when = f"{local.day} {local:%b %Y, %H:%M}" if local else "never"
        st.caption(f"**Model** {_model_name(info['model'])}  \n**Index** {info['index']['type']}  \n"
                   f"**Last indexed** {when}  \n**Folder** `{info['library']}`")
        if info["skipped"]:
            with st.expander(f"{info['skipped']:,} files skipped"):
                for reason, n in sorted(info["skipped_reasons"].items(), key=lambda kv: -kv[1]):
                    st.caption(f"**{n:,}** · {reason}")
        st.markdown("### :material/filter_list: Narrow down")
        folder = st.selectbox("Folder", [ALL_FOLDERS, *folders], key="folder", on_change=_go_to_page, args=(1,))
        if first is None:
            st.date_input("Taken between", value=(), key="dates", disabled=True,
                          help="No photo in this library records the date it was taken.")
            dates: tuple[date, ...] = ()
        else:
            dates = st.date_input("Taken between", value=(), min_value=date.fromisoformat(first),
                                  max_value=date.fromisoformat(last), key="dates", format="YYYY-MM-DD",
                                  on_change=_go_to_page, args=(1,))
        per_page = st.selectbox("Photos per page", PAGE_SIZES, key="per_page", on_change=_go_to_page, args=(1,))
    filters = Filters(
        folder=None if folder == ALL_FOLDERS else folder,
        date_from=dates[0].isoformat() if len(dates) > 0 else None,
        date_to=dates[1].isoformat() if len(dates) > 1 else None,
    )
    return filters, per_page


def _search_bar() -> None:
    text_col, upload_col = st.columns([4, 1], vertical_alignment="bottom")
    text_col.text_input("Search", key="q", on_change=_on_text, type="search", label_visibility="collapsed",
                        placeholder='Describe a photo: a dog on a beach, "cat" + "snow" - "indoor"')
    with upload_col.popover("Search by photo", icon=":material/add_photo_alternate:", width="stretch"):
        st.file_uploader(f"Find photos like this one (up to {MAX_UPLOAD_MB} MB)",
                         type=sorted(SUPPORTED_EXTENSIONS), max_upload_size=MAX_UPLOAD_MB,
                         key=f"upload-{st.session_state.upload_key}", on_change=_on_upload)


def _welcome() -> None:
    st.markdown("#### Find any photo by describing it")
    st.caption("Try " + ", ".join(f"`{e}`" for e in EXAMPLES) + ". Join ideas with **+**, leave things out "
               "with **-**, or search by an example photo.")


def _query_heading(query: Query) -> None:
    if query.kind == "like":
        st.markdown(f"#### Photos like **{_md(query.label)}**")
    elif query.kind == "image":
        left, right = st.columns([1, 11], vertical_alignment="center")
        # Searching has already decoded these bytes safely; the raw upload is never handed to st.image.
        left.image(upload_preview(query.image), width="stretch")
        right.markdown(f"#### Photos like your **{_md(query.label)}**")


@st.dialog("Photo", width="large")
def _show_photo(result: Result, thumbs_dir: Path) -> None:
    name = Path(result.path).name
    picture, about = st.columns([3, 2], gap="medium")
    big = thumbnail(thumbs_dir, result, LARGE)
    if big.image is None:
        picture.warning(f"cannot show {name}: {big.problem}")
    else:
        picture.image(big.image, width="stretch")
    about.markdown(f"**{_md(name)}**")
    rows = {"Path": f"`{result.path}`", "Taken": _day(result.taken_at) or "unknown"}
    camera = " ".join(p for p in (result.camera_make, result.camera_model) if p)
    if camera:
        rows["Camera"] = camera
    if result.width and result.height:
        rows["Size"] = f"{result.width} × {result.height} px, {_file_size(result.size)}"
    if result.lat is not None and result.lon is not None:
        rows["Location"] = (f"[{result.lat:.5f}, {result.lon:.5f}](https://www.openstreetmap.org/"
                            f"?mlat={result.lat}&mlon={result.lon}#map=15/{result.lat}/{result.lon})")
    rows["Match"] = f"{result.score:.3f}"
    about.markdown("\n".join(f"- **{k}** {v}" for k, v in rows.items()))
    if about.button("More like this", key=f"dialog-like-{result.id}", icon=":material/image_search:"):
        _on_like(result.id, name)
        st.rerun()  # the dialog is a fragment; the results below it must change too


def _grid(results: list[Result], thumbs_dir: Path) -> None:
    # One wrapping row and few elements per card: drawing them, not searching, is what a big page
    # costs in the browser (a grid of st.columns rows measured about a third slower).
    with st.container(horizontal=True, wrap=True, gap="small"):
        for result, thumb in zip(results, thumbnails(thumbs_dir, results, GRID)):
            name = Path(result.path).name
            with st.container(border=True, gap="small", width=CARD_WIDTH, key=f"card-{result.id}"):
                if thumb.image is None:
                    st.warning(thumb.problem or "cannot show this photo", icon=":material/broken_image:")
                else:
                    st.image(thumb.image, width="stretch")
                if st.button(_md(name), key=f"open-{result.id}", type="tertiary", help="Open large, with details"):
                    _show_photo(result, thumbs_dir)
                st.caption(" · ".join(p for p in (f"match {result.score:.2f}", _day(result.taken_at)) if p))
                st.button("More like this", key=f"like-{result.id}", on_click=_on_like, args=(result.id, name),
                          icon=":material/image_search:", width="stretch")


def _pager(page: int, has_next: bool) -> None:
    prev, label, nxt = st.columns([1, 2, 1], vertical_alignment="center")
    prev.button("Previous", key="previous", icon=":material/chevron_left:", disabled=page == 1, on_click=_go_to_page,
                args=(page - 1,), width="stretch")
    label.markdown(f"Page {page}", text_alignment="center")
    nxt.button("Next", key="next", icon=":material/chevron_right:", icon_position="right", disabled=not has_next,
               on_click=_go_to_page, args=(page + 1,), width="stretch")


def main() -> None:
    st.set_page_config(page_title="pixseek", page_icon=":material/image_search:", layout="wide")
    st.session_state.setdefault("page", 1)
    st.session_state.setdefault("upload_key", 0)
    root = str(LibraryPaths.at(None).root)
    st.title(":material/image_search: pixseek")
    try:
        shared = _open(root)
    except PixseekError as exc:
        st.info(str(exc))
        return
    filters, per_page = _sidebar(shared)
    _search_bar()
    try:
        with st.spinner("Loading the model (once)…"):
            _load_model(root)
    except PixseekError as exc:
        st.error(str(exc))
        return
    query: Query | None = st.session_state.get("query")
    if query is None:
        _welcome()
        return
    page = st.session_state.page
    want = min(page * per_page, MAX_RESULTS)
    start = time.perf_counter()
    try:
        # One more than the page needs tells whether there is a next page.
        results = _search(shared, query, filters, min(want + 1, MAX_RESULTS))
    except PixseekError as exc:
        (st.error if query.kind == "image" else st.warning)(str(exc))
        return
    _query_heading(query)
    shown = results[(page - 1) * per_page:want]
    if not shown:
        hint = " in this folder or date range: widen the filters" if filters.active() else ""
        st.info(f"No photos found{hint}.")
        return
    first = (page - 1) * per_page + 1
    st.caption(f"Best matches first · {first}–{first + len(shown) - 1} · {time.perf_counter() - start:.2f} s")
    _grid(shown, shared.library.paths.thumbs)
    _pager(page, has_next=len(results) > want)


main()
