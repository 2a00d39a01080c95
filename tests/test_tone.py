"""The content-or-tone figure: gradient correlation of two layers, against cases whose answer is known."""

from __future__ import annotations

import torch

from centrifuge.tone import PairwiseGradientCorrelation, gradient_correlation, split_kind


def _video(seed: int, t: int = 4, h: int = 24, w: int = 32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(3, t, h // 4, w // 4, generator=g)
    return torch.nn.functional.interpolate(small, size=(h, w), mode="bilinear", align_corners=False) * 2 - 1


def test_tonal_variants_score_one_whatever_their_gain_and_offset_per_channel():
    v = _video(0)
    gains, offsets = torch.tensor([0.5, 2.0, 1.3]).view(3, 1, 1, 1), torch.tensor([0.3, -0.2, 0.0]).view(3, 1, 1, 1)
    assert abs(gradient_correlation(v, v * gains + offsets).item() - 1.0) < 1e-6
    assert abs(gradient_correlation(v, -v).item() + 1.0) < 1e-6  # inverted structure
    assert split_kind(gradient_correlation(v, 0.5 * v).item()) == "tone"


def test_a_hand_computed_case():
    # one channel varies along x only: a = [0, 1, 3], b = [0, 2, 2] -> gradients (1, 2) and (2, 0)
    a = torch.zeros(3, 1, 1, 3)
    b = torch.zeros(3, 1, 1, 3)
    a[0, 0, 0] = torch.tensor([0.0, 1.0, 3.0])
    b[0, 0, 0] = torch.tensor([0.0, 2.0, 2.0])
    expected = (1 * 2 + 2 * 0) / ((1 + 4) ** 0.5 * (4 + 0) ** 0.5) / 3  # channels 1 and 2 are flat: 0
    assert abs(gradient_correlation(a, b).item() - expected) < 1e-6


def test_unrelated_content_scores_near_zero_and_is_a_content_split():
    corr = gradient_correlation(_video(1, 8, 64, 64), _video(2, 8, 64, 64)).item()
    assert abs(corr) < 0.1
    assert split_kind(corr) == "content"


def test_running_sums_over_pieces_equal_the_whole_and_batches_give_one_value_each():
    a, b = _video(3), 0.3 * _video(3) + _video(4)
    acc = PairwiseGradientCorrelation(2)
    acc.add(torch.stack([a[:, :2], b[:, :2]]))
    acc.add(torch.stack([a[:, 2:], b[:, 2:]]))
    assert abs(acc.matrix()[0, 1].item() - gradient_correlation(a, b).item()) < 1e-6
    both = gradient_correlation(torch.stack([a, a]), torch.stack([b, a]))
    assert both.shape == (2,) and abs(both[1].item() - 1) < 1e-6


def test_evaluate_reports_the_figure_the_median_and_the_worst_pair():
    from centrifuge.evaluate import evaluate_clips

    clips = torch.stack([_video(s, 4, 32, 32) for s in range(4)])

    class Copies(torch.nn.Module):  # outputs: the blend and a darker copy of it (a tonal split)
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.stack([x, 0.5 * x], 1)

    pairs = [(0, 1), (0, 2), (1, 3)]
    result = evaluate_clips(Copies(), clips, pairs)
    assert abs(result["gradient_correlation"] - 1.0) < 1e-5
    ratios = [r["model_loss"] / r["identity_loss"] for r in result["per_pair"]]
    assert abs(result["median_ratio"] - sorted(ratios)[1]) < 1e-9
    assert result["worst"]["ratio"] == max(ratios)
    assert (result["worst"]["a"], result["worst"]["b"]) == pairs[ratios.index(max(ratios))]


def test_pairwise_running_matrix_equals_the_pair_by_pair_figure():
    layers = torch.stack([_video(5), 0.5 * _video(5) + 0.2, _video(6)])
    acc = PairwiseGradientCorrelation(3)
    acc.add(layers[:, :, :2])
    acc.add(layers[:, :, 2:])
    m = acc.matrix()
    for i in range(3):
        for j in range(3):
            assert abs(m[i, j].item() - gradient_correlation(layers[i], layers[j]).item()) < 1e-5
    assert abs(m[0, 1].item() - 1) < 1e-6


def test_separate_records_content_or_tone_for_the_chosen_layers(tmp_path):
    import json

    from helpers import make_video

    from centrifuge import separate

    class Tonal(torch.nn.Module):  # three slots: the input, darker, and brighter (tonal variants only)
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.stack([x, 0.5 * x - 0.3, 0.5 * x + 0.3], 1)

    src = tmp_path / "in.mp4"
    make_video(src, frames=12, width=48, height=32)
    result = separate(src, model=Tonal(), out_dir=tmp_path / "out", progress=False, device="cpu")
    tone = json.loads((tmp_path / "out" / "layers.json").read_text())["content_or_tone"]
    assert tone["split"] == "tone" and tone["chosen_pair"] > 0.99
    assert tone == result.metadata["content_or_tone"]
    assert len(tone["all_pairs"]) == 3
    from centrifuge.app_text import figures_markdown

    row = next(line for line in figures_markdown(result.metadata).splitlines() if "content or tone" in line)
    assert f"{tone['chosen_pair']:.2f}: tonal variants" in row
