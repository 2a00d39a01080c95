import random

import numpy as np
import pytest
import torch
from helpers import make_frames, make_video

from centrifuge.augment import Augmentation, augment_clip
from centrifuge.data import BlendDataset, ClipSpec, FrameCache

NONE = Augmentation(motion=0.0, freeze=0.0, reverse=0.0, colour=0.0)


def test_shapes_and_reproducibility():
    frames = make_frames(8, 72, 48)
    a = augment_clip(frames, 32, random.Random(3))
    assert a.shape == (8, 32, 32, 3) and a.dtype == np.uint8
    np.testing.assert_array_equal(a, augment_clip(frames, 32, random.Random(3)))
    assert any(not np.array_equal(a, augment_clip(frames, 32, random.Random(s))) for s in range(4, 9))
    with pytest.raises(ValueError, match="smaller than the crop"):
        augment_clip(frames, 64, random.Random(0))


def test_identity_box_reproduces_the_frames():
    # a box the size of the frame, no flip, no motion, no colour: the frames come back unchanged
    frames = make_frames(4, 32, 32)
    rng = random.Random(0)
    while True:  # find a seed without flip
        seed = rng.randrange(10**6)
        out = augment_clip(frames, 32, random.Random(seed), Augmentation(zoom=1.0, motion=0.0, freeze=0.0,
                                                                           reverse=0.0, colour=0.0))
        if np.abs(out.astype(int) - frames.astype(int)).max() <= 1:
            break
        flipped = np.abs(out.astype(int) - frames[:, :, ::-1].astype(int)).max()
        assert flipped <= 1  # the only other possibility is the left-right flip


def test_motion_moves_and_static_does_not():
    still = make_frames(6, 96, 64, pattern="static")
    moving = augment_clip(still, 32, random.Random(1), Augmentation(motion=1.0, max_shift=0.5, freeze=0.0,
                                                                     reverse=0.0, colour=0.0))
    static = augment_clip(still, 32, random.Random(1), NONE)
    assert all(np.array_equal(static[0], f) for f in static)  # a still image stays still without motion
    assert not np.array_equal(moving[0], moving[-1])  # a pan/zoom makes it move


def test_freeze_and_colour():
    frames = make_frames(6, 64, 48)
    frozen = augment_clip(frames, 32, random.Random(0), Augmentation(freeze=1.0, motion=0.0, colour=0.0))
    assert all(np.array_equal(frozen[0], f) for f in frozen)
    grey = augment_clip(frames, 32, random.Random(0), Augmentation(colour=1.0, grey=1.0, gain=0.0, brightness=0.0,
                                                                   contrast=0.0, freeze=0.0))
    assert np.array_equal(grey[..., 0], grey[..., 1]) and np.array_equal(grey[..., 1], grey[..., 2])


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    paths = [root / f"v{i}.mp4" for i in range(3)]
    for i, path in enumerate(paths):
        make_video(path, frames=8, seed=i)
    return paths


def test_dataset_with_augmentation(videos):
    spec = ClipSpec(frames=4, size=16, train=True, augment=Augmentation())
    assert spec.decode_size == 24
    for preload in (False, True):
        ds = BlendDataset(videos, spec, seed=2, length=4, preload=preload)
        item = ds[1]
        assert item["layers"].shape == (2, 3, 4, 16, 16)
        torch.testing.assert_close(item["mix"], item["layers"].mean(0))
        torch.testing.assert_close(ds[1]["mix"], item["mix"])  # a pure function of the index
    assert FrameCache(videos[:1], spec).frames[0].shape[1] == 24  # shortest side decoded at zoom * size
