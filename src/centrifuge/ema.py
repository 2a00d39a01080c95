"""An exponential moving average of the weights, kept beside the trained model (``centrifuge train --ema``).

Weights still move from batch to batch at the end of a run; their average over the last updates is a common
way to smooth that out (over the last phase of the cpu-small run it neither helped nor hurt: docs/results.md,
``runs/l8ne``). BatchNorm's running statistics are
averaged with the weights, so the average is a complete model for evaluation. Integer buffers (BatchNorm's
batch counter) are copied, not averaged.

``torch.optim.swa_utils.AveragedModel`` would do the averaging, but its EMA function fails on integer buffers
when buffers are averaged too, and it wraps the module (its state-dict keys gain a ``module.`` prefix), which
would make the saved average differ from a plain model.
"""

from __future__ import annotations

import copy

import torch

from .checkpoint import unwrap


class WeightAverage:
    """``average = d * average + (1 - d) * weights`` after every update, ``d = min(decay, (1 + n) / (10 + n))``.

    The warm-up of ``d`` (as in TensorFlow's ``ExponentialMovingAverage`` with ``num_updates``) keeps the
    first updates from weighing the starting point for long. ``n`` is the number of updates so far, which a
    resumed run passes back in.
    """

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"--ema {decay}: the decay must lie strictly between 0 and 1 (e.g. 0.99)")
        self.decay = decay
        self.model = copy.deepcopy(unwrap(model)).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module, n: int) -> None:
        """Fold in ``model``'s current weights; ``n``: updates averaged before this one."""
        d = min(self.decay, (1 + n) / (10 + n))
        for a, b in zip(self.model.state_dict().values(), unwrap(model).state_dict().values(), strict=True):
            if a.is_floating_point():
                a.lerp_(b, 1.0 - d)
            else:
                a.copy_(b)
