"""The cuda backend's kernels (csrc/cuda/attention_*.cuh) run on the CPU through the SIMT emulator.

The kernels' source is compiled unchanged with the emulator's primitives (tests/cuda_emu/): every CUDA
thread is a fiber, warp collectives (mma.sync, ldmatrix, shuffles) exchange registers with the PTX ISA's
fragment layouts, shared and global accesses are bounds-checked, and waiters resume in a seeded random
order (a missing barrier changes results between seeds). What this cannot show: timing, the hardware's
own instruction semantics (the GPU tests do), and races finer than one collective.

fp16/bf16 against the fp64 oracle: the error is at most twice the ``torch`` backend's own error in the
same dtype (FlashAttention's rule), never NaN; outputs are NaN-poisoned before every launch.
"""

from __future__ import annotations

import math

import oracle
import pytest
import torch
from cases import global_mask, padding_mask
from cuda_emu import emulated as E

import led_kernels as lk
from led_kernels.masks import gather_rows, scatter_rows, valid_global_slots

LOW = (torch.float16, torch.bfloat16)
LN2 = math.log(2.0)


@pytest.fixture
def emu(cuda_emulator):
    return cuda_emulator


@pytest.fixture(params=["rows32", "rows16", "wgmma", "wgmma16", "wgmma16s", "wgmma2g", "wgmma16o"])
def variant(request, monkeypatch):
    """Every forward main loop (LED_KERNELS_CUDA_FWD; csrc/cuda/attention_fwd.cuh). The wgmma variants
    run their own kernels at head dims 64 and 128 (the emulator's warpgroup MMA reads the 128-byte-
    swizzled tiles through their descriptors) and rows32 at the others; wgmma2g's blocks are two
    warpgroups (256 threads); wgmma16o leaves a tile's P V in flight across the next tile's softmax
    (the emulator lands a product only at the wait after its commit, and fails a copy into shared
    memory that a product not yet waited for reads)."""
    monkeypatch.setenv("LED_KERNELS_CUDA_FWD", request.param)
    return request.param


def _fwd_head_dim(variant: str, d: int) -> int:
    """A test's head dim, 64 where a wgmma forward runs (at its own head dims it would be rows32's)."""
    return 64 if variant.startswith("wgmma") else d


@pytest.fixture(params=["mma", "wgmma", "wgmmas"])
def bwd_variant(request, monkeypatch):
    """The variants of the backward's kernels (LED_KERNELS_CUDA_DQ and LED_KERNELS_CUDA_DKDV, set
    together; csrc/cuda/attention_bwd.cuh): wgmma at head dims 64 and 128, mma at the others; wgmmas
    is dQ's wgmma with Q and dO read from shared memory (with the wgmma dK/dV kernels)."""
    monkeypatch.setenv("LED_KERNELS_CUDA_DQ", request.param)
    monkeypatch.setenv("LED_KERNELS_CUDA_DKDV", "wgmma" if request.param == "wgmmas" else request.param)
    return request.param


def _bwd_head_dim(bwd_variant: str, d: int) -> int:
    """A test's head dim, 64 where the wgmma kernels run (at its own head dims it would be mma's)."""
    return 64 if bwd_variant != "mma" else d


def _inputs(b, n, h, d, gpat, ppat, dtype, max_global=None, seed=0):
    gen = torch.Generator().manual_seed(seed)
    q, k, v, qg, kg, vg = (torch.randn(b, n, h, d, generator=gen).to(dtype) for _ in range(6))
    gm, pm = global_mask(b, n, gpat), padding_mask(b, n, ppat)
    gi = None if gm is None else lk.global_indices(gm, max_global=max_global)
    flags = oracle.key_flags_from_masks(n, b, pm, gm, "cpu")
    return (q, k, v, qg, kg, vg), gm, pm, gi, flags


def _lse_oracle(q, k, allowed, scale):
    """Natural-log logsumexp of each row's allowed scores, (B, H, M) float64 (-inf where none)."""
    scores = torch.einsum("bmhd,bnhd->bhmn", q.double(), k.double()) * scale
    return scores.masked_fill(~allowed[:, None], float("-inf")).logsumexp(-1)


def _check_lse(lse, lse_ref):
    """lse (B, H, 2, M) in base-2 halves against the natural logsumexp; empty rows are (+inf, 0)."""
    empty = torch.isneginf(lse_ref)
    m, log2l = lse[:, :, 0].double(), lse[:, :, 1].double()
    assert torch.isposinf(m[empty]).all() and (log2l[empty] == 0).all()
    full = (m + log2l) * LN2
    torch.testing.assert_close(full[~empty], lse_ref[~empty], atol=2e-2, rtol=1e-3)


def _band_allowed(n, window, flags):
    pos = torch.arange(n)
    band = ((pos[:, None] - pos[None, :]).abs() <= window)[None] & (flags == oracle.LOCAL)[:, None, :]
    return (band | (flags == oracle.GLOBAL)[:, None, :]) & (flags != oracle.PADDING)[:, :, None]


# (B, N, H, D, window, global pattern, padding pattern): odd lengths, one row, windows of 0, inside a
# tile, across tiles and >= N (dense), every head dim; w = 50 puts a band edge inside the second
# 16-row block of a warp's 32 rows (rows32) next to an unmasked tile
BANDED_CASES = [
    (1, 1, 1, 16, 0, "none", "none"),
    (2, 37, 2, 16, 5, "scattered", "tail"),
    (1, 130, 2, 32, 64, "first", "none"),
    (2, 100, 1, 64, 1000, "all", "tail"),
    (1, 70, 1, 128, 3, "scattered", "none"),
    (2, 150, 1, 32, 0, "first", "full"),
    (1, 200, 1, 64, 70, "none", "none"),
    (1, 300, 1, 32, 50, "none", "none"),
    (1, 600, 1, 32, 40, "scattered", "tail"),  # the backward splits the global keys' rows into chunks
    # windows wide enough that whole tiles need no mask (window >= 79), next to tiles that do
    (1, 400, 1, 64, 150, "first", "none"),
    (2, 333, 1, 32, 100, "none", "tail"),
    # dense over whole tiles: every tile is lean, the walk's last one too
    (1, 192, 1, 64, 1000, "none", "none"),
]


@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize("case", BANDED_CASES, ids=lambda c: "-".join(map(str, c)))
def test_banded_fwd_matches_oracle(emu, case, dtype, variant):
    b, n, h, d, window, gpat, ppat = case
    (q, k, v, *_), gm, pm, gi, flags = _inputs(b, n, h, d, gpat, ppat, dtype, max_global=None)
    scale = d**-0.5
    out, lse = emu.attention_fwd(E.KIND_BANDED, q, k, v, flags, gi, window, scale)
    ref = oracle.dense_banded_attention(q, k, v, window, flags, scale=scale)
    ours = lk.banded_attention(q, k, v, window, key_padding_mask=pm, global_idx=gi, backend="torch")
    assert torch.isfinite(out).all()
    err, err_torch = (out.double() - ref).abs().max(), (ours.double() - ref).abs().max()
    assert err <= 2 * err_torch + 1e-6, f"error {err:.3g} > 2 x torch backend's {err_torch:.3g}"
    if pm is not None:
        assert (out[pm] == 0).all()
    _check_lse(lse, _lse_oracle(q, k, _band_allowed(n, window, flags), scale))


@pytest.mark.parametrize("scale", [-0.3, 0.0], ids=["negative", "zero"])
def test_negative_and_zero_scales(emu, scale):
    """A negative or zero score scale gives the oracle's outputs, statistics and gradients, in tiles
    that take the mask-free path (whose row max is taken over the raw scores and scaled afterwards)
    and in masked ones. Positive q and k make every raw score positive, so that a row max taken on
    the wrong side (the largest raw score instead of the smallest) would underflow every probability."""
    b, n, h, d, window = 1, 400, 1, 64, 150
    (q, k, v, *_), gm, pm, gi, flags = _inputs(b, n, h, d, "first", "none", torch.float16, seed=4)
    q, k = (2 * x.abs() for x in (q, k))
    out, lse = emu.attention_fwd(E.KIND_BANDED, q, k, v, flags, gi, window, scale)
    ref = oracle.dense_banded_attention(q, k, v, window, flags, scale=scale)
    ours = lk.banded_attention(
        q, k, v, window, key_padding_mask=pm, global_idx=gi, scale=scale, backend="torch"
    )
    err, err_torch = (out.double() - ref).abs().max(), (ours.double() - ref).abs().max()
    assert err <= 2 * err_torch + 1e-6, f"error {err:.3g} > 2 x torch backend's {err_torch:.3g}"
    _check_lse(lse, _lse_oracle(q, k, _band_allowed(n, window, flags), scale))
    dout = torch.randn(q.shape).to(q.dtype)
    grads = emu.attention_bwd(E.KIND_BANDED, q, k, v, out, dout, lse, flags, gi, window, scale)
    errors = _grads_vs_oracle(
        grads, (q, k, v), dout,
        lambda q, k, v: oracle.dense_banded_attention(q, k, v, window, flags, scale=scale),
        lambda q, k, v: lk.banded_attention(q, k, v, window, key_padding_mask=pm, global_idx=gi, scale=scale,
                                            backend="torch"),
    )  # fmt: skip
    for name, (err, err_torch) in zip("qkv", errors):
        assert err <= 2 * err_torch + 1e-6, f"d{name}: error {err:.3g} > 2 x torch backend's {err_torch:.3g}"


# (B, N, H, D, global pattern, padding, spare slots): N = 600 and 1030 split kernel B's keys into chunks
GLOBAL_CASES = [
    (2, 37, 2, 16, "scattered", "tail", 2),
    (1, 130, 2, 32, "first", "none", 0),
    (2, 100, 1, 64, "all", "tail", 0),
    (1, 70, 1, 128, "scattered", "full", 3),
    (2, 600, 1, 64, "scattered", "tail", 1),
    (1, 1030, 2, 32, "first", "tail", 0),
]


@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize("case", GLOBAL_CASES, ids=lambda c: "-".join(map(str, c)))
def test_global_fwd_matches_oracle(emu, case, dtype, variant):
    b, n, h, d, gpat, ppat, spare = case
    (_, _, _, qg_full, kg, vg), gm, pm, gi, flags = _inputs(b, n, h, d, gpat, ppat, dtype)
    gi = torch.cat([gi, torch.full((b, spare), -1, dtype=gi.dtype)], 1)  # unused slots: 0 rows
    qg = gather_rows(qg_full, gi)
    g = gi.shape[1]
    split = emu.workspace_bytes(E.KIND_GLOBAL, b, h, g, n, d) > 0
    assert split == (n >= 512), "the cases meant to split kernel B's keys do (and only those)"
    out, lse = emu.attention_fwd(E.KIND_GLOBAL, qg, kg, vg, flags, gi, 0, 0.2)
    ref = oracle.dense_global_attention(qg, kg, vg, gi, flags, scale=0.2)
    ours = lk.global_attention(qg, kg, vg, gi, key_padding_mask=pm, scale=0.2, backend="torch")
    assert torch.isfinite(out).all()
    err, err_torch = (out.double() - ref).abs().max(), (ours.double() - ref).abs().max()
    assert err <= 2 * err_torch + 1e-6, f"error {err:.3g} > 2 x torch backend's {err_torch:.3g}"
    row_flags = torch.gather(flags, 1, gi.long().clamp(min=0))
    valid = (gi >= 0) & (row_flags == oracle.GLOBAL)
    assert (out[~valid] == 0).all()
    allowed = valid[:, :, None] & (flags != oracle.PADDING)[:, None, :]
    _check_lse(lse, _lse_oracle(qg, kg, allowed, 0.2))


def test_views_of_a_fused_projection_and_unaligned_rows(emu, emulated_cuda_interface):
    """q, k, v read in place from a (B, N, 3, H, D) projection. The kernels read 16-byte aligned rows
    only and refuse others naming the tensor (the extension raises ValueError); the backend reads such
    views from an aligned copy, which gives the bits of contiguous inputs, forward and backward."""
    b, n, h, d, window = 2, 90, 2, 32, 9
    fused = torch.randn(b, n, 3, h, d + 1).half()  # rows of d + 1 elements: unaligned starts
    flags = torch.zeros(b, n, dtype=torch.int8)
    for narrow in (slice(0, d), slice(1, d + 1)):
        q, k, v = fused[..., narrow].unbind(2)
        assert q.stride(-1) == 1 and not q.is_contiguous()
        with pytest.raises(E.EmulatorError, match="q rows must start 16-byte aligned"):
            emu.attention_fwd(E.KIND_BANDED, q, k, v, flags, None, window, 0.3)
        dense = [t.contiguous().requires_grad_(True) for t in (q, k, v)]
        views = [t.detach().requires_grad_(True) for t in (q, k, v)]
        outs = [lk.banded_attention(*x, window, scale=0.3, backend="cuda") for x in (views, dense)]
        dout = torch.randn_like(outs[0])
        grads = [torch.autograd.grad(o, x, dout) for o, x in zip(outs, (views, dense))]
        assert torch.equal(outs[0], outs[1])
        for g_view, g_dense in zip(*grads):
            assert torch.equal(g_view, g_dense)
        ref = oracle.dense_banded_attention(q, k, v, window, flags, scale=0.3)
        assert (outs[0].double() - ref).abs().max() < 2e-3


def test_schedules_give_identical_bits(emu, variant):
    """Different fiber schedules (a barrier missing between a shared write and another warp's read
    would show here) give the same bits, for both kernels and kernel B's split."""
    d = _fwd_head_dim(variant, 32)
    (q, k, v, qg_full, kg, vg), gm, pm, gi, flags = _inputs(1, 600, 1, d, "scattered", "tail", torch.float16)
    qg = gather_rows(qg_full, gi)
    first = None
    for seed in (0, 1, 2):
        a = emu.attention_fwd(E.KIND_BANDED, q, k, v, flags, gi, 70, 0.25, seed=seed)
        g = emu.attention_fwd(E.KIND_GLOBAL, qg, kg, vg, flags, gi, 0, 0.25, seed=seed)
        if first is None:
            first = (a, g)
            continue
        for x, y in zip((*a, *g), (*first[0], *first[1])):
            assert torch.equal(x, y)


@pytest.mark.parametrize("window", [10, 100], ids=["narrow", "lean-tiles"])
def test_nan_in_a_value_row_reaches_only_the_rows_that_attend_it(emu, variant, window):
    """0 * NaN in P V would spread a NaN value row to every row of its tile; it must not. (With the
    wide window, key 70 lies in a lean tile of some blocks, which takes no check, and in masked tiles
    of the others.)"""
    b, n, h, d = 1, 140, 1, _fwd_head_dim(variant, 16)
    (q, k, v, *_), gm, pm, gi, flags = _inputs(b, n, h, d, "first", "none", torch.float16)
    clean, _ = emu.attention_fwd(E.KIND_BANDED, q, k, v, flags, gi, window, 0.25)
    for j0 in (70, 0):  # a local key, and the global key (attended by every row)
        v_bad = v.clone()
        v_bad[0, j0, 0, 3] = float("inf") if j0 else float("nan")
        out, _ = emu.attention_fwd(E.KIND_BANDED, q, k, v_bad, flags, gi, window, 0.25)
        attends = _band_allowed(n, window, flags)[0, :, j0]
        # every row that attends it is not finite (a key every row of a block attends is not zeroed:
        # its value reaches those rows' outputs elementwise, as in the reference)
        assert (~torch.isfinite(out[0, attends])).flatten(1).any(1).all()
        assert torch.equal(out[0, ~attends], clean[0, ~attends])


def test_bounds_checks_catch_an_access_outside_the_tensors(emu):
    """The emulator's global-memory check is live: registering k one row short fails the launch."""
    (q, k, v, *_), _, _, gi, flags = _inputs(1, 64, 1, 16, "none", "none", torch.float16)
    ranges = [(t.data_ptr(), t.numel() * t.element_size()) for t in (q, v)]
    ranges.append((k.data_ptr(), (k.numel() - 16) * k.element_size()))
    with pytest.raises(E.EmulatorError, match="outside every registered tensor"):
        emu.attention_fwd(E.KIND_BANDED, q, k, v, flags, None, 100, 0.25, ranges=ranges)


@pytest.mark.parametrize(
    "mode,match",
    [
        (0, None),
        (1, "a copy or store landed in shared memory that a wgmma not yet waited for reads"),
        (2, "wgmma_wait with products issued after the last wgmma_commit"),
        (3, None),
    ],
    ids=["store-after-wait", "store-before-wait", "uncommitted", "read-before-wait"],
)
def test_emulator_checks_warpgroup_products(emu, mode, match):
    """The emulator's model of wgmma that wgmma16o's deferred products rely on: a product lands at the
    wait after its commit (not before), and a store into an operand it may still read fails."""
    if match is None:
        emu.wgmma_check(mode)
    else:
        with pytest.raises(E.EmulatorError, match=match):
            emu.wgmma_check(mode)


LEAN_CASES = [(1, 400, 1, 64, 150, "first", "none"), (2, 333, 1, 64, 100, "scattered", "tail")]


LEAN_KERNELS = [("rows32", "mma"), ("wgmma16", "wgmma"), ("wgmma2g", "wgmmas"), ("wgmma16o", "wgmma")]


@pytest.mark.parametrize("forward,backward", LEAN_KERNELS)
@pytest.mark.parametrize("case", LEAN_CASES, ids=["first-global", "scattered-padded"])
def test_lean_runs_change_no_bit(emu, monkeypatch, forward, backward, case):
    """Lean tiles (the band's interior, walked without positions, non-finite checks or mask) compute
    exactly what the checked walk computes there: outputs, statistics and gradients bitwise equal with
    LED_KERNELS_CUDA_LEAN=0, next to global keys and padding that keep their neighbours' runs checked;
    with NaN in a key and a value row of the interior too."""
    b, n, h, d, window, gpat, ppat = case
    monkeypatch.setenv("LED_KERNELS_CUDA_FWD", forward)
    monkeypatch.setenv("LED_KERNELS_CUDA_DQ", backward)
    monkeypatch.setenv("LED_KERNELS_CUDA_DKDV", "mma" if backward == "mma" else "wgmma")
    (q, k, v, *_), gm, pm, gi, flags = _inputs(b, n, h, d, gpat, ppat, torch.float16, seed=4)
    dout = torch.randn(q.shape).to(q.dtype)
    k_bad, v_bad = k.clone(), v.clone()
    k_bad[0, 200, 0, 1] = float("nan")
    v_bad[0, 210, 0, 2] = float("nan")
    runs = {}
    for lean in ("1", "0"):
        monkeypatch.setenv("LED_KERNELS_CUDA_LEAN", lean)
        for name, (kk, vv) in {"clean": (k, v), "nan": (k_bad, v_bad)}.items():
            out, lse = emu.attention_fwd(E.KIND_BANDED, q, kk, vv, flags, gi, window, 0.125)
            grads = emu.attention_bwd(E.KIND_BANDED, q, kk, vv, out, dout, lse, flags, gi, window, 0.125)
            runs[lean, name] = (out, lse, *grads)
    for name in ("clean", "nan"):
        for x, y in zip(runs["1", name], runs["0", name]):
            assert torch.equal(x.nan_to_num(7.0), y.nan_to_num(7.0)) and torch.equal(x.isnan(), y.isnan())
    assert runs["1", "nan"][0].isnan().any()  # (the bad rows are inside the band of some rows)


def test_lean_switch_refuses_other_values(emu, monkeypatch):
    monkeypatch.setenv("LED_KERNELS_CUDA_LEAN", "yes")
    q = torch.randn(1, 10, 1, 16).half()
    with pytest.raises(E.EmulatorError, match="LED_KERNELS_CUDA_LEAN must be 0 or 1, got 'yes'"):
        emu.attention_fwd(E.KIND_BANDED, q, q, q, torch.zeros(1, 10, dtype=torch.int8), None, 3, 0.25)


def test_unknown_forward_variant_is_refused(emu, monkeypatch):
    monkeypatch.setenv("LED_KERNELS_CUDA_FWD", "fastest")
    q = torch.randn(1, 10, 1, 16).half()
    with pytest.raises(
        E.EmulatorError,
        match="CUDA_FWD must be rows32, rows16, wgmma, wgmma16, wgmma16s, wgmma2g or wgmma16o",
    ):
        emu.attention_fwd(E.KIND_BANDED, q, q, q, torch.zeros(1, 10, dtype=torch.int8), None, 3, 0.25)


@pytest.mark.parametrize(
    "name,value,choices",
    [
        ("LED_KERNELS_CUDA_DQ", "fastest", "mma, wgmma or wgmmas"),
        ("LED_KERNELS_CUDA_DKDV", "fastest", "mma or wgmma"),
        ("LED_KERNELS_CUDA_DKDV", "wgmmas", "mma or wgmma"),  # (dQ's alone)
    ],
)
def test_unknown_backward_variant_is_refused(emu, monkeypatch, name, value, choices):
    q = torch.randn(1, 10, 1, 16).half()
    flags = torch.zeros(1, 10, dtype=torch.int8)
    out, lse = emu.attention_fwd(E.KIND_BANDED, q, q, q, flags, None, 3, 0.25)
    monkeypatch.setenv(name, value)
    with pytest.raises(E.EmulatorError, match=f"{name} must be {choices}, got '{value}'"):
        emu.attention_bwd(E.KIND_BANDED, q, q, q, out, out, lse, flags, None, 3, 0.25)


@pytest.mark.parametrize(
    "change,match",
    [
        (dict(dtype=torch.float32), "float16 or bfloat16"),
        (dict(d=24), "head dim"),
        (dict(window=-1), "negative"),
    ],
    ids=["fp32", "head-dim-24", "negative-window"],
)
def test_bad_arguments_are_refused(emu, change, match):
    args = dict(dtype=torch.float16, d=16, window=3) | change
    q = torch.randn(1, 10, 1, args["d"]).to(args["dtype"])
    flags = torch.zeros(1, 10, dtype=torch.int8)
    with pytest.raises(E.EmulatorError, match=match):
        emu.attention_fwd(E.KIND_BANDED, q, q, q, flags, None, args["window"], 0.25)


# ----------------------------------------------------------------------------------------------------
# backward
# ----------------------------------------------------------------------------------------------------


def _grads_vs_oracle(op, inputs, dout, ref_fn, torch_fn):
    """Per input: (kernel error, torch backend error) against the fp64 oracle's gradient, max abs."""
    doubles = [x.double().requires_grad_() for x in inputs]
    grads_ref = torch.autograd.grad(ref_fn(*doubles), doubles, dout.double())
    lows = [x.clone().requires_grad_() for x in inputs]
    grads_torch = torch.autograd.grad(torch_fn(*lows), lows, dout)
    return [
        ((g.double() - r).abs().max().item(), (t.double() - r).abs().max().item())
        for g, t, r in zip(op, grads_torch, grads_ref)
    ]


@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize("case", BANDED_CASES, ids=lambda c: "-".join(map(str, c)))
def test_banded_bwd_matches_oracle(emu, case, dtype, bwd_variant):
    b, n, h, d, window, gpat, ppat = case
    (q, k, v, *_), gm, pm, gi, flags = _inputs(b, n, h, d, gpat, ppat, dtype, seed=1)
    scale = d**-0.5
    out, lse = emu.attention_fwd(E.KIND_BANDED, q, k, v, flags, gi, window, scale)
    dout = torch.randn(q.shape).to(dtype)
    grads = emu.attention_bwd(E.KIND_BANDED, q, k, v, out, dout, lse, flags, gi, window, scale)
    errors = _grads_vs_oracle(
        grads, (q, k, v), dout,
        lambda q, k, v: oracle.dense_banded_attention(q, k, v, window, flags, scale=scale),
        lambda q, k, v: lk.banded_attention(q, k, v, window, key_padding_mask=pm, global_idx=gi,
                                            backend="torch"),
    )  # fmt: skip
    for name, g, (err, err_torch) in zip("qkv", grads, errors):
        assert torch.isfinite(g).all(), f"d{name} has non-finite values"
        assert err <= 2 * err_torch + 1e-6, f"d{name}: error {err:.3g} > 2 x torch backend's {err_torch:.3g}"
    if pm is not None:  # padding rows and keys get exactly 0
        for g in grads:
            assert (g[pm] == 0).all()


@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize("case", GLOBAL_CASES, ids=lambda c: "-".join(map(str, c)))
def test_global_bwd_matches_oracle(emu, case, dtype, bwd_variant):
    b, n, h, d, gpat, ppat, spare = case
    (_, _, _, qg_full, kg, vg), gm, pm, gi, flags = _inputs(b, n, h, d, gpat, ppat, dtype, seed=1)
    gi = torch.cat([gi, torch.full((b, spare), -1, dtype=gi.dtype)], 1)
    qg = gather_rows(qg_full, gi)
    out, lse = emu.attention_fwd(E.KIND_GLOBAL, qg, kg, vg, flags, gi, 0, 0.2)
    dout = torch.randn(qg.shape).to(dtype)
    grads = emu.attention_bwd(E.KIND_GLOBAL, qg, kg, vg, out, dout, lse, flags, gi, 0, 0.2)
    errors = _grads_vs_oracle(
        grads, (qg, kg, vg), dout,
        lambda q, k, v: oracle.dense_global_attention(q, k, v, gi, flags, scale=0.2),
        lambda q, k, v: lk.global_attention(q, k, v, gi, key_padding_mask=pm, scale=0.2, backend="torch"),
    )  # fmt: skip
    for name, g, (err, err_torch) in zip(("q_global", "k_global", "v_global"), grads, errors):
        assert torch.isfinite(g).all(), f"d{name} has non-finite values"
        assert err <= 2 * err_torch + 1e-6, f"d{name}: error {err:.3g} > 2 x torch backend's {err_torch:.3g}"


def test_backward_schedules_give_identical_bits(emu, bwd_variant):
    """Both backward passes (with kernel A's global keys and kernel B's dQ split into chunks) give the
    same bits under different schedules: no atomics, no order that depends on timing."""
    (q, k, v, qg_full, kg, vg), gm, pm, gi, flags = _inputs(
        1, 600, 1, _bwd_head_dim(bwd_variant, 32), "scattered", "tail", torch.bfloat16
    )
    qg = gather_rows(qg_full, gi)
    runs = []
    for seed in (0, 5):
        out, lse = emu.attention_fwd(E.KIND_BANDED, q, k, v, flags, gi, 70, 0.25, seed=seed)
        dout = torch.ones_like(out)
        grads = emu.attention_bwd(E.KIND_BANDED, q, k, v, out, dout, lse, flags, gi, 70, 0.25, seed=seed)
        gout, glse = emu.attention_fwd(E.KIND_GLOBAL, qg, kg, vg, flags, gi, 0, 0.25, seed=seed)
        ggrads = emu.attention_bwd(
            E.KIND_GLOBAL, qg, kg, vg, gout, dout[:, : gi.shape[1]], glse, flags, gi, 0, 0.25
        )
        runs.append((*grads, *ggrads))
    for x, y in zip(*runs):
        assert torch.equal(x, y)


# (target, position of the NaN, padding, window, NaN upstream gradient), for kernel A's backward:
# local and global keys, a query row; with a padded tail and a wide window, a key that every live row
# of its blocks attends next to padding rows (whose dQ must stay 0); a NaN query row whose loss
# ignores it (a finite upstream gradient: only q is non-finite where the dK / dV kernel reads it); an
# inf in one row's upstream gradient, inside the window of whole tiles of live keys (not zeroed there:
# the tensor cores carry it, as the reference's arithmetic does) and next to a tile with a global key
BWD_NAN_CASES = [
    ("q", 70, "none", 10, True),
    ("k", 70, "none", 10, True),
    ("v", 70, "none", 10, True),
    ("k", 0, "none", 10, True),
    ("v", 0, "none", 10, True),
    ("q", 130, "tail", 100, True),
    ("k", 130, "tail", 100, True),
    ("v", 130, "tail", 100, True),
    ("q", 70, "none", 10, False),
    ("q", 130, "tail", 100, False),
    ("dout", 130, "none", 100, True),
    ("dout", 20, "none", 100, True),
    # keys and a query row inside the lean tile (keys 128-191) of rows 128-191, every row live
    ("q", 130, "none", 100, True),
    ("k", 130, "none", 100, True),
    ("v", 130, "none", 100, True),
]


@pytest.mark.parametrize(
    "target,j0,ppat,window,nan_dout", BWD_NAN_CASES, ids=["-".join(map(str, c)) for c in BWD_NAN_CASES]
)
def test_backward_nan_reaches_only_what_depends_on_it(emu, target, j0, ppat, window, nan_dout, bwd_variant):
    """A NaN in one row of q, k or v (and in the upstream gradient of the rows it reaches, unless the
    loss ignores them), or an inf in one row of the upstream gradient, leaves every gradient element
    that does not depend on it bitwise unchanged, and makes those that do NaN (not finite for the
    inf)."""
    b, n, h, d = 1, 200, 1, _bwd_head_dim(bwd_variant, 16)
    (q, k, v, *_), gm, pm, gi, flags = _inputs(b, n, h, d, "first", ppat, torch.float16, seed=3)
    allowed = _band_allowed(n, window, flags)[0]  # [query, key]
    dout = torch.randn(q.shape).to(torch.float16)
    clean_out, clean_lse = emu.attention_fwd(E.KIND_BANDED, q, k, v, flags, gi, window, 0.25)
    clean = emu.attention_bwd(E.KIND_BANDED, q, k, v, clean_out, dout, clean_lse, flags, gi, window, 0.25)
    inputs = {"q": q.clone(), "k": k.clone(), "v": v.clone()}
    dout_bad = dout.clone()
    rows = torch.zeros(n, dtype=torch.bool)  # query rows whose output (or upstream gradient) is bad
    if target == "dout":
        dout_bad[0, j0, 0, 5] = float("inf")
        rows[j0] = True
    else:
        inputs[target][0, j0, 0, 5] = float("nan")
        if target == "q":
            rows[j0] = True
        else:
            rows = allowed[:, j0].clone()
        if nan_dout:
            dout_bad[0, rows] = float("nan")  # what a loss of the NaN rows hands back
    keys = (allowed & rows[:, None]).any(0)  # keys those rows attend
    out, lse = emu.attention_fwd(E.KIND_BANDED, *inputs.values(), flags, gi, window, 0.25)
    if target == "dout":
        assert torch.equal(out, clean_out)
    else:
        assert out[0, rows].isnan().any(-1).all() and torch.equal(out[0, ~rows], clean_out[0, ~rows])
    grads = emu.attention_bwd(E.KIND_BANDED, *inputs.values(), out, dout_bad, lse, flags, gi, window, 0.25)
    bad = (lambda x: ~x.isfinite()) if target == "dout" else torch.isnan
    for name, g, g_clean, may in zip("qkv", grads, clean, (rows, keys, keys)):
        assert torch.equal(g[0, ~may], g_clean[0, ~may]), (
            f"d{name} changed where it does not depend on the bad value"
        )
        assert bad(g[0, may]).any(dim=-1).all(), f"d{name}: an element depending on the bad value is finite"


@pytest.mark.parametrize("n", [200, 700], ids=["one-chunk", "split"])
def test_nan_rows_that_attend_nothing_change_no_gradient(emu, n, bwd_variant):
    """Query rows that attend nothing (two padding rows inside the sequence, within the window of whole
    tiles of live keys; in kernel B an unused slot) holding NaN in q and in the upstream gradient change
    no bit of any gradient: their dQ stays 0 and no key's dK or dV sees them."""
    d = _bwd_head_dim(bwd_variant, 16)
    inputs, gm, pm, gi, flags = _inputs(1, n, 1, d, "first", "none", torch.float16, seed=6)
    q, k, v, qg_full, kg, vg = inputs
    hole = 100
    flags[0, hole : hole + 2] = oracle.PADDING
    gi = torch.cat([gi, torch.full((1, 1), -1, dtype=gi.dtype)], 1)  # an unused slot
    qg = gather_rows(qg_full, gi)
    dout = torch.randn(q.shape).to(q.dtype)
    window = 100

    def run(q, dout, qg, dout_g):
        out, lse = emu.attention_fwd(E.KIND_BANDED, q, k, v, flags, gi, window, 0.25)
        grads = emu.attention_bwd(E.KIND_BANDED, q, k, v, out, dout, lse, flags, gi, window, 0.25)
        gout, glse = emu.attention_fwd(E.KIND_GLOBAL, qg, kg, vg, flags, gi, 0, 0.25)
        ggrads = emu.attention_bwd(E.KIND_GLOBAL, qg, kg, vg, gout, dout_g, glse, flags, gi, 0, 0.25)
        return (*grads, *ggrads)

    clean = run(q, dout, qg, dout[:, : gi.shape[1]])
    bad = [t.clone() for t in (q, dout, qg, dout[:, : gi.shape[1]])]
    for t in bad[:2]:
        t[0, hole, 0, 3] = float("nan")
        t[0, hole + 1, 0, 9] = float("-inf")
    for t in bad[2:]:
        t[0, -1, 0, 4] = float("nan")  # the unused slot
    for got, want in zip(run(*bad), clean):
        assert torch.equal(got, want)


def test_rows_that_attend_nothing_are_zero_even_with_nan_queries(emu):
    """A padding row (kernel A) or an invalid slot (kernel B, with and without its keys split) whose
    query holds a NaN outputs exactly 0: the zero is selected, not a product with the NaN."""
    for n in (100, 600):
        (q, k, v, qg_full, kg, vg), gm, pm, gi, flags = _inputs(1, n, 1, 16, "first", "tail", torch.float16)
        gi = torch.cat([gi, torch.full((1, 1), -1, dtype=gi.dtype)], 1)  # an unused slot
        q[0, n - 1] = float("nan")  # a padding row
        out, lse = emu.attention_fwd(E.KIND_BANDED, q, k, v, flags, gi, 7, 0.25)
        assert (out[0, n - 1] == 0).all() and torch.isposinf(lse[0, 0, 0, n - 1])
        qg = gather_rows(qg_full, gi)
        qg[0, 1] = float("nan")  # the unused slot
        gout, _ = emu.attention_fwd(E.KIND_GLOBAL, qg, kg, vg, flags, gi, 0, 0.25)
        assert (gout[0, 1] == 0).all() and torch.isfinite(gout).all()


@pytest.mark.parametrize("n,hole", [(200, None), (700, None), (200, 100)], ids=["tail", "tail-split", "hole"])
def test_nonfinite_keys_that_no_row_attends_change_nothing(emu, n, hole, bwd_variant):
    """K and V rows of padded keys (masked in kernel A's band and kernel B's sweep, yet copied with
    their tiles, next to attended keys) holding NaN and inf change no bit of any output, statistic or
    gradient: the first keys of a padded tail, or one padded key inside the sequence (whose band
    tiles also reach blocks without a padding row)."""
    ppat = "tail" if hole is None else "none"
    d = _bwd_head_dim(bwd_variant, 16)
    (q, k, v, qg_full, kg, vg), gm, pm, gi, flags = _inputs(1, n, 1, d, "first", ppat, torch.float16, seed=5)
    padded = n - n // 3 + 1 if hole is None else hole
    flags[0, padded - 1 : padded + 1] = oracle.PADDING
    qg = gather_rows(qg_full, gi)
    dout = torch.randn(q.shape).to(q.dtype)
    window = 40 if hole is None else 100  # (the hole's key inside the window of whole blocks of live rows)

    def run(k, v, kg, vg):
        out, lse = emu.attention_fwd(E.KIND_BANDED, q, k, v, flags, gi, window, 0.25)
        grads = emu.attention_bwd(E.KIND_BANDED, q, k, v, out, dout, lse, flags, gi, window, 0.25)
        gout, glse = emu.attention_fwd(E.KIND_GLOBAL, qg, kg, vg, flags, gi, 0, 0.25)
        ggrads = emu.attention_bwd(
            E.KIND_GLOBAL, qg, kg, vg, gout, dout[:, : gi.shape[1]], glse, flags, gi, 0, 0.25
        )
        return (out, lse, *grads, gout, glse, *ggrads)

    clean = run(k, v, kg, vg)
    bad = [t.clone() for t in (k, v, kg, vg)]
    for t in bad:
        t[0, padded, 0, 2] = float("nan")
        t[0, padded - 1, 0, 7] = float("inf")
    for got, want in zip(run(*bad), clean):
        # (dK, dV of padded keys are 0 either way)
        assert torch.equal(got, want)


def test_global_rows_without_keys(emu):
    """N = 0 keys with G > 0 slots (all unused): zero rows forward, zero dQ backward, nothing else."""
    q = torch.randn(2, 3, 1, 16).half()
    k = torch.randn(2, 0, 1, 16).half()
    gi = torch.full((2, 3), -1, dtype=torch.int32)
    flags = torch.zeros(2, 0, dtype=torch.int8)
    out, lse = emu.attention_fwd(E.KIND_GLOBAL, q, k, k, flags, gi, 0, 0.25)
    assert (out == 0).all() and torch.isposinf(lse[:, :, 0]).all()
    dq, dk, dv = emu.attention_bwd(E.KIND_GLOBAL, q, k, k, out, torch.randn_like(q), lse, flags, gi, 0, 0.25)
    assert (dq == 0).all() and dk.shape == dv.shape == k.shape


# ----------------------------------------------------------------------------------------------------
# the layer mode: kernel B over kernel A's tensors (csrc/include/led_kernels/cpu_attention.h)
# ----------------------------------------------------------------------------------------------------


def _global_layer_bwd(emu, qg, kg, vg, out, dout, glse, flags, gi, scale, shared, grads):
    """Kernel B's backward in the layer mode after kernel A's (``grads``: its dq, dk, dv): into ``grads``
    when ``shared`` (dk, dv added), else into a zero dq_global and NaN-poisoned dk_global, dv_global.
    Returns the tensors it wrote."""
    if shared:
        targets = grads
    else:
        nan = torch.full(kg.shape, float("nan"), dtype=kg.dtype)
        targets = (torch.zeros_like(qg), nan, nan.clone())
    emu.attention_bwd(
        E.KIND_GLOBAL, qg, kg, vg, out, dout, glse, flags, gi, 0, scale,
        layer=True, accumulate_kv=shared, grads=targets,
    )  # fmt: skip
    return targets


@pytest.mark.parametrize("shared", [False, True], ids=["separate", "shared"])
@pytest.mark.parametrize("case", GLOBAL_CASES, ids=lambda c: "-".join(map(str, c)))
def test_layer_mode_gives_the_composed_kernels_bits(emu, case, shared):
    """Kernel B reading its query rows at the global positions of a (B, N, H, D) tensor and writing its
    output (and dQ) rows there, and kernel A's backward treating the global rows as dead, give the bits
    of the kernels composed with a gather and a scatter (bounds-checked: every access stays inside the
    tensors); B's dK / dV added to A's in the kernel (a shared projection) are one rounding away."""
    b, n, h, d, gpat, ppat, spare = case
    window, scale = 9, 0.2
    (q, k, v, qg_full, kg, vg), gm, pm, gi, flags = _inputs(b, n, h, d, gpat, ppat, torch.bfloat16, seed=2)
    gi = torch.cat([gi, torch.full((b, spare), -1, dtype=gi.dtype)], 1)
    if shared:
        qg_full, kg, vg = q, k, v
    valid = valid_global_slots(gi, flags)

    # composed: A, then B on gathered rows, scattered over A's output; A's backward sees a zero dO there
    out_a, lse = emu.attention_fwd(E.KIND_BANDED, q, k, v, flags, gi, window, scale)
    qg = gather_rows(qg_full, gi)
    gout, glse_ref = emu.attention_fwd(E.KIND_GLOBAL, qg, kg, vg, flags, gi, 0, scale)
    out_ref = scatter_rows(out_a, gout, gi, valid)
    dout = torch.randn(q.shape).to(q.dtype)
    dout_a = scatter_rows(dout, torch.zeros_like(gout), gi, valid)
    dq_a, dk_a, dv_a = emu.attention_bwd(E.KIND_BANDED, q, k, v, out_a, dout_a, lse, flags, gi, window, scale)
    gdq, gdk, gdv = emu.attention_bwd(
        E.KIND_GLOBAL, qg, kg, vg, gout, gather_rows(dout, gi), glse_ref, flags, gi, 0, scale
    )
    x = qg_full.clone().requires_grad_()
    (dqg_ref,) = torch.autograd.grad(gather_rows(x, gi), x, gdq)

    # the layer mode, into A's (NaN-poisoned) tensors
    out = out_a.clone()
    _, glse = emu.attention_fwd(E.KIND_GLOBAL, qg_full, kg, vg, flags, gi, 0, scale, layer=True, out=out)
    assert torch.equal(out, out_ref) and torch.equal(glse, glse_ref)
    grads = emu.attention_bwd(E.KIND_BANDED, q, k, v, out, dout, lse, flags, gi, window, scale, layer=True)
    assert all(torch.equal(x, y) for x, y in zip(grads, (dq_a, dk_a, dv_a))), "A with dead global rows"
    dq, dk, dv = _global_layer_bwd(emu, qg_full, kg, vg, out, dout, glse, flags, gi, scale, shared, grads)
    if shared:
        assert torch.equal(dq, dq_a + dqg_ref)  # A's dQ is 0 at the global rows, B's 0 elsewhere
        for ours, a, g in ((dk, dk_a, gdk), (dv, dv_a, gdv)):
            torch.testing.assert_close(ours.double(), a.double() + g.double(), atol=1e-2, rtol=1e-2)
    else:
        assert torch.equal(dq, dqg_ref) and torch.equal(dk, gdk) and torch.equal(dv, gdv)


# layers whose kernel B is split into key chunks (at least 8 key tiles), so that its chunks run inside
# kernel A's launch: (B, N, H, D, window, global pattern, padding pattern[, global slots]), at the head
# dims where the main loops differ (elsewhere they all run rows32 and mma)
FUSED_LAYER_CASES = [
    (2, 515, 1, 64, 0, "first", "tail", 3),  # two batch elements, unused global slots (-1), window 0
    (1, 520, 2, 128, 33, "all", "tail"),  # two heads, 2 chunks (the last one short)
]
FWD_VARIANTS = ["rows32", "rows16", "wgmma", "wgmma16", "wgmma16s", "wgmma2g", "wgmma16o"]  # (the fixture's)
# at head dim 128 (11-15 s each) `make test` runs the defaults of sm_80 and sm_90a and the three-launch
# wgmma2g; the other four are marked slow (`make test-all`)
FWD_AT_128_IN_MAKE_TEST = ("rows32", "wgmma16", "wgmma2g")
FUSED_LAYER_FWD = [
    pytest.param(
        variant,
        case,
        id="-".join(map(str, (variant, *case))),
        marks=() if case[3] < 128 or variant in FWD_AT_128_IN_MAKE_TEST else (pytest.mark.slow,),
    )
    for variant in FWD_VARIANTS
    for case in FUSED_LAYER_CASES
] + [pytest.param("rows32", (1, 530, 1, 16, 9, "scattered", "tail"), id="rows32-1-530-1-16-9-scattered-tail")]


def _layer_in_one_launch(variant: str, d: int) -> bool:
    """Whether attention_layer_fwd runs the layer in one launch with this forward main loop
    (layer_fusable in csrc/cuda/attention_fwd.cuh): not at head dim 16, not with wgmma2g's blocks of two
    warpgroups, not with wgmma16s at head dim 64 (their registers); head dims 32 run rows32 for every
    variant."""
    if d == 16:
        return False
    if d % 64:
        return True
    return variant != "wgmma2g" and not (variant == "wgmma16s" and d == 64)


@pytest.mark.parametrize("variant,case", FUSED_LAYER_FWD)
def test_layer_forward_in_one_launch_gives_the_two_launches_bits(emu, variant, case, monkeypatch):
    """attention_layer_fwd: kernel B's key chunks as extra blocks of kernel A's launch, then B's combine
    (two launches), give the bits of A's launch then B's (three launches, LED_KERNELS_FUSED_FORWARD=0)
    and of the two kernels called one after the other, for every forward main loop (those that cannot
    share a launch take three); and match the oracle. Outputs, statistics and the workspace are
    NaN-poisoned before each run."""
    monkeypatch.setenv("LED_KERNELS_CUDA_FWD", variant)
    b, n, h, d, window, gpat, ppat, *max_global = case
    scale = d**-0.5
    inputs = _inputs(b, n, h, d, gpat, ppat, torch.float16, *max_global, seed=7)
    (q, k, v, qg, kg, vg), gm, pm, gi, flags = inputs
    assert emu.workspace_bytes(E.KIND_GLOBAL, b, h, gi.shape[1], n, d) > 0, "kernel B must be split"

    runs = {}
    for fused in ("1", "0"):
        monkeypatch.setenv("LED_KERNELS_FUSED_FORWARD", fused)
        before = emu.launch_count()
        runs[fused] = emu.attention_layer_fwd(q, k, v, qg, kg, vg, flags, gi, window, scale, seed=int(fused))
        assert emu.launch_count() - before == (2 if fused == "1" and _layer_in_one_launch(variant, d) else 3)
    for ours, theirs in zip(runs["1"], runs["0"]):
        assert torch.equal(ours, theirs)

    out, lse = emu.attention_fwd(E.KIND_BANDED, q, k, v, flags, gi, window, scale)
    _, glse = emu.attention_fwd(E.KIND_GLOBAL, qg, kg, vg, flags, gi, 0, scale, layer=True, out=out)
    for ours, theirs in zip(runs["1"], (out, lse, glse)):
        assert torch.equal(ours, theirs)

    qkv, qkv_global = (q.double(), k.double(), v.double()), (qg.double(), kg.double(), vg.double())
    want = oracle.dense_longformer_attention(*qkv, window, pm, gm, *qkv_global, scale=scale)
    torch.testing.assert_close(runs["1"][0].double(), want, atol=2e-3, rtol=2e-3)


def test_layer_forward_refuses_a_bad_value_of_its_switch(emu, monkeypatch):
    (q, k, v, qg, kg, vg), _, _, gi, flags = _inputs(1, 520, 1, 32, "first", "none", torch.float16)
    monkeypatch.setenv("LED_KERNELS_FUSED_FORWARD", "yes")
    with pytest.raises(E.EmulatorError, match="LED_KERNELS_FUSED_FORWARD must be 0 or 1"):
        emu.attention_layer_fwd(q, k, v, qg, kg, vg, flags, gi, 9, 0.2)


def _layer_bwd_params():
    """(backward variant, case, shared projections): every combination at head dim 64; at head dim 128
    (25-30 s each) each variant once and both projection modes, the other three combinations marked
    slow (``make test-all``)."""
    params = []
    for case in FUSED_LAYER_CASES:
        for variant in ("mma", "wgmma", "wgmmas"):
            for shared in (False, True):
                ci = case[3] < 128 or (variant, shared) in (("mma", True), ("wgmma", False), ("wgmmas", True))
                marks = () if ci else (pytest.mark.slow,)
                ids = f"{variant}-{'-'.join(map(str, case))}-{'shared' if shared else 'separate'}"
                params.append(pytest.param(variant, case, shared, marks=marks, id=ids))
    return params


@pytest.mark.parametrize("bwd_variant,case,shared", _layer_bwd_params(), indirect=["bwd_variant"])
def test_layer_backward_in_one_call_gives_the_two_kernels_bits(emu, case, shared, bwd_variant, monkeypatch):
    """attention_layer_bwd: both deltas, then kernel B's dQ chunks as extra blocks of kernel A's dQ launch
    (LED_KERNELS_FUSED_BACKWARD=1, the default; mma.sync at head dim 128 keeps two launches), then the rest
    of A's backward and of B's, gives the bits of two launches (=0) and of kernel A's backward then kernel
    B's in the layer mode, called one after the other, for every variant of the backward's kernels;
    gradients NaN-poisoned before each run (dq_global zero-filled: B writes only its global rows)."""
    b, n, h, d, window, gpat, ppat, *max_global = case
    scale = d**-0.5
    inputs = _inputs(b, n, h, d, gpat, ppat, torch.float16, *max_global, seed=8)
    (q, k, v, qg, kg, vg), _, _, gi, flags = inputs
    if shared:
        qg, kg, vg = q, k, v
    out, lse, glse = emu.attention_layer_fwd(q, k, v, qg, kg, vg, flags, gi, window, scale)
    dout = torch.randn(q.shape, generator=torch.Generator().manual_seed(9)).to(q.dtype)
    args = (q, k, v, qg, kg, vg, out, dout, lse, glse, flags, gi, window, scale)

    runs = {}
    fusable = d < 128 or bwd_variant != "mma"
    for fused in ("1", "0"):
        monkeypatch.setenv("LED_KERNELS_FUSED_BACKWARD", fused)
        before = emu.launch_count()
        runs[fused] = emu.attention_layer_bwd(*args, shared=shared, seed=int(fused))
        # A: delta, dQ, band dK/dV, global keys' dK/dV and their reduction; B: delta, dQ, its reduction,
        # dK/dV; B's dQ inside A's dQ launch when fused
        assert emu.launch_count() - before == (8 if fused == "1" and fusable else 9)
    for ours, theirs in zip(runs["1"], runs["0"]):
        assert torch.equal(ours, theirs)

    grads = emu.attention_bwd(E.KIND_BANDED, q, k, v, out, dout, lse, flags, gi, window, scale, layer=True)
    targets = _global_layer_bwd(emu, qg, kg, vg, out, dout, glse, flags, gi, scale, shared, grads)
    want = grads if shared else (*grads, *targets)
    for ours, theirs in zip(runs["1"], want):
        assert torch.equal(ours, theirs)
    assert all(torch.isfinite(x).all() for x in runs["1"])


def test_layer_backward_refuses_a_bad_value_of_its_switch(emu, monkeypatch):
    (q, k, v, qg, kg, vg), _, _, gi, flags = _inputs(1, 520, 1, 32, "first", "none", torch.float16)
    out, lse, glse = emu.attention_layer_fwd(q, k, v, qg, kg, vg, flags, gi, 9, 0.2)
    monkeypatch.setenv("LED_KERNELS_FUSED_BACKWARD", "on")
    with pytest.raises(E.EmulatorError, match="LED_KERNELS_FUSED_BACKWARD must be 0 or 1"):
        emu.attention_layer_bwd(q, k, v, qg, kg, vg, out, q, lse, glse, flags, gi, 9, 0.2)
