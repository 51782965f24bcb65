"""The recurrent mixers on the GPU: the Triton sLSTM against the reference loop (the shapes of
vmamba_tiny_xlstm's sLSTM stage and odd ones), the LSTM op (cuDNN) against nn.LSTM, fp16 autocast and
torch.compile of the LSTM and xLSTM mixers against eager.

Run on the device machine: ``pytest -m gpu tests/gpu``. CI (no GPU) deselects the marker.
"""
import pytest
import torch

from vmamba_zoo.mixers import create_mixer
from vmamba_zoo.ops import backends
from vmamba_zoo.ops.lstm import lstm_scan
from vmamba_zoo.ops.slstm import slstm_scan

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _need_cuda():
    if not torch.cuda.is_available():
        pytest.fail("the gpu suite needs a CUDA device (run it on the device machine)")


def test_auto_slstm_is_the_reference_on_cuda():
    """The Triton sLSTM is opt-in (it ran out of shared memory on an H200); auto must not pick it."""
    wx, R = torch.zeros(2, 1, 3, 1, 4, 8, device="cuda"), torch.zeros(1, 1, 32, 8, device="cuda")
    assert backends.resolve("slstm_fwd", "auto", (wx, R)).__name__ == "slstm_fwd_reference"


@pytest.mark.parametrize("shape", [(64, 1, 49, 4, 96), (5, 2, 300, 3, 24), (17, 4, 7, 2, 128), (1, 1, 1, 1, 8)])
def test_triton_slstm_matches_reference(shape):
    batch, k, length, heads, d = shape
    g = torch.Generator().manual_seed(0)
    wx = 2 * torch.randn(batch, k, length, heads, 4, d, generator=g)
    wx[..., 1, :] += 3.0
    R = torch.randn(k, heads, 4 * d, d, generator=g) / d ** 0.5
    weights = torch.randn(batch, k, length, heads, d, generator=g)
    results = []
    for backend in ("reference", "triton"):
        inputs = [wx.double().cuda().requires_grad_(), R.double().cuda().requires_grad_()] if backend == "reference" \
            else [wx.cuda().requires_grad_(), R.cuda().requires_grad_()]
        h = slstm_scan(*inputs, backend=backend)
        grads = torch.autograd.grad((h * weights.to(h)).sum(), inputs)
        results.append([h.double(), *(t.double() for t in grads)])
    for got, want in zip(results[1], results[0]):
        assert ((got - want).abs().max() / want.abs().max()).item() < 1e-4


def test_lstm_op_matches_nn_lstm_on_cudnn():
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(24, 24, batch_first=True, bidirectional=True).cuda()
    x = torch.randn(8, 500, 24, device="cuda", requires_grad=True)
    weights = list(lstm._flat_weights)
    ours = lstm_scan(x, weights, bidirectional=True)
    theirs = lstm(x)[0]
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    for a, b in zip(torch.autograd.grad(ours.square().sum(), [x, *weights]),
                    torch.autograd.grad(theirs.square().sum(), [x, *weights])):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name, kwargs", [("lstm", dict(scan_directions=4)), ("xlstm", dict(cell="slstm")),
                                          ("xlstm", dict(cell="mlstm", chunk_size=16))])
def test_mixer_autocast_and_compile(name, kwargs):
    torch.manual_seed(0)
    mixer = create_mixer(name, 96, **kwargs).cuda().train()
    x = torch.randn(4, 14, 14, 96, device="cuda", requires_grad=True)
    outs = []
    for compiled in (False, True):
        run = torch.compile(mixer, fullgraph=True) if compiled else mixer
        with torch.autocast("cuda", dtype=torch.float16):
            y = run(x)
        assert y.dtype == torch.float16
        grads = torch.autograd.grad(y.float().square().sum(), [x, *mixer.parameters()])
        outs.append([y.float(), *grads])
    for got, want in zip(outs[1], outs[0]):
        assert ((got - want).abs().max() / want.abs().max().clamp_min(1e-6)).item() < 2e-2
