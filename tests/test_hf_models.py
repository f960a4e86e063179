"""Every transformers dual-encoder family embeds through pixseek exactly as through transformers' own code.

Each family is a tiny variant of its real architecture (the same model class, image processor
settings of the published checkpoint, a tokenizer in the family's style) with random weights,
written once per module as a transformers folder. Real photos of every shape go through pixseek's
indexing path (run_index, then the stored vectors), two of them through its query-image path,
texts through the Encoder, and all are compared with the image processor + get_image_features and
the tokenizer + get_text_features. Full-size architectures: benchmarks/model_agreement.py.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from indexer.errors import PixseekError
from indexer.model import ModelSpec, load_encoder, preprocess_for
from tests.hf_families import FAMILIES, HFReference, write_hf_family
from tests.model_families import IMAGE_BOUND, TEXT_BOUND, agreement, written_once


@pytest.fixture(scope="module")
def family_folder(tmp_path_factory):
    """name -> the family's model folder, written once for the module."""
    return written_once(tmp_path_factory.mktemp("families"), write_hf_family, FAMILIES)


@pytest.mark.parametrize("name", FAMILIES)
def test_family_embeds_images_and_texts_as_transformers_does(name, family_photos, family_folder, tmp_path):
    folder = family_folder(name)
    figures = agreement(f"hf-dir:{folder}", HFReference(folder, FAMILIES[name]), family_photos, tmp_path / "lib")
    print(f"{name}: " + ", ".join(f"min cosine {k} {v:.6f}" for k, v in figures.items()))
    assert figures["indexed"] >= IMAGE_BOUND
    assert figures["query image"] >= IMAGE_BOUND
    assert figures["text"] >= TEXT_BOUND


def test_a_transformers_folder_passed_as_local_dir_loads_as_one(family_folder):
    folder = family_folder("clip")
    spec = ModelSpec.parse(f"local-dir:{folder}")
    assert spec == ModelSpec.parse(f"hf-dir:{folder}") and spec.backend == "hf"
    assert load_encoder(spec, "cpu").preprocess == preprocess_for(spec)


def test_align_pixels_are_squashed_cropped_and_scaled_as_its_processor_says(family_folder):
    """kakaobrain/align-base: squash to 346, crop the centre 289, x / 127.5 - 1 (no mean/std step)."""
    preprocess = preprocess_for(ModelSpec.parse(f"hf-dir:{family_folder('align')}"))
    assert (preprocess.squash_to, preprocess.size, preprocess.crop_offset) == ((346, 346), (289, 289), "floor")
    assert np.allclose(preprocess.mean, 0.5) and np.allclose(np.array(preprocess.std) * 255, 127.5)


def test_the_dimension_of_a_library_is_the_models_embedding_size(family_folder):
    encoder = load_encoder(ModelSpec.parse(f"hf-dir:{family_folder('siglip')}"), "cpu")
    config = json.loads((family_folder("siglip") / "config.json").read_text())
    assert encoder.dim == config["text_config"]["hidden_size"]  # SigLIP's towers end at their width
    pixels = np.zeros((2, *encoder.preprocess.size, 3), np.uint8)
    assert encoder.encode_pixels(pixels).shape == (2, encoder.dim)


def _copy_without(folder: Path, name: str, copy: Path) -> Path:
    shutil.copytree(folder, copy)
    (copy / name).unlink()
    return copy


@pytest.mark.parametrize(
    "missing, named", [("tokenizer.json", "tokenizer.json"), ("preprocessor_config.json", "preprocessor_config.json")]
)
def test_a_folder_missing_a_file_names_it(family_folder, tmp_path, missing, named):
    folder = _copy_without(family_folder("chinese-clip"), missing, tmp_path / "model")
    with pytest.raises(PixseekError) as err:
        load_encoder(ModelSpec.parse(f"hf-dir:{folder}"), "cpu")
    assert named in err.value.problem and "hub repo" in err.value.hint


def test_a_folder_without_weights_says_to_copy_them(family_folder, tmp_path):
    folder = _copy_without(family_folder("clip"), "model.safetensors", tmp_path / "model")
    with pytest.raises(PixseekError) as err:
        load_encoder(ModelSpec.parse(f"hf-dir:{folder}"), "cpu")
    assert "no weights file" in err.value.problem and ".safetensors" in err.value.hint


def test_a_model_that_is_not_a_dual_encoder_is_refused(family_folder, tmp_path):
    from transformers import BertConfig, BertModel

    folder = shutil.copytree(family_folder("align"), tmp_path / "model")
    for weights in folder.glob("*.safetensors"):
        weights.unlink()
    tiny = BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    BertModel(tiny).save_pretrained(folder)
    with pytest.raises(PixseekError) as err:
        load_encoder(ModelSpec.parse(f"hf-dir:{folder}"), "cpu")
    assert "BertModel" in err.value.problem and "not an image-text dual encoder" in err.value.problem


def test_siglip2_naflex_gives_each_photo_the_patch_grid_its_processor_does(family_photos, family_folder):
    """Portrait, panorama and tiny photos keep their aspect ratio: the grids differ, and match transformers'."""
    from transformers import AutoImageProcessor

    from indexer.decode import decode_image, to_model_input
    from indexer.preprocess import patch_grids

    folder = family_folder("siglip2-naflex")
    preprocess = preprocess_for(ModelSpec.parse(f"hf-dir:{folder}"))
    processor = AutoImageProcessor.from_pretrained(folder)
    ours, theirs = [], []
    for path in sorted(family_photos.iterdir()):
        decoded = decode_image(path, target_size=preprocess)  # draft-reduced, as indexing decodes
        ours.append(to_model_input(decoded.image, preprocess, (decoded.width, decoded.height)))
        full = decode_image(path).image
        theirs.append(processor(images=[full], return_tensors="np")["spatial_shapes"][0])
    grids = patch_grids(np.stack(ours), preprocess.patch_size)
    assert grids.tolist() == np.stack(theirs).tolist()
    assert len({tuple(g) for g in grids}) > 2 and (grids.prod(axis=1) <= preprocess.max_patches).all()


def test_an_unreachable_hub_fails_at_once_naming_the_offline_folder_option(monkeypatch):
    import socket

    from huggingface_hub import constants

    with socket.socket() as sock:  # a port nothing listens on once closed: connections are refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setattr(constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for proxy in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    with pytest.raises(PixseekError) as err:
        load_encoder(ModelSpec.parse("hf:pixseek-tests/not-cached-anywhere"), "cpu")
    assert "127.0.0.1 cannot be reached" in err.value.problem and "hf-dir:" in err.value.hint


def test_transformers_models_index_on_torch_when_the_runtime_is_auto(family_folder):
    from indexer.runtime import choose_runtime

    choice = choose_runtime(ModelSpec.parse(f"hf-dir:{family_folder('clip')}"), "auto", device="cpu")
    assert choice.runtime == "torch" and "transformers models run on torch" in choice.reason
