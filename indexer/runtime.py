"""Which runtime embeds (torch, or ONNX Runtime in fp32, int8 or fp16), decided in this one place.

`--runtime torch|onnx|auto` and `--precision` reach `choose_runtime`, which returns the choice
with the one line that tells the user why; `load_runtime_encoder` builds the encoder for it.
`auto` keeps results equal: ONNX fp32 agrees with torch (cosine >= ONNX_MIN_COSINE, tested),
while int8 changes the vectors a little, so `auto` uses it only where `check_runtimes` measured,
on a sample of the library's own photos, that it keeps recall@10 against torch fp32 at or above
INT8_MIN_RECALL and runs faster. Text queries then run on int8 too where the same check found
that everyday queries (PROBE_TEXTS) find the same photos through the int8 text tower, else on
the fp32 one (the towers are quantised apart). That check is recorded in the library's settings (the
`runtime_check` key of indexer/library/settings.py), so it runs once per library and model.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from indexer.errors import PixseekError

if TYPE_CHECKING:
    from indexer.model import ModelSpec

RUNTIMES = ("torch", "onnx", "auto")
PRECISIONS = ("fp32", "int8", "fp16")
ONNX_MIN_COSINE = 0.9999
INT8_MIN_RECALL = 0.95
RECALL_K = 10
# Photos embedded by every candidate runtime when a library is created: enough neighbours for a
# stable recall@10, few enough that torch embeds them in seconds on a CPU.
SAMPLE_SIZE = 128
# Text queries the int8 text tower is checked with: the kinds of things people search photos for.
PROBE_TEXTS = (
    "a dog",
    "a cat sleeping",
    "a beach at sunset",
    "snow on the mountains",
    "a birthday party",
    "a plate of food",
    "a city street at night",
    "a red car",
    "flowers in a garden",
    "a baby smiling",
    "a document with text",
    "a screenshot",
    "people hiking in a forest",
    "a bicycle",
    "an airplane in the sky",
    "a wedding",
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Choice:
    runtime: str  # "torch" or "onnx"
    precision: str  # "fp32", "int8" or "fp16"
    reason: str  # one line for the user: what was picked and why
    check: RuntimeCheck | None = None  # a check run for this choice, for the caller to record
    text_precision: str | None = None  # the text tower's, where it differs from `precision`

    @property
    def label(self) -> str:
        return f"{self.runtime} {self.precision}"


@dataclass
class RuntimeCheck:
    """What `check_runtimes` measured on a library's photos, and what it picked."""

    fingerprint: str
    photos: int
    rates: dict[str, float] = field(default_factory=dict)  # images/s per runtime label
    onnx_cosine_min: float | None = None
    int8_recall: float | None = None
    text_int8_recall: float | None = None  # None in checks recorded before the text tower had an int8 graph
    picked: str = "torch fp32"

    @property
    def text_precision(self) -> str | None:
        """With an int8 pick: int8 for text queries too where they kept their photos, else fp32."""
        if self.picked != "onnx int8":
            return None
        return "int8" if (self.text_int8_recall or 0.0) >= INT8_MIN_RECALL else "fp32"

    def to_setting(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_setting(cls, value: str | None) -> RuntimeCheck | None:
        try:
            return cls(**json.loads(value)) if value else None
        except (ValueError, TypeError):
            return None  # unreadable: checked again, never trusted


def choose_runtime(
    spec: ModelSpec,
    requested: str = "auto",
    precision: str | None = None,
    device: str | None = None,
    recorded: RuntimeCheck | None = None,
    sample: np.ndarray | None = None,
) -> Choice:
    """Pick the runtime for `spec`.

    `recorded` is the library's stored check; `sample`, uint8 pixels of some of its photos, lets
    `auto` run the check when none is recorded for this model (the choice then carries it, to be
    stored). A family that does not export falls back to torch, saying why.
    """
    check_runtime_request(requested, precision)
    gpu = _gpu_wanted(device)
    torch_precision = "fp16" if gpu else "fp32"  # what Encoder runs there
    if requested == "torch":
        if precision not in (None, torch_precision):
            raise PixseekError(f"--precision {precision} needs the ONNX runtime", "add --runtime onnx")
        return Choice("torch", torch_precision, f"torch {torch_precision} (asked for)")
    onnx_gpu = gpu and "CUDAExecutionProvider" in _onnx_providers()
    if requested == "auto" and precision is None and gpu and "TensorrtExecutionProvider" not in _onnx_providers():
        return Choice("torch", "fp16", "torch fp16 on the GPU (ONNX Runtime without TensorRT is no faster)")
    from indexer.onnx_export import NotExportable, ensure_export

    first = precision or ("fp16" if onnx_gpu else "fp32")
    try:
        ensure_export(spec, first)
    except NotExportable as exc:
        return Choice("torch", torch_precision, f"torch {torch_precision}: model {spec} does not export to ONNX: {exc}")
    except OSError:
        # The model's own files cannot be read: the torch loader's checks say what is wrong with them.
        return Choice("torch", torch_precision, f"torch {torch_precision}: the files of model {spec} cannot be read")
    if requested == "onnx" or precision is not None or onnx_gpu:
        why = "asked for" if requested == "onnx" or precision is not None else "on the GPU"
        return Choice("onnx", first, f"onnx {first} ({why})")
    if recorded is not None and recorded.fingerprint == spec.fingerprint():
        return _from_check(recorded, "checked on this library's photos")
    if sample is not None and len(sample) > RECALL_K:
        check = check_runtimes(spec, sample)
        return _from_check(check, f"checked on {check.photos} of this library's photos", check)
    return Choice("onnx", "fp32", "onnx fp32 (int8 not checked on this library's photos yet)")


def check_runtime_request(runtime: str, precision: str | None) -> None:
    """Reject an unknown runtime or precision name before any work."""
    if runtime not in RUNTIMES:
        raise PixseekError(f"unknown runtime '{runtime}'", f"use one of: {', '.join(RUNTIMES)}")
    if precision is not None and precision not in PRECISIONS:
        raise PixseekError(f"unknown precision '{precision}'", f"use one of: {', '.join(PRECISIONS)}")


def _from_check(check: RuntimeCheck, how: str, new: RuntimeCheck | None = None) -> Choice:
    runtime, precision = check.picked.split()
    text = check.text_precision
    queries = "" if text is None else f"; text queries in {text}"
    return Choice(runtime, precision, f"{check.picked}: fastest with equal results, {how}{queries}", new, text)


def cpu_encoders(spec: ModelSpec) -> dict[str, Any]:
    """The CPU runtimes `auto` chooses between, by label."""
    from indexer.model import open_encoder
    from indexer.onnx_encoder import OnnxEncoder

    return {
        "torch fp32": open_encoder(spec, "cpu"),
        "onnx fp32": OnnxEncoder(spec, "cpu", "fp32"),
        "onnx int8": OnnxEncoder(spec, "cpu", "int8"),
    }


def check_runtimes(spec: ModelSpec, sample: np.ndarray, encoders: dict[str, Any] | None = None) -> RuntimeCheck:
    """Embed `sample` with torch fp32, ONNX fp32 and ONNX int8; pick the fastest that keeps results.

    Runs interleaved twice, keeping each runtime's best time, so a burst of load on a shared
    machine does not decide the pick. `encoders` (cpu_encoders') saves loading them again.
    """
    encoders = encoders or cpu_encoders(spec)
    vectors: dict[str, np.ndarray] = {}
    best: dict[str, float] = {}
    for encoder in encoders.values():
        encoder.encode_pixels(sample[:2])  # sessions and lazy initialisation out of the timing
    for _ in range(2):
        for label, encoder in encoders.items():
            start = time.perf_counter()
            vectors[label] = encoder.encode_pixels(sample)
            best[label] = min(best.get(label, float("inf")), time.perf_counter() - start)
    reference = vectors["torch fp32"]
    check = RuntimeCheck(spec.fingerprint(), len(sample), {k: round(len(sample) / v, 2) for k, v in best.items()})
    check.onnx_cosine_min = float((reference * vectors["onnx fp32"]).sum(axis=1).min())
    check.int8_recall = recall_at_k(reference, vectors["onnx int8"])
    texts = {label: encoders[label].encode_texts(list(PROBE_TEXTS)) for label in ("onnx fp32", "onnx int8")}
    check.text_int8_recall = query_recall_at_k(reference, texts["onnx fp32"], texts["onnx int8"])
    equal = {
        "torch fp32": True,
        "onnx fp32": check.onnx_cosine_min >= ONNX_MIN_COSINE,
        "onnx int8": check.int8_recall >= INT8_MIN_RECALL,
    }
    check.picked = max((label for label in encoders if equal[label]), key=lambda label: check.rates[label])
    log.info("runtime check on %d photos: %s", len(sample), check.to_setting())
    return check


def recall_at_k(reference: np.ndarray, candidate: np.ndarray, k: int = RECALL_K) -> float:
    """Mean overlap of each vector's k nearest neighbours (itself excluded) under the two embeddings."""

    def neighbours(v: np.ndarray) -> np.ndarray:
        sims = v @ v.T
        np.fill_diagonal(sims, -np.inf)
        return _top(sims, k)

    return _overlap(neighbours(reference), neighbours(candidate))


def query_recall_at_k(photos: np.ndarray, reference: np.ndarray, candidate: np.ndarray, k: int = RECALL_K) -> float:
    """Mean overlap of each query's k best photos under the reference and the candidate query vectors."""
    return _overlap(_top(reference @ photos.T, k), _top(candidate @ photos.T, k))


def _top(sims: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-sims, axis=1, kind="stable")[:, :k]


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([len(set(x) & set(y)) / a.shape[1] for x, y in zip(a, b)]))


def load_runtime_encoder(spec: ModelSpec, choice: Choice, device: str | None = None) -> Any:
    """The Encoder (torch) or OnnxEncoder for `choice`; both have the same surface.

    Builds the torch encoder itself, so indexer.model.load_encoder can dispatch here without a loop.
    """
    if choice.runtime == "onnx":
        from indexer.onnx_encoder import OnnxEncoder

        return OnnxEncoder(spec, device, choice.precision, text_precision=choice.text_precision)
    from indexer.model import open_encoder

    return open_encoder(spec, device)


def _gpu_wanted(device: str | None) -> bool:
    """Whether embedding runs on an NVIDIA GPU, decided without importing torch (a query process
    that runs ONNX must not pay for it)."""
    if device is not None:
        return device.startswith("cuda")
    return any(Path("/dev").glob("nvidia[0-9]*"))


def _onnx_providers() -> list[str]:
    from indexer.onnx_encoder import onnx_providers

    return onnx_providers()
