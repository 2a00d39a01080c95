"""The separation's low-resolution store (``separation/store.py``) of two source trees side by side, alone: the
first pass's ``add`` of every chunk and the second pass's ``read`` of the chosen pair (with the concatenation
the composition does first), on random chunks the size of a clip's.

    git archive <commit> src | tar -x -C /tmp/before
    python scripts/bench_store.py --before /tmp/before/src --rounds 3

Rounds alternate the trees (before, after) in this process, in a
temporary folder on the disk of ``--dir``; the default is ``bikes.mp4``'s store: 250 frames of 8 slots at 452x192
in chunks of 12 (windows of 16 frames, 4 shared). ``--layout`` is the memory order of the model's output:
``plain`` ``[n, 3, T, h, w]`` or ``channels-last`` (``[T, h, w, n, 3]`` in memory). Prints the median seconds
of each and their ratio to before (``--cpu``: CPU seconds, system time included: the kernel's copies and page
faults are this process's; the disk's write-back is not).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from centrifuge.separation import store as after


def _load(src: Path) -> Any:
    """The store module of the tree ``src`` (it imports only numpy and torch)."""
    spec = importlib.util.spec_from_file_location("store_before", src / "centrifuge" / "separation" / "store.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there while the class is made
    spec.loader.exec_module(module)
    return module


def _window(layout: str, n: int, t: int, w: int, h: int) -> torch.Tensor:
    if layout == "plain":
        return torch.randn(n, 3, t, h, w)
    return torch.randn(t, h, w, n, 3).permute(3, 4, 0, 1, 2)


def one_run(make: Any, args: argparse.Namespace, folder: Path) -> tuple[float, float]:
    """(seconds adding every chunk, seconds reading the pair back) of one store made by ``make(path)``."""
    w, h = map(int, args.size.split("x"))
    window = _window(args.layout, args.slots, args.chunk + 4, w, h)
    inputs = torch.rand(3, args.chunk + 4, h, w) * 2 - 1
    store = make(folder / "lowres")
    clock = time.process_time if args.cpu else time.perf_counter
    t0 = clock()
    for a in range(0, args.frames, args.chunk):
        c = min(args.chunk, args.frames - a)
        store.add(window[:, :, :c], inputs[:, :c])
    t1 = clock()
    for a in range(0, args.frames, 5):  # the second pass's batches at 640x272: 5 frames of 2 slots
        low, low_inputs = store.read([1, 5], a, min(args.frames, a + 5))
        torch.cat([low, low_inputs[None]])
    t2 = clock()
    store.remove()
    return t1 - t0, t2 - t1


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--before", type=Path, required=True, help="the other tree's src folder")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--frames", type=int, default=250)
    p.add_argument("--chunk", type=int, default=12)
    p.add_argument("--slots", type=int, default=8)
    p.add_argument("--size", default="452x192", help="inference size WxH")
    p.add_argument("--layout", choices=["plain", "channels-last"], default="plain")
    p.add_argument("--cpu", action="store_true", help="this process's CPU seconds (user and system) instead of "
                   "wall seconds: the fairer figure on a machine shared with other work")
    p.add_argument("--dir", type=Path, default=None, help="folder for the store files (default: the temp folder)")
    args = p.parse_args()
    before = _load(args.before)
    w, h = map(int, args.size.split("x"))
    makers = {
        "before (file)": lambda path: before.LowResStore(path, args.slots, (w, h)),
        "after (file)": lambda path: after.LowResStore(path, args.slots, (w, h)),
    }
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in makers}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for r in range(args.rounds):
            for name, make in makers.items():
                times[name].append(one_run(make, args, Path(tmp)))
                print(f"round {r + 1} {name}: add {times[name][-1][0]:.2f} s, read {times[name][-1][1]:.2f} s",
                      file=sys.stderr, flush=True)
    print(f"{args.frames} frames of {args.slots} slots at {args.size}, chunks of {args.chunk}, {args.layout} layout, "
          f"{args.rounds} rounds, {'CPU' if args.cpu else 'wall'} seconds\n")
    print("| store | add (s) | read pair (s) | add + read (s) | / before |\n|---|---:|---:|---:|---:|")
    base = statistics.median(a + b for a, b in times["before (file)"])
    for name, runs in times.items():
        add, read = statistics.median(a for a, _ in runs), statistics.median(b for _, b in runs)
        both = statistics.median(a + b for a, b in runs)
        print(f"| {name} | {add:.2f} | {read:.2f} | {both:.2f} | {both / base:.2f} |")


if __name__ == "__main__":
    main()
