"""Quality tests of the shipped demo CLIP (data/demo-model) on a fresh shapes gallery.

The model is loaded only through open_clip's ordinary local-checkpoint path, the
gallery is drawn with a seed the training never used, and every expected value
comes from the generator's labels, never from the model's own output.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from pixseek_data.shapes import COLOURS, SHAPES, caption, draw_shape, generate_gallery

MODEL_DIR = Path(__file__).resolve().parent.parent / "data" / "demo-model"
MODEL_NAME = f"local-dir:{MODEL_DIR}"
GALLERY_SEED = 20240611  # training uses seed 0; the training script's own check uses 777
PER_CLASS = 10


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The model, its tokenizer and preprocess, and a 240-picture gallery embedded once."""
    model, _, preprocess = open_clip.create_model_and_transforms(MODEL_NAME)
    tokenizer = open_clip.get_tokenizer(MODEL_NAME)
    model.eval()
    records = generate_gallery(tmp_path_factory.mktemp("gallery"), per_class=PER_CLASS, seed=GALLERY_SEED)
    with torch.no_grad():
        pixels = torch.stack([preprocess(Image.open(r.path).convert("RGB")) for r in records])
        feats = model.encode_image(pixels, normalize=True)

    def embed_text(texts: list[str]) -> torch.Tensor:
        with torch.no_grad():
            return model.encode_text(tokenizer(texts), normalize=True)

    def embed_image(img: Image.Image) -> torch.Tensor:
        with torch.no_grad():
            return model.encode_image(preprocess(img).unsqueeze(0), normalize=True)[0]

    return {
        "model": model,
        "feats": feats,
        "colours": np.array([r.colour for r in records]),
        "shapes": np.array([r.shape for r in records]),
        "text": embed_text,
        "image": embed_image,
    }


def test_model_files_are_small_and_load_as_fp32(world):
    cfg = json.loads((MODEL_DIR / "open_clip_config.json").read_text())
    assert {"model_cfg", "preprocess_cfg"} <= cfg.keys()
    assert cfg["model_cfg"]["text_cfg"]["vocab_size"] == 49408
    assert (MODEL_DIR / "open_clip_model.safetensors").stat().st_size < 8_000_000
    assert all(p.dtype == torch.float32 for p in world["model"].parameters())
    assert isinstance(world["model"], open_clip.CLIP)


def test_gallery_is_balanced(world):
    assert len(world["feats"]) == len(COLOURS) * len(SHAPES) * PER_CLASS


@pytest.mark.parametrize("colour", list(COLOURS))
def test_text_query_precision_at_10(world, colour):
    """Every "a red circle" style query puts >= 9 of its 10 pictures in the top 10."""
    feats, colours, shapes = world["feats"], world["colours"], world["shapes"]
    queries = world["text"]([caption(colour, s) for s in SHAPES])
    top = (queries @ feats.T).topk(10, dim=1).indices.numpy()
    precisions = {s: float(np.mean((colours[t] == colour) & (shapes[t] == s))) for s, t in zip(SHAPES, top)}
    assert min(precisions.values()) >= 0.9, precisions


def test_zero_shot_shape_tagging(world):
    labels = list(SHAPES)
    prompts = world["text"]([f"a photo of a {label}" for label in labels])
    predicted = np.array(labels)[(world["feats"] @ prompts.T).argmax(dim=1).numpy()]
    accuracy = float(np.mean(predicted == world["shapes"]))
    assert accuracy >= 0.9, accuracy


def test_query_arithmetic_circle_minus_red(world):
    colours, shapes = world["colours"], world["shapes"]
    circle, red = world["text"](["circle", "red"])
    query = F.normalize(circle - red, dim=-1)
    order = (world["feats"] @ query).argsort(descending=True).numpy()
    rank = np.empty(len(order), dtype=int)
    rank[order] = np.arange(len(order))
    red_circles = (shapes == "circle") & (colours == "red")
    other_circles = (shapes == "circle") & (colours != "red")
    assert rank[other_circles].mean() < rank[red_circles].mean()
    assert not red_circles[order[:10]].any(), list(zip(colours[order[:10]], shapes[order[:10]]))


def test_image_query_returns_red_circles(world):
    colours, shapes = world["colours"], world["shapes"]
    query = world["image"](draw_shape("red", "circle", random.Random(GALLERY_SEED + 1)))
    top5 = (world["feats"] @ query).topk(5).indices.numpy()
    assert all(colours[top5] == "red") and all(shapes[top5] == "circle"), list(zip(colours[top5], shapes[top5]))


def test_text_encoding_stops_at_the_longest_text_and_matches_the_full_computation(world, monkeypatch):
    from indexer.model import encode_tokens

    model, tokenizer = world["model"], open_clip.get_tokenizer(MODEL_NAME)
    texts = ["a red circle", "a photo of a small green triangle on a white background", ""]
    too_long = [" ".join(["a big red circle"] * 20)]  # fills the whole context: nothing to skip
    tokens, long_tokens = tokenizer(texts), tokenizer(too_long)
    assert (tokens[:, -8:] == 0).all()  # there is padding to skip
    with torch.no_grad():
        full, long_full = model.encode_text(tokens), model.encode_text(long_tokens)
        monkeypatch.setattr(model, "encode_text", lambda t: pytest.fail("the padded path ran"))
        trimmed = encode_tokens(model, tokens)
        monkeypatch.setattr(model, "encode_text", lambda t: long_full)
        assert encode_tokens(model, long_tokens) is long_full
    assert torch.allclose(trimmed, full, atol=1e-5)
