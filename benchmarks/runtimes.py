"""Embedding runtimes side by side: torch fp32, ONNX Runtime fp32 and int8 (and GPU runtimes when present).

    python3 benchmarks/runtimes.py [--models demo,random-vit-b-32] [--photos 300] [--rounds 4] [--cold 5]

For each model, in one run: model-only images/s (pre-decoded pixels, so decoding is out of the
figure), agreement with torch fp32 on real photos (lowest cosine, recall@10 over the photos'
neighbours), peak memory of a process that loads the runtime and embeds one batch, warm text-query
latency (the 8-template prompt ensemble), which runtime `auto` picks, and the seconds a fresh
`pixseek search --runtime onnx` process takes. Runtimes are timed interleaved (A B C A B C ...)
and compared as ratios within a round, so drift in the load of a shared machine cancels; `uptime`
before and after says how loaded it was.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401  (puts the repository on sys.path)
import numpy as np

from indexer.preprocess import Preprocess

QUERIES = [
    "a dog on a beach",
    "red car in the snow",
    "birthday cake with candles",
    "a small blue square",
    "mountains at sunset",
    "two people holding hands",
    "a bowl of soup",
    "city street at night",
]


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def caltech_pixels(size: Preprocess, photos: int) -> np.ndarray:
    from indexer.decode import decode_image, to_model_input

    files = sorted(_common.CALTECH.rglob("*.jpg"))
    if not files:
        sys.exit(f"no photos at {_common.CALTECH}")
    step = max(1, len(files) // photos)
    return np.stack([to_model_input(decode_image(f, size).image, size) for f in files[::step][:photos]])


def encoders(spec) -> dict[str, object]:
    import torch

    from indexer.model import load_encoder
    from indexer.onnx_encoder import OnnxEncoder, onnx_providers
    from indexer.runtime import cpu_encoders

    found = cpu_encoders(spec)
    if torch.cuda.is_available():
        found["torch fp16 cuda"] = load_encoder(spec, "cuda")
    if "CUDAExecutionProvider" in onnx_providers():
        found["onnx fp16 cuda"] = OnnxEncoder(spec, "cuda", "fp16")
    return found


def batch_size(label: str) -> int:
    return 256 if "cuda" in label else 32


def model_rates(runtimes: dict[str, object], pixels: np.ndarray, rounds: int) -> dict[str, list[float]]:
    """images/s per runtime per round, interleaved."""
    for label, encoder in runtimes.items():
        encoder.encode_pixels(pixels[: batch_size(label)])  # warm: sessions, kernels, allocator
    rates: dict[str, list[float]] = {label: [] for label in runtimes}
    for _ in range(rounds):
        for label, encoder in runtimes.items():
            batch = pixels[: batch_size(label)]
            start = time.perf_counter()
            encoder.encode_pixels(batch)
            rates[label].append(len(batch) / (time.perf_counter() - start))
    return rates


def query_latency(runtimes: dict[str, object], rounds: int) -> dict[str, float]:
    """Median ms of one prompt-ensembled text query per runtime, interleaved."""
    from search.prompts import embed_texts

    for encoder in runtimes.values():
        embed_texts(encoder, ["warm up"])
    times: dict[str, list[float]] = {label: [] for label in runtimes}
    for i in range(rounds * len(QUERIES)):
        for label, encoder in runtimes.items():
            start = time.perf_counter()
            embed_texts(encoder, [QUERIES[i % len(QUERIES)]])
            times[label].append((time.perf_counter() - start) * 1000)
    return {label: statistics.median(t) for label, t in times.items()}


MEMORY_CHILD = """
import sys, numpy as np
sys.path.insert(0, {repo!r})
from indexer.model import ModelSpec, load_encoder
from indexer.onnx_encoder import OnnxEncoder
spec = ModelSpec.parse({spec!r})
runtime, precision, device = ({label!r}.split() + ["cpu"])[:3]
encoder = load_encoder(spec, device) if runtime == "torch" else OnnxEncoder(spec, device, precision)
pixels = np.load({pixels!r})
encoder.encode_pixels(pixels); encoder.encode_pixels(pixels)
# VmHWM, not ru_maxrss: the latter carries the parent's peak across fork and exec.
print(next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024)
"""


def peak_memory_mb(spec, label: str, pixels: np.ndarray) -> float:
    """Peak RSS of a fresh process that loads this runtime and embeds one batch twice."""
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "pixels.npy")
        np.save(path, pixels[: batch_size(label)])
        code = MEMORY_CHILD.format(repo=str(_common.REPO), spec=spec.name, label=label, pixels=path)
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        return float(run.stdout.split()[-1])


# The `pixseek` console script, run by this interpreter from this checkout.
CLI = "import sys; sys.path.insert(0, {repo!r}); sys.argv[0] = 'pixseek'; from ui.cli import main; main()"


def cold_start_seconds(spec, tries: int = 5) -> list[float]:
    """Wall seconds of fresh `pixseek search --runtime onnx` processes, interpreter start included.

    Over a 16-photo library indexed with the same runtime just before, so its export is cached
    and on disk, as it is for a user's second search.
    """
    cli = [sys.executable, "-c", CLI.format(repo=str(_common.REPO))]
    with tempfile.TemporaryDirectory() as tmp:
        photos, library = Path(tmp) / "photos", str(Path(tmp) / "library")
        photos.mkdir()
        for source in sorted(_common.CALTECH.rglob("*.jpg"))[:16]:
            shutil.copyfile(source, photos / f"{source.parent.name}-{source.name}")
        common = ["--library", library, "--runtime", "onnx"]
        subprocess.run([*cli, "index", str(photos), "--model", spec.name, *common], check=True, capture_output=True)
        seconds = []
        for _ in range(tries):
            start = time.perf_counter()
            subprocess.run([*cli, "search", "a dog on a beach", *common], check=True, capture_output=True)
            seconds.append(time.perf_counter() - start)
    return seconds


def gpu_end_to_end(runtimes: dict[str, object], size: int, batch: int = 256) -> None:
    """JPEG files on disk -> vectors with nvJPEG decoding (indexer/gpu_decode.py), per GPU runtime.

    Batch i + 1 is decoded while batch i computes (submit, then collect), as the indexer does.
    """
    import torch

    from indexer.gpu_decode import GpuJpegDecoder

    if not torch.cuda.is_available():
        print("GPU end to end: no CUDA GPU here, unmeasured")
        return
    files = [str(f) for f in sorted(_common.CALTECH.rglob("*.jpg"))]
    decoder = GpuJpegDecoder(size, "cuda")
    for label, encoder in runtimes.items():
        if "cuda" not in label:
            continue
        try:
            encoder.encode_pixels(decoder.decode(files[:batch]).pixels)  # warm: nvJPEG, kernels, engines
        except TypeError as exc:  # an Encoder whose pixels_to_tensor takes numpy arrays only
            print(f"GPU end to end, {label}: pixels on the device not accepted ({exc})")
            continue
        torch.cuda.synchronize()
        start, pending, done = time.perf_counter(), None, 0
        for i in range(0, len(files), batch):
            decoded = decoder.decode(files[i : i + batch])
            submitted = encoder.submit_pixels(decoded.pixels)
            if pending is not None:
                done += len(pending.result())
            pending = submitted
        done += len(pending.result())
        seconds = time.perf_counter() - start
        print(f"GPU end to end, {label}: {done / seconds:.0f} images/s ({done} Caltech JPEGs from disk)")


def bench_model(name: str, photos: int, rounds: int, cold_tries: int) -> None:
    from indexer.onnx_export import ensure_export
    from indexer.runtime import check_runtimes, recall_at_k

    spec = _common.model_spec(name)
    start = time.perf_counter()
    ensure_export(spec, "int8")
    print(f"\n== {name}: {spec}\nexport (or cached): {time.perf_counter() - start:.1f}s")
    runtimes = encoders(spec)
    size = next(iter(runtimes.values())).preprocess
    pixels = caltech_pixels(size, photos)
    rates = model_rates(runtimes, pixels, rounds)
    vectors = {
        label: np.concatenate([enc.encode_pixels(pixels[i : i + 64]) for i in range(0, len(pixels), 64)])
        for label, enc in runtimes.items()
    }
    latency = query_latency(runtimes, max(1, rounds // 2))
    reference = vectors["torch fp32"]
    torch_rates = rates["torch fp32"]
    columns = ("images/s", "x torch", "cos min", "recall@10", "peak MB", "query ms")
    print(f"{'runtime':<16}", *(f"{c:>9}" for c in columns))
    for label in runtimes:
        ratio = statistics.median(r / t for r, t in zip(rates[label], torch_rates))
        cosine = float((vectors[label] * reference).sum(axis=1).min())
        recall = recall_at_k(reference, vectors[label])
        memory = peak_memory_mb(spec, label, pixels)
        print(
            f"{label:<16} {statistics.median(rates[label]):>9.1f} {ratio:>9.2f} {cosine:>9.5f} {recall:>9.3f} "
            f"{memory:>9.0f} {latency[label]:>9.1f}"
        )
    print(f"agreement over {len(pixels)} Caltech photos; rates: median of {rounds} interleaved rounds")
    gpu_end_to_end(runtimes, size)
    cpu = {label: enc for label, enc in runtimes.items() if "cuda" not in label}
    check = check_runtimes(spec, pixels[:128], cpu)
    print(
        f"auto picks: {check.picked} (on {check.photos} photos: rates {check.rates}, "
        f"int8 recall@10 {check.int8_recall:.3f}, from text {check.text_int8_recall:.3f}, "
        f"onnx fp32 cosine min {check.onnx_cosine_min:.6f}; text queries in {check.text_precision or 'fp32'})"
    )
    cold = cold_start_seconds(spec, cold_tries)
    print(
        f"cold start, fresh `pixseek search --runtime onnx` process: "
        f"min {min(cold):.2f}s, median {statistics.median(cold):.2f}s over {len(cold)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=f"demo,{_common.RANDOM_MODEL}")
    parser.add_argument("--photos", type=int, default=300, help="Caltech photos for agreement (1192: all)")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved timing rounds")
    parser.add_argument("--cold", type=int, default=5, help="fresh `pixseek search` processes timed")
    args = parser.parse_args()
    _common.use_bench_onnx_cache()
    print(_common.machine())
    print("load before:", uptime())
    for name in args.models.split(","):
        bench_model(name, args.photos, args.rounds, args.cold)
    print("\nload after:", uptime())


if __name__ == "__main__":
    main()
