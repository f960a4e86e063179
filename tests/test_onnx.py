"""The ONNX runtime gives the torch runtime's vectors: export, int8, the torch-free tokenizer, the choice."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from indexer.onnx_encoder import OnnxEncoder
from indexer.onnx_export import CACHE_ENV, EXPORT_FORMAT, META, ensure_export, load_export
from indexer.preprocess import Preprocess
from indexer.runtime import (
    INT8_MIN_RECALL,
    PROBE_TEXTS,
    RuntimeCheck,
    choose_runtime,
    load_runtime_encoder,
    query_recall_at_k,
    recall_at_k,
)
from search.prompts import embed_texts
from tests.conftest import CALTECH, REPO, need_shared

TEXTS = [
    "a photo of a dog",
    "red circle",
    "A BIG Blue Square!!",
    "it's the cat's toy, isn't it?",
    "Straße café naïve façade",
    "東京の夜景",
    "кошка на диване",
    "🐶 at the beach 🌊",
    "&amp; &lt;b&gt; html",
    "  lots   of\twhite\nspace  ",
    "42 apples and 7 pears",
    "x" * 300,
    "a very long description of a sunny afternoon with a green triangle next to a small yellow star on the grass",
]


@pytest.fixture(scope="module", autouse=True)
def onnx_root(tmp_path_factory):
    """Exports go to a test folder, never to the user's cache."""
    root = tmp_path_factory.mktemp("onnx-cache")
    before = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(root)
    yield root
    if before is None:
        del os.environ[CACHE_ENV]
    else:
        os.environ[CACHE_ENV] = before


@pytest.fixture(scope="module")
def demo_export(demo_spec, onnx_root):
    return ensure_export(demo_spec, "int8")


@pytest.fixture(scope="module")
def onnx_fp32(demo_spec, demo_export):
    return OnnxEncoder(demo_spec, "cpu", "fp32", export=demo_export)


@pytest.fixture(scope="session")
def caltech_pixels(demo_encoder):
    """Every other Caltech photo (596), as the CPU indexing path hands them to the model."""
    from indexer.decode import decode_image, to_model_input

    files = sorted(need_shared(CALTECH).rglob("*.jpg"))[::2]
    prep = demo_encoder.preprocess
    return np.stack([to_model_input(decode_image(f, prep).image, prep) for f in files])


def test_onnx_fp32_images_match_torch_on_real_photos(demo_encoder, onnx_fp32, caltech_pixels):
    ours = onnx_fp32.encode_pixels(caltech_pixels)
    theirs = demo_encoder.encode_pixels(caltech_pixels)
    assert ours.dtype == np.float32 and ours.shape == theirs.shape
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    assert (ours * theirs).sum(axis=1).min() >= 0.9999


def test_onnx_fp32_texts_match_torch(demo_encoder, onnx_fp32):
    ours, theirs = onnx_fp32.encode_texts(TEXTS), demo_encoder.encode_texts(TEXTS)
    assert (ours * theirs).sum(axis=1).min() >= 0.9999
    ensembled = embed_texts(onnx_fp32, ["dog", "blue square"]), embed_texts(demo_encoder, ["dog", "blue square"])
    assert (ensembled[0] * ensembled[1]).sum(axis=1).min() >= 0.9999


def test_text_graph_trimmed_to_the_longest_text_equals_the_full_context(onnx_fp32):
    tokens = onnx_fp32.tokenizer(["red circle", "a photo of a green star"])
    session = onnx_fp32.session("text")
    full = session.run(None, {"tokens": tokens})[0]
    trimmed = onnx_fp32.encode_texts(["red circle", "a photo of a green star"])
    assert onnx_fp32.export.meta["text_trim"]
    assert (full * trimmed).sum(axis=1).min() >= 0.99999


def test_int8_keeps_recall_at_10_on_caltech(demo_spec, demo_export, onnx_fp32, caltech_pixels):
    int8 = OnnxEncoder(demo_spec, "cpu", "int8", export=demo_export)
    assert int8.export.path("image", "int8") != int8.export.path("image", "fp32")
    photos = onnx_fp32.encode_pixels(caltech_pixels)
    assert recall_at_k(photos, int8.encode_pixels(caltech_pixels)) >= INT8_MIN_RECALL
    texts = list(PROBE_TEXTS)
    assert query_recall_at_k(photos, onnx_fp32.encode_texts(texts), int8.encode_texts(texts)) >= INT8_MIN_RECALL


@functools.lru_cache
def _open_clip_tokenizer(context_length, clean):
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=context_length, clean=clean)


def _open_clip_ids(texts, context_length, clean="lower"):
    return _open_clip_tokenizer(context_length, clean)(texts).numpy()


@pytest.mark.parametrize("clean", ["lower", "whitespace", "canonicalize"])
def test_tokenizer_gives_open_clips_ids(onnx_fp32, clean):
    from indexer.clip_tokenizer import ClipTokenizer

    vocab = onnx_fp32.export.folder / onnx_fp32.export.meta["tokenizer"]["vocab"]
    for context in (77, 32):
        ours = ClipTokenizer(vocab, context, clean)(TEXTS)
        np.testing.assert_array_equal(ours, _open_clip_ids(TEXTS, context, clean))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(st.text(max_size=40), min_size=1, max_size=4))
def test_tokenizer_gives_open_clips_ids_on_any_text(onnx_fp32, texts):
    np.testing.assert_array_equal(onnx_fp32.tokenizer(texts), _open_clip_ids(texts, 32))


def test_export_records_what_readers_need(demo_encoder, demo_export, demo_spec):
    meta = demo_export.meta
    assert meta["fingerprint"] == demo_spec.fingerprint() and meta["format"] == EXPORT_FORMAT
    assert meta["dim"] == demo_encoder.dim
    assert Preprocess.from_dict(meta["preprocess"]) == demo_encoder.preprocess
    assert meta["tokenizer"]["context_length"] == 32
    assert not [p.name for p in demo_export.folder.iterdir() if p.name.endswith(".tmp")]


def test_stale_export_is_exported_again(demo_spec, tmp_path):
    first = ensure_export(demo_spec, root=tmp_path)
    image = first.path("image", "fp32")
    meta = json.loads((first.folder / META).read_text())
    meta["exporter"] = "format1-torchscript-opset17-torch0.0"  # made by another torch
    (first.folder / META).write_text(json.dumps(meta))
    image.write_bytes(b"not a graph")
    again = ensure_export(demo_spec, root=tmp_path)
    assert again.meta["exporter"] == first.meta["exporter"]
    assert image.read_bytes() != b"not a graph"
    meta["format"] = EXPORT_FORMAT + 1  # written by a newer pixseek: not trusted
    (first.folder / META).write_text(json.dumps(meta))
    assert load_export(demo_spec.fingerprint(), tmp_path) is None
    (first.folder / META).unlink()  # an export that stopped half way
    assert load_export(demo_spec.fingerprint(), tmp_path) is None


def test_text_query_path_does_not_import_torch(demo_spec, demo_export):
    code = (
        "import sys\n"
        "from indexer.model import ModelSpec\n"
        "from indexer.runtime import choose_runtime, load_runtime_encoder\n"
        "from search.prompts import embed_texts\n"
        f"spec = ModelSpec.parse({demo_spec.name!r})\n"
        "choice = choose_runtime(spec, 'auto')\n"
        "assert choice.runtime == 'onnx', choice\n"
        "encoder = load_runtime_encoder(spec, choice)\n"
        "vector = embed_texts(encoder, ['a red circle'])\n"
        "assert vector.shape == (1, encoder.dim), vector.shape\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'open_clip', 'torchvision'))\n"
        "assert not loaded, loaded\n"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]


def test_choose_runtime_honours_the_request(demo_spec, demo_export):
    assert choose_runtime(demo_spec, "torch", device="cpu").runtime == "torch"
    onnx = choose_runtime(demo_spec, "onnx", device="cpu")
    assert (onnx.runtime, onnx.precision) == ("onnx", "fp32")
    assert choose_runtime(demo_spec, "auto", "int8", device="cpu").label == "onnx int8"
    unchecked = choose_runtime(demo_spec, "auto", device="cpu")
    assert unchecked.label == "onnx fp32" and unchecked.check is None


def test_auto_checks_int8_on_the_librarys_photos_and_records_it(demo_spec, demo_export, caltech_pixels):
    choice = choose_runtime(demo_spec, "auto", device="cpu", sample=caltech_pixels[:64])
    check = choice.check
    assert check is not None and check.photos == 64 and check.fingerprint == demo_spec.fingerprint()
    assert set(check.rates) == {"torch fp32", "onnx fp32", "onnx int8"}
    assert check.onnx_cosine_min >= 0.9999
    # The pick is the fastest runtime whose results stayed equal.
    equal = [r for r in check.rates if r != "onnx int8" or check.int8_recall >= INT8_MIN_RECALL]
    assert check.picked == max(equal, key=check.rates.get) == choice.label
    stored = RuntimeCheck.from_setting(check.to_setting())
    assert stored == check
    assert choose_runtime(demo_spec, "auto", device="cpu", recorded=stored).label == check.picked
    # With an int8 pick, text queries run on the int8 text tower only where the check found them equal.
    assert 0 < check.text_int8_recall <= 1
    for recall, text in ((1.0, "int8"), (INT8_MIN_RECALL - 0.01, "fp32"), (None, "fp32")):
        int8 = RuntimeCheck(check.fingerprint, 64, dict(check.rates), 1.0, 1.0, recall, picked="onnx int8")
        picked = choose_runtime(demo_spec, "auto", device="cpu", recorded=int8)
        assert (picked.label, picked.text_precision) == ("onnx int8", text)
        assert load_runtime_encoder(demo_spec, picked, "cpu").text_precision == text
    other = RuntimeCheck("local:another-model", 64, dict(check.rates), picked="onnx int8")
    assert choose_runtime(demo_spec, "auto", device="cpu", recorded=other).label == "onnx fp32"
    assert RuntimeCheck.from_setting("{not json") is None


def _demo_variant(folder, **text_cfg):
    """The demo weights under a config that changes how the text side works."""
    import shutil

    from indexer.model import DEMO_MODEL_DIR, ModelSpec

    shutil.copytree(DEMO_MODEL_DIR, folder)
    config = json.loads((folder / "open_clip_config.json").read_text())
    config["model_cfg"]["text_cfg"].update(text_cfg)
    (folder / "open_clip_config.json").write_text(json.dumps(config))
    return ModelSpec.parse(f"local-dir:{folder}")


def test_a_family_that_does_not_export_falls_back_to_torch_and_is_not_tried_again(tmp_path):
    from indexer.onnx_export import REFUSED, NotExportable, export_folder

    # Token reduction (drop words to fit the context) has no torch-free twin here.
    spec = _demo_variant(tmp_path / "model", tokenizer_kwargs={"reduction_mask": "simple"})
    choice = choose_runtime(spec, "auto", device="cpu")
    assert choice.runtime == "torch" and "does not export to ONNX" in choice.reason and "\n" not in choice.reason
    assert (export_folder(spec.fingerprint()) / REFUSED).is_file()
    with pytest.raises(NotExportable, match="reduction"):
        ensure_export(spec)
    assert choose_runtime(spec, "onnx", device="cpu").runtime == "torch"


def test_text_tower_without_causal_mask_exports_at_full_length(tmp_path):
    """Without the causal mask, padding changes the result: the graph keeps the whole context."""
    from indexer.model import load_encoder

    spec = _demo_variant(tmp_path / "model", no_causal_mask=True)
    export = ensure_export(spec)
    assert not export.meta["text_trim"]
    ours = OnnxEncoder(spec, "cpu", export=export).encode_texts(TEXTS)
    assert (ours * load_encoder(spec, "cpu").encode_texts(TEXTS)).sum(axis=1).min() >= 0.9999


def test_unknown_runtime_and_precision_are_user_errors(demo_spec, demo_export):
    from indexer.errors import PixseekError

    with pytest.raises(PixseekError, match="unknown runtime"):
        choose_runtime(demo_spec, "tensorflow")
    with pytest.raises(PixseekError, match="needs the ONNX runtime"):
        choose_runtime(demo_spec, "torch", "int8", device="cpu")
    with pytest.raises(PixseekError, match="not available on cpu"):
        OnnxEncoder(demo_spec, "cpu", "fp16", export=demo_export)


@pytest.mark.slow
def test_random_vit_b_32_exports_equal_and_int8_keeps_recall(tmp_path):
    """ViT-B-32's architecture (random weights: none can be downloaded here) through export and int8."""
    from indexer.decode import decode_image, to_model_input
    from indexer.model import ModelSpec, load_encoder

    sys.path.insert(0, str(REPO / "benchmarks"))
    import _common

    spec = ModelSpec.parse(f"local-dir:{_common.random_vit_b32()}")
    export = ensure_export(spec, "int8", root=tmp_path)
    torch_encoder = load_encoder(spec, "cpu")
    files = sorted(need_shared(CALTECH).rglob("*.jpg"))[::8]
    pixels = np.stack([to_model_input(decode_image(f, 224).image, 224) for f in files])
    reference = torch_encoder.encode_pixels(pixels)
    fp32 = OnnxEncoder(spec, "cpu", "fp32", export=export)
    assert (fp32.encode_pixels(pixels) * reference).sum(axis=1).min() >= 0.9999
    assert (fp32.encode_texts(TEXTS) * torch_encoder.encode_texts(TEXTS)).sum(axis=1).min() >= 0.9999
    int8 = OnnxEncoder(spec, "cpu", "int8", export=export)
    assert recall_at_k(reference, int8.encode_pixels(pixels)) >= INT8_MIN_RECALL
    # Its int8 text tower agrees with the fp32 one. (Which photos a query finds means nothing with
    # random weights: the trained demo model's int8 test checks that.)
    assert export.path("text", "int8") != export.path("text", "fp32")
    texts = list(PROBE_TEXTS)
    assert (fp32.encode_texts(texts) * int8.encode_texts(texts)).sum(axis=1).min() >= 0.99


def test_fp16_graph_for_gpus_agrees_with_torch(demo_spec, demo_encoder, caltech_pixels):
    """The graph CUDA and TensorRT run, checked here through the CPU provider (no GPU needed)."""
    import onnxruntime

    export = ensure_export(demo_spec, "fp16")
    assert export.path("image", "fp16") != export.path("image", "fp32")
    session = onnxruntime.InferenceSession(str(export.path("image", "fp16")), providers=["CPUExecutionProvider"])
    pixels = caltech_pixels[:64]
    ours = session.run(None, {"pixels": pixels})[0]
    assert ours.dtype == np.float32
    assert (ours * demo_encoder.encode_pixels(pixels)).sum(axis=1).min() >= 0.999


@pytest.fixture(scope="module")
def auto_library(tmp_path_factory, shapes_gallery, demo_spec, demo_export):
    """The shapes gallery indexed through the CLI with --runtime auto."""
    from tests.harness import cli

    lib = tmp_path_factory.mktemp("auto-lib")
    folder, _ = shapes_gallery
    out = cli(
        "index",
        str(folder),
        "--library",
        str(lib),
        "--model",
        f"local-dir:{demo_spec.local_dir}",
        "--workers",
        "0",
        "--runtime",
        "auto",
        "--json",
    ).stdout
    return lib, json.loads(out)


def _said(check: RuntimeCheck, how: str) -> str:
    """The line `auto` gives for a recorded check: the pick, and with int8 which text tower queries use."""
    said = f"{check.picked}: fastest with equal results, {how}"
    return said + (f"; text queries in {check.text_precision}" if check.picked == "onnx int8" else "")


def test_index_auto_checks_its_first_photos_records_the_pick_and_says_it(auto_library, demo_spec):
    from indexer.runtime import SAMPLE_SIZE
    from search import Library

    lib, report = auto_library
    with Library.open(lib) as opened:
        check = opened.settings.recorded_runtime()
        info = opened.info().runtime_check
    assert check is not None and check.fingerprint == demo_spec.fingerprint() and check.photos == SAMPLE_SIZE
    assert report["runtime"] == _said(check, f"checked on {SAMPLE_SIZE} of this library's photos")
    assert info["picked"] == check.picked and info["rates"] == check.rates


def test_queries_follow_the_recorded_check_and_later_runs_do_not_check_again(auto_library, demo_spec, tmp_path):
    import shutil

    from indexer.runner import run_index
    from pixseek_data.shapes import generate_gallery
    from search import Library

    lib, _ = auto_library
    with Library.open(lib, runtime="auto") as opened:
        recorded = opened.settings.recorded_runtime()
        choice = opened.encoder.choice
        assert choice.label == recorded.picked and choice.check is None
        assert "checked on this library's photos" in choice.reason
    copy = tmp_path / "lib"
    shutil.copytree(lib, copy)
    generate_gallery(tmp_path / "more", per_class=1, seed=99)
    report = run_index(copy, [tmp_path / "more"], model=demo_spec, workers=0, runtime="auto")
    assert report.embedded > 0 and report.runtime == _said(recorded, "checked on this library's photos")
    with Library.open(copy) as opened:
        assert opened.settings.recorded_runtime() == recorded


def test_cli_runtime_and_precision_reach_the_run_and_bad_names_are_one_line(auto_library, shapes_gallery, tmp_path):
    from tests.harness import assert_one_line_error, cli

    folder, _ = shapes_gallery
    out = cli(
        "index",
        str(folder),
        "--library",
        str(tmp_path / "lib"),
        "--model",
        "demo",
        "--workers",
        "0",
        "--runtime",
        "onnx",
        "--precision",
        "int8",
    ).stdout
    assert "runtime: onnx int8 (asked for)" in out
    lib, _ = auto_library
    assert_one_line_error(
        cli("search", "a red circle", "--library", str(lib), "--runtime", "tensorflow", code=1),
        "unknown runtime 'tensorflow'",
    )
    assert_one_line_error(
        cli("search", "a red circle", "--library", str(lib), "--precision", "int4", code=1), "unknown precision 'int4'"
    )
    assert "runtime     auto picks" in cli("info", "--library", str(lib)).stdout


def test_cli_text_search_with_onnx_imports_neither_torch_nor_open_clip(auto_library):
    lib, _ = auto_library
    code = (
        "import json, sys\n"
        f"sys.argv = ['pixseek', 'search', 'a red circle', '--library', {str(lib)!r}, '--runtime', 'onnx', '--json']\n"
        "from ui.cli import app\n"
        "try:\n    app()\nexcept SystemExit as exc:\n    assert not exc.code, exc.code\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'open_clip', 'faiss'})))\n"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    *results, loaded = run.stdout.strip().splitlines()
    assert json.loads(loaded) == []  # a small library is scored exactly: faiss is not needed either
    assert "red-circle" in json.loads("\n".join(results))[0]["path"]


def test_ui_hands_runtime_and_precision_to_the_page_whose_library_follows_them(auto_library, monkeypatch):
    import ui.server
    from search import ENV_PRECISION, ENV_RUNTIME, Library
    from tests.harness import cli

    lib, _ = auto_library
    handed = {}
    # The page process's environment is this one's at serve() time (ui/server.py copies os.environ).
    monkeypatch.setattr(
        ui.server,
        "serve",
        lambda *args: handed.update({key: os.environ.get(key) for key in (ENV_RUNTIME, ENV_PRECISION)}),
    )
    monkeypatch.delenv(ENV_RUNTIME, raising=False)
    cli("ui", "--library", str(lib), "--runtime", "onnx", "--precision", "int8")
    assert handed == {ENV_RUNTIME: "onnx", ENV_PRECISION: "int8"}
    assert ENV_RUNTIME not in os.environ  # only the page's environment had them
    for key, value in handed.items():
        monkeypatch.setenv(key, value)
    with Library.open(lib) as opened:
        assert opened.encoder.choice.label == "onnx int8" and isinstance(opened.encoder, OnnxEncoder)


def test_tagging_on_onnx_gives_the_tags_torch_gives(auto_library, tmp_path):
    import shutil

    from search import Library
    from search.tags import tag_images

    lib, _ = auto_library
    copy = tmp_path / "lib"
    shutil.copytree(lib, copy)
    labels = ["red", "green", "blue", "yellow", "a circle", "a square", "a triangle"]
    with Library.open(copy, runtime="torch") as opened:
        by_torch = tag_images(opened, labels)
    with Library.open(copy, runtime="onnx") as opened:
        by_onnx = tag_images(opened, labels)
        assert isinstance(opened.encoder, OnnxEncoder)
    assert by_onnx == by_torch and sum(by_torch.values()) > 0
