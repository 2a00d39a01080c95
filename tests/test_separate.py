"""``centrifuge separate``: slot-consistent stitching, streaming outputs, atomic results, user errors."""

from __future__ import annotations

import hashlib
import json
from fractions import Fraction

import numpy as np
import pytest
import torch
from helpers import make_frames, make_video
from torch import nn

from centrifuge import cli
from centrifuge.checkpoint import save_weights
from centrifuge.frames import resize, resize_frames, to_model
from centrifuge.model import ModelConfig, build_model
from centrifuge.separate import separate
from centrifuge.separation.stitch import WindowStitcher
from centrifuge.video import probe, read_video
from centrifuge.video_writer import VideoWriter, write_video

FINAL_NAMES = ("preview.mp4", "contact.png", "layers.json")


def _true_layers(n: int, frames: int = 40, size: int = 32) -> torch.Tensor:
    """``[n, 3, T, H, W]``: distinct moving patterns, as model tensors."""
    return torch.stack([to_model(make_frames(frames, size, size, seed=s)) for s in range(n)])


def test_stitcher_keeps_each_layer_in_one_slot():
    truth = _true_layers(4)  # 40 frames; windows of 8 every 4 frames
    rng = np.random.default_rng(0)
    gen = torch.Generator().manual_seed(0)
    window, hop, total = 8, 4, truth.shape[2]
    stitcher = WindowStitcher()
    pieces, perms = [], []
    for start in range(0, total - window + 1, hop):
        perm = rng.permutation(4)
        perms.append(tuple(perm))
        pred = truth[perm, :, start:start + window] + 0.02 * torch.randn(4, 3, window, 32, 32, generator=gen)
        last = start + window == total
        pieces.append(stitcher.add(pred, window if last else hop))
    assert stitcher.flush().shape[2] == 0
    out = torch.cat(pieces, dim=2)
    assert out.shape == truth.shape
    assert len(set(perms)) > 1  # the slots really were shuffled between windows

    # each true layer sits in the same slot in every frame
    err = (out[:, None] - truth[None]).abs().mean(dim=(2, 4, 5))  # [slot, true layer, T]
    slot_of = err[:, :, 0].argmin(dim=0)
    assert sorted(slot_of.tolist()) == [0, 1, 2, 3]
    for j in range(4):
        assert err[slot_of[j], j].max() < 0.05, f"layer {j} left slot {int(slot_of[j])}"
    assert stitcher.reordered > 0


class ShuffledFunctions(nn.Module):
    """A stand-in model whose 3 layers are fixed functions of the input, returned in a random slot order."""

    n_layers = 3

    def __init__(self, seed: int = 0, pointwise: bool = False):
        super().__init__()
        self.rng = np.random.default_rng(seed)
        self.calls = 0
        self.pointwise = pointwise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        layers = torch.stack([x, -x, 0.5 * (x if self.pointwise else x.flip(-1))], dim=1)
        return layers[:, self.rng.permutation(3)]


def test_windows_keep_slots_end_to_end():
    frames = ((make_frames(41, 32, 24, seed=1).astype(np.uint16) + make_frames(41, 32, 24, seed=2)) // 2)
    frames = frames.astype(np.uint8)
    model = ShuffledFunctions()
    # overlap 3 -> hop 5: the last window is moved back to end on frame 40 (a larger overlap)
    res = separate(frames, model=model, layers="all", window=8, overlap=3, progress=False, device="cpu")
    assert res.layers.shape == (3, 41, 24, 32, 3)
    assert res.metadata["stitching"]["windows"] == 8
    x = to_model(frames)
    candidates = [x, -x, 0.5 * x.flip(-1)]
    for slot in range(3):
        got = to_model(res.layers[slot])
        err = torch.stack([(got - c.clamp(-1, 1)).abs().mean(dim=(0, 2, 3)) for c in candidates])  # [3, T]
        f = int(err[:, 0].argmin())
        assert err[f].max() < 0.01, f"slot {slot} changed content mid-video"
    assert res.metadata["stitching"]["windows_reordered"] > 0


def test_tiles_keep_slots():
    frames = make_frames(10, 40, 30, seed=4)
    model = ShuffledFunctions(seed=1, pointwise=True)
    res = separate(frames, model=model, layers="all", window=6, overlap=2, tile=16, progress=False, device="cpu")
    assert res.metadata["stitching"]["tiles_per_window"] == 9  # 3 x 3 tiles of 16 overlapping by 4
    x = to_model(frames)
    for slot in range(3):
        got = to_model(res.layers[slot])
        err = torch.stack([(got - c.clamp(-1, 1)).abs().mean(dim=(0, 2, 3)) for c in (x, -x, 0.5 * x)])
        f = int(err[:, 0].argmin())
        assert err[f].max() < 0.01, f"slot {slot} mixes layers across tiles or windows"


@pytest.fixture
def tiny_model(tmp_path):
    torch.manual_seed(0)
    cfg = ModelConfig(n_layers=4, width=0.125)
    path = tmp_path / "tiny.safetensors"
    save_weights(path, build_model(cfg), cfg)
    return path


def _blend_video(path, frames=40, width=32, height=32, fps=25):
    a = make_frames(frames, width, height, seed=1).astype(np.uint16)
    b = make_frames(frames, width, height, seed=2)
    with VideoWriter(path, fps, width, height, pix_fmt="yuv444p" if width % 2 or height % 2 else "yuv420p") as w:
        w.write(((a + b) // 2).astype(np.uint8))


def test_cli_outputs_match_input(tmp_path, tiny_model, capsys):
    src = tmp_path / "blend.mp4"
    _blend_video(src, fps=Fraction(30000, 1001))
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    out = tmp_path / "out"
    rc = cli.main(["separate", str(src), "-o", str(out), "--model", str(tiny_model), "--window", "8",
                   "--overlap", "4", "--no-progress", "--device", "cpu"])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == ["contact.png", "layer_0.mp4", "layer_1.mp4", "layers.json",
                                                      "preview.mp4"]
    src_info = probe(src)
    for name in ("layer_0.mp4", "layer_1.mp4", "preview.mp4"):
        info = probe(out / name)
        assert len(read_video(out / name)) == 40
        assert info.fps == pytest.approx(src_info.fps, rel=1e-6)
    assert (probe(out / "layer_0.mp4").width, probe(out / "layer_0.mp4").height) == (32, 32)
    meta = json.loads((out / "layers.json").read_text())
    assert meta["input"]["frames"] == 40 and meta["settings"]["window"] == 8
    assert meta["order"] == meta["chosen"] and len(set(meta["chosen"])) == 2
    assert len(meta["layer_stats"]) == 4
    assert hashlib.sha256(src.read_bytes()).hexdigest() == digest  # input untouched
    assert "layer_0.mp4" in capsys.readouterr().out


def test_short_odd_video_all_layers(tmp_path, tiny_model):
    src = tmp_path / "short.mp4"
    _blend_video(src, frames=5, width=35, height=27)
    res = separate(src, model=tiny_model, out_dir=tmp_path / "o", layers="all", window=8, progress=False,
                   device="cpu")
    assert res.layers is None  # streamed to disk
    assert res.order == [0, 1, 2, 3]
    for k in range(4):
        info = probe(tmp_path / "o" / f"layer_{k}.mp4")
        assert (info.num_frames, info.width, info.height) == (5, 35, 27)


def test_a_tone_grid_model_separates_a_video(tmp_path):
    torch.manual_seed(0)
    cfg = ModelConfig(n_layers=2, width=0.125, final_endpoint="Mixed_4f", tone_grid=4)
    model = tmp_path / "grid.safetensors"
    save_weights(model, build_model(cfg), cfg)
    src = tmp_path / "blend.mp4"
    _blend_video(src, frames=12, width=36, height=28)
    res = separate(src, model=model, out_dir=tmp_path / "o", window=8, overlap=4, progress=False, device="cpu")
    assert res.order == [0, 1]
    for k in range(2):
        info = probe(tmp_path / "o" / f"layer_{k}.mp4")
        assert (info.num_frames, info.width, info.height) == (12, 36, 28)
    # untrained, each layer is about the input (the coefficients start near zero)
    layer = read_video(tmp_path / "o" / "layer_0.mp4").astype(np.float32)
    assert np.abs(layer - read_video(src).astype(np.float32)).mean() < 8


def test_rotated_video_gives_upright_layers(tmp_path, tiny_model):
    src = tmp_path / "rotated.mp4"
    make_video(src, frames=6, width=32, height=24, rotation=90)
    res = separate(src, model=tiny_model, window=4, overlap=1, progress=False, device="cpu")
    assert res.layers.shape == (2, 6, 32, 24, 3)  # upright: width and height swapped


def test_large_frames_processed_at_reduced_size(tmp_path, tiny_model):
    frames = make_frames(6, 64, 48, seed=3)
    res = separate(frames, model=tiny_model, size=16, window=4, overlap=1, progress=False, device="cpu")
    assert res.layers.shape == (2, 6, 48, 64, 3)
    assert res.metadata["settings"]["inference_size"] == [21, 16]
    # with the residual added, the mean of the layers keeps the input's detail: better than without
    soft = separate(frames, model=tiny_model, size=16, window=4, overlap=1, progress=False, device="cpu",
                    detail=False)
    rec = res.metadata["recomposition"]["all_layers"]["psnr_db"]
    assert rec > soft.metadata["recomposition"]["all_layers"]["psnr_db"]


class Interrupting(nn.Module):
    n_layers = 2

    def __init__(self, after: int, exc: BaseException):
        super().__init__()
        self.after, self.exc, self.calls = after, exc, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > self.after:
            raise self.exc
        return torch.stack([x, -x], dim=1)


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), RuntimeError("crash")])
def test_interrupted_run_leaves_no_outputs(tmp_path, exc):
    src = tmp_path / "blend.mp4"
    _blend_video(src)
    out = tmp_path / "out"
    with pytest.raises(type(exc)):
        separate(src, model=Interrupting(2, exc), out_dir=out, window=8, overlap=4, progress=False, device="cpu")
    assert not out.exists()  # created by the run, removed again

    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("mine")
    with pytest.raises(type(exc)):
        separate(src, model=Interrupting(2, exc), out_dir=kept, window=8, overlap=4, progress=False,
                 device="cpu", overwrite=True)
    assert [p.name for p in kept.iterdir()] == ["notes.txt"]


def test_progress_counts_both_passes_and_a_stop_in_the_second_leaves_nothing(tmp_path, tiny_model, monkeypatch,
                                                                            capsys):
    """A deferred run (files, ``best2``) counts each frame twice: the model's pass, then the second pass that
    writes the chosen pair, whose chunks also reach ``on_progress`` (so a callback that raises stops it there)."""
    from centrifuge.separation import sinks

    monkeypatch.setattr(sinks, "COMPOSE_BUDGET", 8 * 2 * 3 * 32 * 32)  # the second pass in chunks of 8 frames
    src = tmp_path / "blend.mp4"
    _blend_video(src)
    calls = []
    kw = {"model": tiny_model, "window": 8, "overlap": 4, "device": "cpu"}
    separate(src, out_dir=tmp_path / "out", on_progress=lambda done, total: calls.append((done, total)), **kw)
    assert calls[-1] == (80, 80) and {total for _, total in calls} == {80}
    done = [d for d, _ in calls]
    assert done == sorted(done) and done[-1] == 80  # never falls, ends at the total
    assert [d for d in done if d > 40] == [48, 56, 64, 72, 80, 80]  # the second pass's chunks, the finish's batch
    err = capsys.readouterr().err
    assert "separating" in err and "writing layers" in err and "40/40" in err  # two bars on the terminal

    single = []
    separate(src, out_dir=tmp_path / "all", layers="all", progress=False,
             on_progress=lambda done, total: single.append((done, total)), **kw)
    assert single[-1] == (40, 40) and {total for _, total in single} == {40}  # one pass: frames
    assert [d for d, _ in single][-2:] == [40, 40]  # the last chunk, then the finish's one batch

    seen = []

    def stop(done: int, total: int) -> None:
        seen.append(done)
        if done > 40:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        separate(src, out_dir=tmp_path / "stopped", progress=False, on_progress=stop, **kw)
    assert seen[-1] == 48 and not (tmp_path / "stopped").exists()  # stopped at the second pass's first chunk

    finish = []

    def stop_in_finish(done: int, total: int) -> None:
        finish.append(done)
        if finish.count(80) > 1:  # the count is over: the finish repeats its last call before each batch it reads
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        separate(src, out_dir=tmp_path / "finish", progress=False, on_progress=stop_in_finish, **kw)
    assert not (tmp_path / "finish").exists()


def _bad_inputs(tmp_path, tiny_model):
    good = tmp_path / "good.mp4"
    _blend_video(good, frames=8)
    text = tmp_path / "text.mp4"
    text.write_text("not a video\n")
    full = tmp_path / "full.mp4"
    write_video(full, make_frames(8, 32, 32), 25)
    data = full.read_bytes()
    truncated = tmp_path / "truncated.mp4"  # header says 8 frames, none can be decoded
    truncated.write_bytes(data[:data.find(b"mdat") + 4])
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x.txt").write_text("x")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    m = ["--model", str(tiny_model), "--no-progress"]
    # case: (arguments, a word the message must contain)
    return {
        "missing file": ([str(tmp_path / "nope.mp4"), "-o", str(tmp_path / "o1"), *m], "no such file"),
        "not a video": ([str(text), "-o", str(tmp_path / "o2"), *m], "not a video"),
        "no frames": ([str(truncated), "-o", str(tmp_path / "o3"), *m], "no decodable frames"),
        "non-empty out": ([str(good), "-o", str(busy), *m], "--overwrite"),
        "out is a file": ([str(good), "-o", str(a_file), *m], "not a folder"),
        "unwritable out": ([str(good), "-o", str(a_file / "sub"), *m], "cannot write"),
        "missing model": ([str(good), "-o", str(tmp_path / "o4"), "--model", str(tmp_path / "no.safetensors")],
                          "no such model"),
        "overlap >= window": ([str(good), "-o", str(tmp_path / "o5"), "--window", "4", "--overlap", "4", *m],
                              "--overlap"),
    }


def test_bad_input_one_line_exit_2(tmp_path, tiny_model, capsys):
    for case, (args, word) in _bad_inputs(tmp_path, tiny_model).items():
        rc = cli.main(["separate", *args])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2, case
        assert len(err) == 1 and err[0].startswith("centrifuge: error: "), (case, err)
        assert word in err[0], (case, err)
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["x.txt"]
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 6))


def test_chosen_pair_composed_after_the_run_matches_every_slot_composed(tmp_path, monkeypatch):
    """With files and ``best2`` every slot is kept at the inference size and only the chosen pair is composed
    after the run (``separation/sinks.py``): the same layers (to a level: the store is float16) and the same
    figures as composing every slot as it comes, reading back only the chosen pair; with no room on the disk for
    the store, the direct way."""
    from centrifuge.separation import sinks

    torch.manual_seed(0)
    cfg = ModelConfig(n_layers=4, width=0.125)
    model = build_model(cfg)
    torch.nn.init.normal_(model.decoder.head.weight, std=0.5)  # lively layers, beyond [-1, 1] in places
    path = tmp_path / "lively.safetensors"
    save_weights(path, model, cfg)
    frames = make_frames(21, 40, 32, seed=4)
    kw = {"model": path, "size": 16, "window": 8, "overlap": 2, "progress": False, "device": "cpu",
          "precision": "fp32"}
    every = separate(frames, layers="all", **kw)
    kept, store = [], sinks.LowResStore
    monkeypatch.setattr(sinks, "LowResStore", type("Spy", (store,), {
        "read": lambda self, *a: kept.append(a) or store.read(self, *a)}))
    best = separate(frames, out_dir=tmp_path / "best", **kw)
    assert kept and {tuple(a[0]) for a in kept} == {best.chosen}  # the second pass read the chosen pair only
    monkeypatch.setattr(sinks, "fits", lambda *a: False)
    direct = separate(frames, out_dir=tmp_path / "direct", **kw)
    assert best.chosen == direct.chosen == every.chosen
    np.testing.assert_array_equal(direct.layers, every.layers[list(every.chosen)])
    diff = np.abs(best.layers.astype(np.int16) - direct.layers)
    assert diff.max() <= 1 and diff.mean() < 0.05
    assert sorted(p.name for p in (tmp_path / "best").iterdir()) == sorted(p.name for p in
                                                                           (tmp_path / "direct").iterdir())
    for key in ("layer_distances", "layer_stats", "content_or_tone"):
        assert best.metadata[key] == direct.metadata[key] == every.metadata[key]
    for key in ("chosen_pair", "all_layers"):
        assert best.metadata["recomposition"][key] == direct.metadata["recomposition"][key]
    enc = best.metadata["recomposition"]["chosen_pair_encoded"], direct.metadata["recomposition"]["chosen_pair_encoded"]
    assert abs(enc[0]["psnr_db"] - enc[1]["psnr_db"]) < 0.1


@pytest.mark.parametrize("hw", [(9, 14), (40, 60)])
def test_resize_frames_matches_resize_in_any_memory_order(hw):
    """The stitcher's resize of channels-last windows gives what the per-plane resize gives."""
    x = torch.randn(4, 3, 5, 20, 30)
    channels_last = x.permute(2, 3, 4, 0, 1).contiguous().permute(3, 4, 0, 1, 2)
    for layout in (x, channels_last):
        got = resize_frames(layout, hw)
        assert got.shape == (4, 3, 5, *hw)
        torch.testing.assert_close(got, resize(x, hw), atol=1e-5, rtol=0)
