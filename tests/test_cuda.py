"""What must hold on a CUDA GPU: inference agrees with the CPU's, separation and a compiled training run work.

Marked ``cuda``: skipped where no GPU is available (``scripts/gpu_check.sh`` runs them on a GPU machine).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import make_frames, make_video

from centrifuge.checkpoint import load_model
from centrifuge.config import TrainConfig
from centrifuge.export import compare
from centrifuge.inference import prepare_for_inference
from centrifuge.model import ModelConfig
from centrifuge.train import train

pytestmark = pytest.mark.cuda


def _clip() -> torch.Tensor:
    return torch.rand(1, 3, 16, 96, 128, generator=torch.Generator().manual_seed(0)) * 2 - 1


@pytest.mark.parametrize(("precision", "min_psnr"), [("fp32", 60.0), ("bf16", 35.0), ("fp16", 40.0)])
def test_packaged_model_on_cuda_matches_the_cpu(precision, min_psnr):
    model, _ = load_model()
    x = _clip()
    reference = prepare_for_inference(model, "cpu", "fp32")(x)
    out = prepare_for_inference(model, "cuda", precision)(x).cpu()
    figures = compare(reference, out)
    assert out.dtype == torch.float32 and figures["psnr_db"] > min_psnr, figures


def test_compiled_inference_on_cuda_matches_eager():
    model, _ = load_model()
    x = _clip()
    eager = prepare_for_inference(model, "cuda", "bf16")(x)
    compiled = prepare_for_inference(model, "cuda", "bf16", compile=True)(x)
    assert compare(eager.float().cpu(), compiled.float().cpu())["psnr_db"] > 35.0


def test_separate_on_cuda_agrees_with_the_cpu(tmp_path):
    from centrifuge import separate

    frames = make_frames(24, 96, 64, seed=3)
    gpu = separate(frames, device="cuda", precision="fp32", progress=False)
    cpu = separate(frames, device="cpu", precision="fp32", progress=False)
    assert gpu.layers.shape == cpu.layers.shape == (2, 24, 64, 96, 3)
    assert gpu.chosen == cpu.chosen
    assert np.abs(gpu.layers.astype(int) - cpu.layers.astype(int)).mean() < 1.0
    assert gpu.metadata["device"].startswith("cuda")


def test_compiled_training_on_cuda_runs_and_saves_finite_weights(tmp_path):
    paths = []
    for i in range(2):
        paths.append(str(tmp_path / f"v{i}.mp4"))
        make_video(paths[-1], frames=8, width=64, height=64, seed=i)
    cfg = TrainConfig(data=paths, frames=8, size=64, resize_factor=1.0, batch_size=4, iterations=40,
                      optimizer="adamw", lr=0.01, preload=True, workers=0, log_every=10, ckpt_every=1000,
                      image_every=0, out=str(tmp_path / "run"), device="cuda", seed=0, compile=True)
    state = train(ModelConfig(n_layers=2, width=0.25, final_endpoint="Mixed_4f"), cfg, progress=False)
    assert state["step"] == 40
    model, _ = load_model(tmp_path / "run")
    assert all(torch.isfinite(p).all() for p in model.parameters())
