"""``centrifuge app`` in a real headless browser (Debian's chromium and chromium-driver), and its command line.

The browser tests start the server as a user would (``python -m centrifuge app``, plus the test gate of
``app_gate.py`` that holds a job where a test needs it running) with a tiny model, its temporary files under a
folder of the test's own (``TMPDIR``), and drive the page with Selenium. Set
``CENTRIFUGE_APP_SCREENSHOT=path.png`` to save the page after the separation.
"""

from __future__ import annotations

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
from helpers import make_video

from centrifuge import cli
from centrifuge.checkpoint import save_weights
from centrifuge.model import ModelConfig, build_model
from centrifuge.video import probe

OUTPUTS = {"layer_0.mp4", "layer_1.mp4", "preview.mp4", "contact.png", "layers.json"}
MAX_UPLOAD_MB = 1  # the test videos are smaller; a 2 MB file is refused
WAIT_S = 60
STATUS, FIGURES = "#status [data-testid='markdown']", "#figures [data-testid='markdown']"


def test_app_without_gradio_is_one_line(monkeypatch, capsys):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gradio" else find_spec(name, *a))
    assert cli.main(["app"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ['centrifuge: error: the web page needs Gradio: pip install "visual-centrifuge[app]"']


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

    def __init__(self, folder: Path, model: Path):
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
            preexec_fn=_sigint_as_in_a_terminal)
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.url = self._wait_for("centrifuge app: ").split()[2]
        assert self.url == f"http://127.0.0.1:{port}/"

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.put(line)

    def _wait_for(self, prefix: str) -> str:
        deadline = time.monotonic() + WAIT_S
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
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,2200"):
        options.add_argument(arg)
    chrome = webdriver.Chrome(service=Service(driver), options=options)
    chrome.implicitly_wait(0)
    yield chrome
    chrome.quit()


@pytest.fixture(scope="module")
def servers(tmp_path_factory, browser):
    """One server for the module, started again if a test stopped it (so tests run in any order)."""
    model = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    cfg = ModelConfig(n_layers=2, width=0.125)
    save_weights(model, build_model(cfg), cfg)
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
    from selenium.webdriver.common.by import By

    for clear in browser.find_elements(By.CSS_SELECTOR, "#upload button[aria-label='Clear']"):
        clear.click()
    field = _wait(lambda: browser.find_elements(By.CSS_SELECTOR, "#upload input[type=file]"), "the upload field")
    field[0].send_keys(str(path))
    if accepted:
        shown = f"#upload [aria-label='{path.name}']"
        _wait(lambda: browser.find_elements(By.CSS_SELECTOR, shown), f"{path.name} to upload")


def _separate(browser, path: Path) -> str:
    """Upload ``path``, press Separate, wait for a new status line and return it."""
    from selenium.webdriver.common.by import By

    _upload(browser, path)
    before = _text(browser, STATUS).strip()
    browser.find_element(By.CSS_SELECTOR, "#separate").click()
    return _wait(lambda: (_text(browser, STATUS).strip() or before) != before and _text(browser, STATUS).strip(),
                 "a new status line")


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


def test_page_separates_a_video_and_survives_bad_input(servers, browser, tmp_path):
    server = servers()
    video, notes = tmp_path / "clip.mp4", tmp_path / "notes.txt"
    make_video(video, frames=16, width=64, height=48)
    notes.write_text("not a video\n")
    browser.get(server.url)

    # a file that is not a video: one clear line on the page, which keeps working
    status = _separate(browser, notes)
    assert status.startswith("Error:") and "not a video" in status and "notes.txt" in status
    assert str(server.tmp) not in status  # the upload's name, not the server's temporary path

    status = _separate(browser, video)
    assert status.startswith("Done: 16 frames, 2 layers"), status
    meta = browser.execute_async_script(_MEDIA)
    assert isinstance(meta, list) and len(meta) == 2, meta
    duration = probe(video).duration
    for m in meta:
        assert m["error"] is None and m["played"], m
        assert abs(m["duration"] - duration) <= 1 / 25 + 1e-3, (m, duration)
    assert [Path(m["src"]).name for m in meta] == ["layer_0.mp4", "layer_1.mp4"]
    figures = _text(browser, FIGURES)
    assert all(word in figures for word in ("layer_0", "layer_1", "recomposes the input")), figures

    from selenium.webdriver.common.by import By

    links = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "#downloads a")]
    assert sorted(Path(link).name for link in links) == ["clip-layers.zip", "layer_0.mp4", "layer_1.mp4"]
    zipped = urllib.request.urlopen(next(link for link in links if link.endswith(".zip")), timeout=30).read()
    with zipfile.ZipFile(io.BytesIO(zipped)) as zf:
        assert set(zf.namelist()) == OUTPUTS
        assert json.loads(zf.read("layers.json"))["input"]["frames"] == 16
    if os.environ.get("CENTRIFUGE_APP_SCREENSHOT"):
        browser.save_screenshot(os.environ["CENTRIFUGE_APP_SCREENSHOT"])


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
            status = _wait(lambda: _text(browser, STATUS).strip(), "the status line")
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
    src = browser.execute_script("const v = document.querySelector('#blend-preview video'); return v && v.src")
    assert src and src.endswith("preview.mp4")


def test_upload_over_the_limit_is_refused(servers, browser, tmp_path):
    server = servers()
    big = tmp_path / "big.mp4"
    big.write_bytes(os.urandom(int(2 * MAX_UPLOAD_MB * 2**20)))
    browser.get(server.url)
    _upload(browser, big, accepted=False)
    toast = _wait(lambda: _text(browser, "[data-testid='toast-body']"), "the refusal")
    assert "exceed the maximum allowed size" in toast and "big.mp4" in toast
    assert not list(server.tmp.rglob("big.mp4"))  # refused before it was stored


def test_ctrl_c_during_a_job_leaves_nothing(servers, browser, tmp_path):
    from selenium.webdriver.common.by import By

    srv = servers()
    video = tmp_path / "long.mp4"
    make_video(video, frames=150)
    browser.get(srv.url)
    srv.hold()  # the job waits in the gate until the server stops
    _upload(browser, video)
    browser.find_element(By.CSS_SELECTOR, "#separate").click()
    _wait(lambda: len(srv.running()) == 1, "the job to start")
    assert list(srv.tmp.glob("centrifuge-app-*/jobs/job-*"))
    assert not _text(browser, STATUS).startswith("Done")  # still running: held
    children = subprocess.run(["pgrep", "-P", str(srv.proc.pid)], capture_output=True, text=True).stdout.split()
    assert srv.interrupt() == 0
    assert srv.leftovers() == []
    for pid in children:
        assert not Path(f"/proc/{pid}").exists(), f"stray process {pid}"
