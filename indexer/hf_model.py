"""Hugging Face transformers dual encoders behind pixseek's Encoder.

`hf:org/repo` downloads a model from the hub (when online); `hf-dir:/path` (or a `local-dir:`
folder that transformers wrote) loads one offline from a folder holding `config.json`, weights,
the tokenizer files and `preprocessor_config.json`. Anything AutoModel builds that exposes
`get_image_features` / `get_text_features` works: CLIPModel, SiglipModel (SigLIP and the
fixed-resolution SigLIP2 checkpoints), Siglip2Model (SigLIP2 NaFlex: each photo at its own aspect
ratio, as patches), AlignModel, ChineseCLIPModel, VisionTextDualEncoderModel.

Pixels and tokens follow the model's own processor: its image processor's resize, crop and
rescale/normalise settings become a Preprocess (so the decode workers resize as the processor
would, see indexer/preprocess.py), and texts are tokenised with its tokenizer, padded the way the
family was trained.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from indexer.errors import PixseekError
from indexer.model import (
    TOKENIZER_FILES,
    Encoder,
    ModelSpec,
    check_hub_reachable,
    load_error,
    pick_device,
    weights_file,
)
from indexer.preprocess import Preprocess, patch_grids, per_channel

if TYPE_CHECKING:
    import torch

# Text towers trained on texts padded to the full context and pooled at the last position, so
# the padding must be as in training (transformers' SigLIP docs: padding="max_length").
PAD_TO_CONTEXT = ("siglip", "siglip2")
# Trained on lowercased text; SigLIP's own tokenizer lowercases, SigLIP2's Gemma tokenizer does
# not, and its model card says to (transformers' SigLIP2 docs).
LOWERCASED = ("siglip", "siglip2")
# PIL's resampling numbers, as transformers' processor configs store them.
RESAMPLE_NAMES = {0: "nearest", 2: "bilinear", 3: "bicubic"}
PROCESSOR_FILE = "preprocessor_config.json"


class HFEncoder(Encoder):
    """A transformers model with get_image_features / get_text_features."""

    def __init__(self, spec: ModelSpec, device: str | None = None) -> None:
        import torch

        try:
            from transformers import AutoImageProcessor, AutoModel, AutoTokenizer
            from transformers.utils import logging as hf_logging
        except ImportError:
            raise PixseekError(
                f"{spec} is a transformers model, and transformers is not installed", "pip install 'pixseek[hf]'"
            ) from None

        hf_logging.disable_progress_bar()  # a bar per search would bury the results
        check_folder(spec)
        check_hub_reachable(spec)
        device = pick_device(device)
        self.dtype = torch.float16 if device.startswith("cuda") else torch.float32
        source = hf_source(spec)
        try:
            model = AutoModel.from_pretrained(source, dtype=self.dtype)
            self.tokenizer = AutoTokenizer.from_pretrained(source)
            processor = AutoImageProcessor.from_pretrained(source)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise load_error(spec, exc) from exc
        model_type = getattr(model.config, "model_type", "")
        if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
            raise PixseekError(
                f"{spec} is a {type(model).__name__}, not an image-text dual encoder",
                "pass a CLIP-style model: CLIPModel, SiglipModel, AlignModel, ChineseCLIPModel and the like",
            )
        self._padding = "max_length" if model_type in PAD_TO_CONTEXT else "longest"
        self._lowercase = model_type in LOWERCASED
        self._max_length = _context_length(model, self.tokenizer)
        self._ready(spec, device, model.to(device), preprocess_of(processor, spec))

    def pixels_to_tensor(self, pixels: np.ndarray) -> torch.Tensor | dict[str, torch.Tensor]:
        """NaFlex models take their processor's three inputs, made here from the patch rows."""
        if self.preprocess.resize_mode != "patches":
            return super().pixels_to_tensor(pixels)
        import torch

        p, most = self.preprocess.patch_size, self.preprocess.max_patches
        grids = torch.from_numpy(patch_grids(pixels, p)).to(self.device)
        rows = super().pixels_to_tensor(np.ascontiguousarray(pixels[:, :p]))  # (N, 3, p, most * p)
        # Each patch flattened row by row, channels last, as the processor's convert_image_to_patches.
        values = rows.view(len(pixels), 3, p, most, p).permute(0, 3, 2, 4, 1).reshape(len(pixels), most, p * p * 3)
        mask = torch.arange(most, device=self.device)[None, :] < (grids[:, 0] * grids[:, 1])[:, None]
        return {
            "pixel_values": values * mask[..., None],  # the processor pads with zeros after normalising
            "pixel_attention_mask": mask.int(),
            "spatial_shapes": grids,
        }

    def image_features(self, batch: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = batch if isinstance(batch, dict) else {"pixel_values": batch}
        return _pooled(self.model.get_image_features(**inputs))

    def text_features(self, texts: list[str]) -> torch.Tensor:
        if self._lowercase:
            texts = [text.lower() for text in texts]
        tokens = self.tokenizer(
            texts, padding=self._padding, truncation=True, max_length=self._max_length, return_tensors="pt"
        ).to(self.device)
        return _pooled(self.model.get_text_features(**tokens))

    @property
    def logit_scale(self) -> float:
        import torch

        with torch.no_grad():
            if hasattr(self.model, "logit_scale"):
                return float(self.model.logit_scale.exp())
            return float(1.0 / self.model.temperature)  # ALIGN divides by a temperature instead


def hf_source(spec: ModelSpec) -> str:
    """What transformers' from_pretrained takes: the folder, or the hub repo id."""
    return str(spec.folder) if spec.folder is not None else spec.name[len("hf:") :]


def check_folder(spec: ModelSpec) -> None:
    """A local folder must hold every file transformers would otherwise fetch from the hub."""
    folder = spec.folder
    if folder is None:
        return
    if not folder.is_dir():
        raise PixseekError(f"no model folder at {folder}", "pass --model hf-dir:/path/to/a/transformers/model/folder")
    if not (folder / "config.json").is_file():
        raise PixseekError(
            f"no config.json in {folder}",
            "a transformers model folder holds config.json, weights, tokenizer and preprocessor_config.json",
        )
    weights_file(folder)
    missing = [] if any((folder / n).is_file() for n in TOKENIZER_FILES) else ["tokenizer.json (or vocab.txt, ...)"]
    missing += [] if (folder / PROCESSOR_FILE).is_file() else [PROCESSOR_FILE]
    if missing:
        raise PixseekError(
            f"the model folder {folder} lacks {', '.join(missing)}",
            "copy them from the model's hub repo (save_pretrained of its processor writes them)",
        )


def preprocess_of(processor: Any, spec: ModelSpec | str) -> Preprocess:
    """The Preprocess doing what a transformers image processor does to one RGB image.

    Its resize (a shortest edge with a centre crop, or a fixed height and width, optionally
    followed by a centre crop) becomes the geometry; its rescale, offset and normalise steps,
    all affine per channel, fold into one mean and std over 0-255 pixels.
    """
    resample = RESAMPLE_NAMES.get(int(getattr(processor, "resample", 3) or 0))
    if not _on(processor, "do_resize") or resample is None:
        raise PixseekError(
            f"the image processor of {spec} does not resize with a resampling pixseek knows",
            "use a model whose processor resizes with bicubic, bilinear or nearest",
        )
    if getattr(processor, "max_num_patches", None):  # SigLIP2 NaFlex
        patch_size, most = int(processor.patch_size), int(processor.max_num_patches)
        return Preprocess.patches(patch_size, most, interpolation=resample, **_mean_std(processor))
    size, crop = _size(processor, "size"), _size(processor, "crop_size") if _on(processor, "do_center_crop") else None
    common = {"interpolation": resample, "crop_offset": "floor", **_mean_std(processor)}
    if size.get("shortest_edge") and not size.get("longest_edge") and crop and crop["height"] == crop["width"]:
        if crop["height"] == size["shortest_edge"]:
            return Preprocess(size=(crop["height"], crop["width"]), resize_mode="shortest", **common)
    elif size.get("height") and size.get("width"):
        resized = (int(size["height"]), int(size["width"]))
        if crop is None or (crop["height"], crop["width"]) == resized:
            return Preprocess(size=resized, resize_mode="squash", **common)
        return Preprocess(size=(crop["height"], crop["width"]), resize_mode="squash", squash_to=resized, **common)
    raise PixseekError(
        f"the image processor of {spec} resizes as {dict(size)} then crops to {crop}, which pixseek cannot batch",
        "use a model whose processor gives every image the same size",
    )


def folder_preprocess(spec: ModelSpec) -> Preprocess | None:
    """The Preprocess from a folder's (or the hub cache's) processor config, without the weights."""
    from transformers import AutoImageProcessor

    try:
        return preprocess_of(AutoImageProcessor.from_pretrained(hf_source(spec), local_files_only=True), spec)
    except (OSError, ValueError, KeyError, TypeError, PixseekError):
        return None


def _on(processor: Any, flag: str) -> bool:
    return bool(getattr(processor, flag, False))


def _size(processor: Any, name: str) -> dict[str, int]:
    value = getattr(processor, name, None) or {}
    if isinstance(value, int):
        return {"height": value, "width": value}
    items = value.items() if hasattr(value, "items") else vars(value).items()
    return {k: int(v) for k, v in items if v}


def _mean_std(processor: Any) -> dict[str, tuple[float, float, float]]:
    """value = (pixel - A) / B after every affine step, as mean = A / 255 and std = B / 255."""
    a, b = [0.0] * 3, [1.0] * 3
    if _on(processor, "do_rescale"):
        factor = float(processor.rescale_factor)
        offset = 1.0 if _on(processor, "rescale_offset") else 0.0  # EfficientNet's x * factor - 1
        a = [ai + offset * bi / factor for ai, bi in zip(a, b)]
        b = [bi / factor for bi in b]
    steps = [(processor.image_mean, processor.image_std)] if _on(processor, "do_normalize") else []
    if _on(processor, "include_top"):  # EfficientNet divides by the std once more
        steps.append(([0.0] * 3, processor.image_std))
    for mean, std in steps:
        mean, std = per_channel(mean), per_channel(std)
        a = [ai + m * bi for ai, m, bi in zip(a, mean, b)]
        b = [bi * s for bi, s in zip(b, std)]
    return {"mean": tuple(v / 255 for v in a), "std": tuple(v / 255 for v in b)}


def _context_length(model: Any, tokenizer: Any) -> int:
    text_config = getattr(model.config, "text_config", model.config)
    positions = getattr(text_config, "max_position_embeddings", None) or 512
    limit = getattr(tokenizer, "model_max_length", None) or positions
    return int(min(positions, limit))


def _pooled(out: Any) -> torch.Tensor:
    """get_*_features return the embeddings, or (transformers 5) an output holding them as pooler_output."""
    import torch

    return out if isinstance(out, torch.Tensor) else out.pooler_output
