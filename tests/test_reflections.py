"""Blends made like a scene and its reflection (centrifuge.reflections) and their place in the training data."""

from __future__ import annotations

import random

import pytest
import torch
from helpers import blends_with_and_without, make_video

from centrifuge.data import BlendDataset, ClipSpec
from centrifuge.reflections import ALPHA_BOUNDS, alpha_ramp, blur, reflection_blend, reflection_layer, shifted


def _video(seed: int = 0) -> torch.Tensor:
    return torch.rand(3, 2, 24, 20, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_blur_keeps_flat_colour_and_the_mean_and_lowers_detail():
    flat = torch.full((3, 2, 12, 10), 0.3)
    torch.testing.assert_close(blur(flat, 1.5), flat)
    v = _video()
    b = blur(v, 1.5)
    assert b.shape == v.shape
    assert abs(float(b.mean() - v.mean())) < 0.02
    assert float((b[..., 1:] - b[..., :-1]).abs().mean()) < 0.5 * float((v[..., 1:] - v[..., :-1]).abs().mean())
    assert torch.equal(blur(v, 0.1), v)


def test_shifted_moves_content_and_replicates_the_border():
    v = torch.arange(20.0).reshape(1, 1, 4, 5)
    s = shifted(v, 2, -1)  # 2 right, 1 up
    assert torch.equal(s[..., 0, 2:], v[..., 1, :3])
    assert torch.equal(s[..., :, 0], s[..., :, 1]) and torch.equal(s[..., -1, :], s[..., -2, :])
    assert torch.equal(shifted(v, 0, 0), v)


def test_alpha_ramp_is_centred_bounded_and_varies():
    for seed in range(20):
        a = alpha_ramp(0.5, 33, 33, random.Random(seed))
        assert ALPHA_BOUNDS[0] <= float(a.min()) and float(a.max()) <= ALPHA_BOUNDS[1]
        assert abs(float(a[16, 16]) - 0.5) < 1e-6
    assert max(float(alpha_ramp(0.5, 33, 33, random.Random(s)).std()) for s in range(20)) > 0.05


def test_reflection_blend_mixes_the_scene_with_the_faded_second_layer_by_a_weight_per_pixel():
    layers = torch.stack([_video(1), _video(2)])
    mix, out = reflection_blend(layers, 0.5, random.Random(3))
    assert torch.equal(out[0], layers[0])
    second = reflection_layer(layers[1], random.Random(3))
    torch.testing.assert_close(out[1], second)
    weight = alpha_ramp(0.5, 24, 20, _after_layer_draws(3))
    torch.testing.assert_close(mix, (1 - weight) * out[0] + weight * out[1])
    assert float(out[1].std()) < float(layers[1].std())  # fainter and softer than the clip it came from


def _after_layer_draws(seed: int) -> random.Random:
    rng = random.Random(seed)
    reflection_layer(torch.zeros(3, 1, 4, 4), rng)
    return rng


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    paths = []
    for i in range(3):
        make_video(root / f"v{i}.mp4", frames=12, seed=i)
        paths.append(root / f"v{i}.mp4")
    return paths


def test_dataset_reflection_share_zero_leaves_items_as_before_and_one_reflects_every_blend(videos):
    for a, c in blends_with_and_without(videos, "reflection"):
        assert torch.equal(c["layers"][0], a["layers"][0]) and not torch.equal(c["layers"][1], a["layers"][1])
        assert not torch.equal(c["mix"], a["mix"])


def test_dataset_refuses_reflection_outside_two_layer_blends(videos):
    spec = ClipSpec(frames=4, size=16, train=True)
    with pytest.raises(ValueError, match="reflection"):
        BlendDataset(videos, spec, k=3, reflection=0.5)
    with pytest.raises(ValueError, match="reflection"):
        BlendDataset(videos, spec, reflection=1.5)


def test_evaluate_reflection_blends_each_pair_alike_in_any_batch_and_differs_from_plain_blends():
    from centrifuge.evaluate import evaluate_clips

    clips = torch.stack([_video(s) for s in range(3)])
    pairs = [(0, 1), (0, 2), (1, 2)]
    plain = evaluate_clips(None, clips, pairs)
    one = evaluate_clips(None, clips, pairs, reflection=True, batch_size=1)
    three = evaluate_clips(None, clips, pairs, reflection=True, batch_size=3)
    for a, b, c in zip(one["per_pair"], three["per_pair"], plain["per_pair"], strict=True):
        assert a["identity_loss"] == pytest.approx(b["identity_loss"], rel=1e-6)
        assert a["tone_oracle_loss"] == pytest.approx(b["tone_oracle_loss"], rel=1e-6)
        assert a["identity_loss"] != pytest.approx(c["identity_loss"], rel=1e-3)
