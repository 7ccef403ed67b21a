"""The ``triton`` backend on a GPU (marker ``gpu``): every dtype and head dim, long sequences.

The fp64 ``torch`` backend (itself checked against the dense oracle in test_reference.py) is the
oracle here, since a dense N x N oracle does not fit at N = 16384. Low precision follows
FlashAttention's rule: the kernel's error against the fp64 result is at most twice the error of the
``torch`` backend run in the same dtype (plus a small absolute slack for values near 0), never NaN.
"""

from __future__ import annotations

import pytest
import torch
from cases import fused_projections, longformer_layer

pytestmark = pytest.mark.gpu

DTYPES = [torch.float16, torch.bfloat16, torch.float32]


def _masks(b, n, n_global, device):
    gm = torch.zeros(b, n, dtype=torch.bool, device=device)
    if n_global:
        gm[:, torch.linspace(0, n - 1, n_global).long()] = True
    pm = torch.zeros(b, n, dtype=torch.bool, device=device)
    pm[-1, n - n // 7 :] = True  # the last element is padded at its tail
    return gm, pm


def _errors(b, n, h, d, window, n_global, dtype):
    device = "cuda"
    fused64, views64 = fused_projections(b, n, h, d, dtype=torch.float64, device=device)
    gm, pm = _masks(b, n, n_global, device)
    ref = longformer_layer(views64, window, gm, pm, "torch")
    grad_out = torch.randn_like(ref)
    (ref_grad,) = torch.autograd.grad(ref, fused64, grad_out)

    results = {}
    for backend in ("triton", "torch"):
        fused = fused64.detach().to(dtype).requires_grad_()
        out = longformer_layer(list(fused.unbind(2)), window, gm, pm, backend)
        (grad,) = torch.autograd.grad(out, fused, grad_out.to(dtype))
        assert torch.isfinite(out).all() and torch.isfinite(grad).all(), backend
        results[backend] = (
            (out.double() - ref).abs().max().item(),
            (grad.double() - ref_grad).abs().max().item(),
        )
    return results


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("head_dim", [16, 32, 64, 128])
def test_dtypes_and_head_dims(dtype, head_dim):
    errs = _errors(2, 1000, 3, head_dim, 100, 3, dtype)
    (out_t, grad_t), (out_r, grad_r) = errs["triton"], errs["torch"]
    slack = 1e-4 if dtype == torch.float32 else 1e-3
    assert out_t <= 2 * out_r + slack, errs
    assert grad_t <= 2 * grad_r + slack, errs


@pytest.mark.parametrize("n,window,n_global", [(4097, 256, 1), (8192, 512, 64), (16384, 512, 1)])
def test_long_sequences_bf16(n, window, n_global):
    errs = _errors(1, n, 2, 64, window, n_global, torch.bfloat16)
    (out_t, grad_t), (out_r, grad_r) = errs["triton"], errs["torch"]
    assert out_t <= 2 * out_r + 1e-3, errs
    assert grad_t <= 2 * grad_r + 1e-3, errs


def test_backward_is_bitwise_deterministic_on_gpu():
    fused, views = fused_projections(1, 4096, 4, 64, dtype=torch.bfloat16, device="cuda")
    gm, pm = _masks(1, 4096, 8, "cuda")
    grads = []
    for _ in range(2):
        out = longformer_layer(views, 256, gm, pm, "triton")
        (g,) = torch.autograd.grad(out, fused, torch.ones_like(out))
        grads.append(g)
    assert torch.equal(grads[0], grads[1])
