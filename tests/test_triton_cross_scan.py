"""Triton cross-scan / cross-merge on the CPU through TRITON_INTERPRET=1, against the reference ops.

cross_scan only moves data, so it must equal the reference exactly. cross_merge sums the K directions in
float32 in the reference's order, so it equals the reference computed in float32 and rounded once to the
output dtype (exactly for float32 / float16; bfloat16 within one unit in the last place, because the
interpreter truncates float32 -> bfloat16 where the GPU rounds to nearest).
"""
import importlib
import os

import pytest
import torch

from vmamba_zoo.ops import available_backends, backends, cross_merge, cross_scan, reference

KERNELS = "vmamba_zoo.ops.kernels.triton_cross_scan"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# odd sizes (partial tiles in every direction), one row, one column, one pixel, and VMamba's largest map
SIZES = [(13, 4), (1, 1), (7, 9), (3, 17), (1, 6), (6, 1), (56, 56)]


@pytest.fixture(scope="module")
def kernels():
    """The kernels module, which must run in Triton's interpreter here (tests/conftest.py turns it on)."""
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.fail("TRITON_INTERPRET=1 must be set before triton is imported (see tests/conftest.py)")
    return importlib.import_module(KERNELS)


def _image(batch, channels, height, width, channels_last, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels, height, width, generator=g).to(dtype)
    return x.permute(0, 2, 3, 1).contiguous() if channels_last else x


def _sequences(batch, directions, channels, length, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, directions, channels, length, generator=g).to(dtype)


def _merge_reference(y, height, width, directions, channels_last):
    """The reference merge in float32 (as the kernel accumulates), rounded once to y's dtype."""
    wide = y if y.dtype == torch.float64 else y.float()
    return reference.cross_merge(wide, height, width, directions, channels_last).to(y.dtype)


def _assert_merge_equal(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape
    if got.dtype == torch.bfloat16:  # interpreter truncates the final float32 -> bfloat16 rounding
        torch.testing.assert_close(got, want, rtol=2 ** -7, atol=0)
    else:
        assert torch.equal(got, want), (got.double() - want.double()).abs().max()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("hw", SIZES, ids=lambda hw: f"{hw[0]}x{hw[1]}")
@pytest.mark.parametrize("channels_last", [False, True], ids=["cf", "cl"])
@pytest.mark.parametrize("directions", [1, 2, 4])
def test_scan_and_merge_match_reference(kernels, directions, channels_last, hw, dtype):
    """Through the public ops with backend='triton': scan exactly, merge as the float32 reference."""
    height, width = hw
    batch, channels = 2, 3
    x = _image(batch, channels, height, width, channels_last, dtype, seed=height * 31 + width)
    scanned = cross_scan(x, directions, channels_last, backend="triton")
    assert scanned.dtype == dtype and scanned.is_contiguous()
    assert torch.equal(scanned, reference.cross_scan(x, directions, channels_last))
    y = _sequences(batch, directions, channels, height * width, dtype, seed=height * 17 + width)
    merged = cross_merge(y, height, width, directions, channels_last, backend="triton")
    assert merged.is_contiguous()
    _assert_merge_equal(merged, _merge_reference(y, height, width, directions, channels_last))


@pytest.mark.parametrize("hw,channels", [((13, 4), 5), ((7, 9), 3), ((3, 17), 6), ((5, 2), 17)])
@pytest.mark.parametrize("channels_last", [False, True], ids=["cf", "cl"])
@pytest.mark.parametrize("directions", [1, 2, 4])
def test_small_tiles_split_every_axis(kernels, directions, channels_last, hw, channels):
    """Tiny tile budgets split channels, rows, columns and steps into several partial tiles (the masking and
    the program -> tile mapping that VMamba-sized inputs exercise only on large maps)."""
    height, width = hw
    scan_tile, merge_tile = dict(tile_elements=16), dict(tile_elements=16, channels_last_pixels=8)
    block_c, block_q = kernels.scan_step_blocks(channels, height * width, channels_last, **scan_tile)
    assert block_c * block_q < channels * height * width  # several tiles per image
    _, _, block_c, block_h, block_w = kernels.tile_shape(channels, height, width, directions, channels_last,
                                                         **merge_tile)
    assert block_c * block_h * block_w < channels * height * width
    if channels == 17:
        assert block_c < channels  # the channel axis really is split
        assert kernels.scan_column_blocks(channels, height, width, **scan_tile)[0] < channels
    x = _image(2, channels, height, width, channels_last, torch.float32, seed=channels)
    assert torch.equal(kernels.cross_scan(x, directions, channels_last, scan_tile),
                       reference.cross_scan(x, directions, channels_last))
    y = _sequences(2, directions, channels, height * width, torch.float32, seed=channels + 1)
    assert torch.equal(kernels.cross_merge(y, height, width, directions, channels_last, merge_tile),
                       reference.cross_merge(y, height, width, directions, channels_last))


def test_float64_accumulates_in_float64(kernels):
    """float64 (the GPU suite's oracle dtype) is supported and merged without a float32 round trip."""
    x = _image(1, 2, 5, 3, False, torch.float64, seed=1)
    assert torch.equal(kernels.cross_scan(x, 4, False), reference.cross_scan(x, 4, False))
    y = _sequences(1, 4, 2, 15, torch.float64, seed=2) * 1e-9 + 1.0  # differences float32 would lose
    assert torch.equal(kernels.cross_merge(y, 5, 3, 4, False), reference.cross_merge(y, 5, 3, 4, False))


@pytest.mark.parametrize("channels_last", [False, True], ids=["cf", "cl"])
@pytest.mark.parametrize("directions", [1, 2, 4])
def test_gradients_run_the_kernels(kernels, monkeypatch, directions, channels_last):
    """Each op's backward is the other op: by name, both directions of autograd run the Triton kernels and
    give the reference gradients."""
    calls = []
    for name in ("cross_scan", "cross_merge"):
        original = getattr(kernels, name)
        monkeypatch.setattr(kernels, name, lambda *a, _f=original, _n=name: calls.append(_n) or _f(*a))
    height, width, channels = 3, 5, 2
    x = _image(2, channels, height, width, channels_last, torch.float32, seed=3).requires_grad_()
    y = _sequences(2, directions, channels, height * width, torch.float32, seed=4).requires_grad_()
    grad_scan = _sequences(2, directions, channels, height * width, torch.float32, seed=5)
    grad_merge = torch.randn(x.shape)

    dx = torch.autograd.grad(cross_scan(x, directions, channels_last, backend="triton"), x, grad_scan)[0]
    dy = torch.autograd.grad(cross_merge(y, height, width, directions, channels_last, backend="triton"), y,
                             grad_merge)[0]
    assert calls == ["cross_scan", "cross_merge", "cross_merge", "cross_scan"]
    dx_ref = torch.autograd.grad(reference.cross_scan(x, directions, channels_last), x, grad_scan)[0]
    dy_ref = torch.autograd.grad(reference.cross_merge(y, height, width, directions, channels_last), y,
                                 grad_merge)[0]
    assert torch.equal(dx, dx_ref) and torch.equal(dy, dy_ref)

    # the two kernels are each other's adjoint: <scan(x), y> == <x, merge(y)> (float64: exact up to summation)
    x64, y64 = x.detach().double(), y.detach().double()
    lhs = (kernels.cross_scan(x64, directions, channels_last) * y64).sum()
    rhs = (x64 * kernels.cross_merge(y64, height, width, directions, channels_last)).sum()
    torch.testing.assert_close(lhs, rhs, rtol=1e-12, atol=1e-12)


def test_non_contiguous_and_empty_inputs(kernels):
    """Strided views are copied to the layout the kernels index; empty tensors launch nothing."""
    base = torch.randn(2, 7, 5, 3)  # (B, H, W, C) storage, read as a channel-first (B, C, H, W) view
    x = base.permute(0, 3, 1, 2)
    assert torch.equal(cross_scan(x, 4, False, backend="triton"), reference.cross_scan(x, 4, False))
    y = torch.randn(2, 3, 4, 35).transpose(1, 2)  # (B, K=4, C=3, L) view
    assert torch.equal(cross_merge(y, 7, 5, 4, False, backend="triton"), reference.cross_merge(y, 7, 5, 4, False))
    empty = torch.randn(0, 3, 4, 5)
    assert kernels.cross_scan(empty, 4, False).shape == (0, 4, 3, 20)
    assert kernels.cross_merge(torch.randn(0, 2, 3, 20), 4, 5, 2, True).shape == (0, 4, 5, 3)


def test_errors_and_fallback(kernels, monkeypatch):
    """Bad arguments raise; a dtype the kernels lack falls back to the reference with one warning; auto mode
    never picks the interpreter on CPU."""
    monkeypatch.setattr(backends, "_WARNED", set())  # warnings are once per process: start afresh
    x = torch.randn(1, 2, 3, 4)
    with pytest.raises(ValueError, match="directions"):
        kernels.cross_scan(x, 3, False)
    with pytest.raises(ValueError, match="4D"):
        kernels.cross_scan(x[0], 4, False)
    with pytest.raises(ValueError, match="cross_merge expects"):
        kernels.cross_merge(torch.randn(1, 4, 2, 11), 3, 4, 4, False)
    with pytest.raises(TypeError, match="dtype"):
        kernels.cross_scan(x.to(torch.int32), 4, False)
    with pytest.raises(ValueError, match="scan_directions"):
        cross_scan(x, 3, backend="triton")

    ints = torch.arange(24, dtype=torch.int32).view(1, 2, 3, 4)
    with pytest.warns(RuntimeWarning, match="'triton' cannot run cross_scan"):
        scanned = cross_scan(ints, 4, False, backend="triton")
    assert torch.equal(scanned, reference.cross_scan(ints, 4, False))
    with pytest.warns(RuntimeWarning, match="'triton' cannot run cross_merge"):
        merged = cross_merge(scanned, 3, 4, 4, False, backend="triton")
    assert torch.equal(merged, reference.cross_merge(scanned, 3, 4, 4, False))

    for op in ("cross_scan", "cross_merge"):
        assert "triton" in available_backends(op)
    assert backends.resolve("cross_scan", "auto", (x,)) is reference.cross_scan
    assert backends.resolve("cross_merge", "auto", (x,)) is reference.cross_merge
    assert backends.resolve("cross_scan", "triton", (x,)) is not reference.cross_scan


def test_default_budgets(kernels):
    """K=4 takes the budgets the H200 sweep found faster; the rest the module's defaults; a tile argument wins."""
    assert kernels.default_tile_elements("scan", 4, False) == 1024
    assert kernels.default_tile_elements("scan", 4, True) == kernels.SCAN_TILE_ELEMENTS
    assert kernels.default_tile_elements("merge", 4, False) == 1024
    assert kernels.default_tile_elements("merge", 4, True) == 2048
    for op, default in (("scan", kernels.SCAN_TILE_ELEMENTS), ("merge", kernels.TILE_ELEMENTS)):
        for directions in (1, 2):
            for channels_last in (False, True):
                assert kernels.default_tile_elements(op, directions, channels_last) == default


def test_kernels_run_interpreted(kernels):
    """Guard: the kernels really are interpreter functions here (so the tests above ran Triton code)."""
    for name in ("_cross_scan_steps_kernel", "_cross_scan_columns_kernel", "_cross_merge_kernel"):
        assert type(getattr(kernels, name)).__name__ == "InterpretedFunction", name


# Compiles kernel variants for sm_90 with the real Triton compiler (no GPU needed) and prints, per variant, the
# TTGIR layout of every global load/store (in program order) and the PTX's global load/store instructions.
_COMPILE_SCRIPT = r"""
import collections, json, re, sys
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from vmamba_zoo.ops.kernels import triton_cross_scan as k

def compile_variant(name, dtype, sizes, constants, num_warps):
    kernel = getattr(k, name)
    signature = {arg: "constexpr" for arg in kernel.arg_names}
    signature.update({kernel.arg_names[0]: "*" + dtype, kernel.arg_names[1]: "*" + dtype,
                      "C": "i32", "H": "i32", "W": "i32"})
    # as the launcher specialises: 16-byte aligned pointers, ints divisible by 16 marked so
    attrs = {(0,): [["tt.divisibility", 16]], (1,): [["tt.divisibility", 16]]}
    attrs.update({(kernel.arg_names.index(n),): [["tt.divisibility", 16]] for n, v in sizes.items() if v % 16 == 0})
    compiled = triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constants, attrs=attrs),
                              target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps})
    ttgir = compiled.asm["ttgir"]
    layouts = dict(re.findall(r"^(#\w+) = #ttg\.blocked<(.*)>$", ttgir, re.M))
    accesses = []
    for line in ttgir.splitlines():
        op = re.search(r"\btt\.(load|store) ", line)
        encoding = re.search(r"tensor<[^>]*!tt\.ptr<[^>]*>, (#\w+)>", line)
        if op and encoding:
            fields = {key: [int(v) for v in val.split(",")]
                      for key, val in re.findall(r"(\w+) = \[([\d, ]+)\]", layouts[encoding.group(1)])}
            accesses.append([op.group(1), fields["order"][0], fields["threadsPerWarp"], fields["sizePerThread"]])
    instructions = collections.Counter(re.findall(r"\b((?:ld|st)\.global(?:\.\w+)*)", compiled.asm["ptx"]))
    return dict(accesses=accesses, instructions=dict(instructions))

print(json.dumps([compile_variant(*v) for v in json.loads(sys.argv[1])]))
"""


def _compile_variants(variants, tmp_path):
    import json
    import subprocess
    import sys
    env = dict(os.environ, TRITON_INTERPRET="0", TRITON_CACHE_DIR=str(tmp_path))
    run = subprocess.run([sys.executable, "-c", _COMPILE_SCRIPT, json.dumps(variants)], env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def _scan_variants(kernels, dtype, channels, height, width, directions, channels_last):
    """[name, dtype, sizes, constexprs, num_warps] of the scan's launches, as _launch_scan makes them."""
    sizes = dict(C=channels, H=height, W=width)
    align = {f"ALIGN_{n}": kernels._alignment(v) for n, v in sizes.items()}
    rows_only = directions == 4 and not channels_last
    budget = kernels.default_tile_elements("scan", directions, channels_last)
    block_c, block_q = kernels.scan_step_blocks(channels, height * width, channels_last, budget)
    variants = [["_cross_scan_steps_kernel", dtype, sizes,
                 dict(K=directions, CHANNELS_LAST=channels_last, ROWS_ONLY=rows_only, ALIGN_C=align["ALIGN_C"],
                      ALIGN_L=kernels._alignment(height * width), BLOCK_C=block_c, BLOCK_Q=block_q),
                 kernels._num_warps(block_c * block_q)]]
    if rows_only:
        block_c, block_i, block_j = kernels.scan_column_blocks(channels, height, width, budget)
        variants.append(["_cross_scan_columns_kernel", dtype, sizes,
                         dict(align, BLOCK_C=block_c, BLOCK_I=block_i, BLOCK_J=block_j),
                         kernels._num_warps(block_c * block_i * block_j)])
    return variants


def _merge_variant(kernels, dtype, channels, height, width, directions, channels_last):
    h, w, block_c, block_h, block_w = kernels.tile_shape(
        channels, height, width, directions, channels_last,
        tile_elements=kernels.default_tile_elements("merge", directions, channels_last))
    constants = dict(K=directions, CHANNELS_LAST=channels_last, ACC_FP64=dtype == "fp64", ALIGN_C=kernels._alignment(channels),
                     ALIGN_H=kernels._alignment(h), ALIGN_W=kernels._alignment(w), BLOCK_C=block_c, BLOCK_H=block_h,
                     BLOCK_W=block_w)
    return ["_cross_merge_kernel", dtype, dict(C=channels, H=h, W=w), constants,
            kernels._num_warps(block_c * block_h * block_w)]


CASES = [(dtype, channels, height, width, directions, channels_last)
         for dtype, maps, direction_counts in (("fp16", ((96, 56, 56), (5, 13, 4)), (4, 2)),
                                               ("fp32", ((96, 56, 56),), (4,)))
         for channels, height, width in maps
         for directions in direction_counts for channels_last in (False, True)]


def test_scan_compiles_for_sm90_with_whole_vector_stores(kernels, tmp_path):
    """The real compiler (sm_90, in a subprocess without the interpreter) builds every scan launch. Every store
    of the sequences runs along their steps (a tile's last axis, or its row axis for the channel-first column
    directions), and on aligned maps every one is a 16-byte vector store: scalar 2-byte stores (what counting
    down the steps used to give) each reach L2 as a separate write, which made the first kernel 8x slower.
    Reads run along the image's contiguous axis, or along the tile's last axis where they count down."""
    variants, owners = [], []
    for case in CASES:
        for variant in _scan_variants(kernels, *case):
            variants.append(variant)
            owners.append(case)
    for (dtype, channels, height, width, directions, channels_last), variant, result in zip(
            owners, variants, _compile_variants(variants, tmp_path)):
        columns = variant[0] == "_cross_scan_columns_kernel"
        accesses = result["accesses"]
        loads = [a for a in accesses if a[0] == "load"]
        stores = [a for a in accesses if a[0] == "store"]
        assert len(loads) == len(stores) == (2 if columns else (2 if variant[3]["ROWS_ONLY"] else directions))
        for _, fastest, threads_per_warp, _ in stores:
            assert fastest == (1 if columns else len(threads_per_warp) - 1), (variant, stores)
        for _, fastest, _, _ in loads:
            assert fastest == (0 if channels_last else len(accesses[0][2]) - 1), (variant, loads)
        if (height, width) == (56, 56):
            for _, fastest, threads_per_warp, _ in accesses:
                assert threads_per_warp[fastest] >= 2, (variant, accesses)  # whole warps along the run
            stores_ptx = {op: n for op, n in result["instructions"].items() if op.startswith("st.")}
            assert set(stores_ptx) == {"st.global.v4.b32"}, (variant, stores_ptx)


def test_merge_compiles_for_sm90_with_coalesced_accesses(kernels, tmp_path):
    """The merge's accesses are laid out along the axis their addresses are adjacent on: the image's W
    (channel-first) or C (channel-last) axis, and the sequences' step axis, the tile's last axis for every
    direction (the column directions through the transposed tile; the reversed ones rely on Triton ordering
    non-contiguous accesses along the last axis). On 56x56 maps each access runs >= 8 adjacent elements (the
    channel-last K=4 tile of 2048 elements has 8 channels: one 16-byte vector per pixel, which the H200 sweep
    found faster than 16 channels), and aligned fp16 channel-first maps get 16-byte loads."""
    variants = [_merge_variant(kernels, *case) for case in CASES]
    for (dtype, channels, height, width, directions, channels_last), result in zip(
            CASES, _compile_variants(variants, tmp_path)):
        accesses = result["accesses"]
        assert len(accesses) == 1 + directions, accesses
        for access in accesses[:-1]:
            assert access[1] == 2, (directions, channels_last, access)
        assert accesses[-1][1] == (0 if channels_last else 2), accesses[-1]
        if (height, width) == (56, 56):  # a warp's run along the adjacent addresses is >= 8 elements (16 B fp16)
            for _, fastest, threads_per_warp, size_per_thread in accesses:
                assert threads_per_warp[fastest] * size_per_thread[fastest] >= 8, accesses
            if dtype == "fp16" and not channels_last:
                assert "ld.global.v4.b32" in result["instructions"]
