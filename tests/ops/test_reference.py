"""The ``torch`` backend (led_kernels.ops.reference) against the dense oracle.

fp64: outputs and all six gradients to ~1e-12 and torch.autograd.gradcheck; fp32: 1e-5; fp16/bf16:
within a small multiple of the dtype's resolution and never NaN.
"""

from __future__ import annotations

import itertools

import oracle
import pytest
import torch
from cases import GLOBAL_PATTERNS, fused_projections, global_mask, padding_mask

import led_kernels as lk

SHAPES = [(1, 1, 1, 8), (2, 7, 2, 8), (2, 37, 3, 16), (1, 130, 2, 24)]  # (B, N, H, D): odd sizes
WINDOWS = [0, 1, 5, 64, 1000]


def _run_both(shape, window, gpat, ppat, dtype, backend="torch"):
    b, n, h, d = shape
    fused, (q, k, v, qg, kg, vg) = fused_projections(b, n, h, d, dtype=dtype)
    gm, pm = global_mask(b, n, gpat), padding_mask(b, n, ppat)
    out = lk.longformer_attention(
        q,
        k,
        v,
        window,
        global_mask=gm,
        key_padding_mask=pm,
        q_global=qg,
        k_global=kg,
        v_global=vg,
        backend=backend,
    )
    ref = oracle.dense_longformer_attention(q, k, v, window, pm, gm, qg, kg, vg)
    grad_out = torch.randn_like(ref)
    (grad,) = torch.autograd.grad(out, fused, grad_out.to(out.dtype))
    (grad_ref,) = torch.autograd.grad(ref, fused, grad_out)
    return out, ref, grad, grad_ref


@pytest.mark.parametrize("gpat", GLOBAL_PATTERNS)
@pytest.mark.parametrize("ppat", ["none", "tail", "full"])
@pytest.mark.parametrize("window", WINDOWS, ids=lambda w: f"w{w}")
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_longformer_fp64_matches_oracle(shape, window, ppat, gpat):
    out, ref, grad, grad_ref = _run_both(shape, window, gpat, ppat, torch.float64)
    torch.testing.assert_close(out, ref, atol=1e-12, rtol=0)
    torch.testing.assert_close(grad, grad_ref, atol=1e-11, rtol=0)


@pytest.mark.parametrize("gpat", GLOBAL_PATTERNS)
@pytest.mark.parametrize("window", [0, 3, 40], ids=lambda w: f"w{w}")
def test_longformer_fp32_matches_oracle(window, gpat):
    out, ref, grad, grad_ref = _run_both((2, 100, 2, 32), window, gpat, "tail", torch.float32)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(grad.double(), grad_ref.double(), atol=5e-5, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=str)
def test_low_precision_is_close_and_finite(dtype):
    out, ref, grad, grad_ref = _run_both((2, 90, 2, 16), 9, "scattered", "tail", dtype)
    assert torch.isfinite(out).all() and torch.isfinite(grad).all()
    eps = torch.finfo(dtype).eps
    assert (out.double() - ref).abs().max() < 8 * eps
    assert (grad.double() - grad_ref.double()).abs().max() < 64 * eps * grad_ref.abs().max().clamp(min=1)


def test_banded_and_global_ops_match_oracle():
    b, n, h, d = 2, 50, 2, 8
    _, (q, k, v, qg_full, kg, vg) = fused_projections(b, n, h, d, dtype=torch.float64)
    gm, pm = global_mask(b, n, "scattered"), padding_mask(b, n, "tail")
    gi = lk.global_indices(gm)
    flags = oracle.key_flags_from_masks(n, b, pm, gm, q.device)
    out = lk.banded_attention(q, k, v, 4, key_padding_mask=pm, global_idx=gi, backend="torch")
    torch.testing.assert_close(out, oracle.dense_banded_attention(q, k, v, 4, flags), atol=1e-12, rtol=0)
    qg = qg_full[:, : gi.shape[1]]  # any (B, G, H, D) rows
    gout = lk.global_attention(qg, kg, vg, gi, key_padding_mask=pm, backend="torch")
    ref = oracle.dense_global_attention(qg, kg, vg, gi, flags)
    torch.testing.assert_close(gout, ref, atol=1e-12, rtol=0)
    assert (gout[gi < 0] == 0).all()


@pytest.mark.parametrize("gpat", ["first", "scattered"])
def test_gradcheck(gpat):
    b, n, h, d = 2, 11, 1, 4
    inputs = [torch.randn(b, n, h, d, dtype=torch.float64, requires_grad=True) for _ in range(6)]
    gm, pm = global_mask(b, n, gpat), padding_mask(b, n, "tail")

    def layer(q, k, v, qg, kg, vg):
        return lk.longformer_attention(
            q,
            k,
            v,
            2,
            global_mask=gm,
            key_padding_mask=pm,
            q_global=qg,
            k_global=kg,
            v_global=vg,
            backend="torch",
        )

    assert torch.autograd.gradcheck(layer, inputs)


def test_padding_rows_are_zero_and_no_nan():
    b, n, h, d = 2, 20, 2, 8
    _, (q, k, v) = fused_projections(b, n, h, d, count=3)
    pm = padding_mask(b, n, "full")
    gm = global_mask(b, n, "first")
    out = lk.longformer_attention(q, k, v, 3, global_mask=gm, key_padding_mask=pm, backend="torch")
    assert torch.isfinite(out).all()
    assert (out[-1] == 0).all()
    out.sum().backward()


def test_window_beyond_length_is_dense():
    b, n, h, d = 1, 33, 2, 8
    _, (q, k, v) = fused_projections(b, n, h, d, count=3, dtype=torch.float64)
    dense = torch.nn.functional.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    ).transpose(1, 2)
    for window in (n - 1, n, 10 * n):
        out = lk.longformer_attention(q, k, v, window, backend="torch")
        torch.testing.assert_close(out, dense, atol=1e-12, rtol=0)


def test_backward_is_deterministic():
    fused, (q, k, v, qg, kg, vg) = fused_projections(2, 70, 2, 16)
    gm = global_mask(2, 70, "scattered")
    grads = []
    for _ in range(2):
        out = lk.longformer_attention(q, k, v, 5, global_mask=gm, q_global=qg, k_global=kg, v_global=vg)
        (g,) = torch.autograd.grad(out, fused, torch.ones_like(out))
        grads.append(g)
    assert torch.equal(grads[0], grads[1])


def test_shared_global_projection_default():
    """Without q/k/v_global the global rows use q, k, v (one shared projection)."""
    _, (q, k, v) = fused_projections(1, 25, 2, 8, count=3, dtype=torch.float64)
    gm = global_mask(1, 25, "scattered")
    out = lk.longformer_attention(q, k, v, 2, global_mask=gm)
    explicit = lk.longformer_attention(q, k, v, 2, global_mask=gm, q_global=q, k_global=k, v_global=v)
    assert torch.equal(out, explicit)


@pytest.mark.parametrize("window,gpat", list(itertools.product([1, 7], ["first", "all"])))
def test_precomputed_global_idx_equals_mask(window, gpat):
    _, (q, k, v) = fused_projections(2, 30, 2, 8, count=3, dtype=torch.float64)
    gm = global_mask(2, 30, gpat)
    by_mask = lk.longformer_attention(q, k, v, window, global_mask=gm)
    by_idx = lk.longformer_attention(q, k, v, window, global_idx=lk.global_indices(gm, max_global=31))
    # the extra -1 slots only add masked entries; the sum order changes, so not bitwise
    torch.testing.assert_close(by_mask, by_idx, atol=1e-14, rtol=0)
