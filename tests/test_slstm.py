"""The sLSTM op (vmamba_zoo.ops.slstm): the PyTorch loop against the step-by-step oracle, forward and backward;
the op's contract."""
import pytest
import torch

from vmamba_zoo.mixers.reference import slstm_recurrent
from vmamba_zoo.ops.slstm import slstm_scan


def _inputs(batch, k, length, heads, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    wx = 2 * torch.randn(batch, k, length, heads, 4, d, generator=g, dtype=torch.float64)
    wx[..., 1, :] += 3.0  # forget gates open, as xLSTM initialises them: long memory, large m
    R = torch.randn(k, heads, 4 * d, d, generator=g, dtype=torch.float64) / d ** 0.5
    weights = torch.randn(batch, k, length, heads, d, generator=g, dtype=torch.float64)
    return wx, R, weights


def _oracle(wx, R, weights):
    """float64 step-by-step recurrence (the mixers' oracle) per direction, and its autograd gradients."""
    wx, R = wx.clone().requires_grad_(), R.clone().requires_grad_()
    batch, k, length, heads, _, d = wx.shape
    h = torch.stack([slstm_recurrent(wx[:, i].reshape(batch, length, -1), R[i], heads) for i in range(k)], 1)
    h = h.view(batch, k, length, heads, d)
    return h, torch.autograd.grad((h * weights).sum(), (wx, R))


CASES = [(3, 2, 7, 2, 5),     # two directions, padded head width
         (17, 1, 6, 1, 16),   # two batch blocks of the kernel
         (2, 1, 9, 3, 20),    # three heads, head width not a power of two
         (1, 1, 1, 1, 4)]     # one step


@pytest.mark.parametrize("shape", CASES, ids=["-".join(map(str, c)) for c in CASES])
def test_slstm_matches_oracle(shape):
    backend = "reference"
    wx, R, weights = _inputs(*shape)
    expected, expected_grads = _oracle(wx, R, weights)
    wx32, R32 = wx.float().requires_grad_(), R.float().requires_grad_()
    h = slstm_scan(wx32, R32, backend=backend)
    grads = torch.autograd.grad((h * weights.float()).sum(), (wx32, R32))
    torch.testing.assert_close(h.double(), expected, rtol=1e-4, atol=1e-5)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5 * want.abs().max().item())


def test_slstm_reference_float64_is_exact():
    """In float64 the loop and its explicit backward (m held constant) equal autograd through the recurrence."""
    wx, R, weights = _inputs(2, 2, 11, 2, 3, seed=1)
    expected, expected_grads = _oracle(wx, R, weights)
    wx_, R_ = wx.clone().requires_grad_(), R.clone().requires_grad_()
    h = slstm_scan(wx_, R_, backend="reference")
    grads = torch.autograd.grad((h * weights).sum(), (wx_, R_))
    torch.testing.assert_close(h, expected, rtol=1e-12, atol=1e-12)
    for got, want in zip(grads, expected_grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_slstm_op_contract():
    wx, R, _ = (t.float() for t in _inputs(2, 1, 5, 2, 3))
    assert torch.library.opcheck(torch.ops.vmamba_zoo.slstm_fwd, (wx.requires_grad_(), R.requires_grad_(),
                                                                     "reference"),
                                 test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))
    with pytest.raises(ValueError, match="R must be"):
        slstm_scan(wx, R[:, :1])
    with torch.device("meta"):  # shapes only: no loop over positions
        h = slstm_scan(torch.empty(2, 1, 4096, 4, 4, 96), torch.empty(1, 4, 384, 96))
    assert h.shape == (2, 1, 4096, 4, 96)
