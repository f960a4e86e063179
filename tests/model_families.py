"""open_clip model families as `local-dir:` folders with random weights, and their reference embeddings.

Shared by tests/test_model_fidelity.py (tiny variants) and benchmarks/model_agreement.py (full
sizes). A folder holds what a user would copy from the hub: open_clip_config.json with the
family's real preprocess_cfg, weights, and, where the family's text side comes from Hugging Face,
tokenizer files (trained here with the `tokenizers` library) and the text tower's config.json.
The reference is open_clip's own: create_model_and_transforms' `preprocess` on the fully decoded,
upright photo, then encode_image / encode_text.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from tests.conftest import CALTECH, PHOTO_LIBRARY

# Portrait, landscape (EXIF-rotated), wide 9 MP panorama, 8 MP, tiny, PNG, a small wide one from
# Caltech: every branch of resize and crop. The large JPEGs are drafted on decode; the 8 MP one is
# where a draft without margin fell below the bound (benchmarks/README.md).
PHOTOS = (
    PHOTO_LIBRARY / "recurser+exif-orientation-examples" / "Portrait_1.jpg",
    PHOTO_LIBRARY / "recurser+exif-orientation-examples" / "Landscape_6.jpg",
    PHOTO_LIBRARY / "ianare+exif-samples" / "jpg" / "mobile" / "HMD_Nokia_8.3_5G.jpg",
    PHOTO_LIBRARY / "ianare+exif-samples" / "jpg" / "hdr" / "iphone_hdr_YES.jpg",
    PHOTO_LIBRARY / "ianare+exif-samples" / "jpg" / "invalid" / "image01551.jpg",
    PHOTO_LIBRARY / "skimage-0.26.0-data" / "astronaut.png",
    CALTECH / "airplanes" / "image_0038.jpg",
)
# The query-image path decodes as the indexing path does; two photos (EXIF-rotated, drafted 8 MP)
# check that it gets there by itself.
QUERY_PHOTOS = (1, 3)  # indices into PHOTOS
TEXTS = (
    "a photo of a dog",
    "a red circle",
    "红色的圆形",
    "an airplane flying over the sea at sunset, seen from far away",
    " ".join(["a very long caption that runs past the context length"] * 12),
)
# The bounds (fp32): pixseek's embedding against the reference's, per image and per text.
IMAGE_BOUND = 0.999
TEXT_BOUND = 0.9999
SIGLIP_PREPROCESS = {"mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic", "resize_mode": "squash"}
MOBILECLIP_PREPROCESS = {"mean": [0.0] * 3, "std": [1.0] * 3, "interpolation": "bilinear", "resize_mode": "shortest"}
# Words for the tokenizers trained here; any text tokenizes (unknown pieces become <unk>).
CORPUS = [t for t in TEXTS[:4]] + ["a photo of a cat", "a drawing of a lamp", "the sea and the sky", "一张狗的照片"]
# Special tokens in the order (and so the ids) of the real families: T5/Gemma-style for SigLIP,
# RoBERTa-style (pad id 1, matching the text tower's pad_token_id) for XLM-R and NLLB.
TOKENIZER_STYLES = {
    "t5": (["<pad>", "</s>", "<unk>"], "$A </s>"),
    "roberta": (["<s>", "<pad>", "</s>", "<unk>"], "<s> $A </s>"),
}


@dataclass(frozen=True)
class Family:
    model_cfg: dict
    preprocess_cfg: dict = field(default_factory=dict)
    tokenizer: str | None = None  # a TOKENIZER_STYLES key for Hugging Face tokenizers
    text_tower: dict | None = None  # the HF text tower's config.json (model_type and sizes)


def write_family(folder: Path, family: Family, seed: int = 0) -> Path:
    """Write `family` with random weights (seeded) as a local-dir model folder; returns the folder."""
    import open_clip
    import torch

    folder.mkdir(parents=True, exist_ok=True)
    model_cfg = json.loads(json.dumps(family.model_cfg))
    vocab = None
    if family.tokenizer:
        vocab = write_tokenizer(folder, family.tokenizer)
        if family.text_tower is None:
            model_cfg["text_cfg"]["vocab_size"] = vocab
    if family.text_tower is not None:
        write_text_tower_config(folder, family.text_tower, vocab)
    (folder / "open_clip_config.json").write_text(
        json.dumps({"model_cfg": model_cfg, "preprocess_cfg": family.preprocess_cfg})
    )
    torch.manual_seed(seed)
    model = open_clip.create_model(f"local-dir:{folder}", **hf_text_override(folder))
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    return folder


def hf_text_override(folder: Path) -> dict:
    """What a user of open_clip passes offline to build an HF text tower from a folder's config.json."""
    text_cfg = json.loads((folder / "open_clip_config.json").read_text())["model_cfg"]["text_cfg"]
    if "hf_model_name" not in text_cfg:
        return {}
    return {"text_cfg": {**text_cfg, "hf_model_name": str(folder), "hf_model_pretrained": False}}


def write_tokenizer(folder: Path, style: str, context: int = 512) -> int:
    """A small SentencePiece-like (Unigram) tokenizer saved as tokenizer.json; returns its vocabulary size.

    `context` is its model_max_length: the longest text it lets through when truncating."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    specials, template = TOKENIZER_STYLES[style]
    tokenizer = Tokenizer(models.Unigram())
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace()
    tokenizer.decoder = decoders.Metaspace()
    tokenizer.train_from_iterator(
        CORPUS * 4, trainers.UnigramTrainer(vocab_size=120, special_tokens=specials, unk_token="<unk>")
    )
    tokenizer.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(t, tokenizer.token_to_id(t)) for t in specials if t in template]
    )
    tokenizer.save(str(folder / "tokenizer.json"))
    names = {"pad_token": "<pad>", "eos_token": "</s>", "unk_token": "<unk>"}
    if "<s>" in specials:
        names.update(bos_token="<s>", cls_token="<s>", sep_token="</s>")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": context, **names})
    )
    return tokenizer.get_vocab_size()


def write_text_tower_config(folder: Path, tower: dict, vocab: int | None) -> None:
    from transformers import AutoConfig

    settings = dict(tower)
    AutoConfig.for_model(
        settings.pop("model_type"), vocab_size=vocab, pad_token_id=1, bos_token_id=0, eos_token_id=2, **settings
    ).save_pretrained(folder)


def written_once(root: Path, write: Callable[[Path, Any], Path], families: dict) -> Callable[[str], Path]:
    """name -> that family's model folder under `root`, written by `write` the first time it is asked for."""

    @cache
    def folder(name: str) -> Path:
        return write(root / name, families[name])

    return folder


@cache
def upright_rgb(path: Path) -> Image.Image:
    """The photo as a user of open_clip opens it: full decode, EXIF orientation applied, RGB.

    Cached: every family compares against the same decodes (open_clip's transforms never
    modify the image they are given)."""
    with Image.open(path) as img:
        return ImageOps.exif_transpose(img).convert("RGB")


class Reference:
    """open_clip's own model, preprocess and tokenizer for a folder, embedding in fp32."""

    def __init__(self, folder: Path) -> None:
        import open_clip

        name = f"local-dir:{folder}"
        self.model, _, self.preprocess = open_clip.create_model_and_transforms(name, **hf_text_override(folder))
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(name)

    def images(self, images: list[Image.Image]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            batch = torch.stack([self.preprocess(img) for img in images])
            return torch.nn.functional.normalize(self.model.encode_image(batch), dim=-1).numpy()

    def texts(self, texts: list[str]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            feats = self.model.encode_text(self.tokenizer(texts))
            return torch.nn.functional.normalize(feats, dim=-1).numpy()

    def fast_texts(self, texts: list[str]) -> np.ndarray:
        """pixseek's encode_tokens on the reference model and tokens."""
        import torch

        from indexer.model import encode_tokens

        with torch.inference_mode():
            feats = encode_tokens(self.model, self.tokenizer(texts))
            return torch.nn.functional.normalize(feats, dim=-1).numpy()


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float(np.min(np.sum(a * b, axis=1)))


def copy_photos(folder: Path) -> Path:
    """PHOTOS copied into `folder` (numbered, so names cannot clash) for an index run."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(PHOTOS):
        shutil.copy(path, folder / f"{i:02d}-{path.name}")
    return folder


def agreement(model: str, reference, photo_folder: Path, library_root: Path) -> dict[str, float]:
    """Minimum cosines between pixseek's embeddings of `model` (a --model spec) and `reference`'s.

    "indexed": run_index's stored vectors; "query image": Library.embed_image; "text": the
    Encoder's texts; for open_clip's Reference also "fast text path": encode_tokens against
    encode_text on the same tokens.
    """
    from indexer.library import LibraryPaths
    from indexer.model import ModelSpec, preprocess_for
    from indexer.runner import run_index
    from search.library import Library

    spec = ModelSpec.parse(model)
    paths = sorted(photo_folder.iterdir())
    expected = reference.images([upright_rgb(p) for p in paths])
    lib = LibraryPaths.at(library_root)
    run_index(lib, [photo_folder], model=spec, workers=0)
    with Library(lib, spec, "cpu") as library:
        indexed = np.stack([library.stored_vector(library.find_id(p)) for p in paths])
        queried = np.stack([library.embed_image(paths[i]) for i in QUERY_PHOTOS])
        if preprocess_for(spec) != library.encoder.preprocess:
            raise AssertionError("the preprocessing read from the config differs from the loaded model's")
        texts = library.encoder.encode_texts(list(TEXTS))
    reference_texts = reference.texts(list(TEXTS))
    figures = {
        "indexed": min_cosine(indexed, expected),
        "query image": min_cosine(queried, expected[list(QUERY_PHOTOS)]),
        "text": min_cosine(texts, reference_texts),
    }
    if hasattr(reference, "fast_texts"):
        figures["fast text path"] = min_cosine(reference.fast_texts(list(TEXTS)), reference_texts)
    return figures
