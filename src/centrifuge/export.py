"""``centrifuge export``: the inference network as ONNX or as a ``torch.export`` program (``.pt2``).

Both are built from :func:`centrifuge.portable.portable_model` (BatchNorm folded into the convolutions, the
training-only thin layers not involved), with every size dynamic: batch, frames ``T``, height ``H`` and
width ``W`` (each >= 1, no multiple of the network's stride needed). Input ``video``: float32
``[B, 3, T, H, W]`` in [-1, 1]; output ``layers``: float32 ``[B, n, 3, T, H, W]``, as the PyTorch model.

* ONNX: the TorchDynamo-based exporter (``torch.onnx.export(dynamo=True)``, needs ``onnx`` and
  ``onnxscript``), default opset :data:`ONNX_OPSET`, weights inside the file. The model's config and training
  clip geometry are in the file's metadata (``centrifuge_config``, ``centrifuge_info``).
* ``.pt2``: ``torch.export.save``; its graph calls the ``centrifuge::`` operators, so loading it needs
  ``import centrifuge.portable`` first (the ONNX file needs nothing of this package).
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .checkpoint import atomic_write
from .errors import CentrifugeError
from .losses import psnr_from_mse
from .portable import onnx_translations, portable_model

__all__ = ["ONNX_OPSET", "max_opset", "require", "export_program", "export_onnx", "save_program", "compare"]

#: Default ONNX opset; the exporter writes 18 and later.
ONNX_OPSET = 18
INPUT_NAME, OUTPUT_NAME = "video", "layers"


def max_opset() -> int:
    """The newest ONNX opset this PyTorch's exporter writes."""
    try:
        from torch.onnx import _constants
    except ImportError:  # a PyTorch that moved it: let the exporter judge
        return 10**6
    return int(getattr(_constants, "ONNX_MAX_OPSET", 10**6))


def require(*modules: str, extra: str = "onnx") -> None:
    """One clear error when an optional package is missing."""
    missing = [m for m in modules if find_spec(m) is None]
    if missing:
        raise CentrifugeError(f"this needs the optional package(s) {', '.join(missing)}: "
                              f"pip install \"visual-centrifuge[{extra}]\"")


def _example() -> Tensor:
    # Batch 2: a size of 1 in the example would be fixed to 1 by the tracer.
    return torch.rand(2, 3, 10, 40, 48, generator=torch.Generator().manual_seed(0)) * 2 - 1


@contextmanager
def _quiet() -> Iterator[None]:
    """Keep the exporters' progress notes and deprecation warnings off the user's terminal (errors still raise)."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def export_program(model: nn.Module) -> torch.export.ExportedProgram:
    """``model`` (a Predictor or PredictorCorrector) as a ``torch.export`` program with dynamic ``B, T, H, W``."""
    from torch.export import Dim
    from torch.fx.experimental import _config as fx_config

    net = portable_model(model)
    dims = {0: Dim("batch", min=1), 2: Dim("frames", min=1), 3: Dim("height", min=1), 4: Dim("width", min=1)}
    # Without it the tracer assumes each size may be 1 and asks for a guard against that at every layer.
    with fx_config.patch(backed_size_oblivious=True), torch.no_grad(), _quiet():
        return torch.export.export(net, (_example(),), dynamic_shapes={"x": dims})


def _strip_pool_indices(onnx_model: Any) -> None:
    """Drop ``MaxPool``'s unused second output (the indices), which ONNX Runtime would otherwise compute."""
    for node in onnx_model.graph:
        if node.op_type == "MaxPool" and len(node.outputs) == 2 and not node.outputs[1].uses():
            node.resize_outputs(1)


def _name_dims(onnx_model: Any) -> None:
    """Call the input's symbolic sizes batch, frames, height, width (the tracer's names are s0, s53...)."""
    import onnx_ir as ir

    video = onnx_model.graph.inputs[0]
    names = {str(d): n for d, n in zip(video.shape, ("batch", "", "frames", "height", "width"), strict=True) if n}
    values = [*onnx_model.graph.inputs, *(v for node in onnx_model.graph for v in node.outputs)]
    for value in values:
        if value.shape is not None:
            value.shape = ir.Shape([names.get(str(d), d) if not isinstance(d, int) else d for d in value.shape])


def export_onnx(model: nn.Module, path: str | Path, opset: int = ONNX_OPSET,
                metadata: dict[str, Any] | None = None) -> None:
    """Write ``model`` as ONNX to ``path`` (through a temporary file: nothing half-written under ``path``)."""
    require("onnx", "onnxscript")
    program = export_program(model)
    with _quiet():
        onnx_program = torch.onnx.export(program, dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
                                         output_names=[OUTPUT_NAME], custom_translation_table=onnx_translations(),
                                         verbose=False)
    _strip_pool_indices(onnx_program.model)
    _name_dims(onnx_program.model)
    for key, value in (metadata or {}).items():
        onnx_program.model.metadata_props[key] = value if isinstance(value, str) else json.dumps(value)
    atomic_write(Path(path), lambda tmp: onnx_program.save(tmp, external_data=False))


def save_program(model: nn.Module, path: str | Path) -> None:
    """Write ``model`` as a ``torch.export`` program (``.pt2``) to ``path``, through a temporary file."""
    program = export_program(model)
    with _quiet():  # the temporary file's name does not end in .pt2, which torch.export.save remarks on
        atomic_write(Path(path), lambda tmp: torch.export.save(program, tmp))


def compare(reference: Tensor, output: Tensor) -> dict[str, float]:
    """Largest absolute difference and PSNR of ``output`` (dB, pixels mapped to [0, 1] and at most 100 dB, as
    :func:`centrifuge.losses.psnr`)."""
    if reference.shape != output.shape:
        raise ValueError(f"shapes differ: {tuple(reference.shape)} and {tuple(output.shape)}")
    diff = (reference.double() - output.double())
    mse = float(diff.square().mean())  # of pixels in [-1, 1]: a quarter of it in [0, 1]
    return {"max_abs": float(diff.abs().max()), "psnr_db": float(psnr_from_mse(torch.tensor(mse / 4.0)))}
