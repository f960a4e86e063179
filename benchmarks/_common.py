"""What the benchmark scripts share: paths, the random ViT-B-32, a peak-memory sampler, output.

Benchmarks run as plain files (`python3 benchmarks/x.py`), so the repository root is put on
sys.path here; scripts import this module first.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SHARED_DATA = REPO.parent / "shared" / "data"
CALTECH = SHARED_DATA / "caltech101-bench"
RANDOM_MODEL = "random-vit-b-32"


def cache_dir() -> Path:
    """Reused between runs: the random model (~600 MB) and the 12 MP photos take a while to make."""
    base = os.environ.get("PIXSEEK_BENCH_CACHE") or os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    path = Path(base) / "pixseek-bench"
    path.mkdir(parents=True, exist_ok=True)
    return path


def use_bench_onnx_cache() -> None:
    """ONNX exports of the benchmark models are kept beside them, not in the user's cache."""
    os.environ.setdefault("PIXSEEK_ONNX_CACHE", str(cache_dir() / "onnx"))


def random_vit_b32() -> Path:
    """A local-dir open_clip folder holding ViT-B-32 with random (untrained) weights.

    Same architecture and cost as the real default model, which cannot be downloaded here;
    seeded, so its fingerprint (and any library built with it) stays the same across runs.
    """
    folder = cache_dir() / "ViT-B-32-random"
    weights = folder / "open_clip_model.safetensors"
    if weights.is_file():
        return folder
    import open_clip
    import torch
    from safetensors.torch import save_model

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32")
    folder.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": open_clip.get_model_config("ViT-B-32"), "preprocess_cfg": model.visual.preprocess_cfg}
    (folder / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    tmp = weights.with_suffix(".tmp")
    save_model(model, str(tmp))
    os.replace(tmp, weights)  # a half-written file must never look like a finished model
    return folder


def model_spec(name: str):
    """`random-vit-b-32` (the default), `demo`, or anything `pixseek index --model` accepts."""
    from indexer.model import ModelSpec

    if name == RANDOM_MODEL:
        return ModelSpec.parse(f"local-dir:{random_vit_b32()}")
    return ModelSpec.parse(name)


class PeakMemory:
    """Samples the RSS of this process plus all its children (decoder workers) while running.

    Listing the children scans every process on the machine (~7 ms with the GIL held), so the
    list is refreshed only every `relist` seconds; reading a known process's RSS is cheap.
    """

    def __init__(self, every: float = 0.1, relist: float = 2.0) -> None:
        self.every = every
        self.relist = relist
        self.peak_bytes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psutil

        me = psutil.Process()
        procs: list[psutil.Process] = []
        listed = float("-inf")
        while True:
            if time.monotonic() - listed > self.relist:
                procs, listed = [me, *me.children(recursive=True)], time.monotonic()
            total = 0
            for proc in procs:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    pass  # a worker that exited between listing and reading
            self.peak_bytes = max(self.peak_bytes, total)
            if self._stop.wait(self.every):
                return

    @property
    def peak_mb(self) -> float:
        return self.peak_bytes / 2**20


def temp_dir(prefix: str) -> tempfile.TemporaryDirectory:
    return tempfile.TemporaryDirectory(prefix=f"pixseek-{prefix}-")


def machine() -> str:
    gpu = "no GPU"
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return f"{platform.machine()} {os.cpu_count()} cores, {gpu}, Python {platform.python_version()}"


def fmt_stages(stages: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}s" for k, v in sorted(stages.items(), key=lambda kv: -kv[1]))
