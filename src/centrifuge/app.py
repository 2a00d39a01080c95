"""``centrifuge app``: a local web page to drop a video in and watch its layers come out (Gradio).

Two tabs. *Separate*: the input (an upload, or a shipped clip picked among the examples) is shown in a player;
a start and a length choose the part to separate, with an estimate of the run time on this machine; the job
goes through :func:`centrifuge.jobs.separate_job`, i.e. :func:`centrifuge.separate`, the same streaming
function as ``centrifuge separate``. One progress bar says what is happening; Cancel stops the job and
removes its files. Then the page shows the input and the chosen layers side by side (``preview.mp4``), every
kept layer (rows of equal width), the contact sheet, the ``layers.json`` figures as tables, and downloads.
*Blend*: two clips are blended and separated as ``centrifuge demo`` does (:func:`centrifuge.jobs.blend_job`),
with its identity-vs-model table. Layers are named by their model slot everywhere on the page. A job stops,
and its files go, when its page cancels it, closes or loses its connection (:mod:`centrifuge.app_sessions`).

Everything the server writes lives under one temporary root: Gradio's upload cache (``GRADIO_TEMP_DIR``) and
the per-job folders of :class:`centrifuge.jobs.Jobs`. The root is removed when the server stops; SIGINT
(Ctrl-C, or ``kill -INT``, even when started with SIGINT ignored) or SIGTERM first stops running jobs at
their next chunk of frames (the server's lifetime: :mod:`centrifuge.app_server`). Gradio is imported here and
there only, so the rest of the package works without the ``app`` extra; the words and tables are in
:mod:`centrifuge.app_text`.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import os
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import app_text as text
from .app_sessions import Sessions, guard
from .demo import BLEND_CLIPS, asset, fit_note
from .errors import CentrifugeError
from .jobs import Cancelled, Jobs, Limits, SeparationJob, Stopped, blend_job, seconds, separate_job
from .video import VideoInfo, check_video

log = logging.getLogger(__name__)

#: Separations that run at once; more wait in Gradio's queue (each tab still gets its own results).
MAX_JOBS = 2
#: Layer players on the page; a model with more layers still has all of them in the downloads.
MAX_SHOWN = 8
DEFAULT_MODEL = "default"
#: Fixed processing sizes offered when the input is larger (smaller ones are never upscaled).
FIXED_SIZES = (112, 224, 448)


def shipped_clips() -> list[str]:
    """Names of the clips shipped in ``centrifuge/assets``."""
    return sorted(p.name for p in asset("").glob("*.mp4"))


@functools.lru_cache(maxsize=1)
def _shipped_digests() -> dict[str, str]:
    return {hashlib.sha256(asset(name).read_bytes()).hexdigest(): name for name in shipped_clips()}


def shipped_name(path: str | Path) -> str | None:
    """The shipped clip whose content ``path`` has (an upload's own name is not trusted), or None."""
    path = Path(path)
    if path.stat().st_size > 50 * 2**20:  # larger than any shipped clip: not worth hashing
        return None
    return _shipped_digests().get(hashlib.sha256(path.read_bytes()).hexdigest())


@functools.lru_cache(maxsize=64)
def _probe(path: str) -> VideoInfo:
    return check_video(path)  # a still image, text or audio is refused here, as soon as it is uploaded


# --------------------------------------------------------------------------------------------------------
# the page's state and answers (no Gradio here, so the logic is plain Python)


@dataclass
class Page:
    """What the page's handlers share: the jobs, the limits, the models offered and where they run."""

    jobs: Jobs
    limits: Limits
    model: str | None = None
    device: str = "auto"
    train_sizes: dict[str, int | None] = field(default_factory=dict)
    sessions: Sessions = field(init=False)

    def __post_init__(self) -> None:
        self.sessions = Sessions(self.jobs)

    @property
    def models(self) -> list[tuple[str, str]]:
        models = [("the packaged default model", DEFAULT_MODEL)]
        if self.model:
            models.append((f"given at start: {Path(self.model).name}", self.model))
        return models

    def model_path(self, choice: str) -> str | None:
        return None if choice == DEFAULT_MODEL else choice

    def train_size(self, choice: str) -> int | None:
        """The crop size ``choice`` was trained at (from its metadata), for the automatic processing size."""
        if choice not in self.train_sizes:
            from .checkpoint import read_model_info

            train = read_model_info(self.model_path(choice))[1].get("train") or {}
            self.train_sizes[choice] = train.get("size") if isinstance(train.get("size"), int) else None
        return self.train_sizes[choice]

    def size_choices(self, info: VideoInfo | None, model_choice: str) -> list[tuple[str, str]]:
        """Processing sizes that make sense for ``info`` (none larger than the video: no silent upscaling)."""
        ref = self.train_size(model_choice)
        if info is None:
            auto = (f"automatic: {2 * ref} px for larger videos (twice the model's training size), else the "
                    "video's own size" if ref else "automatic: the video's own size")
            return [(auto, "auto")] + [(f"{n} px", str(n)) for n in FIXED_SIZES] + [("the video's own size", "input")]
        shortest = min(info.width, info.height)
        big = ref is not None and shortest > 2 * ref
        auto = (f"automatic: {2 * ref} px (twice the model's training size)" if big
                else f"automatic: the video's own size, {shortest} px")
        fixed = [(f"{n} px (faster, less detail)", str(n)) for n in FIXED_SIZES if n < shortest]
        return [(auto, "auto")] + fixed + [(f"the video's own size, {shortest} px (slow for large videos)", "input")]

    def processed(self, info: VideoInfo, size: str, model_choice: str) -> tuple[int, int]:
        """(width, height) :func:`centrifuge.separate` will process ``info`` at, as it chooses it."""
        shortest = min(info.width, info.height)
        ref = self.train_size(model_choice)
        if size == "auto":
            side = 2 * ref if ref is not None and shortest > 2 * ref else shortest
        else:
            side = shortest if size == "input" else min(int(size), shortest)
        scale = side / shortest
        return max(1, round(info.width * scale)), max(1, round(info.height * scale))

    def estimate(self, path: str | None, size: str, model_choice: str, start: float, length: float) -> str:
        """The line under the settings: frames, processing size, run time and wait."""
        if not path:
            return ""
        info = _probe(path)
        frames = max(1, min(round(length * info.fps), info.num_frames - round(start * info.fps)))
        w, h = self.processed(info, size, model_choice)
        guess = self.jobs.estimate(self.model_path(model_choice) or "default", frames, w, h)
        secs, how = guess if guess else (None, "")
        return text.estimate_line(secs, how, frames, (w, h), self.jobs.running, MAX_JOBS, self.jobs.first_free())


def failure(e: BaseException, inputs: list[str | None]) -> str:
    """The page's one line for a failed job; ``inputs`` (upload paths in the server's cache) are shown by name."""
    from .errors import USER_ERRORS, error_line

    if isinstance(e, Cancelled):
        return "Cancelled: the job stopped and its files were removed."
    if isinstance(e, Stopped):
        return "Stopped: the server is shutting down."
    if isinstance(e, USER_ERRORS):
        line = error_line(e).removeprefix("centrifuge: error: ")
        for path in filter(None, inputs):
            line = line.replace(path, Path(path).name)
        return f"Error: {line}"
    log.exception("job failed")
    return f"Error: an internal error ({type(e).__name__}); the server's log has the details."


# --------------------------------------------------------------------------------------------------------
# the page


def _status(message: str) -> Any:
    """The status line: styled by what it says (an error must not look like a success)."""
    import gradio as gr

    kind = ("error" if message.startswith("Error") else "note" if message.startswith(("Cancelled", "Stopped"))
            else "ok" if message else "empty")
    return gr.update(value=message, elem_classes=["status", f"status-{kind}"])


def _wants_request(fn: Any) -> Any:
    """Mark ``fn``'s ``request`` parameter as Gradio's request object. Gradio finds it by type hint, and the
    hints of this module are strings (``from __future__ import annotations``) naming a Gradio it cannot see."""
    import gradio as gr

    fn.__annotations__["request"] = gr.Request
    return fn


def _running() -> Any:
    """The status line while a job waits or runs: empty, with room for Gradio's progress bar and queue position
    (its words come from :func:`centrifuge.app_text.progress_line`)."""
    import gradio as gr

    return gr.update(value="", elem_classes=["status", "status-running"])


def build_page(jobs: Jobs, limits: Limits, model: str | None = None, device: str = "auto") -> Any:
    """The Gradio ``Blocks`` of the page (not launched)."""
    import gradio as gr

    page = Page(jobs, limits, model, device)
    with gr.Blocks(title="Visual Centrifuge", analytics_enabled=False,
                   delete_cache=(600, int(jobs.max_age_s))) as blocks:
        gr.Markdown(text.INTRO)
        with gr.Accordion("About: the layers, the figures, the model card", open=False, elem_id="about"):
            gr.Markdown(text.ABOUT)
            model_card = gr.Markdown(_model_card(page, page.models[-1][1]), elem_classes=["figures"])
        with gr.Tab("Separate"):
            model_choice = _separate_tab(page)
        with gr.Tab("Blend"):
            _blend_tab(page)
        model_choice.change(lambda m: _model_card(page, m), model_choice, model_card, queue=False)

        def on_close(request: gr.Request) -> None:  # the tab was closed or reloaded, or its connection dropped
            page.sessions.close(request.session_hash)

        blocks.unload(_wants_request(on_close))
    return blocks


def _model_card(page: Page, choice: str) -> str:
    from .checkpoint import read_model_info

    cfg, info, path = read_model_info(page.model_path(choice))
    return text.model_card({**info, "config": cfg}, "the packaged default model" if choice == DEFAULT_MODEL
                           else path.name)


def _separate_tab(page: Page) -> Any:
    """The Separate tab's components and events; returns the model choice (the model card follows it)."""
    import gradio as gr

    lim = page.limits
    with gr.Row(equal_height=False):
        with gr.Column(min_width=300):
            gr.Markdown(f"**Input video**: upload one (up to {lim.max_upload_mb:g} MB), or click an example below",
                        elem_classes=["caption"])
            video = gr.Video(show_label=False, sources=["upload"], interactive=True, loop=True, height=300,
                             elem_id="input")
            gr.Examples([[str(asset(c))] for c in shipped_clips()], [video], label="Examples: the shipped clips",
                        elem_id="examples", examples_per_page=12)
        with gr.Column(min_width=300):
            start = gr.Slider(0, 1, value=0, step=0.01, label="Start (seconds)", elem_id="start")
            length = gr.Slider(0.1, lim.max_seconds, value=lim.max_seconds, step=0.01,
                               label=f"Length (seconds; at most {lim.max_seconds:g})", elem_id="length")
            layers = gr.Radio([("the 2 most dissimilar", "best2"), ("all", "all")], value="best2",
                              label="Layers to keep", elem_id="layers")
            size = gr.Dropdown(page.size_choices(None, page.models[-1][1]), value="auto",
                               label="Processing size (shortest side; outputs keep the input's size)", elem_id="size")
            model_choice = gr.Radio(page.models, value=page.models[-1][1], label="Model", elem_id="model")
            estimate = gr.Markdown(elem_id="estimate")
            with gr.Row():
                run = gr.Button("Separate", variant="primary", elem_id="separate", min_width=120)
                cancel = gr.Button("Cancel", variant="stop", elem_id="cancel", min_width=120)
    status = gr.Markdown(elem_id="status", elem_classes=["status", "status-empty"])
    outputs = _results(page)
    job_state = gr.State(None)

    settings = [video, size, model_choice, start, length]
    video.change(_input_handler(page), [video, model_choice], [start, length, size, status], queue=False).then(
        _safe_estimate(page), settings, estimate, queue=False)
    for control in (size, model_choice, start, length):
        control.change(_safe_estimate(page), settings, estimate, queue=False)
    handler = _separate_handler(page, outputs, status, job_state)
    job = run.click(lambda: (_running(), gr.update(visible=False)), None, [status, outputs["box"]],
                    queue=False).then(
        handler, [video, layers, size, model_choice, start, length, job_state], [status, job_state, *outputs["all"]],
        concurrency_limit=MAX_JOBS, concurrency_id="jobs",
        show_progress="full", show_progress_on=[status])
    job.then(_safe_estimate(page), settings, estimate, queue=False)

    def on_cancel(request: gr.Request) -> Any:
        if page.sessions.cancel(f"{request.session_hash}:separate"):
            return _status("Cancelled: the job stops at its next frames and its files are removed.")
        return _status("Cancelled: no separation of this page had started.")

    cancel.click(_wants_request(on_cancel), None, status, cancels=[job], queue=False)
    return model_choice


def _input_handler(page: Page) -> Any:
    """On a new input: the sliders take its duration, the sizes its own; a file that is no video is refused now."""
    import gradio as gr

    lim = page.limits

    def on_input(path: str | None, model_value: str) -> tuple:
        if not path:
            return (gr.update(maximum=1, value=0), gr.update(maximum=lim.max_seconds, value=lim.max_seconds),
                    gr.update(choices=page.size_choices(None, model_value), value="auto"), _status(""))
        try:
            info = _probe(path)
        except Exception as e:  # not a video: say so now, before anyone presses Separate
            return gr.update(), gr.update(), gr.update(), _status(failure(e, [path]))
        dur = max(math.floor(seconds(info) * 100) / 100, 0.01)  # the sliders' step
        return (gr.update(maximum=dur, value=0),
                gr.update(maximum=max(min(dur, lim.max_seconds), 0.1), value=max(min(dur, lim.max_seconds), 0.1)),
                gr.update(choices=page.size_choices(info, model_value), value="auto"), _status(""))

    return on_input


def _safe_estimate(page: Page) -> Any:
    def estimate(path: str | None, size: str, model_choice: str, start: float, length: float) -> str:
        try:
            return page.estimate(path, size, model_choice, start, length)
        except Exception:  # an unreadable input already has its error in the status line
            return ""

    return estimate


def _results(page: Page) -> dict[str, Any]:
    """The components of a finished separation, in a box that stays hidden until there is one."""
    import gradio as gr

    with gr.Column(visible=False, elem_id="results") as box:
        gr.Markdown("**Input and the chosen layers, side by side**", elem_classes=["caption"])
        preview = gr.Video(show_label=False, loop=True, interactive=False, height=360, elem_id="preview")
        gr.Markdown("**Every layer kept, by model slot**", elem_classes=["caption"])
        cells, captions, players = [], [], []
        with gr.Row(elem_id="layer-grid"):
            for i in range(MAX_SHOWN):
                with gr.Column(visible=False, min_width=0, elem_classes=["layer-cell"]) as cell:
                    captions.append(gr.Markdown(elem_classes=["caption"]))
                    players.append(gr.Video(show_label=False, loop=True, interactive=False, height=240,
                                            elem_id=f"layer-{i}", elem_classes=["layer-video"]))
                cells.append(cell)
        gr.Markdown("**Contact sheet**: frames over the video (rows); the input, then each kept layer (columns)",
                    elem_classes=["caption"])
        contact = gr.Image(show_label=False, type="filepath", interactive=False, elem_id="contact",
                           buttons=["download", "fullscreen"])
        figures = gr.Markdown(elem_id="figures", elem_classes=["figures"])
        downloads = gr.HTML(elem_id="downloads")
    parts = {"box": box, "preview": preview, "contact": contact, "figures": figures, "downloads": downloads,
             "cells": cells, "captions": captions, "players": players}
    parts["all"] = [box, preview, contact, figures, downloads, *cells, *captions, *players]
    return parts


def _separate_handler(page: Page, out: dict[str, Any], status: Any, job_state: Any) -> Any:
    import gradio as gr

    async def on_separate(path: str | None, keep: str, size: str, model_value: str, start: float, length: float,
                          previous: str | None, request: gr.Request,
                          progress: Any = gr.Progress()) -> dict:  # noqa: B008
        page.jobs.remove(previous)  # this page's previous results
        key = f"{request.session_hash}:separate"

        def run(stop: threading.Event) -> SeparationJob:
            if not path:
                raise CentrifugeError("upload a video, or click one of the examples")
            whole = start <= 0 and length >= seconds(_probe(path)) - 0.01  # the sliders' step
            job = separate_job(page.jobs, path, page.limits, model=page.model_path(model_value), device=page.device,
                               layers=keep, size=size, on_progress=guard(stop, text.progress_reporter(progress)),
                               start_s=start, length_s=None if whole else length)
            page.sessions.keep(key, job.folder, stop)
            return job

        try:
            job = await page.sessions.run(key, run)
        except Exception as e:  # the page must survive any job
            return {status: _status(failure(e, [path])), job_state: None, out["box"]: gr.update(visible=False)}
        return {status: _status(_done_line(job.result.metadata)), job_state: str(job.folder), **_shown(out, job)}

    return _wants_request(on_separate)


def _done_line(meta: dict[str, Any]) -> str:
    names = meta["files"]["layers"]
    more = f" (the first {MAX_SHOWN} are shown; all are in the zip)" if len(names) > MAX_SHOWN else ""
    slots = ", ".join(str(s) for s in meta["order"])
    return (f"Done: {meta['input']['frames']} frames, {len(names)} layers (model slots {slots}) in "
            f"{meta['timings']['total_s']:.1f} s{more}.")


def _slot_copies(job: Any) -> list[tuple[str, Path]]:
    """Each kept layer under its slot's name (hard links: no copy), for the downloads."""
    meta, files = job.result.metadata, job.result.files
    folder = job.folder / "downloads"
    folder.mkdir(exist_ok=True)
    stem = Path(job.zip.name).name.removesuffix("-layers.zip")
    links = []
    for name, slot in zip(meta["files"]["layers"], meta["order"], strict=True):
        link = folder / f"{stem}-slot{slot}.mp4"
        try:
            os.link(files[name], link)
        except OSError:
            shutil.copyfile(files[name], link)
        links.append((f"{text.slot_name(slot)} ({link.name})", link))
    return links + [(f"everything as a zip ({job.zip.name}: the files of `centrifuge separate`)", job.zip)]


def _shown(out: dict[str, Any], job: Any) -> dict:
    import gradio as gr

    meta, files = job.result.metadata, job.result.files
    names, order, chosen = meta["files"]["layers"], meta["order"], meta["chosen"]
    shown: dict[Any, Any] = {out["box"]: gr.update(visible=True), out["preview"]: str(files["preview.mp4"]),
                             out["contact"]: str(files["contact.png"]), out["figures"]: text.figures_markdown(meta),
                             out["downloads"]: text.downloads_html(_slot_copies(job))}
    for i, (cell, caption, player) in enumerate(zip(out["cells"], out["captions"], out["players"], strict=True)):
        if i < len(names):
            mark = " (one of the 2 most dissimilar)" if len(names) > 2 and order[i] in chosen else ""
            shown.update({cell: gr.update(visible=True), caption: f"**{text.slot_name(order[i])}**{mark}",
                          player: str(files[names[i]])})
        else:
            shown.update({cell: gr.update(visible=False), caption: "", player: None})
    return shown


def _blend_tab(page: Page) -> None:
    """The Blend tab: two clips (shipped by default), blended and separated as ``centrifuge demo`` does."""
    import gradio as gr

    gr.Markdown(f"Blend two clips half and half ({text.FRAMES} frames at {text.SIZE}x{text.SIZE}), separate the "
                "blend, and see how well the model un-mixes it, as `centrifuge demo` does. Upload your own clips "
                "or click a pair of shipped ones below.")
    clips = []
    with gr.Row():
        for label, default in (("A", BLEND_CLIPS[0]), ("B", BLEND_CLIPS[1])):
            with gr.Column(min_width=260):
                gr.Markdown(f"**Clip {label}**", elem_classes=["caption"])
                clips.append(gr.Video(value=str(asset(default)), show_label=False, sources=["upload"],
                                      interactive=True, loop=True, height=220, elem_id=f"blend-{label.lower()}"))
    names = shipped_clips()
    pairs = [list(BLEND_CLIPS)] + [[a, b] for a, b in zip(names, names[1:], strict=False) if {a, b} != set(BLEND_CLIPS)]
    gr.Examples([[str(asset(a)), str(asset(b))] for a, b in pairs[:4]], clips, label="Examples: pairs of shipped clips",
                elem_id="blend-examples")
    model_choice = gr.Radio(page.models, value=page.models[-1][1], label="Model", elem_id="blend-model")
    run = gr.Button("Blend and separate", variant="primary", elem_id="blend")
    status = gr.Markdown(elem_id="blend-status", elem_classes=["status", "status-empty"])
    table = gr.Markdown(elem_id="blend-table", elem_classes=["figures"])
    with gr.Row():
        with gr.Column(min_width=260):
            gr.Markdown("**The blend and the 2 most dissimilar layers**", elem_classes=["caption"])
            preview = gr.Video(show_label=False, loop=True, interactive=False, elem_id="blend-preview")
        with gr.Column(min_width=260):
            gr.Markdown("**Blend, clip A, clip B, the layer matched to A, the layer matched to B**",
                        elem_classes=["caption"])
            truth = gr.Image(show_label=False, type="filepath", interactive=False, elem_id="truth",
                             buttons=["download", "fullscreen"])
    state = gr.State(None)

    async def on_blend(path_a: str | None, path_b: str | None, model_value: str, previous: str | None,
                       request: gr.Request, progress: Any = gr.Progress()) -> dict:  # noqa: B008
        page.jobs.remove(previous)
        key = f"{request.session_hash}:blend"

        def run(stop: threading.Event) -> tuple:
            if not (path_a and path_b):
                raise CentrifugeError("a blend needs two clips: upload them, or click an example")
            report = text.progress_reporter(progress, "frames of the blend", "making the contact sheets")
            made = blend_job(page.jobs, [path_a, path_b], page.limits, model=page.model_path(model_value),
                             device=page.device, on_progress=guard(stop, report))
            page.sessions.keep(key, made[0], stop)
            return *made, [shipped_name(p) for p in (path_a, path_b)]  # by content: an upload's name proves nothing

        try:
            folder, fig, files, info, shown = await page.sessions.run(key, run)
        except Exception as e:  # the page must survive any job
            return {status: _status(failure(e, [path_a, path_b])), table: "", preview: None, truth: None, state: None}
        paths = [path_a, path_b]
        names = [s or Path(p).name for s, p in zip(shown, paths, strict=True)]
        return {status: _status("Done."), table: text.blend_markdown(fig, names, Path(info["path"]).name,
                                                                    fit_note(info, [s for s in shown if s])),
                preview: str(files["preview.mp4"]), truth: str(files["truth"]), state: str(folder)}

    run.click(_running, None, status, queue=False).then(
        _wants_request(on_blend), [*clips, model_choice, state], [status, table, preview, truth, state],
        concurrency_limit=MAX_JOBS, concurrency_id="jobs", show_progress="full", show_progress_on=[status])
