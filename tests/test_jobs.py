"""The web page's jobs without the page: input checks before any work, per-job folders, stopping, cleanup."""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import time
import zipfile

import numpy as np
import pytest
from helpers import make_audio_only, make_frames, make_video

from centrifuge.checkpoint import save_weights
from centrifuge.errors import USER_ERRORS, error_line
from centrifuge.jobs import Cancelled, Jobs, Limits, Stopped, blend_job, check_video, separate_job
from centrifuge.model import ModelConfig, build_model
from centrifuge.video import read_video
from centrifuge.video_writer import write_video

OUTPUTS = {"layer_0.mp4", "layer_1.mp4", "preview.mp4", "contact.png", "layers.json"}


@pytest.fixture
def tiny_model(tmp_path):
    path = tmp_path / "tiny.safetensors"
    cfg = ModelConfig(n_layers=3, width=0.125)
    save_weights(path, build_model(cfg), cfg)
    return str(path)


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_separate_job_writes_its_own_folder_and_zip(tmp_path, tiny_model):
    video = tmp_path / "in.mp4"
    make_video(video, frames=12)
    before = _digest(video)
    jobs = Jobs(tmp_path / "jobs")
    calls = []
    job = separate_job(jobs, video, Limits(), model=tiny_model, device="cpu", layers="best2",
                       on_progress=lambda done, total: calls.append((done, total)))
    assert job.folder.parent == jobs.dir
    assert calls[0] == (0, 12) and calls[-1] == (24, 24)  # the layers are written in a second pass: 2 x 12
    with zipfile.ZipFile(job.zip) as zf:
        assert set(zf.namelist()) == OUTPUTS
        assert json.loads(zf.read("layers.json"))["input"]["frames"] == 12
    assert _digest(video) == before  # the input is only read
    assert {p.name for p in video.parent.iterdir()} == {"in.mp4", "tiny.safetensors", "jobs"}

    # all layers, at the input's own size; a second job gets a second folder
    second = separate_job(jobs, video, Limits(), model=tiny_model, device="cpu", layers="all", size="input")
    assert second.folder != job.folder
    assert second.result.metadata["settings"]["inference_size"] == [64, 48]
    assert len(second.result.metadata["files"]["layers"]) == 3
    jobs.remove(job.folder)  # the page's previous results
    assert [p.name for p in jobs.dir.iterdir()] == [second.folder.name]


def test_two_jobs_at_once_keep_their_own_results(tmp_path, tiny_model):
    videos = [tmp_path / "a.mp4", tmp_path / "b.mp4"]
    make_video(videos[0], frames=10, seed=1)
    make_video(videos[1], frames=14, seed=2)
    jobs = Jobs(tmp_path / "jobs")
    results = {}
    # Both jobs wait for each other after their first written chunk: they really overlap (jobs run one after
    # the other would break the barrier, and the test, instead of passing without overlapping).
    both_running = threading.Barrier(2, timeout=120)
    met = set()

    def meet(done, total):
        if done and threading.get_ident() not in met:  # each job's first written chunk, once
            met.add(threading.get_ident())
            both_running.wait()

    def run(video):
        results[video.name] = separate_job(jobs, video, Limits(), model=tiny_model, device="cpu",
                                           on_progress=meet)

    threads = [threading.Thread(target=run, args=(v,)) for v in videos]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(met) == 2 and not both_running.broken
    a, b = results["a.mp4"], results["b.mp4"]
    assert a.folder != b.folder
    assert a.result.metadata["input"]["frames"] == 10 and b.result.metadata["input"]["frames"] == 14
    assert all(p.is_relative_to(a.folder) for p in a.result.files.values())
    assert all(p.is_relative_to(b.folder) for p in b.result.files.values())


def _bad_inputs(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    audio = tmp_path / "audio.m4a"
    make_audio_only(audio)
    full = tmp_path / "full.mp4"
    write_video(full, make_frames(8, 32, 32), 25)
    data = full.read_bytes()
    truncated = tmp_path / "truncated.mp4"  # the header says 8 frames; none can be decoded
    truncated.write_bytes(data[:data.find(b"mdat") + 4])
    long = tmp_path / "long.mp4"
    make_video(long, frames=50)  # 2 s
    big = tmp_path / "big.mp4"
    make_video(big, frames=8, pattern="noise")
    # case: (file, limits, a word the message must contain)
    return {
        "not a video": (text, Limits(), "not a video"),
        "no video stream": (audio, Limits(), "no video stream"),
        "zero frames": (truncated, Limits(), "no decodable frames"),
        "too long": (long, Limits(max_seconds=1.5), "at most 1.5 s"),
        "too large": (big, Limits(max_upload_mb=big.stat().st_size / 2**20 / 2), "takes files up to"),
    }


def test_bad_input_is_one_line_and_leaves_nothing(tmp_path, tiny_model):
    jobs = Jobs(tmp_path / "jobs")
    for case, (path, limits, word) in _bad_inputs(tmp_path).items():
        before = _digest(path)
        runs = [(separate_job, path), (blend_job, [path, path])]
        for run, videos in runs[:1] if case == "too long" else runs:  # a blend reads only its first 32 frames
            with pytest.raises(USER_ERRORS) as info:
                run(jobs, videos, limits, model=tiny_model, device="cpu")
            assert word in error_line(info.value), (case, error_line(info.value))
        assert _digest(path) == before, case
        assert list(jobs.dir.iterdir()) == [], case


def test_limits_are_checked_before_any_work(tmp_path):
    video = tmp_path / "in.mp4"
    make_video(video, frames=25)  # 1 s
    assert check_video(video, Limits(max_seconds=1.0)).num_frames == 25
    # no model exists at this path: refusing first means it is never looked at
    jobs = Jobs(tmp_path / "jobs")
    with pytest.raises(USER_ERRORS, match="at most 0.5 s"):
        separate_job(jobs, video, Limits(max_seconds=0.5), model=str(tmp_path / "missing.safetensors"))


def test_stopping_ends_a_running_job_and_removes_its_folder(tmp_path, tiny_model):
    video = tmp_path / "in.mp4"
    make_video(video, frames=40)
    jobs = Jobs(tmp_path / "jobs")

    chunks = []

    def stop_midway(done, total):
        if done:  # the first written chunk, not the announcement of (0, total) before the run
            assert done < total and not chunks  # stopped at the first chunk: the run never gets to the end
            chunks.append(done)
            jobs.stopping.set()

    with pytest.raises(Stopped):
        separate_job(jobs, video, Limits(), model=tiny_model, device="cpu", on_progress=stop_midway)
    assert chunks and list(jobs.dir.iterdir()) == []
    with pytest.raises(Stopped):  # and no new job starts
        separate_job(jobs, video, Limits(), model=tiny_model, device="cpu")
    assert list(jobs.dir.iterdir()) == []


def test_old_jobs_are_swept(tmp_path, tiny_model):
    video = tmp_path / "in.mp4"
    make_video(video, frames=8)
    jobs = Jobs(tmp_path / "jobs", max_age_s=60)
    old = separate_job(jobs, video, Limits(), model=tiny_model, device="cpu").folder
    hour_ago = time.time() - 3600
    os.utime(old, (hour_ago, hour_ago))
    new = separate_job(jobs, video, Limits(), model=tiny_model, device="cpu").folder
    assert [p.name for p in jobs.dir.iterdir()] == [new.name]
    jobs.remove(tmp_path)  # only its own job folders are ever removed
    assert video.is_file()


def test_blend_job_reports_identity_and_model(tmp_path, tiny_model):
    clips = [tmp_path / "a.mp4", tmp_path / "b.mp4"]
    make_video(clips[0], frames=12, seed=1)
    make_video(clips[1], frames=12, seed=2, pattern="noise")
    jobs = Jobs(tmp_path / "jobs")
    folder, figures, files, info = blend_job(jobs, clips, Limits(), model=tiny_model, device="cpu")
    assert folder.parent == jobs.dir and info["path"] == tiny_model
    for key in ("identity_loss", "model_loss", "psnr_db", "identity_psnr_db", "separate_loss"):
        assert math.isfinite(figures[key]), key
    assert {"preview.mp4", "truth", "layers.json"} <= set(files)
    assert all(p.is_relative_to(folder) and p.is_file() for p in files.values())


def test_cancel_stops_only_that_job_and_removes_its_folder(tmp_path, tiny_model):
    video = tmp_path / "in.mp4"
    make_video(video, frames=40)
    jobs = Jobs(tmp_path / "jobs")
    assert not jobs.cancel("tab-1")  # nothing runs under that key

    def cancel_at_first_chunk(done, total):
        if done:
            assert jobs.cancel("tab-1") and not jobs.cancel("tab-2")

    with pytest.raises(Cancelled):
        separate_job(jobs, video, Limits(), model=tiny_model, device="cpu", key="tab-1",
                     on_progress=cancel_at_first_chunk)
    assert list(jobs.dir.iterdir()) == [] and jobs.running == 0
    # the key's flag went with its job: the next one under the same key runs to the end
    assert separate_job(jobs, video, Limits(), model=tiny_model, device="cpu", key="tab-1").result.order


def test_cancel_while_the_layers_are_written_stops_the_job(tmp_path, tiny_model, monkeypatch):
    from centrifuge.separation import sinks

    monkeypatch.setattr(sinks, "COMPOSE_BUDGET", 4 * 2 * 3 * 64 * 48)  # the second pass in chunks of 4 frames
    video = tmp_path / "in.mp4"
    make_video(video, frames=16)
    jobs = Jobs(tmp_path / "jobs")
    seen = []

    def cancel_in_second_pass(done, total):
        seen.append((done, total))
        if done > 16:  # the first chunk of the second pass: 16 frames separated, 4 of them written
            jobs.cancel("tab-1")

    with pytest.raises(Cancelled):
        separate_job(jobs, video, Limits(), model=tiny_model, device="cpu", key="tab-1",
                     on_progress=cancel_in_second_pass)
    assert seen[-1] == (20, 32)  # stopped at the next chunk, before the end
    assert list(jobs.dir.iterdir()) == [] and jobs.running == 0


def test_a_part_of_the_video_is_separated_at_no_larger_size(tmp_path, tiny_model):
    video = tmp_path / "in.mp4"
    frames = make_video(video, frames=30, width=64, height=48)
    jobs = Jobs(tmp_path / "jobs")
    assert jobs.estimate("m", 10, 64, 48) is None  # nothing measured yet
    job = separate_job(jobs, video, Limits(max_seconds=0.5), model=tiny_model, device="cpu", size=448,
                       start_s=0.4, length_s=0.4)  # frames 10..19; the whole 1.2 s would be refused
    meta = job.result.metadata
    assert meta["input"]["frames"] == 10
    assert meta["settings"]["inference_size"] == [64, 48]  # 448 asked: never upscaled
    first = read_video(job.folder / "part" / "in.mp4", num_frames=1)[0].astype(int)
    assert np.argmin([np.abs(first - f).mean() for f in frames]) == 10  # the part starts at 0.4 s
    seconds, how = jobs.estimate(tiny_model, 20, 64, 48)
    assert seconds == pytest.approx(2 * meta["timings"]["total_s"]) and "last run" in how
    # a measured model's running job tells when its slot should free; none is expected once it ended
    waits = []
    separate_job(jobs, video, Limits(), model=tiny_model, device="cpu",
                 on_progress=lambda done, total: waits.append(jobs.first_free()))
    assert waits[0] is None and all(w is not None and w >= 0 for w in waits[1:]) and jobs.first_free() is None


def test_a_still_image_is_not_a_video(tmp_path):
    from PIL import Image

    still = tmp_path / "photo.png"
    Image.fromarray(make_frames(1)[0]).save(still)
    with pytest.raises(USER_ERRORS, match="not a video: .*photo.png"):
        check_video(still, Limits())
    with pytest.raises(USER_ERRORS, match="not a video: .*photo.mp4"):  # the name proves nothing
        check_video(still.rename(tmp_path / "photo.mp4"), Limits())
