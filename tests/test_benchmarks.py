"""The benchmark scripts run end to end in smoke mode and print every figure they promise.

Only that the figures are there and make sense is checked here; the timing targets are the
benchmarks' own business (see benchmarks/README.md).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from PIL import Image

from tests.conftest import CALTECH, REPO, need_shared
from tests.harness import CHROMIUM
from tests.model_families import IMAGE_BOUND, TEXT_BOUND

SMOKE_FILES, SMOKE_BIG = 24, 3  # what --smoke limits index_throughput.py to
THROUGHPUT_FIGURES = {"images", "seconds", "end-to-end", "steady", "model-only", "ratio", "peak memory"}


def run_benchmark(script: str, *args: str, **env: str) -> str:
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, **env},
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def figures(block: str) -> dict[str, float]:
    """`name   number ...` lines of one printed block."""
    return {name: float(value) for name, value in re.findall(r"^(\S.*?)\s{2,}([\d.]+)\b", block, re.M)}


def test_index_throughput_smoke_prints_every_figure_for_every_photo_set(tmp_path, demo_spec):
    need_shared(CALTECH)
    out = run_benchmark(
        "index_throughput.py",
        "--smoke",
        "--repeat",
        "2",
        "--model",
        f"local-dir:{demo_spec.local_dir}",
        PIXSEEK_BENCH_CACHE=str(tmp_path),
    )  # the 12 MP photos are made afresh
    *blocks, summary = out.split("\n== ")[1:]
    titles = [b.split(" ==")[0] for b in blocks]
    sets = [f"{CALTECH.name} ({SMOKE_FILES} files)"] + [
        f"12 MP JPEGs, {kind} ({SMOKE_BIG} files, 4000x3000, {size} MB each)"
        for kind, size in zip(("plain upscaling", "grain 4"), re.findall(r"4000x3000, ([\d.]+) MB each", out)[:2])
    ]
    assert titles == [f"{s}, round {r} of 2" for r in (1, 2) for s in sets]  # round after round over all sets
    for block, count in zip(blocks, (SMOKE_FILES, SMOKE_BIG, SMOKE_BIG) * 2):
        found = figures(block)
        assert THROUGHPUT_FIGURES <= found.keys(), block
        assert all(found[name] > 0 for name in THROUGHPUT_FIGURES), block
        assert found["images"] == count
        # The ratio printed is the one of the two rates printed (to their rounding).
        assert abs(found["ratio"] - found["steady"] / found["model-only"]) < 0.01 + 0.01 * found["ratio"]
        # A smoke run is shorter than two read-ahead windows: no steady window, the whole run.
        assert found["steady"] == found["end-to-end"] and "too few images" in block
    assert summary.startswith("ratio (steady / model-only), median of 2 rounds ==")
    for label in sets:
        median, first, second = map(
            float, re.search(re.escape(label) + r": ([\d.]+)\s+\(([\d.]+) / ([\d.]+)\)", summary).groups()
        )
        assert abs(median - (first + second) / 2) < 0.0015
        assert [first, second] == [figures(b)["ratio"] for b in blocks if b.startswith(label)]
        stages = re.search(r"^stages\s+(.*)$", block, re.M).group(1)
        assert all(f"{stage} " in stages for stage in ("embed", "decode (in workers)", "write", "wait"))
    made = list((tmp_path / "pixseek-bench").glob("big-4000x3000-*/*.jpg"))
    assert len(made) == 2 * SMOKE_BIG
    plain, grainy = (sorted((tmp_path / "pixseek-bench" / f"big-4000x3000-grain{g}").glob("*.jpg"))[0] for g in (0, 4))
    with Image.open(plain) as photo:
        assert sorted(photo.size) == [3000, 4000]
    assert grainy.stat().st_size > 1.5 * plain.stat().st_size  # grain compresses like a camera's noise


def test_rescan_smoke_times_the_command_line_rerun_and_finds_no_heavy_import(demo_spec):
    out = run_benchmark("rescan.py", "--smoke", "--model", f"local-dir:{demo_spec.local_dir}")
    found = figures(out)
    assert found["files"] == 200
    assert found["first index"] > 0 and found["re-run (CLI)"] > 0 and found["re-run (API)"] > 0
    assert re.search(r"unchanged 200, embedded 0", out)
    assert re.search(r"^heavy imports\s+none\b", out, re.M)


def test_model_agreement_smoke_holds_the_demo_model_to_the_bounds_and_times_a_tower():
    need_shared(CALTECH)
    out = run_benchmark("model_agreement.py", "--smoke", "--rates", "ViT-B-32", "--batches", "1", "--batch-size", "1")
    line = re.search(r"^demo model \(trained, bundled\): (.*)$", out, re.M).group(1)
    cosines = dict(re.findall(r"min cosine ([a-z ]+?) ([\d.]+)", line))
    assert cosines.keys() == {"indexed", "query image", "text", "fast text path"}
    assert min(float(cosines["indexed"]), float(cosines["query image"])) >= IMAGE_BOUND
    assert min(float(cosines["text"]), float(cosines["fast text path"])) >= TEXT_BOUND
    assert float(re.search(r"^ViT-B-32: ([\d.]+) images/s \(encode_image, batch 1\b", out, re.M).group(1)) > 0


def test_scale_smoke_prints_build_memory_and_every_query_set_full(tmp_path):
    out = run_benchmark("scale.py", "--smoke", "--library", str(tmp_path / "lib"))
    build, *sets = out.split("\n== ")[1:]
    found = figures(build)
    assert found["build s"] > 0
    assert 0 < found["ANN index held bytes/image"] <= found["index disk bytes/image"] * 1.01
    assert found["vectors disk bytes/image"] >= 512 * 2  # float16 rows of 512
    assert [s.split(" (")[0] for s in sets] == ["no filter", "dates 50%", "camera 5%", "folder 0.1%"]
    queries = int(re.search(r"(\d+) queries", out).group(1))
    for block in sets:
        numbers = figures(block)
        assert 0 < numbers["p50 ms"] <= numbers["p95 ms"], block
        assert 0 <= numbers["recall@10"] <= 1, block
        assert re.search(rf"^full queries\s+{queries} of {queries}$", block, re.M), block


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no browser at {CHROMIUM}: run .ci/install-browser.sh")
def test_ui_latency_smoke_times_both_libraries_cold_and_warm(tmp_path):
    need_shared(CALTECH)
    out = run_benchmark("ui_latency.py", "--smoke", "--big", "3", PIXSEEK_BENCH_CACHE=str(tmp_path))
    libraries = re.findall(r"^(.+): library (\S+) \((\d+) added", out, re.M)
    assert [(label, int(added)) for label, _, added in libraries] == [
        ("caltech (60 JPEGs)", 60),  # spread over the classes
        ("12 MP JPEGs (3, grain 4)", 3),
    ]
    timings = re.findall(r"^  (cold|warm): first card ([\d.]+) s median.*whole page ([\d.]+) s median", out, re.M)
    assert [mode for mode, *_ in timings] == ["cold", "warm"] * 2
    assert all(0 < float(first) <= float(whole) for _, first, whole in timings)


def test_steady_window_leaves_a_read_ahead_window_out_at_both_ends(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from index_throughput import steady_window

    stamps = {n: n / 10 for n in range(32, 481, 32)}  # batches of 32 consumed at 10 images/s
    first, last, seconds = steady_window(stamps, 96)
    assert (first, last) == (96, 384)
    assert abs(seconds - 28.8) < 1e-9
    assert steady_window({32: 3.2, 64: 6.4, 96: 9.6}, 96) is None


@pytest.mark.slow
def test_runtimes_smoke_prints_a_row_per_cpu_runtime_and_the_pick(demo_spec):
    need_shared(CALTECH)
    out = run_benchmark("runtimes.py", "--models", "demo", "--photos", "32", "--rounds", "1", "--cold", "2")
    rows = {
        line.split()[0] + " " + line.split()[1]: line.split()[2:]
        for line in out.splitlines()
        if line.startswith(("torch ", "onnx "))
    }
    assert set(rows) == {"torch fp32", "onnx fp32", "onnx int8"}, out
    for values in rows.values():
        rate, _, cosine, recall, memory, query_ms = map(float, values)
        assert rate > 0 and memory > 0 and query_ms > 0, out
        assert 0 < recall <= 1 and -1 <= cosine <= 1
    assert float(rows["torch fp32"][1]) == 1.0 and float(rows["torch fp32"][3]) == 1.0  # torch against itself
    assert float(rows["onnx fp32"][2]) >= 0.9999
    pick = re.search(r"^auto picks: (torch fp32|onnx fp32|onnx int8) \(on 32 photos", out, re.M)
    assert pick is not None, out
    assert re.search(r"^cold start, .*: min [\d.]+s, median [\d.]+s over 2$", out, re.M), out


@pytest.mark.slow
def test_index_throughput_compares_runtimes_against_torch_in_one_run(tmp_path):
    need_shared(CALTECH)
    out = run_benchmark("index_throughput.py", "--smoke", "--big", "0", "--runtime", "torch,onnx:int8")
    table = out.split("== runtimes, ")[1].splitlines()[2:4]
    rows = {line.split()[0]: list(map(float, line.split()[1:])) for line in table}
    assert set(rows) == {"torch", "onnx:int8"}, out
    assert rows["torch"][4] == 1.0 and 0 < rows["onnx:int8"][4] <= 1  # recall@10 against torch's own vectors
    assert all(value > 0 for row in rows.values() for value in row), out
    assert "runtime         onnx int8 (asked for)" in out
