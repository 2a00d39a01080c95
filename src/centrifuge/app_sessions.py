"""What each session of the web page (a browser tab) has running and keeps, so that no job outlives its page.

A job stops, at its next chunk of frames, and its folder is removed (:class:`centrifuge.jobs.Jobs`) when:

* the page's Cancel button is pressed (:meth:`Sessions.cancel`);
* Gradio cancels the event (the button's ``cancels=``, or a client's ``/cancel`` request): Gradio can only cancel
  the coroutine, and a job in a worker thread would run to its end unless told (:meth:`Sessions.run`);
* the page is closed or its connection drops (Gradio's ``unload`` event, :meth:`Sessions.close`), which also
  removes the results the page was showing: no page can show them any more.

Each job checks its own flag through its progress callback (:func:`guard`); the flag exists from the moment the
page's handler starts, before the input is checked, so a stop can never arrive too early to count. When a stopped
job's thread ends, the server's log says how long after the stop (``a stopped job ended ...``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from .jobs import Cancelled, Jobs, Progress

log = logging.getLogger(__name__)
T = TypeVar("T")


class StopFlag(threading.Event):
    """A job's stop flag, with why and when it was first set."""

    def __init__(self) -> None:
        super().__init__()
        self.why, self.at = "", 0.0

    def stop(self, why: str) -> None:
        if not self.is_set():
            self.why, self.at = why, time.monotonic()
        self.set()


def guard(flag: threading.Event, report: Progress | None = None) -> Progress:
    """A progress callback that raises :class:`Cancelled` once ``flag`` is set, else passes the call on."""

    def callback(done: int, total: int) -> None:
        if flag.is_set():
            raise Cancelled("cancelled")
        if report is not None:
            report(done, total)

    return callback


class Sessions:
    """The stop flag of each session's running job and the folder of its last result, by key
    (``session:tab``: a session runs at most one job per tab of the page)."""

    def __init__(self, jobs: Jobs):
        self.jobs = jobs
        self._lock = threading.Lock()
        self._flags: dict[str, StopFlag] = {}
        self._kept: dict[str, Path] = {}

    async def run(self, key: str, fn: Callable[[StopFlag], T]) -> T:
        """``fn(flag)`` in a worker thread, registered under ``key`` until the thread ends. If the awaiting
        coroutine is cancelled (by Gradio), the flag is set so that the job stops too (``fn`` must check it, e.g.
        through :func:`guard`), and the cancellation goes on once the thread has ended: until then the job holds
        its slot of Gradio's queue, so that no more than its limit of jobs ever run at once."""
        flag = StopFlag()
        with self._lock:
            self._flags[key] = flag
        work = asyncio.ensure_future(asyncio.to_thread(self._watched, key, flag, fn))
        try:
            return await asyncio.shield(work)  # a thread cannot be interrupted; the shield lets it end by itself
        except asyncio.CancelledError:
            flag.stop("its event was cancelled")
            with contextlib.suppress(BaseException):  # its outcome is nobody's now; a second cancel waits too
                await asyncio.shield(work)
            raise

    def _watched(self, key: str, flag: StopFlag, fn: Callable[[StopFlag], T]) -> T:
        try:
            return fn(flag)
        finally:
            with self._lock:
                if self._flags.get(key) is flag:
                    del self._flags[key]
            if flag.is_set():
                log.info("centrifuge app: a stopped job ended %.1f s after %s", time.monotonic() - flag.at, flag.why)

    def cancel(self, key: str) -> bool:
        """Stop the job running under ``key``; False when there is none."""
        with self._lock:
            flag = self._flags.get(key)
        if flag is not None:
            flag.stop("its page cancelled it")
        return flag is not None

    def keep(self, key: str, folder: Path, flag: threading.Event) -> None:
        """Remember the finished job the page under ``key`` will show (removed when that page closes); if its
        ``flag`` was set after the job's last check, remove it now and raise :class:`Cancelled`."""
        with self._lock:  # close() sets the flags under this lock: either it sees the folder or we see the flag
            if not flag.is_set():
                self._kept[key] = folder
                return
        self.jobs.remove(folder)
        raise Cancelled("cancelled")

    def close(self, session: str) -> tuple[int, int]:
        """The page ``session`` is gone: stop its jobs and remove its results. Returns (jobs stopped, folders
        removed)."""
        prefix = f"{session}:"
        with self._lock:
            flags = [f for k, f in self._flags.items() if k.startswith(prefix)]
            for flag in flags:
                flag.stop("its page closed")
            kept = [self._kept.pop(k) for k in [k for k in self._kept if k.startswith(prefix)]]
        for folder in kept:
            self.jobs.remove(folder)
        if flags or kept:
            log.info("centrifuge app: a page closed: %d running job(s) stopped, %d result folder(s) removed",
                     len(flags), len(kept))
        return len(flags), len(kept)
