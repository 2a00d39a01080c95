"""Blends whose layers share one colour statistics (centrifuge.tone_match) and their place in the training data."""

from __future__ import annotations

import pytest
import torch
from helpers import blends_with_and_without, make_video

from centrifuge.data import BlendDataset, ClipSpec
from centrifuge.tone import tone_oracle
from centrifuge.tone_match import MAX_GAIN, match_tone, tone_matched


def _video(seed: int, gain: float, offset: tuple[float, float, float]) -> torch.Tensor:
    x = torch.rand(3, 4, 24, 20, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    return x * gain + torch.tensor(offset)[:, None, None, None]


def test_match_tone_gives_the_reference_s_mean_and_spread_per_channel_and_keeps_the_content():
    dark, bright = _video(0, 0.2, (-0.5, -0.6, -0.4)), _video(1, 0.4, (0.3, 0.2, 0.4))
    out = match_tone(dark, bright)
    torch.testing.assert_close(out.mean((1, 2, 3)), bright.mean((1, 2, 3)), atol=2e-3, rtol=0)
    torch.testing.assert_close(out.std((1, 2, 3)), bright.std((1, 2, 3)), atol=2e-3, rtol=0)
    # the same picture: an affine map of the input per channel
    assert torch.corrcoef(torch.stack([out[0].flatten(), dark[0].flatten()]))[0, 1] > 0.999
    assert torch.equal(dark, _video(0, 0.2, (-0.5, -0.6, -0.4)))  # the input is left as it was


def test_match_tone_caps_the_gain_of_a_nearly_flat_clip_and_stays_in_range():
    flat = torch.full((3, 2, 8, 8), 0.1)
    flat[:, :, 0, 0] += 1e-3
    out = match_tone(flat, _video(2, 1.0, (0.0, 0.0, 0.0)))
    assert float(out.std((1, 2, 3)).max()) <= MAX_GAIN * float(flat.std((1, 2, 3)).max()) + 1e-6
    assert out.abs().max() <= 1


def test_tone_matched_layers_keep_the_first_match_the_rest_and_defeat_the_tone_oracle():
    a, b = _video(3, 0.3, (-0.5, -0.5, -0.3)), _video(4, 0.3, (0.5, 0.4, 0.6))
    layers = torch.stack([a, b])
    matched = tone_matched(layers)
    assert torch.equal(matched[0], a) and not torch.equal(matched[1], b)
    torch.testing.assert_close(matched[1], match_tone(b, a))
    mixed = 0.5 * matched[0] + 0.5 * matched[1]
    # apart in tone, the oracle splits the plain blend far better than the blend itself; matched, it cannot
    def errors(blend: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
        oracle = (tone_oracle(blend[None], targets[None]) - targets[None]).abs().mean()
        return float(oracle), float((blend[None, None] - targets[None]).abs().mean())

    oracle, identity = errors(0.5 * a + 0.5 * b, layers)
    assert oracle < 0.5 * identity
    oracle, identity = errors(mixed, matched)
    assert oracle > 0.9 * identity


def test_dataset_tone_match_share_zero_leaves_items_as_before_and_one_matches_every_blend(tmp_path):
    videos = [tmp_path / f"v{i}.mp4" for i in range(3)]
    for i, path in enumerate(videos):
        make_video(path, frames=6, width=24, height=20, seed=i)
    for a, c in blends_with_and_without(videos, "tone_match"):
        assert torch.equal(c["layers"][0], a["layers"][0])
        torch.testing.assert_close(c["layers"][1].mean((1, 2, 3)), c["layers"][0].mean((1, 2, 3)), atol=0.05, rtol=0)
        torch.testing.assert_close(c["mix"], (c["alpha"][:, None, None, None, None] * c["layers"]).sum(0))
    with pytest.raises(ValueError, match="tone_match"):
        BlendDataset(videos, ClipSpec(frames=4, size=16, train=True), tone_match=1.5)


def test_dataset_with_tone_match_and_reflection_matches_the_layers_then_blends_them_like_a_reflection(tmp_path):
    """Both shares at 1: the reflection's weight, which changes across the frame, survives the tone match (the
    layers are matched before either blend), so the blend is not the uniform Eq. 1 mix of its targets."""
    videos = [tmp_path / f"v{i}.mp4" for i in range(3)]
    for i, path in enumerate(videos):
        make_video(path, frames=6, width=24, height=20, seed=i)
    spec = ClipSpec(frames=4, size=16, train=True)
    both = BlendDataset(videos, spec, seed=2, length=4, tone_match=1.0, reflection=1.0)
    matched = BlendDataset(videos, spec, seed=2, length=4, tone_match=1.0)
    for i in range(4):
        item, plain = both[i], matched[i]
        assert torch.equal(item["layers"][0], plain["layers"][0])  # the first layer as the tone match left it
        uniform = (item["alpha"][:, None, None, None, None] * item["layers"]).sum(0)
        assert (item["mix"] - uniform).abs().max() > 1e-3
        assert torch.equal(both[i]["mix"], item["mix"])
