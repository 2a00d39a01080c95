"""``centrifuge app``: a local web page to drop a video in and watch its layers come out (Gradio).

Two tabs. *Separate*: an uploaded or shipped clip goes through :func:`centrifuge.jobs.separate_job`, i.e.
:func:`centrifuge.separate`, the same streaming function as ``centrifuge separate``; the page shows a progress
bar (frames, time left), then the input and the chosen layers side by side (``preview.mp4``), every written
layer, the contact sheet, the ``layers.json`` figures as tables, and downloads (each layer, all as a zip).
*Blend*: two clips are blended and separated as ``centrifuge demo`` does
(:func:`centrifuge.jobs.blend_job`), with its identity-vs-model table.

Everything the server writes lives under one temporary root: Gradio's upload cache (``GRADIO_TEMP_DIR``) and
the per-job folders of :class:`centrifuge.jobs.Jobs`. The root is removed when the server stops; Ctrl-C (or
SIGTERM) first stops running jobs at their next chunk of frames. Gradio is imported here only, so the rest
of the package works without the ``app`` extra.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .demo import BLEND_CLIPS, FRAMES, SIZE, asset, fit_note
from .errors import CentrifugeError
from .jobs import Jobs, Limits, Stopped, blend_job, separate_job

log = logging.getLogger(__name__)

#: Separations that run at once; more wait in Gradio's queue (each tab still gets its own results).
MAX_JOBS = 2
#: Layer players on the page; a model with more layers still has all of them in the downloads.
MAX_SHOWN = 8
DEFAULT_MODEL = "default"
SIZES = [("auto (twice the model's training size, for larger videos)", "auto"), ("112", "112"), ("224", "224"),
         ("448", "448"), ("the input's own size (slow for large videos)", "input")]


def shipped_clips() -> list[str]:
    """Names of the clips shipped in ``centrifuge/assets``."""
    return sorted(p.name for p in asset("").glob("*.mp4"))


# --------------------------------------------------------------------------------------------------------
# what the page shows


def _rgb(values: list[float]) -> str:
    return ", ".join(f"{v:.0f}" for v in values)


def figures_markdown(meta: dict[str, Any]) -> str:
    """``layers.json`` as two Markdown tables: one row per model slot, then the run's summary."""
    files = dict(zip(meta["order"], meta["files"]["layers"], strict=True))
    lines = ["#### Figures (`layers.json`)", "", "| layer | model slot | chosen | mean RGB | std RGB | mean abs. diff. "
             "to input |", "|---|---|---|---|---|---|"]
    for st in meta["layer_stats"]:
        slot = st["slot"]
        name = Path(files[slot]).stem if slot in files else "(not kept)"
        lines.append(f"| {name} | {slot} | {'yes' if slot in meta['chosen'] else ''} | {_rgb(st['mean_rgb'])} | "
                     f"{_rgb(st['std_rgb'])} | {st['mean_abs_diff_to_input']:.2f} |")
    inp, cfg, rec, t = meta["input"], meta["settings"], meta["recomposition"], meta["timings"]
    pw, ph = cfg["inference_size"]
    rows = [("input", f"{inp['width']}x{inp['height']}, {inp['frames']} frames at {inp['fps_out']:.3g} frames/s"),
            ("processed at", f"{pw}x{ph}, windows of {cfg['window']} frames overlapping by {cfg['overlap']}"),
            ("device", f"{cfg['device']} ({cfg['compute_dtype']})")]
    for key, label in (("chosen_pair", "mean of the chosen pair recomposes the input (model's resolution)"),
                       ("chosen_pair_encoded", "... from the written files"),
                       ("all_layers", "mean of all layers recomposes the input")):
        if key in rec:
            rows.append((label, f"{rec[key]['psnr_db']:.2f} dB PSNR, L1 {rec[key]['l1']:.2f} (0-255)"))
    rows.append(("time", f"{t['total_s']:.1f} s ({t['frames_per_s']} frames/s)"))
    lines += ["", "| run | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows]
    return "\n".join(lines)


def blend_markdown(figures: dict[str, Any], names: list[str], model: str, note: str = "") -> str:
    """The demo's identity-vs-model table, with the PSNR gain spelled out (and ``note``, see
    :func:`centrifuge.demo.fit_note`)."""
    from .evaluate import format_table

    table = format_table(figures, f"Blend of {names[0]} and {names[1]} ({FRAMES} frames, {SIZE}x{SIZE}), "
                                  f"model {model}:\n")
    gain = figures["psnr_db"] - figures["identity_psnr_db"]
    return (f"{table}\n\nThrough `centrifuge separate`'s path (windows, stitching, the 2 most dissimilar layers): "
            f"PIT loss {figures['separate_loss']:.4f}.\n\nThe model's layers match the true clips at "
            f"{figures['psnr_db']:.2f} dB PSNR, {gain:+.2f} dB against using the blend itself as both layers."
            + (f"\n\n{note}" if note else ""))


def _eta(started: float, done: int, total: int) -> str:
    if done <= 0:
        return ""
    left = (time.monotonic() - started) / done * max(total - done, 0)
    return f", about {left:.0f} s left"


def _progress_reporter(progress: Any) -> Callable[[int, int], None]:
    started = time.monotonic()

    def report(done: int, total: int) -> None:
        progress((done, total), desc=f"{done}/{total} frames{_eta(started, done, total)}", unit="frames")

    return report


def _failure(e: BaseException, inputs: list[str | None]) -> str:
    """The page's one line for a failed job; ``inputs`` (upload paths in the server's cache) are shown by name."""
    from .errors import USER_ERRORS, error_line

    if isinstance(e, Stopped):
        return "**Stopped:** the server is shutting down."
    if isinstance(e, USER_ERRORS):
        line = error_line(e)
        for path in filter(None, inputs):
            line = line.replace(path, Path(path).name)
        return f"**Error:** {line}"
    log.exception("job failed")
    return f"**Error:** an internal error ({type(e).__name__}); the server's log has the details."


def _pick(upload: str | None, clip: str | None) -> str:
    if upload:
        return upload
    if clip in shipped_clips():  # a name from the list, never a path
        return str(asset(clip))
    raise CentrifugeError("upload a video or pick one of the shipped clips")


# --------------------------------------------------------------------------------------------------------
# the page


def build_page(jobs: Jobs, limits: Limits, model: str | None = None, device: str = "auto") -> Any:
    """The Gradio ``Blocks`` of the page (not launched)."""
    import gradio as gr

    clips = shipped_clips()
    models = [("the packaged default model", DEFAULT_MODEL)]
    if model:
        models.append((f"given at start: {model}", model))

    def model_path(choice: str) -> str | None:
        return None if choice == DEFAULT_MODEL else choice

    with gr.Blocks(title="Visual Centrifuge", analytics_enabled=False,
                   delete_cache=(600, int(jobs.max_age_s))) as page:
        gr.Markdown("# Visual Centrifuge\nSeparate a video into layers (reflections, things seen through glass, "
                    "shadows): *The Visual Centrifuge*, Alayrac, Carreira, Zisserman, CVPR 2019.")
        with gr.Tab("Separate"):
            job_state = gr.State(None)
            with gr.Row():
                with gr.Column():
                    upload = gr.File(label=f"Upload a video (up to {limits.max_upload_mb:g} MB and "
                                           f"{limits.max_seconds:g} s)", type="filepath", elem_id="upload")
                    clip = gr.Dropdown([("(none)", "")] + [(c, c) for c in clips], value="",
                                       label="... or pick a shipped clip", elem_id="clip")
                with gr.Column():
                    layers = gr.Radio([("the 2 most dissimilar", "best2"), ("all", "all")], value="best2",
                                      label="Layers to keep", elem_id="layers")
                    size = gr.Dropdown(SIZES, value="auto", label="Processing size (shortest side, pixels)",
                                       elem_id="size")
                    model_choice = gr.Radio(models, value=models[-1][1], label="Model", elem_id="model")
                    run = gr.Button("Separate", variant="primary", elem_id="separate")
            status = gr.Markdown(elem_id="status")
            preview = gr.Video(label="Input and the chosen layers, side by side", loop=True, interactive=False,
                               height=320, elem_id="preview")
            with gr.Row():
                players = [gr.Video(visible=False, loop=True, interactive=False, height=240, elem_id=f"layer-{i}",
                                    elem_classes=["layer-video"]) for i in range(MAX_SHOWN)]
            with gr.Row():
                with gr.Column():
                    figures = gr.Markdown(elem_id="figures")
                    downloads = gr.File(label="Downloads: each layer, and all outputs as a zip",
                                        file_count="multiple", interactive=False, elem_id="downloads")
                contact = gr.Image(label="Contact sheet", type="filepath", interactive=False, height=480,
                                   elem_id="contact")

        def on_separate(upload_path: str | None, clip_name: str, keep: str, size_choice: str, model_value: str,
                        previous: str | None, progress: gr.Progress = gr.Progress()) -> dict:  # noqa: B008
            jobs.remove(previous)  # this page's previous results
            hidden = {p: gr.update(value=None, visible=False) for p in players}
            empty = {preview: None, contact: None, figures: "", downloads: None, job_state: None, **hidden}
            try:
                size_arg = size_choice if size_choice in ("auto", "input") else int(size_choice)
                job = separate_job(jobs, _pick(upload_path, clip_name), limits, model=model_path(model_value),
                                   device=device, layers=keep, size=size_arg,
                                   on_progress=_progress_reporter(progress))
            except Exception as e:  # the page must survive any job
                return {**empty, status: _failure(e, [upload_path])}
            meta, files = job.result.metadata, job.result.files
            names = meta["files"]["layers"]
            shown = {p: gr.update(value=str(files[name]), visible=True,
                                  label=f"{Path(name).stem} (model slot {slot})")
                     for p, name, slot in zip(players, names, meta["order"], strict=False)}
            more = f" (the first {MAX_SHOWN} are shown; all are in the zip)" if len(names) > MAX_SHOWN else ""
            return {**empty, **shown,
                    status: f"Done: {meta['input']['frames']} frames, {len(names)} layers{more}.",
                    preview: str(files["preview.mp4"]), contact: str(files["contact.png"]),
                    figures: figures_markdown(meta), job_state: str(job.folder),
                    downloads: [str(files[n]) for n in names] + [str(job.zip)]}

        run.click(on_separate, [upload, clip, layers, size, model_choice, job_state],
                  [status, preview, *players, contact, figures, downloads, job_state],
                  concurrency_limit=MAX_JOBS, concurrency_id="jobs")

        with gr.Tab("Blend"):
            gr.Markdown(f"Blend two clips half and half ({FRAMES} frames at {SIZE}x{SIZE}), separate the blend, and "
                        "see how well the model un-mixes it, as `centrifuge demo` does.")
            blend_state = gr.State(None)
            pick_a, pick_b = [], []
            with gr.Row():
                for label, default, picks in (("A", BLEND_CLIPS[0], pick_a), ("B", BLEND_CLIPS[1], pick_b)):
                    with gr.Column():
                        picks.append(gr.File(label=f"Clip {label}: upload", type="filepath", height=140,
                                             elem_id=f"blend-upload-{label.lower()}"))
                        picks.append(gr.Dropdown([(c, c) for c in clips], value=default,
                                                 label="... or a shipped clip", elem_id=f"blend-clip-{label.lower()}"))
            blend_model = gr.Radio(models, value=models[-1][1], label="Model", elem_id="blend-model")
            blend_run = gr.Button("Blend and separate", variant="primary", elem_id="blend")
            blend_table = gr.Markdown(elem_id="blend-table")
            with gr.Row():
                blend_preview = gr.Video(label="Blend and the chosen layers", loop=True, interactive=False,
                                         elem_id="blend-preview")
                truth = gr.Image(label="Blend | clip A | clip B | layer ~A | layer ~B", type="filepath",
                                 interactive=False, elem_id="truth")

        def on_blend(upload_a: str | None, clip_a: str, upload_b: str | None, clip_b: str, model_value: str,
                     previous: str | None, progress: gr.Progress = gr.Progress()) -> dict:  # noqa: B008
            jobs.remove(previous)
            try:
                paths = [_pick(upload_a, clip_a), _pick(upload_b, clip_b)]
                folder, fig, files, info = blend_job(jobs, paths, limits, model=model_path(model_value),
                                                     device=device, on_progress=_progress_reporter(progress))
            except Exception as e:  # the page must survive any job
                return {blend_table: _failure(e, [upload_a, upload_b]), blend_preview: None, truth: None,
                        blend_state: None}
            table = blend_markdown(fig, [Path(p).name for p in paths], Path(info["path"]).name, fit_note(info, paths))
            return {blend_table: table, blend_preview: str(files["preview.mp4"]), truth: str(files["truth"]),
                    blend_state: str(folder)}

        blend_run.click(on_blend, [*pick_a, *pick_b, blend_model, blend_state],
                        [blend_table, blend_preview, truth, blend_state],
                        concurrency_limit=MAX_JOBS, concurrency_id="jobs")
    return page


# --------------------------------------------------------------------------------------------------------
# the server


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def serve(host: str = "127.0.0.1", port: int = 7860, model: str | None = None, device: str = "auto",
          limits: Limits | None = None) -> int:
    """Run the page until Ctrl-C or SIGTERM; everything written is removed on the way out."""
    from .checkpoint import read_model_info
    from .devices import pick_device

    limits = limits or Limits()
    pick_device(device)  # a bad device or model is one line now, not an error on the page later
    if model:
        read_model_info(model)
    root = Path(tempfile.mkdtemp(prefix="centrifuge-app-"))
    # Before Gradio is imported: its upload cache goes under the root too, and nothing is reported home.
    os.environ["GRADIO_TEMP_DIR"] = str(root)
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # Gradio's own start-up requests, one line each
    jobs = Jobs(root / "jobs")
    page = None
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        page = build_page(jobs, limits, model, device)
        page.queue(default_concurrency_limit=MAX_JOBS)
        try:
            _, url, _ = page.launch(server_name=host, server_port=port, prevent_thread_lock=True, quiet=True,
                                    max_file_size=int(limits.max_upload_mb * 2**20), ssr_mode=False,
                                    allowed_paths=[str(asset(""))], show_error=True)
        except OSError as e:
            raise CentrifugeError(f"cannot listen on {host}:{port} ({str(e).split('.')[0]})") from e
        print(f"centrifuge app: {url} (Ctrl-C to stop)", flush=True)
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        print("centrifuge app: stopping", file=sys.stderr, flush=True)
    finally:
        try:
            jobs.stop()
            if page is not None:
                page.close()
        except KeyboardInterrupt:
            pass  # a second Ctrl-C: leave at once, but still remove the files
        finally:
            shutil.rmtree(root, ignore_errors=True)
            signal.signal(signal.SIGTERM, previous)
    return 0
