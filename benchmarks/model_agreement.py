#!/usr/bin/env python3
"""Full-size architectures against open_clip's own code, and what each curated model costs here.

    python3 benchmarks/model_agreement.py [--agree NAME ...] [--agree-hf NAME ...] [--rates NAME ...]
                                          [--batches N] [--batch-size N] [--smoke]

Agreement (default ViT-B-32 and ViT-B-16-SigLIP): the architecture is built at full size with
random weights, seeded, with its pretrained tag's real preprocess_cfg (and, where it needs a
Hugging Face tokenizer, one trained locally), saved as a local-dir folder, and compared with
open_clip the way tests/test_model_fidelity.py compares the tiny variants: real photos of every
shape through pixseek's indexing path and query-image path, texts through the Encoder and
encode_tokens, against open_clip's `preprocess` + encode_image / encode_text. It prints the
minimum cosine of each. --agree-hf (default clip, chinese-clip) does the same for the transformers
backend: the family's default configuration, which is its published base size (CLIPConfig() is
openai/clip-vit-base-patch32, ChineseCLIPConfig() is OFA-Sys/chinese-clip-vit-base-patch16), with
random weights and the published processor settings (tests/hf_families.py), against transformers'
processor + get_image_features / get_text_features.

Rates (default: every model of indexer/model_choices.py): images/s of `encode_image` alone on a
ready fp32 batch (32 unless --batch-size) on this CPU (one small warm-up batch first), the architecture with random
weights; the figure `pixseek models` shows as "img/s here".

--smoke compares the bundled demo model (its trained weights, no full-size build) instead of --agree.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import _common  # noqa: F401 (puts the repository on sys.path)

from indexer.model_choices import CHOICES
from indexer.preprocess import Preprocess
from pixseek_data import DEMO_MODEL_DIR
from tests.hf_families import FAMILIES as HF_FAMILIES
from tests.hf_families import HFReference, write_hf_family
from tests.model_families import Family, Reference, agreement, copy_photos, write_family

AGREE = ("ViT-B-32", "ViT-B-16-SigLIP")
AGREE_HF = ("clip", "chinese-clip")
STAND_IN_TEXT = {"context_length": 77, "vocab_size": 1000, "width": 64, "heads": 1, "layers": 1}


def full_size_family(name: str) -> Family:
    import open_clip

    tags = open_clip.list_pretrained_tags_by_model(name)
    tag = next((c.pretrained for c in CHOICES if c.name == name), tags[0] if tags else "")
    pretrained = open_clip.get_pretrained_cfg(name, tag) or {}
    preprocess = {
        k: pretrained[k]
        for k in ("mean", "std", "interpolation", "resize_mode", "fill_color")
        if pretrained.get(k) is not None
    }
    model_cfg = open_clip.get_model_config(name)
    return Family(model_cfg, preprocess, tokenizer="t5" if model_cfg["text_cfg"].get("hf_tokenizer_name") else None)


def full_size_hf_family(name: str):
    """The tiny family of tests/hf_families.py at its published size: the configs' defaults."""
    from dataclasses import replace

    family = HF_FAMILIES[name]
    return replace(family, text={}, vision={}, extra={})


def model_folders(tmp: Path, names: list[str], hf_names: list[str], smoke: bool) -> Iterator[tuple[str, str, object]]:
    """(label, --model spec, reference) of each model to compare, each written when its turn comes."""
    if smoke:
        yield "demo model (trained, bundled)", f"local-dir:{DEMO_MODEL_DIR}", Reference(DEMO_MODEL_DIR)
        return
    for name in names:
        folder = write_family(tmp / name, full_size_family(name))
        yield f"{name} (random weights, full size)", f"local-dir:{folder}", Reference(folder)
    for name in hf_names:
        family = full_size_hf_family(name)
        folder = write_hf_family(tmp / f"hf-{name}", family)
        yield f"transformers {name} (random weights, full size)", f"hf-dir:{folder}", HFReference(folder, family)


def image_rate(name: str, batches: int, batch_size: int) -> float:
    """Images/s of encode_image on batches of `batch_size`, the architecture `name` with random weights."""
    import open_clip
    import torch

    torch.manual_seed(0)
    # Only the image tower is timed: a stand-in text tower spares downloading an HF text config.
    model = open_clip.create_model(name, text_cfg=STAND_IN_TEXT).eval()
    height, width = Preprocess.from_cfg(open_clip.get_model_preprocess_cfg(model)).size
    pixels = torch.rand(batch_size, 3, height, width)
    with torch.inference_mode():
        model.encode_image(pixels[:2])
        start = time.perf_counter()
        for _ in range(batches):
            model.encode_image(pixels)
    return batches * batch_size / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--agree", nargs="*", default=list(AGREE), help="architectures to compare with open_clip")
    parser.add_argument("--agree-hf", nargs="*", default=list(AGREE_HF), help="transformers families to compare")
    parser.add_argument("--rates", nargs="*", default=None, help="architectures to time (default: the curated list)")
    parser.add_argument("--batches", type=int, default=2, help="timed batches per architecture")
    parser.add_argument("--batch-size", type=int, default=32, help="images per timed batch")
    parser.add_argument("--smoke", action="store_true", help="compare only the bundled demo model (seconds)")
    args = parser.parse_args()
    import torch

    print(f"torch threads: {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    if args.smoke or args.agree or args.agree_hf:
        with tempfile.TemporaryDirectory(prefix="pixseek-agree-") as tmp:
            photos = copy_photos(Path(tmp) / "photos")
            folders = model_folders(Path(tmp), args.agree, args.agree_hf, args.smoke)
            for i, (label, model, reference) in enumerate(folders):
                figures = agreement(model, reference, photos, Path(tmp) / f"lib-{i}")
                print(f"{label}: " + ", ".join(f"min cosine {k} {v:.6f}" for k, v in figures.items()), flush=True)
    names = args.rates if args.rates is not None else list(dict.fromkeys(c.name for c in CHOICES))
    for name in names:
        rate = image_rate(name, args.batches, args.batch_size)
        print(
            f"{name}: {rate:.2f} images/s (encode_image, batch {args.batch_size}, fp32, CPU; load average "
            f"{os.getloadavg()[0]:.1f})",
            flush=True,
        )


if __name__ == "__main__":
    main()
