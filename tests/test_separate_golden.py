"""Reference of `separate` and `evaluate` outputs on fixed generated videos and a fixed-seed model, portable
across machines.

Frames are kept as small numeric summaries, not digests: per frame, an area-averaged thumbnail
(:data:`THUMB` x :data:`THUMB` per channel, uint8; ``contact.png`` at one value per
:data:`CONTACT_BLOCK`-pixel block), compared to within :data:`MAX_LEVELS` levels of 255 anywhere and
:data:`MEAN_LEVELS` on average. ``layers.json`` (timings and temporary paths aside) and the evaluation figures
are compared key by key: ints, strings, bools, keys and list lengths exactly, floats to within :data:`REL` of
their value plus :data:`ABS` (dB figures :data:`DB`). Another CPU runs other kernels (oneDNN picks them by
instruction set) and sums in another order, so low bits differ; a change of behaviour (stitching, composing,
statistics) moves thumbnails by several levels and figures by far more than these tolerances.

Frames are summarised as they are handed to the encoder: x264 spreads its work over threads and its bits then
vary from run to run, so the inputs here are written losslessly (their decoded frames do not vary), and what
is made from decoded outputs (``chosen_pair_encoded``) or is x264's output itself (``preview.mp4``) is compared
to within :data:`ENCODED` (the figures) or by its shape (the preview). Every run uses ``precision="fp32"``: ``auto``
picks bf16 on some CPUs only.

Re-record only for an intended change of behaviour, from the repository root with the package importable::

    PYTHONPATH=src OMP_NUM_THREADS=1 python tests/test_separate_golden.py
"""

from __future__ import annotations

import base64
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from helpers import make_frames
from PIL import Image

from centrifuge import cli, separate
from centrifuge.checkpoint import save_weights
from centrifuge.model import ModelConfig, build_model
from centrifuge.video import read_video
from centrifuge.video_writer import VideoWriter

REFERENCE = Path(__file__).parent / "golden" / "reference.json"

#: separate's runs: (name, CLI arguments after INPUT -o OUT --model M)
CASES = [
    ("all_tiles", ["--layers", "all", "--window", "8", "--overlap", "2", "--tile", "--tile-size", "24"]),
    ("best2_resized", ["--window", "8", "--overlap", "3", "--size", "24"]),
    ("best2_soft", ["--window", "16", "--size", "20", "--no-detail"]),
]

THUMB = 8  #: a frame's thumbnail: THUMB x THUMB area averages per channel
CONTACT_BLOCK = 16  #: contact.png: one area average per CONTACT_BLOCK x CONTACT_BLOCK pixels
MAX_LEVELS, MEAN_LEVELS = 2, 0.3  #: thumbnails: largest and mean absolute difference, in levels of 255
REL, ABS, DB = 1e-3, 1e-4, 0.02  #: floats: |got - ref| <= REL * |ref| + ABS; figures in dB: <= DB
ENCODED = 0.05  #: figures of decoded x264 output (``chosen_pair_encoded``)
HEAD_STD = 0.5  #: the test model's head: weights drawn with this spread (see _model)


def _thumbnails(frames: np.ndarray, size: tuple[int, int] = (THUMB, THUMB)) -> np.ndarray:
    """``uint8 [T, H, W, 3]`` -> area averages ``uint8 [T, size[0], size[1], 3]``."""
    x = torch.from_numpy(np.array(frames)).permute(0, 3, 1, 2).double()
    return F.adaptive_avg_pool2d(x, size).round().byte().permute(0, 2, 3, 1).numpy()


def _packed(thumbs: np.ndarray) -> dict[str, Any]:
    """Thumbnails as JSON: their shape and their bytes in base64 (a list of ints would be 5x larger)."""
    return {"shape": list(thumbs.shape), "thumbnails": base64.b64encode(thumbs.tobytes()).decode("ascii")}


def _unpacked(packed: dict[str, Any]) -> np.ndarray:
    return np.frombuffer(base64.b64decode(packed["thumbnails"]), np.uint8).reshape(packed["shape"])


def _model(folder: Path) -> Path:
    torch.manual_seed(0)
    cfg = ModelConfig(n_layers=3, width=0.125)
    model = build_model(cfg)
    # The head starts near zero (grey layers, spread well under a level), where a change to stitching or
    # composing would not move a thumbnail; a lively head makes layers that differ across windows, so that
    # e.g. another cross-fade ramp moves thumbnails by over 10 levels (float noise of other kernels: 1 level).
    torch.nn.init.normal_(model.decoder.head.weight, std=HEAD_STD)
    path = folder / "tiny.safetensors"
    save_weights(path, model, cfg)
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
    """Thumbnails of the frames every :class:`VideoWriter` is given, by the inode of the file it made (the file
    keeps its inode when it is renamed into place)."""

    def __init__(self, monkeypatch) -> None:
        self.open: dict[int, list[np.ndarray]] = {}
        self.by_inode: dict[int, dict[str, Any]] = {}
        write, close = VideoWriter.write, VideoWriter.close
        recorder = self

        def recording_write(writer: VideoWriter, frames: np.ndarray) -> None:
            frames = np.asarray(frames)
            recorder.open.setdefault(id(writer), []).append(_thumbnails(frames[None] if frames.ndim == 3 else frames))
            write(writer, frames)

        def recording_close(writer: VideoWriter) -> None:
            close(writer)
            thumbs = recorder.open.pop(id(writer), None)
            if thumbs is not None and writer.path.exists():
                recorder.by_inode[os.stat(writer.path).st_ino] = _packed(np.concatenate(thumbs))

        monkeypatch.setattr(VideoWriter, "write", recording_write)
        monkeypatch.setattr(VideoWriter, "close", recording_close)

    def of(self, path: Path) -> dict[str, Any]:
        return self.by_inode[os.stat(path).st_ino]


def _metadata(meta: dict[str, Any]) -> dict[str, Any]:
    """``layers.json`` without what differs between runs (timings, temporary paths)."""
    meta = json.loads(json.dumps(meta))
    meta.pop("timings")
    meta["input"].pop("path", None)
    meta["model"].pop("path", None)
    meta["model"]["info"].pop("path", None)
    return meta


def _contact(path: Path) -> dict[str, Any]:
    image = np.asarray(Image.open(path).convert("RGB"))
    size = (max(1, image.shape[0] // CONTACT_BLOCK), max(1, image.shape[1] // CONTACT_BLOCK))
    return _packed(_thumbnails(image[None], size))


def _separate_outputs(out: Path, encoded: _EncodedFrames) -> dict[str, Any]:
    got: dict[str, Any] = {}
    for path in sorted(out.iterdir()):
        if path.name == "preview.mp4":  # x264's own output (the preview's), which varies with its threads
            got[path.name] = {"frames": list(read_video(path).shape)}
        elif path.suffix == ".mp4":
            got[path.name] = {"frames": list(read_video(path).shape), "encoded": encoded.of(path)}
        elif path.suffix == ".png":
            got[path.name] = _contact(path)
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
    """Every figure and frame summary the reference holds, computed now in ``tmp``."""
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
    res = separate(frames[:11], model=model, window=4, overlap=1, progress=False, device="cpu", layers="all",
                   precision="fp32")
    assert res.layers is not None
    got["in_memory"] = {"layers": _packed(np.concatenate([_thumbnails(layer) for layer in res.layers])),
                        "order": res.order, "chosen": list(res.chosen), "metadata": _metadata(res.metadata)}
    got["evaluate"] = _evaluate(tmp, model)
    return json.loads(json.dumps(got))


def _assert_thumbnails_close(got: dict[str, Any], ref: dict[str, Any], where: str) -> None:
    assert got["shape"] == ref["shape"], f"{where}: thumbnails of shape {got['shape']}, expected {ref['shape']}"
    diff = np.abs(_unpacked(got).astype(np.int16) - _unpacked(ref).astype(np.int16))
    assert diff.max() <= MAX_LEVELS and diff.mean() <= MEAN_LEVELS, (
        f"{where}: frames differ from the reference by up to {diff.max()} levels, {diff.mean():.3f} on average")


def _tolerance(where: str, ref: float) -> float:
    if "chosen_pair_encoded" in where:
        return ENCODED
    if "psnr" in where or where.endswith("_db"):
        return DB
    return REL * abs(ref) + ABS


def assert_close(got: Any, ref: Any, where: str = "") -> None:
    """``got`` matches ``ref`` (JSON values): structure, ints, strings and bools exactly, floats and
    thumbnails within this module's tolerances."""
    if isinstance(ref, dict) and "thumbnails" in ref:
        assert isinstance(got, dict) and "thumbnails" in got, f"{where}: {got!r} is not a thumbnail record"
        _assert_thumbnails_close(got, ref, where)
    elif isinstance(ref, dict):
        assert isinstance(got, dict) and got.keys() == ref.keys(), (
            f"{where}: keys {sorted(got) if isinstance(got, dict) else got!r}, expected {sorted(ref)}")
        for key in ref:
            assert_close(got[key], ref[key], f"{where}/{key}")
    elif isinstance(ref, list):
        assert isinstance(got, list) and len(got) == len(ref), f"{where}: {got!r}, expected {len(ref)} items"
        for i, (g, r) in enumerate(zip(got, ref, strict=True)):
            assert_close(g, r, f"{where}[{i}]")
    elif isinstance(ref, float):
        assert isinstance(got, (int, float)) and not isinstance(got, bool), f"{where}: {got!r} is not a number"
        assert math.isfinite(got) == math.isfinite(ref) and abs(got - ref) <= _tolerance(where, ref) or got == ref, (
            f"{where}: {got!r}, expected {ref!r} (within {_tolerance(where, ref):.2g})")
    else:
        assert type(got) is type(ref) and got == ref, f"{where}: {got!r}, expected {ref!r}"


def test_outputs_match_reference(tmp_path, monkeypatch):
    assert_close(outputs(tmp_path, monkeypatch), json.loads(REFERENCE.read_text()))


def test_comparison_catches_changes():
    """The comparison itself: what it must let through, and what it must not."""
    thumbs = np.full((2, THUMB, THUMB, 3), 100, np.uint8)
    one_off = thumbs.copy()
    one_off[0, 0, 0, 0] += MAX_LEVELS
    too_far, shifted = thumbs.copy(), thumbs + 1  # one value by a level too many; all by one level
    too_far[0, 0, 0, 0] += MAX_LEVELS + 1
    ref = {"a": [1, "x", True], "l1": 10.0, "psnr_db": 20.0, "f": _packed(thumbs)}
    assert_close(json.loads(json.dumps(ref)), ref)
    assert_close({**ref, "l1": 10.01, "psnr_db": 20.019, "f": _packed(one_off)}, ref)
    for changed in ({"l1": 10.011}, {"psnr_db": 20.03}, {"a": [1, "x", 1]}, {"a": [1, "x"]}, {"b": 1},
                    {"f": _packed(too_far)}, {"f": _packed(shifted)}, {"f": _packed(thumbs[:1])}):
        try:
            assert_close({**ref, **changed}, ref)
        except AssertionError:
            continue
        raise AssertionError(f"{changed} was not caught")


if __name__ == "__main__":
    import tempfile

    import pytest

    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
        REFERENCE.parent.mkdir(exist_ok=True)
        REFERENCE.write_text(json.dumps(outputs(Path(tmp), patch), indent=1, sort_keys=True) + "\n")
    print(f"wrote {REFERENCE}", file=sys.stderr)
