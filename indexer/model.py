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
from indexer.preprocess import Preprocess

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from indexer.runtime import RuntimeCheck

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"
from pixseek_data import DEMO_MODEL_DIR, DEMO_ZH_MODEL_DIR  # noqa: E402, I001  (data/, installed as pixseek_data)

OFFLINE_HINTS = {
    "open_clip": "copy a model folder (open_clip_config.json + weights) here"
    " and pass --model local-dir:/path/to/folder",
    "hf": "copy the model's folder (config.json, weights, tokenizer, preprocessor_config.json) here"
    " and pass --model hf-dir:/path/to/folder",
}
HUB_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")  # what open_clip looks for
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")
# Any one of these lets transformers' AutoTokenizer build a tokenizer from a folder.
TOKENIZER_FILES = (
    "tokenizer.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
    "vocab.txt",
    "vocab.json",
)
# Text towers whose attention is causal and whose pooled token is found from the token ids: for
# them the padding after a batch's longest text cannot change a result (see encode_tokens).
EXACT_WHEN_TRUNCATED = ("argmax", "eos", "first")
FOLDER_PREFIXES = ("local-dir:", "hf-dir:")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    pretrained: str | None = None

    @classmethod
    def parse(cls, name: str, pretrained: str | None = None) -> ModelSpec:
        name = name.strip()
        name = {"demo": f"local-dir:{DEMO_MODEL_DIR}", "demo-zh": f"hf-dir:{DEMO_ZH_MODEL_DIR}"}.get(name, name)
        for prefix in FOLDER_PREFIXES:
            if name.startswith(prefix):
                # Absolute, so the spec recorded in a library still works from another directory.
                folder = Path(name[len(prefix) :]).expanduser().resolve()
                if prefix == "local-dir:" and _is_transformers_folder(folder):
                    prefix = "hf-dir:"
                return cls(prefix + str(folder))
        if name.startswith(("hf-hub:", "hf:")):
            return cls(name)
        if pretrained is None and name == DEFAULT_MODEL:
            pretrained = DEFAULT_PRETRAINED
        return cls(name, pretrained)

    @property
    def backend(self) -> str:
        """`hf` for transformers models (indexer/hf_model.py), `open_clip` for the rest."""
        return "hf" if self.name.startswith(("hf:", "hf-dir:")) else "open_clip"

    @property
    def folder(self) -> Path | None:
        """The local model folder (local-dir: or hf-dir:), None for downloaded weights."""
        for prefix in FOLDER_PREFIXES:
            if self.name.startswith(prefix):
                return Path(self.name[len(prefix) :])
        return None

    @property
    def local_dir(self) -> Path | None:
        """An open_clip model folder (local-dir:)."""
        return self.folder if self.backend == "open_clip" else None

    def __str__(self) -> str:
        return f"{self.name} ({self.pretrained})" if self.pretrained else self.name

    def fingerprint(self) -> str:
        """Identity of the weights, not of where they were found: a moved model folder still matches."""
        folder = self.folder
        if folder is None:
            return f"{self.name}/{self.pretrained or 'random'}"
        config = "config.json" if self.backend == "hf" else "open_clip_config.json"
        digest = hashlib.sha256((folder / config).read_bytes())
        weights = weights_file(folder)
        size = weights.stat().st_size
        digest.update(str(size).encode())
        with open(weights, "rb") as fh:
            digest.update(fh.read(1 << 20))
            fh.seek(max(0, size - (1 << 20)))
            digest.update(fh.read(1 << 20))
        return f"local:{digest.hexdigest()[:16]}"


def _is_transformers_folder(folder: Path) -> bool:
    """A folder as transformers' save_pretrained writes it, passed as local-dir: by habit."""
    return (folder / "config.json").is_file() and not (folder / "open_clip_config.json").is_file()


def weights_file(folder: Path) -> Path:
    # open_clip's own names first: a folder may also hold an HF text tower's model.safetensors.
    found = [folder / n for n in HUB_WEIGHTS if (folder / n).is_file()] or sorted(
        p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES
    )
    if not found:
        raise PixseekError(
            f"the model folder {folder} has a config but no weights file",
            "copy the model's *.safetensors or *.bin weights into the folder",
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
        weights_file(folder)
        _check_hub_files(folder, _local_config(folder).get("text_cfg") or {})
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
        raise PixseekError(
            f"model '{spec.name}' has no pretrained tag '{spec.pretrained}'", f"known tags: {', '.join(tags) or 'none'}"
        )
    if not spec.pretrained:
        # Without a tag open_clip builds the architecture with random weights: every search
        # would run and rank, and every result would be noise.
        if not tags:
            raise PixseekError(
                f"model '{spec.name}' has no published weights",
                "pass weights you trained as --model local-dir:/path/to/folder",
            )
        raise PixseekError(f"model '{spec.name}' needs a weights tag", f"pass --pretrained, one of: {', '.join(tags)}")


def pick_device(requested: str | None = None) -> str:
    import torch

    if requested:
        if requested.startswith("cuda") and not torch.cuda.is_available():
            raise PixseekError("--device cuda was asked for but no CUDA GPU is available", "use --device cpu")
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


class Encoder:
    """Embeds images and texts into one L2-normalised space; a backend supplies the two towers.

    The backends (open_clip here, transformers in indexer/hf_model.py) load a model and say how it
    wants its pixels (`preprocess`) and tokens; everything around the towers is shared, so each
    backend runs the same fast indexing path: uint8 batches from the decode workers, normalised
    on the device, submitted ahead on GPUs.
    """

    spec: ModelSpec
    device: str
    dtype: torch.dtype
    model: torch.nn.Module
    preprocess: Preprocess
    dim: int

    def _ready(self, spec: ModelSpec, device: str, model: torch.nn.Module, preprocess: Preprocess) -> None:
        import torch

        self.spec, self.device, self.model, self.preprocess = spec, device, model, preprocess
        model.eval()
        self._mean = torch.tensor(preprocess.mean, device=device).view(1, 3, 1, 1) * 255
        self._std = torch.tensor(preprocess.std, device=device).view(1, 3, 1, 1) * 255
        self.dim = int(self.encode_texts(["a photo"]).shape[1])

    def image_features(self, batch: torch.Tensor) -> torch.Tensor:
        """Unnormalised embeddings of a normalised (N, 3, H, W) batch."""
        raise NotImplementedError

    def text_features(self, texts: list[str]) -> torch.Tensor:
        """Unnormalised embeddings of texts, tokenised as the model's own code does."""
        raise NotImplementedError

    @property
    def logit_scale(self) -> float:
        """The softmax temperature the model was trained with (zero-shot tagging scales by it)."""
        raise NotImplementedError

    def fingerprint(self) -> str:
        return self.spec.fingerprint()

    def pixels_to_tensor(self, pixels: np.ndarray) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> normalised (N, 3, H, W) on the device.

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
            feats = self.image_features(self.pixels_to_tensor(pixels))
            if feats.shape[-1] != self.dim:
                raise PixseekError(
                    f"model {self.spec} embeds images in {feats.shape[-1]} dimensions and texts in {self.dim}",
                    "pass a model whose two towers share one embedding space",
                )
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

        pixels = np.stack([to_model_input(img, self.preprocess) for img in images])
        return self.encode_pixels(pixels)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            feats = torch.nn.functional.normalize(self.text_features(texts).float(), dim=-1)
        return feats.cpu().numpy()


class OpenClipEncoder(Encoder):
    """An open_clip model: built-in names, hf-hub: repos and local-dir: folders."""

    def __init__(self, spec: ModelSpec, device: str | None = None) -> None:
        import open_clip
        import torch

        _check_spec(spec)
        check_hub_reachable(spec)
        device = pick_device(device)
        # Half precision on GPUs doubles throughput at no measurable cost to ranking; CPUs lack
        # fast fp16 kernels, so they stay in fp32.
        self.dtype = torch.float16 if device.startswith("cuda") else torch.float32
        try:
            model = open_clip.create_model(
                spec.name,
                pretrained=spec.pretrained,
                device=device,
                precision="fp16" if self.dtype == torch.float16 else "fp32",
                **_local_text_tower(spec),
            )
            self.tokenizer = open_clip.get_tokenizer(spec.name)
        except (RuntimeError, OSError, ValueError) as exc:
            raise load_error(spec, exc) from exc
        # What open_clip's own `preprocess` would be built from (create_model_and_transforms).
        preprocess = Preprocess.from_cfg(open_clip.get_model_preprocess_cfg(model))
        self._ready(spec, device, model, preprocess)

    def image_features(self, batch: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(batch)

    def text_features(self, texts: list[str]) -> torch.Tensor:
        return encode_tokens(self.model, self.tokenizer(texts).to(self.device))

    @property
    def logit_scale(self) -> float:
        import torch

        with torch.no_grad():
            return float(self.model.logit_scale.exp())


def open_encoder(spec: ModelSpec, device: str | None = None) -> Encoder:
    """The torch encoder of `spec`'s backend."""
    if spec.backend == "hf":
        from indexer.hf_model import HFEncoder

        return HFEncoder(spec, device)
    return OpenClipEncoder(spec, device)


def encode_tokens(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """`model.encode_text(tokens)`, computed only up to the longest text where that is exact.

    open_clip's own text tower (the CLIP class: ViTs, ResNets, ConvNeXt, EVA) is causal and
    pools a token found from the ids (the end-of-text token), so the padding after the longest
    text of a batch can never change a result. A query fills ~10 of 77 positions: skipping the
    rest makes a text query with its 8 prompt templates several times faster on a CPU. Every
    other tower (bidirectional SigLIP and MobileCLIP text, CoCa, Hugging Face encoders) runs
    unchanged; tests/test_model_fidelity.py holds both paths to the same result.
    """
    import open_clip
    import torch
    from open_clip.transformer import text_global_pool

    used = int((tokens != 0).any(dim=0).nonzero().max()) + 1  # padding (id 0) only trails
    if (
        type(model) is not open_clip.CLIP
        or model.text_pool_type not in EXACT_WHEN_TRUNCATED
        or model.attn_mask is None
        or used >= tokens.shape[1]
    ):
        return model.encode_text(tokens)
    tokens = tokens[:, :used]
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast) + model.positional_embedding[:used].to(cast)
    x = model.transformer(x, attn_mask=model.attn_mask[:used, :used])
    x = text_global_pool(
        model.ln_final(x), tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None)
    )
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


def check_hub_reachable(spec: ModelSpec) -> None:
    """Fail in seconds when weights must come from the Hugging Face hub and it cannot be reached.

    Without this, huggingface_hub retries each candidate file five times with backoff: a minute
    of retry messages before the error. Skipped when the files are cached, when the user set
    HF_HUB_OFFLINE (open_clip then fails at once by itself) or a proxy (only it can tell).
    """
    if spec.name.startswith("hf-hub:"):
        repo, files = spec.name[len("hf-hub:") :], ("open_clip_config.json",)
    elif spec.name.startswith("hf:"):
        repo, files = spec.name[len("hf:") :], ("config.json",)
    elif spec.folder is None:  # a built-in name, whose tag _check_spec has made sure of
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
        raise PixseekError(
            f"could not download the weights for {spec}: {host} cannot be reached (no internet?)",
            OFFLINE_HINTS[spec.backend],
        ) from None


def load_error(spec: ModelSpec, exc: Exception) -> PixseekError:
    text = str(exc)
    if spec.folder is None and any(w in text.lower() for w in ("download", "connect", "offline", "resolve", "hub")):
        return PixseekError(f"could not download the weights for {spec} (no internet?)", OFFLINE_HINTS[spec.backend])
    return PixseekError(f"could not load model {spec}: {text.splitlines()[0] if text else type(exc).__name__}")


def preprocess_for(spec: ModelSpec) -> Preprocess | None:
    """The model's preprocessing from its config alone, so decoding can start while it loads.

    Merged the way open_clip's create_model does: its PreprocessCfg defaults, then the folder's
    `preprocess_cfg` or the pretrained tag's settings, then the size the image tower is built
    with (`vision_cfg.image_size`, 224 when absent). None when only loading the model would
    tell (hf-hub, or a folder without a readable config).
    """
    if spec.backend == "hf":
        from indexer.hf_model import folder_preprocess

        return folder_preprocess(spec)
    if spec.name.startswith("hf-hub:"):
        return None
    if spec.local_dir is not None:
        try:
            config = json.loads((spec.local_dir / "open_clip_config.json").read_text())
            model_cfg, cfg = config["model_cfg"], dict(config.get("preprocess_cfg") or {})
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None
    else:
        import open_clip

        model_cfg = open_clip.get_model_config(spec.name)
        cfg = {
            k: v
            for k, v in (open_clip.get_pretrained_cfg(spec.name, spec.pretrained or "") or {}).items()
            if v is not None
        }
    if not isinstance(model_cfg, dict):
        return None
    cfg["size"] = (model_cfg.get("vision_cfg") or {}).get("image_size", 224)
    try:
        return Preprocess.from_cfg(cfg)
    except (ValueError, TypeError):
        return None


def _local_config(folder: Path) -> dict:
    try:
        cfg = json.loads((folder / "open_clip_config.json").read_text(encoding="utf-8"))["model_cfg"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise PixseekError(
            f"cannot read {folder / 'open_clip_config.json'}: {exc}",
            "it must be JSON with a model_cfg section, as open_clip writes it",
        ) from None
    if not isinstance(cfg, dict):
        raise PixseekError(f"{folder / 'open_clip_config.json'} has no model_cfg section")
    return cfg


def _check_hub_files(folder: Path, text_cfg: dict) -> None:
    """A folder whose text side comes from the Hugging Face hub must hold those files itself.

    open_clip builds the tokenizer of a `local-dir:` model from the folder (AutoTokenizer), and
    an HF text tower's architecture from `hf_model_name`'s config.json, which pixseek points at
    the folder (_local_text_tower); without them it would try the hub, which is not there offline.
    """
    tokenizer = text_cfg.get("hf_tokenizer_name")
    if tokenizer and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise PixseekError(
            f"the model folder {folder} has no tokenizer files for {tokenizer}",
            f"copy tokenizer.json and tokenizer_config.json (or {', '.join(TOKENIZER_FILES[1:])})"
            f" from the hub repo {tokenizer} into the folder",
        )
    tower = text_cfg.get("hf_model_name")
    if tower and not (folder / "config.json").is_file():
        raise PixseekError(
            f"the model folder {folder} has no config.json for its text tower {tower}",
            f"copy config.json from the hub repo {tower} into the folder",
        )


def _local_text_tower(spec: ModelSpec) -> dict:
    """create_model arguments that build a local folder's HF text tower from the folder's config.json."""
    folder = spec.local_dir
    if folder is None:
        return {}
    text_cfg = _local_config(folder).get("text_cfg") or {}
    if not text_cfg.get("hf_model_name"):
        return {}
    # The folder's weights replace the whole model afterwards: only the architecture is needed.
    return {"text_cfg": {**text_cfg, "hf_model_name": str(folder), "hf_model_pretrained": False}}


def load_encoder(
    spec: ModelSpec,
    device: str | None = None,
    *,
    runtime: str = "torch",
    precision: str | None = None,
    recorded: RuntimeCheck | None = None,
    sample: np.ndarray | None = None,
) -> Encoder:
    """The encoder of `runtime` (torch, onnx or auto: indexer/runtime.py decides); its `choice` says why."""
    from indexer.runtime import choose_runtime, load_runtime_encoder

    choice = choose_runtime(spec, runtime, precision, device, recorded, sample)
    log.info("loading model %s: %s", spec, choice.reason)
    encoder = load_runtime_encoder(spec, choice, device)
    encoder.choice = choice
    return encoder
