"""A search hit: the image's public catalog columns and its score.

Made from `ImageRow`'s fields marked `api` (indexer/library/rows.py), so a column the API should
show needs no edit here. Fields: id, path, score, then the other public columns in row order.
"""

from __future__ import annotations

from dataclasses import asdict, make_dataclass
from typing import Any

from indexer.library.rows import API_FIELDS, COLUMNS, ImageRow


def _from_row(cls: type, row: ImageRow, score: float) -> Any:
    return cls(score=float(score), **{name: getattr(row, name) for name in API_FIELDS})


def _as_dict(self: Any) -> dict[str, Any]:
    out = asdict(self)
    out["score"] = round(self.score, 4)
    return out


_API = [(f.name, f.type) for f in COLUMNS if f.name in API_FIELDS]
Result = make_dataclass(
    "Result",
    [*_API[:2], ("score", float), *_API[2:]],
    namespace={"from_row": classmethod(_from_row), "as_dict": _as_dict,
               "__doc__": "One search hit: Result(id, path, score, folder, ...); as_dict() for JSON."},
)
Result.__module__ = __name__
