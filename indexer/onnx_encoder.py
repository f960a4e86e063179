"""`OnnxEncoder`: the Encoder's surface (indexer/model.py) over ONNX Runtime sessions.

Runs the graphs indexer/onnx_export.py writes: on a CPU with ONNX Runtime's CPU provider (or
OpenVINO's, where the optional onnxruntime-openvino is installed) in fp32 or with int8 weights; on
an NVIDIA GPU with the TensorRT and CUDA providers in fp16. Text queries tokenise with
indexer/clip_tokenizer.py, so a process that only embeds queries never imports torch once the
model is exported.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from indexer.errors import PixseekError
from indexer.onnx_export import Export, ensure_export, load_export
from indexer.preprocess import Preprocess

if TYPE_CHECKING:
    from PIL import Image

    from indexer.model import ModelSpec

log = logging.getLogger(__name__)

GPU_PRECISION = "fp16"
CPU_PRECISIONS = ("fp32", "int8")
GPU_HINT = "install onnxruntime-gpu (in place of onnxruntime) for --runtime onnx on a GPU, or use --runtime torch"


def onnx_providers() -> list[str]:
    import onnxruntime

    return onnxruntime.get_available_providers()


def pick_onnx_device(requested: str | None) -> str:
    has_cuda = "CUDAExecutionProvider" in onnx_providers()
    if requested is None:
        return "cuda" if has_cuda else "cpu"
    if requested.startswith("cuda") and not has_cuda:
        raise PixseekError("--device cuda was asked for, but this ONNX Runtime has no CUDA provider", GPU_HINT)
    return requested


def session_providers(device: str, cache: Path) -> list[Any]:
    """Provider list, best first; ONNX Runtime runs each node on the first one that takes it."""
    available = onnx_providers()
    if device.startswith("cuda"):
        gpu = int(device.partition(":")[2] or 0)
        chosen: list[Any] = []
        if "TensorrtExecutionProvider" in available:
            # Engines take minutes to build: cached beside the graphs, rebuilt only when they change.
            chosen.append(
                (
                    "TensorrtExecutionProvider",
                    {
                        "device_id": gpu,
                        "trt_fp16_enable": True,
                        "trt_engine_cache_enable": True,
                        "trt_engine_cache_path": str(cache / "tensorrt"),
                        "trt_timing_cache_enable": True,
                    },
                )
            )
        chosen.append(("CUDAExecutionProvider", {"device_id": gpu, "cudnn_conv_algo_search": "HEURISTIC"}))
        return [*chosen, "CPUExecutionProvider"]
    if "OpenVINOExecutionProvider" in available:
        return [("OpenVINOExecutionProvider", {"device_type": "CPU"}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxEncoder:
    """Embeds images and texts into the same L2-normalised space as the torch Encoder of the model."""

    runtime = "onnx"

    def __init__(
        self,
        spec: ModelSpec,
        device: str | None = None,
        precision: str | None = None,
        export: Export | None = None,
        text_precision: str | None = None,
    ) -> None:
        """`text_precision`: the text tower's, when it is not `precision` (indexer/runtime.py decides)."""
        self.spec = spec
        self.device = pick_onnx_device(device)
        gpu = self.device.startswith("cuda")
        self.precision = precision or (GPU_PRECISION if gpu else "fp32")
        self.text_precision = text_precision or self.precision
        allowed = (GPU_PRECISION, "fp32") if gpu else CPU_PRECISIONS
        for asked in {self.precision, self.text_precision}:
            if asked not in allowed:
                raise PixseekError(
                    f"--precision {asked} is not available on {self.device}", f"use one of: {', '.join(allowed)}"
                )
        # The cached export is read without torch; only a missing or stale one brings torch in.
        self.export = export or self._cached() or ensure_export(spec, self.precision)
        meta = self.export.meta
        self.dim = int(meta["dim"])
        self.preprocess = Preprocess.from_dict(meta["preprocess"])
        self._sessions: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._tokenizer: Any = None
        # On a GPU a batch computes on a worker thread (ONNX Runtime releases the GIL), so the
        # indexer's submit-then-collect overlaps it with the host's work, as Encoder does with CUDA streams.
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="onnx") if gpu else None

    def _cached(self) -> Export | None:
        export = load_export(self.spec.fingerprint())
        return export if export is not None and export.has("image", self.precision) else None

    def fingerprint(self) -> str:
        return self.spec.fingerprint()

    def session(self, tower: str) -> Any:
        """The tower's session, made on first use: a text query never loads the image graph."""
        with self._lock:
            if tower not in self._sessions:
                import onnxruntime

                options = onnxruntime.SessionOptions()
                options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
                # Idle threads would otherwise spin for work, taking the cores the decoding workers
                # (and any torch model in the same process) need between two batches.
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
                path = self.export.path(tower, self.text_precision if tower == "text" else self.precision)
                self._sessions[tower] = onnxruntime.InferenceSession(
                    str(path), options, providers=session_providers(self.device, self.export.folder)
                )
                used = self._sessions[tower].get_providers()
                if self.device.startswith("cuda") and "CUDAExecutionProvider" not in used:
                    log.warning("ONNX Runtime could not start its CUDA provider; %s runs on %s", tower, used[0])
            return self._sessions[tower]

    def encode_pixels(self, pixels: Any) -> np.ndarray:
        return self.submit_pixels(pixels).result()

    def submit_pixels(self, pixels: Any) -> Future[np.ndarray]:
        """uint8 (N, S, S, 3) pixels, a numpy array or a torch tensor (a CUDA one stays on the GPU)."""
        if self._worker is not None:
            return self._worker.submit(self._run_pixels, pixels)
        done: Future[np.ndarray] = Future()
        done.set_result(self._run_pixels(pixels))
        return done

    def _run_pixels(self, pixels: Any) -> np.ndarray:
        session = self.session("image")
        if isinstance(pixels, np.ndarray):
            return session.run(None, {"pixels": np.ascontiguousarray(pixels, dtype=np.uint8)})[0]
        if pixels.device.type != "cuda":
            return session.run(None, {"pixels": pixels.contiguous().numpy()})[0]
        # Decoded on the GPU (indexer/gpu_decode.py): bound in place, never copied to the host and back.
        pixels = pixels.contiguous()
        binding = session.io_binding()
        binding.bind_input("pixels", "cuda", pixels.device.index or 0, np.uint8, list(pixels.shape), pixels.data_ptr())
        binding.bind_output("vectors", "cpu")
        session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def encode_images(self, images: list[Image.Image]) -> np.ndarray:
        from indexer.decode import to_model_input

        return self.encode_pixels(np.stack([to_model_input(img, self.preprocess) for img in images]))

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        tokens = self.tokenizer(texts)
        if self.export.meta["text_trim"]:
            # Exact for causal, end-of-text-pooled towers (onnx_export._trimmable): padding only trails.
            used = int(np.flatnonzero(tokens.any(axis=0)).max()) + 1
            tokens = tokens[:, :used]
        return self.session("text").run(None, {"tokens": tokens})[0]

    @property
    def logit_scale(self) -> float:
        return float(self.export.meta["logit_scale"])

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from indexer.clip_tokenizer import ClipTokenizer

            cfg = self.export.meta["tokenizer"]
            self._tokenizer = ClipTokenizer(self.export.folder / cfg["vocab"], cfg["context_length"], cfg["clean"])
        return self._tokenizer
