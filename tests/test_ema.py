"""The moving average of the weights behind ``centrifuge train --ema``."""

from __future__ import annotations

import pytest
import torch

from centrifuge.ema import WeightAverage


def test_average_follows_its_formula_and_copies_integer_buffers():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    average = WeightAverage(model, decay=0.5)
    w0 = model[0].weight.detach().clone()
    expected = w0.clone()
    for n in range(4):
        with torch.no_grad():
            model[0].weight.add_(1.0)
        model[1].num_batches_tracked += 3
        model[1].running_mean.fill_(float(n))
        average.update(model, n)
        d = min(0.5, (1 + n) / (10 + n))  # warm-up: 0.1, 0.18, 0.25 ... then the decay
        expected = d * expected + (1 - d) * model[0].weight.detach()
    torch.testing.assert_close(average.model[0].weight, expected)
    assert not torch.equal(average.model[0].weight, model[0].weight)  # an average, not a copy
    assert average.model[1].num_batches_tracked.item() == 12  # counted, never interpolated
    assert 0.0 < average.model[1].running_mean[0].item() < 3.0  # BatchNorm statistics are averaged too
    assert not average.model.training and not any(p.requires_grad for p in average.model.parameters())


@pytest.mark.parametrize("decay", [0.0, 1.0, 1.5])
def test_decay_outside_zero_one_is_refused(decay):
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        WeightAverage(torch.nn.Linear(1, 1), decay)
