"""Evaluation on blended pairs (Sec. 4.1): permutation-invariant validation loss of the model against the
identity baseline (both outputs = the blend), PSNR of the matched layers, and the global tone oracle (each true
layer as a gain and offset of the blend, fitted knowing the layers): what re-toning the blend alone can reach.

Clips are the deterministic validation view: centre window of ``frames`` frames, shortest side resized to
``size``, centre crop. Each video is decoded once; every pair is blended with alpha = 0.5 (Eq. 1), or, with
``reflection``, like a scene and its reflection (:func:`centrifuge.reflections.reflection_blend`: the second
clip blurred, ghosted and faded, its weight ramped across the frame around 0.5; drawn from the pair's own
seed, so the same pair is the same blend in every evaluation). With ``tone_match`` the second clip of each
pair is first given the first one's colour statistics (:func:`centrifuge.tone_match.tone_matched`): a yardstick
that tone cannot pass, where the tone oracle is about the identity and only a content split scores below it.
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
from .reflections import reflection_blend
from .sources import training_videos
from .tone import gradient_correlation, split_kind, tone_oracle
from .tone_match import tone_matched

#: Pairs of video indices to evaluate (all, those touching a held-out set, or a seeded subset).
choose_pairs = all_pairs


def load_clips(paths: Sequence[str | Path], frames: int, size: int) -> torch.Tensor:
    """Validation clips of every video: ``[N, 3, frames, size, size]`` in [-1, 1]."""
    spec = ClipSpec(frames=frames, size=size, train=False)
    return torch.stack([to_model(sample_clip(p, spec, random.Random(0))) for p in paths])


def frozen_clips(clips: torch.Tensor) -> torch.Tensor:
    """Each clip of ``[N, 3, T, H, W]`` as its middle frame repeated: the same pairs without motion (Table 3's
    frozen videos), so that a model's figures with and without tell how much it uses motion."""
    middle = clips.shape[2] // 2
    return clips[:, :, middle:middle + 1].expand_as(clips).contiguous()


def freeze(clips: torch.Tensor, pairs: Sequence[tuple[int, int]], mode: str | None
           ) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """The clips and pairs to judge for ``evaluate --frozen``: as given (``None``), every clip frozen
    (``"both"``), or the frozen copies appended and the second clip of each pair taken from them (``"one"``:
    clip ``j`` frozen is ``N + j``)."""
    if mode == "both":
        return frozen_clips(clips), list(pairs)
    if mode == "one":
        n = len(clips)
        return torch.cat([clips, frozen_clips(clips)]), [(i, n + j) for i, j in pairs]
    return clips, list(pairs)


def _baseline_figures(mix: torch.Tensor, targets: torch.Tensor, oracle: bool) -> dict[str, torch.Tensor]:
    """Per blend: the identity's loss and PSNR, and with ``oracle`` the global tone oracle's loss
    (:func:`centrifuge.tone.tone_oracle`)."""
    id_out = identity_outputs(mix, targets.shape[1])
    figures = {"identity_loss": pit_loss(id_out, targets)[0], "identity_psnr_db": psnr(id_out, targets).mean(dim=1)}
    if oracle:
        figures["tone_oracle_loss"] = pit_loss(tone_oracle(mix, targets), targets)[0]
    return figures


def _model_figures(out: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per blend: the model's loss, and the PSNR and gradient correlation of its two matched layers."""
    m_loss, assign = pit_loss(out, targets)
    matched = torch.gather(out, 1, assign[:, :, None, None, None, None].expand_as(targets))
    return {"model_loss": m_loss, "psnr_db": psnr(matched, targets).mean(dim=1),
            "gradient_correlation": gradient_correlation(matched[:, 0].float(), matched[:, 1].float())}


def _over(loss: float | None, identity: float) -> float | None:
    """A loss as a fraction of the identity's (``None`` stays ``None``)."""
    return None if loss is None else loss / max(identity, 1e-12)


def _summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The means over the per-pair ``rows``, the ratios of the mean losses, the median and worst pair."""
    def mean(key: str) -> float | None:
        vals = [r[key] for r in rows if r[key] is not None]
        return sum(vals) / len(vals) if vals else None

    result = {key: mean(key) for key in ("identity_loss", "model_loss", "tone_oracle_loss", "identity_psnr_db",
                                         "psnr_db", "gradient_correlation")}
    result["pairs"] = len(rows)
    for ratio, loss in (("ratio", "model_loss"), ("tone_oracle_ratio", "tone_oracle_loss")):
        result[ratio] = _over(result[loss], result["identity_loss"]) if result["identity_loss"] else None
    scored = [r for r in rows if r["model_loss"] is not None and r["tone_oracle_loss"] is not None]
    result["beats_tone_oracle"] = sum(r["model_loss"] < r["tone_oracle_loss"] for r in scored) if scored else None
    ratios = sorted((r["ratio"], k) for k, r in enumerate(rows) if r["ratio"] is not None)
    result["median_ratio"] = statistics.median(x for x, _ in ratios) if ratios else None
    result["worst"] = rows[ratios[-1][1]] if ratios else None  # the same row: it gets the clip names too
    result["per_pair"] = rows
    return result


@torch.inference_mode()
def evaluate_clips(model: torch.nn.Module | None, clips: torch.Tensor, pairs: Sequence[tuple[int, int]],
                   alpha: float = 0.5, batch_size: int = 4, device: str | torch.device = "cpu",
                   with_tone_oracle: bool = True, reflection: bool = False,
                   tone_match: bool = False) -> dict[str, Any]:
    """Mean PIT loss and matched-layer PSNR over ``pairs`` of ``clips`` (``[N, 3, T, H, W]``).

    Returns a dict with ``identity_loss``, ``model_loss``, ``ratio``, ``psnr_db``, ``identity_psnr_db``,
    ``gradient_correlation`` (of the two matched model layers: about 0 for a content split, about 1 for tonal
    variants, :mod:`centrifuge.tone`), ``tone_oracle_loss`` and ``tone_oracle_ratio`` (the best global gain and
    offset of the blend per layer, fitted knowing the layers: :func:`centrifuge.tone.tone_oracle`),
    ``beats_tone_oracle`` (pairs where the model's loss is below the oracle's), ``pairs``, the ``median_ratio``
    and ``worst`` of the per-pair ratios, and per-pair ``per_pair`` rows (model figures are ``None`` when
    ``model`` is ``None``; the oracle's are ``None`` without ``with_tone_oracle``: it does not depend on the
    model, and on a small model costs about a third to a half of its forward pass). ``reflection``: each pair
    blended like a scene and its reflection (the module's docstring), the second layer's target as it appears.
    ``tone_match``: the second clip of each pair given the first one's colour statistics before blending.
    """
    rows: list[dict[str, Any]] = []
    none = dict.fromkeys(("model_loss", "psnr_db", "gradient_correlation", "tone_oracle_loss"))
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        targets = torch.stack([torch.stack([clips[i], clips[j]]) for i, j in chunk])  # [B, 2, 3, T, H, W]
        if tone_match:
            targets = torch.stack([tone_matched(t) for t in targets])
        if reflection:
            made = [reflection_blend(t, alpha, random.Random(f"reflection:{i}:{j}")) for t, (i, j) in zip(
                targets, chunk, strict=True)]
            mix, targets = torch.stack([m for m, _ in made]), torch.stack([t for _, t in made])
        else:
            mix = blend(targets[:, 0], targets[:, 1], alpha)
        figures = _baseline_figures(mix, targets, with_tone_oracle)
        if model is not None:
            figures |= _model_figures(model(mix.to(device)).float().cpu().clamp(-1, 1), targets)
        rows += [{"a": i, "b": j, **none, **{k: v[b].item() for k, v in figures.items()}}
                 for b, (i, j) in enumerate(chunk)]
    for r in rows:
        r["ratio"] = _over(r["model_loss"], r["identity_loss"])
        r["tone_oracle_ratio"] = _over(r["tone_oracle_loss"], r["identity_loss"])
    return _summary(rows)


def trained_clip_names(model: str | Path | None) -> set[str]:
    """File names of the videos a model was trained on, to leave them out of an evaluation.

    ``model``: a run folder (its ``config.json``, following ``--init`` to the runs and weights it started
    from), a weights file whose metadata lists them (``trained_on``), or None or ``"default"`` for the packaged
    model. Clips are matched by file name, which survives copying a model to another machine.
    """

    run = Path(model) if model is not None else None
    if run is not None and (run / CONFIG).is_file():
        _, cfg, _ = read_run_config(run)
        names = {p.name for p in training_videos(cfg)}
        if cfg.init:
            names |= trained_clip_names(cfg.init)
        return names
    _, info, path = read_model_info(model)
    if "trained_on" not in info:
        raise CheckpointError(f"{path} does not record the videos it was trained on; give its run folder")
    return set(info["trained_on"])


def format_pairs(result: dict[str, Any], names: Sequence[str]) -> str:
    """Markdown table of the figures of each pair, clips named."""
    lines = ["| clip A | clip B | identity PSNR (dB) | model PSNR (dB) | model / identity loss "
             "| tone oracle / identity loss | gradient corr. |", "|---|---|---|---|---|---|---|"]
    for r in result["per_pair"]:
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.3f}"
        oracle = "-" if r.get("tone_oracle_ratio") is None else f"{r['tone_oracle_ratio']:.3f}"
        model_psnr = "-" if r["psnr_db"] is None else f"{r['psnr_db']:.2f}"
        corr = "-" if r.get("gradient_correlation") is None else f"{r['gradient_correlation']:.2f}"
        lines.append(f"| {names[r['a']]} | {names[r['b']]} | {r['identity_psnr_db']:.2f} | {model_psnr} | {ratio} "
                     f"| {oracle} | {corr} |")
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
    if result.get("tone_oracle_loss") is not None:  # a reference: the best re-toning of the blend, given the answer
        lines += [f"| tone oracle (knows the true layers, only re-tones the blend) | "
                  f"{result['tone_oracle_loss']:.4f} | |",
                  f"| tone oracle / identity | {f(result['tone_oracle_ratio'], '.3f')} | |"]
    if result.get("median_ratio") is not None:
        worst = result["worst"]
        names = " + ".join(worst.get("clips", [str(worst["a"]), str(worst["b"])]))
        corr = result["gradient_correlation"]
        if result["pairs"] > 2:  # with one or two pairs the mean says it all
            lines += [f"| median pair, model / identity | {result['median_ratio']:.3f} | |",
                      f"| worst pair, model / identity ({names}) | {worst['ratio']:.3f} | {worst['psnr_db']:.2f} |"]
        lines.append(f"| gradient correlation of the matched layers | {corr:.2f} ({split_kind(corr)}: true layers "
                     f"about 0, tonal variants about 1) | |")
    how = "blended like a scene and its reflection" if result.get("reflection") else "alpha = 0.5"
    if result.get("tone_match"):
        how += ", the second clip given the first one's colour statistics"
    if result.get("frozen") == "one":
        how += ", the second clip of each pair frozen at its middle frame (one still layer)"
    elif result.get("frozen"):
        how += ", every clip frozen at its middle frame (no motion)"
    lines.append(f"\n{result['pairs']} pairs, {how}")
    if result.get("beats_tone_oracle") is not None:
        lines.append(f"model beats the tone oracle on {result['beats_tone_oracle']} of {result['pairs']} pairs")
    return "\n".join(lines)
