"""Export an open_clip model's image and text towers to ONNX, once per model, into a cache folder.

The exported graphs take what pixseek already has in hand and return what it stores: the image
graph takes uint8 (N, S, S, 3) pixels and the text graph token ids, and both return L2-normalised
float32 vectors, so normalisation and pooling live in the graph and an ONNX Runtime caller needs
no torch. Everything is keyed by the model fingerprint; `meta.json` beside the graphs records
what made them and is written last, so a folder without a matching one is re-exported.

Runs torch and open_clip (export time only); the readers of an export (indexer/onnx_encoder.py,
indexer/clip_tokenizer.py) only need the files and `meta.json`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from indexer.errors import PixseekError

if TYPE_CHECKING:
    import torch

    from indexer.model import ModelSpec

# Bump when what the graphs compute, or how they are laid out here, changes: every cached
# export with another value is re-exported.
# 2: meta.json records the logit scale (zero-shot tagging); 3: the whole preprocessing;
# 4: the weights of traced graphs in a `.data` file beside each graph; 5: an int8 text graph.
EXPORT_FORMAT = 5
OPSET = 17
CACHE_ENV = "PIXSEEK_ONNX_CACHE"
META = "meta.json"
REFUSED = "refused.json"  # why a model did not export, so it is not tried again on every run
# Precision -> the image and text graph files it runs. int8 quantises both towers: a query's
# prompt ensemble through ViT-B-32's fp32 text tower alone takes longer on a 2-core CPU than a
# warm query may (benchmarks/runtimes.py); indexer/runtime.py checks both before `auto` uses int8.
PRECISIONS = ("fp32", "int8", "fp16")
# Which op types int8 quantises (benchmarks/README.md, "ONNX runtimes", has the comparison):
# MatMul carries nearly all the weights of a transformer; Conv and Gemm, quantised dynamically,
# cost accuracy on the small convolutional stems for little speed.
INT8_OP_TYPES = ("MatMul",)
VOCAB = "bpe_simple_vocab_16e6.txt.gz"

log = logging.getLogger(__name__)


class NotExportable(Exception):
    """A model family this exporter does not cover; the message says why, in one line."""


@dataclass(frozen=True)
class Export:
    """A finished export: its folder and the facts recorded in its meta.json."""

    folder: Path
    meta: dict[str, Any]

    def path(self, tower: str, precision: str) -> Path:
        return self.folder / self.meta["files"][tower][precision]

    def has(self, tower: str, precision: str) -> bool:
        name = self.meta["files"].get(tower, {}).get(precision)
        return bool(name) and (self.folder / name).is_file()


def cache_root() -> Path:
    override = os.environ.get(CACHE_ENV)
    if override:
        return Path(override).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("pixseek")) / "onnx"


def export_folder(fingerprint: str, root: Path | None = None) -> Path:
    # Fingerprints hold ':' and '/'; the hash keeps two that only differ in those apart.
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", fingerprint).strip("-")[:60]
    digest = hashlib.sha256(fingerprint.encode()).hexdigest()[:8]
    return (root or cache_root()) / f"{readable}-{digest}"


def exporter_version() -> str:
    """What produced a graph: a torch upgrade may trace differently, so it re-exports.

    Read from the installed package's metadata, not by importing torch, which would cost a query
    process seconds just to learn that the cached export is current.
    """
    from importlib.metadata import version

    return f"format{EXPORT_FORMAT}-torchscript-opset{OPSET}-torch{version('torch')}"


def load_export(fingerprint: str, root: Path | None = None) -> Export | None:
    """The cached export for this fingerprint if it is complete and current, without torch.

    "Current" here means the same fingerprint and export format; `ensure_export` also checks the
    torch version.
    """
    folder = export_folder(fingerprint, root)
    meta = _read_json(folder / META)
    if meta.get("fingerprint") != fingerprint or meta.get("format") != EXPORT_FORMAT:
        return None
    export = Export(folder, meta)
    if not (export.has("image", "fp32") and export.has("text", "fp32")):
        return None
    return export


def ensure_export(spec: ModelSpec, precision: str = "fp32", root: Path | None = None) -> Export:
    """The export of `spec` holding `precision`'s graphs, exporting or quantising what is missing.

    Raises NotExportable for a family the exporter does not cover.
    """
    if precision not in PRECISIONS:
        raise PixseekError(f"unknown precision '{precision}'", f"use one of: {', '.join(PRECISIONS)}")
    fingerprint = spec.fingerprint()
    folder = export_folder(fingerprint, root)
    export = load_export(fingerprint, root)
    if export is None or export.meta.get("exporter") != exporter_version():
        # A refusal is remembered (per exporter), so torch loads the model once per run, not twice.
        refused = _read_json(folder / REFUSED)
        if refused.get("exporter") == exporter_version():
            raise NotExportable(refused.get("reason", "it did not export before"))
        try:
            export = _export(spec, fingerprint, folder)
        except NotExportable as exc:
            folder.mkdir(parents=True, exist_ok=True)
            _atomic_write(folder / REFUSED, json.dumps({"exporter": exporter_version(), "reason": str(exc)}).encode())
            raise
    if precision != "fp32" and not export.has("image", precision):
        export = _add_variant(spec, export, precision)
    return export


def _export(spec: ModelSpec, fingerprint: str, folder: Path) -> Export:
    import open_clip

    from indexer import onnx_graphs
    from indexer.model import OpenClipEncoder

    if spec.backend != "open_clip":
        raise NotExportable("the ONNX exporter covers open_clip models; transformers models run on torch")
    log.info("exporting %s to ONNX in %s", spec, folder)
    encoder = OpenClipEncoder(spec, "cpu")  # the same checks, errors and weights as the torch runtime
    model = encoder.model
    tokenizer_meta = _tokenizer_meta(encoder.tokenizer)
    trim = onnx_graphs.trimmable(model)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / META).unlink(missing_ok=True)  # from here on the folder is incomplete
    meta: dict[str, Any] = {
        "fingerprint": fingerprint,
        "format": EXPORT_FORMAT,
        "exporter": exporter_version(),
        "model": str(spec),
        "dim": encoder.dim,
        "preprocess": dataclasses.asdict(encoder.preprocess),
        "text_trim": trim,
        # CLIP's learned softmax temperature, which zero-shot tagging (search/tags.py) scales by.
        "logit_scale": float(model.logit_scale.detach().exp()),
        "tokenizer": tokenizer_meta,
        "files": {"image": {"fp32": "image.onnx"}, "text": {"fp32": "text.onnx"}},
    }
    _trace(
        onnx_graphs.ImageTower(model),
        onnx_graphs.image_sample(encoder.preprocess.size),
        "pixels",
        folder / "image.onnx",
    )
    _trace(
        onnx_graphs.TextTower(model, trim),
        onnx_graphs.text_sample(tokenizer_meta["context_length"], trim),
        "tokens",
        folder / "text.onnx",
        sequence_axis=trim,
    )
    _atomic_copy(Path(open_clip.tokenizer.default_bpe()), folder / VOCAB)
    _atomic_write(folder / META, json.dumps(meta, indent=2).encode())
    return Export(folder, meta)


def _add_variant(spec: ModelSpec, export: Export, precision: str) -> Export:
    meta = json.loads(json.dumps(export.meta))
    name = f"image.{precision}.onnx"
    if precision == "int8":
        quantize_int8(export.path("image", "fp32"), export.folder / name)
        quantize_int8(export.path("text", "fp32"), export.folder / "text.int8.onnx")
        meta["files"]["text"][precision] = "text.int8.onnx"
    else:
        from indexer import onnx_graphs
        from indexer.model import OpenClipEncoder

        encoder = OpenClipEncoder(spec, "cpu")
        sample = onnx_graphs.image_sample(encoder.preprocess.size)
        _trace(onnx_graphs.ImageTower(encoder.model.half()), sample, "pixels", export.folder / name)
        meta["files"]["text"][precision] = "text.onnx"
    meta["files"]["image"][precision] = name
    _atomic_write(export.folder / META, json.dumps(meta, indent=2).encode())
    return Export(export.folder, meta)


def quantize_int8(source: Path, target: Path, op_types: tuple[str, ...] = INT8_OP_TYPES) -> None:
    """Dynamic int8: weights stored as int8, activations quantised per batch at run time."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = _tmp_name(target)
    try:
        quantize_dynamic(str(source), str(tmp), op_types_to_quantize=list(op_types), weight_type=QuantType.QInt8)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _tokenizer_meta(tokenizer: object) -> dict[str, Any]:
    """What indexer/clip_tokenizer.py needs to give the same ids as open_clip's tokenizer."""
    from open_clip.tokenizer import SimpleTokenizer

    if type(tokenizer) is not SimpleTokenizer:
        raise NotExportable(f"its tokenizer ({type(tokenizer).__name__}) has no torch-free twin in pixseek")
    if tokenizer.reduction_fn is not None or len(tokenizer.all_special_ids) != 2:
        raise NotExportable("its tokenizer uses special tokens or a reduction pixseek's twin lacks")
    clean = next(
        (name for name in ("lower", "whitespace", "canonicalize") if tokenizer.clean_fn.__name__ == f"_clean_{name}"),
        None,
    )
    if clean is None:
        raise NotExportable(f"its tokenizer cleans text with {tokenizer.clean_fn.__name__}")
    return {
        "kind": "clip-bpe",
        "context_length": int(tokenizer.context_length),
        "clean": clean,
        "vocab": VOCAB,
        "sot": tokenizer.sot_token_id,
        "eot": tokenizer.eot_token_id,
    }


def _trace(module: torch.nn.Module, sample: torch.Tensor, name: str, target: Path, sequence_axis: bool = False) -> None:
    """torch.onnx's TorchScript exporter: the dynamo one needs onnxscript, which pixseek does not ship."""
    import warnings

    import torch

    axes = {0: "batch", 1: "sequence"} if sequence_axis else {0: "batch"}
    tmp = _tmp_name(target)
    # Under no_grad, MultiheadAttention takes a fused kernel that has no ONNX form.
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the deprecation notice and tracer warnings are ours to handle
            torch.onnx.export(
                module.eval(),
                (sample,),
                str(tmp),
                input_names=[name],
                output_names=["vectors"],
                dynamic_axes={name: axes, "vectors": {0: "batch"}},
                opset_version=OPSET,
                dynamo=False,
            )
        _save_weights_beside(tmp, target)
    except (RuntimeError, torch.onnx.errors.OnnxExporterError) as exc:
        raise NotExportable(f"torch.onnx could not export it ({str(exc).splitlines()[0][:160]})") from exc
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        tmp.unlink(missing_ok=True)


def _save_weights_beside(source: Path, target: Path) -> None:
    """The graph at `target`, its weights in `target.data`, both replaced atomically.

    ONNX Runtime maps a weights file instead of parsing the weights out of one protobuf: for
    ViT-B-32's text tower that is most of a cold text query's start (benchmarks/runtimes.py).
    """
    import tempfile

    import onnx

    model = onnx.load(str(source))
    weights = target.with_name(target.name + ".data")
    # Written under the final names in a private folder (the graph records the weights' name),
    # then moved in, weights first: a reader never sees a graph without its weights.
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".export-") as tmp:
        onnx.save_model(
            model,
            str(Path(tmp) / target.name),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=weights.name,
            size_threshold=1024,
        )
        os.replace(Path(tmp) / weights.name, weights)
        os.replace(Path(tmp) / target.name, target)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _tmp_name(target: Path) -> Path:
    # Per process: two processes exporting the same model each finish their own file.
    return target.with_name(f".{target.name}.{os.getpid()}.tmp")


def _atomic_write(target: Path, data: bytes) -> None:
    tmp = _tmp_name(target)
    try:
        tmp.write_bytes(data)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _atomic_copy(source: Path, target: Path) -> None:
    tmp = _tmp_name(target)
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
