"""The `pixseek` command as a user runs it: in this process through typer's CliRunner (exact output,
exit codes), and as real processes where only a fresh process shows the behaviour."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pixseek_data.shapes import generate_gallery
from tests.harness import assert_one_line_error, cli, run


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    """A shapes library built through the CLI; returns (library env, gallery labels by file name, root)."""
    root = tmp_path_factory.mktemp("cli")
    images = generate_gallery(root / "images", per_class=4, seed=21)
    env = {"PIXSEEK_LIBRARY": str(root / "library")}
    report = json.loads(
        cli("index", str(root / "images"), "--model", "demo", "--json", "--workers", "0", env=env).stdout
    )
    assert report["added"] == len(images)
    return env, {img.path.name: (img.colour, img.shape) for img in images}, root


def test_search_json_returns_red_circles_first(indexed):
    env, labels, _ = indexed
    results = json.loads(cli("search", "a red circle", "--json", "-k", "4", env=env).stdout)
    assert [labels[Path(r["path"]).name] for r in results] == [("red", "circle")] * 4
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)


def test_search_table_lists_rank_score_and_path(indexed):
    env, labels, root = indexed
    table = cli("search", "a blue star", "-k", "2", env=env).stdout
    found = json.loads(cli("search", "a blue star", "-k", "2", "--json", env=env).stdout)
    assert table == "".join(f"{rank:>3}  {r['score']:6.3f}  {'':10}  {r['path']}\n" for rank, r in enumerate(found, 1))
    assert all(labels[Path(r["path"]).name] == ("blue", "star") for r in found)


def test_second_index_run_embeds_nothing(indexed):
    env, _, root = indexed
    report = json.loads(cli("index", str(root / "images"), "--json", env=env).stdout)
    assert report["embedded"] == 0 and report["unchanged"] == 96


def test_info_json_describes_model_and_index(indexed):
    env, _, _ = indexed
    info = json.loads(cli("info", "--json", env=env).stdout)
    assert info["images"] == 96
    assert "demo-model" in info["model"]
    assert info["index"]["type"] == "flat" and info["index"]["vectors"] == 96
    assert info["embedding_dim"] > 0 and info["schema_version"] >= 1


def test_another_model_is_refused_with_a_rebuild_hint(indexed, tmp_path):
    from indexer.model import DEMO_MODEL_DIR

    other = tmp_path / "other-model"
    other.mkdir()
    cfg = json.loads((DEMO_MODEL_DIR / "open_clip_config.json").read_text())
    cfg["model_cfg"]["embed_dim"] = cfg["model_cfg"]["embed_dim"] // 2
    (other / "open_clip_config.json").write_text(json.dumps(cfg))
    (other / "open_clip_model.safetensors").write_bytes(b"not the same weights")
    env, _, root = indexed
    refused = cli("index", str(root / "images"), "--model", f"local-dir:{other}", code=1, env=env)
    assert_one_line_error(refused, "was built with model", "--rebuild")
    refused = cli("search", "a red circle", "--model", f"local-dir:{other}", code=1, env=env)
    assert_one_line_error(refused, "was built with model")


def test_a_missing_folder_is_one_exact_line_and_exit_code_1(tmp_path):
    refused = cli("index", "/no/such/folder", "--library", str(tmp_path / "library"), code=1)
    assert refused.stdout == ""
    assert refused.stderr == (
        "error: folder not found: /no/such/folder: check the path (and that the drive is mounted)\n"
    )


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["index", "{images}", "--model", "ViT-Nope-1"], ["unknown model", "pixseek models"]),
        # Without a tag open_clip would build random weights: searches would rank noise.
        (["index", "{images}", "--model", "ViT-L-14"], ["'ViT-L-14' needs a weights tag", "--pretrained", "openai"]),
        (["index", "{images}", "--model", "convnext_tiny"], ["no published weights", "local-dir:"]),
        (
            ["index", "{images}", "--model", "ViT-B-32", "--pretrained", "nope"],
            ["no pretrained tag 'nope'", "laion2b_s34b_b79k"],
        ),
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
def test_bad_input_gives_one_line_and_exit_code_1(args, words, indexed, tmp_path):
    _, _, root = indexed
    notimage = tmp_path / "notes.jpg"
    notimage.write_text("this is text")
    fill = {"images": str(root / "images"), "library": str(root / "library"), "notimage": str(notimage)}
    refused = cli(*[a.format(**fill) for a in args], code=1, env={"PIXSEEK_LIBRARY": str(tmp_path / "library")})
    assert_one_line_error(refused, *words)


def test_offline_download_failure_names_the_local_dir_option(indexed, cli_env):
    _, _, root = indexed
    env = {**cli_env, "HF_HUB_OFFLINE": "1"}  # read when huggingface_hub is imported: a process of its own
    proc = run(["index", str(root / "images"), "--model", "ViT-B-32"], env)
    assert proc.returncode == 1
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
    # A process of its own: --verbose configures the root logger.
    proc = run(["index", str(root / "images"), "--model", "demo", "--workers", "1", "--verbose"], cli_env)
    assert proc.returncode == 0, proc.stderr
    loggers = set(re.findall(r"^\S+ \S+ (\S+): ", proc.stderr, re.M))
    assert {"indexer.model", "indexer.runner"} <= loggers
    assert all(name.split(".")[0] in ("indexer", "search", "ui") for name in loggers), loggers


def test_every_command_has_help():
    for command in ["index", "search", "info", "demo", "models", "dupes", "tag", "ui"]:
        assert "Usage" in cli(command, "--help").stdout, command


def test_a_user_error_in_a_real_process_is_one_line_and_exit_code_1(cli_env):
    proc = run(["search", "a cat"], cli_env, timeout=60)
    assert proc.returncode == 1
    assert (
        proc.stderr == f"error: no library at {cli_env['PIXSEEK_LIBRARY']}: "
        "run `pixseek index FOLDER` first (or pass --library DIR)\n"
    )


def test_demo_runs_offline_and_finds_red_circles(tmp_path):
    out = cli("demo", "--dir", str(tmp_path / "demo"), "--per-class", "2").stdout
    block = out.split("pixseek search 'a red circle'")[1].strip().splitlines()
    assert block[0].strip().startswith("red-circle")
