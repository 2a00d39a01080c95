"""What the web page (``centrifuge app``) says: its explanations, the figures as tables, progress lines, the
model card and the page's style sheet. Plain strings only (no Gradio), so it is tested without a browser."""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .demo import FRAMES, SIZE

PAPER_URL = "https://arxiv.org/abs/1812.01461"

#: The page's own styles. Why each rule: the layer players and the contact sheet get rows of equal width
#: (Gradio's rows give a lone last player the whole width); tables scroll sideways rather than breaking words
#: (Gradio's prose style breaks them anywhere); an error must not look like a success line.
CSS = """
#layer-grid { display: grid !important; grid-template-columns: repeat(auto-fit, minmax(min(100%, 300px), 1fr));
  gap: var(--layout-gap, 16px); }
#layer-grid > * { min-width: 0 !important; width: auto !important; }
.figures table { display: block; overflow-x: auto; max-width: 100%; }
.figures th, .figures td { word-break: normal !important; overflow-wrap: normal !important; hyphens: none; }
.caption p { margin: 0 !important; font-weight: 600; }
.status-error { border-left: 6px solid #dc2626; background: #fef2f2; color: #7f1d1d; padding: 8px 12px;
  border-radius: 4px; }
.status-error *, .status-ok *, .status-note * { color: inherit !important; }
.status-ok { border-left: 6px solid #16a34a; background: #f0fdf4; color: #14532d; padding: 8px 12px;
  border-radius: 4px; }
.status-note { border-left: 6px solid #2563eb; background: #eff6ff; color: #1e3a8a; padding: 8px 12px;
  border-radius: 4px; }
.status-empty { display: none; }
.status-running { min-height: 80px; overflow: hidden; }
"""

INTRO = (f"# Visual Centrifuge\nSeparate a video into layers (reflections, things seen through glass, shadows), "
         f"as in [*The Visual Centrifuge*]({PAPER_URL}) (Alayrac, Carreira, Zisserman, CVPR 2019).")

ABOUT = f"""
**Layers.** The model turns a video into a fixed number of *layers* (videos of the same size), one per
*slot* of its output; it learnt this by separating pairs of videos that were blended half and half, so the
mean of its layers is meant to give the input back. On a single real video a slot may take a reflection,
what is seen through a window, a shadow or a colour cast, or nothing distinct. "Slot 3" is the model's
fourth output, everywhere on this page: a slot keeps its meaning over the whole video (consecutive windows
of frames are matched slot to slot).

**"The 2 most dissimilar".** A model with more slots than a scene has layers gives several similar
ones. The page keeps the two slots whose layers differ most from each other over the whole video (the
paper's rule, Sec. 3.2); "all" keeps every slot.

**The figures.** *Input and the chosen layers*: the input and the two most dissimilar layers side by side,
in step. *Every layer kept*: one player per slot. *Contact sheet*: frames spread over the video (rows),
the input and each kept layer (columns). *Figures table*: per slot, its mean and spread of colour (0-255
per channel) and how far it is from the input on average (0: a copy of the input); then how well the mean
of the layers gives the input back (PSNR in dB: higher is closer; the model is trained for it, so a high
figure alone does not mean a good separation), where and how fast it ran. *Blend tab*: two clips are
blended, so the true layers are known and the model is scored against them, beside the "identity" answer
(the blend itself as both layers): a better model gains more dB over it.

Read more: [the paper]({PAPER_URL}); the model card below, and in full in the project's README
("The default model") and docs/model.md.
"""


def model_card(info: dict[str, Any], name: str) -> str:
    """A short model card from a weights file's metadata (``trained_on`` and training geometry included)."""
    cfg = info.get("config")
    rows = [("model", name)]
    if cfg is not None:
        rows.append(("slots (output layers)", str(getattr(cfg, "n_layers", "?"))))
    train = info.get("train") or {}
    if train.get("size"):
        rows.append(("trained on clips of", f"{train.get('frames', '?')} frames of {train['size']}x{train['size']}"))
    for key, label in (("preset", "recipe"), ("step", "iterations"), ("data", "data"), ("hardware", "hardware")):
        if info.get(key):
            rows.append((label, str(info[key])))
    seen = info.get("trained_on") or []
    if seen:
        rows.append(("clips it was trained on", ", ".join(seen) + " (on these, results show memory, not what a new "
                     "video gets)"))
    return "| model card | |\n|---|---|\n" + "\n".join(f"| {k} | {v} |" for k, v in rows)


def _rgb(values: list[float]) -> str:
    return ", ".join(f"{v:.0f}" for v in values)


def slot_name(slot: int) -> str:
    """The page's name for a layer: the model slot it comes from, the same in every mode."""
    return f"slot {slot}"


def figures_markdown(meta: dict[str, Any]) -> str:
    """``layers.json`` as two Markdown tables: one row per model slot, then the run's summary."""
    files = dict(zip(meta["order"], meta["files"]["layers"], strict=True))
    lines = ["| layer | kept as | chosen | mean RGB | spread (std) RGB | mean abs. diff. to input |",
             "|---|---|---|---|---|---|"]
    for st in meta["layer_stats"]:
        slot = st["slot"]
        kept = f"`{files[slot]}`" if slot in files else "not kept"
        lines.append(f"| {slot_name(slot)} | {kept} | {'yes' if slot in meta['chosen'] else ''} | "
                     f"{_rgb(st['mean_rgb'])} | {_rgb(st['std_rgb'])} | {st['mean_abs_diff_to_input']:.2f} |")
    inp, cfg, rec, t = meta["input"], meta["settings"], meta["recomposition"], meta["timings"]
    pw, ph = cfg["inference_size"]
    rows = [("input", f"{inp['width']}x{inp['height']}, {inp['frames']} frames at {inp['fps_out']:.3g} frames/s"),
            ("processed at", f"{pw}x{ph}, windows of {cfg['window']} frames overlapping by {cfg['overlap']}"),
            ("device", f"{cfg['device']} ({cfg['compute_dtype']})")]
    for key, label in (("chosen_pair", "mean of the chosen pair gives the input back (model's resolution)"),
                       ("chosen_pair_encoded", "... from the written files"),
                       ("all_layers", "mean of all layers gives the input back")):
        if key in rec:
            rows.append((label, f"{rec[key]['psnr_db']:.2f} dB PSNR, mean abs. error {rec[key]['l1']:.2f} (0-255)"))
    tone = meta.get("content_or_tone")
    if tone is not None:
        kind = "different content" if tone["split"] == "content" else "tonal variants of one picture, not layers"
        rows.append(("content or tone", f"the chosen layers' edges correlate at {tone['chosen_pair']:.2f}: {kind} "
                                        "(about 0: different content; about 1: the same picture in two tones)"))
    rows.append(("time", f"{t['total_s']:.1f} s ({t['frames_per_s']} frames/s)"))
    return "\n".join(lines + ["", "| run | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows])


def blend_markdown(figures: dict[str, Any], names: list[str], model: str, note: str = "") -> str:
    """The demo's identity-vs-model table, with the PSNR gain spelled out (and ``note``, see
    :func:`centrifuge.demo.fit_note`)."""
    from .evaluate import format_table

    table = format_table(figures, f"Blend of {names[0]} and {names[1]} ({FRAMES} frames, {SIZE}x{SIZE}), "
                                  f"model {model}:\n")
    gain = figures["psnr_db"] - figures["identity_psnr_db"]
    return (f"{table}\n\nThrough the same path as a separation (windows, stitching, the 2 most dissimilar layers): "
            f"PIT loss {figures['separate_loss']:.4f}.\n\nThe model's layers match the true clips at "
            f"{figures['psnr_db']:.2f} dB PSNR, {gain:+.2f} dB against using the blend itself as both layers."
            + (f"\n\n{note}" if note else ""))


def downloads_html(files: list[tuple[str, Path]]) -> str:
    """Links that download each ``(label, file)``; the files are served by Gradio's file route."""
    items = "".join(f'<li><a href="/gradio_api/file={quote(str(path))}" download="{html.escape(path.name)}">'
                    f"{html.escape(label)}</a></li>" for label, path in files)
    return f'<div class="downloads"><p><strong>Downloads</strong></p><ul>{items}</ul></div>'


WRITING = "finishing the contact sheet, the checks and the downloads"


def progress_line(done: int, total: int, started: float, what: str = "frames", finishing: str = WRITING) -> str:
    """The progress bar's words: what is happening now, and an estimate of what is left once it means something.
    ``done`` of ``total`` is :func:`centrifuge.separate`'s count, in which a run that writes its layers in a
    second pass counts each frame twice: it is shown as a share, not as frames."""
    if done <= 0:
        return ("Starting: reading the video and loading the model (a few seconds; the first window of frames "
                "takes longest)")
    if done >= total:
        return f"All {what} separated and the layers written; {finishing}"
    left = (time.monotonic() - started) / done * (total - done)
    return f"Separating the {what} and writing the layers: {100 * done // total}%, about {left:.0f} s left"


def progress_reporter(progress: Any, what: str = "frames", finishing: str = WRITING) -> Callable[[int, int], None]:
    """An ``on_progress(done, total)`` callback that drives a Gradio progress bar with :func:`progress_line`."""
    started = time.monotonic()

    def report(done: int, total: int) -> None:
        progress(done / total if total > 0 else None, desc=progress_line(done, total, started, what, finishing))

    return report


def estimate_line(seconds: float | None, how: str, frames: int, size: tuple[int, int], busy: int, slots: int,
                  wait: float | None = None) -> str:
    """The words under the settings: the part's size, the run time estimate and the wait (``wait``: seconds until
    a slot is expected to free), if any."""
    line = f"{frames} frames, processed at {size[0]}x{size[1]}. "
    if seconds is None:
        line += "Run time: measured while the server starts; shown in a moment."
    else:
        line += f"Run time on this machine: about {max(1, round(seconds))} s (from {how})."
    if busy >= slots:
        line += f" All {slots} job slots are busy now: yours will wait in the queue (its position is shown)"
        line += f", about {max(1, round(wait))} s for the first slot to free." if wait is not None else "."
    return line
