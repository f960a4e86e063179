"""Batched JPEG decoding on the GPU (nvJPEG through torchvision.io.decode_jpeg), resized there.

On a GPU that embeds thousands of photos a second, decoding on the CPU (indexer/decode.py) is
the bottleneck. Here the CPU only reads the file and parses its header (size, EXIF orientation
and metadata, with Pillow, no pixels decoded); nvJPEG decodes a whole batch at once and the
orientation, resize and centre crop run on the GPU, so the model's input never leaves the device.
Files the GPU path does not take (other formats, CMYK JPEGs, files nvJPEG rejects) go through
the CPU decoder with its guards and one-line reasons, and join the same batch.

The same code runs with device="cpu" (torchvision's libjpeg-turbo decoder), which is how the
tests check it against the CPU path without a GPU.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from indexer.decode import (
    DEFAULT_MAX_PIXELS,
    REASON_PERMISSION,
    REASON_VANISHED,
    DecodeError,
    _orientation,
    decode_image,
    to_model_input,
)
from indexer.metadata import ImageMeta, read_metadata, warnings_ignored
from indexer.walk import content_hash

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# imagehash.phash(hash_size=16) looks at a 64x64 greyscale image: made on the device, so only
# 4 KiB per photo comes back for the hash.
PHASH_SIZE = 16
PHASH_INPUT = PHASH_SIZE * 4
# What nvJPEG decodes: 8-bit baseline/progressive YCbCr or greyscale (Pillow's modes for them).
GPU_MODES = frozenset({"RGB", "L"})
# Pillow's RGB -> L weights (ITU-R 601-2), so the hash sees the grey CPU photos give it.
_GREY = (0.299, 0.587, 0.114)
_REDUCING_GAP = 3.0  # indexer/decode.py's


@dataclass
class FileResult:
    """One input file: its row in the batch's pixels and its catalog fields, or why it failed."""

    path: str
    row: int | None = None
    fields: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None
    on_gpu: bool = False


@dataclass
class DecodedBatch:
    pixels: torch.Tensor  # uint8 (rows, S, S, 3) on the device, ready for submit_pixels
    files: list[FileResult]  # one per input path, in order


@dataclass
class _Header:
    data: bytes
    orientation: int
    width: int  # as stored, before orientation
    height: int
    meta: ImageMeta


class GpuJpegDecoder:
    def __init__(self, image_size: int, device: str = "cuda", max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        self.image_size = image_size
        self.device = device
        self.max_pixels = max_pixels

    def decode(self, paths: list[str]) -> DecodedBatch:
        import torch

        files = [FileResult(str(p)) for p in paths]
        headers = {i: h for i, p in enumerate(paths) if (h := self._header(str(p))) is not None}
        images = self._decode_jpegs(headers)
        rows: list[torch.Tensor] = []
        for i, result in enumerate(files):
            try:
                digest = content_hash(result.path)
                if i in images:
                    pixels, grey, width, height, meta = self._finish_gpu(images[i], headers[i])
                    result.on_gpu = True
                else:
                    pixels, grey, width, height, meta = self._decode_cpu(result.path)
            except DecodeError as exc:
                result.reason = exc.reason
                continue
            except FileNotFoundError:
                result.reason = REASON_VANISHED
                continue
            except PermissionError:
                result.reason = REASON_PERMISSION
                continue
            except OSError as exc:
                result.reason = f"cannot read the file ({exc.strerror or exc})"
                continue
            result.row = len(rows)
            rows.append(pixels)
            result.fields = {
                "hash": digest,
                "width": width,
                "height": height,
                "taken_at": meta.taken_at,
                "camera_make": meta.camera_make,
                "camera_model": meta.camera_model,
                "lat": meta.lat,
                "lon": meta.lon,
                "phash": _phash(grey),
            }
        size = self.image_size
        batch = torch.stack(rows) if rows else torch.empty((0, size, size, 3), dtype=torch.uint8, device=self.device)
        return DecodedBatch(batch, files)

    def _header(self, path: str) -> _Header | None:
        """The file's bytes and header facts when the GPU path takes it; None sends it to the CPU path."""
        try:
            with open(path, "rb") as fh:
                data = fh.read()
            with warnings_ignored():
                img = Image.open(io.BytesIO(data), formats=("JPEG",))
                width, height = img.size
                if img.mode not in GPU_MODES or width * height > self.max_pixels or width < 1 or height < 1:
                    return None
                return _Header(data, _orientation(img), width, height, read_metadata(img))
        except Exception:  # any doubt about the file: the CPU path has the guards and the reasons
            return None

    def _decode_jpegs(self, headers: dict[int, _Header]) -> dict[int, torch.Tensor]:
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg

        if not headers:
            return {}
        order = list(headers)
        data = [torch.frombuffer(bytearray(headers[i].data), dtype=torch.uint8) for i in order]
        try:
            return dict(zip(order, decode_jpeg(data, mode=ImageReadMode.RGB, device=self.device)))
        except RuntimeError:
            # One bad file fails the whole batched call: decode one by one, the rejects go to the CPU.
            decoded = {}
            for i, encoded in zip(order, data):
                try:
                    decoded[i] = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=self.device)
                except RuntimeError:
                    log.debug("the GPU decoder rejected %s; decoding on the CPU", i)
            return decoded

    def _finish_gpu(self, image: torch.Tensor, header: _Header) -> tuple[torch.Tensor, np.ndarray, int, int, ImageMeta]:
        upright = orient(image, header.orientation)
        height, width = upright.shape[-2:]
        pixels = model_input(upright, self.image_size)
        return pixels, phash_input(upright), int(width), int(height), header.meta

    def _decode_cpu(self, path: str) -> tuple[torch.Tensor, np.ndarray, int, int, ImageMeta]:
        import torch

        decoded = decode_image(path, target_size=self.image_size, max_pixels=self.max_pixels)
        pixels = torch.from_numpy(to_model_input(decoded.image, self.image_size)).to(self.device)
        grey = decoded.image.convert("L").resize((PHASH_INPUT, PHASH_INPUT), Image.Resampling.LANCZOS)
        return pixels, np.asarray(grey), decoded.width, decoded.height, decoded.meta


def orient(image: torch.Tensor, orientation: int) -> torch.Tensor:
    """(3, H, W) as stored -> upright: EXIF orientations 2-8, as indexer/decode.py's transposes."""
    if orientation == 2:  # FLIP_LEFT_RIGHT
        return image.flip(-1)
    if orientation == 3:  # ROTATE_180
        return image.flip(-1, -2)
    if orientation == 4:  # FLIP_TOP_BOTTOM
        return image.flip(-2)
    if orientation == 5:  # TRANSPOSE
        return image.transpose(-1, -2)
    if orientation == 6:  # ROTATE_270 (counter-clockwise), a quarter turn clockwise
        return image.rot90(-1, (-2, -1))
    if orientation == 7:  # TRANSVERSE
        return image.transpose(-1, -2).flip(-1, -2)
    if orientation == 8:  # ROTATE_90
        return image.rot90(1, (-2, -1))
    return image


def model_input(image: torch.Tensor, image_size: int) -> torch.Tensor:
    """(3, H, W) uint8 -> (S, S, 3) uint8: indexer/decode.py to_model_input's resize and centre crop."""
    return centre_crop(shortest_side(image, image_size), image_size)


def shortest_side(image: torch.Tensor, image_size: int) -> torch.Tensor:
    """(3, H, W) uint8 with the shortest side resized to S (bicubic, antialiased), to_model_input's sizes."""
    height, width = image.shape[-2:]
    if width <= height:
        new_w, new_h = image_size, int(image_size * height / width)
    else:
        new_w, new_h = int(image_size * width / height), image_size
    if (new_w, new_h) == (width, height):
        return image
    return _resize(image, new_h, new_w)


def _resize(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    import torch

    x = image[None].float()
    # As Pillow's reducing_gap does on the CPU path: an integer box reduction first (partial
    # boxes at the edges averaged over what they hold), then bicubic on the rest.
    factor = int(min(image.shape[-1] / width, image.shape[-2] / height) / _REDUCING_GAP)
    if factor >= 2:
        x = torch.nn.functional.avg_pool2d(x, factor, ceil_mode=True, count_include_pad=False)
    x = torch.nn.functional.interpolate(x, size=(height, width), mode="bicubic", antialias=True, align_corners=False)
    return x[0].round_().clamp_(0, 255).to(torch.uint8)


def centre_crop(image: torch.Tensor, image_size: int) -> torch.Tensor:
    height, width = image.shape[-2:]
    left = int(round((width - image_size) / 2.0))
    top = int(round((height - image_size) / 2.0))
    return image[:, top : top + image_size, left : left + image_size].permute(1, 2, 0).contiguous()


def phash_input(image: torch.Tensor) -> np.ndarray:
    """(3, H, W) uint8 -> the 64x64 greyscale uint8 imagehash.phash makes of a photo."""
    import torch

    small = _resize(image, PHASH_INPUT, PHASH_INPUT).float()
    weights = torch.tensor(_GREY, device=small.device).view(3, 1, 1)
    return (small * weights).sum(0).round_().clamp_(0, 255).to(torch.uint8).cpu().numpy()


def _phash(grey: np.ndarray) -> str:
    import imagehash

    return str(imagehash.phash(Image.fromarray(grey, "L"), hash_size=PHASH_SIZE))
