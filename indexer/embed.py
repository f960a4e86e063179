"""The embed stage: decoded images in, their vectors out, a batch at a time.

A batch is returned after the next one is submitted, so on a GPU the host writes and gathers
while the device computes (see Encoder.submit_pixels). Files that could not be decoded pass
through at once, without a vector.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from indexer.model import Encoder, PendingVectors
from indexer.reader import ReadResult


@dataclass
class Embedded:
    results: list[ReadResult]
    vectors: np.ndarray | None  # one row per result; None: the results could not be decoded


def batch_size_for(device: str) -> int:
    return 256 if device.startswith("cuda") else 32


def default_batch_size(encoder: Encoder) -> int:
    return batch_size_for(encoder.device)


class Embedder:
    def __init__(self, encoder: Encoder, batch_size: int | None = None) -> None:
        self.encoder = encoder
        self.batch_size = batch_size or default_batch_size(encoder)
        self.embedded = 0  # images submitted to the model so far
        self._in_flight: tuple[list[ReadResult], PendingVectors] | None = None

    def __call__(self, results: Iterable[ReadResult]) -> Iterator[Embedded]:
        batch: list[ReadResult] = []
        for result in results:
            if result.pixels is None:
                yield Embedded([result], None)
                continue
            batch.append(result)
            if len(batch) >= self.batch_size:
                yield from self._submit(batch)
                batch = []
        if batch:
            yield from self._submit(batch)
        yield from self.drain()

    def _submit(self, batch: list[ReadResult]) -> Iterator[Embedded]:
        pending = self.encoder.submit_pixels(np.stack([r.pixels for r in batch]))
        for r in batch:
            r.pixels = None  # stacked above; the writer keeps results for up to a commit's worth
        yield from self.drain()
        # In flight only once the previous batch is written: Ctrl-C while writing that one keeps
        # what the writer holds, not a batch the writer has not seen yet.
        self._in_flight = (batch, pending)
        self.embedded += len(batch)

    def drain(self) -> list[Embedded]:
        """The batch the model is computing, once computed (also after Ctrl-C stopped the stage)."""
        if self._in_flight is None:
            return []
        results, pending = self._in_flight
        self._in_flight = None
        return [Embedded(results, pending.result())]
