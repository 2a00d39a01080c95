from __future__ import annotations

import logging
import random

import numpy as np
import pytest
import torch
from helpers import blends_with_and_without, make_video

from centrifuge.data import BlendDataset, ClipSpec, FrameCache, PairDataset, all_pairs, sample_clip
from centrifuge.frames import from_model, to_model
from centrifuge.sources import list_videos, load_kinetics, read_file_list, split_videos, write_file_list


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """Four tiny, visibly different videos (one of them shorter than a clip)."""
    root = tmp_path_factory.mktemp("videos")
    paths = []
    for i, frames in enumerate([16, 20, 16, 6]):
        path = root / f"v{i}.mp4"
        make_video(path, frames=frames, seed=i)
        paths.append(path)
    return paths


def test_to_from_model_roundtrip():
    frames = np.random.default_rng(0).integers(0, 256, (4, 6, 5, 3), dtype=np.uint8)
    x = to_model(frames)
    assert x.dtype == torch.float32 and x.shape == (3, 4, 6, 5)
    assert x.min() >= -1 and x.max() <= 1
    np.testing.assert_array_equal(from_model(x), frames)
    np.testing.assert_array_equal(from_model(to_model(torch.from_numpy(frames))), frames)
    # leading dims are kept; out-of-range values are clamped
    batch = torch.stack([x, x]) * 1.5
    out = from_model(batch)
    assert out.shape == (2, 4, 6, 5, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(to_model(frames[:, :, ::-1]), to_model(frames[:, :, ::-1].copy()))


def test_list_videos_recursive(tmp_path):
    for name in ["a.mp4", "sub/b.MKV", "sub/deeper/c.webm", "notes.txt", "sub/.d.part.mp4"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert [p.relative_to(tmp_path).as_posix() for p in list_videos(tmp_path)] == [
        "a.mp4",
        "sub/b.MKV",
        "sub/deeper/c.webm",
    ]


def test_split_deterministic(tmp_path):
    paths = [tmp_path / f"{i}.mp4" for i in range(20)]
    train, val = split_videos(paths, 0.25, seed=3)
    assert len(val) == 5 and len(train) == 15 and not set(train) & set(val)
    assert split_videos(list(reversed(paths)), 0.25, seed=3) == (train, val)
    assert split_videos(paths, 0.25, seed=4) != (train, val)
    assert len(split_videos(paths[:3], 0.01, seed=0)[1]) == 1

    write_file_list(val, tmp_path / "val.txt", root=tmp_path)
    assert (tmp_path / "val.txt").read_text().splitlines()[0] == val[0].name
    assert read_file_list(tmp_path / "val.txt", root=tmp_path) == val


def test_load_kinetics(tmp_path, caplog):
    root = tmp_path / "k600"
    csv_text = (
        "label,youtube_id,time_start,time_end,split\n"
        "abseiling,aaa,0,10,train\n"
        '"playing ""cards""",bbb,12.0,22.0,train\n'
        "juggling balls,ccc,5,15,train\n"  # missing on disk
        "abseiling,ddd,30,40,val\n"
    )
    (tmp_path / "k.csv").write_text(csv_text)
    flat = root / "aaa_000000_000010.mp4"
    nested = root / "train" / 'playing "cards"' / "bbb_000012_000022.mp4"
    by_label = root / "abseiling" / "ddd_000030_000040.mp4"
    for p in (flat, nested, by_label):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")
    with caplog.at_level(logging.WARNING, logger="centrifuge"):
        entries, missing = load_kinetics(tmp_path / "k.csv", root)
    assert missing == 1
    assert any("1 of 4" in r.getMessage() for r in caplog.records)
    assert [(e.youtube_id, e.time_start, e.time_end, e.label, e.path) for e in entries] == [
        ("aaa", 0, 10, "abseiling", flat),
        ("bbb", 12, 22, 'playing "cards"', nested),
        ("ddd", 30, 40, "abseiling", by_label),
    ]
    entries, missing = load_kinetics(tmp_path / "k.csv", root, split="val")
    assert [e.youtube_id for e in entries] == ["ddd"] and missing == 0

    # test-split CSVs come without labels
    (tmp_path / "test.csv").write_text("youtube_id,time_start,time_end,split\naaa,0,10,test\n")
    entries, missing = load_kinetics(tmp_path / "test.csv", root, split="test")
    assert len(entries) == 1 and entries[0].label == "" and missing == 0


def test_sample_clip_train_and_val(videos):
    train = ClipSpec(frames=8, size=32, train=True)
    clip = sample_clip(videos[1], train, random.Random(0))
    assert clip.shape == (8, 32, 32, 3) and clip.dtype == np.uint8
    # train clips vary with the rng (window, crop, flip) and are reproducible for a given seed
    np.testing.assert_array_equal(clip, sample_clip(videos[1], train, random.Random(0)))
    assert any(not np.array_equal(clip, sample_clip(videos[1], train, random.Random(s))) for s in range(1, 6))

    val = ClipSpec(frames=8, size=32, train=False)
    a = sample_clip(videos[1], val, random.Random(0))
    b = sample_clip(videos[1], val, random.Random(1))
    assert a.shape == (8, 32, 32, 3)
    np.testing.assert_array_equal(a, b)

    short = sample_clip(videos[3], val)  # 6 frames, looped to 8
    assert short.shape == (8, 32, 32, 3)
    np.testing.assert_array_equal(short[6:], short[:2])


def test_frame_cache_matches_decoding(videos):
    val = ClipSpec(frames=8, size=32, train=False)
    cache = FrameCache(videos[:2], val)
    np.testing.assert_array_equal(cache.sample(1), sample_clip(videos[1], val))
    train = ClipSpec(frames=8, size=32, train=True)
    cache = FrameCache(videos[:2], train, max_frames_per_video=10)
    assert cache.frames[1].shape == (10, 37, 49, 3)  # round(1.15 * 32) = 37
    assert cache.sample(0, random.Random(0)).shape == (8, 32, 32, 3)
    exact = ClipSpec(frames=8, size=32, train=True, resize_factor=1.0)  # evaluation's scale: shortest side 32
    assert FrameCache(videos[:1], exact, max_frames_per_video=10).frames[0].shape[1] == 32


def test_resize_factor_below_one_is_refused():
    with pytest.raises(ValueError, match="at least 1.0"):
        ClipSpec(frames=8, size=32, train=True, resize_factor=0.9)


@pytest.mark.parametrize("preload", [False, True])
def test_blend_dataset(videos, preload):
    spec = ClipSpec(frames=4, size=16, train=True)
    ds = BlendDataset(videos, spec, alpha_range=(0.2, 0.8), seed=1, length=6, preload=preload)
    assert len(ds) == 6
    for i in range(len(ds)):
        item = ds[i]
        assert item["mix"].shape == (3, 4, 16, 16)
        assert item["layers"].shape == (2, 3, 4, 16, 16)
        a = item["alpha"][1]
        assert 0.2 <= a <= 0.8 and torch.isclose(item["alpha"].sum(), torch.tensor(1.0))
        torch.testing.assert_close(item["mix"], (1 - a) * item["layers"][0] + a * item["layers"][1])
        assert item["videos"][0] != item["videos"][1]
        assert not torch.equal(item["layers"][0], item["layers"][1])
    # reproducible, different across epochs and ranks
    torch.testing.assert_close(ds[2]["mix"], ds[2]["mix"])
    pairs = {tuple(ds[i]["videos"].tolist()) + (round(float(ds[i]["alpha"][1]), 6),) for i in range(6)}
    ds.set_epoch(1)
    pairs1 = {tuple(ds[i]["videos"].tolist()) + (round(float(ds[i]["alpha"][1]), 6),) for i in range(6)}
    assert pairs != pairs1
    other_rank = BlendDataset(videos, spec, seed=1, length=6, rank=1, world_size=2)
    assert not torch.equal(other_rank[0]["mix"], BlendDataset(videos, spec, seed=1, length=6)[0]["mix"])


def test_blend_dataset_frozen_and_k3(videos):
    spec = ClipSpec(frames=4, size=16, train=True)
    item = BlendDataset(videos, spec, frozen=True, length=2)[0]
    layers = item["layers"]
    assert torch.equal(layers[:, :, :1].expand_as(layers), layers)  # every frame the same
    item = BlendDataset(videos, spec, k=3, length=2)[1]
    assert item["layers"].shape[0] == 3 and len(set(item["videos"].tolist())) == 3
    torch.testing.assert_close(item["mix"], item["layers"].mean(0))


def test_corrupted_video_skipped(videos, tmp_path, caplog):
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(200))
    spec = ClipSpec(frames=4, size=16, train=True)
    ds = BlendDataset([bad, videos[0], videos[1]], spec, length=8)
    with caplog.at_level(logging.WARNING, logger="centrifuge"):
        items = [ds[i] for i in range(8)]
    assert all(set(item["videos"].tolist()) == {1, 2} for item in items)
    assert ds.failed_videos == {bad}
    assert sum("bad.mp4" in r.getMessage() for r in caplog.records) == 1  # one warning per file

    with caplog.at_level(logging.WARNING, logger="centrifuge"):
        ds = BlendDataset([bad, videos[0], videos[1]], spec, length=2, preload=True)
    assert ds.failed_videos == {bad} and ds[0]["layers"].shape[0] == 2
    with pytest.raises(RuntimeError):
        BlendDataset([bad, videos[0]], spec, length=2, preload=True)
    with pytest.raises(RuntimeError):
        BlendDataset([bad, videos[0]], spec, length=2)[0]


def test_pairs_and_pair_dataset(videos, tmp_path):
    assert all_pairs(4) == [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
    subset = all_pairs(10, max_pairs=5, seed=0)
    assert len(subset) == 5 and subset == all_pairs(10, max_pairs=5, seed=0)
    assert all(i < j for i, j in subset)

    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    spec = ClipSpec(frames=4, size=16, train=False)
    paths = [*videos, bad]
    ds = PairDataset(paths, spec, all_pairs(len(paths)))
    assert len(ds) == 6 and ds.failed_videos == {bad}
    item = ds[1]
    assert item["videos"].tolist() == [0, 2]
    torch.testing.assert_close(item["mix"], 0.5 * item["layers"][0] + 0.5 * item["layers"][1])
    torch.testing.assert_close(ds[1]["mix"], item["mix"])
    preloaded = PairDataset(videos, spec, all_pairs(len(videos)), preload=True)
    torch.testing.assert_close(preloaded[1]["mix"], item["mix"])


def test_still_layer_freezes_exactly_one_layer_of_every_blend_at_share_one(tmp_path):
    videos = [tmp_path / f"v{i}.mp4" for i in range(3)]
    for i, path in enumerate(videos):
        make_video(path, frames=6, width=24, height=20, seed=i)
    for plain, still in blends_with_and_without(videos, "still_layer"):
        moves = [bool((layer.diff(dim=1).abs() > 0).any()) for layer in still["layers"]]
        assert sorted(moves) == [False, True]  # one still layer, one moving (these videos move)
        assert all(bool((layer.diff(dim=1).abs() > 0).any()) for layer in plain["layers"])
        torch.testing.assert_close(still["mix"], (still["alpha"][:, None, None, None, None] * still["layers"]).sum(0))
    with pytest.raises(ValueError, match="still_layer"):
        BlendDataset(videos, ClipSpec(frames=4, size=16, train=True), still_layer=-0.1)


def test_motion_texture_blends_are_two_textures_sliding_at_two_velocities(tmp_path):
    videos = [tmp_path / f"v{i}.mp4" for i in range(3)]
    for i, path in enumerate(videos):
        make_video(path, frames=6, width=24, height=20, seed=i)
    for _, item in blends_with_and_without(videos, "motion_textures"):
        assert item["videos"].tolist() == [-1, -1]
        velocities = []
        for layer in item["layers"]:  # [3, 4, 16, 16]: frame 1 is frame 0 moved by one whole velocity
            found = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3)
                     if torch.equal(layer[:, 1, 2:14, 2:14], layer[:, 0, 2 + dy:14 + dy, 2 + dx:14 + dx])]
            assert len(found) == 1
            velocities.append(found[0])
        assert velocities[0] != velocities[1]
        torch.testing.assert_close(item["mix"], (item["alpha"][:, None, None, None, None] * item["layers"]).sum(0))
    with pytest.raises(ValueError, match="motion_textures"):
        BlendDataset(videos, ClipSpec(frames=4, size=16, train=True), k=3, motion_textures=0.5)
