"""The web page's server (``centrifuge app``): its temporary root, launch, background calibration and a
clean stop on SIGINT or SIGTERM (see :mod:`centrifuge.app` for the page itself).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from . import app_text as text
from .app import MAX_JOBS, build_page
from .demo import asset
from .errors import CentrifugeError
from .jobs import Jobs, Limits, Stopped

log = logging.getLogger(__name__)



def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _calibrate(jobs: Jobs, models: list[str | None], device: str) -> threading.Thread:
    """Measure each model once in the background, so the page has a run-time estimate before the first job.
    The thread ends when the server stops (:meth:`Jobs.stop`): a thread still in PyTorch at exit aborts."""
    def run() -> None:
        for model in models:
            try:
                jobs.calibrate(model, device)
            except Stopped:
                return
            except Exception:  # an estimate is a nicety: the page works without one
                log.warning("could not measure the model's speed", exc_info=True)

    thread = threading.Thread(target=run, name="calibrate", daemon=True)
    thread.start()
    return thread


def _launch(page: Any, host: str, port: int, limits: Limits, jobs: Jobs) -> str:
    try:
        _, url, _ = page.launch(
            server_name=host, server_port=port, prevent_thread_lock=True, quiet=True,
            max_file_size=int(limits.max_upload_mb * 2**20), ssr_mode=False, show_error=True, css=text.CSS,
            # the shipped clips, and the job folders for the download links (random names, removed with the jobs)
            allowed_paths=[str(asset("")), str(jobs.dir)],
            # no run history (it would link to job files that are deleted) and no API page: a page for people
            footer_links=["gradio", "settings"], run_history=False)
    except OSError as e:
        raise CentrifugeError(f"cannot listen on {host}:{port} ({str(e).split('.')[0]})") from e
    return url


def serve(host: str = "127.0.0.1", port: int = 7860, model: str | None = None, device: str = "auto",
          limits: Limits | None = None) -> int:
    """Run the page until SIGINT (Ctrl-C) or SIGTERM; everything written is removed on the way out."""
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
    page = calibration = None
    # Our own handlers: a process started in the background (``centrifuge app &``) inherits an ignored SIGINT,
    # and ``kill -INT`` must still stop it like Ctrl-C.
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        page = build_page(jobs, limits, model, device)
        page.queue(default_concurrency_limit=MAX_JOBS)
        url = _launch(page, host, port, limits, jobs)
        calibration = _calibrate(jobs, [model] if model else [None], device)
        print(f"centrifuge app: {url} (Ctrl-C to stop)", flush=True)
        while True:
            time.sleep(1)
    except KeyboardInterrupt:
        print("centrifuge app: stopping", file=sys.stderr, flush=True)
    finally:
        try:
            jobs.stop()
            if calibration is not None:
                calibration.join(timeout=30)
            if page is not None:
                page.close()
        except KeyboardInterrupt:
            pass  # a second Ctrl-C: leave at once, but still remove the files
        finally:
            shutil.rmtree(root, ignore_errors=True)
            for sig, handler in previous.items():
                signal.signal(sig, handler)
    return 0
