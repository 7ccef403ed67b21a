"""The ``torch`` backend: exact Longformer/LED attention in plain PyTorch, O(N·w) memory.

This is the reference every kernel is compared with and the fallback that runs anywhere. It walks
the sequence in query blocks of 64-256 rows (see ``_block_rows``); a block attends the keys of its
band (a slice of ``k``/``v``, no copy) plus the gathered global keys, under one float32 softmax. Each
block runs under activation checkpointing when gradients are needed, so autograd keeps only the
inputs and recomputes one block's scores at a time in the backward: memory stays
O(N·(H·D) + block·(2w + G)) instead of Hugging Face's N x (2w+1) score matrices.

Precision follows the usual low-precision recipe (and so is the baseline for the kernels' error
bound): QK^T and PV in the input dtype (fp32 accumulation inside the matmul), scale, masking and
softmax in float32, probabilities cast to the input dtype before PV.
"""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from led_kernels.masks import GLOBAL, LOCAL, PADDING, gather_rows, valid_global_slots

# Query rows per block: a block attends BLOCK_M + 2w band keys, so small blocks waste less work
# (BLOCK_M / (2w+1)), while large ones pay the per-block costs (Python, slicing, recomputation)
# fewer times. Scaling with w balances the two; see _block_rows.
MIN_BLOCK_M, MAX_BLOCK_M = 64, 256
GLOBAL_BLOCK = 64  # global query rows per block in the dense global rows


def _attend(q_blk, keys, values, allowed, scale: float) -> torch.Tensor:
    # q_blk [B, M, H, D], keys/values [B, K, H, D], allowed [B, 1, M, K] -> [B, M, H, D]
    softmax_dtype = torch.promote_types(q_blk.dtype, torch.float32)  # fp32, or fp64 for fp64 inputs
    scores = torch.einsum("bmhd,bkhd->bhmk", q_blk, keys).to(softmax_dtype)
    # in place: neither op's backward needs the scores, and the block's largest tensor is not copied
    scores = scores.mul_(scale).masked_fill_(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    # a row with nothing to attend is all -inf: softmax gives NaN there; such rows output 0. (Their
    # NaN never reaches a gradient: every entry of the row is masked, and masked_fill_ zeroes it.)
    probs = probs.masked_fill(~allowed.any(dim=-1, keepdim=True), 0.0)
    return torch.einsum("bhmk,bkhd->bmhd", probs.to(values.dtype), values)


def _banded_block(
    q_blk, k_band, v_band, k_glob, v_glob, q_flags, band_flags, glob_valid, start, band_start, window, scale
):
    # q_blk [B, M, H, D]; k_band/v_band [B, K, H, D] = rows band_start..band_start+K;
    # k_glob/v_glob [B, G, H, D]; q_flags [B, M]; band_flags [B, K]; glob_valid [B, G]
    m, k = q_blk.shape[1], k_band.shape[1]
    rows = torch.arange(start, start + m, device=q_blk.device)
    cols = torch.arange(band_start, band_start + k, device=q_blk.device)
    in_band = (rows[:, None] - cols[None, :]).abs() <= window  # [M, K]
    allowed = in_band[None] & (band_flags == LOCAL)[:, None, :]  # [B, M, K]
    keys, values = k_band, v_band
    if k_glob is not None:
        allowed = torch.cat([allowed, glob_valid[:, None, :].expand(-1, m, -1)], dim=2)
        keys, values = torch.cat([k_band, k_glob], dim=1), torch.cat([v_band, v_glob], dim=1)
    allowed = allowed & (q_flags != PADDING)[:, :, None]  # padding queries attend nothing -> 0
    return _attend(q_blk, keys, values, allowed[:, None], scale)


def _block_rows(window: int) -> int:
    rows = MIN_BLOCK_M
    while rows < min(window, MAX_BLOCK_M):
        rows *= 2
    return rows


def _run(fn, *args):
    if torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args):
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


def banded_attention(q, k, v, window: int, key_flags, global_idx, scale: float) -> torch.Tensor:
    """Kernel A semantics: every row attends its band minus global/padded keys, plus the global keys."""
    b, n, h, d = q.shape
    if q.numel() == 0:
        return q * 0
    k_glob = v_glob = glob_valid = None
    if global_idx is not None and global_idx.shape[1] > 0:
        glob_valid = valid_global_slots(global_idx, key_flags)
        k_glob, v_glob = gather_rows(k, global_idx), gather_rows(v, global_idx)
    blocks = []
    block_m = _block_rows(window)
    for start in range(0, n, block_m):
        end = min(n, start + block_m)
        band_start, band_end = max(0, start - window), min(n, end + window)
        blocks.append(
            _run(
                _banded_block,
                q[:, start:end],
                k[:, band_start:band_end],
                v[:, band_start:band_end],
                k_glob,
                v_glob,
                key_flags[:, start:end],
                key_flags[:, band_start:band_end],
                glob_valid,
                start,
                band_start,
                window,
                scale,
            )
        )
    return torch.cat(blocks, dim=1)


def _global_block(q_blk, k, v, key_flags, row_valid, scale):
    # q_blk [B, M, H, D] global query rows; k/v [B, N, H, D]; row_valid [B, M]
    allowed = (key_flags != PADDING)[:, None, :] & row_valid[:, :, None]  # [B, M, N]
    return _attend(q_blk, k, v, allowed[:, None], scale)


def global_attention(q_global, k_global, v_global, global_idx, key_flags, scale: float) -> torch.Tensor:
    """Kernel B semantics: each valid global slot attends every non-padded key; invalid slots give 0."""
    g = q_global.shape[1]
    if q_global.numel() == 0 or k_global.shape[1] == 0:
        return q_global * 0
    row_valid = valid_global_slots(global_idx, key_flags)
    blocks = [
        _run(
            _global_block,
            q_global[:, start : start + GLOBAL_BLOCK],
            k_global,
            v_global,
            key_flags,
            row_valid[:, start : start + GLOBAL_BLOCK],
            scale,
        )
        for start in range(0, g, GLOBAL_BLOCK)
    ]
    return torch.cat(blocks, dim=1)


__all__ = ["banded_attention", "global_attention", "GLOBAL", "LOCAL", "PADDING"]
