"""Query syntax: text, example images and weights combined with + and -.

    a dog on a beach                  one text term
    "cat" + "snow" - "indoor"         terms added and subtracted
    2:"cat" + 0.5:snow                weighted terms
    ~/Pictures/dog.jpg + "in snow"    an image file mixed with text (any existing image path)

Operators separate terms only when surrounded by spaces, so "t-shirt" stays one word.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from indexer.errors import PixseekError
from indexer.library.paths import is_image_name

TermKind = Literal["text", "image", "id"]

# Anything number-like before a colon is a weight, checked by `_weight` (so 1e309: and nan: are
# refused as weights rather than read as text with a stray quote).
_WEIGHT = re.compile(r"^([+-]?(?:[\d.]+(?:e[+-]?\d+)?|nan|inf(?:inity)?)):(?=\S|$)", re.IGNORECASE)
# One query is embedded term by term under a lock a page's sessions share: bounded, so one request
# cannot hold it for minutes. Far above any query a person types.
MAX_QUERY_CHARS = 1000
MAX_TERMS = 16
MAX_WEIGHT = 100.0


@dataclass(frozen=True)
class Term:
    kind: TermKind
    value: str
    weight: float = 1.0


def _split(text: str) -> list[tuple[str, str]]:
    """[(sign, raw term)] split on ' + ' and ' - ' outside quotes."""
    parts: list[tuple[str, str]] = []
    sign, buf, quote = "+", [], False
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == '"':
            quote = not quote
        elif not quote and ch in "+-" and (i == 0 or text[i - 1] == " ") and (i + 1 == len(text) or text[i + 1] == " "):
            if "".join(buf).strip() or parts or i > 0:
                parts.append((sign, "".join(buf)))
            sign, buf = ch, []
            i += 1
            continue
        buf.append(ch)
        i += 1
    if quote:
        raise PixseekError(f"unbalanced quotes in query: {text}", 'close every "quoted term"')
    parts.append((sign, "".join(buf)))
    if parts and not parts[0][1].strip() and parts[0][0] == "+" and len(parts) > 1:
        parts = parts[1:]  # a query that starts with an operator: `- "indoor"` is fine
    return parts


def _term(sign: str, raw: str, original: str, allow_paths: bool) -> Term:
    raw = raw.strip()
    weight = 1.0
    match = _WEIGHT.match(raw)
    if match:
        weight = _weight(match.group(1))
        raw = raw[match.end() :].strip()
    if not raw or raw == '""':
        raise PixseekError(f"empty term in query: {original}", 'write terms like "cat" + "snow" - "indoor"')
    quoted = len(raw) >= 2 and raw[0] == raw[-1] == '"'
    value = raw[1:-1].strip() if quoted else raw
    if '"' in value:
        raise PixseekError(f"stray quote in query term: {raw}", "put each term in its own pair of quotes")
    if sign == "-":
        weight = -weight
    if allow_paths:
        path = Path(value).expanduser()
        if is_image_name(path.name) and path.is_file():
            return Term("image", str(path.resolve()), weight)
    return Term("text", value, weight)


def _weight(text: str) -> float:
    try:
        weight = float(text)
    except ValueError:
        weight = math.nan
    if not math.isfinite(weight) or not 0 < abs(weight) <= MAX_WEIGHT:
        raise PixseekError(
            f"bad weight in query: {text}",
            f'a weight is a number other than 0, at most {MAX_WEIGHT:g} either way, e.g. 2:"cat"',
        )
    return weight


def parse_query(text: str, allow_paths: bool = True) -> list[Term]:
    """Terms of a query string; raises PixseekError on malformed input.

    With allow_paths=False every term is text: a query typed into the web page must never make
    the server open a file the catalog does not list.
    """
    if not text or not text.strip():
        raise PixseekError("empty query", 'type what you are looking for, e.g. pixseek search "a dog on a beach"')
    if len(text) > MAX_QUERY_CHARS:
        raise PixseekError(f"query too long: {len(text)} characters", f"keep it under {MAX_QUERY_CHARS}")
    parts = _split(text)
    if len(parts) > MAX_TERMS:
        raise PixseekError(f"too many terms in query: {len(parts)}", f"combine at most {MAX_TERMS}")
    return [_term(sign, raw, text, allow_paths) for sign, raw in parts]
