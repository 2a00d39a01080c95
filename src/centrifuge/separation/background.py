"""Background: encoding on one worker thread, overlapping the caller's next piece of work.

x264 and PyAV's encoding release the GIL, so a second core encodes while the first decodes, runs the model
or composes. At most one task waits behind the running one (the caller blocks until the previous task is
done), so memory stays bounded to one extra chunk of frames.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

__all__ = ["Background"]


class Background:
    """One worker thread for tasks run in order; its errors surface at the next :meth:`submit` or :meth:`wait`.

    Registered on ``stack`` after the resources its tasks use, so that on an error the worker is waited for
    (its error dropped: the one being unwound is the one told) before those resources are closed.
    """

    def __init__(self, stack: contextlib.ExitStack):
        self._worker = stack.enter_context(ThreadPoolExecutor(max_workers=1, thread_name_prefix="encode"))
        self._pending: Future[Any] | None = None
        stack.callback(self._settle)  # an ExitStack unwinds in reverse: this runs before the resources' exits

    def submit(self, task: Callable[..., Any], *args: Any) -> None:
        """Run ``task(*args)`` once the previous task is done (re-raising its error); its arguments must not
        change until then."""
        self.wait()
        self._pending = self._worker.submit(task, *args)

    def wait(self) -> None:
        """Wait for the task in flight, re-raising its error."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def _settle(self) -> None:
        with contextlib.suppress(Exception):
            self.wait()
