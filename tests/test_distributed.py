"""DDP on CPU (gloo) under torchrun, on 127.0.0.1 only: two ranks train like one process with the same global
batch and micro-batch, a two-rank checkpoint resumes on one rank, and an error on one rank ends the job."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import make_video
from safetensors.torch import load_file

from centrifuge.checkpoint import CONFIG, WEIGHTS
from centrifuge.cli import main
from centrifuge.config import load_preset
from centrifuge.model import build_model
from centrifuge.train import train

# Constant lr (no milestones), so runs of different lengths agree on their common steps.
PRESET = {
    "model": {"n_layers": 2, "corrector": False, "width": 0.125, "final_endpoint": "Mixed_3c"},
    "train": {"frames": 4, "size": 32, "batch_size": 4, "iterations": 4, "optimizer": "sgd", "lr": 0.02,
              "momentum": 0.9, "milestones": [], "lr_factors": [], "preload": True, "workers": 0, "log_every": 1,
              "ckpt_every": 2, "image_every": 0, "seed": 3, "device": "cpu"},
}


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, list[str], Path]:
    root = tmp_path_factory.mktemp("dist")
    videos = [root / f"v{i}.mp4" for i in range(3)]
    for i, p in enumerate(videos):
        make_video(p, frames=8, width=40, height=36, seed=i)
    preset = root / "tiny.json"
    preset.write_text(json.dumps(PRESET))
    return root, [str(p) for p in videos], preset


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args: list[str], cwd: Path, nproc: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if sys.platform.startswith("linux"):
        env["GLOO_SOCKET_IFNAME"] = "lo"  # keep gloo's traffic on the loopback interface
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(nproc),
           "--master_addr", "127.0.0.1", "--master_port", str(free_port()), *args]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def parameters(run: Path, preset: Path) -> dict[str, torch.Tensor]:
    """The trained parameters of a run (BatchNorm's running averages left out: under DDP they are rank 0's)."""
    names = {n for n, _ in build_model(load_preset(str(preset))[0]).named_parameters()}
    return {k: v for k, v in load_file(str(run / WEIGHTS)).items() if k in names}


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        # Only the order of floating-point additions differs (gloo sums the ranks' gradients).
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6, msg=key)


def logged_losses(run: Path) -> dict[int, float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"), size_guidance={"scalars": 0})
    acc.Reload()
    return {e.step: e.value for e in acc.Scalars("train/loss")}


def single(preset: Path, videos: list[str], out: Path, **kw) -> dict:
    model_cfg, cfg = load_preset(str(preset))
    cfg.data, cfg.out = videos, str(out)
    for k, v in kw.items():
        setattr(cfg, k, v)
    return train(model_cfg, cfg, progress=False)


@pytest.fixture
def like_a_rank():
    """This process computes with one thread, like each torchrun rank (``OMP_NUM_THREADS=1``).

    The thread count decides how a convolution's gradient sums are split, so their rounding: with the
    process's own thread count, its runs differ from the ranks' beyond the tolerance (in bf16, the default
    precision on CPUs with AMX), which an earlier test that left one thread behind used to hide.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_two_ranks_equal_one_process_and_resume_on_one(setup, capsys, like_a_rank):
    root, videos, preset = setup
    r = torchrun(["-m", "centrifuge", "train", *videos, "--preset", str(preset), "--out", "two", "--no-progress"],
                 cwd=root)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 rank(s) (gloo) on cpu: global batch 4 = 2 rank(s) x 2 clips (micro-batch 2 x 1 accumulation)" \
        in r.stderr
    assert r.stdout.count("trained to step 4") == 1  # rank 0 alone reports
    two = root / "two"
    assert json.loads((two / CONFIG).read_text())["world_size"] == 2

    # One process, global batch 4 in micro-batches of 2 (the same BatchNorm groups as 2 ranks x 2 clips).
    single(preset, videos, root / "one", micro_batch=2)
    assert_same(parameters(two, preset), parameters(root / "one", preset))
    # the logged loss is that of the global batch (averaged over the ranks), like one process's
    two_losses, one_losses = logged_losses(two), logged_losses(root / "one")
    assert sorted(two_losses) == [1, 2, 3, 4]
    assert [two_losses[s] for s in range(1, 5)] == pytest.approx([one_losses[s] for s in range(1, 5)], rel=1e-5)
    # The global batch in one forward pass normalises over 4 clips at a time: a different model.
    single(preset, videos, root / "one-forward")
    with pytest.raises(AssertionError):
        assert_same(parameters(two, preset), parameters(root / "one-forward", preset))

    # The 2-rank checkpoint continues on 1 rank exactly like the one-process run would have.
    assert main(["train", "--out", str(two), "--resume", "--iterations", "8", "--micro-batch", "2",
                 "--no-progress", "--device", "cpu"]) == 0
    assert "trained to step 8" in capsys.readouterr().out
    state = json.loads((two / CONFIG).read_text())
    assert state["step"] == 8 and state["world_size"] == 1
    single(preset, videos, root / "one-8", micro_batch=2, iterations=8)
    assert_same(parameters(two, preset), parameters(root / "one-8", preset))


FAILING_RANK = """
import os, sys
from centrifuge import data
if os.environ["RANK"] == "1":
    get = data.BlendDataset.__getitem__
    def failing(self, index):
        if index >= 3 * 4:  # the data of update 4 (global batch 4)
            raise RuntimeError("injected data error on rank 1")
        return get(self, index)
    data.BlendDataset.__getitem__ = failing
from centrifuge.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_error_on_one_rank_ends_the_job(setup):
    root, videos, preset = setup
    script = root / "failing_rank.py"
    script.write_text(FAILING_RANK)
    r = torchrun([str(script), "train", *videos, "--preset", str(preset), "--out", "failed", "--no-progress",
                  "--iterations", "50"], cwd=root)
    assert r.returncode != 0
    assert "injected data error on rank 1" in r.stderr
    # Updates 1-3 happened; update 4 needs rank 1's gradients, so the last checkpoint is that of step 2.
    assert json.loads((root / "failed" / CONFIG).read_text())["step"] == 2
