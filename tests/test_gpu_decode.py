"""The GPU decoding path gives the CPU path's photos: same pixels, orientation, sizes, metadata, fallbacks.

torchvision's decoder on the CPU runs the GPU path's code minus the device, so every check but
the nvJPEG one runs without a GPU.
"""

from __future__ import annotations

import imagehash
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_jpeg

from indexer.decode import REASON_VANISHED, DecodeError, _orientation, decode_image, to_model_input
from indexer.gpu_decode import GpuJpegDecoder, orient
from indexer.walk import content_hash
from tests.conftest import CALTECH, PHOTO_LIBRARY, need_shared

ORIENTATION = PHOTO_LIBRARY / "recurser+exif-orientation-examples"
SIZE = 224


def _photos():
    """Real JPEGs: every EXIF orientation (0-8, landscape and portrait) and a spread of Caltech sizes."""
    need_shared(ORIENTATION)
    return sorted(ORIENTATION.glob("*.jpg")) + sorted(need_shared(CALTECH).rglob("*.jpg"))[::100]


def _decoded_upright(path, device="cpu"):
    data = torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)
    with Image.open(path) as header:
        orientation = _orientation(header)
    return orient(decode_jpeg(data, mode=ImageReadMode.RGB, device=device), orientation).permute(1, 2, 0).cpu()


def test_torchvision_pixels_oriented_agree_with_the_pil_path():
    for path in _photos():
        ours = _decoded_upright(path).numpy().astype(int)
        theirs = np.asarray(decode_image(path).image).astype(int)
        assert ours.shape == theirs.shape, path
        # Both are libjpeg decoders; JPEG allows each IDCT its own rounding, no more.
        assert np.abs(ours - theirs).max() <= 2, path


def test_every_orientation_comes_out_upright():
    """The recurser files show an upright "F" once oriented: all nine of each set agree pixel for pixel."""
    need_shared(ORIENTATION)
    for kind in ("Landscape", "Portrait"):
        upright = [_decoded_upright(ORIENTATION / f"{kind}_{i}.jpg").float() for i in range(9)]
        assert len({tuple(u.shape) for u in upright}) == 1
        for i, img in enumerate(upright[1:], start=1):
            # Re-encoded after rotation, so compare broadly: a wrong turn differs everywhere.
            assert (img - upright[0]).abs().mean() < 8, f"{kind}_{i}"


@pytest.mark.parametrize("size", [SIZE, 64])  # ViT-B-32's input and the demo model's, which embeds both
def test_batch_matches_the_cpu_indexing_path(demo_encoder, size):
    photos = _photos()[::3]  # orientations 1, 3 and 6, and Caltech's sizes
    batch = GpuJpegDecoder(size, "cpu").decode([str(p) for p in photos])
    assert batch.pixels.shape == (len(photos), size, size, 3) and batch.pixels.dtype == torch.uint8
    cpu_pixels = []
    for path, result in zip(photos, batch.files):
        assert result.on_gpu and result.reason is None, path
        decoded = decode_image(path, target_size=size)
        cpu_pixels.append(to_model_input(decoded.image, size))
        assert (result.fields["width"], result.fields["height"]) == (decoded.width, decoded.height)
        assert result.fields["taken_at"] == decoded.meta.taken_at
        assert result.fields["camera_model"] == decoded.meta.camera_model
        # Against the full-resolution photo's hash: resampled by another library, a few of the
        # 256 bits may differ, as for a re-saved copy (near-duplicates allow far more).
        full_hash = imagehash.phash(decode_image(path).image, hash_size=16)
        assert full_hash - imagehash.hex_to_hash(result.fields["phash"]) <= 6, path
    ours = batch.pixels.numpy().astype(int)
    cpu = np.stack(cpu_pixels)
    # Resampled by another library from a differently reduced image: close, not equal.
    assert np.abs(ours - cpu).mean() < 3
    if (size, size) == demo_encoder.preprocess.size:
        vectors = demo_encoder.encode_pixels(batch.pixels.numpy()), demo_encoder.encode_pixels(cpu)
        assert (vectors[0] * vectors[1]).sum(axis=1).min() >= 0.99


def test_other_formats_and_broken_files_take_the_cpu_path(tmp_path):
    skimage = need_shared(PHOTO_LIBRARY / "skimage-0.26.0-data")
    broken = PHOTO_LIBRARY / "_synthetic_corrupt"
    paths = [
        skimage / "astronaut.png",
        broken / "truncated_20KB.jpg",
        broken / "zero_bytes.jpg",
        broken / "text_named.jpg",
        ORIENTATION / "Landscape_6.jpg",
        broken / "real_jpeg_with_png_ext.png",
        tmp_path / "vanished.jpg",
    ]
    batch = GpuJpegDecoder(SIZE, "cpu").decode([str(p) for p in paths])
    by_name = {r.path.rsplit("/", 1)[1]: r for r in batch.files}
    assert not by_name["astronaut.png"].on_gpu and by_name["astronaut.png"].row is not None
    assert by_name["Landscape_6.jpg"].on_gpu
    assert by_name["real_jpeg_with_png_ext.png"].on_gpu  # sniffed by content, as the CPU path does
    for name in ("truncated_20KB.jpg", "zero_bytes.jpg", "text_named.jpg"):
        with pytest.raises(DecodeError) as cpu_error:
            decode_image(broken / name, target_size=SIZE)
        assert (by_name[name].row, by_name[name].reason) == (None, cpu_error.value.reason)
    assert by_name["vanished.jpg"].reason == REASON_VANISHED
    assert by_name["Landscape_6.jpg"].fields["hash"] == content_hash(str(paths[4]))
    rows = [r.row for r in batch.files if r.row is not None]
    assert rows == list(range(len(batch.pixels)))
    png = to_model_input(decode_image(paths[0], target_size=SIZE).image, SIZE)
    np.testing.assert_array_equal(batch.pixels[by_name["astronaut.png"].row].numpy(), png)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU: nvJPEG decoding is checked where one is")
def test_nvjpeg_pixels_agree_with_the_cpu_decoder():
    photos = _photos()
    for path in photos:
        gpu = _decoded_upright(path, "cuda").numpy().astype(int)
        assert np.abs(gpu - np.asarray(decode_image(path).image).astype(int)).max() <= 2, path
    cuda = GpuJpegDecoder(SIZE, "cuda").decode([str(p) for p in photos])
    cpu = GpuJpegDecoder(SIZE, "cpu").decode([str(p) for p in photos])
    assert cuda.pixels.device.type == "cuda" and all(r.on_gpu for r in cuda.files)
    assert (cuda.pixels.cpu().int() - cpu.pixels.int()).abs().max() <= 2
