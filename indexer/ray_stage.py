"""The decode and embed stages on a Ray cluster (`pixseek index --ray`), for the one writer here.

Ray Data runs decoding as CPU tasks (reader.read_one: the same hash, decode and resize to the
model's input as the local reader) and the model in a pool of actors: one per GPU with
num_gpus=1 when the cluster has GPUs, otherwise one CPU actor per node. Their vectors and catalog
fields stream back as the same `Embedded` batches the local embedder yields, so the writer in
this process keeps its commit order (vectors, then catalog rows) and plan.py still decides what
is embedded. Nothing here imports ray until a run asks for it: it is an optional extra.

Every node must have pixseek installed, and see the photo folders at the same paths (a shared
folder) or read them from object storage (s3://, gs://: indexer/object_store.py).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from indexer.embed import Embedded, batch_size_for
from indexer.errors import PixseekError, first_line
from indexer.model import ModelSpec
from indexer.plan import Job
from indexer.preprocess import Preprocess
from indexer.reader import ReadResult, default_workers, read_one
from indexer.runtime import Choice

LOCAL = "local"  # a Ray instance of this process's own, started for the run and stopped after it
AUTO = "auto"  # the cluster this machine belongs to (`ray start` ran here, or RAY_ADDRESS)
DECODE_CHUNK = 16  # files per decode task: big enough to pay for a task, small enough to spread
INSTALL_HINT = 'install it with: pip install "pixseek[ray]"'
ADDRESS_HINT = "check the address (`ray status` on the head node shows it), or pass --ray alone for a local instance"
REACH_TIMEOUT = 5.0  # seconds to wait for a cluster's port to answer
_ADDRESS = re.compile(r"^(ray://)?[\w.\-]+:\d+$")

log = logging.getLogger(__name__)


def check_address(address: str) -> None:
    """Refuse, before any work, an address Ray would not take, a cluster that does not answer, or a
    machine without Ray."""
    if address not in (LOCAL, AUTO) and not _ADDRESS.match(address):
        raise PixseekError(
            f"a Ray address is local, auto, ray://HOST:PORT or HOST:PORT, not '{address}'",
            "pass --ray alone for a local instance",
        )
    if importlib.util.find_spec("ray") is None:
        raise PixseekError("--ray needs Ray, which is not installed", INSTALL_HINT)
    if address not in (LOCAL, AUTO):
        _check_reachable(address)


@contextmanager
def connected(address: str) -> Iterator[None]:
    """This process connected to the cluster at `address` for the block. A Ray session the process
    has already (a program that called ray.init) is used as it is, and left running."""
    import ray

    if ray.is_initialized():
        yield
        return
    _quiet_ray()
    try:
        ray.init(
            address=address,
            include_dashboard=False if address == LOCAL else None,
            logging_level=logging.ERROR,
            log_to_driver=False,
        )
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        raise PixseekError(f"cannot reach the Ray cluster at {address}: {first_line(exc)}", ADDRESS_HINT) from None
    try:
        yield
    finally:
        ray.shutdown()


def embedded(
    jobs: list[Job],
    spec: ModelSpec,
    choice: Choice,
    preprocess: Preprocess,
    batch_size: int | None,
    device: str | None = None,
) -> Iterator[Embedded]:
    """`jobs` decoded and embedded on the cluster, as they finish (not in order). `device` cpu
    keeps the model off the cluster's GPUs; otherwise it runs on them when there are any."""
    import ray
    import ray.data

    gpus = 0 if device == "cpu" else int(ray.cluster_resources().get("GPU", 0))
    device = "cuda" if gpus else "cpu"
    actors = gpus or sum(1 for node in ray.nodes() if node.get("Alive"))
    resources = {"num_gpus": 1} if gpus else {"num_cpus": 1}
    rows = [{"id": job.id, "path": os.fsencode(job.path), "size": job.size} for job in jobs]
    dataset = ray.data.from_items(rows, override_num_blocks=max(1, math.ceil(len(rows) / DECODE_CHUNK)))
    # Half a CPU per decode task: two decoders per core the actors leave, as a local run has one
    # per core beside the model's threads; and a task unlike the actor is not fused into it,
    # where it would decode in turn with the model instead of beside it.
    dataset = dataset.map_batches(
        decode_batch, batch_size=DECODE_CHUNK, fn_kwargs={"preprocess": preprocess}, num_cpus=0.5
    ).map_batches(
        EmbedActor,
        batch_size=batch_size or batch_size_for(device),
        fn_constructor_kwargs={"spec": spec, "choice": choice, "device": device},
        compute=ray.data.ActorPoolStrategy(size=actors),
        **resources,
    )
    log.info("embedding %d files on Ray: %d %s actors, %s", len(jobs), actors, device, choice.label)
    try:
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            yield from _to_embedded(batch)
    except ray.exceptions.RayError as exc:
        raise PixseekError(f"the Ray cluster failed: {first_line(exc)}") from None


def decode_batch(batch: dict[str, np.ndarray], preprocess: Preprocess) -> dict[str, np.ndarray]:
    """A Ray task: files read and decoded into model input, with the catalog fields learnt from them."""
    results = [
        read_one(Job(int(i), os.fsdecode(bytes(p)), int(s)), preprocess)
        for i, p, s in zip(batch["id"], batch["path"], batch["size"])
    ]
    height, width = preprocess.size
    blank = np.zeros((height, width, 3), dtype=np.uint8)  # one shape for the column; never embedded
    return {
        "id": np.array([r.id for r in results], dtype=np.int64),
        "pixels": np.stack([blank if r.pixels is None else r.pixels for r in results]),
        "ok": np.array([r.pixels is not None for r in results]),
        # JSON, ASCII-escaped: Arrow columns hold valid UTF-8 only, and EXIF text may not be.
        "fields": np.array([json.dumps(r.fields) for r in results], dtype=object),
        "reason": np.array([r.reason or "" for r in results], dtype=object),
        "seconds": np.array([r.seconds for r in results]),
    }


class EmbedActor:
    """A Ray actor holding the model; loaded once, then given decoded batches."""

    def __init__(self, spec: ModelSpec, choice: Choice, device: str) -> None:
        from indexer.runtime import load_runtime_encoder

        if device == "cpu":
            import torch

            # Ray caps an actor's threads at its one reserved CPU; the model takes every core, as
            # in a local run, and decode tasks fill the gaps it leaves.
            torch.set_num_threads(default_workers())
        self.encoder = load_runtime_encoder(spec, choice, device)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        ok = batch.pop("ok")
        pixels = batch.pop("pixels")
        vectors = np.zeros((len(ok), self.encoder.dim), dtype=np.float32)
        if ok.any():
            vectors[ok] = self.encoder.encode_pixels(np.ascontiguousarray(pixels[ok]))
        return {**batch, "ok": ok, "vector": vectors}


def _to_embedded(batch: dict[str, np.ndarray]) -> Iterator[Embedded]:
    results = [
        ReadResult(int(i), None, json.loads(f), r or None, float(s))
        for i, f, r, s in zip(batch["id"], batch["fields"], batch["reason"], batch["seconds"])
    ]
    ok = batch["ok"]
    if ok.any():
        yield Embedded([r for r, good in zip(results, ok) if good], batch["vector"][ok])
    if not ok.all():
        yield Embedded([r for r, good in zip(results, ok) if not good], None)


def _check_reachable(address: str) -> None:
    """Fail in seconds when nothing answers at `address`: Ray itself retries for minutes, logging as it goes."""
    host, port = address.removeprefix("ray://").rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=REACH_TIMEOUT).close()
    except OSError as exc:
        raise PixseekError(
            f"cannot reach the Ray cluster at {address}: {exc.strerror or first_line(exc)}", ADDRESS_HINT
        ) from None


def _quiet_ray() -> None:
    # Ray Data logs each dataset's plan and progress at INFO, and draws progress bars: pixseek
    # shows its own progress.
    from ray.data import DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.ERROR)
