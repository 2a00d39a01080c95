"""`centrifuge separate` of two source trees side by side: each stage's seconds (``layers.json``'s ``timings``),
the peak memory, and whether the outputs agree.

    git archive <commit> src | tar -x -C /tmp/before
    python scripts/bench_separate.py clip.mp4 --before /tmp/before/src --rounds 3
    python scripts/bench_separate.py clip.mp4 --before /tmp/before/src --make 1280x720 --frames 64

Each round runs ``python -m centrifuge separate CLIP -o OUT --no-progress`` once per tree, alternately (before,
after, before, ...), under ``/usr/bin/time -v`` for the peak resident memory and the CPU time (``cpu_s``: user +
system, all threads; steadier than wall time on a shared machine), with this process's environment
(set ``OMP_NUM_THREADS`` as the runs should have it) and ``PYTHONPATH`` pointing at the tree. ``--make WxH``
first writes the clip's first ``--frames`` frames resized to that size (PyAV, bilinear; H.264 CRF 18) into
a temporary folder and runs on that. Prints a markdown table of the medians, each round's total ratio, and the
largest difference between the two trees' layer files (decoded) and between their ``layers.json`` figures, also
figure by figure.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import two_trees

STAGES = ["decode", "inference", "stitch", "compose", "encode", "finish"]


def make_clip(src: Path, dst: Path, width: int, height: int, frames: int) -> None:
    """The first ``frames`` frames of ``src`` resized to ``width`` x ``height`` (bilinear), H.264 CRF 18."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        stream = inp.streams.video[0]
        enc = out.add_stream("libx264", rate=stream.average_rate, options={"crf": "18", "preset": "veryfast"})
        enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
        enc.codec_context.time_base = 1 / stream.average_rate
        for i, frame in enumerate(inp.decode(stream)):
            if i == frames:
                break
            small = frame.reformat(width=width, height=height, format="yuv420p", interpolation="BILINEAR")
            small.pts, small.time_base = i, 1 / stream.average_rate
            out.mux(enc.encode(small))
        out.mux(enc.encode(None))


def run(tree: Path, clip: Path, out: Path) -> dict[str, Any]:
    """One separation with ``tree`` first on the path: its timings and peak memory (MB)."""
    env = two_trees.tree_env(tree)
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "centrifuge", "separate", str(clip), "-o", str(out),
           "--no-progress"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{tree}: separate failed:\n{done.stderr[-2000:]}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)
    meta = json.loads((out / "layers.json").read_text())
    figures = {k: meta["timings"][f"{k}_s"] for k in STAGES}
    figures["total"] = meta["timings"]["total_s"]
    figures["peak_mb"] = int(rss.group(1)) / 1024 if rss else float("nan")
    # CPU seconds of the whole process (all threads): steadier than wall time on a shared machine
    cpu = [re.search(rf"{kind} time \(seconds\): ([\d.]+)", done.stderr) for kind in ("User", "System")]
    figures["cpu_s"] = sum(float(m.group(1)) for m in cpu if m) if all(cpu) else float("nan")
    return figures


def _floats(x: Any, path: str = "") -> dict[str, float]:
    """Every number of a JSON value by its path (timings and paths left out)."""
    if isinstance(x, dict):
        return {k: v for key, val in x.items() if key not in ("timings", "path")
                for k, v in _floats(val, f"{path}/{key}").items()}
    if isinstance(x, list):
        return {k: v for i, val in enumerate(x) for k, v in _floats(val, f"{path}[{i}]").items()}
    return {path: float(x)} if isinstance(x, (int, float)) and not isinstance(x, bool) else {}


def compare(a: Path, b: Path) -> str:
    """How far the two runs' outputs are apart: decoded layer files and ``layers.json`` figures."""
    from centrifuge.video import read_video

    ma, mb = (json.loads((d / "layers.json").read_text()) for d in (a, b))
    lines = [f"files: {sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())} (same names)"]
    for name in ma["files"]["layers"]:
        va, vb = read_video(a / name).astype(np.int16), read_video(b / name).astype(np.int16)
        if va.shape != vb.shape:
            lines.append(f"{name}: shapes {va.shape} and {vb.shape}")
            continue
        d = np.abs(va - vb)
        lines.append(f"{name}: decoded frames differ by at most {d.max()} levels, {d.mean():.3f} on average")
    fa, fb = _floats(ma), _floats(mb)
    keys_same = fa.keys() == fb.keys()
    worst = max(((abs(fa[k] - fb[k]), k) for k in fa.keys() & fb.keys()), default=(0.0, ""))
    lines.append(f"layers.json: same keys {keys_same}; largest figure difference {worst[0]:.4g} ({worst[1]})")
    by_figure: dict[str, float] = {}  # each figure's largest difference over its slots, pairs and channels
    for k in fa.keys() & fb.keys():
        name = re.sub(r"\[\d+\]", "[]", k)
        by_figure[name] = max(by_figure.get(name, 0.0), abs(fa[k] - fb[k]))
    lines += [f"  {name}: {d:.4g}" for name, d in sorted(by_figure.items())]
    return "\n".join(lines)


def main() -> None:
    p = two_trees.parser(__doc__)
    p.add_argument("--make", help="WxH: run on the clip's first --frames frames resized to this size")
    p.add_argument("--frames", type=int, default=64)
    p.add_argument("--log", type=Path, help="append each run's figures to this file as a JSON line as it ends")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clip = args.clip
        if args.make:
            width, height = map(int, args.make.split("x"))
            clip = Path(tmp) / f"clip-{args.make}.mp4"
            make_clip(args.clip, clip, width, height, args.frames)
        trees = {"before": args.before, "after": args.after}
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in trees}
        for r in range(args.rounds):
            for name, tree in trees.items():
                out = Path(tmp) / f"{name}-{r}"
                results[name].append(run(tree, clip, out))
                if args.log:
                    with args.log.open("a") as log:
                        record = {"tree": name, "round": r + 1, "clip": str(clip), **results[name][-1]}
                        log.write(json.dumps(record) + "\n")
                print(f"round {r + 1} {name}: total {results[name][-1]['total']:.2f} s", file=sys.stderr, flush=True)
        print(f"clip: {args.clip.name}{' resized to ' + args.make if args.make else ''}, {args.rounds} rounds, "
              f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}\n")
        print("| stage (`timings`) | before (s) | after (s) | after / before |\n|---|---:|---:|---:|")
        for key in [*STAGES, "total", "cpu_s", "peak_mb"]:
            b, a = (statistics.median(x[key] for x in results[name]) for name in trees)
            print(f"| {key} | {b:.2f} | {a:.2f} | {a / b if b else float('nan'):.2f} |")
        ratios = [a["total"] / b["total"] for a, b in zip(results["after"], results["before"], strict=True)]
        print(f"\nper round, total after / before: {', '.join(f'{x:.2f}' for x in ratios)}")
        for name in trees:
            per_round = [x["total"] / x["inference"] for x in results[name]]
            print(f"{name}: total / inference per round {', '.join(f'{x:.2f}' for x in per_round)}")
        print(compare(Path(tmp) / "before-0", Path(tmp) / "after-0"))


if __name__ == "__main__":
    main()
