"""A bounded load test of ``centrifuge app`` on 127.0.0.1 (not part of the test run; Linux: reads /proc).

Starts the server with the packaged model, then for ``--duration`` seconds ``--clients`` Gradio clients (each its
own page session) send, in a seeded random order: good uploads (checked: the status line, every layer video's
frame count and size, the zip's ``layers.json``, downloaded from the page's link), bad ones (text, a PNG, a
one-frame video, audio, a file over ``--max-upload-mb``; checked: the error names the reason), separations
cancelled mid-run as the page's Cancel button does it (its handler, then Gradio's ``/cancel``), separations whose
page drops mid-run (a client in a child process, SIGKILLed: its connections close as a crashed browser's do), and
uploads dropped mid-transfer (a raw HTTP request closed after a part of its body). Meanwhile it samples the
server's memory (the process and its children) and its job folders every 0.5 s (a folder that ever holds a zip is
a job that ran to its end) and asks for the page every 2 s. Afterwards the page sessions close; it counts the job
folders and files left in the server's folder, stops the server with SIGTERM and checks that the folder and every
process are gone. The server's log says how long each stopped job took to end.

    python scripts/load_test_app.py --duration 150 --clients 4 --json load.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

#: What each kind of bad input must be told (words in the page's error line, or Gradio's refusal of the upload).
BAD = {"notes.txt": "is text", "still.png": "still image", "one.mp4": "only 1 frame", "audio.m4a": "only audio",
       "big.mp4": "maximum allowed size"}
KINDS = [("good", 0.40), ("bad", 0.25), ("cancel", 0.15), ("drop_run", 0.10), ("drop_upload", 0.10)]
#: A separation long enough to be stopped mid-run (frames of 64x48).
LONG_FRAMES = 240


def make_inputs(folder: Path, max_upload_mb: float) -> dict[str, tuple[Path, int]]:
    """Good videos (name -> (path, frames)) and the bad files of :data:`BAD` (frames 0)."""
    import av
    from PIL import Image

    from centrifuge.video_writer import write_video

    rng = np.random.default_rng(0)
    files: dict[str, tuple[Path, int]] = {}
    for i, (w, h, t) in enumerate([(64, 48, 16), (80, 64, 24), (48, 48, 12)]):
        frames = np.clip(rng.normal(128, 40, (t, h, w, 3)).cumsum(0) / np.arange(1, t + 1)[:, None, None, None],
                         0, 255).astype(np.uint8)
        write_video(folder / f"good{i}.mp4", frames, 25)
        files[f"good{i}.mp4"] = (folder / f"good{i}.mp4", t)
    (folder / "notes.txt").write_text("Notes on the clips to separate.\n" * 60)
    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / "still.png")
    write_video(folder / "one.mp4", rng.integers(0, 256, (1, 32, 32, 3), dtype=np.uint8), 25)
    (folder / "big.mp4").write_bytes(os.urandom(int(max_upload_mb * 2**20) + 2**16))
    long = np.clip(rng.normal(128, 40, (LONG_FRAMES, 48, 64, 3)), 0, 255).astype(np.uint8)
    write_video(folder / "long.mp4", long, 25)
    files["long.mp4"] = (folder / "long.mp4", LONG_FRAMES)
    with av.open(str(folder / "audio.m4a"), mode="w") as container:
        stream = container.add_stream("aac", rate=16000)
        stream.layout = "mono"
        samples = (np.sin(np.arange(8000) / 10)[None] * 0.1).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    files.update({name: (folder / name, 0) for name in BAD})
    return files


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, max_seconds: float, max_upload_mb: float, tmp: Path, log: list[str]
                 ) -> subprocess.Popen:
    """``centrifuge app`` in its own session (so its process group is its own), with TMPDIR under ``tmp``; its
    output lines go to ``log``."""
    env = {**os.environ, "TMPDIR": str(tmp), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.Popen([sys.executable, "-m", "centrifuge", "app", "--port", str(port), "--device", "cpu",
                             "--max-seconds", str(max_seconds), "--max-upload-mb", str(max_upload_mb)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    deadline = time.time() + 300
    for line in proc.stdout:
        log.append(line)
        if "centrifuge app: http" in line:
            threading.Thread(target=lambda: log.extend(proc.stdout), daemon=True).start()  # keep reading
            return proc
        if time.time() > deadline:
            break
    proc.kill()
    raise SystemExit(f"the server did not start: {''.join(log)[-2000:]}")


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def rss_mb(pids: list[int]) -> float:
    total = 0
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


class Monitor(threading.Thread):
    """Samples the server tree's memory and its job folders every 0.5 s, and fetches the page every 2 s."""

    def __init__(self, pid: int, url: str, jobs: Path):
        super().__init__(daemon=True)
        self.pid, self.url, self.jobs, self.stop = pid, url, jobs, threading.Event()
        self.memory: list[tuple[float, float]] = []  # (time, MB)
        self.pings: list[float] = []
        self.ping_failures: list[str] = []
        self.folders: dict[str, bool] = {}  # job folder seen -> a zip was seen in it (the job ran to its end)
        self.running: list[int] = []  # job folders without a zip, per sample

    def run(self) -> None:
        last_ping = 0.0
        while not self.stop.is_set():
            now = time.time()
            self.memory.append((now, rss_mb(tree(self.pid))))
            self._folders()
            if now - last_ping >= 2:
                last_ping = now
                try:
                    with urllib.request.urlopen(self.url, timeout=30) as r:
                        r.read()
                    self.pings.append(time.time() - now)
                except OSError as e:
                    self.ping_failures.append(str(e))
            self.stop.wait(0.5)

    def _folders(self) -> None:
        running = 0
        for folder in self.jobs.glob("centrifuge-app-*/jobs/job-*"):
            try:
                zipped = any(p.suffix == ".zip" for p in folder.iterdir())
            except OSError:
                continue
            self.folders[folder.name] = self.folders.get(folder.name, False) or zipped
            running += not zipped
        self.running.append(running)


def _value(output: Any) -> Any:
    """An output's value as the client gets it: the value itself, or an update holding one."""
    return output.get("value") if isinstance(output, dict) else output


def check_good(result: tuple, frames: int, size: tuple[int, int], url: str, into: Path) -> str | None:
    """None when the outputs are right, else what is wrong. ``result``: the page's outputs as the client gets
    them (the status line first, the layer players last); the zip is downloaded from the page's link."""
    from centrifuge.video import probe

    status, players = _value(result[0]), [p for p in map(_value, result[-8:]) if p]
    if not str(status).startswith(f"Done: {frames} frames, 2 layers"):
        return f"status {status!r}"
    if len(players) != 2:
        return f"{len(players)} layer players"
    for video in players:
        info = probe(video)
        if (info.num_frames, info.width, info.height) != (frames, *size):
            return f"layer {info.num_frames} frames {info.width}x{info.height}"
    links = re.findall(r'href="([^"]+\.zip)"', " ".join(str(r) for r in result))
    if len(links) != 1:
        return f"{len(links)} zip links"
    into.mkdir(parents=True, exist_ok=True)
    with urllib.request.urlopen(url.rstrip("/") + links[0], timeout=60) as r:
        (into / "layers.zip").write_bytes(r.read())
    with zipfile.ZipFile(into / "layers.zip") as z:
        if "layers.json" not in z.namelist():
            return "no layers.json in the zip"
    return None


def upload_refusal(port: int, path: Path) -> str:
    """Upload ``path`` whole (as a browser does) and return the server's refusal as ``Error: ...``."""
    boundary = "----loadtest"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{path.name}\"\r\n"
            "Content-Type: video/mp4\r\n\r\n").encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/gradio_api/upload", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    try:
        with urllib.request.urlopen(request, timeout=60) as r:
            return f"accepted: {r.status} {r.read()[:200]!r}"
    except urllib.error.HTTPError as e:
        return f"Error: {e.code} {e.read().decode(errors='replace')[:300]}"


def drop_upload(port: int, rng: random.Random) -> None:
    """Start a 4 MB multipart upload, send a part of it, and close the connection."""
    boundary = "----loadtest"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"drop.mp4\"\r\n"
            "Content-Type: video/mp4\r\n\r\n").encode()
    length = len(head) + 4 * 2**20 + len(f"\r\n--{boundary}--\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall((f"POST /gradio_api/upload HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: multipart/form-data; "
                   f"boundary={boundary}\r\nContent-Length: {length}\r\n\r\n").encode() + head)
        s.sendall(os.urandom(rng.randint(64, 1024) * 1024))


#: A page session in a child process: it submits a separation, says ``running`` once the job reports progress,
#: and waits to be killed.
DROP_CHILD = """
import sys, time
from gradio_client import Client, handle_file
client = Client(sys.argv[1], verbose=False, download_files=False)
job = client.submit(path=handle_file(sys.argv[2]), keep="best2", size="auto", model_value="default",
                    start=0, length=float(sys.argv[3]), api_name="/on_separate")
while not (job.status().progress_data or job.done()):
    time.sleep(0.1)
print("running" if not job.done() else "done", flush=True)
time.sleep(600)
"""


def _running(job: Any, timeout: float = 300) -> bool:
    """Wait until ``job`` reports progress (its separation runs); False if it ended first."""
    deadline = time.time() + timeout
    while time.time() < deadline and not job.done():
        if job.status().progress_data:
            return True
        time.sleep(0.1)
    return False


class Client(threading.Thread):
    """One page session sending seeded random requests until ``deadline``."""

    def __init__(self, index: int, url: str, port: int, files: dict, deadline: float, seed: int, downloads: Path,
                 max_seconds: float):
        super().__init__(daemon=True)
        self.url, self.port, self.files, self.deadline = url, port, files, deadline
        self.max_seconds = max_seconds
        self.rng = random.Random(seed * 1000 + index)
        self.downloads = downloads / f"client{index}"
        self.counts: Counter[str] = Counter()
        self.failures: list[str] = []
        self.good_seconds: list[float] = []
        self.stopped_running = 0  # cancelled or dropped while their separation ran

    def run(self) -> None:
        from gradio_client import Client as GradioClient

        self.client = GradioClient(self.url, verbose=False, download_files=str(self.downloads))
        while time.time() < self.deadline:
            kind = self.rng.choices([k for k, _ in KINDS], [w for _, w in KINDS])[0]
            try:
                getattr(self, kind)()
                self.counts[kind] += 1
            except Exception as e:  # a failed request is a finding, not the end of the test
                self.failures.append(f"{kind}: {type(e).__name__}: {str(e)[:200]}")

    def _submit(self, name: str) -> Any:
        from gradio_client import handle_file

        return self.client.submit(path=handle_file(str(self.files[name][0])), keep="best2", size="auto",
                                  model_value="default", start=0, length=self.max_seconds, api_name="/on_separate")

    def good(self) -> None:
        name = self.rng.choice([n for n in self.files if n.startswith("good")])
        path, frames = self.files[name]
        from centrifuge.video import probe

        info, t0 = probe(path), time.time()
        result = self._submit(name).result(timeout=600)
        self.good_seconds.append(time.time() - t0)
        wrong = check_good(result, frames, (info.width, info.height), self.url, self.downloads / "zip")
        if wrong:
            self.failures.append(f"good {name}: {wrong}")

    def bad(self) -> None:
        name = self.rng.choice(list(BAD))
        if name == "big.mp4":  # the client refuses it before sending: the server's refusal is checked by hand
            status = upload_refusal(self.port, self.files[name][0])
        else:
            status = str(_value(self._submit(name).result(timeout=600)[0]))
        if not (status.startswith("Error:") and BAD[name] in status):
            self.failures.append(f"bad {name}: {status[:200]!r}")

    def cancel(self) -> None:
        """As the page's Cancel button: its handler sets the job's stop flag, then Gradio cancels the event."""
        job = self._submit("long.mp4")
        if _running(job):
            self.stopped_running += 1
        time.sleep(self.rng.uniform(0.2, 2.0))
        status = str(_value(self.client.predict(api_name="/on_cancel")))
        job.cancel()
        if "Cancelled" not in status:
            self.failures.append(f"cancel: {status[:200]!r}")

    def drop_run(self) -> None:
        """A page whose connections drop while its separation runs (its process is killed)."""
        child = subprocess.Popen([sys.executable, "-c", DROP_CHILD, self.url, str(self.files["long.mp4"][0]),
                                  str(self.max_seconds)], stdout=subprocess.PIPE, text=True)
        try:
            line = child.stdout.readline().strip()
            if line == "running":
                self.stopped_running += 1
            time.sleep(self.rng.uniform(0.2, 2.0))
        finally:
            child.kill()
            child.wait()
        if line not in ("running", "done"):
            self.failures.append(f"drop_run: the child said {line!r}")

    def drop_upload(self) -> None:
        drop_upload(self.port, self.rng)


def leftovers(tmp: Path) -> dict[str, int]:
    """Job folders and other files in the server's folder (``TMPDIR/centrifuge-app-*``)."""
    roots = list(tmp.glob("centrifuge-app-*"))
    if not roots:
        return {"roots": 0}
    root = roots[0]
    jobs = list((root / "jobs").iterdir()) if (root / "jobs").is_dir() else []
    files = [p for p in root.rglob("*") if p.is_file() and (root / "jobs") not in p.parents]
    return {"roots": len(roots), "job_folders": len(jobs), "other_files": len(files),
            "other_mb": round(sum(p.stat().st_size for p in files) / 2**20, 1)}


def stop(proc: subprocess.Popen, tmp: Path) -> dict[str, Any]:
    """SIGTERM, then what is left: the exit status, the server's folder, processes of its session."""
    t0 = time.time()
    proc.send_signal(signal.SIGTERM)
    try:
        status = proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        status = None
    left = [p for p in tree(1) if p != proc.pid and _session(p) == proc.pid]
    return {"exit_status": status, "stop_seconds": round(time.time() - t0, 1),
            "folder_left": bool(list(tmp.glob("centrifuge-app-*"))), "processes_left": len(left)}


def _session(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])
    except (OSError, IndexError, ValueError):
        return None


def memory_windows(samples: list[tuple[float, float]], start: float, width: float = 30.0) -> list[float]:
    """Peak memory (MB) of each ``width``-second window from ``start``."""
    peaks: dict[int, float] = {}
    for t, mb in samples:
        if t >= start:
            k = int((t - start) // width)
            peaks[k] = max(peaks.get(k, 0.0), mb)
    return [round(peaks[k]) for k in sorted(peaks)]


def _quantile(values: list[float], q: float) -> float | None:
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))], 2) if values else None


def stop_figures(log: list[str]) -> dict[str, Any]:
    """The server log's ``a stopped job ended X s after WHY`` lines: how many, and how long they took."""
    found = (re.search(r"a stopped job ended ([\d.]+) s after (.+)", line) for line in log)
    ended = [(float(m[1]), m[2].strip()) for m in found if m]
    seconds = [t for t, _ in ended]
    return {"stopped_jobs_ended": len(ended), "by_reason": dict(Counter(why for _, why in ended)),
            "stop_seconds_median": _quantile(seconds, 0.5),
            "stop_seconds_max": round(max(seconds), 1) if seconds else None}


def run_load(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Start the server, send the clients' requests, let them settle, close the sessions, stop the server."""
    files = make_inputs(tmp, args.max_upload_mb)
    (tmp / "server").mkdir()
    port, log = free_port(), []
    t_start = time.time()
    proc = start_server(port, args.max_seconds, args.max_upload_mb, tmp / "server", log)
    url = f"http://127.0.0.1:{port}/"
    started = time.time()
    monitor = Monitor(proc.pid, url, tmp / "server")
    monitor.start()
    clients = [Client(i, url, port, files, started + args.duration, args.seed, tmp / "downloads", args.max_seconds)
               for i in range(args.clients)]
    for c in clients:
        c.start()
    for c in clients:
        c.join(timeout=args.duration + 900)
    finished = time.time()
    time.sleep(args.quiet)  # cancelled and dropped work settles
    left_open = leftovers(tmp / "server")
    for c in clients:  # the pages close: their last results go too
        c.client.close()
    time.sleep(args.quiet)
    left_closed = leftovers(tmp / "server")
    monitor.stop.set()
    monitor.join()
    stopped = stop(proc, tmp / "server")
    good = [s for c in clients for s in c.good_seconds]
    return {
        "clients": args.clients, "duration_s": args.duration, "server_start_s": round(started - t_start, 1),
        "requests_until_s": round(finished - started, 1),
        "requests": dict(sum((c.counts for c in clients), Counter())),
        "stopped_while_running": sum(c.stopped_running for c in clients),
        "failures": [f for c in clients for f in c.failures],
        "good_seconds_median": _quantile(good, 0.5), "good_seconds_max": round(max(good), 1) if good else None,
        "jobs_seen": len(monitor.folders), "jobs_that_wrote_their_zip": sum(monitor.folders.values()),
        "jobs_running_at_once_max": max(monitor.running, default=0),
        **stop_figures(log),
        "memory_peak_mb": round(max(mb for _, mb in monitor.memory)),
        "memory_peak_per_30s_mb": memory_windows(monitor.memory, started),
        "pings": len(monitor.pings), "ping_failures": monitor.ping_failures[:5],
        "ping_median_s": _quantile(monitor.pings, 0.5), "ping_p95_s": _quantile(monitor.pings, 0.95),
        "ping_max_s": round(max(monitor.pings), 2) if monitor.pings else None,
        "left_with_pages_open": left_open, "left_after_pages_closed": left_closed, **stopped,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=150.0, help="seconds of requests (default 150)")
    p.add_argument("--clients", type=int, default=4, help="concurrent page sessions (default 4)")
    p.add_argument("--max-seconds", type=float, default=20.0, help="the server's --max-seconds (default 20)")
    p.add_argument("--max-upload-mb", type=float, default=2.0, help="the server's --max-upload-mb (default 2)")
    p.add_argument("--quiet", type=float, default=30.0, help="seconds to wait after the last request, and again "
                   "after the pages close (default 30)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="centrifuge-load-") as tmp_name:
        report = {"command": " ".join(sys.argv), **run_load(args, Path(tmp_name))}
    # While open, each page keeps its last result (until its next job, an hour, or the server stops); once
    # closed, nothing of it may stay. A stopped job must not run to its end: only good jobs write their zip.
    good_ok = report["requests"].get("good", 0) - sum(f.startswith("good") for f in report["failures"])
    report["job_folders_beyond_one_per_open_page"] = max(0, report["left_with_pages_open"].get("job_folders", 0)
                                                         - args.clients)
    report["stopped_jobs_that_ran_to_their_end"] = max(0, report["jobs_that_wrote_their_zip"] - good_ok)
    checks = {"no failures": not report["failures"], "page answered": not report["ping_failures"],
              "one folder per open page": not report["job_folders_beyond_one_per_open_page"],
              "no folder after the pages closed": not report["left_after_pages_closed"].get("job_folders", 0),
              "no stopped job ran to its end": not report["stopped_jobs_that_ran_to_their_end"],
              "clean stop": report["exit_status"] == 0 and not report["folder_left"]
              and not report["processes_left"]}
    report["checks"] = checks
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    failed = [name for name, ok in checks.items() if not ok]
    print("FAIL: " + ", ".join(failed) if failed else "PASS")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
