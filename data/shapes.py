"""The shapes world: small generated pictures of coloured shapes.

Each picture shows one shape (circle, square, triangle or star) in one of six
clearly distinct colours, on a light, randomly tinted background with faint
noise, at a random position, scale and rotation. The project's own demo CLIP
model (``data/demo-model`` (``pixseek_data.DEMO_MODEL_DIR``)) is trained on these pictures, ``pixseek demo``
builds its offline gallery from them, and the semantic tests use them as a
world whose ground truth is known from the generator's labels.

Only PIL and numpy are used here (no torch), so that the demo and the tests
can import this module cheaply.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "COLOURS",
    "SHAPES",
    "UNNAMED_COLOURS",
    "ShapeImage",
    "caption",
    "caption_zh",
    "COLOURS_ZH",
    "SHAPES_ZH",
    "draw_shape",
    "generate_gallery",
    "plain_queries",
]

#: Colour name -> RGB. Saturated, far apart in hue, all clearly darker or more
#: saturated than the pale backgrounds they are drawn on.
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (215, 25, 30),
    "green": (25, 150, 45),
    "blue": (30, 70, 215),
    "yellow": (240, 200, 0),
    "purple": (130, 40, 170),
    "orange": (250, 125, 10),
}

#: Colours the demo model never saw named (data/train_demo_model.py trains on COLOURS only): what
#: a person can still teach it as a concept from examples, as "my dog Rex" to a real model.
UNNAMED_COLOURS: dict[str, tuple[int, int, int]] = {"pink": (245, 120, 175)}

#: The shapes of the world, in a fixed order.
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star")

#: Chinese names of the colours and shapes, for the bilingual demo model (data/train_zh_model.py).
COLOURS_ZH: dict[str, str] = {
    "red": "红色",
    "green": "绿色",
    "blue": "蓝色",
    "yellow": "黄色",
    "purple": "紫色",
    "orange": "橙色",
}
SHAPES_ZH: dict[str, str] = {"circle": "圆形", "square": "正方形", "triangle": "三角形", "star": "星形"}

# Drawing is done at this multiple of the output size, then downsampled with a
# good filter, which gives smooth (anti-aliased) edges.
_SUPERSAMPLE = 4
# Per-channel jitter of the shape colour (keeps every colour unambiguous).
_COLOUR_JITTER = 12
# Shape circumradius as a fraction of the image size.
_MIN_RADIUS, _MAX_RADIUS = 0.17, 0.36
# Star inner/outer radius ratio: low enough that the points are obvious.
_STAR_INNER = 0.45


@dataclass(frozen=True)
class ShapeImage:
    """One generated gallery file and its ground-truth labels."""

    path: Path
    colour: str
    shape: str


def caption(colour: str, shape: str) -> str:
    """Return the plain caption of a class, e.g. ``"a red circle"``
    (``"an orange star"`` for colours starting with a vowel)."""
    _check(colour, shape)
    article = "an" if colour[0] in "aeiou" else "a"
    return f"{article} {colour} {shape}"


def caption_zh(colour: str, shape: str) -> str:
    """The Chinese caption of a class, e.g. ``"红色的圆形"`` (a red circle)."""
    _check(colour, shape)
    return f"{COLOURS_ZH[colour]}的{SHAPES_ZH[shape]}"


def plain_queries(colours: Sequence[str] = tuple(COLOURS)) -> list[str]:
    """The plain single text queries of the shapes world for these colours: each colour ("a red
    shape"), each shape ("a circle") and each class's caption ("a red circle")."""
    by_colour = [f"{'an' if c[0] in 'aeiou' else 'a'} {c} shape" for c in colours]
    return by_colour + [f"a {s}" for s in SHAPES] + [caption(c, s) for c in colours for s in SHAPES]


def _check(colour: str, shape: str) -> None:
    if colour not in COLOURS and colour not in UNNAMED_COLOURS:
        raise ValueError(f"unknown colour {colour!r}; expected one of {sorted(COLOURS | UNNAMED_COLOURS)}")
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; expected one of {list(SHAPES)}")


def _vertices(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Polygon vertices of a shape with circumradius ``r`` centred on (cx, cy)."""
    if shape == "square":
        n, radii = 4, [r]
    elif shape == "triangle":
        n, radii = 3, [r]
    elif shape == "star":
        n, radii = 5, [r, r * _STAR_INNER]
    else:  # pragma: no cover - circles are drawn as ellipses
        raise ValueError(shape)
    points = []
    steps = n * len(radii)
    for k in range(steps):
        a = angle + 2 * math.pi * k / steps
        rad = radii[k % len(radii)]
        points.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    return points


def draw_shape(colour: str, shape: str, rng: random.Random, size: int = 128) -> Image.Image:
    """Draw one RGB picture of a ``colour`` ``shape``, ``size`` x ``size`` pixels.

    The background is a light colour with a random tint, a gentle gradient and
    faint noise; the shape (with a slightly jittered fill colour) sits fully
    inside the frame at a random position, scale and rotation. All randomness
    comes from ``rng``, so the same rng state gives the same picture.
    """
    _check(colour, shape)
    big = size * _SUPERSAMPLE

    # Light, randomly tinted background.
    base = [rng.randint(218, 250) for _ in range(3)]
    canvas = Image.new("RGB", (big, big), tuple(base))
    draw = ImageDraw.Draw(canvas)

    # Shape: random scale, position (fully inside the frame) and rotation.
    r = rng.uniform(_MIN_RADIUS, _MAX_RADIUS) * big
    margin = 0.04 * big
    cx = rng.uniform(r + margin, big - r - margin)
    cy = rng.uniform(r + margin, big - r - margin)
    angle = rng.uniform(0.0, 2 * math.pi)
    rgb = COLOURS.get(colour) or UNNAMED_COLOURS[colour]
    fill = tuple(max(0, min(255, c + rng.randint(-_COLOUR_JITTER, _COLOUR_JITTER))) for c in rgb)
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    else:
        if shape == "square":
            r *= 0.92  # a square's circumradius overstates its size a little
        draw.polygon(_vertices(shape, cx, cy, r, angle), fill=fill)

    img = canvas.reduce(_SUPERSAMPLE)  # box-filter downsample: anti-aliased edges

    # Gentle lighting gradient plus faint noise (numpy rng seeded from rng).
    nrng = np.random.default_rng(rng.getrandbits(32))
    arr = np.asarray(img, dtype=np.float32)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / max(size - 1, 1)
    gx, gy = rng.uniform(-10, 10), rng.uniform(-10, 10)
    arr += (gx * (xs - 0.5) + gy * (ys - 0.5))[..., None]
    arr += nrng.normal(0.0, rng.uniform(1.0, 5.0), size=arr.shape).astype(np.float32)
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "RGB")


def generate_gallery(
    out_dir: Path,
    per_class: int,
    seed: int,
    size: int = 128,
    fmt: str = "jpg",
    colours: Sequence[str] = tuple(COLOURS),
) -> list[ShapeImage]:
    """Write ``per_class`` pictures of every colour (of ``colours``) x shape class into ``out_dir``.

    Files are named ``{colour}-{shape}-{index:03d}.{fmt}`` (e.g.
    ``red-circle-003.jpg``). The output is fully determined by ``seed``.
    Returns one :class:`ShapeImage` record per file, in a fixed order.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    fmt = fmt.lower().lstrip(".")
    save_kwargs = {"quality": 92} if fmt in ("jpg", "jpeg") else {}
    rng = random.Random(seed)
    records: list[ShapeImage] = []
    for colour in colours:
        for shape in SHAPES:
            for i in range(per_class):
                img = draw_shape(colour, shape, rng, size=size)
                path = out_dir / f"{colour}-{shape}-{i:03d}.{fmt}"
                img.save(path, **save_kwargs)
                records.append(ShapeImage(path=path, colour=colour, shape=shape))
    return records
