"""What an index run did: the options it was given (`IndexOptions`) and what it found (`IndexReport`)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from indexer import ann
from indexer.errors import PixseekError
from indexer.model import ModelSpec
from indexer.runtime import check_runtime_request

Progress = Callable[[int, int], None]  # (files decoded, files to decode)


@dataclass(frozen=True)
class IndexOptions:
    model: ModelSpec | None = None  # default: the library's own model, or DEFAULT_MODEL for a new one
    index_kind: str | None = None  # ann.KINDS; default: the library's, or auto
    rebuild: bool = False  # re-embed every image (e.g. with another model)
    workers: int | None = None  # decoder processes; default one per core, 0 decodes inline
    batch_size: int | None = None  # images per model batch; default by device
    device: str | None = None  # cpu or cuda; default cuda when present
    ocr: bool | None = None  # also read the text in photos (`pixseek ocr`); default: what the library remembers
    runtime: str = "torch"  # torch, onnx or auto (indexer/runtime.py: auto checks int8 on the library's photos)
    precision: str | None = None  # fp32, int8 or fp16 (ONNX); default: the runtime's own for the device
    ray: str | None = None  # decode and embed on this Ray cluster (ray_stage.py): local, auto or an address
    on_progress: Progress | None = None
    on_ocr_progress: Progress | None = None  # (photos read, photos to read)

    def __post_init__(self) -> None:
        # Every bad option is refused before any work, so none leaves pending rows behind.
        if self.index_kind is not None:
            ann.choose_kind(self.index_kind, 0)
        if self.workers is not None and self.workers < 0:
            raise PixseekError(f"--workers must be 0 or more, not {self.workers}", "0 decodes in the main process")
        if self.batch_size is not None and self.batch_size < 1:
            raise PixseekError(f"--batch-size must be at least 1, not {self.batch_size}")
        if self.device is not None and not re.fullmatch(r"cpu|cuda(:\d+)?|mps", self.device):
            raise PixseekError(f"unknown device '{self.device}'", "use cpu or cuda (cuda:N for a given GPU)")
        check_runtime_request(self.runtime, self.precision)
        if self.ray is not None:
            from indexer.ray_stage import check_address

            check_address(self.ray)


@dataclass
class IndexReport:
    added: int = 0
    updated: int = 0
    moved: int = 0
    removed: int = 0
    unchanged: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason) found this run
    embedded: int = 0
    repaired: int = 0  # damaged vectors found, re-embedded by this run when their folder was given
    unreadable: list[str] = field(default_factory=list)  # folders that could not be listed; their photos kept
    seconds: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)
    index: dict[str, object] = field(default_factory=dict)
    model: str = ""
    ocr: dict[str, object] | None = None  # the OCR pass's report, when the run made one
    runtime: str = ""  # the runtime that embedded, and why (one line); "" when nothing was embedded

    @property
    def images_per_second(self) -> float:
        embed_time = self.stages.get("read+embed", 0.0)
        return self.embedded / embed_time if embed_time > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "added": self.added,
            "updated": self.updated,
            "moved": self.moved,
            "removed": self.removed,
            "unchanged": self.unchanged,
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "embedded": self.embedded,
            "repaired": self.repaired,
            "unreadable": self.unreadable,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 2),
            "stages": {k: round(v, 3) for k, v in self.stages.items()},
            "index": self.index,
            "model": self.model,
            "runtime": self.runtime,
            **({"ocr": self.ocr} if self.ocr is not None else {}),
        }
