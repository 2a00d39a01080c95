"""Inference backends other than PyTorch, with the PyTorch model's call.

:class:`OnnxRuntimeModel` runs an exported ONNX file (``centrifuge export``), or exports a PyTorch model on the
fly, with ONNX Runtime on the CPU. It takes and returns what :class:`centrifuge.inference.InferenceModel`
does: ``[B, 3, T, H, W]`` in [-1, 1] -> float32 ``[B, n, 3, T, H, W]`` (on the CPU), and has its ``dtype``,
so separation can use either. :func:`choose_backend` and :func:`load_onnx` are how ``separate`` and
``evaluate`` pick and load it (``--backend``), :func:`run_exported` runs a written ``.onnx`` or ``.pt2`` file,
and :func:`check_export` compares one with the model it came from.

PyTorch stays the default backend: on the CPU it was measured here, ONNX Runtime ran the model in fp32 within
noise of PyTorch's fp32 and slower than PyTorch's default there, bf16 on AMX (docs/performance.md).
"""

from __future__ import annotations

import json
import os
import tempfile
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .errors import CentrifugeError, CheckpointError
from .export import INPUT_NAME, OUTPUT_NAME, compare, export_onnx, require
from .model import ModelConfig

__all__ = ["BACKENDS", "OnnxRuntimeModel", "choose_backend", "load_onnx", "run_exported", "check_export"]

#: The ``--backend`` choices; the first is the default for weights (``.safetensors``, run folders, ``default``).
BACKENDS = ("pytorch", "onnxruntime")


class OnnxRuntimeModel:
    """An ONNX model run by ONNX Runtime's CPU provider, called like the PyTorch model.

    Args:
        source: an ``.onnx`` file or its bytes.
        threads: intra-op threads (default: ``torch.get_num_threads()``, so both backends use the same cores).
    """

    dtype = torch.float32

    def __init__(self, source: str | Path | bytes, threads: int | None = None) -> None:
        require("onnxruntime")
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if isinstance(source, Path):
            source = str(source)
        self.session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        meta = self.session.get_modelmeta().custom_metadata_map
        #: the model's config and training geometry, when the file was written by ``centrifuge export``
        self.info: dict[str, Any] = {k: json.loads(meta[k]) for k in ("centrifuge_config", "centrifuge_info")
                                     if k in meta}

    @classmethod
    def from_model(cls, model: nn.Module, threads: int | None = None) -> OnnxRuntimeModel:
        """Export ``model`` (a Predictor or PredictorCorrector) and load it; ``model`` is left as it was."""
        with tempfile.TemporaryDirectory(prefix="centrifuge-onnx-") as folder:
            path = Path(folder) / "model.onnx"
            export_onnx(model, path)
            return cls(path.read_bytes(), threads)

    def __call__(self, x: Tensor, output_dtype: torch.dtype | None = torch.float32) -> Tensor:
        """``x``: ``[B, 3, T, H, W]`` in [-1, 1] (any device or float dtype) -> float32 ``[B, n, 3, T, H, W]``
        on the CPU (``output_dtype`` is accepted for :class:`~centrifuge.inference.InferenceModel`'s call)."""
        if x.dim() != 5 or x.shape[1] != 3:
            raise ValueError(f"expected [B, 3, T, H, W], got {tuple(x.shape)}")
        array = x.detach().to("cpu", torch.float32).contiguous().numpy()
        y = torch.from_numpy(self.session.run([OUTPUT_NAME], {INPUT_NAME: array})[0])
        return y if output_dtype is None else y.to(output_dtype)


def is_onnx_file(model: object) -> bool:
    """Whether ``model`` names an ``.onnx`` file (by its suffix), as opposed to weights or a module."""
    return isinstance(model, (str, os.PathLike)) and Path(model).suffix.lower() == ".onnx"


def choose_backend(model: object, backend: str | None) -> str:
    """The backend that runs ``model``: ``backend``, or when None, ``onnxruntime`` for an ``.onnx`` file (nothing
    else runs one) and ``pytorch`` for anything else. Refuses a pair that cannot work, in one line."""
    if backend is None:
        return "onnxruntime" if is_onnx_file(model) else "pytorch"
    if backend not in BACKENDS:
        raise CentrifugeError(f"unknown backend {backend!r}: choose {' or '.join(BACKENDS)}")
    if backend == "pytorch" and is_onnx_file(model):
        raise CentrifugeError(f"{model} is an ONNX file: run it with --backend onnxruntime, or give PyTorch the "
                              "weights it was exported from (a .safetensors file or a run folder)")
    if backend == "onnxruntime" and not is_onnx_file(model):
        # Exporting here would add minutes to the run (and onnxscript to the needs) for no speed (performance.md).
        name = "default" if model is None else model if isinstance(model, (str, os.PathLike)) else "MODEL"
        raise CentrifugeError(f"--backend onnxruntime runs an exported file: run `centrifuge export {name} -o "
                              "model.onnx` once, then pass --model model.onnx")
    return backend


def load_onnx(path: str | os.PathLike[str], device: str = "cpu", precision: str = "fp32",
              threads: int | None = None) -> tuple[OnnxRuntimeModel, dict[str, Any]]:
    """An ``.onnx`` file written by ``centrifuge export``, ready to run, and its info as
    :func:`centrifuge.checkpoint.load_model` gives it (``config``, ``path`` and the saved metadata, training
    clip geometry included). ONNX Runtime runs here on the CPU in fp32 only: other requests are refused."""
    if device not in ("auto", "cpu"):
        raise CentrifugeError(f"--backend onnxruntime runs on the CPU only (got --device {device})")
    if precision not in ("auto", "fp32"):
        raise CentrifugeError(f"--backend onnxruntime runs in fp32 only (got --precision {precision})")
    require("onnxruntime")
    if not Path(path).is_file():
        raise CheckpointError(f"no such model: {path}")
    try:
        model = OnnxRuntimeModel(Path(path), threads)
    except Exception as e:  # onnxruntime's own exception types, which differ between its versions
        raise CheckpointError(f"not an ONNX model ONNX Runtime can load: {path} "
                              f"({str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__})"
                              ) from e
    if "centrifuge_config" not in model.info:
        raise CheckpointError(f"{path} has no centrifuge metadata (centrifuge_config): write it with "
                              "`centrifuge export`")
    try:
        ModelConfig.from_dict(model.info["centrifuge_config"])  # the architecture the callers rebuild from it
    except (TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{path}: its centrifuge_config is not a model config of this version ({e})") from e
    info = dict(model.info.get("centrifuge_info") or {})
    return model, {"config": model.info["centrifuge_config"], "path": str(path), **info}


def run_exported(path: str | Path, x: Tensor) -> Tensor | None:
    """Run a written ``.onnx`` (ONNX Runtime; None when it is not installed) or ``.pt2`` file on ``x``."""
    path = Path(path)
    if path.suffix.lower() == ".pt2":
        with torch.no_grad():
            return torch.export.load(str(path)).module()(x)
    if find_spec("onnxruntime") is None:
        return None
    return OnnxRuntimeModel(path)(x)


def check_export(model: nn.Module, path: str | Path, info: dict[str, Any] | None = None,
                 seed: int = 0) -> dict[str, Any] | None:
    """Compare the written file with ``model`` on a random clip at the model's training size (16x112x112
    when unknown): :func:`compare`'s figures and the clip's shape; None if ONNX Runtime is not installed."""
    train = (info or {}).get("train") or {}
    frames, size = int(train.get("frames", 16)), int(train.get("size", 112))
    x = torch.rand(1, 3, frames, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    out = run_exported(path, x)
    if out is None:
        return None
    with torch.no_grad():
        reference = model.eval()(x)
    return {**compare(reference, out), "shape": list(x.shape)}
