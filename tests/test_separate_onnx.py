"""``--backend onnxruntime``: separate and evaluate with a file written by ``centrifuge export``, through the same
pipeline as PyTorch, and the refusals around it."""

from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
from helpers import TINY, make_video, tiny_model

from centrifuge.checkpoint import save_weights
from centrifuge.cli import main
from centrifuge.model import ModelConfig
from centrifuge.separate import separate

# Windows of 8 frames at 32 pixels, as the weights record their training clips; the video is larger than
# twice that, so it is processed resized and the layers composed back (the whole pipeline).
TRAIN = {"frames": 8, "size": 32}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Tiny weights, the ONNX file `centrifuge export` writes from them (once: it takes seconds) and a video."""
    folder = tmp_path_factory.mktemp("ort")
    save_weights(folder / "tiny.safetensors", tiny_model(), ModelConfig(**TINY), {"train": TRAIN, "step": 7})
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["export", str(folder / "tiny.safetensors"), "-o", str(folder / "tiny.onnx"), "--no-check"]) == 0
    make_video(folder / "clip.mp4", frames=20, width=80, height=72, seed=3)
    make_video(folder / "other.mp4", frames=20, width=80, height=72, seed=5)
    return folder


def _one_line_error(capsys) -> str:  # noqa: ANN001
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_onnxruntime_layers_match_pytorch_fp32(files):
    common = dict(out_dir=None, layers="all", device="cpu", progress=False)
    torch_run = separate(files / "clip.mp4", model=files / "tiny.safetensors", precision="fp32", **common)
    ort_run = separate(files / "clip.mp4", model=files / "tiny.onnx", backend="onnxruntime", **common)
    a, b = torch_run.layers.astype(np.int16), ort_run.layers.astype(np.int16)
    assert a.shape == b.shape == (2, 20, 72, 80, 3) and a.std() > 5  # the layers are pictures, not a constant
    # fp32 on both sides: the outputs differ by rounding (1e-6), which can move a pixel by one level
    assert np.abs(a - b).max() <= 1 and (a != b).mean() < 1e-3
    settings, model = ort_run.metadata["settings"], ort_run.metadata["model"]
    assert settings["backend"] == "onnxruntime" and settings["compute_dtype"] == "float32"
    assert torch_run.metadata["settings"]["backend"] == "pytorch"
    # what the pipeline needs came from the file: the training geometry (window 8, working size 2 x 32)
    assert settings["window"] == 8 and min(settings["inference_size"]) == 64
    assert (model["train_frames"], model["train_size"]) == (8, 32) and model["config"]["n_layers"] == 2
    assert model["info"]["step"] == 7 and model["path"].endswith("tiny.onnx")
    assert ort_run.chosen == torch_run.chosen


def test_separate_command_runs_an_onnx_file(files, tmp_path, capsys):
    # an .onnx --model needs no --backend: ONNX Runtime is the only backend that runs one
    assert main(["separate", str(files / "clip.mp4"), "-o", str(tmp_path / "out"), "--model",
                 str(files / "tiny.onnx"), "--no-progress"]) == 0
    meta = json.loads((tmp_path / "out" / "layers.json").read_text())
    assert meta["settings"]["backend"] == "onnxruntime" and meta["input"]["frames"] == 20
    assert (tmp_path / "out" / "layer_1.mp4").is_file()


def test_evaluate_runs_an_onnx_file(files, tmp_path, capsys):
    figures = {}
    for name, extra in (("pytorch", ["--model", str(files / "tiny.safetensors"), "--precision", "fp32"]),
                        ("onnxruntime", ["--model", str(files / "tiny.onnx"), "--backend", "onnxruntime"])):
        out = tmp_path / f"{name}.json"
        assert main(["evaluate", str(files / "clip.mp4"), str(files / "other.mp4"), "--frames", "8", "--size", "40",
                     "--device", "cpu", "--json", str(out), *extra]) == 0
        figures[name] = json.loads(out.read_text())
    a, b = figures["pytorch"], figures["onnxruntime"]
    assert a["pairs"] == b["pairs"] == 1 and a["model_loss"] > 0
    assert abs(a["model_loss"] - b["model_loss"]) < 1e-5 * a["model_loss"] + 1e-7
    assert abs(a["psnr_db"] - b["psnr_db"]) < 1e-3


@pytest.mark.parametrize(("extra", "says"), [
    (["--model", "{w}/tiny.safetensors", "--backend", "onnxruntime"],
     "run `centrifuge export {w}/tiny.safetensors -o model.onnx` once, then pass --model model.onnx"),
    (["--backend", "onnxruntime"], "run `centrifuge export default -o model.onnx`"),
    (["--model", "{w}/tiny.onnx", "--backend", "pytorch"], "is an ONNX file: run it with --backend onnxruntime"),
    (["--model", "{w}/tiny.onnx", "--precision", "bf16"], "runs in fp32 only"),
    (["--model", "{w}/tiny.onnx", "--device", "cuda"], "runs on the CPU only"),
    (["--model", "{w}/missing.onnx"], "no such model"),
    (["--model", "{w}/clip.mp4", "--backend", "onnxruntime"], "runs an exported file"),
    (["--model", "{tmp}/text.onnx"], "not an ONNX model ONNX Runtime can load"),
    (["--model", "{tmp}/bare.onnx"], "has no centrifuge metadata"),
])
def test_separate_refuses_what_a_backend_cannot_run(files, tmp_path, capsys, extra, says):
    import onnx

    (tmp_path / "text.onnx").write_text("not a model")
    bare = onnx.load(str(files / "tiny.onnx"))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    args = [a.format(w=files, tmp=tmp_path) for a in extra]
    assert main(["separate", str(files / "clip.mp4"), "-o", str(tmp_path / "out"), "--no-progress", *args]) == 2
    assert says.format(w=files) in _one_line_error(capsys)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("command", ["separate", "evaluate"])
def test_an_onnx_file_without_onnxruntime_names_the_extra(files, tmp_path, capsys, monkeypatch, command):
    import centrifuge.export as export

    real = export.find_spec
    monkeypatch.setattr(export, "find_spec", lambda name: None if name == "onnxruntime" else real(name))
    args = ([str(files / "clip.mp4"), "-o", str(tmp_path / "out"), "--no-progress"] if command == "separate"
            else [str(files / "clip.mp4"), str(files / "other.mp4"), "--frames", "8", "--size", "40"])
    assert main([command, *args, "--model", str(files / "tiny.onnx")]) == 2
    err = _one_line_error(capsys)
    assert "onnxruntime" in err and 'pip install "visual-centrifuge[onnx]"' in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_evaluate_refuses_to_read_the_training_record_of_an_onnx_file(files, capsys):
    assert main(["evaluate", str(files / "clip.mp4"), str(files / "other.mp4"), "--model", str(files / "tiny.onnx"),
                 "--exclude-trained"]) == 2
    assert "give the one the ONNX file was exported from" in _one_line_error(capsys)
