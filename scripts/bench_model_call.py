"""The model call that `centrifuge separate` makes, in two source trees side by side: seconds and outputs.

    git archive <commit> src | tar -x -C /tmp/before
    OMP_NUM_THREADS=1 python scripts/bench_model_call.py bikes.mp4 --before /tmp/before/src --rounds 3

Each round runs, for each precision (``--precisions``, default fp32 and bf16) and each tree (alternately, the
order turning every round), a fresh process with that tree first on the path. It loads the packaged model
through ``separation.runner.load_runner`` as ``separate`` does for the clip's size (640x272: a 16x192x452
window), reads the clip's first window, and calls the runner ``--calls`` times after one warm-up call: the
whole call (resize, model, hand-over) and the model's part (``ModelRunner._forward``) are timed. Prints the
medians per tree and precision, their ratio, whether the layers came back contiguous, and how far the two
trees' layers are apart. Set ``OMP_NUM_THREADS`` as the runs should have it; the children inherit it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import two_trees


def worker(clip: str, precision: str, calls: int, dump: str) -> None:
    """One tree's timings, printed as a JSON line; the first call's layers saved to ``dump``."""
    import torch

    from centrifuge.separation.runner import load_runner
    from centrifuge.video import read_video

    frames = read_video(clip, 0, 16)
    runner = load_runner(None, "cpu", precision, (frames.shape[2], frames.shape[1]), None, None, None, None)
    window = list(frames[: runner.geometry.window])
    forward, model_s, call_s = runner._forward, [], []

    def timed(x: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        y = forward(x)
        model_s.append(time.perf_counter() - t0)
        return y

    runner._forward = timed  # type: ignore[method-assign]
    for i in range(calls + 1):
        t0 = time.perf_counter()
        y = runner(window)
        call_s.append(time.perf_counter() - t0)
        if i == 0:
            torch.save(y.clone(), dump)
    print(json.dumps({"call": call_s[1:], "model": model_s[1:], "contiguous": y.is_contiguous(),
                      "size": runner.geometry.size}))


def main() -> None:
    p = two_trees.parser(__doc__)
    p.add_argument("--calls", type=int, default=4, help="timed calls per process (default 4)")
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    p.add_argument("--worker", nargs=2, metavar=("PRECISION", "DUMP"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(str(args.clip), args.worker[0], args.calls, args.worker[1])
        return
    import torch

    trees = {"before": args.before, "after": args.after}
    runs: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for precision in args.precisions:
                for name in (list(trees) if r % 2 == 0 else list(trees)[::-1]):
                    cmd = [sys.executable, __file__, str(args.clip), "--before", str(trees[name]), "--calls",
                           str(args.calls), "--worker", precision, f"{tmp}/{name}-{precision}.pt"]
                    env = two_trees.tree_env(trees[name])
                    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
                    if done.returncode != 0:
                        raise SystemExit(f"{trees[name]}: the model call failed:\n{done.stderr[-2000:]}")
                    runs.setdefault((precision, name), []).append(json.loads(done.stdout.strip().splitlines()[-1]))
                    print(f"round {r + 1} {precision} {name}: model {runs[(precision, name)][-1]['model']}",
                          file=sys.stderr, flush=True)
        print(f"clip: {args.clip.name}, {args.rounds} rounds x {args.calls} calls, "
              f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}\n")
        print("| precision | part | before, median (s) | after, median (s) | after / before |")
        print("|---|---|---:|---:|---:|")
        for precision in args.precisions:
            for part in ("call", "model"):
                b, a = (statistics.median(t for run in runs[(precision, name)] for t in run[part]) for name in trees)
                print(f"| {precision} | {part} | {b:.3f} | {a:.3f} | {a / b:.2f} |")
        for precision in args.precisions:
            yb, ya = (torch.load(f"{tmp}/{name}-{precision}.pt") for name in trees)
            d = (ya - yb).abs()
            layout = {name: runs[(precision, name)][0]["contiguous"] for name in trees}
            print(f"{precision}: layers contiguous {layout}; |after - before| largest {d.max().item():.3g}, "
                  f"mean {d.mean().item():.3g}; layers' largest magnitude {yb.abs().max().item():.3g}")


if __name__ == "__main__":
    main()
