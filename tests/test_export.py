"""``centrifuge export``: ONNX and torch.export files with dynamic sizes, their parity with PyTorch, refusals."""

from __future__ import annotations

import contextlib
import io
import shutil
from pathlib import Path

import pytest
import torch
from helpers import TINY, make_frames, tiny_model

from centrifuge.backends import check_export
from centrifuge.checkpoint import save_weights
from centrifuge.cli import main
from centrifuge.export import compare, export_onnx, save_program
from centrifuge.model import ModelConfig
from centrifuge.portable import portable_model

# Sizes that are not multiples of the stride, odd and even, and a batch of two.
SHAPES = [(2, 3, 7, 45, 37), (1, 3, 16, 32, 64), (1, 3, 1, 9, 10)]

def _real_like(shape: tuple[int, ...]) -> torch.Tensor:
    b, _, t, h, w = shape
    frames = [torch.from_numpy(make_frames(t, w, h, seed=i)) for i in range(b)]  # [T, H, W, 3] uint8
    return torch.stack([f.permute(3, 0, 1, 2) for f in frames]).float() / 127.5 - 1


def _inputs() -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    return ([(f"random{s}", torch.rand(s, generator=g) * 2 - 1) for s in SHAPES]
            + [(f"video{s}", _real_like(s)) for s in SHAPES[:2]])


def _assert_parity(model: torch.nn.Module, run) -> None:  # noqa: ANN001
    for name, x in _inputs():
        with torch.no_grad():
            reference = model(x)
        out = run(x)
        figures = compare(reference, out)
        assert reference.abs().max() > 0.1, name  # the model computes something
        assert figures["max_abs"] < 1e-4 and figures["psnr_db"] > 90, (name, figures)


@pytest.fixture(scope="module")
def onnx_files(tmp_path_factory):
    """The predictor written by ``export_onnx``, the corrector by the command (its output kept): each model is
    exported once for all the tests below, since exporting takes seconds."""
    folder = tmp_path_factory.mktemp("onnx")
    models = {"predictor": tiny_model(False), "corrector": tiny_model(True, residual=False, seed=1)}
    export_onnx(models["predictor"], folder / "predictor.onnx")
    save_weights(folder / "corrector.safetensors", models["corrector"],
                 ModelConfig(**TINY, residual=False, corrector=True), {"train": {"frames": 8, "size": 40}})
    said = io.StringIO()
    with contextlib.redirect_stdout(said):
        status = main(["export", str(folder / "corrector.safetensors"), "-o", str(folder / "out" / "corrector.onnx")])
    shutil.move(folder / "out" / "corrector.onnx", folder / "corrector.onnx")
    return folder, models, (status, said.getvalue())


def test_portable_model_matches_the_model_in_pytorch():
    model = tiny_model(True)
    net = portable_model(model)
    for _, x in _inputs()[:3]:
        with torch.no_grad():
            assert compare(model(x), net(x))["max_abs"] < 1e-5
    assert any(isinstance(m, torch.nn.BatchNorm3d) for m in model.modules())  # the model is left as it was


@pytest.mark.parametrize("name", ["predictor", "corrector"])
def test_onnx_matches_pytorch_at_any_size(onnx_files, name):
    from centrifuge.backends import OnnxRuntimeModel

    folder, models, _ = onnx_files
    backend = OnnxRuntimeModel(folder / f"{name}.onnx", threads=1)
    _assert_parity(models[name], backend)


def test_onnx_axes_are_dynamic_and_pools_have_one_output(onnx_files):
    import onnx

    folder, _, _ = onnx_files
    graph = onnx.load(str(folder / "predictor.onnx")).graph
    (video,), (layers,) = graph.input, graph.output
    def dims(value):  # noqa: ANN001, ANN202
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    assert dims(video) == ["batch", 3, "frames", "height", "width"]
    assert dims(layers) == ["batch", 2, 3, "frames", "height", "width"]
    assert all(len(n.output) == 1 for n in graph.node if n.op_type == "MaxPool")


def test_torch_export_program_matches_pytorch(tmp_path):
    model = tiny_model(False)
    path = tmp_path / "model.pt2"
    save_program(model, path)
    program = torch.export.load(str(path)).module()
    _assert_parity(model, lambda x: program(x))


@pytest.mark.parametrize("tone_curve", [False, True])
def test_a_tone_grid_model_exports_with_dynamic_sizes(tmp_path, tone_curve):
    """The tone grid's upsampling (matrix products in eager PyTorch) is one Resize in the exported graph."""
    from centrifuge.backends import OnnxRuntimeModel
    from centrifuge.model import Predictor

    torch.manual_seed(0)
    model = Predictor(2, 3, 0.125, "Mixed_4f", tone_grid=8, tone_curve=tone_curve)
    # (parity is checked in absolute terms: a quadratic term this large would widen the layers' range severalfold)
    torch.nn.init.normal_(model.decoder.head.weight, std=0.3 if tone_curve else 0.5)
    model.eval()
    export_onnx(model, tmp_path / "grid.onnx")
    backend = OnnxRuntimeModel((tmp_path / "grid.onnx").read_bytes())
    _assert_parity(model, lambda x: backend(x))
    save_program(model, tmp_path / "grid.pt2")
    program = torch.export.load(str(tmp_path / "grid.pt2")).module()
    _assert_parity(model, lambda x: program(x))


def test_backend_has_the_inference_models_call(onnx_files):
    from centrifuge.backends import OnnxRuntimeModel

    folder, models, _ = onnx_files
    backend = OnnxRuntimeModel((folder / "predictor.onnx").read_bytes())
    x = torch.rand(1, 3, 4, 16, 24, dtype=torch.float64) * 2 - 1
    with torch.inference_mode():  # as separation calls its model
        y = backend(x)
    assert y.dtype == torch.float32 and y.shape == (1, 2, 3, 4, 16, 24) and backend.dtype == torch.float32
    assert backend(x, output_dtype=None).dtype == torch.float32
    with pytest.raises(ValueError, match="expected"):
        backend(x[:, :2])


def test_export_command_writes_a_checked_corrector(onnx_files):
    folder, models, (status, said) = onnx_files
    assert status == 0
    assert "wrote " in said and "checked on a random clip [1, 3, 8, 40, 40]" in said
    assert sorted(p.name for p in (folder / "out").iterdir()) == []  # no temporary file was left beside it
    figures = check_export(models["corrector"], folder / "corrector.onnx", {"train": {"frames": 5, "size": 33}})
    assert figures["max_abs"] < 1e-4 and figures["shape"] == [1, 3, 5, 33, 33]


def _one_line_error(capsys) -> str:  # noqa: ANN001
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_export_refuses_to_replace_a_file(tmp_path, capsys):
    out = tmp_path / "model.onnx"
    out.write_text("mine")
    assert main(["export", "default", "-o", str(out)]) == 2
    assert "exists (pass --overwrite" in _one_line_error(capsys)
    assert out.read_text() == "mine"


@pytest.mark.parametrize(("args", "says"), [
    (["export", "{tmp}/missing.safetensors", "-o", "{tmp}/m.onnx"], "no such model"),
    (["export", "{tmp}/bad.safetensors", "-o", "{tmp}/m.onnx"], "not a centrifuge model"),
    (["export", "default", "-o", "{tmp}/m.tflite"], "unknown output format"),
    (["export", "default", "-o", "{tmp}/m.pt2", "--opset", "18"], "--opset is for ONNX"),
    (["export", "default", "-o", "{tmp}/m.onnx", "--opset", "9"], "must be at least 18"),
    (["export", "default", "-o", "{tmp}/m.onnx", "--opset", "99"], "writes opsets 18 to"),
])
def test_export_refuses_bad_input_in_one_line(tmp_path, capsys, args, says):
    (tmp_path / "bad.safetensors").write_text("not weights")
    assert main([a.format(tmp=tmp_path) for a in args]) == 2
    assert says in _one_line_error(capsys)
    assert not (tmp_path / "m.onnx").exists()


def test_export_names_the_missing_optional_package(tmp_path, capsys, monkeypatch):
    import centrifuge.export as export

    real = export.find_spec
    monkeypatch.setattr(export, "find_spec", lambda name: None if name == "onnxscript" else real(name))
    assert main(["export", "default", "-o", str(tmp_path / "m.onnx")]) == 2
    err = _one_line_error(capsys)
    assert "onnxscript" in err and "visual-centrifuge[onnx]" in err
    assert list(tmp_path.iterdir()) == []


def test_a_failed_export_leaves_nothing(tmp_path, monkeypatch):
    import centrifuge.export as export

    def fail(_program, path):
        Path(path).write_bytes(b"half a file")
        raise RuntimeError("exporter broke")

    monkeypatch.setattr(export, "export_program", lambda _model: object())
    monkeypatch.setattr(torch.export, "save", fail)
    with pytest.raises(RuntimeError, match="exporter broke"):
        save_program(tiny_model(False), tmp_path / "model.pt2")
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_a_model_with_non_finite_weights(tmp_path, capsys):
    model = tiny_model(False)
    model.decoder.head.bias.data[0] = float("nan")
    save_weights(tmp_path / "nan.safetensors", model, ModelConfig(**TINY, residual=True))
    assert main(["export", str(tmp_path / "nan.safetensors"), "-o", str(tmp_path / "m.onnx")]) == 2
    assert "non-finite weights" in _one_line_error(capsys)
    assert not (tmp_path / "m.onnx").exists()
