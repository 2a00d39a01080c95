"""The GPU path in one script, for a lent GPU machine (one H100/H200, no internet, minutes of time).

    python3 scripts/gpu_check.py --part a --clips shared/clips                          # ~6 min
    python3 scripts/gpu_check.py --part b --clips shared/clips --more-clips TRAIN_CLIPS --judge UNSEEN_CLIPS \
        --photos shared/photos/images --cutouts shared/photos/sprites --minutes 4
    python3 scripts/gpu_check.py --dry-run --clips CLIPS --photos PHOTOS --out /tmp/gpu  # on a CPU: tiny sizes

Part a: the tests marked ``cuda``; ``centrifuge bench`` of P-4 and PC-4 (paper-112, 4 layers, without and with
the corrector) at 64x224x224 in bf16 against the paper's 0.5 s and 1 s per clip on a Quadro P4000; separate's
frames/s on a generated 1080p clip; a short paper-112 training under torchrun on one GPU with ``--compile`` (its
clips/s and MFU from the log). Part b: a time-boxed training of the photo recipe (``--preset``, default
cpu-small, with ``--photos``, the clips and ``--more-clips``; by default the packaged model's tone-grid head with
a full-resolution corrector after it, which can learn to split by motion where the tone grid alone cannot:
docs/results.md; ``--no-corrector`` and ``--tone-grid 0|8`` pick one head alone), then
``evaluate`` on ``--judge``'s clips, which it has not trained on (without it, on the trained-on clips, labelled so:
plain, tone-matched, and tone-matched with every clip frozen, which tells whether the model uses motion),
and the weights copied out. ``--part all`` runs both;
``--steps tests bench separate torchrun recipe`` picks steps.

Every step runs as its own process with its own timeout, cut to what is left of ``--budget`` (default 540 s,
inside a 10-minute command), so one failure or hang costs only its own time. Results go to ``--out`` (default
``$OUT``): ``summary.md`` (the figures and each step's status), ``logs.tar.gz`` (every log and JSON) and
``model.safetensors`` (part b; split into 15 MB ``.partNN`` files if larger). If PyAV is missing (the GPU
image has PyTorch but not ``av``), wheels in ``--wheels`` (default ``.whl``) are installed first; fetch them
beforehand where there is internet, e.g. ``pip download --no-deps --only-binary=:all: --python-version 3.12
--platform manylinux_2_17_x86_64 -d .whl av``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STOPPED = "ok: stopped at its time limit"
PAPER_SECONDS = {"P-4": 0.5, "PC-4": 1.0}  # per 64x224x224 clip on a Quadro P4000 (the paper, Sec. 4)


class Steps:
    """Runs commands one by one, each with a timeout within the remaining budget, logging to ``work/NAME.log``."""

    def __init__(self, work: Path, budget: float, env: dict[str, str], scale: float = 1.0) -> None:
        self.work, self.deadline, self.env, self.scale = work, time.monotonic() + budget, env, scale
        self.status: list[tuple[str, str, float]] = []

    def run(self, name: str, cmd: list[str], timeout: float, time_box: bool = False) -> str | None:
        """Run ``cmd`` (its timeout times ``scale``, at most what is left); its output on success, else None.

        The command runs in its own process group, and all of that group is stopped at the timeout: torchrun's
        workers and DataLoader processes too. With ``time_box`` the timeout is the plan (a training stopped at
        its time limit), not a failure.
        """
        limit = min(timeout * self.scale, self.deadline - time.monotonic())
        if limit < 10:
            self.status.append((name, "skipped: no budget left", 0.0))
            return None
        start = time.monotonic()
        log = self.work / f"{name}.log"
        with open(log, "w") as f:
            f.write(f"$ {' '.join(cmd)}\n")
            f.flush()
            proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=f, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            try:
                code = proc.wait(timeout=limit)
                status = "ok" if code == 0 else f"failed (exit {code})"
            except subprocess.TimeoutExpired:
                stop_group(proc)
                status = STOPPED if time_box else f"timed out after {limit:.0f} s"
        elapsed = time.monotonic() - start
        self.status.append((name, status, elapsed))
        print(f"[{name}] {status} in {elapsed:.0f} s", flush=True)
        return log.read_text(errors="replace") if status in ("ok", STOPPED) else None


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM to the command's process group, SIGKILL 15 s later if it is still there."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def centrifuge(*args: str) -> list[str]:
    return [sys.executable, "-m", "centrifuge", *args]


def environment(steps: Steps, wheels: Path) -> None:
    steps.run("env", [sys.executable, "-c", "import torch, platform; print(platform.python_version(), "
                      "torch.__version__, torch.version.cuda, torch.cuda.is_available() and "
                      "torch.cuda.get_device_name(0))"], 30)
    if shutil.which("nvidia-smi"):
        steps.run("nvidia-smi", ["nvidia-smi"], 20)
    probe = subprocess.run([sys.executable, "-c", "import av"], env=steps.env, capture_output=True)
    if probe.returncode != 0 and wheels.is_dir():
        target = steps.work / "site"
        steps.run("wheels", [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps",
                             "--no-compile", "--target", str(target), *map(str, sorted(wheels.glob("*.whl")))], 120)
        steps.env["PYTHONPATH"] = f"{target}{os.pathsep}{steps.env['PYTHONPATH']}"


def cuda_tests(steps: Steps, args: argparse.Namespace, figures: dict, dev: str) -> None:
    steps.run("pytest-cuda", [sys.executable, "-m", "pytest", "-q", "-rs", "-m", "cuda", "tests/test_cuda.py",
                              "-p", "no:cacheprovider"], 200)


def bench(steps: Steps, args: argparse.Namespace, figures: dict, dev: str) -> None:
    tiny = ["--width", "0.125", "--final-endpoint", "Mixed_3c", "--frames", "8", "--size", "32",
            "--precision", "fp32", "--repeats", "2", "--peak-seconds", "0.2"]
    full = ["--frames", "64", "--size", "224", "--precision", "bf16", "--repeats", "5"]
    for name, corrector in (("P-4", "--no-corrector"), ("PC-4", "--corrector")):
        out = steps.work / f"bench-{name}.json"
        if steps.run(f"bench-{name}", centrifuge("bench", "--preset", "paper-112", "--layers", "4", corrector,
                                                 "--device", dev, "--no-split", "--json", str(out),
                                                 *(tiny if args.dry_run else full)), 90):
            result = json.loads(out.read_text())
            figures[f"bench {name}: s per clip (paper: {PAPER_SECONDS[name]} s on a P4000)"] = \
                round(result["seconds_per_clip"], 4)
            figures[f"bench {name}: fraction of peak"] = round(result.get("fraction_of_peak", 0), 3)


def separate_1080p(steps: Steps, args: argparse.Namespace, figures: dict, dev: str) -> None:
    w, h, n = (192, 108, 12) if args.dry_run else (1920, 1080, 96)
    clip = steps.work / "clip1080.mp4"
    make = ("import sys; sys.path.insert(0, 'tests'); from helpers import make_video; "
            f"make_video({str(clip)!r}, frames={n}, width={w}, height={h})")
    if steps.run("make-1080p", [sys.executable, "-c", make], 90) is None:
        return
    out = steps.work / "separate"
    if steps.run("separate-1080p", centrifuge("separate", str(clip), "-o", str(out), "--device", dev,
                                              "--no-progress"), 150):
        timings = json.loads((out / "layers.json").read_text()).get("timings", {})
        figures[f"separate {w}x{h}, {n} frames: frames/s"] = timings.get("frames_per_s")
        figures[f"separate {w}x{h}: stage seconds"] = {k: v for k, v in timings.items() if k.endswith("_s")}


def torchrun_training(steps: Steps, args: argparse.Namespace, figures: dict, dev: str) -> None:
    size = ["--frames", "4", "--size", "32", "--width", "0.125", "--final-endpoint", "Mixed_3c",
            "--batch-size", "2"] if args.dry_run else []
    steps.run("torchrun-paper-112", [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m",
        "centrifuge", "train", args.clips, "--preset", "paper-112", "--compile" if args.compile else "--no-compile",
        "--iterations",
        str(6 if args.dry_run else 120), "--log-every", "2" if args.dry_run else "20", "--ckpt-every", "100000",
        "--image-every", "0", "--no-progress", "--device", dev, "--out", str(steps.work / "p112"), "--overwrite",
        *size], 200)
    log_file = steps.work / "torchrun-paper-112.log"  # read also when the run timed out
    log = log_file.read_text(errors="replace") if log_file.exists() else ""
    lines = re.findall(r"step (\d+): loss ([\d.]+), ([\d.]+) clips/s, MFU ([\d.]+)%", log)
    if lines:
        step, loss, clips, mfu = lines[-1]
        figures[f"paper-112 under torchrun{' --compile' if args.compile else ''}, last log line"] = \
            f"step {step}: loss {loss}, {clips} clips/s, MFU {mfu}%"


def recipe(steps: Steps, args: argparse.Namespace, figures: dict, dev: str) -> None:
    if not args.photos:
        steps.status.append(("recipe", "skipped: no --photos", 0.0))
        return
    run = steps.work / "recipe"
    size = ["--frames", "4", "--size", "32", "--batch-size", "2"] if args.dry_run else []
    # Killed at the time limit: the run folder keeps its last committed checkpoint (every --ckpt-every steps).
    steps.run("recipe-train", centrifuge(
        "train", args.clips, *args.more_clips, "--photos", *args.photos,
        *(["--cutouts", *args.cutouts] if args.cutouts else []),
        "--preset", args.preset, "--tone-grid", str(args.tone_grid),
        "--corrector" if args.corrector else "--no-corrector", "--tone-match", str(args.tone_match),
        "--same-photo", str(args.same_photo), "--iterations",
        str(args.iterations), "--ckpt-every", str(args.ckpt_every), "--image-every", "0", "--no-progress",
        "--device", dev, "--out", str(run), "--overwrite", *size), args.minutes * 60 / steps.scale, time_box=True)
    if not (run / "model.safetensors").exists():
        return
    figures["recipe: step of the kept checkpoint"] = json.loads((run / "config.json").read_text()).get("step")
    ev = steps.work / "evaluate.json"
    frames_size = ["--frames", "4", "--size", "32"] if args.dry_run else ["--frames", "32", "--size", "112"]
    # Unseen pairs are the figure that counts; without --judge the trained-on clips are scored, and labelled so.
    judged, label = (args.judge, "unseen clips") if args.judge else (args.clips, "trained-on clips: memory")
    # With --judge, the same pairs tone-matched too (the figure that only a content split lowers), and those frozen
    # (a model that uses motion scores worse there).
    judged_kinds = [(", tone-matched", ["--tone-match"]), (", tone-matched, frozen", ["--tone-match", "--frozen"])]
    for kind, flags in [("", []), *(judged_kinds if args.judge else [])]:
        if steps.run("recipe-evaluate" + kind.replace(", ", "-"), centrifuge(
                "evaluate", judged, "--model", str(run), "--device", dev, *frames_size, *flags, "--json", str(ev),
                "--overwrite"), 120):
            result = json.loads(ev.read_text())
            figures[f"recipe: evaluate on {judged} ({label}{kind})"] = {
                k: v for k, v in result.items() if k not in ("per_pair", "videos", "model")}


STEPS = {"tests": cuda_tests, "bench": bench, "separate": separate_1080p, "torchrun": torchrun_training,
         "recipe": recipe}
PARTS = {"a": ["tests", "bench", "separate", "torchrun"], "b": ["recipe"], "all": list(STEPS)}


def collect(out: Path, work: Path, steps: Steps, figures: dict) -> None:
    """summary.md, logs.tar.gz and the recipe's weights under ``out`` (at most 8 files come back)."""
    out.mkdir(parents=True, exist_ok=True)
    lines = ["# GPU check", "", "| step | status | seconds |", "|---|---|---|"]
    lines += [f"| {n} | {s} | {t:.0f} |" for n, s, t in steps.status]
    lines += ["", "```json", json.dumps(figures, indent=2, default=str), "```", ""]
    (out / "summary.md").write_text("\n".join(lines))
    with tarfile.open(out / "logs.tar.gz", "w:gz") as tar:
        for path in sorted(work.rglob("*")):
            if path.is_file() and path.suffix in (".log", ".json", ".md") and path.stat().st_size < 5e6:
                tar.add(path, arcname=str(path.relative_to(work)))
    weights = work / "recipe" / "model.safetensors"
    if weights.exists():
        data, chunk = weights.read_bytes(), 15_000_000
        if len(data) <= chunk:
            shutil.copy(weights, out / "model.safetensors")
        for i in range(0, len(data), chunk) if len(data) > chunk else ():
            (out / f"model.safetensors.part{i // chunk:02d}").write_bytes(data[i:i + chunk])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--part", choices=list(PARTS), default="all")
    p.add_argument("--steps", nargs="+", choices=list(STEPS), help="run these steps only (instead of --part)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                   help="the torchrun training with --compile (default: on)")
    p.add_argument("--clips", required=True,
                   help="folder of video clips (training data; part b's evaluation data too without --judge)")
    p.add_argument("--more-clips", nargs="+", default=[], metavar="DIR",
                   help="more folders of real clips for part b's training (beside --clips)")
    p.add_argument("--judge", metavar="DIR",
                   help="folder of clips that part b does not train on, to evaluate it on (default: --clips, "
                        "reported as trained-on)")
    p.add_argument("--photos", nargs="+", help="photo folder(s) for part b's recipe")
    p.add_argument("--cutouts", nargs="+", help="cut-out folder(s) with alpha for part b's recipe")
    p.add_argument("--preset", default="cpu-small", help="part b's recipe (default cpu-small, as the packaged model)")
    p.add_argument("--tone-grid", type=int, default=8,
                   help="part b's predictor head (default 8: the tone grid of the packaged model, which cannot split "
                        "by motion alone; 0: full-resolution layers: docs/results.md)")
    p.add_argument("--corrector", action=argparse.BooleanOptionalAction, default=True,
                   help="part b: a full-resolution corrector after the predictor (default: on; with the tone grid "
                        "it learns to split by motion, docs/results.md's twelfth session)")
    p.add_argument("--tone-match", type=float, default=0.0, metavar="P",
                   help="part b: make a share P of the blends of tone-matched layers (train --tone-match; default 0)")
    p.add_argument("--same-photo", type=float, default=0.0, metavar="P",
                   help="part b: a share P of the blends of two clips of one photo (train --same-photo; default 0)")
    p.add_argument("--minutes", type=float, default=4.0, help="part b's training time limit (default 4)")
    p.add_argument("--iterations", type=int, default=3000, help="part b's schedule length (default 3000)")
    p.add_argument("--ckpt-every", type=int, default=100, help="part b's checkpoint interval (default 100)")
    p.add_argument("--budget", type=float, default=540.0, help="seconds for all steps together (default 540)")
    p.add_argument("--out", default=os.environ.get("OUT"), help="results folder (default: $OUT)")
    p.add_argument("--work", help="scratch folder (default: a fresh temporary one)")
    p.add_argument("--wheels", default=str(ROOT / ".whl"), help="wheels to install if PyAV is missing")
    p.add_argument("--dry-run", action="store_true", help="on the CPU with tiny sizes: check that each step runs")
    args = p.parse_args()
    if not args.out:
        p.error("--out is required when $OUT is not set")
    import tempfile

    work = Path(args.work or tempfile.mkdtemp(prefix="gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "PYTHONUNBUFFERED": "1"}
    # The dry run's tiny steps are slow for their size on a CPU (compiling, start-up): longer timeouts there.
    steps, figures = Steps(work, args.budget, env, scale=3.0 if args.dry_run else 1.0), {}
    environment(steps, Path(args.wheels))
    for name in args.steps or PARTS[args.part]:
        STEPS[name](steps, args, figures, "cpu" if args.dry_run else "cuda")
    collect(Path(args.out), work, steps, figures)
    print((Path(args.out) / "summary.md").read_text())
    return 0 if all(s in ("ok", STOPPED) for _, s, _ in steps.status) else 1


if __name__ == "__main__":
    sys.exit(main())
