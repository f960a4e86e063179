"""Text for the page made from values read out of photo files and folder names.

Such values are shown as text, never as Markdown or HTML: a camera make, a file name or a folder
can hold anything (`[click me](https://...)`, `<img src=...>`, bytes that are not UTF-8).
"""

from __future__ import annotations

import csv
import io
import os
import re
import string
import unicodedata
from datetime import date, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ui.page_backend import DupeGroup

# CommonMark lets a backslash escape any ASCII punctuation, and then it is only that character.
_MARKDOWN_SPECIAL = re.compile("([" + re.escape(string.punctuation) + "])")


def shown(text: str) -> str:
    """A str the browser can display exactly: bytes that are not UTF-8 (lone surrogates from a file
    name) as \\xNN, control characters (newlines, terminal escapes) as \\xNN or \\uNNNN."""
    if text.isprintable():
        return text
    readable = os.fsencode(text).decode("utf-8", "backslashreplace") if _has_surrogates(text) else text
    return "".join(ch if ch == " " or unicodedata.category(ch)[0] != "C" else ascii(ch)[1:-1] for ch in readable)


def _has_surrogates(text: str) -> bool:
    return any("\ud800" <= ch <= "\udfff" for ch in text)


def literal(text: str) -> str:
    """`shown(text)` for a Markdown element (st.markdown, st.caption, a button label): every
    punctuation character escaped, so nothing in it becomes a link, an image, code or emphasis."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", shown(text))


def file_name(path: str) -> str:
    return shown(Path(path).name)


def camera(make: str | None, model: str | None) -> str:
    """'Canon' + 'Canon PowerShot SX60 HS' -> 'Canon PowerShot SX60 HS': the make once.

    Makers often repeat their name in the model, sometimes in short ('NIKON CORPORATION' +
    'NIKON D70'), so the make is left out when the model starts with its first word.
    """
    make, model = (make or "").strip(), (model or "").strip()
    if not model:
        return shown(make)
    brand = make.split()[0].lower() if make else ""
    if not brand or model.lower().split()[0] == brand:
        return shown(model)
    return shown(f"{make} {model}")


def day(iso: str | None) -> str:
    if not iso:
        return ""
    taken = date.fromisoformat(iso[:10])
    return f"{taken.day} {taken:%b %Y}"


def moment(iso: str | None) -> str:
    """A stored timestamp in the reader's time zone, e.g. '3 Dec 2026, 14:05'."""
    if not iso:
        return "never"
    local = datetime.fromisoformat(iso).astimezone()
    return f"{local.day} {local:%b %Y, %H:%M}"


def file_size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{max(1, round(n / 1e3))} KB"


def model_name(spec: str | None) -> str:
    if spec and spec.startswith("local-dir:"):
        return f"{Path(spec[len('local-dir:') :]).name} (local folder)"
    return spec or "none"


def duplicates_csv(groups: list[DupeGroup], kept: dict[int, list[int]]) -> bytes:
    """The review as a list: one row per file with its group, keep / copy / undecided, and its path."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["group", "decision", "path"])
    for n, group in enumerate(groups, 1):
        ids = {p.id for p in group.photos}
        keep = next((k for k in kept if k in ids), None)
        for photo in group.photos:
            decision = "undecided" if keep is None else "keep" if photo.id == keep else "copy"
            writer.writerow([n, decision, photo.path])
    # A file name that is not UTF-8 goes out as its own bytes, so the list names the real file.
    return out.getvalue().encode("utf-8", "surrogateescape")
