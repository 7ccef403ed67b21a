"""The ``cpu`` backend (C++ kernels, led_kernels.ops.cpu) against the dense fp64 oracle and the torch backend.

fp32: outputs to 1e-5 and all gradients to 1e-4. fp16/bf16: the error against the fp64 oracle is at most
twice the ``torch`` backend's own error in the same dtype (FlashAttention's rule) and never NaN. Every
instruction set the machine can run (AVX-512, AVX2, generic) is exercised; gradients are bitwise
reproducible.
"""

from __future__ import annotations

import itertools
import random

import oracle
import pytest
import torch
from cases import GLOBAL_PATTERNS, fused_projections, global_mask, longformer_layer, padding_mask

import led_kernels as lk
from led_kernels import _extension as ext
from led_kernels.masks import gather_rows, key_flags

pytestmark = pytest.mark.skipif(not ext.is_built(), reason=f"extension not built: {ext.build_error()}")

if ext.is_built():
    from led_kernels.ops import cpu

    ISAS = list(ext.C.cpu_attention_isas())
else:  # collected but skipped
    ISAS = ["generic"]

SHAPES = [(1, 1, 1, 8), (2, 7, 2, 8), (2, 37, 3, 16), (1, 130, 2, 24)]  # (B, N, H, D): odd sizes
WINDOWS = [0, 1, 5, 64, 1000]  # 64 = one tile; 1000 >= N: dense
SIX = ("q", "k", "v", "q_global", "k_global", "v_global")


@pytest.fixture(params=ISAS)
def isa(request, monkeypatch):
    """Runs the test with each instruction set the kernels can use here."""
    monkeypatch.setenv("LED_KERNELS_CPU_ISA", request.param)
    assert ext.C.cpu_attention_isa() == request.param
    return request.param


def _layer_and_grads(shape, window, gpat, ppat, dtype, backend, seed=0):
    """Whole layer on six views of one fused (B, N, 6, H, D) leaf: output and its gradient."""
    b, n, h, d = shape
    torch.manual_seed(seed)
    fused, views = fused_projections(b, n, h, d, dtype=dtype)
    gm, pm = global_mask(b, n, gpat), padding_mask(b, n, ppat)
    out = longformer_layer(views, window, gm, pm, backend)
    ref = oracle.dense_longformer_attention(*views[:3], window, pm, gm, *views[3:])
    dout = torch.randn(ref.shape, dtype=torch.float64)
    (grad,) = torch.autograd.grad(out, fused, dout.to(dtype))
    (grad_ref,) = torch.autograd.grad(ref, fused, dout)
    return out, ref, grad, grad_ref


# ----------------------------------------------------------------------------------------------------
# the whole layer, fp32, against the fp64 oracle
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gpat", GLOBAL_PATTERNS)
@pytest.mark.parametrize("ppat", ["none", "tail", "full"])
@pytest.mark.parametrize("window", WINDOWS, ids=lambda w: f"w{w}")
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_longformer_fp32_matches_oracle(shape, window, ppat, gpat):
    out, ref, grad, grad_ref = _layer_and_grads(shape, window, gpat, ppat, torch.float32, "cpu")
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=0)
    for i, name in enumerate(SIX):  # all six projections, each checked on its own
        torch.testing.assert_close(
            grad[:, :, i].double(),
            grad_ref[:, :, i].double(),
            atol=1e-4,
            rtol=0,
            msg=lambda m, name=name: f"d{name}: {m}",
        )


@pytest.mark.parametrize("gpat", ["first", "scattered", "all"])
@pytest.mark.parametrize("shape,window", [((2, 130, 2, 64), 17), ((1, 200, 3, 40), 64), ((2, 150, 2, 5), 80)])
def test_every_isa_matches_oracle(isa, shape, window, gpat):
    """Tiles of 64 across N, head dims that are and are not a multiple of the vector width."""
    out, ref, grad, grad_ref = _layer_and_grads(shape, window, gpat, "tail", torch.float32, "cpu", seed=3)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(grad.double(), grad_ref.double(), atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "shape,window,gpat,ppat",
    [
        ((1, 2200, 1, 8), 5, "scattered", "tail"),  # 7 segments of 5 tiles
        ((1, 1000, 2, 8), 64, "first", "none"),  # 4 segments, w = one tile
        ((2, 700, 1, 16), 100, "none", "full"),  # 2 segments, a fully padded element
        ((1, 640, 1, 24), 0, "all", "tail"),  # 5 segments of 2 tiles, empty boundary zones
    ],
    ids=["w5", "w64", "w100", "w0"],
)
def test_segmented_backward_matches_oracle(shape, window, gpat, ppat):
    """Long rows with few heads: the fused banded backward splits each (b, h) into segments whose
    boundary keys are reduced afterwards."""
    out, ref, grad, grad_ref = _layer_and_grads(shape, window, gpat, ppat, torch.float32, "cpu")
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(grad.double(), grad_ref.double(), atol=1e-4, rtol=0)


@pytest.mark.parametrize(
    "window,gpat,ppat", [(5000, "scattered", "tail"), (3000, "first", "none"), (700, "none", "tail")]
)
def test_more_key_tiles_than_the_backward_cache(window, gpat, ppat):
    """Rows seeing more than 32 key tiles (2048 keys): the backward recomputes the tiles it does not cache."""
    out, ref, grad, grad_ref = _layer_and_grads((1, 2200, 1, 8), window, gpat, ppat, torch.float32, "cpu")
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(grad.double(), grad_ref.double(), atol=1e-4, rtol=0)


@pytest.mark.parametrize("window,gpat", list(itertools.product([0, 3, 40], GLOBAL_PATTERNS)))
def test_longformer_fp32_matches_torch_backend(window, gpat):
    out, _, grad, _ = _layer_and_grads((2, 100, 2, 32), window, gpat, "tail", torch.float32, "cpu", seed=1)
    out_t, _, grad_t, _ = _layer_and_grads(
        (2, 100, 2, 32), window, gpat, "tail", torch.float32, "torch", seed=1
    )
    torch.testing.assert_close(out, out_t, atol=1e-5, rtol=0)
    torch.testing.assert_close(grad, grad_t, atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------------------------------
# low precision: at most 2x the torch backend's error against fp64, never NaN
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
@pytest.mark.parametrize(
    "shape,window,gpat",
    [((2, 130, 2, 32), 9, "scattered"), ((2, 90, 2, 16), 40, "first"), ((1, 64, 3, 24), 1000, "all")],
    ids=["band", "wide", "dense-all-global"],
)
def test_low_precision_within_twice_torch_error(isa, dtype, shape, window, gpat):
    out, ref, grad, grad_ref = _layer_and_grads(shape, window, gpat, "tail", dtype, "cpu", seed=2)
    out_t, _, grad_t, _ = _layer_and_grads(shape, window, gpat, "tail", dtype, "torch", seed=2)
    assert out.dtype == dtype and grad.dtype == dtype
    assert torch.isfinite(out).all() and torch.isfinite(grad).all()
    assert (out.double() - ref).abs().max() <= 2 * (out_t.double() - ref).abs().max()
    for i, name in enumerate(SIX):
        err = (grad[:, :, i].double() - grad_ref[:, :, i].double()).abs().max()
        err_t = (grad_t[:, :, i].double() - grad_ref[:, :, i].double()).abs().max()
        assert err <= 2 * err_t, f"d{name}: cpu error {err:.3g} > 2 x torch error {err_t:.3g}"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_low_precision_padding_and_empty_rows_never_nan(dtype):
    """Fully padded element, w = 0 with globals (rows whose only key is global) and no-global rows."""
    for window, gpat in [(0, "scattered"), (0, "none"), (3, "all")]:
        out, ref, grad, grad_ref = _layer_and_grads((2, 37, 2, 16), window, gpat, "full", dtype, "cpu")
        assert torch.isfinite(out).all() and torch.isfinite(grad).all()
        assert (out[-1] == 0).all()
        eps = torch.finfo(dtype).eps
        assert (out.double() - ref).abs().max() < 8 * eps


# ----------------------------------------------------------------------------------------------------
# the two ops on their own (A: q, k, v gradients; B: q_global, k_global, v_global gradients)
# ----------------------------------------------------------------------------------------------------


def _ops_case(b, n, h, d, gpat, ppat, dtype, max_global=None, seed=0):
    torch.manual_seed(seed)
    fused, views = fused_projections(b, n, h, d, dtype=dtype)
    gm, pm = global_mask(b, n, gpat), padding_mask(b, n, ppat)
    gi = None if gm is None else lk.global_indices(gm, max_global=max_global)
    flags = key_flags(b, n, fused.device, pm, gi)
    return fused, views, gi, flags


@pytest.mark.parametrize("gpat", GLOBAL_PATTERNS)
@pytest.mark.parametrize("n,window", [(1, 0), (7, 1), (37, 5), (130, 64), (130, 200)])
def test_banded_op_matches_oracle(n, window, gpat):
    b, h, d = 2, 2, 12
    fused, (q, k, v, *_), gi, flags = _ops_case(b, n, h, d, gpat, "tail", torch.float32, max_global=n + 2)
    out = cpu.banded_attention(q, k, v, window, flags, gi, 0.3)
    ref = oracle.dense_banded_attention(q, k, v, window, flags, scale=0.3)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=0)
    dout = torch.randn(ref.shape, dtype=torch.float64)
    grads = torch.autograd.grad(out, (q, k, v), dout.float())
    grads_ref = torch.autograd.grad(ref, (q, k, v), dout)
    for name, g, gr in zip("qkv", grads, grads_ref):
        torch.testing.assert_close(
            g.double(), gr.double(), atol=1e-4, rtol=0, msg=lambda m, name=name: f"d{name}: {m}"
        )


@pytest.mark.parametrize("gpat", ["first", "scattered", "all"])
@pytest.mark.parametrize("n", [1, 7, 37, 130])
def test_global_op_matches_oracle(n, gpat):
    b, h, d = 2, 3, 16
    # two spare -1 slots; with "tail" padding some global positions are also padding (invalid slots)
    fused, (q, _, _, qg_full, kg, vg), gi, flags = _ops_case(b, n, h, d, gpat, "tail", torch.float32, n + 2)
    qg = gather_rows(qg_full, gi).detach().requires_grad_(True)
    out = cpu.global_attention(qg, kg, vg, gi, flags, 0.2)
    ref = oracle.dense_global_attention(qg, kg, vg, gi, flags, scale=0.2)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=0)
    assert (out[gi < 0] == 0).all()
    dout = torch.randn(ref.shape, dtype=torch.float64)
    grads = torch.autograd.grad(out, (qg, kg, vg), dout.float())
    grads_ref = torch.autograd.grad(ref, (qg, kg, vg), dout)
    for name, g, gr in zip(("q_global", "k_global", "v_global"), grads, grads_ref):
        torch.testing.assert_close(
            g.double(), gr.double(), atol=1e-4, rtol=0, msg=lambda m, name=name: f"d{name}: {m}"
        )


def test_no_global_slots_and_empty_batch():
    """G = 0 slots (a global mask with no True), and B = 0."""
    b, n, h, d = 2, 20, 2, 8
    fused, (q, k, v, qg, kg, vg) = fused_projections(b, n, h, d)
    gm = torch.zeros(b, n, dtype=torch.bool)
    out = lk.longformer_attention(
        q, k, v, 3, global_mask=gm, q_global=qg, k_global=kg, v_global=vg, backend="cpu"
    )
    ref = oracle.dense_longformer_attention(q, k, v, 3)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=0)
    out.sum().backward()
    assert torch.isfinite(fused.grad).all()
    assert (fused.grad[:, :, 3:] == 0).all()  # the global projections get an exact zero gradient
    empty = torch.randn(0, n, h, d, requires_grad=True)
    out = lk.banded_attention(empty, empty, empty, 3, backend="cpu")
    assert out.shape == empty.shape
    out.sum().backward()


# ----------------------------------------------------------------------------------------------------
# strides, determinism, threads, dtypes, compile
# ----------------------------------------------------------------------------------------------------


def test_strided_views_are_read_in_place():
    """Views of a fused (B, N, 6, H, D) projection and a (B, H, N, D) layout equal contiguous copies."""
    b, n, h, d = 2, 70, 3, 16
    fused, views = fused_projections(b, n, h, d, requires_grad=False)
    gm, pm = global_mask(b, n, "scattered"), padding_mask(b, n, "tail")
    ref = longformer_layer([x.contiguous() for x in views], 9, gm, pm, "cpu")
    assert torch.equal(longformer_layer(views, 9, gm, pm, "cpu"), ref)
    bhnd = [x.transpose(1, 2).contiguous().transpose(1, 2) for x in views]
    assert bhnd[0].stride(1) == d and bhnd[0].stride(2) == n * d
    assert torch.equal(longformer_layer(bhnd, 9, gm, pm, "cpu"), ref)


def test_backward_is_deterministic_across_runs_and_threads():
    b, n, h, d = 2, 600, 2, 32  # the banded backward runs 2 segments per (b, h)
    fused, views = fused_projections(b, n, h, d)
    gm, pm = global_mask(b, n, "scattered"), padding_mask(b, n, "tail")
    dout = torch.randn(b, n, h, d)
    threads = torch.get_num_threads()
    results = []
    try:
        for nt in (threads, threads, 1, 3):
            torch.set_num_threads(nt)
            out = longformer_layer(views, 13, gm, pm, "cpu")
            (g,) = torch.autograd.grad(out, fused, dout)
            results.append((out, g))
    finally:
        torch.set_num_threads(threads)
    for out, g in results[1:]:
        assert torch.equal(out, results[0][0])
        assert torch.equal(g, results[0][1])


def test_float64_is_rejected():
    """float64 is not a kernel dtype: TypeError from the frontend and from the backend module itself."""
    q = torch.randn(1, 8, 1, 4, dtype=torch.float64)
    with pytest.raises(TypeError, match="float64"):
        lk.banded_attention(q, q, q, 2, backend="cpu")
    flags = torch.zeros(1, 8, dtype=torch.int8)
    with pytest.raises(TypeError, match="float64"):
        cpu.banded_attention(q, q, q, 2, flags, None, 0.5)
    with pytest.raises(TypeError, match="float64"):
        cpu.global_attention(q[:, :1], q, q, torch.zeros(1, 1, dtype=torch.int32), flags, 0.5)


def test_non_contiguous_upstream_gradient():
    """Autograd may hand the backward an expanded or transposed gradient; it is made row-contiguous."""
    b, n, h, d = 1, 40, 2, 8
    fused, (q, k, v) = fused_projections(b, n, h, d, count=3)
    gi = lk.global_indices(global_mask(b, n, "first"))
    out = lk.banded_attention(q, k, v, 4, global_idx=gi, backend="cpu")
    dout = torch.randn(b, n, d, h).transpose(-1, -2)  # stride(-1) != 1
    (g,) = torch.autograd.grad(out, fused, dout, retain_graph=True)
    (g_ref,) = torch.autograd.grad(out, fused, dout.contiguous())
    assert torch.equal(g, g_ref)


@pytest.mark.no_nan_poison
def test_torch_compile_fullgraph():
    """The ops are custom ops with fake implementations and registered autograd: one graph, same numbers."""
    b, n, h, d, w = 2, 37, 2, 16, 6
    fused, _ = fused_projections(b, n, h, d)
    gi = lk.global_indices(global_mask(b, n, "scattered"), max_global=16)
    flags = key_flags(b, n, fused.device, padding_mask(b, n, "tail"), gi)

    def layer(fused):
        q, k, v, qg, kg, vg = fused.unbind(2)
        out = cpu.banded_attention(q, k, v, w, flags, gi, 0.25)
        gout = cpu.global_attention(gather_rows(qg, gi), kg, vg, gi, flags, 0.25)
        return out.sum() + (gout * gout).sum()

    torch._dynamo.reset()
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    loss = compiled(fused)
    (grad,) = torch.autograd.grad(loss, fused)
    loss_e = layer(fused)
    (grad_e,) = torch.autograd.grad(loss_e, fused)
    assert torch.equal(loss, loss_e)
    assert torch.equal(grad, grad_e)


def test_auto_prefers_cpu_backend():
    from led_kernels.backends import choose_backend

    assert choose_backend("auto", torch.device("cpu"), torch.float32, 64) is cpu
    assert lk.available_backends()["cpu"].available


def test_matches_transformers():
    """``backend="cpu"`` passes the Hugging Face LEDEncoderSelfAttention parity check on its whole case grid.

    Each case is reseeded as the test-wide fixture reseeds each parametrized case of
    tests/test_transformers_parity.py, so the cpu backend sees exactly the inputs the torch backend is
    checked on. (The gradients' bound, 5e-5 plus 1e-5 of their magnitude, which reaches ~50 on the weights
    at N=129, is a few times the fp32 noise of the summation order: with 5e-5 alone, other seeds, or this
    backend's vector width on another CPU, exceeded it by up to 1e-5.)
    """
    pytest.importorskip("transformers")
    from test_transformers_parity import _case_list, _compare

    for n, window, gpat, ppat in _case_list():
        random.seed(0)
        torch.manual_seed(0)
        _compare(n, window, gpat, ppat, backend="cpu")
