"""``centrifuge app`` in a real headless browser (Debian's chromium and chromium-driver), and its command line.

The browser tests start the server as a user would (``python -m centrifuge app``, plus the test gate of
``app_gate.py`` that holds a job where a test needs it running) with a tiny model, its temporary files under a
folder of the test's own (``TMPDIR``), and drive the page with Selenium. Set
``CENTRIFUGE_APP_SCREENSHOT=path.png`` to save the page after the separation.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import zipfile
from pathlib import Path

import pytest
from app_gate import GATED_MAIN
from helpers import make_frames, make_video

from centrifuge import cli
from centrifuge.app import shipped_clips, shipped_name
from centrifuge.checkpoint import save_weights
from centrifuge.demo import asset
from centrifuge.model import ModelConfig, build_model
from centrifuge.video import probe

OUTPUTS = {"layer_0.mp4", "layer_1.mp4", "preview.mp4", "contact.png", "layers.json"}
MAX_UPLOAD_MB = 1  # the test videos are smaller; a 2 MB file is refused
WAIT_S = 120  # generous: the machine may be busy; only a failure waits this long
N_LAYERS = 5  # the test model's slots: 'all' fills more than one row at 1400 px
WINDOW = (1400, 2200)
_BROWSER: list = []  # the module's browser, for helpers that only read the page
STATUS, FIGURES = "#status [data-testid='markdown']", "#figures [data-testid='markdown']"


def test_app_without_gradio_is_one_line(monkeypatch, capsys):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else find_spec(name, *a))
    assert cli.main(["app"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ['centrifuge: error: the web page needs Gradio: pip install "visual-centrifuge[app]"']


def test_progress_words_say_what_happens():
    from centrifuge.app_text import progress_line

    started = time.monotonic() - 10
    assert progress_line(0, 96, started).startswith("Starting: reading the video and loading the model")
    # a share, not frames: a run that writes its layers in a second pass counts each frame twice
    assert progress_line(48, 96, started).startswith("Separating the frames and writing the layers: 50%, about ")
    finishing = progress_line(96, 96, started)  # the contact sheet and the checks come after: no "0 s left"
    assert finishing.startswith("All frames separated and the layers written; finishing") and "left" not in finishing


def test_app_bad_model_is_one_line(tmp_path, capsys):
    assert cli.main(["app", "--model", str(tmp_path / "missing.safetensors")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no such model" in err[0]


# --------------------------------------------------------------------------------------------------------
# the server and the browser


def _browser_paths() -> tuple[str, str]:
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (browser and driver):
        pytest.skip("no headless browser: apt-get install chromium chromium-driver")
    return browser, driver


def _sigint_as_in_a_terminal() -> None:
    # A test runner started in the background without job control (``cmd &`` in a script) passes on an
    # ignored SIGINT, and a process that starts with SIGINT ignored keeps ignoring it. These tests press
    # Ctrl-C on a server that runs in a terminal's foreground, where SIGINT is never ignored.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class Server:
    """``centrifuge app`` in a subprocess, with its temporary files under ``tmp``."""

    def __init__(self, folder: Path, model: Path, preexec=_sigint_as_in_a_terminal):
        self.tmp = folder / "tmp"
        self.cwd = folder / "cwd"
        self.gate = folder / "gate"
        for d in (self.tmp, self.cwd, self.gate):
            d.mkdir()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        tests = str(Path(__file__).parent)
        env = {**os.environ, "TMPDIR": str(self.tmp), "PYTHONUNBUFFERED": "1", "CENTRIFUGE_TEST_GATE": str(self.gate),
               "PYTHONPATH": os.pathsep.join(p for p in (tests, os.environ.get("PYTHONPATH")) if p)}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", GATED_MAIN, "app", "--port", str(port), "--model", str(model), "--device", "cpu",
             "--max-upload-mb", str(MAX_UPLOAD_MB), "--max-seconds", "20"],
            cwd=self.cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            preexec_fn=preexec)
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.url = self._wait_for("centrifuge app: ").split()[2]
        assert self.url == f"http://127.0.0.1:{port}/"

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)

    def _wait_for(self, prefix: str) -> str:
        deadline = time.monotonic() + 2 * WAIT_S  # importing Gradio and PyTorch on a busy machine
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1)
            except queue.Empty:
                assert self.proc.poll() is None, f"server exited: {''.join(self.log)}"
                continue
            self.log.append(line)
            if line.startswith(prefix):
                return line
        raise AssertionError(f"no {prefix!r} line: {''.join(self.log)}")

    def interrupt(self) -> int:
        """Ctrl-C, then the exit status."""
        self.proc.send_signal(signal.SIGINT)
        return self.proc.wait(timeout=WAIT_S)

    def hold(self) -> None:
        """From now on, jobs wait in the gate at their first written chunk (see ``app_gate.py``)."""
        for p in self.gate.iterdir():
            p.unlink()
        (self.gate / "hold").touch()

    def running(self) -> list[str]:
        """Names of the videos whose jobs wait in the gate (``hold``)."""
        return sorted(p.name.removeprefix("running-") for p in self.gate.glob("running-*"))

    def open_gate(self) -> None:
        """Let held jobs go on, and hold no more."""
        (self.gate / "release").touch()
        (self.gate / "hold").unlink(missing_ok=True)

    def leftovers(self) -> list[str]:
        return sorted(str(p.relative_to(self.tmp.parent)) for d in (self.tmp, self.cwd) for p in d.rglob("*"))


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    binary, driver = _browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size={},{}".format(*WINDOW)):
        options.add_argument(arg)
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    chrome.implicitly_wait(0)
    _BROWSER[:] = [chrome]
    yield chrome
    chrome.quit()


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    model = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    cfg = ModelConfig(n_layers=N_LAYERS, width=0.125)
    save_weights(model, build_model(cfg), cfg)
    return model


@pytest.fixture(scope="module")
def servers(tmp_path_factory, browser, tiny_model):
    """One server for the module, started again if a test stopped it (so tests run in any order)."""
    model = tiny_model
    live: list[Server] = []

    def running() -> Server:
        if not live or live[-1].proc.poll() is not None:
            live.append(Server(tmp_path_factory.mktemp("server"), model))
        return live[-1]

    yield running
    for srv in live:
        if srv.proc.poll() is None:
            srv.interrupt()


def _wait(condition, what: str):
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def _text(browser, selector: str) -> str:
    from selenium.webdriver.common.by import By

    return " ".join(e.text for e in browser.find_elements(By.CSS_SELECTOR, selector))


def _upload(browser, path: Path, accepted: bool = True) -> None:
    """Load the page afresh and upload ``path`` into the input player; wait for the player when ``accepted``."""
    from selenium.webdriver.common.by import By

    browser.get(browser.current_url)
    field = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#input input[type=file]"), "the upload field")
    field[0].send_keys(str(path))
    if accepted:
        _wait(lambda: _player_src("#input").endswith(path.name), f"{path.name} in the input player")


def _player_src(selector: str) -> str:
    return _BROWSER[0].execute_script(
        f"const v = document.querySelector({json.dumps(selector + ' video')}); return v ? v.currentSrc || v.src : ''")


def _separate(browser, path: Path) -> str:
    """Upload ``path``, press Separate, wait for the job's last status line and return it."""
    from selenium.webdriver.common.by import By

    _upload(browser, path)
    browser.find_element(By.CSS_SELECTOR, "#separate").click()
    return _wait(lambda: (t := _text(browser, STATUS).strip()).startswith(("Done", "Error")) and t, "the job to end")


_MEDIA = """
const done = arguments[arguments.length - 1];
const videos = [...document.querySelectorAll('.layer-video video')].filter(v => v.offsetParent !== null);
Promise.all(videos.map(v => new Promise(ok => {
  const report = () => ok({src: v.currentSrc, duration: v.duration, error: v.error && v.error.code});
  if (v.readyState >= 1) report(); else { v.onloadedmetadata = report; v.onerror = report; }
}))).then(async meta => {
  for (const v of videos) { v.muted = true; await v.play(); }
  // until every video has advanced (however long that takes; the script timeout bounds a video that never does)
  while (!videos.every(v => v.currentTime > 0)) await new Promise(ok => setTimeout(ok, 50));
  done(meta.map((m, i) => ({...m, played: videos[i].currentTime > 0})));
}).catch(e => done(String(e)));
"""

_PLAYING = """
const v = document.querySelector(arguments[0] + ' video');
if (!v) return -1;
if (v.paused) { v.muted = true; v.play().catch(() => {}); }
return v.currentTime;
"""


def _playing(browser, selector: str) -> None:
    """Start the player under ``selector`` and wait until its time moves (no fixed timing: polled)."""
    _wait(lambda: browser.execute_script(_PLAYING, selector) > 0, f"{selector} to play")


def test_page_separates_a_video(servers, browser, tmp_path):
    from selenium.webdriver.common.by import By

    server = servers()
    video = tmp_path / "clip.mp4"
    make_video(video, frames=16, width=64, height=48)
    browser.get(server.url)
    status = _separate(browser, video)
    assert status.startswith("Done: 16 frames, 2 layers (model slots "), status
    assert "status-ok" in browser.find_element(By.CSS_SELECTOR, "#status").get_attribute("class")
    meta = browser.execute_async_script(_MEDIA)
    assert isinstance(meta, list) and len(meta) == 2, meta
    duration = probe(video).duration
    for m in meta:
        assert m["error"] is None and m["played"], m
        assert abs(m["duration"] - duration) <= 1 / 25 + 1e-3, (m, duration)
    slots = [int(s) for s in status.split("slots ")[1].split(")")[0].split(", ")]
    assert [Path(m["src"]).name for m in meta] == ["layer_0.mp4", "layer_1.mp4"]
    captions = _text(browser, "#layer-grid .caption")
    assert all(f"slot {s}" in captions for s in slots), captions  # named by the model's slot, as in 'all'
    figures = _text(browser, FIGURES)
    assert all(f"slot {s}" in figures for s in slots) and "gives the input back" in figures, figures
    links = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "#downloads a")]
    expected = ["clip-layers.zip"] + [f"clip-slot{s}.mp4" for s in sorted(slots)]
    assert sorted(Path(link).name for link in links) == expected
    zipped = urllib.request.urlopen(next(link for link in links if link.endswith(".zip")), timeout=30).read()
    with zipfile.ZipFile(io.BytesIO(zipped)) as zf:
        assert set(zf.namelist()) == OUTPUTS
        assert json.loads(zf.read("layers.json"))["input"]["frames"] == 16
    if os.environ.get("CENTRIFUGE_APP_SCREENSHOT"):
        browser.save_screenshot(os.environ["CENTRIFUGE_APP_SCREENSHOT"])


def test_a_still_image_and_a_text_file_are_refused(servers, browser, tmp_path):
    from PIL import Image
    from selenium.webdriver.common.by import By

    server = servers()
    still, notes = tmp_path / "photo.png", tmp_path / "notes.txt"
    Image.fromarray(make_frames(1)[0]).save(still)
    notes.write_text("not a video\n" * 50)
    jobs_before = set(server.tmp.glob("centrifuge-app-*/jobs/job-*"))  # other tests' finished jobs, if any
    browser.get(server.url)
    # by their type, in the browser (Gradio's own message), before anything is sent
    for path in (still, notes):
        _upload(browser, path, accepted=False)
        toast = _wait(lambda: _text(browser, "[data-testid='toast-body']"), "the refusal")
        assert f"Invalid file type: {path.name}" in toast, toast
    # named as videos, they get through the browser: the server looks at the content
    for path in (still.rename(tmp_path / "photo.mp4"), notes.rename(tmp_path / "notes.mp4")):
        _upload(browser, path, accepted=False)
        status = _wait(lambda: _text(browser, STATUS).strip(), "the refusal")
        assert status.startswith("Error: not a video") and path.name in status, status
        assert "status-error" in browser.find_element(By.CSS_SELECTOR, "#status").get_attribute("class")
        assert str(server.tmp) not in status and "--" not in status  # the name, not a path; no flag names
    # no work started (other tests' results may go meanwhile: their pages were closed by the reloads)
    assert set(server.tmp.glob("centrifuge-app-*/jobs/job-*")) <= jobs_before


def test_an_example_fills_the_input_in_one_click_and_plays(servers, browser):
    from selenium.webdriver.common.by import By

    browser.get(servers().url)
    examples = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#examples button"), "the examples")
    assert len(examples) == len(shipped_clips()) and examples[0].find_elements(By.CSS_SELECTOR, "video, img")
    examples[0].click()
    _wait(lambda: _player_src("#input").endswith(shipped_clips()[0]), "the clip in the input player")
    duration = probe(asset(shipped_clips()[0])).duration
    length = "#length input[type=number]"
    _wait(lambda: abs(float(browser.find_element(By.CSS_SELECTOR, length).get_attribute("value")) - duration) < 0.05,
          "the length slider to take the clip's duration")
    _wait(lambda: "frames, processed at" in _text(browser, "#estimate"), "the estimate")
    _playing(browser, "#input")


def _start_a_held_job(servers, browser, tmp_path) -> tuple[Server, Path]:
    """Upload a 150-frame video, press Separate and wait until its job is held in the gate at its first chunk
    (see ``app_gate.py``); returns the server and the job's folder (other tests' finished jobs may be there)."""
    from selenium.webdriver.common.by import By

    srv = servers()
    video = tmp_path / "long.mp4"
    make_video(video, frames=150)
    browser.get(srv.url)
    _upload(browser, video)
    before = set(srv.tmp.glob("centrifuge-app-*/jobs/job-*"))
    srv.hold()
    browser.find_element(By.CSS_SELECTOR, "#separate").click()
    _wait(lambda: srv.running() == [video.name], "the job to start")
    job = [p for p in srv.tmp.glob("centrifuge-app-*/jobs/job-*") if p not in before]
    assert len(job) == 1 and not _text(browser, STATUS).startswith("Done")  # held: still running
    return srv, job[0]


def test_cancel_stops_a_running_job_and_removes_its_folder(servers, browser, tmp_path):
    from selenium.webdriver.common.by import By

    srv, job = _start_a_held_job(servers, browser, tmp_path)
    browser.find_element(By.CSS_SELECTOR, "#cancel").click()
    _wait(lambda: _text(browser, STATUS).startswith("Cancelled: the job stops"), "the cancellation")
    srv.open_gate()  # the job goes on to its next chunk, where it finds itself cancelled
    _wait(lambda: not job.exists(), "the job's folder to go")
    assert srv.proc.poll() is None and not _text(browser, STATUS).startswith("Done")


def test_closing_the_page_stops_its_running_job_and_removes_its_folder(servers, browser, tmp_path):
    first = browser.current_window_handle
    browser.switch_to.new_window("tab")
    try:
        srv, job = _start_a_held_job(servers, browser, tmp_path)
    finally:
        browser.close()  # the tab goes, and its connections with it (as when a browser quits or crashes)
        browser.switch_to.window(first)
    srv._wait_for("centrifuge app: a page closed: 1 running job(s) stopped")
    srv.open_gate()  # the job goes on to its next chunk, where it finds itself stopped
    _wait(lambda: not job.exists(), "the job's folder to go")
    assert srv.proc.poll() is None


def test_all_layers_are_laid_out_in_rows_of_equal_width(servers, browser, tmp_path):
    from selenium.webdriver.common.by import By

    video = tmp_path / "clip.mp4"
    make_video(video, frames=12)
    browser.get(servers().url)
    _upload(browser, video)
    next(b for b in browser.find_elements(By.CSS_SELECTOR, "#layers label") if b.text == "all").click()
    browser.find_element(By.CSS_SELECTOR, "#separate").click()
    status = _wait(lambda: (t := _text(browser, STATUS)).startswith(("Done", "Error")) and t, "the job to end")
    assert status.startswith(f"Done: 12 frames, {N_LAYERS} layers (model slots 0, 1, 2, 3, 4)"), status
    boxes = [c.rect for c in browser.find_elements(By.CSS_SELECTOR, "#layer-grid .layer-cell") if c.is_displayed()]
    assert len(boxes) == N_LAYERS
    assert max(b["width"] for b in boxes) - min(b["width"] for b in boxes) < 1.5, boxes
    rows = sorted({round(b["y"]) for b in boxes})
    assert len(rows) >= 2, boxes  # more than one row at 1400 px, each player as wide as the others
    grid = browser.find_element(By.CSS_SELECTOR, "#layer-grid").rect
    assert sum(b["width"] for b in boxes if round(b["y"]) == rows[0]) > 0.9 * grid["width"] - 100
    sheet = browser.find_element(By.CSS_SELECTOR, "#contact img").rect
    assert sheet["height"] > 200 and sheet["width"] > 0.5 * grid["width"], sheet  # readable, not a strip
    _assert_words_whole_and_visible(browser)  # the figures table at 1400 px included


_BROKEN_WORDS = """
const broken = [], covered = [];
const walker = document.createTreeWalker(document.querySelector('gradio-app') || document.body, NodeFilter.SHOW_TEXT);
for (let node = walker.nextNode(); node; node = walker.nextNode()) {
  const el = node.parentElement;
  if (!el || el.closest('[aria-hidden=true], svg, .hide, script, style') || !el.offsetParent) continue;
  const re = /\\S+/g;
  let m;
  while ((m = re.exec(node.data))) {
    const range = document.createRange();
    range.setStart(node, m.index);
    range.setEnd(node, m.index + m[0].length);
    const rects = [...range.getClientRects()].filter(r => r.width > 0 && r.height > 0);
    if (new Set(rects.map(r => Math.round(r.top))).size > 1) broken.push(m[0]);
    for (const r of rects.slice(0, 1)) {
      const hit = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
      if (hit && !el.contains(hit) && !hit.contains(el)) covered.push(`${m[0]} under ${hit.tagName}.${hit.className}`);
    }
  }
}
return {broken, covered};
"""


def _assert_words_whole_and_visible(browser) -> None:
    """No word on two lines, no text under another element (polled: a player's "Loading" overlay passes)."""
    clean = {"broken": [], "covered": []}
    found: list = []
    with contextlib.suppress(AssertionError):
        _wait(lambda: found.append(browser.execute_script(_BROKEN_WORDS)) or found[-1] == clean, "the layout")
    assert found[-1] == clean, found[-1]


def test_a_narrow_window_breaks_no_word_and_hides_no_text(servers, browser, tmp_path):
    video = tmp_path / "clip.mp4"
    make_video(video, frames=12)
    browser.get(servers().url)
    browser.set_window_size(420, 6000)
    try:
        assert _separate(browser, video).startswith("Done")
        browser.execute_script("window.scrollTo(0, 0)")
        width = browser.execute_script("return document.documentElement.clientWidth")
        assert width <= 420
        _assert_words_whole_and_visible(browser)
        assert browser.execute_script("return document.documentElement.scrollWidth") <= width  # no sideways page
        if os.environ.get("CENTRIFUGE_APP_SCREENSHOT_NARROW"):
            browser.save_screenshot(os.environ["CENTRIFUGE_APP_SCREENSHOT_NARROW"])
    finally:
        browser.set_window_size(*WINDOW)


def test_two_tabs_running_at_once_get_their_own_results(servers, browser, tmp_path):
    from selenium.webdriver.common.by import By

    server = servers()
    videos = {40: tmp_path / "forty.mp4", 12: tmp_path / "twelve.mp4"}
    for frames, path in videos.items():
        make_video(path, frames=frames, seed=frames)
    tabs = []
    server.hold()  # each job waits in the gate: both must be there at once
    try:
        for frames, path in videos.items():
            browser.switch_to.new_window("tab")
            browser.get(server.url)
            _upload(browser, path)
            browser.find_element(By.CSS_SELECTOR, "#separate").click()
            tabs.append((browser.current_window_handle, frames, path))
        _wait(lambda: len(server.running()) == 2, "both jobs running at once")
        server.open_gate()
        for handle, frames, path in tabs:
            browser.switch_to.window(handle)
            status = _wait(lambda: (t := _text(browser, STATUS).strip()).startswith(("Done", "Error")) and t,
                           "the job to end")
            assert status.startswith(f"Done: {frames} frames"), status
            links = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "#downloads a")]
            assert f"{path.stem}-layers.zip" in {Path(link).name for link in links}
            tabs[tabs.index((handle, frames, path))] = (handle, frames, {str(Path(link).parent) for link in links})
        assert tabs[0][2].isdisjoint(tabs[1][2])  # each tab's files come from its own job folder
    finally:
        server.open_gate()
        for handle, *_ in tabs:
            browser.switch_to.window(handle)
            browser.close()
        browser.switch_to.window(browser.window_handles[0])


def test_blend_tab_shows_the_identity_vs_model_table(servers, browser):
    from selenium.webdriver.common.by import By

    browser.get(servers().url)
    tab = _wait(lambda: [b for b in browser.find_elements(By.CSS_SELECTOR, "button[role=tab]") if b.text == "Blend"],
                "the Blend tab")
    tab[0].click()
    _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#blend"), "the Blend button")[0].click()
    table = _wait(lambda: _text(browser, "#blend-table [data-testid='markdown']"), "the table")
    assert "Blend of bikes.mp4 and office-window.mp4" in table, table  # the shipped clips by default
    for row in ("identity (outputs = blend)", "model / identity", "dB PSNR"):
        assert row in table, (row, table)
    assert _player_src("#blend-preview").endswith("preview.mp4")


def test_upload_over_the_limit_is_refused(servers, browser, tmp_path):
    server = servers()
    big = tmp_path / "big.mp4"
    big.write_bytes(os.urandom(int(2 * MAX_UPLOAD_MB * 2**20)))
    browser.get(server.url)
    _upload(browser, big, accepted=False)
    toast = _wait(lambda: _text(browser, "[data-testid='toast-body']"), "the refusal")
    assert "exceed the maximum allowed size" in toast and "big.mp4" in toast
    assert not list(server.tmp.rglob("big.mp4"))  # refused before it was stored


def test_shipped_clips_are_known_by_content_not_name(tmp_path):
    copy, other = tmp_path / "renamed.mp4", tmp_path / "carphone.mp4"
    shutil.copyfile(asset("carphone.mp4"), copy)
    make_video(other, frames=8)
    assert shipped_name(copy) == "carphone.mp4" and shipped_name(other) is None


def test_sigint_stops_a_server_started_with_sigint_ignored(tmp_path, tiny_model):
    # ``centrifuge app &`` from a script: the server inherits an ignored SIGINT; ``kill -INT`` must still stop it
    srv = Server(tmp_path, tiny_model, preexec=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    assert srv.interrupt() == 0
    assert srv.leftovers() == []


def test_ctrl_c_during_a_job_leaves_nothing(servers, browser, tmp_path):
    srv, _ = _start_a_held_job(servers, browser, tmp_path)  # the job waits in the gate until the server stops
    children = subprocess.run(["pgrep", "-P", str(srv.proc.pid)], capture_output=True, text=True).stdout.split()
    assert srv.interrupt() == 0
    assert srv.leftovers() == []
    for pid in children:
        assert not Path(f"/proc/{pid}").exists(), f"stray process {pid}"
