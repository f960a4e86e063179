"""The benchmark scripts run end to end in smoke mode and print every figure they promise.

Only that the figures are there and make sense is checked here; the timing targets are the
benchmarks' own business (see benchmarks/README.md).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.conftest import CALTECH, REPO, need_shared

SMOKE_FILES, SMOKE_BIG = 24, 3  # what --smoke limits index_throughput.py to
THROUGHPUT_FIGURES = {"images", "seconds", "end-to-end", "model-only", "ratio", "peak memory"}


def run_benchmark(script: str, *args: str, **env: str) -> str:
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / script), *args], capture_output=True,
                          text=True, timeout=600, env={**os.environ, **env})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done.stdout


def figures(block: str) -> dict[str, float]:
    """`name   number ...` lines of one printed block."""
    return {name: float(value) for name, value in re.findall(r"^(\S.*?)\s{2,}([\d.]+)\b", block, re.M)}


def test_index_throughput_smoke_prints_every_figure_for_both_photo_sets(tmp_path, demo_spec):
    need_shared(CALTECH)
    out = run_benchmark("index_throughput.py", "--smoke", "--model", f"local-dir:{demo_spec.local_dir}",
                        PIXSEEK_BENCH_CACHE=str(tmp_path))  # the 12 MP photos are made afresh
    blocks = out.split("\n== ")[1:]
    assert [b.split(" ==")[0] for b in blocks] == [f"{CALTECH.name} ({SMOKE_FILES} files)",
                                                   f"12 MP JPEGs ({SMOKE_BIG} files, 4000x3000)"]
    for block, count in zip(blocks, (SMOKE_FILES, SMOKE_BIG)):
        found = figures(block)
        assert THROUGHPUT_FIGURES <= found.keys(), block
        assert all(found[name] > 0 for name in THROUGHPUT_FIGURES), block
        assert found["images"] == count
        # The ratio printed is the one of the two rates printed (to their rounding).
        assert abs(found["ratio"] - found["end-to-end"] / found["model-only"]) < 0.01 + 0.01 * found["ratio"]
        stages = re.search(r"^stages\s+(.*)$", block, re.M).group(1)
        assert all(f"{stage} " in stages for stage in ("embed", "decode (in workers)", "write", "wait"))
    assert len(list((tmp_path / "pixseek-bench" / "big-4000x3000").glob("*.jpg"))) == SMOKE_BIG


def test_rescan_smoke_times_the_command_line_rerun_and_finds_no_heavy_import(demo_spec):
    out = run_benchmark("rescan.py", "--smoke", "--model", f"local-dir:{demo_spec.local_dir}")
    found = figures(out)
    assert found["files"] == 200
    assert found["first index"] > 0 and found["re-run (CLI)"] > 0 and found["re-run (API)"] > 0
    assert re.search(r"unchanged 200, embedded 0", out)
    assert re.search(r"^heavy imports\s+none\b", out, re.M)
