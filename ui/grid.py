"""The results grid: one Streamlit component (ui/static/grid.js) for a whole page of photos.

One element instead of a card of widgets per photo: the browser draws it at once and fetches the
thumbnails from the page server's /thumb route in parallel. Clicking a photo opens the large view
in the browser, without a round trip; only "More like this", a tag choice and a photo ticked as a
concept's example (Yes / No) come back to Python.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import streamlit as st

from ui.page_backend import Result
from ui.page_text import camera, day, file_name, file_size, shown
from ui.thumbs import GRID, LARGE, thumb_url

STATIC = Path(__file__).with_name("static")
_component = st.components.v2.component(
    "pixseek_grid",
    css=(STATIC / "grid.css").read_text(encoding="utf-8"),
    js=(STATIC / "grid.js").read_text(encoding="utf-8"),
)


def photo_data(photo: Result, tags: list[str], scored: bool) -> dict[str, Any]:
    """What the grid shows of one photo: every string already made displayable (`shown`)."""
    return {
        "id": photo.id,
        "thumb": thumb_url(photo, GRID),
        "large": thumb_url(photo, LARGE),
        "name": file_name(photo.path),
        "path": shown(photo.path),
        "folder": shown(photo.folder),
        "score": f"{photo.score:.2f}" if scored else "",
        "date": day(photo.taken_at),
        "camera": camera(photo.camera_make, photo.camera_model),
        "dims": f"{photo.width} × {photo.height} px, {file_size(photo.size)}"
        if photo.width and photo.height
        else file_size(photo.size),
        "place": f"{photo.lat:.5f}, {photo.lon:.5f}" if photo.lat is not None and photo.lon is not None else "",
        "tags": [shown(t) for t in tags],
        "words": ", ".join(shown(w) for w in photo.matched_words or []),
    }


def photo_grid(
    photos: list[Result],
    tags: dict[int, list[str]],
    *,
    scored: bool,
    key: str,
    on_like: Callable[[], None] | None = None,
    on_tag: Callable[[], None] | None = None,
    on_mark: Callable[[], None] | None = None,
) -> None:
    """Draw the grid; a click on "More like this", on a tag or on Yes / No calls on_like / on_tag /
    on_mark, which read the choice with `picked(key, "like")` (a photo id), `picked(key, "tag")`
    (a label) or `picked(key, "mark")` ({"id", "side": "yes" or "no"}). Without on_like the photos
    offer no "More like this", without on_mark no Yes / No."""
    data = {
        "photos": [photo_data(p, tags.get(p.id, []), scored) for p in photos],
        "likeable": on_like is not None,
        "markable": on_mark is not None,
    }
    _component(data=data, key=key, on_like_change=on_like, on_tag_change=on_tag, on_mark_change=on_mark)


def picked(key: str, event: str) -> Any:
    """The value of the grid's last `event` ("like", "tag" or "mark")."""
    return st.session_state[key][event]
