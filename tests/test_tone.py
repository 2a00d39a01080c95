"""The content-or-tone figure: gradient correlation of two layers, against cases whose answer is known."""

from __future__ import annotations

import numpy as np
import torch

from centrifuge.tone import PairwiseGradientCorrelation, gradient_correlation, split_kind, tone_oracle


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


# ---- the global tone oracle


def test_tone_oracle_is_exact_when_each_layer_is_a_tone_of_the_blend():
    mix = torch.stack([_video(7), _video(8)])  # two blends, each with its own tones: fitted per blend
    gain, offset = torch.tensor([0.3, 0.5, -0.4]).view(3, 1, 1, 1), torch.tensor([0.1, -0.2, 0.0]).view(3, 1, 1, 1)
    targets = torch.stack([torch.stack([mix[0], mix[0] * gain + offset]), torch.stack([0.5 * mix[1] - 0.3, -mix[1]])])
    out = tone_oracle(mix, targets)
    assert out.shape == targets.shape
    assert (out - targets).abs().max().item() < 1e-5
    from centrifuge.losses import pit_loss

    assert pit_loss(out, targets)[0].max().item() < 1e-5


def test_tone_oracle_is_the_least_squares_fit_per_channel_clipped():
    # a reference from NumPy: lstsq of each layer's channel on [blend, 1]; a layer far brighter than the blend
    # makes the fit leave [-1, 1], where the oracle clips it
    a, b = _video(9), _video(10)
    targets = torch.stack([a, (b + 0.9).clamp(max=1)])[None]
    mix = 0.5 * (targets[:, 0] + targets[:, 1])
    out = tone_oracle(mix, targets)[0].double().numpy()
    v = mix[0].double().numpy()
    for k in range(2):
        for c in range(3):
            design = np.stack([v[c].ravel(), np.ones(v[c].size)], 1)
            coef = np.linalg.lstsq(design, targets[0, k, c].double().numpy().ravel(), rcond=None)[0]
            expected = np.clip(design @ coef, -1, 1)
            assert np.abs(out[k, c].ravel() - expected).max() < 1e-5
    assert out.max() == 1.0  # the clipping was exercised


def test_tone_oracle_never_has_a_larger_squared_error_than_the_identity():
    # The identity (gain 1, offset 0) is one of the fits least squares chooses among, and clipping to [-1, 1]
    # only moves a value towards any target inside it: so per layer the oracle's squared error is at most the
    # identity's. (Eq. 3 is an L1 loss of pixels and gradients, where no such bound holds.)
    for seed in range(4):
        targets = torch.stack([torch.stack([_video(20 + seed), _video(30 + seed) * 0.4 - 0.1])])
        alpha = 0.2 + 0.2 * seed
        mix = alpha * targets[:, 0] + (1 - alpha) * targets[:, 1]
        oracle_mse = ((tone_oracle(mix, targets) - targets) ** 2).mean((-4, -3, -2, -1))
        identity_mse = ((mix[:, None] - targets) ** 2).mean((-4, -3, -2, -1))
        assert (oracle_mse <= identity_mse + 1e-7).all(), (seed, oracle_mse, identity_mse)
        assert (oracle_mse < 0.96 * identity_mse).all()  # and it does better here: a real fit, not the identity


def test_evaluate_reports_the_tone_oracle_with_and_without_a_model():
    from centrifuge.evaluate import evaluate_clips, format_table

    c = _video(11, 4, 32, 32)
    clips = torch.stack([c, 0.3 * c + 0.1, _video(12, 4, 32, 32)])  # clip 1 is a tone of clip 0
    pairs = [(0, 1), (0, 2), (1, 2)]
    bare = evaluate_clips(None, clips, pairs, batch_size=2)
    rows = bare["per_pair"]
    assert rows[0]["tone_oracle_loss"] < 1e-5  # blend and both layers are tones of one clip
    assert all(0.05 < r["tone_oracle_loss"] < r["identity_loss"] for r in rows[1:])
    for r in rows:
        assert r["tone_oracle_ratio"] == r["tone_oracle_loss"] / r["identity_loss"]
    mean_oracle = sum(r["tone_oracle_loss"] for r in rows) / 3
    assert abs(bare["tone_oracle_loss"] - mean_oracle) < 1e-9
    assert abs(bare["tone_oracle_ratio"] - mean_oracle / bare["identity_loss"]) < 1e-9
    assert bare["model_loss"] is None and bare["beats_tone_oracle"] is None
    table = format_table(bare)
    assert "tone oracle (knows the true layers, only re-tones the blend)" in table
    assert f"| {bare['tone_oracle_ratio']:.3f} |" in table and "model beats" not in table
    skipped = evaluate_clips(None, clips, pairs, with_tone_oracle=False)
    assert skipped["tone_oracle_loss"] is None and skipped["identity_loss"] == bare["identity_loss"]


class _Truth(torch.nn.Module):
    """Outputs the true layers of each blend of ``clips`` (looked up by the blend) or, with ``identity``, the
    blend twice."""

    def __init__(self, clips: torch.Tensor, identity: bool = False) -> None:
        super().__init__()
        self.clips, self.identity = clips, identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.identity:
            return torch.stack([x, x], 1)
        n = len(self.clips)
        blends = {(i, j): 0.5 * (self.clips[i] + self.clips[j]) for i in range(n) for j in range(i + 1, n)}
        found = [next(p for p, m in blends.items() if torch.equal(m, v)) for v in x]
        return torch.stack([torch.stack([self.clips[i], self.clips[j]]) for i, j in found])


def test_beats_tone_oracle_counts_the_pairs_where_the_model_is_below_it():
    from centrifuge.evaluate import evaluate_clips, format_table

    # clips of different contrast and brightness: re-toning the blend gets closer to each of them
    clips = torch.stack([_video(s, 4, 32, 32) * (0.3 + 0.2 * k) + 0.1 * k - 0.2 for k, s in enumerate(range(13, 17))])
    pairs = [(0, 1), (0, 2), (1, 3), (2, 3), (0, 3)]
    truth = evaluate_clips(_Truth(clips), clips, pairs, batch_size=2)
    assert truth["model_loss"] < 1e-6 and truth["beats_tone_oracle"] == 5
    assert "model beats the tone oracle on 5 of 5 pairs" in format_table(truth)
    same = evaluate_clips(_Truth(clips, identity=True), clips, pairs, batch_size=2)
    assert all(r["tone_oracle_loss"] < 0.97 * r["model_loss"] for r in same["per_pair"])
    assert same["beats_tone_oracle"] == 0
    assert "model beats the tone oracle on 0 of 5 pairs" in format_table(same)
    # Clips of one contrast and brightness: the fit is about the identity, and on one pair its Eq. 3 loss (L1,
    # where least squares promises nothing) is a little above it; the identity model then counts as beating it.
    clips = torch.stack([_video(s, 4, 32, 32) for s in range(13, 17)])
    same = evaluate_clips(_Truth(clips, identity=True), clips, pairs)
    above = [k for k, r in enumerate(same["per_pair"]) if r["tone_oracle_loss"] > r["model_loss"]]
    assert above == [2] and same["beats_tone_oracle"] == 1
