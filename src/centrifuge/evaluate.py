"""Evaluation on blended pairs (Sec. 4.1): permutation-invariant validation loss of the model against the
identity baseline (both outputs = the blend), and PSNR of the matched layers.

Clips are the deterministic validation view: centre window of ``frames`` frames, shortest side resized to
``size``, centre crop. Each video is decoded once; every pair is blended with alpha = 0.5 (Eq. 1).
Outputs are clipped to the valid pixel range [-1, 1], as they are when written to video.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .blend import blend
from .checkpoint import CONFIG, read_model_info
from .config import read_run_config
from .data import ClipSpec, all_pairs, sample_clip
from .errors import CheckpointError
from .frames import to_model
from .losses import identity_outputs, pit_loss, psnr
from .sources import training_videos
from .tone import gradient_correlation, split_kind

#: Pairs of video indices to evaluate (all, those touching a held-out set, or a seeded subset).
choose_pairs = all_pairs


def load_clips(paths: Sequence[str | Path], frames: int, size: int) -> torch.Tensor:
    """Validation clips of every video: ``[N, 3, frames, size, size]`` in [-1, 1]."""
    spec = ClipSpec(frames=frames, size=size, train=False)
    return torch.stack([to_model(sample_clip(p, spec, random.Random(0))) for p in paths])


@torch.inference_mode()
def evaluate_clips(model: torch.nn.Module | None, clips: torch.Tensor, pairs: Sequence[tuple[int, int]],
                   alpha: float = 0.5, batch_size: int = 4, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Mean PIT loss and matched-layer PSNR over ``pairs`` of ``clips`` (``[N, 3, T, H, W]``).

    Returns a dict with ``identity_loss``, ``model_loss``, ``ratio``, ``psnr_db``, ``identity_psnr_db``,
    ``gradient_correlation`` (of the two matched model layers: about 0 for a content split, about 1 for tonal
    variants, :mod:`centrifuge.tone`), ``pairs``, the ``median_ratio`` and ``worst`` of the per-pair ratios, and
    per-pair ``per_pair`` rows (model figures are ``None`` when ``model`` is ``None``).
    """
    rows: list[dict[str, Any]] = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        targets = torch.stack([torch.stack([clips[i], clips[j]]) for i, j in chunk])  # [B, 2, 3, T, H, W]
        mix = blend(targets[:, 0], targets[:, 1], alpha)
        id_out = identity_outputs(mix, 2)
        id_loss, _ = pit_loss(id_out, targets)
        id_psnr = psnr(id_out, targets).mean(dim=1)
        if model is not None:
            out = model(mix.to(device)).float().cpu().clamp(-1, 1)
            m_loss, assign = pit_loss(out, targets)
            matched = torch.gather(out, 1, assign[:, :, None, None, None, None].expand_as(targets))
            m_psnr = psnr(matched, targets).mean(dim=1)
            m_corr = gradient_correlation(matched[:, 0].float(), matched[:, 1].float())
        for b, (i, j) in enumerate(chunk):
            rows.append({"a": i, "b": j, "identity_loss": id_loss[b].item(), "identity_psnr_db": id_psnr[b].item(),
                         "model_loss": m_loss[b].item() if model is not None else None,
                         "psnr_db": m_psnr[b].item() if model is not None else None,
                         "gradient_correlation": m_corr[b].item() if model is not None else None})
    for r in rows:
        r["ratio"] = r["model_loss"] / max(r["identity_loss"], 1e-12) if r["model_loss"] is not None else None
    n = max(len(rows), 1)

    def mean(key: str) -> float | None:
        vals = [r[key] for r in rows if r[key] is not None]
        return sum(vals) / len(vals) if vals else None

    result = {"identity_loss": mean("identity_loss"), "model_loss": mean("model_loss"),
              "identity_psnr_db": mean("identity_psnr_db"), "psnr_db": mean("psnr_db"),
              "gradient_correlation": mean("gradient_correlation"), "pairs": len(rows)}
    result["ratio"] = (result["model_loss"] / result["identity_loss"]
                       if result["model_loss"] is not None and result["identity_loss"] else None)
    ratios = sorted((r["ratio"], k) for k, r in enumerate(rows) if r["ratio"] is not None)
    result["median_ratio"] = statistics.median(x for x, _ in ratios) if ratios else None
    result["worst"] = rows[ratios[-1][1]] if ratios else None  # the same row: it gets the clip names too
    result["per_pair"] = rows[:n]
    return result


def trained_clip_names(model: str | Path | None) -> set[str]:
    """File names of the videos a model was trained on, to leave them out of an evaluation.

    ``model``: a run folder (its ``config.json``, following ``--init`` to the runs and weights it started
    from), a weights file whose metadata lists them (``trained_on``), or None for the packaged model. Clips
    are matched by file name, which survives copying a model to another machine.
    """

    run = Path(model) if model is not None else None
    if run is not None and (run / CONFIG).is_file():
        _, cfg, _ = read_run_config(run)
        names = {p.name for p in training_videos(cfg)}
        if cfg.init:
            names |= trained_clip_names(None if cfg.init == "default" else cfg.init)
        return names
    _, info, path = read_model_info(model)
    if "trained_on" not in info:
        raise CheckpointError(f"{path} does not record the videos it was trained on; give its run folder")
    return set(info["trained_on"])


def format_pairs(result: dict[str, Any], names: Sequence[str]) -> str:
    """Markdown table of the figures of each pair, clips named."""
    lines = ["| clip A | clip B | identity PSNR (dB) | model PSNR (dB) | model / identity loss | gradient corr. |",
             "|---|---|---|---|---|---|"]
    for r in result["per_pair"]:
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.3f}"
        model_psnr = "-" if r["psnr_db"] is None else f"{r['psnr_db']:.2f}"
        corr = "-" if r.get("gradient_correlation") is None else f"{r['gradient_correlation']:.2f}"
        lines.append(f"| {names[r['a']]} | {names[r['b']]} | {r['identity_psnr_db']:.2f} | {model_psnr} | {ratio} "
                     f"| {corr} |")
    return "\n".join(lines)


def format_table(result: dict[str, Any], title: str = "") -> str:
    """Markdown table of identity vs model figures."""
    def f(x: float | None, fmt: str) -> str:
        return "-" if x is None else format(x, fmt)

    lines = [title] if title else []
    lines += ["| | PIT loss (Eq. 2) | matched-layer PSNR (dB) |", "|---|---|---|",
              f"| identity (outputs = blend) | {f(result['identity_loss'], '.4f')} | "
              f"{f(result['identity_psnr_db'], '.2f')} |",
              f"| model | {f(result['model_loss'], '.4f')} | {f(result['psnr_db'], '.2f')} |",
              f"| model / identity | {f(result['ratio'], '.3f')} | |"]
    if result.get("median_ratio") is not None:
        worst = result["worst"]
        names = " + ".join(worst.get("clips", [str(worst["a"]), str(worst["b"])]))
        corr = result["gradient_correlation"]
        if result["pairs"] > 2:  # with one or two pairs the mean says it all
            lines += [f"| median pair, model / identity | {result['median_ratio']:.3f} | |",
                      f"| worst pair, model / identity ({names}) | {worst['ratio']:.3f} | {worst['psnr_db']:.2f} |"]
        lines.append(f"| gradient correlation of the matched layers | {corr:.2f} ({split_kind(corr)}: true layers "
                     f"about 0, tonal variants about 1) | |")
    lines.append(f"\n{result['pairs']} pairs, alpha = 0.5")
    return "\n".join(lines)
