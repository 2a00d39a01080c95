"""No job outlives its page: ``centrifuge.app_sessions`` (the page's own tests are in ``test_app.py``)."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

from centrifuge.app_sessions import Sessions, guard
from centrifuge.jobs import Cancelled, Jobs

WAIT_S = 120  # only a failure waits this long


def test_a_cancelled_coroutine_stops_its_job_thread(tmp_path, caplog):
    # Gradio cancels an event by cancelling its coroutine; the worker thread must be told, or it runs to its end.
    sessions, started, seen = Sessions(Jobs(tmp_path)), threading.Event(), []

    def job(flag: threading.Event) -> None:
        started.set()
        seen.append(flag.wait(timeout=WAIT_S))

    async def main() -> None:
        task = asyncio.ensure_future(sessions.run("a:separate", job))
        await asyncio.to_thread(started.wait, WAIT_S)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert seen == [True]  # the cancelled task ends after its thread (it holds its slot of the queue until then)

    with caplog.at_level(logging.INFO, logger="centrifuge.app_sessions"):
        asyncio.run(main())
    assert "a stopped job ended" in caplog.text and "after its event was cancelled" in caplog.text
    assert not sessions.cancel("a:separate")  # the key is free once the thread has ended


def test_run_returns_the_result_and_leaves_the_flag_alone(tmp_path):
    sessions, flags = Sessions(Jobs(tmp_path)), []

    def job(flag: threading.Event) -> int:
        flags.append(flag)
        return 5

    assert asyncio.run(sessions.run("a:blend", job)) == 5
    assert not flags[0].is_set()


def test_guard_raises_once_the_flag_is_set():
    flag, calls = threading.Event(), []
    report = guard(flag, lambda done, total: calls.append((done, total)))
    report(1, 4)
    flag.set()
    with pytest.raises(Cancelled):
        report(2, 4)
    assert calls == [(1, 4)]


def _keep_finished(jobs: Jobs, sessions: Sessions, key: str) -> object:
    """A finished job's folder, kept under ``key`` as the page's handler keeps it."""
    def job(flag: threading.Event) -> object:
        with jobs.job() as folder:
            (folder / "layer_0.mp4").write_bytes(b"x")
        sessions.keep(key, folder, flag)
        return folder

    return asyncio.run(sessions.run(key, job))


def test_closing_a_page_stops_its_jobs_and_removes_its_results(tmp_path):
    jobs = Jobs(tmp_path / "jobs")
    sessions = Sessions(jobs)
    kept = {key: _keep_finished(jobs, sessions, key) for key in ("a:separate", "a:blend", "b:separate")}
    holding, release, flags = threading.Event(), threading.Event(), {}

    def held(key: str):
        def job(flag: threading.Event) -> None:
            flags[key] = flag
            holding.set()
            release.wait(WAIT_S)
        return job

    async def main() -> tuple[int, int]:
        tasks = []
        for key in ("a:separate", "b:blend"):
            holding.clear()
            tasks.append(asyncio.ensure_future(sessions.run(key, held(key))))
            await asyncio.to_thread(holding.wait, WAIT_S)
        closed = sessions.close("a")
        release.set()
        await asyncio.gather(*tasks)
        return closed

    assert asyncio.run(main()) == (1, 2)
    assert flags["a:separate"].is_set() and not flags["b:blend"].is_set()
    assert not kept["a:separate"].exists() and not kept["a:blend"].exists() and kept["b:separate"].exists()
    assert sessions.close("a") == (0, 0)


def test_a_result_finished_after_its_page_closed_is_removed(tmp_path):
    # the page closes between the job's last progress check and the moment its result is kept
    jobs = Jobs(tmp_path / "jobs")
    sessions, folders = Sessions(jobs), []

    def job(flag: threading.Event) -> None:
        with jobs.job() as folder:
            folders.append(folder)
            sessions.close("a")
        sessions.keep("a:separate", folder, flag)

    with pytest.raises(Cancelled):
        asyncio.run(sessions.run("a:separate", job))
    assert not folders[0].exists()
