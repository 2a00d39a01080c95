"""Peak memory of ``centrifuge separate`` on a long video against a short one (not part of the test run).

Generates two synthetic videos of the same size and content (a drifting gradient with moving squares, cheap to
encode: x264 ``ultrafast``), ``--minutes`` and ``--short-minutes`` long, separates each in its own process with
the packaged model and prints each run's peak resident memory (``ru_maxrss`` of the child) and wall time. The
issue's setting is 10 minutes at 720p against 1 minute:

    python scripts/long_input_memory.py --minutes 10 --short-minutes 1 --height 720

``--size`` (passed to separate) lowers the model's cost; the full-resolution work (decoding, composing and
encoding the layers at the input's size) is unchanged.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np


def write_synthetic(path: Path, seconds: float, height: int, fps: float) -> int:
    """A cheap-to-encode video at ``fps`` frames per second (a fraction too: 0.5 is one frame every 2 s); returns
    its frame count."""
    import av

    rate = Fraction(fps).limit_denominator(1001)
    width = (height * 16 // 9) // 2 * 2
    frames = round(seconds * fps)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=rate, options={"preset": "ultrafast", "crf": "28"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for t in range(frames):
            base = (xx + 3 * t) % width / width * 200 + (yy / height) * 40
            img = np.repeat(base[..., None], 3, axis=2).astype(np.uint8)
            for k in range(3):
                x0, y0 = (40 + 7 * t * (k + 1)) % (width - 60), (30 + 3 * t * (k + 1)) % (height - 60)
                img[y0:y0 + 60, x0:x0 + 60] = (255 - 60 * k, 80 * k, 200)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = t
            frame.time_base = 1 / rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return frames


def separate_peak(video: Path, out: Path, size: int | None) -> tuple[float, float, float]:
    """(peak resident memory in MB, wall seconds, CPU seconds) of one ``centrifuge separate`` process."""
    args = [sys.executable, "-m", "centrifuge", "separate", str(video), "-o", str(out), "--device", "cpu",
            "--no-progress", *(["--size", str(size)] if size else [])]
    t0 = time.time()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.time() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"separate failed: {proc.stderr.read().decode()[-500:]}")
    return usage.ru_maxrss / 1024, wall, usage.ru_utime + usage.ru_stime


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--short-minutes", type=float, default=1.0)
    p.add_argument("--height", type=int, default=720)
    p.add_argument("--fps", type=float, default=25.0, help="frame rate of the generated videos (default 25)")
    p.add_argument("--size", type=int, help="separate --size (default: separate's own choice)")
    args = p.parse_args()
    report: dict = {"command": " ".join(sys.argv)}
    with tempfile.TemporaryDirectory(prefix="centrifuge-long-") as tmp:
        for name, minutes in (("short", args.short_minutes), ("long", args.minutes)):
            video = Path(tmp) / f"{name}.mp4"
            t0 = time.time()
            frames = write_synthetic(video, minutes * 60, args.height, args.fps)
            made = time.time() - t0
            peak, wall, cpu = separate_peak(video, Path(tmp) / f"{name}-out", args.size)
            report[name] = {"minutes": minutes, "frames": frames, "generate_s": round(made, 1),
                            "separate_s": round(wall, 1), "separate_cpu_s": round(cpu, 1), "peak_mb": round(peak)}
            print(json.dumps({name: report[name]}), file=sys.stderr, flush=True)  # a long run's first half, early
    report["long_over_short_peak"] = round(report["long"]["peak_mb"] / report["short"]["peak_mb"], 3)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
