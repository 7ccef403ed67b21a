"""The ``triton`` backend on a GPU (marker ``gpu``): every dtype and head dim, long sequences.

The fp64 ``torch`` backend (itself checked against the dense oracle in test_reference.py) is the
oracle here, since a dense N x N oracle does not fit at N = 16384. Low precision follows
FlashAttention's rule: the kernel's error against the fp64 result is at most twice the error of the
``torch`` backend run in the same dtype (plus a small absolute slack for values near 0), never NaN.
"""

from __future__ import annotations

import pytest
import torch
from cases import fused_projections, layer_errors_vs_fp64, longformer_layer, spread_masks

pytestmark = pytest.mark.gpu

DTYPES = [torch.float16, torch.bfloat16, torch.float32]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("head_dim", [16, 32, 64, 128])
def test_dtypes_and_head_dims(dtype, head_dim):
    errs = layer_errors_vs_fp64("triton", 2, 1000, 3, head_dim, 100, 3, dtype)
    (out_t, grad_t), (out_r, grad_r) = errs["triton"], errs["torch"]
    slack = 1e-4 if dtype == torch.float32 else 1e-3
    assert out_t <= 2 * out_r + slack, errs
    assert grad_t <= 2 * grad_r + slack, errs


@pytest.mark.parametrize("n,window,n_global", [(4097, 256, 1), (8192, 512, 64), (16384, 512, 1)])
def test_long_sequences_bf16(n, window, n_global):
    errs = layer_errors_vs_fp64("triton", 1, n, 2, 64, window, n_global, torch.bfloat16)
    (out_t, grad_t), (out_r, grad_r) = errs["triton"], errs["torch"]
    assert out_t <= 2 * out_r + 1e-3, errs
    assert grad_t <= 2 * grad_r + 1e-3, errs


def test_backward_is_bitwise_deterministic_on_gpu():
    fused, views = fused_projections(1, 4096, 4, 64, dtype=torch.bfloat16, device="cuda")
    gm, pm = spread_masks(1, 4096, 8, "cuda")
    grads = []
    for _ in range(2):
        out = longformer_layer(views, 256, gm, pm, "triton")
        (g,) = torch.autograd.grad(out, fused, torch.ones_like(out))
        grads.append(g)
    assert torch.equal(grads[0], grads[1])
