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


def test_pointwise_conv_at_inference_writes_the_final_layers_in_float32_and_the_standard_layout() -> None:
    """Without autograd: a bf16 head asked for float32 computes in float32 from its bf16 inputs; without
    ``out_dtype`` (a PredictorCorrector's intermediate layers) it stays the stock channels-last convolution."""
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(4, 12, 1).bfloat16()
    x = torch.randn(2, 4, 3, 5, 6).bfloat16().to(memory_format=CL)
    r = torch.randn(2, 3, 3, 5, 6).bfloat16().to(memory_format=CL)
    exact = F.conv3d(x.double(), conv.weight.double(), conv.bias.double())
    exact = (exact.unflatten(1, (4, 3)) + r.double()[:, None]).flatten(1, 2)
    with torch.inference_mode():
        y = pointwise_conv(conv, x, r, torch.float32)
        stock = pointwise_conv(conv, x, r)
        plain = (conv(x).unflatten(1, (4, 3)) + r[:, None]).flatten(1, 2)
    assert y.dtype == torch.float32 and y.is_contiguous()
    torch.testing.assert_close(y.double(), exact, rtol=1e-6, atol=1e-6)  # float32 rounding only
    # The stock convolution's own layout, whatever this CPU's bf16 kernel writes (channels-last where it has
    # native bf16, standard where it falls back): compared with it, not with one machine's choice.
    assert stock.dtype == torch.bfloat16 and stock.stride() == plain.stride()
    assert torch.equal(stock, plain)
    torch.testing.assert_close(stock.double(), exact, rtol=2**-7, atol=2**-6)


def test_pointwise_conv_under_autocast_is_the_stock_head() -> None:
    """Mixed-precision training and validation: the stock operators, their dtype promotion included (a bf16
    convolution plus a float32 residual is float32)."""
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(4, 12, 1)
    x = torch.randn(2, 4, 3, 5, 6).bfloat16().to(memory_format=CL)
    r = torch.randn(2, 3, 3, 5, 6).to(memory_format=CL)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = pointwise_conv(conv, x, r)
        stock = (conv(x).unflatten(1, (4, 3)) + r[:, None]).flatten(1, 2)
    assert y.dtype == stock.dtype == torch.float32
    assert torch.equal(y, stock)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("corrector", [False, True])
def test_a_prepared_network_hands_on_its_layers_in_the_standard_layout(monkeypatch: pytest.MonkeyPatch,
                                                                       precision: str, corrector: bool) -> None:
    """What ``separate`` runs: float32 layers, contiguous, equal to the stock head's (a channels-last
    convolution, the residual add, then the conversion) to the precision's rounding."""
    import centrifuge.thin_layers as thin_layers
    from centrifuge.inference import prepare_for_inference

    torch.manual_seed(0)
    model = build_model(ModelConfig(n_layers=3, width=0.125, residual=True, corrector=corrector)).eval()
    for m in model.modules():
        if isinstance(m, model_module.UNetDecoder):  # the head starts near zero: make it count
            torch.nn.init.normal_(m.head.weight, std=0.3)
    fast = prepare_for_inference(model, "cpu", precision)
    x = torch.rand(1, 3, 5, 24, 40) * 2 - 1
    y = fast(x, output_dtype=None)
    assert y.dtype == torch.float32 and y.is_contiguous() and y.shape == (1, 3, 3, 5, 24, 40)
    monkeypatch.setattr(thin_layers, "_channels_last", lambda t: False)  # every head takes the stock path
    stock = fast(x, output_dtype=None)
    # bf16: the stock head rounds twice (convolution, residual add), the new one not at all
    tol = 1e-5 if precision == "fp32" else 2**-6 * float(stock.abs().max())
    torch.testing.assert_close(y, stock, rtol=0, atol=tol)


def _stock_layers(monkeypatch: pytest.MonkeyPatch) -> None:
    def stock_head(conv: torch.nn.Conv3d, x: torch.Tensor, residual: torch.Tensor | None = None,
                   out_dtype: torch.dtype | None = None) -> torch.Tensor:
        assert out_dtype is None  # training never asks for another dtype
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
