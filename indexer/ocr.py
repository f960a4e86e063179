"""Reading the text in photos: RapidOCR's bundled PP-OCR models (Chinese and English) on ONNX Runtime.

Most photos hold no text, so every photo first gets a cheap look: text detection alone on a
small copy. Only when that finds a text region does the photo get detection at a readable size,
the orientation classifier and the recogniser. The models ship inside the `rapidocr_onnxruntime`
wheel, so this works offline; onnxruntime and OpenCV load on first use, never on import.

This uses RapidOCR's stages (detector, classifier, recogniser) rather than its all-in-one call,
which has no det-only-then-decide step and always upscales small photos for detection.
"""

from __future__ import annotations

import importlib.util
import multiprocessing
import signal
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from itertools import islice
from typing import Any

import numpy as np
from PIL import Image

from indexer.decode import DEFAULT_MAX_PIXELS, DecodeError, decode_image
from indexer.errors import PixseekError
from indexer.reader import default_workers

__all__ = [
    "OcrJob",
    "OcrResult",
    "TextBox",
    "check_available",
    "has_text",
    "ocr_batch",
    "ocr_one",
    "read_text",
    "text_of",
]

# Longest side of the copy the cheap look runs on: big enough that a caption, a sign or a
# receipt line is still a few pixels tall, small enough to cost a fraction of a full pass.
PROBE_SIDE = 384
# Longest side for detection proper: PaddleOCR's own default for this detector.
DETECT_SIDE = 960
# Longest side kept for recognition crops; larger photos are reduced first: a full camera frame
# only slows every resize and crop, and text big enough to matter stays readable.
MAX_SIDE = 1920
# The decoder may hand back a reduced image (JPEG DCT scaling) as long as both sides stay at
# least this, so a landscape photo keeps a long side close to MAX_SIDE.
DECODE_SIDE = 1080
# RapidOCR's own default: below this the recogniser is mostly guessing.
MIN_CONFIDENCE = 0.5
# Photos per task sent to a worker: OCR takes long per photo, so small chunks keep workers even.
CHUNK = 4
# Chunks per worker in flight, so a worker never waits for its next photo.
AHEAD_PER_WORKER = 2


@dataclass(frozen=True)
class TextBox:
    """One line of text: what it says, where (4 corners, clockwise from top-left), how sure."""

    text: str
    box: tuple[tuple[float, float], ...]
    confidence: float

    def as_dict(self) -> dict[str, Any]:
        return {"text": self.text, "box": [list(p) for p in self.box], "confidence": round(self.confidence, 4)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TextBox:
        return cls(str(data["text"]), tuple((float(x), float(y)) for x, y in data["box"]), float(data["confidence"]))


@dataclass(frozen=True)
class OcrJob:
    id: int
    path: str


@dataclass
class OcrResult:
    id: int
    boxes: list[TextBox] | None  # None when the file could not be decoded (see reason)
    reason: str | None = None
    seconds: float = 0.0  # time the worker spent on this photo, decoding included
    cpu_seconds: float = 0.0  # CPU time of the worker's threads meanwhile

    @property
    def text(self) -> str:
        return text_of(self.boxes or [])


def text_of(boxes: Iterable[TextBox]) -> str:
    """The text of the boxes in reading order, a line each: what the keyword index stores."""
    return "\n".join(b.text for b in boxes)


class _Engine:
    """RapidOCR's three models, loaded once per process."""

    def __init__(self, threads: int) -> None:
        from rapidocr_onnxruntime import RapidOCR
        from rapidocr_onnxruntime.ch_ppocr_det.utils import DetPreProcess

        # onnxruntime defaults to one thread per core in every session; with several OCR
        # workers that oversubscribes the CPU, so each worker gets its share.
        self.ocr = RapidOCR(intra_op_num_threads=threads, inter_op_num_threads=1)
        det = self.ocr.text_det
        self._prep = {side: DetPreProcess(side, "max", det.mean, det.std) for side in (PROBE_SIDE, DETECT_SIDE)}

    def detect(self, bgr: np.ndarray, side: int) -> list[np.ndarray]:
        det = self.ocr.text_det
        tensor = self._prep[side](bgr)
        if tensor is None:  # a sliver that rounds to zero pixels at the model's stride
            return []
        boxes, _ = det.postprocess_op(det.infer(tensor)[0], bgr.shape[:2])
        boxes = det.filter_tag_det_res(boxes, bgr.shape[:2])
        return self.ocr.sorted_boxes(boxes) if len(boxes) else []

    @staticmethod
    def prepared(image: Image.Image) -> tuple[np.ndarray, float]:
        """BGR pixels (OpenCV's order, which the models expect) at most MAX_SIDE long, and the scale."""
        scale = min(1.0, MAX_SIDE / max(image.size))
        if scale < 1.0:
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            image = image.resize(size, Image.Resampling.BILINEAR, reducing_gap=3.0)
        return np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1]), scale

    def read(self, image: Image.Image) -> list[TextBox]:
        bgr, scale = self.prepared(image)
        boxes = self.detect(bgr, PROBE_SIDE)
        if not boxes:
            return []
        if max(bgr.shape[:2]) > PROBE_SIDE:  # else the cheap look already ran at full size
            boxes = self.detect(bgr, DETECT_SIDE)
            if not boxes:
                return []
        crops = self.ocr.get_crop_img_list(bgr, boxes)
        crops, _, _ = self.ocr.text_cls(crops)  # turns upside-down lines the right way up
        recognised, _ = self.ocr.text_rec(crops)
        out = []
        for box, (text, confidence) in zip(boxes, recognised):
            text = " ".join(str(text).split())
            if text and float(confidence) >= MIN_CONFIDENCE:
                corners = tuple((float(x) / scale, float(y) / scale) for x, y in box)
                out.append(TextBox(text, corners, float(confidence)))
        return out


def check_available() -> None:
    """OCR is an optional part of pixseek: say how to add it rather than fail on an import."""
    if importlib.util.find_spec("rapidocr_onnxruntime") is None:
        raise PixseekError(
            "reading text in photos needs RapidOCR, which is not installed", 'pip install "pixseek[ocr]"'
        )


_ENGINE: _Engine | None = None


def _engine(threads: int | None = None) -> _Engine:
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = _Engine(threads or default_workers())
    return _ENGINE


def read_text(image: Image.Image) -> list[TextBox]:
    """The lines of text in `image`, in reading order; [] when the cheap look finds none.

    Boxes are in `image`'s pixel coordinates.
    """
    return _engine().read(image)


def has_text(image: Image.Image) -> bool:
    """The cheap look alone: whether detection on a small copy finds a text region."""
    engine = _engine()
    return bool(engine.detect(engine.prepared(image)[0], PROBE_SIDE))


def ocr_one(job: OcrJob, max_pixels: int = DEFAULT_MAX_PIXELS) -> OcrResult:
    """Decode one file through the guarded decoder and read its text; boxes in full-resolution,
    upright coordinates (those of the catalog's width and height)."""
    start, cpu = time.perf_counter(), time.process_time()
    try:
        decoded = decode_image(job.path, target_size=DECODE_SIDE, max_pixels=max_pixels)
    except DecodeError as exc:
        return OcrResult(job.id, None, exc.reason, time.perf_counter() - start, time.process_time() - cpu)
    boxes = read_text(decoded.image)
    fx, fy = decoded.width / decoded.image.width, decoded.height / decoded.image.height
    if (fx, fy) != (1.0, 1.0):
        boxes = [TextBox(b.text, tuple((x * fx, y * fy) for x, y in b.box), b.confidence) for b in boxes]
    return OcrResult(job.id, boxes, None, time.perf_counter() - start, time.process_time() - cpu)


def _ocr_chunk(jobs: list[OcrJob], max_pixels: int) -> list[OcrResult]:
    return [ocr_one(job, max_pixels) for job in jobs]


def _start_worker(threads: int) -> None:
    # Ctrl-C reaches the whole process group; the parent alone handles it.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _engine(threads)  # load the models while the first chunk is on its way


def _context() -> multiprocessing.context.BaseContext:
    # forkserver for the reason indexer/reader.py gives: the parent may run torch's thread pools.
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["__main__", __name__])
    return ctx


def ocr_batch(
    jobs: Iterable[OcrJob], workers: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS
) -> Iterator[OcrResult]:
    """OCR results for `jobs`, in order, `workers` processes wide (0: in this process).

    The caller picks the jobs (the photos without OCR yet, or changed since) and stores each
    result as it comes, so a run killed half-way resumes where it stopped. Jobs are consumed
    lazily, a bounded number in flight, so memory stays flat however many photos there are.
    """
    workers = default_workers() if workers is None else workers
    chunks = _chunks(jobs, CHUNK)
    if workers == 0:
        for chunk in chunks:
            yield from _ocr_chunk(chunk, max_pixels)
        return
    threads = max(1, default_workers() // workers)
    with ProcessPoolExecutor(workers, mp_context=_context(), initializer=_start_worker, initargs=(threads,)) as pool:
        pending: deque[Future] = deque(
            pool.submit(_ocr_chunk, chunk, max_pixels) for chunk in islice(chunks, workers * AHEAD_PER_WORKER)
        )
        try:
            while pending:
                done = pending.popleft().result()
                pending.extend(pool.submit(_ocr_chunk, chunk, max_pixels) for chunk in islice(chunks, 1))
                yield from done
        finally:
            for future in pending:  # the caller stopped early (or Ctrl-C): drop what is queued
                future.cancel()


def _chunks(jobs: Iterable[OcrJob], size: int) -> Iterator[list[OcrJob]]:
    it = iter(jobs)
    while chunk := list(islice(it, size)):
        yield chunk
