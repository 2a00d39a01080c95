"""A bounded load test of ``centrifuge app`` on 127.0.0.1 (not part of the test run; Linux: reads /proc).

Starts the server with the packaged model, then for ``--duration`` seconds ``--clients`` Gradio clients (each its
own page session) send, in a seeded random order: good uploads (checked: the status line, every layer video's
frame count and size, the zip's ``layers.json``), bad ones (text, a PNG, a one-frame video, audio, a video over
``--max-seconds``; checked: the page's error names the reason), separations cancelled mid-run, and uploads dropped
mid-transfer (a raw HTTP request closed after a part of its body). Meanwhile it samples the server's memory (the
process and its children) and asks for the page every 2 s. Afterwards it counts job folders and files left in the
server's folder, stops the server with SIGTERM and checks that the folder and every process are gone.

    python scripts/load_test_app.py --duration 150 --clients 4 --json load.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

#: What each kind of bad input must be told (words in the page's error line).
BAD = {"notes.txt": "is text", "still.png": "still image", "one.mp4": "only 1 frame", "audio.m4a": "only audio",
       "long.mp4": "lasts"}
KINDS = [("good", 0.45), ("bad", 0.30), ("cancel", 0.15), ("drop", 0.10)]


def make_inputs(folder: Path, max_seconds: float) -> dict[str, tuple[Path, int]]:
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
    write_video(folder / "long.mp4", rng.integers(0, 256, (int(4 * (max_seconds + 5)), 16, 16, 3), dtype=np.uint8), 4)
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


def start_server(port: int, max_seconds: float, tmp: Path) -> subprocess.Popen:
    """``centrifuge app`` in its own session (so its process group is its own), with TMPDIR under ``tmp``."""
    env = {**os.environ, "TMPDIR": str(tmp), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.Popen([sys.executable, "-m", "centrifuge", "app", "--port", str(port), "--device", "cpu",
                             "--max-seconds", str(max_seconds)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, start_new_session=True)
    deadline = time.time() + 300
    for line in proc.stdout:
        if "centrifuge app: http" in line:
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # keep draining
            return proc
        if time.time() > deadline:
            break
    proc.kill()
    raise SystemExit(f"the server did not start: {line.strip() if 'line' in locals() else ''}")


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
    """Samples the server tree's memory every 0.5 s and fetches the page every 2 s."""

    def __init__(self, pid: int, url: str):
        super().__init__(daemon=True)
        self.pid, self.url, self.stop = pid, url, threading.Event()
        self.memory: list[tuple[float, float]] = []  # (time, MB)
        self.pings: list[float] = []
        self.ping_failures: list[str] = []

    def run(self) -> None:
        last_ping = 0.0
        while not self.stop.is_set():
            now = time.time()
            self.memory.append((now, rss_mb(tree(self.pid))))
            if now - last_ping >= 2:
                last_ping = now
                try:
                    with urllib.request.urlopen(self.url, timeout=30) as r:
                        r.read()
                    self.pings.append(time.time() - now)
                except OSError as e:
                    self.ping_failures.append(str(e))
            self.stop.wait(0.5)


def check_good(result: tuple, frames: int, size: tuple[int, int]) -> str | None:
    """None when the outputs are right, else what is wrong."""
    from centrifuge.video import probe

    status, layers, downloads = result[0], [u for u in result[2:10] if u.get("visible")], result[-1]
    if status != f"Done: {frames} frames, 2 layers.":
        return f"status {status!r}"
    if len(layers) != 2:
        return f"{len(layers)} layer players"
    for update in layers:
        info = probe(update["value"])
        if (info.num_frames, info.width, info.height) != (frames, *size):
            return f"layer {info.num_frames} frames {info.width}x{info.height}"
    with zipfile.ZipFile(downloads[-1]) as z:
        if "layers.json" not in z.namelist():
            return "no layers.json in the zip"
    return None


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


class Client(threading.Thread):
    """One page session sending seeded random requests until ``deadline``."""

    def __init__(self, index: int, url: str, port: int, files: dict, deadline: float, seed: int, downloads: Path):
        super().__init__(daemon=True)
        self.url, self.port, self.files, self.deadline = url, port, files, deadline
        self.rng = random.Random(seed * 1000 + index)
        self.downloads = downloads / f"client{index}"
        self.counts: Counter[str] = Counter()
        self.failures: list[str] = []
        self.good_seconds: list[float] = []

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

        return self.client.submit(upload_path=handle_file(str(self.files[name][0])), clip_name="", keep="best2",
                                  size_choice="auto", api_name="/on_separate")

    def good(self) -> None:
        name = self.rng.choice([n for n in self.files if n.startswith("good")])
        path, frames = self.files[name]
        from centrifuge.video import probe

        info, t0 = probe(path), time.time()
        wrong = check_good(self._submit(name).result(timeout=600), frames, (info.width, info.height))
        self.good_seconds.append(time.time() - t0)
        if wrong:
            self.failures.append(f"good {name}: {wrong}")

    def bad(self) -> None:
        name = self.rng.choice(list(BAD))
        status = self._submit(name).result(timeout=600)[0]
        if not (status.startswith("**Error:**") and BAD[name] in status):
            self.failures.append(f"bad {name}: {status!r}")

    def cancel(self) -> None:
        job = self._submit(self.rng.choice([n for n in self.files if n.startswith("good")]))
        time.sleep(self.rng.uniform(1.0, 6.0))
        job.cancel()

    def drop(self) -> None:
        drop_upload(self.port, self.rng)


def leftovers(tmp: Path) -> dict[str, int]:
    """Job folders and other files in the server's folder (``TMPDIR/centrifuge-app-*``)."""
    roots = list(tmp.glob("centrifuge-app-*"))
    if not roots:
        return {"roots": 0}
    root = roots[0]
    jobs = [p for p in (root / "jobs").iterdir()] if (root / "jobs").is_dir() else []
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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=150.0, help="seconds of requests (default 150)")
    p.add_argument("--clients", type=int, default=4, help="concurrent page sessions (default 4)")
    p.add_argument("--max-seconds", type=float, default=20.0, help="the server's --max-seconds (default 20)")
    p.add_argument("--quiet", type=float, default=30.0, help="seconds to wait after the last request (default 30)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the figures here")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="centrifuge-load-") as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "server").mkdir()
        files = make_inputs(tmp, args.max_seconds)
        port = free_port()
        t_start = time.time()
        proc = start_server(port, args.max_seconds, tmp / "server")
        url = f"http://127.0.0.1:{port}/"
        started = time.time()
        monitor = Monitor(proc.pid, url)
        monitor.start()
        clients = [Client(i, url, port, files, started + args.duration, args.seed, tmp / "downloads")
                   for i in range(args.clients)]
        for c in clients:
            c.start()
        for c in clients:
            c.join(timeout=args.duration + 900)
        finished = time.time()
        time.sleep(args.quiet)  # cancelled and dropped work settles
        left = leftovers(tmp / "server")
        monitor.stop.set()
        monitor.join()
        stopped = stop(proc, tmp / "server")
    counts = sum((c.counts for c in clients), Counter())
    good = sorted(s for c in clients for s in c.good_seconds)
    report = {
        "command": " ".join(sys.argv), "clients": args.clients, "duration_s": args.duration,
        "server_start_s": round(started - t_start, 1), "requests_until_s": round(finished - started, 1),
        "requests": dict(counts), "failures": [f for c in clients for f in c.failures],
        "good_seconds_median": round(good[len(good) // 2], 1) if good else None,
        "good_seconds_max": round(good[-1], 1) if good else None,
        "memory_peak_mb": round(max(mb for _, mb in monitor.memory)),
        "memory_peak_per_30s_mb": memory_windows(monitor.memory, started),
        "pings": len(monitor.pings), "ping_failures": monitor.ping_failures[:5],
        "ping_max_s": round(max(monitor.pings), 2) if monitor.pings else None,
        "left_before_stop": left, **stopped,
    }
    # Each session keeps its last result (until its next job, an hour, or the server stops): more is left behind.
    extra = max(0, left.get("job_folders", 0) - args.clients)
    report["job_folders_beyond_one_per_session"] = extra
    ok = (not report["failures"] and not report["ping_failures"] and stopped["exit_status"] == 0
          and not stopped["folder_left"] and not stopped["processes_left"] and not extra)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print("PASS" if ok else "FAIL: see failures, ping_failures, job_folders_beyond_one_per_session, exit_status, "
          "folder_left, processes_left")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
