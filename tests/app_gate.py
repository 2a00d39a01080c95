"""A gate inside the web page's server process, for tests that need a job to be running at a known moment.

``install(folder)`` wraps :func:`centrifuge.jobs.separate_job` (as the page calls it). While ``folder/hold``
exists, each job, at its first written chunk, creates ``folder/running-<video name>`` and waits there until
``folder/release`` exists or the server is stopping. A test can then see that a job is running (or that two
run at once) from the files alone, with no timing. Without ``hold`` the gate does nothing.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

#: The server's start, as ``python -c GATED_MAIN app ...``: ``python -m centrifuge app ...`` with the gate.
GATED_MAIN = ("import os, sys, app_gate; app_gate.install(os.environ['CENTRIFUGE_TEST_GATE']); "
              "from centrifuge.cli import main; sys.exit(main(sys.argv[1:]))")


def install(folder: str | Path) -> None:
    import centrifuge.app
    import centrifuge.jobs

    gate = Path(folder)
    original = centrifuge.jobs.separate_job

    def gated(jobs: Any, video: Any, *args: Any, on_progress: Any = None, **kwargs: Any) -> Any:
        waited: list[int] = []

        def report(done: int, total: int) -> None:
            if done and not waited and (gate / "hold").exists():
                waited.append(done)
                (gate / f"running-{Path(video).name}").touch()
                while not (gate / "release").exists() and not jobs.stopping.is_set():
                    time.sleep(0.05)  # polling a file: how long it takes is never asserted
            if on_progress is not None:
                on_progress(done, total)

        return original(jobs, video, *args, on_progress=report, **kwargs)

    centrifuge.jobs.separate_job = gated
    centrifuge.app.separate_job = gated  # the page's own reference, imported from centrifuge.jobs
