"""SIGKILL soak of ``centrifuge separate`` and ``centrifuge train`` (not part of the test run; tiny, generated inputs).

For each of ``--kills`` seeded random moments, a fresh run is started and killed with SIGKILL at that moment
(separate: uniform over an uninterrupted run's wall time; train: within 0.25 s after the log line of a random
step, or during the start, so that the kills spread over the steps and checkpoints whatever the load). Then:

* separate: the output folder is absent, empty or a complete set (``layers.json`` and every file it lists, each
  decoding to the input's frame count); never a final name without ``layers.json``. The command is run again into
  the folder (``--overwrite`` when it holds files) and its layers must decode to the uninterrupted run's frames.
* train: every final name in the run folder reads whole (``config.json``, the weights, the optimizer state). The
  run is resumed with ``--resume`` and its final weights and optimizer state must equal the uninterrupted run's
  bit for bit.

    python scripts/kill_soak.py --kills 20 --seed 0
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # one thread: bit-identical runs
TINY = ["--width", "0.125", "--layers", "2", "--final-endpoint", "Mixed_3c"]


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "centrifuge", *args]


def timed_run(args: list[str]) -> float:
    t0 = time.time()
    subprocess.run(args, env=ENV, check=True, capture_output=True)
    return time.time() - t0


def killed_at(args: list[str], seconds: float) -> bool:
    """Run ``args`` and SIGKILL it after ``seconds``; False if it finished first."""
    return _kill_after(subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), seconds)


def _kill_after(proc: subprocess.Popen, seconds: float) -> bool:
    """SIGKILL ``proc`` after ``seconds``; False if it finished first."""
    try:
        proc.wait(timeout=seconds)
        return False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return True


def killed_after_step(args: list[str], step: int, delay: float) -> bool:
    """Run ``args`` (a training) and SIGKILL it ``delay`` seconds after its log line of ``step`` (after its start
    for step 0): moments spread over the steps and their checkpoints whatever the machine's load. False if it
    finished first."""
    proc = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if step > 0:
        for line in proc.stderr:
            if line.startswith(f"step {step}:"):
                break
    try:
        return _kill_after(proc, delay)
    finally:
        proc.stderr.close()


def setup(folder: Path) -> tuple[list[Path], Path]:
    """Two small videos and a tiny model."""
    import torch

    from centrifuge.checkpoint import save_weights
    from centrifuge.model import ModelConfig, build_model
    from centrifuge.video_writer import write_video

    rng = np.random.default_rng(0)
    videos = []
    for i in range(2):
        frames = rng.integers(0, 256, (24, 48, 64, 3), dtype=np.uint8)
        write_video(folder / f"v{i}.mp4", frames, 25)
        videos.append(folder / f"v{i}.mp4")
    torch.manual_seed(0)
    cfg = ModelConfig(n_layers=2, width=0.125, final_endpoint="Mixed_3c")
    save_weights(folder / "tiny.safetensors", build_model(cfg), cfg)
    return videos, folder / "tiny.safetensors"


def separate_state(out: Path, frames: int) -> str:
    """'absent', 'empty' or 'complete'; raises AssertionError for anything else."""
    from centrifuge.video import read_video

    if not out.exists():
        return "absent"
    names = {p.name for p in out.iterdir() if not p.name.startswith(".")}
    if not names:
        return "empty"
    assert "layers.json" in names, f"final names without layers.json: {sorted(names)}"
    files = json.loads((out / "layers.json").read_text())["files"]
    for name in [*files["layers"], files["preview"]]:
        assert len(read_video(out / name)) == frames, f"{name} is not whole"
    return "complete"


def soak_separate(folder: Path, video: Path, model: Path, kills: int, rng: random.Random) -> dict:
    from centrifuge.video import read_video

    base = ["separate", str(video), "--model", str(model), "--device", "cpu", "--no-progress"]
    wall = timed_run(command(*base, "-o", str(folder / "reference")))
    reference = [read_video(folder / "reference" / f"layer_{i}.mp4") for i in range(2)]
    states: dict[str, int] = {}
    for k in range(kills):
        out = folder / f"separate{k}"
        at = rng.uniform(0.0, wall)
        finished = not killed_at(command(*base, "-o", str(out)), at)
        state = "finished" if finished else separate_state(out, len(reference[0]))
        states[state] = states.get(state, 0) + 1
        again = ["--overwrite"] if out.exists() and any(out.iterdir()) else []
        timed_run(command(*base, "-o", str(out), *again))
        assert separate_state(out, len(reference[0])) == "complete"
        assert not list(out.glob(".separate-*")) and not list(folder.glob(f".{out.name}.separate-*"))
        for i in range(2):
            assert np.array_equal(read_video(out / f"layer_{i}.mp4"), reference[i]), f"kill {k}: layer {i} differs"
    return {"uninterrupted_s": round(wall, 1), "kills": kills, "states_after_kill": states}


def check_run_folder(run: Path) -> int | None:
    """The step of the run folder's checkpoint (None without one); every final name must read whole."""
    import torch
    from safetensors.torch import load_file

    if not (run / "config.json").exists():  # no checkpoint committed yet (a new run starts over on --resume)
        return None
    step = int(json.loads((run / "config.json").read_text())["step"])
    load_file(str(run / "model.safetensors"))
    torch.load(run / "optimizer.pt", weights_only=True)
    return step


def same_training(a: Path, b: Path) -> bool:
    import torch
    from safetensors.torch import load_file

    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    oa = torch.load(a / "optimizer.pt", weights_only=True)["state"]
    ob = torch.load(b / "optimizer.pt", weights_only=True)["state"]
    return (wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa) and oa.keys() == ob.keys()
            and all(torch.equal(oa[i]["momentum_buffer"], ob[i]["momentum_buffer"]) for i in oa))


def soak_train(folder: Path, videos: list[Path], kills: int, rng: random.Random) -> dict:
    base = ["train", *map(str, videos), *TINY, "--frames", "4", "--size", "32", "--batch-size", "2", "--workers", "0",
            "--iterations", "8", "--ckpt-every", "2", "--optimizer", "sgd", "--lr", "0.02", "--momentum", "0.9",
            "--preload", "--precision", "fp32", "--device", "cpu", "--no-progress", "--no-compile-loss", "--seed", "0",
            "--image-every", "0", "--log-every", "1"]
    wall = timed_run(command(*base, "--out", str(folder / "reference")))
    resumed_from: dict[str, int] = {}
    after: dict[int, int] = {}
    for k in range(kills):
        run = folder / f"train{k}"
        step = rng.randint(0, 7)  # within 0.25 s after the log line of this step (0: during the start)
        finished = not killed_after_step(command(*base, "--out", str(run)), step,
                                         rng.uniform(0.0, 8.0 if step == 0 else 0.25))
        after[step] = after.get(step, 0) + 1
        state = "finished" if finished else str(check_run_folder(run))
        resumed_from[state] = resumed_from.get(state, 0) + 1
        timed_run(command(*base, "--out", str(run), "--resume"))
        assert check_run_folder(run) == 8
        assert same_training(folder / "reference", run), f"kill {k}: not bit-identical"
    return {"uninterrupted_s": round(wall, 1), "kills": kills, "checkpoint_step_after_kill": resumed_from,
            "killed_after_step": dict(sorted(after.items()))}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=20, help="kills per command (default 20)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", choices=["separate", "train"], help="soak one command only")
    args = p.parse_args()
    rng = random.Random(args.seed)
    report: dict = {"command": " ".join(sys.argv)}
    with tempfile.TemporaryDirectory(prefix="centrifuge-soak-") as tmp:
        folder = Path(tmp)
        videos, model = setup(folder)
        t0 = time.time()
        if args.only != "train":
            report["separate"] = soak_separate(folder, videos[0], model, args.kills, rng)
        if args.only != "separate":
            report["train"] = soak_train(folder, videos, args.kills, rng)
        report["wall_s"] = round(time.time() - t0)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
