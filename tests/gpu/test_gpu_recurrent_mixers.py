"""The recurrent mixers on the GPU: the LSTM op (cuDNN) against nn.LSTM, fp16 autocast and torch.compile of
the LSTM and xLSTM mixers against eager.

Run on the device machine: ``pytest -m gpu tests/gpu``. CI (no GPU) deselects the marker.
"""
import pytest
import torch

from vmamba_zoo.mixers import create_mixer
from vmamba_zoo.ops.lstm import lstm_scan

pytestmark = pytest.mark.gpu


@pytest.fixture(autouse=True)
def _need_cuda():
    if not torch.cuda.is_available():
        pytest.fail("the gpu suite needs a CUDA device (run it on the device machine)")


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
