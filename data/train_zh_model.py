#!/usr/bin/env python3
"""Train pixseek's bilingual demo model: the shapes world searchable in English and Chinese.

    python3 data/train_zh_model.py [--out data/demo-model-zh] [--steps N] [--seed S]

The model is a transformers ``AlignModel`` (Kakao Brain's ALIGN architecture: an EfficientNet
image tower, a BERT text tower), tiny, trained from scratch by distillation from the English demo
model (data/demo-model), the way Multilingual-CLIP made CLIP multilingual: its image tower learns
to reproduce the teacher's embedding of each training picture, and its text tower to give an
English caption the teacher's embedding of that caption and a Chinese caption ("红色的圆形",
"一张红色的照片", ...) the teacher's embedding of what it says in English. The teacher's 64
dimensions are laid into the student's wider space by a fixed orthonormal map, which keeps every
cosine. Its tokenizer is a BERT WordPiece trained here on the captions, every Chinese character a
token of its own, as in BERT's Chinese vocabularies. The pictures (those of
data/train_demo_model.py, flipped and turned) are preprocessed by the student's own image
processor, so what it learns is what pixseek feeds it at search time.

Output (loadable with ``transformers.AutoModel`` / ``AutoTokenizer`` / ``AutoImageProcessor``,
and by pixseek as ``--model demo-zh`` or ``hf-dir:OUT``): config.json, model.safetensors,
tokenizer.json, tokenizer_config.json, preprocessor_config.json. At the end the saved model is
reloaded through pixseek and measured on a fresh gallery; the figures are printed.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from pixseek_data import DEMO_MODEL_DIR, DEMO_ZH_MODEL_DIR
from pixseek_data.shapes import COLOURS, COLOURS_ZH, SHAPES, SHAPES_ZH, caption, caption_zh, generate_gallery
from pixseek_data.train_demo_model import build_caption_bank, report, seed_everything, training_arguments

CONTEXT = 32
# The shipped model's run: `python3 data/train_zh_model.py` repeats it.
STEPS = 800
LEARNING_RATE = 2e-3
# ALIGN's EfficientNet at half its width and depth on 64 px pictures, with
# narrower expansions and its downsampling moved to the first blocks: a training step then costs
# about what the English demo model's does. PyTorch's BatchNorm momentum is the weight of the new
# batch: ALIGN's 0.99 (a TensorFlow-style figure) would leave the running statistics those of the
# last training batch.
VISION_CFG = {
    "image_size": 64,
    "width_coefficient": 0.5,
    "depth_coefficient": 0.5,
    "expand_ratios": [1, 2, 2, 2, 2, 2, 2],
    "strides": [2, 2, 2, 1, 1, 1, 1],
    "drop_connect_rate": 0.0,
    "batch_norm_momentum": 0.1,
}
TEXT_CFG = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 256,
    "max_position_embeddings": CONTEXT,
}
# kakaobrain/align-base's processor settings at this size: squash, then x / 127.5 - 1.
PROCESSOR_CFG = {
    "size": {"height": 64, "width": 64},
    "do_center_crop": False,
    "rescale_factor": 1 / 127.5,
    "rescale_offset": True,
    "do_normalize": False,
    "include_top": False,
}

TEMPLATES_ZH = [
    "{}",
    "{}",
    "一张{}的照片",
    "{}的照片",
    "一幅{}的图片",
    "{}的图片",
    "一个{}",
    "这是{}",
    "{}的画",
    "一张{}的图",
]
FULL_ZH = ["{c}的{s}", "{c}的{s}", "{c}{s}", "一个{c}的{s}"]
COLOUR_ZH = ["{c}", "{c}", "{c}的东西", "{c}的形状", "{c}的物体", "{c}的图形"]
SHAPE_ZH = ["{s}", "{s}", "一个{s}", "{s}图形", "任何颜色的{s}", "彩色的{s}"]


def chinese_texts(colour: str | None, shape: str | None) -> list[str]:
    """Chinese captions of a concept (a colour, a shape or both), the canonical one weighted up."""
    c, s = COLOURS_ZH.get(colour or ""), SHAPES_ZH.get(shape or "")
    phrases = FULL_ZH if c and s else COLOUR_ZH if c else SHAPE_ZH
    texts = [t.format(p.format(c=c, s=s)) for p in phrases for t in TEMPLATES_ZH]
    if c and s:
        texts += [caption_zh(colour, shape)] * 10
    return texts


def build_tokenizer():
    """A BERT WordPiece over every caption the model is trained on, as transformers loads it."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    _, bank = build_caption_bank(lambda texts: texts, chinese_texts)
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(handle_chinese_chars=True, lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    tok.train_from_iterator(
        [t for texts in bank for t in texts], trainers.WordPieceTrainer(vocab_size=1000, special_tokens=specials)
    )
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[(t, tok.token_to_id(t)) for t in ("[CLS]", "[SEP]")]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        model_max_length=CONTEXT,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def build_model(vocab: int, pad_id: int) -> torch.nn.Module:
    from transformers import AlignConfig, AlignModel

    def config(projection_dim: int) -> AlignConfig:
        text = {**TEXT_CFG, "vocab_size": vocab, "pad_token_id": pad_id}
        return AlignConfig(text_config=text, vision_config=VISION_CFG, projection_dim=projection_dim)

    # ALIGN projects texts into the width the image tower pools to: find it, then build for it.
    probe = AlignModel(config(8)).eval()
    with torch.no_grad():
        width = probe.get_image_features(pixel_values=torch.zeros(1, 3, 64, 64)).pooler_output.shape[-1]
    return AlignModel(config(int(width)))


def measure(folder: Path, per_class: int = 10, seed: int = 777) -> dict:
    """Precision@10 of every colour x shape caption, in both languages, through pixseek's own encoder."""
    from indexer.hf_model import HFEncoder
    from indexer.model import ModelSpec

    encoder = HFEncoder(ModelSpec.parse(f"hf-dir:{folder}"), "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        records = generate_gallery(Path(tmp), per_class=per_class, seed=seed)
        feats = encoder.encode_images([Image.open(r.path).convert("RGB") for r in records])
    colours, shapes = np.array([r.colour for r in records]), np.array([r.shape for r in records])
    figures = {}
    for lang, name in (("en", caption), ("zh", caption_zh)):
        classes = [(c, s) for c in COLOURS for s in SHAPES]
        top = np.argsort(-(encoder.encode_texts([name(c, s) for c, s in classes]) @ feats.T), axis=1)[:, :10]
        p10 = [float(np.mean((colours[t] == c) & (shapes[t] == s))) for (c, s), t in zip(classes, top)]
        figures[f"p10_{lang}_min"], figures[f"p10_{lang}_mean"] = min(p10), float(np.mean(p10))
    return figures


class Teacher:
    """The English demo model, giving the targets in the student's space (a fixed orthonormal map)."""

    def __init__(self, width: int, seed: int) -> None:
        import open_clip

        self.model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{DEMO_MODEL_DIR}")
        self.model.eval()
        self.tokenizer = open_clip.get_tokenizer(f"local-dir:{DEMO_MODEL_DIR}")
        cfg = open_clip.get_model_preprocess_cfg(self.model)
        self.mean = torch.tensor(cfg["mean"]).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg["std"]).view(1, 3, 1, 1)
        generator = torch.Generator().manual_seed(seed)
        self.map = torch.linalg.qr(torch.randn(width, self.model.text_projection.shape[1], generator=generator))[0]

    @torch.no_grad()
    def images(self, student_pixels: torch.Tensor) -> torch.Tensor:
        """Targets for pictures preprocessed for the student (x / 127.5 - 1), re-normalised for the teacher."""
        pixels = (student_pixels + 1) / 2
        return self.model.encode_image((pixels - self.mean) / self.std, normalize=True) @ self.map.T

    @torch.no_grad()
    def texts(self, texts: list[str]) -> torch.Tensor:
        return (
            torch.cat(
                [
                    self.model.encode_text(self.tokenizer(texts[i : i + 512]), normalize=True)
                    for i in range(0, len(texts), 512)
                ]
            )
            @ self.map.T
        )


def text_targets(teacher: Teacher, tokenize) -> tuple[torch.Tensor, torch.Tensor]:
    """Every caption of every concept as student tokens, and its target in the student's space.

    An English caption's target is the teacher's embedding of it; a Chinese one's, the mean of
    the teacher's embeddings of its concept's English captions."""
    _, english = build_caption_bank(lambda texts: texts)
    concepts, both = build_caption_bank(lambda texts: texts, chinese_texts)
    tokens, targets = [], []
    for en, all_texts in zip(english, both):
        own = teacher.texts(en)
        chinese = all_texts[len(en) :]
        tokens += [tokenize(en), tokenize(chinese)]
        targets += [own, F.normalize(own.mean(0, keepdim=True), dim=-1).expand(len(chinese), -1)]
    return torch.cat(tokens), torch.cat(targets)


def distill(args, model: torch.nn.Module, tokenize, transform, pad_id: int) -> dict:
    """Train `model` to give the teacher's embeddings (cosine loss on both towers); returns the run's figures."""
    from pixseek_data.train_demo_model import WARMUP_STEPS, augment, build_pool

    start = time.time()
    pool, _, _ = build_pool(args.pool_per_class, args.seed, transform)
    teacher = Teacher(model.config.projection_dim, args.seed)
    tokens, targets = text_targets(teacher, tokenize)
    print(f"{len(pool)} pictures, {len(tokens)} captions ready in {time.time() - start:.1f}s", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    gen = torch.Generator().manual_seed(args.seed)
    model.train()
    start = time.time()
    for step in range(args.steps):
        warm = min(1.0, (step + 1) / WARMUP_STEPS)
        for group in opt.param_groups:
            group["lr"] = args.lr * warm * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        pictures = augment(pool[torch.randint(0, len(pool), (args.batch_size,), generator=gen)].float(), gen)
        picked = torch.randint(0, len(tokens), (args.batch_size,), generator=gen)
        ids = tokens[picked]
        image = model.get_image_features(pixel_values=pictures).pooler_output
        text = model.get_text_features(input_ids=ids, attention_mask=(ids != pad_id).long()).pooler_output
        loss_image = 1 - F.cosine_similarity(image, teacher.images(pictures)).mean()
        loss_text = 1 - F.cosine_similarity(text, targets[picked]).mean()
        opt.zero_grad(set_to_none=True)
        (loss_image + loss_text).backward()
        opt.step()
        if step % 100 == 0 or step == args.steps - 1:
            print(
                f"step {step:5d}/{args.steps}  image loss {loss_image.item():.4f}  text loss {loss_text.item():.4f}  "
                f"{time.time() - start:.0f}s",
                flush=True,
            )
    model.eval()
    with torch.no_grad():  # ALIGN scales its logits by 1 / temperature (zero-shot tagging uses it)
        model.temperature.copy_(1 / teacher.model.logit_scale.exp())
    return {"steps": args.steps, "train_seconds": round(time.time() - start, 1)}


def save(model: torch.nn.Module, tokenizer, out: Path) -> None:
    from transformers import EfficientNetImageProcessor

    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    EfficientNetImageProcessor(**PROCESSOR_CFG).save_pretrained(out)
    for written in out.iterdir():  # package data: readable by every user of an installed wheel
        written.chmod(0o644)


def main(argv: list[str] | None = None) -> None:
    from transformers import EfficientNetImageProcessor

    parser = training_arguments(__doc__.split("\n\n")[0], DEMO_ZH_MODEL_DIR)
    parser.set_defaults(steps=STEPS, lr=LEARNING_RATE)
    args = parser.parse_args(argv)
    seed_everything(args)
    tokenizer = build_tokenizer()
    processor = EfficientNetImageProcessor(**PROCESSOR_CFG)
    model = build_model(len(tokenizer), tokenizer.pad_token_id)

    def tokenize(texts: list[str]) -> torch.Tensor:
        return tokenizer(texts, padding="max_length", truncation=True, max_length=CONTEXT, return_tensors="pt")[
            "input_ids"
        ]

    def transform(picture: Image.Image) -> torch.Tensor:
        return processor(images=picture, return_tensors="pt")["pixel_values"][0]

    info = distill(args, model, tokenize, transform, tokenizer.pad_token_id)
    save(model, tokenizer, args.out)
    report(args.out, info, measure)


if __name__ == "__main__":
    main()
