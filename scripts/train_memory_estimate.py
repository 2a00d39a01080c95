"""The training memory estimate (``centrifuge.train.check_training_memory``) against a real run's peak memory.

Trains the paper's network for 2 steps on two generated clips on the CPU and prints the estimate, the process's
peak resident memory before the first step (imports and the model) and after the run. Usage:

    python scripts/train_memory_estimate.py [--frames 16] [--size 112] [--batch 2]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
from pathlib import Path

import numpy as np


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=16)
    p.add_argument("--size", type=int, default=112)
    p.add_argument("--batch", type=int, default=2)
    args = p.parse_args()

    import centrifuge.memory as memory
    from centrifuge import train as training
    from centrifuge.config import TrainConfig
    from centrifuge.model import ModelConfig, build_model
    from centrifuge.video_writer import write_video

    build_model(ModelConfig())  # what the process holds before any step: imports and one model
    before = peak_mb()
    estimate: dict[str, float] = {}
    check = memory.check_fits

    def spy(needed: float, *rest: object) -> None:
        estimate["bytes"] = needed
        check(needed, *rest)

    memory.check_fits = spy
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        videos = [str(Path(tmp) / f"v{i}.mp4") for i in range(2)]
        for path in videos:
            write_video(path, rng.integers(0, 256, (args.frames, args.size, args.size, 3), dtype=np.uint8), 25)
        cfg = TrainConfig(data=videos, frames=args.frames, size=args.size, batch_size=args.batch, iterations=2,
                          workers=0, device="cpu", precision="fp32", compile_loss=False, out=str(Path(tmp) / "run"),
                          log_every=1, image_every=0)
        training.train(ModelConfig(), cfg, progress=False)
    after = peak_mb()
    print(f"{args.batch} clips of {args.frames} frames at {args.size} pixels: "
          f"estimate {estimate['bytes'] / 2**20:.0f} MB; peak resident memory {before:.0f} MB before the first step, "
          f"{after:.0f} MB after the run (+{after - before:.0f} MB)", file=sys.stderr)


if __name__ == "__main__":
    main()
