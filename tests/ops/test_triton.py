"""Triton backend (kernels A and B) against the dense fp64 oracle: outputs and the gradients of every
input, odd lengths, every window regime, global/padding patterns, strided inputs, NaN-poisoned
allocations, determinism, the split-KV and tile-shape variants, and torch.compile tracing.

Without a GPU the kernels run under Triton's interpreter (numpy, fp32/fp16 only), so shapes stay
small; tiles are 16 there, so N up to 100 still covers several tiles, interior tiles and both edges.
"""

from __future__ import annotations

import itertools
import os

import pytest
import torch

if not torch.cuda.is_available():
    # must precede the first import of the kernels: @triton.jit picks the interpreter at decoration
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("LED_KERNELS_AUTOTUNE", "0")  # one fixed config per kernel, read at import

pytest.importorskip("triton")

import oracle  # noqa: E402

from led_kernels.masks import gather_rows, scatter_rows, valid_global_slots  # noqa: E402
from led_kernels.ops.triton import (  # noqa: E402
    _common,
    banded,
    banded_attention,
    global_attention,
    global_rows,
    longformer,
    longformer_attention,
)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("triton kernels need a GPU or TRITON_INTERPRET=1", allow_module_level=True)

LOW_PRECISION = [torch.float16] + ([torch.bfloat16] if DEVICE == "cuda" else [])


# ----------------------------------------------------------------------------------------------------
# fixtures and case builders
# ----------------------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def nan_poisoned_allocations(monkeypatch):
    """Every buffer the backend allocates starts as NaN (floats) or garbage (ints), so an element a
    kernel forgets to write shows up as a NaN / wrong value in the comparisons below."""

    def poisoned(shape, dtype, device):
        t = torch.empty(shape, dtype=dtype, device=device)
        if dtype.is_floating_point:
            return t.fill_(float("nan"))
        return t.fill_(-0x3F3F3F3F if dtype == torch.int32 else -77)

    monkeypatch.setattr(_common, "empty", poisoned)


def _global_mask(pattern: str, b: int, n: int, gen: torch.Generator) -> torch.Tensor:
    m = torch.zeros(b, n, dtype=torch.bool)
    if pattern == "first":
        m[:, 0] = True
    elif pattern == "scattered":
        m = torch.rand(b, n, generator=gen) < 0.2
        m[0, 0] = True
        m[-1, n - 1] = True
    elif pattern == "all":
        m[:] = True
    elif pattern != "none":
        raise ValueError(pattern)
    return m


def _padding_mask(pattern: str, b: int, n: int, gen: torch.Generator) -> torch.Tensor:
    m = torch.zeros(b, n, dtype=torch.bool)
    if pattern == "tail":  # last element of the batch padded over its last ~third
        m[-1, n - max(1, n // 3) :] = True
    elif pattern == "full":  # last element of the batch entirely padding
        m[-1] = True
    elif pattern == "holes":  # padding anywhere (also on global tokens: those slots become invalid)
        m = torch.rand(b, n, generator=gen) < 0.25
    elif pattern != "none":
        raise ValueError(pattern)
    return m


def _global_idx(global_mask: torch.Tensor, extra_slots: int = 1) -> torch.Tensor:
    """Ascending positions then -1, like lk.global_indices, plus ``extra_slots`` trailing -1 slots."""
    b, n = global_mask.shape
    counts = global_mask.sum(1)
    g = int(counts.max()) + extra_slots if b else 0
    gi = torch.full((b, g), -1, dtype=torch.int32)
    for i in range(b):
        pos = torch.nonzero(global_mask[i]).flatten()
        gi[i, : pos.numel()] = pos.to(torch.int32)
    return gi


def _qkv(b, n, h, d, dtype, fused, gen):
    """q, k, v as independent tensors or as strided views of one fused (B, N, 3, H, D) projection."""
    if fused:
        qkv = torch.randn(b, n, 3, h, d, generator=gen).to(DEVICE, dtype)
        return qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
    return tuple(torch.randn(b, n, h, d, generator=gen).to(DEVICE, dtype) for _ in range(3))


def _case(b, n, h, d, glob, pad, dtype=torch.float32, fused=False, seed=0, extra_slots=None):
    if extra_slots is None:  # "all": G == N exactly; otherwise one trailing -1 slot
        extra_slots = 0 if glob == "all" else 1
    gen = torch.Generator().manual_seed(seed)
    q, k, v = _qkv(b, n, h, d, dtype, fused, gen)
    gmask = _global_mask(glob, b, n, gen)
    pmask = _padding_mask(pad, b, n, gen)
    flags = oracle.key_flags_from_masks(n, b, pmask, gmask, "cpu").to(DEVICE)
    gi = _global_idx(gmask, extra_slots).to(DEVICE)
    return q, k, v, flags, gi


def _grad_out(shape, dtype, strided, seed):
    """Upstream gradient, optionally a strided view (last dim contiguous) read in place by the kernels."""
    gen = torch.Generator().manual_seed(seed)
    if strided:
        b, n, h, d = shape
        return torch.randn(b, n, 2, h, d, generator=gen).to(DEVICE, dtype)[:, :, 1]
    return torch.randn(shape, generator=gen).to(DEVICE, dtype)


def _leaves(*ts):
    return [t.detach().requires_grad_() for t in ts]


def _leaves64(*ts):
    return [t.detach().double().requires_grad_() for t in ts]


def _assert_finite(name, t):
    assert torch.isfinite(t).all(), f"{name}: {(~torch.isfinite(t)).sum().item()} non-finite elements"


def _close(name, actual, expected, atol, rtol):
    _assert_finite(name, actual)
    torch.testing.assert_close(
        actual.double(), expected.double(), atol=atol, rtol=rtol, msg=lambda m: f"{name}: {m}"
    )


def _run_banded(q, k, v, window, flags, gi, scale, dout):
    q, k, v = _leaves(q, k, v)
    out = banded_attention(q, k, v, window, flags, gi, scale)
    grads = torch.autograd.grad(out, (q, k, v), dout)
    return out, grads


def _run_global(qg, kg, vg, gi, flags, scale, dout):
    qg, kg, vg = _leaves(qg, kg, vg)
    out = global_attention(qg, kg, vg, gi, flags, scale)
    grads = torch.autograd.grad(out, (qg, kg, vg), dout)
    return out, grads


def _oracle_banded(q, k, v, window, flags, scale, dout, dtype=torch.float64):
    if dtype == torch.float64:
        q, k, v = _leaves64(q, k, v)
    else:
        q, k, v = _leaves(q, k, v)
    out = oracle.dense_banded_attention(q, k, v, window, flags, scale=scale, dtype=dtype)
    grads = torch.autograd.grad(out, (q, k, v), dout.to(out.dtype))
    return out, grads


def _oracle_global(qg, kg, vg, gi, flags, scale, dout, dtype=torch.float64):
    if dtype == torch.float64:
        qg, kg, vg = _leaves64(qg, kg, vg)
    else:
        qg, kg, vg = _leaves(qg, kg, vg)
    out = oracle.dense_global_attention(qg, kg, vg, gi, flags, scale=scale, dtype=dtype)
    grads = torch.autograd.grad(out, (qg, kg, vg), dout.to(out.dtype))
    return out, grads


FP32_TOL = {"out": (1e-4, 1e-4), "grad": (1e-3, 1e-3)}
if DEVICE == "cuda":  # tensor-core fp32 (ieee) sums in a different order; same order of magnitude
    FP32_TOL = {"out": (2e-4, 2e-4), "grad": (2e-3, 2e-3)}


def _check_fp32(names, got, ref):
    out, grads = got
    rout, rgrads = ref
    _close(f"{names[0]} out", out, rout, *FP32_TOL["out"])
    for name, g, rg in zip(names[1:], grads, rgrads):
        _close(f"d{name}", g, rg, *FP32_TOL["grad"])


# ----------------------------------------------------------------------------------------------------
# kernel A: banded attention
# ----------------------------------------------------------------------------------------------------

# (N, window, global pattern, padding pattern, B, H, D, fused qkv)
BANDED_CASES = [
    (1, 0, "none", "none", 2, 2, 16, False),
    (1, 3, "first", "none", 1, 2, 16, False),
    (7, 0, "none", "none", 2, 2, 16, False),
    (7, 1, "first", "tail", 2, 3, 16, True),
    (7, 10**6, "all", "none", 2, 2, 32, False),
    (37, 1, "scattered", "tail", 2, 2, 16, False),
    (37, 5, "first", "full", 2, 2, 32, True),
    (37, 20, "scattered", "holes", 2, 3, 16, False),
    (37, 40, "none", "holes", 2, 2, 16, False),
    (100, 3, "none", "none", 1, 2, 16, False),
    # w = 15 / 30 / 47 put a tile edge exactly on the interior boundary (off-by-one in band_tiles)
    (100, 15, "first", "none", 1, 2, 16, False),
    (100, 30, "scattered", "tail", 1, 2, 16, False),
    (100, 47, "none", "holes", 2, 2, 16, False),
    (100, 17, "first", "tail", 2, 2, 16, True),
    (100, 40, "scattered", "holes", 2, 2, 32, False),
    (100, 64, "all", "tail", 2, 2, 16, False),
    (100, 100, "first", "none", 1, 3, 16, True),
    (83, 33, "scattered", "none", 2, 2, 24, False),  # head_dim not a power of two (padded to 32)
    (200, 64, "scattered", "tail", 1, 2, 16, True),
]


def _banded_id(c):
    n, w, glob, pad, b, h, d, fused = c
    return f"N{n}-w{'inf' if w >= 10**6 else w}-glob_{glob}-pad_{pad}-B{b}H{h}D{d}" + (
        "-fused" if fused else ""
    )


@pytest.mark.parametrize("case", BANDED_CASES, ids=[_banded_id(c) for c in BANDED_CASES])
def test_banded_fp32_matches_oracle(case):
    n, w, glob, pad, b, h, d, fused = case
    q, k, v, flags, gi = _case(b, n, h, d, glob, pad, fused=fused, seed=n + w)
    scale = d**-0.5
    dout = _grad_out((b, n, h, d), torch.float32, strided=fused, seed=1)
    got = _run_banded(q, k, v, w, flags, gi if glob != "none" else None, scale, dout)
    ref = _oracle_banded(q, k, v, w, flags, scale, dout)
    _check_fp32(["banded", "q", "k", "v"], got, ref)
    # padded query rows are exactly 0
    assert (got[0][flags == 1] == 0).all()


def test_banded_no_slots_and_only_invalid_slots_agree():
    """global_idx None, an empty (B, 0) tensor and slots that are all -1 or padded mean the same."""
    b, n, h, d = 2, 37, 2, 16
    q, k, v, flags, _ = _case(b, n, h, d, "none", "tail", seed=3)
    scale = d**-0.5
    dout = torch.randn(b, n, h, d, generator=torch.Generator().manual_seed(2)).to(DEVICE)
    gi_padded_global = torch.tensor(
        [[-1, -1], [n - 1, -1]], dtype=torch.int32, device=DEVICE
    )  # n-1 is padding
    runs = [
        _run_banded(q, k, v, 4, flags, gi, scale, dout)
        for gi in (None, torch.empty(b, 0, dtype=torch.int32, device=DEVICE), gi_padded_global)
    ]
    for out, grads in runs[1:]:
        assert torch.equal(out, runs[0][0])
        for g, g0 in zip(grads, runs[0][1]):
            assert torch.equal(g, g0)
    _check_fp32(["banded", "q", "k", "v"], runs[0], _oracle_banded(q, k, v, 4, flags, scale, dout))


# ----------------------------------------------------------------------------------------------------
# kernel B: global rows
# ----------------------------------------------------------------------------------------------------

# (N, global pattern, padding pattern, B, H, D, fused)
GLOBAL_CASES = [
    (1, "first", "none", 2, 2, 16, False),
    (7, "first", "tail", 2, 3, 16, True),
    (37, "scattered", "none", 2, 2, 32, False),
    (37, "scattered", "holes", 2, 2, 16, True),
    (37, "all", "full", 2, 2, 16, False),
    (100, "first", "tail", 2, 2, 16, False),
    (100, "scattered", "holes", 1, 3, 16, False),
    (100, "all", "none", 1, 2, 32, True),
    (61, "scattered", "none", 2, 2, 24, False),
]


def _global_id(c):
    n, glob, pad, b, h, d, fused = c
    return f"N{n}-glob_{glob}-pad_{pad}-B{b}H{h}D{d}" + ("-fused" if fused else "")


@pytest.mark.parametrize("case", GLOBAL_CASES, ids=[_global_id(c) for c in GLOBAL_CASES])
def test_global_fp32_matches_oracle(case):
    n, glob, pad, b, h, d, fused = case
    _, kg, vg, flags, gi = _case(b, n, h, d, glob, pad, fused=fused, seed=7 * n)
    gen = torch.Generator().manual_seed(5)
    g = gi.shape[1]
    qg = torch.randn(b, g, h, d, generator=gen).to(DEVICE)
    scale = d**-0.5
    dout = _grad_out((b, g, h, d), torch.float32, strided=fused, seed=2)
    got = _run_global(qg, kg, vg, gi, flags, scale, dout)
    ref = _oracle_global(qg, kg, vg, gi, flags, scale, dout)
    _check_fp32(["global", "q_global", "k_global", "v_global"], got, ref)


def test_global_without_slots():
    """G = 0: empty output, and k/v gradients that are written (zeros), not left uninitialised."""
    b, n, h, d = 2, 37, 2, 16
    _, kg, vg, flags, _ = _case(b, n, h, d, "none", "tail", seed=1)
    gi = torch.empty(b, 0, dtype=torch.int32, device=DEVICE)
    qg = torch.randn(b, 0, h, d, device=DEVICE, requires_grad=True)
    kg, vg = _leaves(kg, vg)
    out = global_attention(qg, kg, vg, gi, flags, d**-0.5)
    assert out.shape == (b, 0, h, d)
    dq, dk, dv = torch.autograd.grad(out, (qg, kg, vg), torch.zeros_like(out), allow_unused=False)
    assert dq.shape == qg.shape
    assert torch.equal(dk, torch.zeros_like(dk)) and torch.equal(dv, torch.zeros_like(dv))


# ----------------------------------------------------------------------------------------------------
# low precision: error at most 2x the error of the same math done by PyTorch in that precision
# ----------------------------------------------------------------------------------------------------


def _check_low_precision(names, got, ref64, ref_lp):
    for i, name in enumerate(names):
        a = got[0] if i == 0 else got[1][i - 1]
        r = ref64[0] if i == 0 else ref64[1][i - 1]
        rl = ref_lp[0] if i == 0 else ref_lp[1][i - 1]
        _assert_finite(name, a)
        err = (a.double() - r).abs().max().item()
        torch_err = (rl.double() - r).abs().max().item()
        assert err <= 2 * torch_err + 1e-4, f"{name}: kernel error {err:.3g} vs torch error {torch_err:.3g}"


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=lambda t: str(t).split(".")[-1])
@pytest.mark.parametrize(
    "n,w,glob,pad", [(37, 5, "scattered", "tail"), (100, 40, "first", "holes")], ids=["N37-w5", "N100-w40"]
)
def test_banded_low_precision(dtype, n, w, glob, pad):
    b, h, d = 2, 2, 32
    q, k, v, flags, gi = _case(b, n, h, d, glob, pad, dtype=dtype, seed=11)
    scale = d**-0.5
    dout = torch.randn(b, n, h, d, generator=torch.Generator().manual_seed(3)).to(DEVICE, dtype)
    got = _run_banded(q, k, v, w, flags, gi, scale, dout)
    ref64 = _oracle_banded(q, k, v, w, flags, scale, dout)
    ref_lp = _oracle_banded(q, k, v, w, flags, scale, dout, dtype=dtype)
    _check_low_precision(["out", "dq", "dk", "dv"], got, ref64, ref_lp)


@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=lambda t: str(t).split(".")[-1])
def test_global_low_precision(dtype):
    b, n, h, d = 2, 100, 2, 32
    _, kg, vg, flags, gi = _case(b, n, h, d, "scattered", "tail", dtype=dtype, seed=12)
    gen = torch.Generator().manual_seed(6)
    qg = torch.randn(b, gi.shape[1], h, d, generator=gen).to(DEVICE, dtype)
    dout = torch.randn(qg.shape, generator=gen).to(DEVICE, dtype)
    scale = d**-0.5
    got = _run_global(qg, kg, vg, gi, flags, scale, dout)
    ref64 = _oracle_global(qg, kg, vg, gi, flags, scale, dout)
    ref_lp = _oracle_global(qg, kg, vg, gi, flags, scale, dout, dtype=dtype)
    _check_low_precision(["out", "dq_global", "dk_global", "dv_global"], got, ref64, ref_lp)


# ----------------------------------------------------------------------------------------------------
# launch variants: non-square tiles, split-KV on/off
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bm,bn", [(32, 16), (16, 32)], ids=["BM32-BN16", "BM16-BN32"])
def test_non_square_tiles(monkeypatch, request, bm, bn):
    """Band bounds, interior detection and the key-tile flags with query and key tiles of different
    sizes (the GPU configs are all non-square)."""
    original = _common.kernel_config

    def config(kind, head_dim, device, *args, **kwargs):
        cfg = dict(original(kind, head_dim, device, *args, **kwargs))
        cfg.update(BLOCK_M=bm, BLOCK_N=bn)
        return cfg

    # cached lookups derived from the configs (smallest_block_m: the dQ pass's partial rows) must not
    # outlive the patch, or later tests in this process launch with rows that do not divide BLOCK_M
    _common.clear_device_caches()
    request.addfinalizer(_common.clear_device_caches)
    monkeypatch.setattr(_common, "kernel_config", config)
    b, n, h, d, w = 2, 100, 2, 16, 47  # w = 15 mod 16 and mod 32: tile edges on the band edge
    q, k, v, flags, gi = _case(b, n, h, d, "scattered", "holes", seed=21)
    scale = d**-0.5
    gen = torch.Generator().manual_seed(4)
    dout = torch.randn(b, n, h, d, generator=gen).to(DEVICE)
    _check_fp32(
        ["banded", "q", "k", "v"],
        _run_banded(q, k, v, w, flags, gi, scale, dout),
        _oracle_banded(q, k, v, w, flags, scale, dout),
    )
    qg = torch.randn(b, gi.shape[1], h, d, generator=gen).to(DEVICE)
    doutg = torch.randn(qg.shape, generator=gen).to(DEVICE)
    _check_fp32(
        ["global", "q_global", "k_global", "v_global"],
        _run_global(qg, k, v, gi, flags, scale, doutg),
        _oracle_global(qg, k, v, gi, flags, scale, doutg),
    )


@pytest.mark.parametrize("target", [1, 64], ids=["single-split", "many-splits"])
def test_split_kv_variants(monkeypatch, target):
    """Kernel B's split-KV + LSE combine and kernel A's global-key dK/dV partials + reduction, against
    their single-program (direct write) versions."""
    monkeypatch.setattr(_common, "target_programs", lambda device: target)
    b, n, h, d = 2, 100, 2, 16
    q, k, v, flags, gi = _case(b, n, h, d, "scattered", "tail", seed=31)
    scale = d**-0.5
    gen = torch.Generator().manual_seed(8)
    dout = torch.randn(b, n, h, d, generator=gen).to(DEVICE)
    _check_fp32(
        ["banded", "q", "k", "v"],
        _run_banded(q, k, v, 9, flags, gi, scale, dout),
        _oracle_banded(q, k, v, 9, flags, scale, dout),
    )
    qg = torch.randn(b, gi.shape[1], h, d, generator=gen).to(DEVICE)
    doutg = torch.randn(qg.shape, generator=gen).to(DEVICE)
    _check_fp32(
        ["global", "q_global", "k_global", "v_global"],
        _run_global(qg, k, v, gi, flags, scale, doutg),
        _oracle_global(qg, k, v, gi, flags, scale, doutg),
    )


# ----------------------------------------------------------------------------------------------------
# the whole layer: kernels A and B as one op (what lk.longformer_attention runs)
# ----------------------------------------------------------------------------------------------------

# (N, window, global pattern, padding pattern, projections, extra -1 slots, split target)
LAYER_CASES = [
    (1, 0, "first", "none", "separate", 0, None),
    (7, 2, "all", "none", "shared", 0, None),
    (37, 5, "first", "tail", "separate", 1, None),
    (37, 20, "scattered", "holes", "shared", 2, None),
    (37, 40, "scattered", "full", "partial", 1, None),
    (100, 15, "first", "none", "shared", 0, 64),
    (100, 17, "scattered", "tail", "separate", 1, 64),
    (100, 30, "scattered", "holes", "partial", 0, 1),
    (83, 33, "first", "tail", "separate", 3, None),
]


def _layer_id(c):
    n, w, glob, pad, proj, extra, split = c
    return f"N{n}-w{w}-glob_{glob}-pad_{pad}-{proj}-extra{extra}" + (f"-split{split}" if split else "")


def _layer_inputs(n, glob, pad, proj, extra, seed, d=16):
    b, h = 2, 2
    gen = torch.Generator().manual_seed(seed)
    local = [torch.randn(b, n, h, d, generator=gen).to(DEVICE) for _ in range(3)]
    glob_proj = [torch.randn(b, n, h, d, generator=gen).to(DEVICE) for _ in range(3)]
    if proj == "shared":
        glob_proj = [None, None, None]
    elif proj == "partial":  # only k_global given: q_global and v_global are the local ones
        glob_proj = [None, glob_proj[1], None]
    gmask = _global_mask(glob, b, n, gen)
    pmask = _padding_mask(pad, b, n, gen)
    flags = oracle.key_flags_from_masks(n, b, pmask, gmask, "cpu").to(DEVICE)
    gi = _global_idx(gmask, extra).to(DEVICE)
    dout = torch.randn(b, n, h, d, generator=gen).to(DEVICE)
    return local, glob_proj, gmask.to(DEVICE), pmask.to(DEVICE), flags, gi, dout


def _projections(leaves, given):
    """q_global, k_global, v_global from leaves (q, k, v, then the given global projections in order):
    None where not given."""
    proj = [None, None, None]
    for j, i in enumerate(given):
        proj[i] = leaves[3 + j]
    return proj


# the layer's forward as kernel A then kernel B (two launches and B's combine,
# LED_KERNELS_FUSED_FORWARD=0), or as one launch of A's tiles and B's key chunks then the combine (the
# default)
FORWARD_LAUNCHES = pytest.mark.parametrize(
    "fused_forward", [False, True], ids=["fwd_a_then_b", "fwd_a_with_b"]
)


@FORWARD_LAUNCHES
@pytest.mark.parametrize("case", LAYER_CASES, ids=[_layer_id(c) for c in LAYER_CASES])
def test_layer_fp32_matches_oracle(monkeypatch, case, fused_forward):
    monkeypatch.setattr(longformer, "FUSED_FORWARD", fused_forward)
    n, w, glob, pad, proj, extra, split = case
    if split is not None:
        monkeypatch.setattr(_common, "target_programs", lambda device: split)
    local, glob_proj, gmask, pmask, flags, gi, dout = _layer_inputs(n, glob, pad, proj, extra, seed=n + w)
    scale = 16**-0.5
    given = [i for i, x in enumerate(glob_proj) if x is not None]

    leaves = _leaves(*local, *[glob_proj[i] for i in given])
    out = longformer_attention(*leaves[:3], *_projections(leaves, given), w, flags, gi, scale)
    grads = torch.autograd.grad(out, leaves, dout)

    ref_leaves = _leaves64(*local, *[glob_proj[i] for i in given])
    ref_proj = _projections(ref_leaves, given)
    ref = oracle.dense_longformer_attention(
        *ref_leaves[:3], w, key_padding_mask=pmask, global_mask=gmask, q_global=ref_proj[0],
        k_global=ref_proj[1], v_global=ref_proj[2], scale=scale,
    )  # fmt: skip
    ref_grads = torch.autograd.grad(ref, ref_leaves, dout.double())
    names = ["q", "k", "v"] + [["q_global", "k_global", "v_global"][i] for i in given]
    _check_fp32(["layer", *names], (out, grads), (ref, ref_grads))


@FORWARD_LAUNCHES
@pytest.mark.parametrize("dtype", LOW_PRECISION, ids=lambda t: str(t).split(".")[-1])
@pytest.mark.parametrize("proj", ["shared", "separate"])
def test_layer_low_precision(monkeypatch, dtype, proj, fused_forward):
    """16-bit inputs: each output and gradient within 2x the error of the dense reference computed in the
    same dtype (both against fp64), the in-place accumulation of shared projections included."""
    monkeypatch.setattr(longformer, "FUSED_FORWARD", fused_forward)
    local, glob_proj, gmask, pmask, flags, gi, dout = _layer_inputs(
        100, "scattered", "tail", proj, 1, seed=21
    )
    local = [x.to(dtype) for x in local]
    glob_proj = [None if x is None else x.to(dtype) for x in glob_proj]
    dout = dout.to(dtype)
    inputs = local + [x for x in glob_proj if x is not None]
    names = ["out", "dq", "dk", "dv"] + (
        ["dq_global", "dk_global", "dv_global"] if proj == "separate" else []
    )

    def run(attend, leaves):
        local_leaves, glob_leaves = leaves[:3], leaves[3:] or [None, None, None]
        out = attend(local_leaves, glob_leaves)
        return out, torch.autograd.grad(out, leaves, dout.to(out.dtype))

    def kernel(loc, glo):
        return longformer_attention(*loc, *glo, 17, flags, gi, 0.25)

    def dense(loc, glo, dtype):
        return oracle.dense_longformer_attention(
            *loc, 17, key_padding_mask=pmask, global_mask=gmask, q_global=glo[0], k_global=glo[1],
            v_global=glo[2], scale=0.25, dtype=dtype,
        )  # fmt: skip

    got = run(kernel, _leaves(*inputs))
    ref64 = run(lambda loc, glo: dense(loc, glo, torch.float64), _leaves64(*inputs))
    ref_lp = run(lambda loc, glo: dense(loc, glo, dtype), _leaves(*inputs))
    _check_low_precision(names, got, ref64, ref_lp)


@pytest.mark.parametrize("proj", ["shared", "separate"])
def test_one_launch_forward_equals_two(monkeypatch, proj):
    """Kernel B's key chunks inside kernel A's launch compute what B's own launch computes (both split
    the keys into the same chunks here, merged by the same combine): the same bits under the interpreter.
    Compiled for a GPU, B's programs inside A's launch run with A's warp count, so their dot products
    may sum in another order (an H100 gave 5.0668e-04 against 5.0670e-04): fp32 rounding apart."""
    monkeypatch.setattr(_common, "target_programs", lambda device: 64)  # several key chunks
    local, glob_proj, _, _, flags, gi, _ = _layer_inputs(100, "scattered", "holes", proj, 1, seed=9)
    outs = []
    for fused_forward in (False, True):
        monkeypatch.setattr(longformer, "FUSED_FORWARD", fused_forward)
        outs.append(longformer_attention(*local, *glob_proj, 17, flags, gi, 0.25))
    if DEVICE == "cpu":
        assert torch.equal(outs[0], outs[1])
    else:
        torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("a_rows", [128, 64], ids=["A128-B128", "A64-B64"])
def test_one_launch_forward_with_gpu_tiles(monkeypatch, request, a_rows):
    """The one-launch forward at the GPU's tile sizes: kernel A's 128-row tiles take kernel B's key
    chunks in 128-key tiles with their own 2-deep pipeline (longformer.LAYER_KEY_TILE), its 64-row ones
    in 64-key tiles; several chunks, the last one partial and padded. Every output and gradient
    against the oracle."""
    original = _common.kernel_config

    def config(kind, head_dim, device, *args, **kwargs):
        cfg = dict(original(kind, head_dim, device, *args, **kwargs))
        if kind == "band_fwd":
            cfg.update(BLOCK_M=a_rows, BLOCK_N=64)
        elif kind == "glob_fwd":
            cfg.update(BLOCK_M=16, BLOCK_N=128)
        return cfg

    _common.clear_device_caches()
    request.addfinalizer(_common.clear_device_caches)
    monkeypatch.setattr(_common, "kernel_config", config)
    monkeypatch.setattr(_common, "target_programs", lambda device: 12)  # 2 chunks of 256 keys
    monkeypatch.setattr(longformer, "FUSED_FORWARD", True)
    n, w = 300, 70
    local, glob_proj, gmask, pmask, flags, gi, dout = _layer_inputs(n, "scattered", "tail", "separate", 1, 17)
    leaves = _leaves(*local, *glob_proj)
    out = longformer_attention(*leaves, w, flags, gi, 0.25)
    grads = torch.autograd.grad(out, leaves, dout)
    ref_leaves = _leaves64(*local, *glob_proj)
    ref = oracle.dense_longformer_attention(
        *ref_leaves[:3], w, key_padding_mask=pmask, global_mask=gmask, q_global=ref_leaves[3],
        k_global=ref_leaves[4], v_global=ref_leaves[5], scale=0.25,
    )  # fmt: skip
    ref_grads = torch.autograd.grad(ref, ref_leaves, dout.double())
    names = ["layer", "q", "k", "v", "q_global", "k_global", "v_global"]
    _check_fp32(names, (out, grads), (ref, ref_grads))


def _candidate_id(kind, c):
    regs = f"-r{c.maxnreg}" if c.maxnreg else ""
    return f"{kind}-{c.kwargs['BLOCK_M']}x{c.kwargs['BLOCK_N']}-w{c.num_warps}-s{c.num_stages}{regs}"


# per GPU (sm_90: H100/H200, sm_80: A100): the fixed configs (CI), then each autotune candidate of
# kernel A's three heavy kernels in turn (slow)
GPU_TILES = [
    pytest.param(
        arch, kind, c, id=f"sm{arch}-" + ("fixed" if c is None else _candidate_id(kind, c)), marks=marks
    )
    for arch in (90, 80)
    for kind, c, marks in [
        (None, None, ()),
        *[
            (kind, c, pytest.mark.slow)
            for kind in ("band_fwd", "band_dq", "band_dkdv")
            for c in _common.autotune_configs(kind)
        ],
    ]
]


@pytest.mark.skipif(DEVICE != "cpu", reason="a GPU launches its own tiles")
@pytest.mark.parametrize("arch,kind,candidate", GPU_TILES)
def test_layer_at_the_gpu_tiles_of_head_dim_128(monkeypatch, arch, kind, candidate):
    """The layer at the tiles a 16-bit launch at head dim 128 takes on an H100 (sm_90) or an A100
    (sm_80), as benchmarks.inspect_kernels fakes them: kernel A's fixed tiles (on sm_90 the forward and
    dQ 128x64, dK/dV 64x128), the dQ pass's global-key partials per the smallest autotune candidate's
    rows, kernel B's slot and key tiles and the split-KV plan for the GPU's SMs, the reductions' GPU
    widths; with ``-m slow`` also each autotune candidate that fits the GPU in place of one fixed config.
    Under the interpreter's bounds check (conftest), so a load or store outside the tensors fails, as a
    GPU's illegal memory access would; the tiles are only numbers to the interpreter, so fp32 inputs
    give exact comparisons."""
    from benchmarks.inspect_kernels import fake_device

    gpu = torch.device("cuda", 0)
    kernel_config, smallest_block_m = _common.kernel_config, _common.smallest_block_m
    target_programs = _common.target_programs
    n, w, d = 260, 60, 128

    def config(k, head_dim, device, *_):
        cfg = kernel_config(k, head_dim, gpu, 2)
        if k == kind:
            cfg.update(candidate.kwargs, num_warps=candidate.num_warps, num_stages=candidate.num_stages)
        return cfg

    with fake_device(arch):
        monkeypatch.setattr(_common, "INTERPRET", False)  # the GPU's shared memory and kernel widths
        if candidate is not None:
            from torch._subclasses.fake_tensor import FakeTensorMode

            with FakeTensorMode():  # the autotuner's own pruning, for a 16-bit tensor on the faked GPU
                q = torch.empty((1, 16, 1, 16), dtype=torch.float16, device=gpu)
                kept = _common._prune_to_smem(kind)([candidate], {"Q": q}, HEAD_DIM=d)
            if candidate not in kept:
                pytest.skip("the candidate does not fit the GPU's shared memory: the autotuner drops it")
        monkeypatch.setattr(_common, "kernel_config", config)
        monkeypatch.setattr(
            _common, "smallest_block_m", lambda k, head_dim, *_: smallest_block_m(k, head_dim, gpu, 2)
        )
        monkeypatch.setattr(_common, "target_programs", lambda device: target_programs(gpu))
        inputs = _layer_inputs(n, "scattered", "tail", "separate", 1, 5, d)
        local, glob_proj, gmask, pmask, flags, gi, dout = inputs
        here = local[0].device
        tiles = {k: _common.kernel_config(k, d, here) for k in ("band_fwd", "band_dq", "band_dkdv")}
        assert all(min(t["BLOCK_M"], t["BLOCK_N"]) >= 32 for t in tiles.values()), tiles  # not the 16s
        if arch == 90 and candidate is None:
            assert (tiles["band_fwd"]["BLOCK_M"], tiles["band_dkdv"]["BLOCK_N"]) == (128, 128), tiles
        assert _common.smallest_block_m("band_dq", d, here, 2) >= 32
        leaves = _leaves(*local, *glob_proj)
        out = longformer_attention(*leaves, w, flags, gi, d**-0.5)
        grads = torch.autograd.grad(out, leaves, dout)
    ref_leaves = _leaves64(*local, *glob_proj)
    ref = oracle.dense_longformer_attention(
        *ref_leaves[:3], w, key_padding_mask=pmask, global_mask=gmask, q_global=ref_leaves[3],
        k_global=ref_leaves[4], v_global=ref_leaves[5], scale=d**-0.5,
    )  # fmt: skip
    ref_grads = torch.autograd.grad(ref, ref_leaves, dout.double())
    names = ["layer", "q", "k", "v", "q_global", "k_global", "v_global"]
    _check_fp32(names, (out, grads), (ref, ref_grads))


def _fold_params():
    """(part_rows, non_finite, proj): a pairwise cover of the three switches (every pair of values of any
    two of them) in CI, the other four combinations marked slow (``make test-all``)."""
    params = []
    for part_rows, non_finite, proj in itertools.product([None, 8], [False, True], ["shared", "separate"]):
        pairwise = (part_rows is None) == (non_finite == (proj == "separate"))
        ids = f"part_rows_{part_rows or 'tile'}-{'non_finite' if non_finite else 'finite'}-{proj}"
        marks = () if pairwise else (pytest.mark.slow,)
        params.append(pytest.param(part_rows, non_finite, proj, marks=marks, id=ids))
    return params


@pytest.mark.parametrize("part_rows,non_finite,proj", _fold_params())
def test_backward_folds_match_the_separate_sweeps(monkeypatch, proj, non_finite, part_rows):
    """With a few global tokens the global keys' dK/dV come out of kernel A's dQ pass and kernel B's dQ
    out of its dK/dV pass (partials, then reductions); with the thresholds at 0 each has a sweep of its
    own. Same gradients up to fp32 summation order, NaN where the other has NaN: also with non-finite
    q and dO rows at padded positions (which must reach no gradient) and a NaN value row. part_rows 8:
    the dQ tiles (16 rows here) are wider than the partials' row tiles, as on a GPU whose autotuner may
    pick 128 rows where 64 is possible: each program also writes the zeros of its second slot (the
    allocations are NaN-poisoned, so a slot left unwritten shows)."""
    if part_rows is not None:
        monkeypatch.setattr(_common, "smallest_block_m", lambda *args: part_rows)
    local, glob_proj, _, pmask, flags, gi, dout = _layer_inputs(100, "first", "tail", proj, 2, seed=13)
    assert 0 < gi.shape[1] <= min(banded.GKEY_IN_DQ_MAX_SLOTS, global_rows.DQ_IN_DKDV_MAX_SLOTS)
    if non_finite:
        padded = pmask[:, :, None, None].expand_as(dout)
        local[0] = torch.where(padded, float("nan"), local[0])
        dout = torch.where(padded, float("inf"), dout)
        local[2][0, 40, 1, 3] = float("nan")
    given = [i for i, x in enumerate(glob_proj) if x is not None]

    def grads():
        leaves = _leaves(*local, *[glob_proj[i] for i in given])
        out = longformer_attention(*leaves[:3], *_projections(leaves, given), 17, flags, gi, 0.25)
        return torch.autograd.grad(out, leaves, dout)

    folded = grads()
    monkeypatch.setattr(banded, "GKEY_IN_DQ_MAX_SLOTS", 0)
    monkeypatch.setattr(global_rows, "DQ_IN_DKDV_MAX_SLOTS", 0)
    separate = grads()
    for name, x, y in zip(["q", "k", "v", "q_global", "k_global", "v_global"], folded, separate):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, equal_nan=True, msg=name)
    if non_finite:  # the NaN value row reaches gradients, the padded rows' inputs do not
        assert any(g.isnan().any() for g in folded)
        assert all(not g[pmask].isnan().any() for g in folded[:1])


def test_env_count_reads_non_negative_integers_and_names_the_variable(monkeypatch):
    """The fold thresholds' environment knobs: unset or empty gives the default, a bad value a
    ValueError that names the variable (never a silent fallback)."""
    name = "LED_KERNELS_TEST_COUNT"
    monkeypatch.delenv(name, raising=False)
    assert _common.env_count(name, 4) == 4
    monkeypatch.setenv(name, "")
    assert _common.env_count(name, 4) == 4
    monkeypatch.setenv(name, "0")
    assert _common.env_count(name, 4) == 0
    for bad in ("-1", "two", "1.5"):
        monkeypatch.setenv(name, bad)
        with pytest.raises(ValueError, match=name):
            _common.env_count(name, 4)


@pytest.mark.parametrize("value", ["32", "big"])
def test_layer_key_tile_knob_refuses_other_values(value):
    """LED_KERNELS_LAYER_KEY_TILE takes 64 or 128; anything else fails the import with a ValueError that
    names the variable (never a silent fallback to another tile)."""
    import subprocess
    import sys

    env = dict(os.environ, LED_KERNELS_LAYER_KEY_TILE=value)
    code = "import led_kernels.ops.triton.longformer"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode != 0
    assert "ValueError: LED_KERNELS_LAYER_KEY_TILE" in proc.stderr, proc.stderr[-2000:]


def test_layer_forward_equals_the_composed_kernels():
    """One op or banded + global + scatter: the same kernels, so the same bits in the forward."""
    local, glob_proj, _, _, flags, gi, _ = _layer_inputs(100, "scattered", "holes", "separate", 1, seed=5)
    fused = longformer_attention(*local, *glob_proj, 17, flags, gi, 0.25)
    band = banded_attention(*local, 17, flags, gi, 0.25)
    rows = global_attention(gather_rows(glob_proj[0], gi), *glob_proj[1:], gi, flags, 0.25)
    composed = scatter_rows(band, rows, gi, valid_global_slots(gi, flags))
    assert torch.equal(fused, composed)


# ----------------------------------------------------------------------------------------------------
# determinism, compile, errors
# ----------------------------------------------------------------------------------------------------


def test_backward_is_deterministic():
    b, n, h, d = 2, 100, 2, 16
    q, k, v, flags, gi = _case(b, n, h, d, "scattered", "holes", fused=True, seed=41)
    gen = torch.Generator().manual_seed(9)
    dout = torch.randn(b, n, h, d, generator=gen).to(DEVICE)
    qg = torch.randn(b, gi.shape[1], h, d, generator=gen).to(DEVICE)
    doutg = torch.randn(qg.shape, generator=gen).to(DEVICE)
    first = _run_banded(q, k, v, 13, flags, gi, 0.25, dout)
    second = _run_banded(q, k, v, 13, flags, gi, 0.25, dout)
    firstg = _run_global(qg, k, v, gi, flags, 0.25, doutg)
    secondg = _run_global(qg, k, v, gi, flags, 0.25, doutg)
    for x, y in [(first, second), (firstg, secondg)]:
        assert torch.equal(x[0], y[0])
        for gx, gy in zip(x[1], y[1]):
            assert torch.equal(gx, gy)


def test_torch_compile_fullgraph():
    """The ops are registered custom ops with fake implementations: a whole layer traces in one graph."""
    b, n, h, d, w = 2, 37, 2, 16, 6
    q, k, v, flags, gi = _case(b, n, h, d, "scattered", "tail", seed=51)
    scale = d**-0.5

    def layer(q, k, v, qg):
        out = banded_attention(q, k, v, w, flags, gi, scale)
        gout = global_attention(qg, k, v, gi, flags, scale)
        return out.sum() + gout.sum() * 0.5

    qg = torch.randn(b, gi.shape[1], h, d, device=DEVICE)
    torch._dynamo.reset()
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    leaves = _leaves(q, k, v, qg)
    loss = compiled(*leaves)
    grads = torch.autograd.grad(loss, leaves)
    leaves_e = _leaves(q, k, v, qg)
    loss_e = layer(*leaves_e)
    grads_e = torch.autograd.grad(loss_e, leaves_e)
    assert torch.equal(loss, loss_e)
    for g, ge in zip(grads, grads_e):
        assert torch.equal(g, ge)


def test_rejects_unsupported_head_dim_and_scale():
    q = torch.randn(1, 4, 1, 300, device=DEVICE)
    flags = torch.zeros(1, 4, dtype=torch.int8, device=DEVICE)
    with pytest.raises(ValueError, match="head_dim"):
        banded_attention(q, q, q, 1, flags, None, 0.1)
    q = torch.randn(1, 4, 1, 16, device=DEVICE)
    with pytest.raises(ValueError, match="scale"):
        banded_attention(q, q, q, 1, flags, None, -1.0)


# ----------------------------------------------------------------------------------------------------
# the interpreter's language patches (_common._install_interpreter_patch_once)
# ----------------------------------------------------------------------------------------------------

if DEVICE == "cpu":
    import triton
    import triton.language as tl

    @triton.jit
    def _scaled_row_sum(x, scale):
        # tl.sum is Triton's own jit helper, whose module sees tl.core rather than tl
        return tl.sum(x * scale, axis=0)

    @triton.jit
    def _repeated_helper_kernel(X, Out, calls, BLOCK: tl.constexpr):
        offs = tl.arange(0, BLOCK)
        x = tl.load(X + offs)
        acc = tl.zeros([BLOCK], dtype=tl.float32)
        for i in range(calls):
            acc += _scaled_row_sum(x, i + 1.0)
        tl.store(Out + offs, acc)


@pytest.mark.skipif(DEVICE != "cpu", reason="the interpreter's language patches")
def test_interpreter_patches_the_language_once_per_launch(monkeypatch):
    """Inside a launch, jit helpers reuse the launch's patches of ``triton.language`` instead of
    scanning the language modules again at every call (a helper that sees another module, as
    ``tl.sum`` does, still patches it); the kernel computes the same, and the launch still undoes its
    patches."""
    from triton.runtime import interpreter

    assert getattr(interpreter._patch_lang, "_led_kernels_shim", False)
    scans = []
    original = interpreter._patch_builtin
    monkeypatch.setattr(interpreter, "_patch_builtin", lambda *a: (scans.append(a[0]), original(*a))[1])
    x = torch.randn(16)
    # a first launch lets the interpreter add its names to the helpers' modules (then they hold tl too)
    _repeated_helper_kernel[(1,)](x, torch.empty(16), 1, BLOCK=16)
    scans_per_launch = {}
    for calls in (1, 7):
        scans.clear()
        out = torch.full((16,), float("nan"))
        _repeated_helper_kernel[(1,)](x, out, calls, BLOCK=16)
        expected = x.sum() * sum(range(1, calls + 1))
        torch.testing.assert_close(out, expected.expand(16), rtol=1e-5, atol=1e-5)
        assert scans, "the launch patched nothing"
        scans_per_launch[calls] = len(scans)
    assert scans_per_launch[7] == scans_per_launch[1], scans_per_launch  # 7 helper calls scan as 1 does
    assert tl.core.is_builtin(tl.dot), "the launch left triton.language patched"
