"""The short list of models `pixseek models` recommends, with published quality and cost measured here.

Quality is text-to-image retrieval recall@5 as open_clip publishes it (one benchmark run over all
its pretrained weights, so the rows compare): English on MS-COCO 5k, Chinese on the Chinese
captions of multilingual MS-COCO. Cost is images/s of the image tower on this project's 2-core CPU,
the same architecture with random weights (benchmarks/model_agreement.py; figures and machine in
benchmarks/README.md). Light to import: `pixseek models` must stay instant.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

ENGLISH_SOURCE = "open_clip docs/openclip_retrieval_results.csv, column 'MSCOCO image retr. R@5'"
CHINESE_SOURCE = (
    "open_clip docs/openclip_multilingual_retrieval_results.csv, column "
    "'multilingual_mscoco_captions image_retrieval_recall@5 zh'"
)
TABLES_AT = "github.com/mlfoundations/open_clip @ 89fb801"
COST_SOURCE = "benchmarks/model_agreement.py: encode_image, batch 32, fp32, random weights, this 2-core CPU"


@dataclass(frozen=True)
class Choice:
    use: str
    name: str
    pretrained: str
    languages: str
    coco_en_r5: float | None  # ENGLISH_SOURCE
    coco_zh_r5: float | None  # CHINESE_SOURCE
    images_per_s: float | None  # COST_SOURCE


CHOICES = (
    Choice("English, fast (default)", "ViT-B-32", "laion2b_s34b_b79k", "English", 0.6543, 0.043, 15.2),
    Choice("English, balanced", "ViT-B-16-SigLIP", "webli", "English", 0.7244, 0.010, 3.8),
    Choice("English, best", "ViT-L-16-SigLIP-256", "webli", "English", 0.7580, 0.013, 0.81),
    Choice(
        "multilingual, fast", "xlm-roberta-base-ViT-B-32", "laion5b_s13b_b90k", "100 languages", 0.6344, 0.796, 14.4
    ),
    Choice("multilingual / Chinese", "nllb-clip-base-siglip", "v1", "200 languages", 0.6913, 0.847, 1.23),
    Choice("Chinese, best", "nllb-clip-large-siglip", "v1", "200 languages", 0.7084, 0.868, 0.20),
)


def choices_json() -> list[dict]:
    return [asdict(c) for c in CHOICES]


def render_choices() -> str:
    """The curated table as `pixseek models` prints it, sources last."""
    header = ("use", "--model", "--pretrained", "languages", "COCO R@5 en", "COCO R@5 zh", "img/s here")
    rows = [header] + [
        (
            c.use,
            c.name,
            c.pretrained,
            c.languages,
            _figure(c.coco_en_r5, 3),
            _figure(c.coco_zh_r5, 3),
            _figure(c.images_per_s, 2),
        )
        for c in CHOICES
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join(
        [
            "Recommended models (text-to-image search quality published by open_clip; cost measured here):",
            "",
            *lines,
            "",
            f"COCO R@5 en: {ENGLISH_SOURCE}.",
            f"COCO R@5 zh: {CHINESE_SOURCE}.",
            f"Both tables: {TABLES_AT}. img/s here: {COST_SOURCE}.",
            "Index with: pixseek index FOLDER --model NAME --pretrained TAG"
            "  (all built-in names: pixseek models --all)",
        ]
    )


def _figure(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"
