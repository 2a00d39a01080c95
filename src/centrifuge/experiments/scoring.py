"""Scoring by composition of :mod:`centrifuge.evaluate`: per-pair figures, model outputs and encoder
features a batch at a time, and the statistics reports use."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from ..errors import CentrifugeError
from ..evaluate import evaluate_clips
from ..frames import to_model
from ..model import Predictor, PredictorCorrector


def _autocast(device: torch.device) -> Any:
    from ..devices import autocast_dtype

    amp = autocast_dtype("auto", device)
    return torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None)


def _chunks(pairs: Sequence[tuple[int, int]], size: int) -> Iterator[Sequence[tuple[int, int]]]:
    for start in range(0, len(pairs), size):
        yield pairs[start:start + size]


def _gather(frames: np.ndarray, chunk: Sequence[tuple[int, int]]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """The clips a chunk of pairs uses, as model tensors, and the pairs re-indexed into them."""
    used = sorted({i for pair in chunk for i in pair})
    where = {i: k for k, i in enumerate(used)}
    return to_model(frames[used]), [(where[a], where[b]) for a, b in chunk]


def evaluate_pairs(model: torch.nn.Module | None, frames: np.ndarray, pairs: Sequence[tuple[int, int]],
                   batch_size: int = 8, device: str | torch.device = "cpu") -> list[dict[str, Any]]:
    """Per-pair rows of :func:`centrifuge.evaluate.evaluate_clips` (``a``, ``b`` index ``frames``, ``uint8
    [N, T, S, S, 3]``), computed a batch at a time so only the clips in use are ever in float."""
    device = torch.device(device)
    rows: list[dict[str, Any]] = []
    for chunk in _chunks(pairs, batch_size):
        clips, local = _gather(frames, chunk)
        with _autocast(device):
            result = evaluate_clips(model, clips, local, batch_size=len(local), device=device,
                                   with_tone_oracle=False)  # pairs.csv does not carry it
        for (a, b), row in zip(chunk, result["per_pair"], strict=True):
            rows.append({**row, "a": a, "b": b})
    return rows


@torch.inference_mode()
def iter_outputs(model: torch.nn.Module, frames: np.ndarray, pairs: Sequence[tuple[int, int]],
                 batch_size: int = 8, device: str | torch.device = "cpu"
                 ) -> Iterator[tuple[Sequence[tuple[int, int]], torch.Tensor, torch.Tensor]]:
    """``(pairs, blends [B, 3, T, H, W], outputs [B, n, 3, T, H, W])`` a batch at a time, on the CPU, outputs
    clipped to [-1, 1] as :func:`evaluate_pairs` scores them."""
    from ..blend import blend

    device = torch.device(device)
    for chunk in _chunks(pairs, batch_size):
        clips, local = _gather(frames, chunk)
        mix = blend(clips[[a for a, _ in local]], clips[[b for _, b in local]], 0.5)
        with _autocast(device):
            out = model(mix.to(device))
        yield chunk, mix, out.float().cpu().clamp(-1, 1)


def encoder_of(model: torch.nn.Module) -> torch.nn.Module:
    """The I3D encoder of a predictor (the predictor's, for a predictor-corrector)."""
    if isinstance(model, PredictorCorrector):
        model = model.predictor
    if not isinstance(model, Predictor):
        raise TypeError(f"not a centrifuge model: {type(model).__name__}")
    return model.encoder


@torch.inference_mode()
def encoder_features(model: torch.nn.Module, frames: np.ndarray, endpoints: Sequence[str], batch_size: int = 8,
                     device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Encoder features of every clip, averaged over time and space: ``{endpoint: [N, C]}``."""
    encoder = encoder_of(model)
    missing = [e for e in endpoints if e not in encoder.output_endpoints]
    if missing:
        raise CentrifugeError(f"the model's encoder has no endpoint {missing[0]} "
                              f"(it outputs {', '.join(encoder.output_endpoints)})")
    device = torch.device(device)
    feats: dict[str, list[torch.Tensor]] = {e: [] for e in endpoints}
    for start in range(0, len(frames), batch_size):
        x = to_model(frames[start:start + batch_size]).to(device)
        with _autocast(device):
            out = encoder(x)
        for e in endpoints:
            feats[e].append(out[e].float().mean(dim=(2, 3, 4)).cpu())
    return {e: torch.cat(v) for e, v in feats.items()}


def pair_records(name: Callable[[int], str], rows: Sequence[dict[str, Any]], identity: bool = False,
                 **group: Any) -> list[dict[str, Any]]:
    """``pairs.csv`` rows from :func:`evaluate_pairs` rows: ``group`` columns, clip names, the model's loss and
    PSNR (the identity baseline's with ``identity``, or when there is no model) and the identity loss."""
    out = []
    for r in rows:
        use_identity = identity or r["model_loss"] is None
        out.append({**group, "a": name(r["a"]), "b": name(r["b"]),
                    "loss": r["identity_loss"] if use_identity else r["model_loss"],
                    "psnr_db": r["identity_psnr_db"] if use_identity else r["psnr_db"],
                    "identity_loss": r["identity_loss"]})
    return out


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation coefficient (NaN when either variable is constant or there are < 2 points)."""
    a, b = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def mean(values: Sequence[float]) -> float:
    return float(sum(values) / len(values)) if values else float("nan")
