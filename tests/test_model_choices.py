"""`pixseek models`: the curated table, every entry a real open_clip model, and --all the full list."""

from __future__ import annotations

import json
import subprocess
import sys

from indexer.model_choices import CHOICES

PIXSEEK = [sys.executable, "-c", "from ui.cli import main; main()"]


def _models(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*PIXSEEK, "models", *args], capture_output=True, text=True, timeout=120)


def test_every_recommended_model_is_an_open_clip_name_with_that_tag():
    import open_clip

    known = set(open_clip.list_pretrained())
    assert [(c.name, c.pretrained) for c in CHOICES if (c.name, c.pretrained) not in known] == []


def test_models_prints_the_curated_table_with_its_sources_and_not_the_full_list():
    proc = _models()
    assert proc.returncode == 0, proc.stderr
    for choice in CHOICES:
        row = next(line for line in proc.stdout.splitlines() if line.startswith(choice.use + " "))
        assert choice.name in row.split() and choice.pretrained in row.split()
    assert "openclip_retrieval_results.csv" in proc.stdout and "benchmarks/model_agreement.py" in proc.stdout
    assert "laion400m_e31" not in proc.stdout  # a tag of ViT-B-32 that no recommendation uses


def test_models_all_adds_every_builtin_pair_after_the_table():
    import open_clip

    lines = _models("--all").stdout.splitlines()
    listed = {
        tuple(line.split()) for line in lines[lines.index("Every open_clip built-in model and pretrained tag:") :]
    }
    assert set(open_clip.list_pretrained()) <= listed


def test_models_json_holds_both_lists():
    import open_clip

    data = json.loads(_models("--all", "--json").stdout)
    assert [c["name"] for c in data["recommended"]] == [c.name for c in CHOICES]
    assert [(m["model"], m["pretrained"]) for m in data["all"]] == list(open_clip.list_pretrained())
