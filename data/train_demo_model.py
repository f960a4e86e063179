#!/usr/bin/env python3
"""Train pixseek's own tiny CLIP on the generated shapes world.

    python3 data/train_demo_model.py [--out data/demo-model] [--seconds N] [--steps N] [--seed S]

The model is an ordinary open_clip ``CLIP`` built from a custom ``model_cfg``
(a tiny ModifiedResNet image tower and a small transformer text tower on
open_clip's default SimpleTokenizer vocabulary). It is trained contrastively, from scratch, on
pictures drawn in memory by :mod:`pixseek_data.shapes`, with many caption variants per
picture (full captions, colour-only and shape-only phrases, prompt templates).
Several pictures in a batch can match the same text ("red", "a circle"), so the
loss is a symmetric InfoNCE with soft multi-positive targets: every
(picture, text) pair whose labels agree counts as a positive.

Output (loadable with ``open_clip.create_model_and_transforms("local-dir:OUT")``
and ``open_clip.get_tokenizer("local-dir:OUT")``):

    OUT/open_clip_config.json       {"model_cfg": ..., "preprocess_cfg": ...}
    OUT/open_clip_model.safetensors fp16 weights (loaded into the fp32 model)

By default the run is a fixed number of steps (``--steps``, 500: about 80 s
on an idle 2-core CPU), so a run with the same seed repeats exactly. With
``--seconds N`` instead, the step count is fixed from the measured speed of the
first steps and printed, so that the run can be repeated with ``--steps``. At
the end the saved model is reloaded through open_clip and evaluated on a fresh
gallery; the figures are printed.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import random
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

from pixseek_data import DEMO_MODEL_DIR
from pixseek_data.shapes import COLOURS, SHAPES, caption, draw_shape, generate_gallery

MODEL_CFG: dict = {
    "embed_dim": 64,
    # A list of layers selects open_clip's ModifiedResNet image tower (as in RN50),
    # here at width 8: stem 4-4-8 channels, one bottleneck per stage (32-64-128-256
    # channels), attention pooling over the final 2x2 grid with 8 heads. A small
    # ViT (patch 8, width 96-128, 2-3 layers) learned shape far more slowly from
    # scratch on 2 CPU cores (about 70% supervised shape accuracy after 450 steps
    # versus 100% after 300 for this ResNet), so the demo model uses the ResNet.
    "vision_cfg": {
        "image_size": 64,
        "layers": [1, 1, 1, 1],
        "width": 8,
        "head_width": 32,
    },
    "text_cfg": {
        "context_length": 32,
        "vocab_size": 49408,  # open_clip's default SimpleTokenizer
        # The token table (49408 x width) dominates the file size: width 64 keeps
        # the fp16 checkpoint near 7 MB.
        "width": 64,
        "heads": 4,
        "layers": 2,
        "mlp_ratio": 4.0,
    },
}

PREPROCESS_CFG: dict = {
    "size": 64,
    "mode": "RGB",
    "mean": list(open_clip.OPENAI_DATASET_MEAN),
    "std": list(open_clip.OPENAI_DATASET_STD),
    "interpolation": "bicubic",
    "resize_mode": "shortest",
    "fill_color": 0,
}

# ---------------------------------------------------------------- captions

# Prompt templates; "{}" receives a noun phrase.
TEMPLATES = [
    "{}",
    "a {}",
    "the {}",
    "this {}",
    "a photo of a {}",
    "a photo of the {}",
    "a photo of {}",
    "a picture of a {}",
    "an image of a {}",
    "a rendering of a {}",
    "a drawing of a {}",
    "a close-up photo of a {}",
    "a bright photo of a {}",
    "a good photo of a {}",
    "a cropped photo of a {}",
    "a photo of a small {}",
    "a photo of a big {}",
    "a low resolution photo of a {}",
    "a blurry photo of a {}",
    "a jpeg photo of a {}",
    "a sketch of a {}",
    "a painting of a {}",
    "art of a {}",
    "a plain {}",
    "a simple {}",
    "there is a {}",
    "a photo showing a {}",
    "a clip art of a {}",
    "an illustration of a {}",
    "a graphic of a {}",
]
FULL_PHRASES = [
    "{c} {s}",
    "{c} {s}",
    "{c} {s}",
    "{s} that is {c}",
    "{c} coloured {s}",
    "{c} colored {s}",
    "{c} {s} shape",
    "{s} in {c}",
    "{c} {s}s",
    "{s} which is {c}",
]
COLOUR_PHRASES = [
    "{c}",
    "{c}",
    "{c} shape",
    "{c} thing",
    "{c} object",
    "{c} one",
    "{c} things",
    "{c} shapes",
    "{c} colour",
    "{c} color",
    "something {c}",
    "thing that is {c}",
    "shape that is {c}",
    "{c} figure",
]
SHAPE_PHRASES = [
    "{s}",
    "{s}",
    "{s}",
    "{s} shape",
    "{s}s",
    "shape of a {s}",
    "{s} figure",
    "{s} of any colour",
    "coloured {s}",
    "colored {s}",
]
WARMUP_STEPS = 40  # linear LR warm-up, then cosine decay to 0

# Probability of each caption kind: full (colour+shape), colour only, shape only.
KIND_PROBS = (0.45, 0.15, 0.4)


def _fix_articles(text: str) -> str:
    """'a orange' -> 'an orange' (both forms are trained)."""
    words = text.split(" ")
    for i in range(len(words) - 1):
        if words[i] == "a" and words[i + 1][:1] in "aeiou":
            words[i] = "an"
    return " ".join(words)


def _texts(phrases: list[str], **kw: str) -> list[str]:
    out: list[str] = []
    for p in phrases:
        phrase = p.format(**kw)
        for t in TEMPLATES:
            text = t.format(phrase)
            out.append(text)
            fixed = _fix_articles(text)
            if fixed != text:
                out.append(fixed)
    if "c" in kw and "s" in kw:
        out += [caption(kw["c"], kw["s"])] * 10  # the canonical caption, weighted up
    return out


def build_caption_bank(
    tokenizer, more_texts: Callable[[str | None, str | None], list[str]] | None = None
) -> tuple[list[tuple[str | None, str | None]], list[torch.Tensor]]:
    """Concepts (colour or None, shape or None) and, per concept, its tokenized texts.

    `more_texts(colour, shape)` adds captions in another language to each concept."""
    concepts: list[tuple[str | None, str | None]] = []
    texts: list[list[str]] = []
    for c in COLOURS:
        for s in SHAPES:
            concepts.append((c, s))
            texts.append(_texts(FULL_PHRASES, c=c, s=s))
    for c in COLOURS:
        concepts.append((c, None))
        texts.append(_texts(COLOUR_PHRASES, c=c))
    for s in SHAPES:
        concepts.append((None, s))
        texts.append(_texts(SHAPE_PHRASES, s=s))
    if more_texts is not None:
        texts = [t + more_texts(c, s) for t, (c, s) in zip(texts, concepts)]
    return concepts, [tokenizer(t) for t in texts]


# ---------------------------------------------------------------- images


def build_pool(per_class: int, seed: int, transform) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw ``per_class`` pictures per class, half of them through a JPEG round
    trip, preprocess them exactly as open_clip will at search time."""
    rng = random.Random(seed)
    images, colour_ids, shape_ids = [], [], []
    for ci, c in enumerate(COLOURS):
        for si, s in enumerate(SHAPES):
            for _ in range(per_class):
                img = draw_shape(c, s, rng, size=rng.choice((96, 128, 128, 128, 160)))
                if rng.random() < 0.5:
                    buf = io.BytesIO()
                    img.save(buf, format="JPEG", quality=rng.randint(75, 95))
                    buf.seek(0)
                    img = Image.open(buf).convert("RGB")
                images.append(transform(img).to(torch.float16))
                colour_ids.append(ci)
                shape_ids.append(si)
    return torch.stack(images), torch.tensor(colour_ids), torch.tensor(shape_ids)


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random flips and quarter turns per picture (labels are invariant to both)."""
    k = torch.randint(0, 8, (x.shape[0],), generator=gen).tolist()
    out = [torch.rot90(img.flip(-1) if ki >= 4 else img, ki % 4, dims=(-2, -1)) for img, ki in zip(x, k)]
    return torch.stack(out)


# ---------------------------------------------------------------- training


def multi_positive_loss(img: torch.Tensor, txt: torch.Tensor, match: torch.Tensor, scale: torch.Tensor):
    """Symmetric InfoNCE with soft targets spread over all matching pairs.

    img, txt: normalized [B, D]; match[i, j] = picture i fits text j.
    """
    logits = scale * img @ txt.t()
    m = match.float()
    loss_i2t = -(F.log_softmax(logits, dim=1) * (m / m.sum(1, keepdim=True))).sum(1).mean()
    has = m.sum(0) > 0  # texts with at least one matching picture in the batch
    m, logits = m[:, has], logits[:, has]
    loss_t2i = -(F.log_softmax(logits, dim=0) * (m / m.sum(0, keepdim=True))).sum(0).mean()
    return 0.5 * (loss_i2t + loss_t2i)


def seed_everything(args) -> None:
    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(args.threads)


def train(args, model: open_clip.CLIP, tokenizer, transform) -> tuple[open_clip.CLIP, set[int], dict]:
    """Train `model` in place on captions tokenised by `tokenizer` and pictures made ready by `transform`.

    Returns the model, the token ids that occur in the captions, and the run's figures.
    """
    concepts, bank = build_caption_bank(tokenizer)
    used_tokens = set(torch.cat(bank).unique().tolist())
    n_full = len(COLOURS) * len(SHAPES)
    colour_names, shape_names = list(COLOURS), list(SHAPES)
    concept_colour = torch.tensor([-1 if c is None else colour_names.index(c) for c, _ in concepts])
    concept_shape = torch.tensor([-1 if s is None else shape_names.index(s) for _, s in concepts])

    t0 = time.time()
    pool, pool_c, pool_s = build_pool(args.pool_per_class, args.seed, transform)
    gen_time = time.time() - t0
    print(f"generated {len(pool)} training pictures in {gen_time:.1f}s", flush=True)

    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: {n_params / 1e6:.2f}M parameters", flush=True)

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.ndim < 2 or "logit_scale" in name or "embedding" in name else decay).append(p)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )

    gen = torch.Generator().manual_seed(args.seed)
    B = args.batch_size

    def batch():
        idx = torch.randint(0, len(pool), (B,), generator=gen)
        ci, si = pool_c[idx], pool_s[idx]
        kind = torch.multinomial(torch.tensor(KIND_PROBS), B, replacement=True, generator=gen)
        concept = torch.where(
            kind == 0, ci * len(SHAPES) + si, torch.where(kind == 1, n_full + ci, n_full + len(COLOURS) + si)
        )
        if args.concept_texts:
            # One extra caption for every concept, so that each batch contrasts every
            # picture against all 34 concepts, not only against its neighbours' captions.
            concept = torch.cat([concept, torch.arange(len(concepts))])
        toks = []
        for k in concept.tolist():
            rows = bank[k]
            toks.append(rows[torch.randint(0, len(rows), (1,), generator=gen).item()])
        tc, ts = concept_colour[concept], concept_shape[concept]
        match = ((tc[None, :] == -1) | (tc[None, :] == ci[:, None])) & (
            (ts[None, :] == -1) | (ts[None, :] == si[:, None])
        )
        return augment(pool[idx], gen).float(), torch.stack(toks), match

    def step(i: int, total: int) -> float:
        warm = WARMUP_STEPS
        if i < warm:
            lr = args.lr * (i + 1) / warm
        else:
            lr = 0.5 * args.lr * (1 + math.cos(math.pi * (i - warm) / max(1, total - warm)))
        for g in opt.param_groups:
            g["lr"] = lr
        images, texts, match = batch()
        img = model.encode_image(images, normalize=True)
        txt = model.encode_text(texts, normalize=True)
        loss = multi_positive_loss(img, txt, match, model.logit_scale.exp())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        return loss.item()

    t0, c0 = time.time(), time.process_time()
    total = None if args.seconds else args.steps
    i = 0
    if total is None:
        # Fix the step count from the speed of the first steps (timed after 3 steps),
        # so that the LR schedule knows its length. The probe steps lie inside the
        # fixed LR warm-up, so a later run with --steps TOTAL repeats this one.
        probe = 15
        for i in range(probe):
            if i == 3:
                t_probe = time.time()
            step(i, WARMUP_STEPS + 1)
        per_step = (time.time() - t_probe) / (probe - 3)
        total = max(probe + 1, int(args.seconds / per_step))
        print(f"{per_step * 1000:.0f} ms/step -> {total} steps (repeat exactly with --steps {total})", flush=True)
        i = probe
    while i < total:
        loss = step(i, total)
        if i % 100 == 0 or i == total - 1:
            print(
                f"step {i:5d}/{total}  loss {loss:.3f}  scale {model.logit_scale.exp().item():.1f}  "
                f"{time.time() - t0:.0f}s",
                flush=True,
            )
        i += 1
    train_time, cpu_time = time.time() - t0, time.process_time() - c0
    print(
        f"trained {total} steps (batch {B}) in {train_time:.1f}s wall, {cpu_time:.1f}s CPU ({args.threads} threads)",
        flush=True,
    )
    model.eval()
    return (
        model,
        used_tokens,
        {
            "steps": total,
            "train_seconds": round(train_time, 1),
            "train_cpu_seconds": round(cpu_time, 1),
            "pool_seconds": round(gen_time, 1),
        },
    )


def save(model: open_clip.CLIP, used_tokens: set[int], out: Path) -> None:
    """Write open_clip_config.json and fp16 open_clip_model.safetensors into ``out``.

    Rows of the token table for tokens that never occur in a training caption
    carry no learned information; they are zeroed, so unknown words act as
    (nearly) neutral input instead of random noise.
    """
    out.mkdir(parents=True, exist_ok=True)
    # Weights in fp16; BatchNorm running statistics stay fp32 and the integer
    # batch counters keep their dtype (open_clip copies all into the fp32 model).
    sd = {
        k: v.detach().to(torch.float16 if v.is_floating_point() and "running_" not in k else v.dtype).contiguous()
        for k, v in model.state_dict().items()
    }
    emb = sd["token_embedding.weight"]
    keep = torch.zeros(emb.shape[0], dtype=torch.bool)
    keep[list(used_tokens)] = True
    emb[~keep] = 0
    save_file(sd, str(out / "open_clip_model.safetensors"))
    (out / "open_clip_model.safetensors").chmod(0o644)
    with open(out / "open_clip_config.json", "w", encoding="utf-8") as f:
        json.dump({"model_cfg": MODEL_CFG, "preprocess_cfg": PREPROCESS_CFG}, f, indent=2)
        f.write("\n")


# ---------------------------------------------------------------- evaluation


@torch.no_grad()
def evaluate(model_dir: Path, per_class: int = 10, seed: int = 777) -> dict:
    """Reload the saved model through open_clip and measure it on a fresh gallery."""
    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{model_dir.resolve()}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{model_dir.resolve()}")
    model.eval()
    with tempfile.TemporaryDirectory() as tmp:
        recs = generate_gallery(Path(tmp), per_class=per_class, seed=seed)
        imgs = torch.stack([preprocess(Image.open(r.path).convert("RGB")) for r in recs])
    feats = model.encode_image(imgs, normalize=True)
    colours = np.array([r.colour for r in recs])
    shapes = np.array([r.shape for r in recs])

    def etext(texts: list[str]) -> torch.Tensor:
        return model.encode_text(tokenizer(texts), normalize=True)

    # Text queries: precision@10 per colour x shape caption.
    classes = [(c, s) for c in COLOURS for s in SHAPES]
    q = etext([caption(c, s) for c, s in classes])
    top = (q @ feats.t()).topk(10, dim=1).indices.numpy()
    p10 = [float(np.mean((colours[t] == c) & (shapes[t] == s))) for (c, s), t in zip(classes, top)]

    # Prompt-ensembled queries, as the app builds them.
    ens_templates = ["a photo of a {}", "a picture of a {}", "a rendering of a {}", "an image of a {}"]
    qe = F.normalize(
        torch.stack([etext([t.format(f"{c} {s}") for t in ens_templates]).mean(0) for c, s in classes]), dim=-1
    )
    top = (qe @ feats.t()).topk(10, dim=1).indices.numpy()
    p10_ens = [float(np.mean((colours[t] == c) & (shapes[t] == s))) for (c, s), t in zip(classes, top)]

    # Single-word queries: "red" -> precision over its 40 pictures, "circle" -> over its 60.
    n_c, n_s = len(SHAPES) * per_class, len(COLOURS) * per_class
    qc = etext(list(COLOURS))
    top = (qc @ feats.t()).topk(n_c, dim=1).indices.numpy()
    p_colour = float(np.mean([np.mean(colours[t] == c) for c, t in zip(COLOURS, top)]))
    qs = etext(list(SHAPES))
    top = (qs @ feats.t()).topk(n_s, dim=1).indices.numpy()
    p_shape = float(np.mean([np.mean(shapes[t] == s) for s, t in zip(SHAPES, top)]))

    # Zero-shot shape tagging.
    labels = list(SHAPES)
    tag = (feats @ etext([f"a photo of a {lab}" for lab in labels]).t()).argmax(1).numpy()
    tag_acc = float(np.mean(np.array(labels)[tag] == shapes))
    # Zero-shot colour tagging (not required, reported for information).
    cl = list(COLOURS)
    ctag = (feats @ etext([f"a photo of a {c}" for c in cl]).t()).argmax(1).numpy()
    ctag_acc = float(np.mean(np.array(cl)[ctag] == colours))

    # Query arithmetic: "circle" - "red".
    e = etext(["circle", "red"])
    qa = F.normalize(e[0] - e[1], dim=-1)
    order = (feats @ qa).argsort(descending=True).numpy()
    rank = np.empty(len(order), dtype=int)
    rank[order] = np.arange(len(order))
    red_c = (shapes == "circle") & (colours == "red")
    other_c = (shapes == "circle") & (colours != "red")
    arith = {
        "mean_rank_nonred_circles": float(rank[other_c].mean()),
        "mean_rank_red_circles": float(rank[red_c].mean()),
        "red_circles_in_top10": int(red_c[order[:10]].sum()),
        "nonred_circles_in_top10": int(other_c[order[:10]].sum()),
    }

    # Image query: a new red circle.
    qimg = preprocess(draw_shape("red", "circle", random.Random(seed + 1))).unsqueeze(0)
    qf = model.encode_image(qimg, normalize=True)
    top5 = (qf @ feats.t()).topk(5).indices[0].numpy()
    img_red_circles_top5 = int(((colours[top5] == "red") & (shapes[top5] == "circle")).sum())

    # Image-to-image: precision@5 over every gallery picture as the query (leave-one-out).
    sim = feats @ feats.t()
    sim.fill_diagonal_(-2)
    nn = sim.topk(5, dim=1).indices.numpy()
    same = (colours[nn] == colours[:, None]) & (shapes[nn] == shapes[:, None])
    return {
        "gallery": len(recs),
        "p10_min": min(p10),
        "p10_mean": float(np.mean(p10)),
        "p10_worst": sorted(zip(p10, [caption(c, s) for c, s in classes]))[:3],
        "p10_prompt_ensemble_mean": float(np.mean(p10_ens)),
        "colour_word_precision": p_colour,
        "shape_word_precision": p_shape,
        "shape_tag_acc": tag_acc,
        "colour_tag_acc": ctag_acc,
        "arithmetic_circle_minus_red": arith,
        "image_query_red_circle_top5": f"{img_red_circles_top5}/5 red circles",
        "image_to_image_p5_mean": float(same.mean()),
    }


def training_arguments(description: str, out: Path) -> argparse.ArgumentParser:
    """The options every demo model's training takes (this script's and data/train_zh_model.py's)."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("--out", type=Path, default=out)
    ap.add_argument("--steps", type=int, default=500, help="number of training steps")
    ap.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="train for about this long instead (the step count is derived from the speed)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--pool-per-class", type=int, default=250, help="training pictures per colour x shape")
    ap.add_argument("--concept-texts", type=int, default=1, help="add one caption per concept to every batch")
    ap.add_argument("--threads", type=int, default=2)
    return ap


def main(argv: list[str] | None = None) -> None:
    ap = training_arguments(__doc__.split("\n\n")[0], DEMO_MODEL_DIR)
    ap.add_argument("--vision-width", type=int, default=MODEL_CFG["vision_cfg"]["width"])
    ap.add_argument("--text-width", type=int, default=MODEL_CFG["text_cfg"]["width"])
    args = ap.parse_args(argv)
    MODEL_CFG["vision_cfg"].update(width=args.vision_width)
    MODEL_CFG["text_cfg"].update(width=args.text_width)

    seed_everything(args)
    tokenizer = open_clip.SimpleTokenizer(context_length=MODEL_CFG["text_cfg"]["context_length"])
    transform = open_clip.image_transform(
        PREPROCESS_CFG["size"],
        is_train=False,
        mean=PREPROCESS_CFG["mean"],
        std=PREPROCESS_CFG["std"],
        resize_mode=PREPROCESS_CFG["resize_mode"],
        interpolation=PREPROCESS_CFG["interpolation"],
    )
    model, used_tokens, info = train(args, open_clip.CLIP(**MODEL_CFG), tokenizer, transform)
    save(model, used_tokens, args.out)
    report(args.out, info, evaluate)


def report(out: Path, info: dict, evaluate: Callable[[Path], dict]) -> None:
    """Print the saved model's size, then its run's figures and `evaluate`'s on a fresh gallery."""
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"wrote {out} ({size / 1e6:.2f} MB)")
    start = time.time()
    figures = evaluate(out)
    print(f"evaluated in {time.time() - start:.1f}s")
    print(json.dumps({**info, **figures}, indent=2))


if __name__ == "__main__":
    main()
