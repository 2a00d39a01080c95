import logging

import pytest
import torch
from helpers import broken_compile

from centrifuge import losses
from centrifuge.blend import blend, mix
from centrifuge.losses import (
    compiled_pit_loss,
    diversity,
    identity_outputs,
    layer_distances,
    most_dissimilar_pair,
    pairwise_loss,
    pairwise_reconstruction_distance,
    pit_from_matrix,
    pit_loss,
    psnr,
    reconstruction_loss,
    tone_free_loss,
)


def _videos(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g) * 2 - 1


def test_reconstruction_loss_matches_definition():
    u, v = _videos(2, 3, 4, 6, 5, seed=1), _videos(2, 3, 4, 6, 5, seed=2)
    d = u - v
    per_frame = []
    for t in range(4):
        dt = d[:, :, t]
        gx = (dt[..., :, 1:] - dt[..., :, :-1]).abs().mean(dim=(1, 2, 3))
        gy = (dt[..., 1:, :] - dt[..., :-1, :]).abs().mean(dim=(1, 2, 3))
        per_frame.append(dt.abs().mean(dim=(1, 2, 3)) + gx + gy)
    expected = torch.stack(per_frame).sum(0) / (2 * 4)
    torch.testing.assert_close(reconstruction_loss(u, v), expected)
    assert torch.all(reconstruction_loss(u, u) == 0)


def test_pit_zero_for_perfect_outputs_and_order_invariant():
    targets = _videos(3, 2, 3, 4, 8, 8)
    noise = _videos(3, 2, 3, 4, 8, 8, seed=5) * 0.1
    outputs = torch.cat([targets + noise, _videos(3, 2, 3, 4, 8, 8, seed=9)], dim=1)  # n = 4
    loss, assign = pit_loss(outputs, targets)
    for perm in ([3, 2, 1, 0], [2, 0, 3, 1], [1, 3, 0, 2]):
        loss_p, assign_p = pit_loss(outputs[:, perm], targets)
        torch.testing.assert_close(loss, loss_p)
        torch.testing.assert_close(torch.tensor(perm)[assign_p], assign)
    zero, best = pit_loss(targets[:, [1, 0]], targets)
    assert torch.all(zero == 0)
    assert best.tolist() == [[1, 0]] * 3


def test_pit_is_min_over_injective_assignments():
    torch.manual_seed(0)
    m = torch.rand(4, 5, 3)
    loss, assign = pit_from_matrix(m)
    for b in range(4):
        brute = min(m[b, i, 0] + m[b, j, 1] + m[b, k, 2]
                    for i in range(5) for j in range(5) for k in range(5) if len({i, j, k}) == 3)
        torch.testing.assert_close(loss[b], brute)
        assert len(set(assign[b].tolist())) == 3
        torch.testing.assert_close(m[b, assign[b], torch.arange(3)].sum(), loss[b])


def test_identity_baseline_closed_form():
    # With O1 = O2 = (V1 + V2) / 2, each target is off by (V1 - V2) / 2, and Eq. 3 is 1-homogeneous,
    # so the PIT loss equals l(V1, V2).
    v1, v2 = _videos(2, 3, 5, 9, 7, seed=3), _videos(2, 3, 5, 9, 7, seed=4)
    v = blend(v1, v2, 0.5)
    loss, _ = pit_loss(identity_outputs(v, 2), torch.stack([v1, v2], 1))
    torch.testing.assert_close(loss, reconstruction_loss(v1, v2))


def test_blend_and_mix():
    v1, v2 = _videos(3, 2, 4, 4, seed=1), _videos(3, 2, 4, 4, seed=2)
    torch.testing.assert_close(blend(v1, v2, 0.25), 0.75 * v1 + 0.25 * v2)
    stack = torch.stack([v1, v2], 0)
    torch.testing.assert_close(mix(stack, torch.tensor([0.75, 0.25])), 0.75 * v1 + 0.25 * v2)
    three = torch.stack([v1, v2, -v1], 0)
    torch.testing.assert_close(mix(three), (v1 + v2 - v1) / 3)


def test_diversity_and_most_dissimilar():
    base = _videos(1, 3, 2, 6, 6)
    outs = torch.stack([base, base + 0.01, -base, base + 0.5], dim=1)
    d = pairwise_loss(outs, outs)
    assert d.shape == (1, 4, 4)
    torch.testing.assert_close(diversity(outs), d[:, 0, 1])
    i, j = most_dissimilar_pair(outs)[0].tolist()
    assert (i, j) == (2, 3)  # -base and base + 0.5: the farthest apart
    assert d[0, i, j] == d[0].max()


def test_the_blocked_pairwise_eq3_is_the_plain_definition(monkeypatch):
    # Blocks of 7 values: several per row and a short last one (the default block is larger than these layers).
    monkeypatch.setattr(losses, "PAIR_BLOCK", 7)
    layers = _videos(5, 3, 3, 4, 6, seed=3) * 1.3  # some beyond [-1, 1]: Eq. 3 of the raw values
    d = pairwise_reconstruction_distance(layers)
    assert d.dtype == torch.float64 and d.shape == (5, 5)
    for i in range(5):
        for j in range(5):
            want = 0.0 if i == j else float(reconstruction_loss(layers[i].double(), layers[j].double()))
            assert abs(float(d[i, j]) - want) < 1e-6, (i, j)
    outs = layers.reshape(1, 5, 3, 3, 4, 6)
    torch.testing.assert_close(layer_distances(outs), pairwise_loss(outs, outs))


def test_psnr_range():
    v = _videos(1, 3, 2, 8, 8)
    assert torch.isinf(psnr(v, v)).item() is False  # clamped, finite
    assert psnr(v, v).item() > 90
    assert abs(psnr(torch.ones(1, 3, 1, 2, 2), -torch.ones(1, 3, 1, 2, 2)).item()) < 1e-5  # full-range error: 0 dB


def test_pit_gradient_only_through_chosen_pairs():
    # training differentiates the chosen pairs only; loss and gradient equal those of the full matrix's min
    torch.manual_seed(0)
    out = torch.randn(3, 4, 3, 2, 8, 8, requires_grad=True)
    tgt = torch.randn(3, 2, 3, 2, 8, 8)
    loss, assign = pit_loss(out, tgt)
    loss.sum().backward()
    ref = out.detach().clone().requires_grad_(True)
    ref_loss, ref_assign = pit_from_matrix(pairwise_loss(ref, tgt))
    ref_loss.sum().backward()
    torch.testing.assert_close(loss, ref_loss)
    assert torch.equal(assign, ref_assign)
    torch.testing.assert_close(out.grad, ref.grad)
    unchosen = torch.ones(3, 4, dtype=torch.bool)
    unchosen[torch.arange(3)[:, None], assign] = False
    assert out.grad[unchosen].abs().sum() == 0 and out.grad[~unchosen].abs().sum() > 0


@pytest.mark.parametrize("tone_free", [0.0, 0.5])
def test_compiled_pit_loss_matches_eager(tone_free):
    # training's fused loss: same loss, assignment and gradients as Eq. 2 eager (float rounding aside), with and
    # without the tone-free term
    torch.manual_seed(0)
    shape_out, shape_tgt = (2, 3, 3, 2, 12, 10), (2, 2, 3, 2, 12, 10)
    fn = compiled_pit_loss(3, shape_tgt, tone_free=tone_free)
    assert fn is not pit_loss
    out = torch.randn(*shape_out, requires_grad=True)
    tgt = torch.randn(*shape_tgt)
    loss, assign = fn(out, tgt)
    loss.sum().backward()
    ref = out.detach().clone().requires_grad_(True)
    ref_loss, ref_assign = pit_loss(ref, tgt, tone_free=tone_free)
    ref_loss.sum().backward()
    torch.testing.assert_close(loss, ref_loss)
    assert torch.equal(assign, ref_assign)
    torch.testing.assert_close(out.grad, ref.grad)


def test_compiled_pit_loss_falls_back_to_eager(monkeypatch, caplog):
    monkeypatch.setattr(losses.torch, "compile", broken_compile)
    with caplog.at_level(logging.WARNING, logger="centrifuge"):
        fn = compiled_pit_loss(2, (1, 2, 3, 1, 4, 4))
    assert fn is pit_loss
    assert "no compiler here" in caplog.text


def test_tone_free_loss_scores_every_retoned_blend_alike_and_true_content_zero():
    # the term's point: a re-toned copy of the blend gains nothing over the blend itself; the true layer,
    # in any tone, scores 0 (up to the gain fit's rounding)
    layers = _videos(2, 2, 3, 3, 10, 9, seed=3)
    target = layers[:, :1]
    m = mix(layers)[:, None]
    per_channel = (slice(None), None, None, None)
    tinted = m * torch.tensor([1.6, 0.7, 1.2])[per_channel] + torch.tensor([0.1, -0.3, 0.2])[per_channel]
    torch.testing.assert_close(tone_free_loss(tinted, target), tone_free_loss(m, target))
    assert (tone_free_loss(m, target) > 0.1).all()
    assert (tone_free_loss(0.5 * target - 0.2, target) < 1e-4).all()
    assert (reconstruction_loss(0.5 * target - 0.2, target) > 0.1).all()  # the paper's Eq. 3 is not tone-free


def test_pit_loss_with_tone_free_term_adds_it_for_the_chosen_pairs():
    # compiled against eager with the term: test_compiled_pit_loss_matches_eager
    torch.manual_seed(1)
    out = torch.randn(2, 3, 3, 2, 12, 10, requires_grad=True)
    tgt = torch.randn(2, 2, 3, 2, 12, 10)
    loss, assign = pit_loss(out, tgt, tone_free=0.5)
    matrix = pairwise_loss(out.detach(), tgt) + 0.5 * torch.stack(
        [tone_free_loss(out.detach(), tgt[:, j:j + 1]) for j in range(2)], dim=-1)
    ref_loss, ref_assign = pit_from_matrix(matrix)
    torch.testing.assert_close(loss.detach(), ref_loss)
    assert torch.equal(assign, ref_assign)
