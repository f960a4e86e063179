"""The library's settings table, read as one typed record; each key is a field, declared once here.

The model settings tie a library to the model its vectors came from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from indexer.errors import PixseekError

if TYPE_CHECKING:
    from indexer.model import Encoder, ModelSpec
    from indexer.runtime import RuntimeCheck


@dataclass(frozen=True)
class Settings:
    schema_version: int = 0
    model_name: str | None = None
    model_pretrained: str | None = None  # stored as "" for a model without a weights tag
    model_fingerprint: str | None = None
    dim: int = 0  # embedding size; 0 until a model is recorded
    index_kind: str | None = None  # the --index the library remembers
    last_indexed_at: str | None = None
    tag_labels: str | None = None  # JSON list: the labels of the last `pixseek tag`
    dupes_keep: str | None = None  # JSON {kept id: [its duplicates' ids]}: the page's review of duplicates
    ocr: int = 0  # 1: every `pixseek index` also reads the text in new photos (`index --ocr`)
    runtime_check: str | None = None  # JSON RuntimeCheck: which runtime `auto` picked on this library's photos
    # The ANN file as it was written: a file that differs (truncated, zeroed, garbled) is damage.
    ann_size: int = 0
    ann_checksum: str | None = None
    roots: str | None = None  # JSON list: the folders `pixseek index` was given, so far

    @property
    def root_list(self) -> list[str]:
        return json.loads(self.roots) if self.roots else []

    @property
    def ann_record(self) -> tuple[int, str] | None:
        """(size, checksum) of the ANN file as last written; None for a library older than the record."""
        return (self.ann_size, self.ann_checksum) if self.ann_checksum else None

    @classmethod
    def from_table(cls, table: dict[str, str]) -> Settings:
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name in table:
                values[f.name] = int(table[f.name] or 0) if f.type == "int" else table[f.name]
        return cls(**values)

    @property
    def labels(self) -> list[str]:
        return json.loads(self.tag_labels) if self.tag_labels else []

    @property
    def keep_marks(self) -> dict[int, list[int]]:
        return {int(k): v for k, v in json.loads(self.dupes_keep).items()} if self.dupes_keep else {}

    def recorded_runtime(self) -> RuntimeCheck | None:
        """The runtime check of the library's model (None: none yet, or one made for another model)."""
        from indexer.runtime import RuntimeCheck

        check = RuntimeCheck.from_setting(self.runtime_check)
        return check if check is not None and check.fingerprint == self.model_fingerprint else None

    def model_spec(self) -> ModelSpec | None:
        """The model the library was built with (None: no model recorded yet)."""
        from indexer.model import ModelSpec

        if self.model_name is None:
            return None
        return ModelSpec(self.model_name, self.model_pretrained or None)

    def check_same_model(self, spec: ModelSpec, library: Path) -> None:
        """Vectors from two models live in unrelated spaces: mixing them would rank nonsense."""
        recorded = self.model_spec()
        if recorded is None:
            return
        if self.model_fingerprint != spec.fingerprint():
            if recorded == spec:
                raise PixseekError(
                    f"the weights of model {spec} changed since the library at {library} was built",
                    "re-embed everything with `pixseek index --rebuild FOLDER`",
                )
            raise PixseekError(
                f"the library at {library} was built with model {recorded}, not {spec}",
                "search without --model, or re-embed everything with `pixseek index --rebuild --model ...`",
            )


SETTING_KEYS = frozenset(f.name for f in fields(Settings))


def model_record(encoder: Encoder) -> dict[str, str]:
    """The settings that record `encoder` as the library's model."""
    return {
        "model_name": encoder.spec.name,
        "model_pretrained": encoder.spec.pretrained or "",
        "model_fingerprint": encoder.fingerprint(),
        "dim": str(encoder.dim),
    }
