"""Input builders shared by the tests: random projections, global and padding patterns."""

from __future__ import annotations

import torch

import led_kernels as lk

GLOBAL_PATTERNS = ("none", "first", "scattered", "all")


def global_mask(batch: int, n: int, pattern: str, device="cpu") -> torch.Tensor | None:
    """(B, N) bool, or None for 'none'. Batch elements get different counts where possible."""
    if pattern == "none":
        return None
    mask = torch.zeros(batch, n, dtype=torch.bool, device=device)
    if pattern == "first":
        mask[:, 0] = True
    elif pattern == "scattered":
        for b in range(batch):
            step = 3 + 2 * b
            mask[b, b % n :: step] = True
            mask[b, n - 1] = True
    elif pattern == "all":
        mask[:] = True
    else:
        raise ValueError(pattern)
    return mask


def padding_mask(batch: int, n: int, pattern: str, device="cpu") -> torch.Tensor | None:
    """'none'; 'tail': the last element loses its last third; 'full': the last element is all padding."""
    if pattern == "none":
        return None
    mask = torch.zeros(batch, n, dtype=torch.bool, device=device)
    if pattern == "tail":
        mask[-1, n - n // 3 :] = True
    elif pattern == "full":
        mask[-1, :] = True
    else:
        raise ValueError(pattern)
    return mask


def fused_projections(batch, n, heads, dim, count=6, dtype=torch.float32, device="cpu", requires_grad=True):
    """``count`` (B, N, H, D) views of one fused (B, N, count, H, D) tensor, as a fused QKV linear makes.

    Returns the fused leaf (for the gradients) and the list of views.
    """
    fused = torch.randn(batch, n, count, heads, dim, dtype=dtype, device=device)
    fused.requires_grad_(requires_grad)
    return fused, list(fused.unbind(2))


def longformer_layer(views, window, global_mask, padding_mask, backend):
    """``lk.longformer_attention`` over six projections (q, k, v, q_global, k_global, v_global)."""
    q, k, v, qg, kg, vg = views
    return lk.longformer_attention(
        q,
        k,
        v,
        window,
        global_mask=global_mask,
        key_padding_mask=padding_mask,
        q_global=qg,
        k_global=kg,
        v_global=vg,
        backend=backend,
    )


def spread_masks(b: int, n: int, n_global: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N) global mask with n_global tokens spread over the sequence, and a padding mask that pads
    the last batch element's tail (its last seventh)."""
    gm = torch.zeros(b, n, dtype=torch.bool, device=device)
    if n_global:
        gm[:, torch.linspace(0, n - 1, n_global).long()] = True
    pm = torch.zeros(b, n, dtype=torch.bool, device=device)
    pm[-1, n - n // 7 :] = True
    return gm, pm


def layer_errors_vs_fp64(backend, b, n, h, d, window, n_global, dtype, device="cuda"):
    """The whole layer on ``backend`` and on the ``torch`` backend, both in ``dtype``, against the fp64
    ``torch`` backend (the oracle at lengths a dense one cannot hold), with :func:`spread_masks`.

    Returns ``{backend: (output error, gradient error), "torch": (...)}`` as max abs errors over the
    output and the fused projection's gradient; asserts both runs are finite.
    """
    fused64, views64 = fused_projections(b, n, h, d, dtype=torch.float64, device=device)
    gm, pm = spread_masks(b, n, n_global, device)
    ref = longformer_layer(views64, window, gm, pm, "torch")
    grad_out = torch.randn_like(ref)
    (ref_grad,) = torch.autograd.grad(ref, fused64, grad_out)
    results = {}
    for name in (backend, "torch"):
        fused = fused64.detach().to(dtype).requires_grad_()
        out = longformer_layer(list(fused.unbind(2)), window, gm, pm, name)
        (grad,) = torch.autograd.grad(out, fused, grad_out.to(dtype))
        assert torch.isfinite(out).all() and torch.isfinite(grad).all(), name
        out_err = (out.double() - ref).abs().max().item()
        results[name] = (out_err, (grad.double() - ref_grad).abs().max().item())
    return results
