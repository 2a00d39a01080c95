"""The fast training step: the compiled model trains like the eager one, and training falls back to eager
where compiling is not possible. Tiny model and shapes: compiling is the slow part of these tests."""

from __future__ import annotations

import copy
import logging
import types

import pytest
import torch
from helpers import broken_compile

import centrifuge.training_step as training_step
from centrifuge.losses import pit_loss
from centrifuge.model import ModelConfig, build_model
from centrifuge.train import check_cpu_bf16_training
from centrifuge.training_step import compile_for_training

TINY = ModelConfig(n_layers=2, width=0.125, final_endpoint="Mixed_3c", residual=True)


def batch(frames: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    layers = torch.rand(2, 2, 3, frames, 32, 32, generator=g) * 2 - 1
    return layers.mean(1).contiguous(memory_format=torch.channels_last_3d), layers


def step(net: torch.nn.Module, mix: torch.Tensor, layers: torch.Tensor) -> torch.Tensor:
    loss = pit_loss(net(mix).float(), layers)[0].mean()
    loss.backward()
    return loss.detach()


def test_compiled_step_matches_eager_and_compiling_leaves_the_model_as_it_was(monkeypatch):
    # the clock reads 100.0 s before compiling and 102.5 s after: the compile time reported is their difference
    monkeypatch.setattr(training_step, "time", types.SimpleNamespace(perf_counter=iter([100.0, 102.5]).__next__))
    torch.manual_seed(0)
    model = build_model(TINY).train().to(memory_format=torch.channels_last_3d)
    eager = copy.deepcopy(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    mix, layers = batch()

    net, seconds = compile_for_training(model, model, mix, layers, pit_loss, None)
    assert net is not model and seconds == 2.5
    # the trial pass changed nothing: weights, BatchNorm statistics (and their counters), no gradients
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(p.grad is None for p in model.parameters())

    loss, ref_loss = step(net, mix, layers), step(eager, mix, layers)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-4, atol=1e-6)
    for (name, p), q in zip(model.named_parameters(), eager.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-3, atol=1e-5, msg=name)
    for (name, b), c in zip(model.named_buffers(), eager.buffers(), strict=True):  # one update of the statistics
        torch.testing.assert_close(b, c, rtol=1e-4, atol=1e-6, msg=name)


def test_compile_failure_falls_back_to_the_eager_model(monkeypatch, caplog):
    monkeypatch.setattr(training_step.torch, "compile", broken_compile)
    torch.manual_seed(0)
    model = build_model(TINY).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    mix, layers = batch()
    with caplog.at_level(logging.WARNING, logger="centrifuge"):
        net, seconds = compile_for_training(model, model, mix, layers, pit_loss, None)
    assert net is model and seconds == 0.0
    assert caplog.text.count("torch.compile of the model failed") == 1 and "no compiler here" in caplog.text
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_compiled_step_in_bf16_matches_eager_within_bf16_rounding():
    amp = torch.bfloat16  # bf16 autocast, as training on CPUs with AMX and on GPUs
    torch.manual_seed(0)
    model = build_model(TINY).train().to(memory_format=torch.channels_last_3d)
    eager = copy.deepcopy(model)
    # 8 frames, so that no 3x3x3 kernel spans more frames than its input has: on CPUs without AMX, oneDNN's
    # bf16 weight gradients are wrong there, compiled or not (training refuses bf16 on them, test below).
    mix, layers = batch(frames=8)
    net, _ = compile_for_training(model, model, mix, layers, pit_loss, amp)
    with torch.autocast("cpu", dtype=amp):
        out = net(mix)
    loss = pit_loss(out.float(), layers)[0].mean()
    with torch.autocast("cpu", dtype=amp):
        ref = eager(mix)
    ref_loss = pit_loss(ref.float(), layers)[0].mean()
    torch.testing.assert_close(loss, ref_loss, rtol=2e-2, atol=1e-3)
    loss.backward()
    ref_loss.backward()
    g = torch.cat([p.grad.flatten() for p in model.parameters()])
    h = torch.cat([p.grad.flatten() for p in eager.parameters()])
    assert torch.nn.functional.cosine_similarity(g, h, dim=0) > 0.99


def test_bf16_training_is_refused_on_cpus_without_amx(monkeypatch):
    import centrifuge.devices

    cpu = torch.device("cpu")
    monkeypatch.setattr(centrifuge.devices, "cpu_has_fast_bf16", lambda: False)
    with pytest.raises(ValueError, match="only on CPUs with AMX"):
        check_cpu_bf16_training(torch.bfloat16, cpu)
    check_cpu_bf16_training(None, cpu)  # fp32
    check_cpu_bf16_training(torch.bfloat16, torch.device("cuda"))  # GPUs have their own kernels
    monkeypatch.setattr(centrifuge.devices, "cpu_has_fast_bf16", lambda: True)
    check_cpu_bf16_training(torch.bfloat16, cpu)


@pytest.mark.parametrize("compile_loss", [False, True])
def test_a_run_trains_on_the_tone_free_loss_when_asked(compile_loss):
    # --tone-free-loss reaches the loss a training step minimises, compiled or eager
    from centrifuge.config import TrainConfig
    from centrifuge.training_step import make_optimizer, new_run

    model_cfg = ModelConfig(width=0.125, n_layers=3)
    model = build_model(model_cfg)
    cfg = TrainConfig(frames=4, size=16, videos_per_blend=2, tone_free_loss=0.5, compile_loss=compile_loss)
    run = new_run(model_cfg, cfg, torch.device("cpu"), model, make_optimizer(model, cfg), None,
                  torch.contiguous_format, micro=2)
    out, tgt = torch.randn(2, 3, 3, 4, 16, 16), torch.randn(2, 2, 3, 4, 16, 16)
    torch.testing.assert_close(run.loss_fn(out, tgt)[0], pit_loss(out, tgt, tone_free=0.5)[0])
    assert (run.loss_fn(out, tgt)[0] > pit_loss(out, tgt)[0]).all()
