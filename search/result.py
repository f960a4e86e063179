"""A search hit: the image's public catalog columns and its score.

Made from `ImageRow`'s fields marked `api` (indexer/library/rows.py), so a column the API should
show needs no edit here. Fields: id, path, score, then the other public columns in row order,
then what a search adds when asked: `matched_words` (the words of the photo's keyword document
that its text terms matched) and `explanation` (search/explain.py); JSON leaves out those unset.
"""

from __future__ import annotations

from dataclasses import asdict, field, make_dataclass
from typing import Any, Optional

from indexer.library.rows import API_FIELDS, COLUMNS, ImageRow


def _from_row(cls: type, row: ImageRow, score: float) -> Any:
    return cls(score=float(score), **{name: getattr(row, name) for name in API_FIELDS})


_EXTRAS = ("matched_words", "explanation")


def _as_dict(self: Any) -> dict[str, Any]:
    out = asdict(self)
    out["score"] = round(self.score, 4)
    for name in _EXTRAS:
        if out[name] is None:
            del out[name]
    return out


_API = [(f.name, f.type) for f in COLUMNS if f.name in API_FIELDS]
Result = make_dataclass(
    "Result",
    [
        *_API[:2],
        ("score", float),
        *_API[2:],
        ("matched_words", Optional[list], field(default=None)),
        ("explanation", Optional[dict], field(default=None)),
    ],
    namespace={
        "from_row": classmethod(_from_row),
        "as_dict": _as_dict,
        "__doc__": "One search hit: Result(id, path, score, folder, ...); as_dict() for JSON.",
    },
)
Result.__module__ = __name__
