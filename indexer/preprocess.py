"""A model's image preprocessing, as plain data the decode workers can carry out.

open_clip describes how a model wants its pixels in a `PreprocessCfg` (size, resize mode,
interpolation, mean/std, fill colour) and builds torchvision transforms from it
(open_clip/transform.py, `image_transform`). pixseek keeps the geometry of those transforms
but runs it in the decode workers on Pillow images that JPEG draft decoding has already
reduced, and hands uint8 pixels to the model, which normalises them with `mean`/`std`.
Every size and offset below follows open_clip 3.3's eval transforms, so the pixels match its
`preprocess` up to interpolation rounding. transformers' image processors map onto the same
fields (indexer/hf_model.py), SigLIP2 NaFlex's variable-resolution patches included (`patches`).

Light on purpose (Pillow and numpy only): this module is imported by decode workers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

# open_clip.constants.OPENAI_DATASET_MEAN / _STD, the defaults of its PreprocessCfg.
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
RESIZE_MODES = ("shortest", "longest", "squash", "patches")
_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}
# How a centre crop places its window: torchvision's CenterCrop rounds half the excess
# (open_clip), transformers' image processors floor it.
CROP_OFFSETS = ("round", "floor")


@dataclass(frozen=True)
class Preprocess:
    """What one model's image transform does; picklable, so it travels to decode workers."""

    size: tuple[int, int] = (224, 224)  # (height, width), open_clip's order
    resize_mode: str = "shortest"
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD
    fill_color: int = 0
    # `squash` to this (height, width) first, then centre-crop to `size` (transformers' processors
    # with both a resize and a crop size, such as ALIGN's); None: squash straight to `size`.
    squash_to: tuple[int, int] | None = None
    crop_offset: str = "round"
    # `patches` (SigLIP2 NaFlex): the photo keeps its aspect ratio, resized so both sides are
    # multiples of `patch_size` with at most `max_patches` patches; see `patch_rows`.
    patch_size: int = 0
    max_patches: int = 0

    def __post_init__(self) -> None:
        if min(self.size) < 1 or (self.squash_to is not None and min(self.squash_to) < 1):
            raise ValueError("the model input size must be positive")
        if self.resize_mode not in RESIZE_MODES:
            raise ValueError(f"unknown resize mode {self.resize_mode!r}")
        if self.squash_to is not None and self.resize_mode != "squash":
            raise ValueError("squash_to needs resize_mode 'squash'")
        if self.interpolation not in _RESAMPLE:
            raise ValueError(f"unknown interpolation {self.interpolation!r}")
        if self.crop_offset not in CROP_OFFSETS:
            raise ValueError(f"unknown crop offset {self.crop_offset!r}")
        if (self.resize_mode == "patches") != (self.patch_size > 0 and self.max_patches > 0):
            raise ValueError("resize mode 'patches' needs a patch size and a patch count, and only it does")
        if self.resize_mode == "patches" and self.size != (self.patch_size + 1, self.patch_size * self.max_patches):
            raise ValueError("a patches input is one row of max_patches patches plus a header row")

    @classmethod
    def square(cls, size: int) -> Preprocess:
        """CLIP's classic input: shortest side to `size`, bicubic, centre crop."""
        return cls(size=(int(size), int(size)))

    @classmethod
    def patches(cls, patch_size: int, max_patches: int, **fields: Any) -> Preprocess:
        """SigLIP2 NaFlex's input: up to `max_patches` patches of `patch_size`, laid out as `patch_rows` says."""
        size = (patch_size + 1, patch_size * max_patches)
        return cls(size=size, resize_mode="patches", patch_size=patch_size, max_patches=max_patches, **fields)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocess:
        """Back from `dataclasses.asdict` after a JSON round trip (an ONNX export's meta.json)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    @classmethod
    def from_cfg(cls, cfg: Mapping[str, Any]) -> Preprocess:
        """From open_clip's preprocess dict (`model.visual.preprocess_cfg`, or a config file's)."""
        size = cfg.get("size", 224)
        height, width = (size, size) if isinstance(size, (int, float)) else tuple(size)[-2:]
        mean = cfg.get("mean") or OPENAI_MEAN
        std = cfg.get("std") or OPENAI_STD
        return cls(
            size=(int(height), int(width)),
            resize_mode=cfg.get("resize_mode") or "shortest",
            # open_clip's "random" is a training option; at inference it falls back to bicubic.
            interpolation="bilinear" if cfg.get("interpolation") == "bilinear" else "bicubic",
            mean=per_channel(mean),
            std=per_channel(std),
            fill_color=int(cfg.get("fill_color") or 0),
        )

    def resized_size(self, width: int, height: int) -> tuple[int, int]:
        """(width, height) the transform resizes a `width` x `height` image to, before crop or pad."""
        if self.resize_mode == "patches":
            target_h, target_w = _patch_grid_size(height, width, self.patch_size, self.max_patches)
            return target_w, target_h
        target_h, target_w = self.squash_to or self.size
        if self.resize_mode == "squash":
            return target_w, target_h
        if self.resize_mode == "shortest" and target_h == target_w:
            # torchvision's Resize(int): the short side becomes the size, the long one is truncated.
            short, long = sorted((width, height))
            scaled = int(target_w * long / short)
            return (target_w, scaled) if width <= height else (scaled, target_h)
        # ResizeKeepRatio: one ratio for both sides, the smaller (shortest) or larger (longest) one.
        ratios = (height / target_h, width / target_w)
        ratio = max(ratios) if self.resize_mode == "longest" else min(ratios)
        return max(1, round(width / ratio)), max(1, round(height / ratio))

    @property
    def resample(self) -> Image.Resampling:
        if self.resize_mode == "shortest" and self.size[0] != self.size[1]:
            # open_clip builds this case's ResizeKeepRatio without passing the interpolation,
            # so it is bicubic whatever the config says.
            return Image.Resampling.BICUBIC
        return _RESAMPLE[self.interpolation]

    def apply(self, image: Image.Image, full_size: tuple[int, int] | None = None) -> np.ndarray:
        """The model input, uint8 (height, width, 3), from an RGB image of any size.

        `full_size` is the (width, height) of the photo before decoding reduced it (JPEG drafts):
        the geometry is the reference transform's on the full photo, whatever size came out of
        the decoder.
        """
        new_size = self.resized_size(*(full_size or image.size))
        if new_size != image.size:
            image = image.resize(new_size, self.resample)
        if self.resize_mode == "patches":
            return self._patch_rows(np.asarray(image, dtype=np.uint8))
        target_h, target_w = self.size
        if image.size == (target_w, target_h):
            return np.asarray(image, dtype=np.uint8)
        # CenterCrop, and for `longest` center_crop_or_pad: a side longer than the target is
        # cropped at round(excess / 2), a shorter one padded with (missing // 2) before it.
        canvas = Image.new("RGB", (target_w, target_h), (self.fill_color,) * 3)
        offset = _floor_offset if self.crop_offset == "floor" else _offset
        canvas.paste(image, (offset(image.width, target_w), offset(image.height, target_h)))
        return np.asarray(canvas, dtype=np.uint8)

    def _patch_rows(self, pixels: np.ndarray) -> np.ndarray:
        """A resized (h, w, 3) photo as its patches side by side, zero-padded to `max_patches`.

        Patch i (row-major over the photo's patch grid) fills columns i*p to (i+1)*p of the first p
        rows; the last row's first four bytes hold the grid's rows and columns (16 bits each), which
        the model needs and the padding cannot show. One fixed shape, so the batches stay uint8
        arrays like every other model's; indexer/hf_model.py turns them into the processor's
        pixel_values, pixel_attention_mask and spatial_shapes.
        """
        p = self.patch_size
        rows, cols = pixels.shape[0] // p, pixels.shape[1] // p
        out = np.zeros(self.size + (3,), dtype=np.uint8)
        patches = pixels.reshape(rows, p, cols, p, 3).transpose(1, 0, 2, 3, 4).reshape(p, rows * cols * p, 3)
        out[:p, : rows * cols * p] = patches
        out[p, :4, 0] = (rows >> 8, rows & 255, cols >> 8, cols & 255)
        return out


def patch_grids(pixels: np.ndarray, patch_size: int) -> np.ndarray:
    """(N, 2) patch-grid rows and columns from a batch of `patches` inputs' header rows."""
    header = pixels[:, patch_size, :4, 0].astype(np.int64)
    return np.stack([header[:, 0] * 256 + header[:, 1], header[:, 2] * 256 + header[:, 3]], axis=1)


def _patch_grid_size(height: int, width: int, patch_size: int, max_patches: int, eps: float = 1e-5) -> tuple[int, int]:
    """(height, width), multiples of the patch size, of the largest scaling that fits max_patches.

    transformers' get_image_size_for_max_num_patches (SigLIP2's image processor), step for step:
    the same bisection over the scale, so the same grid for every photo.
    """

    def scaled(scale: float, size: int) -> int:
        return int(max(patch_size, math.ceil(size * scale / patch_size) * patch_size))

    low, high = eps / 10, 100.0
    while (high - low) >= eps:
        scale = (low + high) / 2
        if (scaled(scale, height) / patch_size) * (scaled(scale, width) / patch_size) <= max_patches:
            low = scale
        else:
            high = scale
    return scaled(low, height), scaled(low, width)


def _offset(have: int, want: int) -> int:
    return (want - have) // 2 if want > have else -int(round((have - want) / 2.0))


def _floor_offset(have: int, want: int) -> int:
    return (want - have) // 2 if want > have else -((have - want) // 2)


def per_channel(value: Any) -> tuple[float, float, float]:
    """A mean or std as one value per RGB channel (a single number stands for all three)."""
    values = tuple(float(v) for v in value) if isinstance(value, (list, tuple)) else (float(value),) * 3
    if len(values) != 3:
        raise ValueError("mean and std need one value per RGB channel")
    return values  # type: ignore[return-value]
