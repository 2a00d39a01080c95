"""The thin-layer training kernels compute what the stock operators compute, and are taken only where they apply."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import centrifuge.model as model_module
from centrifuge.losses import pit_loss
from centrifuge.model import ModelConfig, build_model
from centrifuge.thin_layers import batch_norm_relu, pointwise_conv

CL = torch.channels_last_3d


def _bn(c: int, momentum: float | None = 0.1) -> torch.nn.BatchNorm3d:
    torch.manual_seed(c)
    bn = torch.nn.BatchNorm3d(c, eps=1e-3, momentum=momentum).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
        bn.running_mean.uniform_(-1, 1)
    return bn


def _assert_same_gradients(module: torch.nn.Module, ref: torch.nn.Module, x: torch.Tensor, x_ref: torch.Tensor,
                           rtol: float) -> None:
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=rtol, atol=1e-12)
    for p, q in zip(module.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=rtol, atol=1e-12)


@pytest.mark.parametrize("c", [2, 4, 8])  # one channel: both layouts are the same
@pytest.mark.parametrize("momentum", [0.1, None])
def test_batch_norm_relu_matches_batchnorm_then_relu(c: int, momentum: float | None) -> None:
    bn = _bn(c, momentum)
    ref = copy.deepcopy(bn)
    x = (torch.randn(2, c, 4, 8, 8, dtype=torch.float64) * 3 + 1).to(memory_format=CL).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    grad = torch.randn(2, c, 4, 8, 8, dtype=torch.float64)
    for _ in range(2):  # the second call sees the running statistics the first one left
        y, y_ref = batch_norm_relu(bn, x), F.relu(ref(x_ref))
        assert "BatchNormReLU" in type(y.grad_fn).__name__  # the thin path ran
        y.backward(grad)
        y_ref.backward(grad)
        torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    _assert_same_gradients(bn, ref, x, x_ref, rtol=1e-10)
    for a, b in zip(bn.buffers(), ref.buffers(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_batch_norm_relu_leaves_other_cases_to_batchnorm() -> None:
    def path(bn: torch.nn.BatchNorm3d, x: torch.Tensor) -> str:
        return type(batch_norm_relu(bn, x).grad_fn).__name__

    x = torch.randn(2, 4, 4, 8, 8, dtype=torch.float64, requires_grad=True)
    assert "BatchNormReLU" in path(_bn(4), x.to(memory_format=CL))
    assert "BatchNormReLU" not in path(_bn(4), x)  # the standard layout: PyTorch's kernel is fast there
    assert "BatchNormReLU" not in path(_bn(4).eval(), x.to(memory_format=CL))  # running statistics
    wide = torch.randn(2, 16, 4, 8, 8, dtype=torch.float64, requires_grad=True).to(memory_format=CL)
    assert "BatchNormReLU" not in path(_bn(16), wide)
    with torch.no_grad():
        assert batch_norm_relu(_bn(4), x.to(memory_format=CL)).grad_fn is None


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("residual", [True, False])
def test_pointwise_conv_matches_the_convolution_and_the_residual_add(bias: bool, residual: bool) -> None:
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(4, 12, 1, bias=bias).double()
    ref = copy.deepcopy(conv)
    x = torch.randn(2, 4, 3, 5, 6, dtype=torch.float64).to(memory_format=CL).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    r = torch.randn(2, 3, 3, 5, 6, dtype=torch.float64).to(memory_format=CL) if residual else None
    y = pointwise_conv(conv, x, r)
    y_ref = ref(x_ref)
    if r is not None:
        y_ref = (y_ref.unflatten(1, (4, 3)) + r[:, None]).flatten(1, 2)
    assert y.is_contiguous()  # the layout the loss reads fastest
    grad = torch.randn_like(y)
    y.backward(grad)
    y_ref.backward(grad)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    _assert_same_gradients(conv, ref, x, x_ref, rtol=1e-12)


def _stock_layers(monkeypatch: pytest.MonkeyPatch) -> None:
    def stock_head(conv: torch.nn.Conv3d, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        y = conv(x)
        return y if residual is None else (y.unflatten(1, (-1, 3)) + residual[:, None]).flatten(1, 2)

    monkeypatch.setattr(model_module, "batch_norm_relu", lambda bn, x: F.relu(bn(x), inplace=True))
    monkeypatch.setattr(model_module, "pointwise_conv", stock_head)


def test_a_training_step_is_the_stock_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loss, every gradient and every BatchNorm statistic of a residual model, with and without the thin
    layers (fp64, so that only real differences show)."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(n_layers=3, width=0.125, residual=True)).double().to(memory_format=CL)
    stock = copy.deepcopy(model)
    mix = (torch.rand(2, 3, 8, 32, 32, dtype=torch.float64) * 2 - 1).to(memory_format=CL)
    layers = torch.rand(2, 2, 3, 8, 32, 32, dtype=torch.float64) * 2 - 1

    def step(net: torch.nn.Module) -> torch.Tensor:
        loss = pit_loss(net(mix), layers)[0].mean()
        loss.backward()
        return loss.detach()

    loss = step(model)
    _stock_layers(monkeypatch)
    loss_stock = step(stock)
    torch.testing.assert_close(loss, loss_stock, rtol=1e-12, atol=0)
    for (name, p), q in zip(model.named_parameters(), stock.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-7, atol=1e-12, msg=name)
    for (name, a), b in zip(model.named_buffers(), stock.buffers(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12, msg=name)
