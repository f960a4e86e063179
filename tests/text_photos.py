"""Real photos with words rendered on them, for OCR tests and benchmarks/ocr_cost.py.

Each photo gets one English and one Chinese word, each in its own font, size, colour and angle,
so every word's ground truth is known. The Chinese words need a CJK font (Debian's
fonts-wqy-microhei or fonts-noto-cjk); without one, photos carry English words only.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

ENGLISH = (
    "harbour",
    "coffee",
    "station",
    "market",
    "ticket",
    "garden",
    "museum",
    "bakery",
    "library",
    "pharmacy",
    "parking",
    "theatre",
    "bicycle",
    "lantern",
    "orchard",
    "window",
    "sunset",
    "quartz",
    "meadow",
    "festival",
)
CHINESE = (
    "北京",
    "欢迎光临",
    "出口",
    "咖啡",
    "火车站",
    "图书馆",
    "停车场",
    "超市",
    "医院",
    "银行",
    "博物馆",
    "面包",
    "花园",
    "电影院",
    "邮局",
    "市场",
    "学校",
    "公园",
    "药店",
    "书店",
)
LATIN_FONTS = (
    "DejaVuSans-Bold.ttf",
    "DejaVuSerif.ttf",
    "LiberationMono-Bold.ttf",
    "LiberationSans-Italic.ttf",
    "DejaVuSansCondensed.ttf",
)
# (fill, outline): light on dark outline, dark on light outline, saturated colours.
COLOURS = (
    ((255, 255, 255), (0, 0, 0)),
    ((20, 20, 20), (255, 255, 255)),
    ((255, 220, 0), (40, 40, 40)),
    ((220, 30, 30), (255, 255, 255)),
    ((40, 90, 230), (255, 255, 255)),
)
ANGLES = (0, 8, -12, 0, 18, -5)
SIZES = (0.09, 0.12, 0.15, 0.07)  # text height as a fraction of the photo's width
WIDTH = 640  # Caltech photos are about 300 px wide; a phone photo shown at this size
FONT_DIRS = (Path("/usr/share/fonts"), Path("/usr/local/share/fonts"))


@dataclass(frozen=True)
class TextPhoto:
    path: Path
    source: Path
    words: tuple[str, ...]


def find_font(name: str) -> Path | None:
    for base in FONT_DIRS:
        hits = sorted(base.rglob(name)) if base.is_dir() else []
        if hits:
            return hits[0]
    return None


def cjk_font() -> Path | None:
    """A font with Chinese glyphs, as fontconfig knows it, or None."""
    try:
        out = subprocess.run(["fc-list", ":lang=zh", "file"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    files = sorted(line.split(":")[0].strip() for line in out.splitlines() if line.strip())
    return Path(files[0]) if files else None


def source_photos(caltech: Path, n: int, offset: int = 0) -> list[Path]:
    """`n` photos spread over the classes: photo `offset + i // classes` of class i % classes."""
    classes = sorted(p for p in caltech.iterdir() if p.is_dir())
    return [sorted(classes[i % len(classes)].glob("*.jpg"))[offset + i // len(classes)] for i in range(n)]


def plain_photo(source: Path, out: Path) -> Path:
    """The photo at the same size as the text photos, without text (what a photo without text costs)."""
    _resized(source).save(out, quality=92)
    return out


def render(sources: list[Path], out_dir: Path, chinese: bool = True) -> list[TextPhoto]:
    """One English word (and one Chinese word when `chinese` and a CJK font exists) per photo."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fonts = [p for p in (find_font(n) for n in LATIN_FONTS) if p is not None]
    zh_font = cjk_font() if chinese else None
    photos = []
    for i, source in enumerate(sources):
        img = _resized(source)
        words = [ENGLISH[i % len(ENGLISH)]]
        _draw(img, words[0], fonts[i % len(fonts)], i, top=True)
        if zh_font is not None:
            words.append(CHINESE[i % len(CHINESE)])
            _draw(img, words[1], zh_font, i + 2, top=False)
        path = out_dir / f"text-{i:02d}.jpg"
        img.save(path, quality=92)
        photos.append(TextPhoto(path, source, tuple(words)))
    return photos


def _resized(source: Path) -> Image.Image:
    with Image.open(source) as img:
        img = img.convert("RGB")
        return img.resize((WIDTH, round(img.height * WIDTH / img.width)), Image.Resampling.BICUBIC)


def _draw(img: Image.Image, word: str, font_path: Path, variant: int, top: bool) -> None:
    size = max(12, round(SIZES[variant % len(SIZES)] * img.width))
    font = ImageFont.truetype(str(font_path), size)
    fill, outline = COLOURS[variant % len(COLOURS)]
    left, upper, right, lower = font.getbbox(word, stroke_width=2)
    layer = Image.new("RGBA", (right - left + 8, lower - upper + 8), (0, 0, 0, 0))
    ImageDraw.Draw(layer).text(
        (4 - left, 4 - upper), word, font=font, fill=fill + (255,), stroke_width=2, stroke_fill=outline + (255,)
    )
    layer = layer.rotate(ANGLES[variant % len(ANGLES)], expand=True, resample=Image.Resampling.BICUBIC)
    # Top or bottom half, so the two words of a photo never overlap.
    x = max(0, (img.width - layer.width) // 2 + (variant % 3 - 1) * img.width // 8)
    half = img.height // 2
    y = max(0, (half - layer.height) // 2) + (0 if top else half)
    img.paste(layer, (x, y), layer)
