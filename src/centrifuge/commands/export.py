"""``centrifuge export``: write a model as ONNX or as a ``torch.export`` program, and check it against PyTorch."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..errors import CentrifugeError
from ._common import int_at_least, refuse_existing

_DESCRIPTION = """\
Write the inference network (BatchNorm folded; predictor, or predictor and corrector(s)) to a file another
runtime can load. The format follows the output's suffix: .onnx (ONNX, the TorchDynamo-based exporter, opset
18 by default, IR version 10, weights inside the file; needs the optional packages onnx and onnxscript:
pip install "visual-centrifuge[onnx]") or .pt2 (torch.export; loading it needs `import centrifuge.portable`,
which registers the three operators of TF "SAME" padding it calls).
Input `video`: float32 [B, 3, T, H, W] in [-1, 1]; output `layers`: float32 [B, n, 3, T, H, W]. Every size
is dynamic: any B, T, H, W >= 1 (no multiple of the network's stride, 8 frames and 32 pixels for Mixed_5c,
is needed: convolutions and pools use ONNX's auto_pad SAME_UPPER, which is TensorFlow's "SAME"). The model's
config and training clip size are in the ONNX file's metadata (centrifuge_config, centrifuge_info).
After writing, the file is run once on a random clip at the model's training size and compared with PyTorch
(largest absolute difference and PSNR; ONNX through onnxruntime when it is installed)."""


def add_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a model as ONNX or torch.export (.pt2) with dynamic sizes",
                       description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL",
                   help="a run folder, a .safetensors file, or `default` for the packaged model")
    p.add_argument("-o", "--output", required=True, help="the file to write: NAME.onnx or NAME.pt2")
    p.add_argument("--opset", type=int_at_least(18), default=None,
                   help="ONNX opset, 18 up to what this PyTorch writes (23 for 2.13; default 18)")
    p.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                   help="run the written file once against PyTorch (default: on)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    p.set_defaults(func=run)


def _format(output: Path, opset: int | None) -> str:
    fmt = output.suffix.lower().lstrip(".")
    if fmt not in ("onnx", "pt2"):
        raise CentrifugeError(f"unknown output format {output.suffix or '(no suffix)'!r}: "
                              "name the output NAME.onnx or NAME.pt2")
    if opset is not None and fmt != "onnx":
        raise CentrifugeError("--opset is for ONNX output only")
    from ..export import max_opset

    if opset is not None and opset > max_opset():
        raise CentrifugeError(f"--opset {opset}: this PyTorch writes opsets 18 to {max_opset()}")
    return fmt


def _saved_info(info: dict[str, Any]) -> dict[str, Any]:
    """The ONNX file's ``centrifuge_info``: the weights' saved metadata (step, preset...), and the training clip
    geometry resolved as separation resolves it (a run folder's config.json included), since separating with
    the file has only the file to go by."""
    from ..separation.runner import training_geometry

    frames, size = training_geometry(info)
    saved = {k: v for k, v in info.items() if k not in ("path", "config")}
    saved["train"] = {k: v for k, v in (("frames", frames), ("size", size)) if v is not None}
    return saved


def run(args: argparse.Namespace) -> int:
    from ..backends import check_export
    from ..checkpoint import load_model
    from ..export import ONNX_OPSET, export_onnx, require, save_program

    output = Path(args.output)
    fmt = _format(output, args.opset)
    refuse_existing(output, args.overwrite)
    if fmt == "onnx":
        require("onnx", "onnxscript")  # before loading anything
    model, info = load_model(args.model)
    if fmt == "onnx":
        export_onnx(model, output, args.opset or ONNX_OPSET,
                    metadata={"centrifuge_config": info["config"], "centrifuge_info": _saved_info(info)})
    else:
        save_program(model, output)
    print(f"wrote {output} ({output.stat().st_size / 1e6:.1f} MB)")
    if args.check:
        figures = check_export(model, output, info)
        if figures is None:
            print("not checked: onnxruntime is not installed (pip install \"visual-centrifuge[onnx]\")")
        else:
            print(f"checked on a random clip {figures['shape']}: largest absolute difference "
                  f"{figures['max_abs']:.2e}, PSNR {figures['psnr_db']:.1f} dB against PyTorch")
    return 0
