"""Dense O(N^2) oracle for Longformer/LED attention, used only for checking.

It spells out the semantics of DESIGN section 2 as directly as possible: build the full
(N x N) boolean "may attend" matrix, take a masked softmax in float64 (or the input dtype
when ``upcast=False``), and overwrite the rows of global queries with their dense attention.
Everything here is per batch element and head, broadcast over both.
"""

from __future__ import annotations

import torch

LOCAL, PADDING, GLOBAL = 0, 1, 2


def key_flags_from_masks(
    n: int, batch: int, key_padding_mask: torch.Tensor | None, global_mask: torch.Tensor | None, device
) -> torch.Tensor:
    flags = torch.zeros(batch, n, dtype=torch.int8, device=device)
    if global_mask is not None:
        flags[global_mask] = GLOBAL
    if key_padding_mask is not None:
        flags[key_padding_mask] = PADDING  # padding wins over global
    return flags


def _masked_softmax_attend(q, k, v, allowed, scale, dtype):
    # q (B, M, H, D), k/v (B, N, H, D), allowed (B, M, N) bool -> (B, M, H, D)
    scores = torch.einsum("bmhd,bnhd->bhmn", q.to(dtype), k.to(dtype)) * scale
    scores = scores.masked_fill(~allowed[:, None], float("-inf"))
    row_max = scores.amax(-1, keepdim=True).detach()
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    e = torch.exp(scores - row_max)
    denom = e.sum(-1, keepdim=True)
    p = e / torch.where(denom == 0, torch.ones_like(denom), denom)
    return torch.einsum("bhmn,bnhd->bmhd", p, v.to(dtype))


def dense_banded_attention(q, k, v, window, key_flags, global_mask=None, scale=None, dtype=torch.float64):
    """Every non-padded query i: band keys {|i-j| <= w, local} plus every non-padded global key."""
    b, n, h, d = q.shape
    scale = d**-0.5 if scale is None else scale
    pos = torch.arange(n, device=q.device)
    band = (pos[:, None] - pos[None, :]).abs() <= window  # (N, N)
    is_local_key = key_flags == LOCAL  # (B, N)
    is_global_key = key_flags == GLOBAL
    allowed = (band[None] & is_local_key[:, None, :]) | is_global_key[:, None, :]
    allowed = allowed & (key_flags != PADDING)[:, :, None]  # padded queries attend nothing
    return _masked_softmax_attend(q, k, v, allowed, scale, dtype)


def dense_global_rows(q_global_full, k_global, v_global, key_flags, scale=None, dtype=torch.float64):
    """Every query (all N of them, full length): attend all non-padded keys. (B, N, H, D)."""
    b, n, h, d = q_global_full.shape
    scale = d**-0.5 if scale is None else scale
    allowed = (key_flags != PADDING)[:, None, :].expand(b, n, n)
    return _masked_softmax_attend(q_global_full, k_global, v_global, allowed, scale, dtype)


def dense_longformer_attention(
    q,
    k,
    v,
    window,
    key_padding_mask=None,
    global_mask=None,
    q_global=None,
    k_global=None,
    v_global=None,
    scale=None,
    dtype=torch.float64,
):
    """The whole layer: banded rows, then global rows (global projections) overwrite them."""
    b, n, h, d = q.shape
    flags = key_flags_from_masks(n, b, key_padding_mask, global_mask, q.device)
    out = dense_banded_attention(q, k, v, window, flags, scale=scale, dtype=dtype)
    if global_mask is None:
        return out
    qg = q if q_global is None else q_global
    kg = k if k_global is None else k_global
    vg = v if v_global is None else v_global
    gout = dense_global_rows(qg, kg, vg, flags, scale=scale, dtype=dtype)
    is_global_row = (flags == GLOBAL)[:, :, None, None]
    return torch.where(is_global_row, gout, out)


def dense_global_attention(
    q_global, k_global, v_global, global_idx, key_flags, scale=None, dtype=torch.float64
):
    """``global_attention`` semantics: slot s of batch b is row global_idx[b, s] (0 if -1 or padded)."""
    b, g, h, d = q_global.shape
    n = k_global.shape[1]
    scale = d**-0.5 if scale is None else scale
    allowed = (key_flags != PADDING)[:, None, :].expand(b, g, n)
    idx = global_idx.long()
    valid = idx >= 0
    row_flag = torch.gather(key_flags, 1, idx.clamp(min=0))
    valid = valid & (row_flag == GLOBAL)
    allowed = allowed & valid[:, :, None]
    return _masked_softmax_attend(q_global, k_global, v_global, allowed, scale, dtype)
