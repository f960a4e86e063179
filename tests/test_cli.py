"""The `pixseek` command as a user runs it: real subprocesses, real exit codes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ui.shapes import generate_gallery

PIXSEEK = [sys.executable, "-c", "from ui.cli import main; main()"]
REPO = Path(__file__).resolve().parents[1]


def run(args: list[str], env: dict[str, str], timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run(PIXSEEK + args, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """A shapes library built through the CLI; returns (env, gallery labels by file name)."""
    import os

    root = tmp_path_factory.mktemp("cli")
    images = generate_gallery(root / "images", per_class=4, seed=21)
    env = {**os.environ, "PIXSEEK_LIBRARY": str(root / "library")}
    proc = run(["index", str(root / "images"), "--model", "demo", "--json", "--workers", "0"], env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["added"] == len(images)
    return env, {img.path.name: (img.colour, img.shape) for img in images}, root


def test_search_json_returns_red_circles_first(indexed):
    env, labels, _ = indexed
    proc = run(["search", "a red circle", "--json", "-k", "4"], env)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert [labels[Path(r["path"]).name] for r in results] == [("red", "circle")] * 4
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)


def test_search_table_lists_paths(indexed):
    env, labels, _ = indexed
    proc = run(["search", "a blue star", "-k", "2"], env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 2
    assert all(labels[Path(line.split()[-1]).name] == ("blue", "star") for line in lines)


def test_second_index_run_embeds_nothing(indexed):
    env, _, root = indexed
    proc = run(["index", str(root / "images"), "--json"], env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["embedded"] == 0 and report["unchanged"] == 96


def test_info_json_describes_model_and_index(indexed):
    env, _, _ = indexed
    info = json.loads(run(["info", "--json"], env).stdout)
    assert info["images"] == 96
    assert "demo-model" in info["model"]
    assert info["index"]["type"] == "flat" and info["index"]["vectors"] == 96
    assert info["embedding_dim"] > 0 and info["schema_version"] >= 1


def test_another_model_is_refused_with_a_rebuild_hint(indexed, tmp_path):
    import json as _json

    from indexer.model import DEMO_MODEL_DIR

    other = tmp_path / "other-model"
    other.mkdir()
    cfg = _json.loads((DEMO_MODEL_DIR / "open_clip_config.json").read_text())
    cfg["model_cfg"]["embed_dim"] = cfg["model_cfg"]["embed_dim"] // 2
    (other / "open_clip_config.json").write_text(_json.dumps(cfg))
    (other / "open_clip_model.safetensors").write_bytes(b"not the same weights")
    env, _, root = indexed
    proc = run(["index", str(root / "images"), "--model", f"local-dir:{other}"], env)
    assert_one_line_error(proc, "was built with model", "--rebuild")
    proc = run(["search", "a red circle", "--model", f"local-dir:{other}"], env)
    assert_one_line_error(proc, "was built with model")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["index", "/no/such/folder"], ["folder not found"]),
        (["index", "{images}", "--model", "ViT-Nope-1"], ["unknown model", "pixseek models"]),
        # Without a tag open_clip would build random weights: searches would rank noise.
        (["index", "{images}", "--model", "ViT-L-14"], ["'ViT-L-14' needs a weights tag", "--pretrained", "openai"]),
        (["index", "{images}", "--model", "convnext_tiny"], ["no published weights", "local-dir:"]),
        (["index", "{images}", "--model", "ViT-B-32", "--pretrained", "nope"], ["no pretrained tag 'nope'",
                                                                               "laion2b_s34b_b79k"]),
        (["index", "{images}", "--model", "local-dir:/no/such/model"], ["open_clip_config.json"]),
        (["index", "{images}", "--index", "hnsw"], ["unknown index type"]),
        (["search", "a cat"], ["no library", "pixseek index"]),
        (["search", '"unbalanced', "--library", "{library}"], ["unbalanced quotes"]),
        (["search", "--image", "/no/such.jpg", "--library", "{library}"], ["query image not found"]),
        (["search", "--image", "{notimage}", "--library", "{library}"], ["cannot read query image"]),
        (["search", "--library", "{library}"], ["nothing to search for"]),
        (["search", "a cat", "--from", "last tuesday", "--library", "{library}"], ["bad --from date"]),
        (["info"], ["no library"]),
    ],
)
def test_bad_input_gives_one_line_and_a_nonzero_exit(args, words, indexed, cli_env, tmp_path):
    _, _, root = indexed
    notimage = tmp_path / "notes.jpg"
    notimage.write_text("this is text")
    fill = {"images": str(root / "images"), "library": str(root / "library"), "notimage": str(notimage)}
    proc = run([a.format(**fill) for a in args], cli_env)
    assert_one_line_error(proc, *words)


def test_offline_download_failure_names_the_local_dir_option(indexed, cli_env):
    _, _, root = indexed
    env = {**cli_env, "HF_HUB_OFFLINE": "1"}  # what a machine without internet sees, without the retries
    proc = run(["index", str(root / "images"), "--model", "ViT-B-32"], env)
    assert_one_line_error(proc, "could not download", "local-dir:")


def test_unreachable_hub_fails_at_once_with_one_line_not_a_minute_of_retries(indexed, cli_env, tmp_path):
    import socket

    _, _, root = indexed
    with socket.socket() as sock:  # a port nothing listens on once closed: connections are refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in cli_env.items() if "proxy" not in k.lower() and k != "HF_HUB_OFFLINE"}
    env.update(HF_ENDPOINT=f"http://127.0.0.1:{port}", HF_HOME=str(tmp_path / "hf"))  # nothing cached
    proc = run(["index", str(root / "images"), "--model", "ViT-B-32"], env)
    # huggingface_hub's own retries would print a "Retrying in 1s [Retry 1/5]" line each.
    assert_one_line_error(proc, "could not download", "127.0.0.1 cannot be reached", "local-dir:")
    # Nothing was lost: with a model at hand the next run embeds every photo the failed one found.
    proc = run(["index", str(root / "images"), "--model", "demo", "--workers", "0"], env)
    assert proc.returncode == 0, proc.stderr
    count = len(list((root / "images").iterdir()))
    assert f", {count} embedded at " in proc.stdout, proc.stdout


def test_verbose_index_logs_pixseeks_stages_and_not_its_libraries_loading_steps(indexed, cli_env):
    _, _, root = indexed
    proc = run(["index", str(root / "images"), "--model", "demo", "--workers", "1", "--verbose"], cli_env)
    assert proc.returncode == 0, proc.stderr
    loggers = set(re.findall(r"^\S+ \S+ (\S+): ", proc.stderr, re.M))
    assert {"indexer.model", "indexer.runner"} <= loggers
    assert all(name.split(".")[0] in ("indexer", "search", "ui") for name in loggers), loggers


def test_every_command_has_help(cli_env):
    for command in ["index", "search", "info", "demo", "models", "dupes", "tag", "ui"]:
        proc = run([command, "--help"], cli_env, timeout=60)
        assert proc.returncode == 0 and "Usage" in proc.stdout, command


def test_demo_runs_offline_and_finds_red_circles(tmp_path, cli_env):
    proc = run(["demo", "--dir", str(tmp_path / "demo"), "--per-class", "2"], cli_env)
    assert proc.returncode == 0, proc.stderr
    block = proc.stdout.split("pixseek search 'a red circle'")[1].strip().splitlines()
    assert block[0].strip().startswith("red-circle")
