"""Bit-for-bit reference of `separate` and `evaluate` outputs on fixed generated videos and a fixed-seed model.

The reference (``golden/reference.json``) was recorded from the code before the separation pipeline was split
into stages; any change to a written frame, to ``layers.json`` (timings and temporary paths aside) or to an
evaluation figure fails here. Frames are compared as they are handed to the encoder: x264 spreads its work
over threads and its bits then vary from run to run, so the inputs here are written losslessly (their decoded
frames do not vary), and what is made from decoded outputs (``chosen_pair_encoded``, ``preview.mp4``) is
compared to within 0.05 (the figures) or by its size (the preview). Re-record only for an intended change of behaviour:
``python tests/test_separate_golden.py`` (run from the repository root with the package importable).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from helpers import make_frames
from PIL import Image

from centrifuge import cli, separate
from centrifuge.checkpoint import save_weights
from centrifuge.model import ModelConfig, build_model
from centrifuge.video import VideoWriter, read_video

REFERENCE = Path(__file__).parent / "golden" / "reference.json"

#: separate's runs: (name, CLI arguments after INPUT -o OUT --model M)
CASES = [
    ("all_tiles", ["--layers", "all", "--window", "8", "--overlap", "2", "--tile", "--tile-size", "24"]),
    ("best2_resized", ["--window", "8", "--overlap", "3", "--size", "24"]),
    ("best2_soft", ["--window", "16", "--size", "20", "--no-detail"]),
]


def _digest(array: np.ndarray) -> str:
    array = np.ascontiguousarray(array)
    return hashlib.sha256(f"{array.dtype}{array.shape}".encode() + array.tobytes()).hexdigest()


def _model(folder: Path) -> Path:
    torch.manual_seed(0)
    cfg = ModelConfig(n_layers=3, width=0.125)
    path = folder / "tiny.safetensors"
    save_weights(path, build_model(cfg), cfg)
    return path


def _lossless(path: Path, video: np.ndarray) -> None:
    with VideoWriter(path, 25, video.shape[2], video.shape[1], crf=0, pix_fmt="yuv444p") as writer:
        writer.write(video)


def _blend(path: Path, frames: int = 37, width: int = 48, height: int = 40) -> np.ndarray:
    a = make_frames(frames, width, height, seed=1).astype(np.uint16)
    b = make_frames(frames, width, height, seed=2, pattern="noise")
    video = ((3 * a + b) // 4).astype(np.uint8)
    _lossless(path, video)
    return read_video(path)


class _EncodedFrames:
    """Digests of the frames every :class:`VideoWriter` is given, by the inode of the file it made (the file
    keeps its inode when it is renamed into place)."""

    def __init__(self, monkeypatch) -> None:
        self.open: dict[int, Any] = {}
        self.by_inode: dict[int, str] = {}
        write, close = VideoWriter.write, VideoWriter.close
        recorder = self

        def recording_write(writer: VideoWriter, frames: np.ndarray) -> None:
            recorder.open.setdefault(id(writer), hashlib.sha256()).update(np.ascontiguousarray(frames).tobytes())
            write(writer, frames)

        def recording_close(writer: VideoWriter) -> None:
            close(writer)
            digest = recorder.open.pop(id(writer), None)
            if digest is not None and writer.path.exists():
                recorder.by_inode[os.stat(writer.path).st_ino] = digest.hexdigest()

        monkeypatch.setattr(VideoWriter, "write", recording_write)
        monkeypatch.setattr(VideoWriter, "close", recording_close)

    def of(self, path: Path) -> str:
        return self.by_inode[os.stat(path).st_ino]


def _metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """``layers.json`` without what differs between runs (timings, temporary paths)."""
    meta = json.loads(json.dumps(meta))
    meta.pop("timings")
    meta["input"].pop("path", None)
    meta["model"].pop("path", None)
    meta["model"]["info"].pop("path", None)
    return meta


def _separate_outputs(out: Path, encoded: _EncodedFrames) -> dict[str, Any]:
    got: dict[str, Any] = {}
    for path in sorted(out.iterdir()):
        if path.name == "preview.mp4":  # made from the decoded layers, which vary with x264's threads
            got[path.name] = {"frames": list(read_video(path).shape)}
        elif path.suffix == ".mp4":
            got[path.name] = {"frames": list(read_video(path).shape), "encoded": encoded.of(path)}
        elif path.suffix == ".png":
            got[path.name] = _digest(np.asarray(Image.open(path).convert("RGB")))
        else:
            got[path.name] = _metadata(json.loads(path.read_text()))
    return got


def _evaluate(tmp: Path, model: Path) -> dict[str, Any]:
    videos = [tmp / f"v{i}.mp4" for i in range(3)]
    for i, p in enumerate(videos):
        _lossless(p, make_frames(10, 40, 32, seed=i, pattern="noise" if i == 2 else "moving"))
    out = tmp / "eval.json"
    assert cli.main(["evaluate", *map(str, videos), "--model", str(model), "--frames", "4", "--size", "32",
                     "--precision", "fp32", "--device", "cpu", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    for key in ("model", "videos"):
        result.pop(key)
    return result


def outputs(tmp: Path, monkeypatch) -> dict[str, Any]:
    """Every figure and frame digest the reference holds, computed now in ``tmp``."""
    encoded = _EncodedFrames(monkeypatch)
    model = _model(tmp)
    src = tmp / "blend.mp4"
    frames = _blend(src)
    got: dict[str, Any] = {}
    for name, args in CASES:
        out = tmp / name
        assert cli.main(["separate", str(src), "-o", str(out), "--model", str(model), "--no-progress",
                         "--device", "cpu", "--precision", "fp32", *args]) == 0
        got[name] = _separate_outputs(out, encoded)
    res = separate(frames[:11], model=model, window=4, overlap=1, progress=False, device="cpu", layers="all")
    got["in_memory"] = {"layers": _digest(res.layers), "order": res.order, "chosen": list(res.chosen),
                        "metadata": _metadata(res.metadata)}
    got["evaluate"] = _evaluate(tmp, model)
    return got


def _pop_encoded_figures(outputs: dict[str, Any]) -> dict[str, float]:
    return {key: value for key, value in outputs.get("layers.json", {}).get("recomposition", {})
            .pop("chosen_pair_encoded", {}).items()}


def test_outputs_match_reference(tmp_path, monkeypatch):
    reference = json.loads(REFERENCE.read_text())
    got = json.loads(json.dumps(outputs(tmp_path, monkeypatch)))
    assert got.keys() == reference.keys()
    for key in reference:
        got_encoded, ref_encoded = _pop_encoded_figures(got[key]), _pop_encoded_figures(reference[key])
        assert got[key] == reference[key], f"{key} differs from the recorded reference"
        assert got_encoded.keys() == ref_encoded.keys()
        for figure, value in ref_encoded.items():
            assert abs(got_encoded[figure] - value) < 0.05, f"{key}: chosen_pair_encoded {figure} differs"


if __name__ == "__main__":
    import tempfile

    import pytest

    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
        REFERENCE.parent.mkdir(exist_ok=True)
        REFERENCE.write_text(json.dumps(outputs(Path(tmp), patch), indent=1, sort_keys=True) + "\n")
    print(f"wrote {REFERENCE}", file=sys.stderr)
