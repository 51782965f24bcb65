"""Inductor's layout optimization must not put VMamba's maps in an H-fastest layout.

With convolutions in a training graph (on CUDA; forced here on the CPU), inductor gives every dense 4D tensor
upstream of a convolution, and downstream up to the last one, channels-last strides for its own dims. A
(batch, H, W, C) map would so be written H-fastest (strided stores) and copied back for each matmul; the models
keep tokens (batch, H*W, C) between convolutions instead. Compiled VMamba-T training went from 2179 to 2638
img/s on nvidia-h200 with that (benchmarks/token_layout_ab_h200_2026-12-03.txt).
"""
import re

import pytest
import timm
import torch
from torch._inductor.utils import run_and_get_code

import vmamba_zoo.models  # noqa: F401

# the buffers inductor allocates: empty_strided_cpu((sizes), (strides), dtype)
BUFFER = re.compile(r"empty_strided_\w+\(\(([\d, ]+)\), \(([\d, ]+)\)")


def _buffers(codes):
    for code in codes:
        for sizes, strides in BUFFER.findall(code):
            yield tuple(int(v) for v in sizes.split(",") if v.strip()), tuple(int(v) for v in strides.split(",") if v.strip())


@pytest.mark.slow
@pytest.mark.parametrize("name, kwargs", [("test_vmamba", {}),
                                          ("vmamba_vanilla_tiny", dict(dims=16, depths=(1, 1, 2, 1)))])
def test_compiled_training_writes_maps_row_major(name, kwargs):
    torch._dynamo.reset()
    model = timm.create_model(name, **kwargs).train()
    x = torch.randn(2, 3, 64, 96)  # not square: (batch, H, W, C) and (batch, C, H, W) shapes differ
    with torch.no_grad():
        maps = model.forward_intermediates(x, output_fmt="NHWC", intermediates_only=True)
    sizes = {tuple(f.shape[1:3]) for f in maps} | {(32, 48)}  # the stages' and the v2 stem's first map
    compiled = torch.compile(model, options={"layout_optimization": True, "force_layout_optimization": True})
    with torch.backends.mkldnn.flags(enabled=False):  # the CUDA rule: layout optimization by the graph alone
        _, codes = run_and_get_code(lambda: compiled(x).sum().backward())
    buffers = list(_buffers(codes))
    convolution_maps = [(s, st) for s, st in buffers if len(s) == 4 and st[1] == 1 and s[1] in model.dims]
    assert convolution_maps, "found no channels-last convolution buffers: has inductor's code format changed?"
    # any (batch, H, W, C) map of a stage's size, patch merging's 4C-wide one included
    wrong = sorted({(s, st) for s, st in buffers if len(s) == 4 and s[1:3] in sizes and s[3] > 1 and st[1] == 1})
    assert not wrong, f"(batch, H, W, C) maps written H-fastest: {wrong}"
    torch._dynamo.reset()


class _StemAndStages(torch.nn.Module):
    """A model's stem and first stages, tokens out: its convolution kinds (the stem's, the strided downsampling,
    SS2D's depthwise one) and the SS2D op, at a fraction of the whole model's compile time."""

    def __init__(self, model, stages: int):
        super().__init__()
        self.stem, self.stages = model.stem, model.stages[:stages]

    def forward(self, x):
        x, size = self.stem(x)
        for stage in self.stages:
            x, size = stage(x, size)
        return x


def test_compiled_training_with_dynamic_shapes():
    """A training step under torch.compile(dynamic=True) (what a second input size also gets: automatic dynamic)
    matches eager. Convolutions take token views (to_image) that autograd saves for their backward; torch
    2.11-2.14's inductor failed ordering such an output view's symbolic strides (`cannot determine truth value of
    Relational`) until vmamba_zoo._inductor_compat."""
    torch._dynamo.reset()
    part = _StemAndStages(timm.create_model("test_vmamba"), stages=2).train()
    x = torch.randn(2, 3, 64, 96)  # not square: H and W get their own symbols
    compiled = torch.compile(part, dynamic=True, fullgraph=True)
    with torch._inductor.config.patch(force_disable_caches=True):  # lower the graphs here: no cached result
        out = compiled(x)
        out.sum().backward()
    grads = [p.grad.clone() for p in part.parameters()]
    part.zero_grad()
    expected = part(x)
    expected.sum().backward()
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grads, [p.grad for p in part.parameters()], rtol=1e-4, atol=1e-4)
    torch._dynamo.reset()
