"""The one place that turns a model spec into a ready encoder (open_clip's factory.py in spirit).

A spec is what open_clip accepts: a built-in architecture name plus a `pretrained` tag (weights
downloaded on first use), `hf-hub:org/repo`, or `local-dir:/path` to a folder holding
`open_clip_config.json` and weights. Device and precision are chosen here once; everything that
embeds (indexing, text queries, image queries) goes through the same `Encoder`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import numpy as np

from indexer.errors import PixseekError

if TYPE_CHECKING:
    import torch
    from PIL import Image

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"
from pixseek_data import DEMO_MODEL_DIR  # noqa: E402, I001  (data/, installed as pixseek_data)
OFFLINE_HINT = "copy a model folder (open_clip_config.json + weights) here and pass --model local-dir:/path/to/folder"
HUB_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")  # what open_clip looks for
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    pretrained: str | None = None

    @classmethod
    def parse(cls, name: str, pretrained: str | None = None) -> ModelSpec:
        name = name.strip()
        if name == "demo":
            name = f"local-dir:{DEMO_MODEL_DIR}"
        if name.startswith("local-dir:"):
            # Absolute, so the spec recorded in a library still works from another directory.
            name = "local-dir:" + str(Path(name[len("local-dir:") :]).expanduser().resolve())
            pretrained = None
        elif name.startswith("hf-hub:"):
            pretrained = None
        elif pretrained is None and name == DEFAULT_MODEL:
            pretrained = DEFAULT_PRETRAINED
        return cls(name, pretrained)

    @property
    def local_dir(self) -> Path | None:
        return Path(self.name[len("local-dir:") :]) if self.name.startswith("local-dir:") else None

    def __str__(self) -> str:
        return f"{self.name} ({self.pretrained})" if self.pretrained else self.name

    def fingerprint(self) -> str:
        """Identity of the weights, not of where they were found: a moved model folder still matches."""
        folder = self.local_dir
        if folder is None:
            return f"{self.name}/{self.pretrained or 'random'}"
        digest = hashlib.sha256((folder / "open_clip_config.json").read_bytes())
        weights = _weights_file(folder)
        size = weights.stat().st_size
        digest.update(str(size).encode())
        with open(weights, "rb") as fh:
            digest.update(fh.read(1 << 20))
            fh.seek(max(0, size - (1 << 20)))
            digest.update(fh.read(1 << 20))
        return f"local:{digest.hexdigest()[:16]}"


def _weights_file(folder: Path) -> Path:
    found = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES)
    if not found:
        raise PixseekError(
            f"the model folder {folder} has a config but no weights file",
            "copy the *.safetensors or *.bin file next to open_clip_config.json",
        )
    return found[0]


def _check_spec(spec: ModelSpec) -> None:
    """Turn the ways a spec can be wrong into one actionable sentence before open_clip runs."""
    import open_clip

    folder = spec.local_dir
    if folder is not None:
        if not (folder / "open_clip_config.json").is_file():
            raise PixseekError(
                f"no open_clip_config.json in {folder}",
                "a local model folder holds open_clip_config.json plus weights (the Hugging Face hub layout)",
            )
        _weights_file(folder)
        return
    if spec.name.startswith("hf-hub:"):
        return
    if spec.name.replace("/", "-") not in open_clip.list_models():
        raise PixseekError(
            f"unknown model '{spec.name}'",
            "run `pixseek models` for the built-in names, or pass hf-hub:org/repo or local-dir:/path",
        )
    tags = open_clip.list_pretrained_tags_by_model(spec.name)
    if spec.pretrained and spec.pretrained not in tags:
        raise PixseekError(f"model '{spec.name}' has no pretrained tag '{spec.pretrained}'",
                           f"known tags: {', '.join(tags) or 'none'}")
    if not spec.pretrained:
        # Without a tag open_clip builds the architecture with random weights: every search
        # would run and rank, and every result would be noise.
        if not tags:
            raise PixseekError(f"model '{spec.name}' has no published weights",
                               "pass weights you trained as --model local-dir:/path/to/folder")
        raise PixseekError(f"model '{spec.name}' needs a weights tag", f"pass --pretrained, one of: {', '.join(tags)}")


def pick_device(requested: str | None = None) -> str:
    import torch

    if requested:
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise PixseekError("--device cuda was asked for but no CUDA GPU is available", "use --device cpu")
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


class Encoder:
    """Embeds images and texts into one L2-normalised space."""

    def __init__(self, spec: ModelSpec, device: str | None = None) -> None:
        import open_clip
        import torch

        _check_spec(spec)
        _check_hub_reachable(spec)
        self.spec = spec
        self.device = pick_device(device)
        # Half precision on GPUs doubles throughput at no measurable cost to ranking; CPUs lack
        # fast fp16 kernels, so they stay in fp32.
        self.dtype = torch.float16 if self.device.startswith("cuda") else torch.float32
        try:
            model, _, _ = open_clip.create_model_and_transforms(
                spec.name, pretrained=spec.pretrained, device=self.device,
                precision="fp16" if self.dtype == torch.float16 else "fp32",
            )
        except (RuntimeError, OSError, ValueError) as exc:
            raise _load_error(spec, exc) from exc
        model.eval()
        self.model = model
        self.tokenizer = open_clip.get_tokenizer(spec.name)
        size = model.visual.image_size
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        cfg = getattr(model.visual, "preprocess_cfg", {}) or {}
        mean = cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)
        std = cfg.get("std", open_clip.OPENAI_DATASET_STD)
        self._mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1) * 255
        self._std = torch.tensor(std, device=self.device).view(1, 3, 1, 1) * 255
        with torch.no_grad():
            self.dim = int(self.encode_texts(["a photo"]).shape[1])

    def fingerprint(self) -> str:
        return self.spec.fingerprint()

    def pixels_to_tensor(self, pixels: np.ndarray) -> torch.Tensor:
        """uint8 (N, S, S, 3) -> normalised (N, 3, S, S) on the device.

        Workers hand over uint8 so the copy to the GPU is a quarter of float32's size; pinned
        memory lets that copy overlap the previous batch's compute.
        """
        import torch

        batch = torch.from_numpy(pixels)
        if self.device.startswith("cuda"):
            batch = batch.pin_memory().to(self.device, non_blocking=True)
        batch = batch.permute(0, 3, 1, 2).float()
        return ((batch - self._mean) / self._std).to(self.dtype)

    def encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        return self.submit_pixels(pixels).result()

    def submit_pixels(self, pixels: np.ndarray) -> PendingVectors:
        """Start embedding a batch; on a GPU this returns before the batch is computed.

        The indexer submits batch i + 1 before it collects batch i, so the GPU computes while
        the host writes and gathers the next batch. On the CPU the work is done here.
        """
        import torch

        with torch.inference_mode():
            feats = self.model.encode_image(self.pixels_to_tensor(pixels))
            feats = torch.nn.functional.normalize(feats.float(), dim=-1)
            if not self.device.startswith("cuda"):
                return PendingVectors(feats)
            # Queue the copy back right behind this batch's kernels, with an event to wait on:
            # a plain .cpu() later would also wait for every batch queued after this one.
            host = torch.empty(feats.shape, dtype=feats.dtype, pin_memory=True)
            host.copy_(feats, non_blocking=True)
            done = torch.cuda.Event()
            done.record()
            return PendingVectors(host, done)

    def encode_images(self, images: list[Image.Image]) -> np.ndarray:
        from indexer.decode import to_model_input

        pixels = np.stack([to_model_input(img, self.image_size) for img in images])
        return self.encode_pixels(pixels)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            tokens = self.tokenizer(texts).to(self.device)
            feats = encode_tokens(self.model, tokens)
            feats = torch.nn.functional.normalize(feats.float(), dim=-1)
        return feats.cpu().numpy()


def encode_tokens(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """`model.encode_text(tokens)`, computed only up to the longest text where that is exact.

    CLIP's own text tower is causal and pools at the end-of-text token (the largest token id,
    hence "argmax"), so the padding after the longest text of a batch can never change a result.
    A query fills ~10 of 77 positions: skipping the rest makes a text query with its 8 prompt
    templates ~6x faster on a CPU (ViT-B-32: 0.35 s -> 0.06 s). Other text towers (Hugging Face
    encoders, other pooling) run unchanged.
    """
    import open_clip
    import torch
    from open_clip.transformer import text_global_pool

    used = int((tokens != 0).any(dim=0).nonzero().max()) + 1  # padding (id 0) only trails
    if (type(model) is not open_clip.CLIP or model.text_pool_type != "argmax" or model.attn_mask is None
            or used >= tokens.shape[1]):
        return model.encode_text(tokens)
    tokens = tokens[:, :used]
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast) + model.positional_embedding[:used].to(cast)
    x = model.transformer(x, attn_mask=model.attn_mask[:used, :used])
    x = text_global_pool(model.ln_final(x), tokens, model.text_pool_type)
    projection = model.text_projection
    if projection is None:
        return x
    return projection(x) if isinstance(projection, torch.nn.Linear) else x @ projection


class PendingVectors:
    """L2-normalised float32 vectors of a submitted batch, in host memory once `ready` fires."""

    def __init__(self, host: torch.Tensor, ready: torch.cuda.Event | None = None) -> None:
        self._host = host
        self._ready = ready

    def result(self) -> np.ndarray:
        if self._ready is not None:
            self._ready.synchronize()
        return self._host.numpy()


def _check_hub_reachable(spec: ModelSpec) -> None:
    """Fail in seconds when weights must come from the Hugging Face hub and it cannot be reached.

    Without this, huggingface_hub retries each candidate file five times with backoff: a minute
    of retry messages before the error. Skipped when the files are cached, when the user set
    HF_HUB_OFFLINE (open_clip then fails at once by itself) or a proxy (only it can tell).
    """
    if spec.name.startswith("hf-hub:"):
        repo, files = spec.name[len("hf-hub:"):], ("open_clip_config.json",)
    elif spec.local_dir is None:  # a built-in name, whose tag _check_spec has made sure of
        import open_clip

        repo, filename = os.path.split(open_clip.get_pretrained_cfg(spec.name, spec.pretrained).get("hf_hub", ""))
        files = (filename,) if filename else HUB_WEIGHTS
    else:
        return  # a local folder: nothing to download
    if not repo or os.environ.get("HF_HUB_OFFLINE") or any(os.environ.get(v) for v in PROXY_VARIABLES):
        return
    from huggingface_hub import constants, try_to_load_from_cache

    if any(isinstance(try_to_load_from_cache(repo, f), str) for f in files):
        return
    endpoint = urlparse(constants.ENDPOINT)
    host = endpoint.hostname or "huggingface.co"
    try:
        socket.create_connection((host, endpoint.port or (80 if endpoint.scheme == "http" else 443)), timeout=5).close()
    except OSError:
        raise PixseekError(f"could not download the weights for {spec}: {host} cannot be reached (no internet?)",
                           OFFLINE_HINT) from None


def _load_error(spec: ModelSpec, exc: Exception) -> PixseekError:
    text = str(exc)
    if spec.local_dir is None and any(w in text.lower() for w in ("download", "connect", "offline", "resolve", "hub")):
        return PixseekError(f"could not download the weights for {spec} (no internet?)", OFFLINE_HINT)
    return PixseekError(f"could not load model {spec}: {text.splitlines()[0] if text else type(exc).__name__}")


def input_size(spec: ModelSpec) -> int | None:
    """The model's input size from its config alone, so decoding can start while it loads.

    The same `vision_cfg.image_size` open_clip builds the image tower from (224 when absent, as
    in open_clip's CLIPVisionCfg); None when only loading the model would tell (hf-hub, or a
    folder without a readable config).
    """
    if spec.local_dir is not None:
        try:
            cfg = json.loads((spec.local_dir / "open_clip_config.json").read_text())["model_cfg"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
    elif spec.name.startswith("hf-hub:"):
        return None
    else:
        import open_clip

        cfg = open_clip.get_model_config(spec.name)
    if not isinstance(cfg, dict):
        return None
    size = (cfg.get("vision_cfg") or {}).get("image_size", 224)
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def load_encoder(spec: ModelSpec, device: str | None = None) -> Encoder:
    log.info("loading model %s", spec)
    return Encoder(spec, device)

