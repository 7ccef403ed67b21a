"""The ``torch`` backend: exact Longformer/LED attention in plain PyTorch, O(N·w) memory.

This is the reference every kernel is compared with and the fallback that runs anywhere. It walks
the sequence in query blocks of 64-256 rows (see ``_block_rows``); a block attends the keys of its
band (a slice of ``k``/``v``, no per-block copy) plus the gathered global keys, under one float32
softmax. Each block runs under activation checkpointing when gradients are needed, so autograd keeps
only the inputs and recomputes one block's scores at a time in the backward: memory stays
O(N·(H·D) + block·(2w + G)) instead of Hugging Face's N x (2w+1) score matrices.

Precision follows the usual low-precision recipe (and so is the baseline for the kernels' error
bound): QK^T and PV in the input dtype (fp32 accumulation inside the matmul), scale, masking and
softmax in float32, probabilities cast to the input dtype before PV. In float16 the power-of-two
part of the scale multiplies q before QK^T (exact), so that the float16 scores saturate only where the
scaled scores would, as in Hugging Face's Longformer, which scales q first.

Non-finite inputs stay where they belong: a row of q, k or v holding a NaN or an inf changes only
the rows that attend it (they come out NaN); every other row is exactly what it would be without
it. A masked entry is a probability of exactly 0, and 0 * NaN is NaN, so neither the matmuls nor
their gradients may see the raw rows: each call zeroes the non-finite rows once (``_split_nonfinite``)
and sets the rows that attend one (or whose own query is one) to NaN afterwards (``_attend``).
"""

from __future__ import annotations

import math

import torch
from torch.utils.checkpoint import checkpoint

from led_kernels.masks import GLOBAL, LOCAL, PADDING, gather_rows, valid_global_slots

# Query rows per block: a block attends BLOCK_M + 2w band keys, so small blocks waste less work
# (BLOCK_M / (2w+1)), while large ones pay the per-block costs (Python, slicing, recomputation)
# fewer times. Scaling with w balances the two; see _block_rows.
MIN_BLOCK_M, MAX_BLOCK_M = 64, 256
GLOBAL_BLOCK = 64  # global query rows per block in the dense global rows


def _split_nonfinite(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x (B, L, H, D) -> (x with its non-finite rows zeroed, (B, L, H) bool: True on those rows).

    A row is non-finite when its float32 sum is (one pass, no temporary): it holds a NaN or an inf, or
    its values are so large (~1e38) that the sum overflows, where the scores would overflow anyway.
    """
    bad = ~torch.isfinite(x.sum(dim=-1, dtype=torch.float32))
    return torch.where(bad[..., None], 0.0, x), bad  # where: one pass (masked_fill clones first)


def _attend(q_blk, keys, values, allowed, scale: float, q_bad, kv_bad) -> torch.Tensor:
    # q_blk [B, M, H, D], keys/values [B, K, H, D] (finite), allowed [B, M, K] -> [B, M, H, D];
    # kv_bad [B, K, H] float: 1 where the original key or value row was not finite (_split_nonfinite);
    # q_bad [B, M, H] bool: the row's own query was not finite and it attends something
    softmax_dtype = torch.promote_types(q_blk.dtype, torch.float32)  # fp32, or fp64 for fp64 inputs
    if q_blk.dtype == torch.float16 and 0.0 < scale < 1.0:
        # float16 scores saturate at 65504: the power-of-two part of the scale goes into q before the
        # product (exact, as is its rounding after it), the rest (in [1, 2)) after it, so the scores
        # have the bits of scale * (q k^T) and overflow only where the scaled ones would
        mantissa, exponent = math.frexp(scale)
        q_blk, scale = q_blk * 2.0 ** (exponent - 1), 2.0 * mantissa
    scores = torch.einsum("bmhd,bkhd->bhmk", q_blk, keys).to(softmax_dtype)
    # in place: neither op's backward needs the scores, and the block's largest tensor is not copied
    scores = scores.mul_(scale).masked_fill_(~allowed[:, None], float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    # a row with nothing to attend is all -inf: softmax gives NaN there; such rows output 0. (Their
    # NaN never reaches a gradient: every entry of the row is masked, and masked_fill_ zeroes it.)
    probs = probs.masked_fill(~allowed.any(dim=-1)[:, None, :, None], 0.0)
    out = torch.einsum("bhmk,bkhd->bmhd", probs.to(values.dtype), values)
    # Rows that attend a non-finite key or value come out NaN. On the output, not the scores: a count
    # of such keys per row is a small matmul, a pass over the scores is not. A `where`, so that those
    # rows' gradients (NaN, if the loss saw them) stay out of the finite computation below them.
    reached = torch.bmm(allowed.to(kv_bad.dtype), kv_bad)  # [B, M, H]
    return torch.where(((reached > 0) | q_bad)[..., None], float("nan"), out)


def _banded_block(
    q_blk, k_band, v_band, k_glob, v_glob, q_flags, band_flags, glob_valid, start, band_start, window, scale,
    q_bad, band_bad, glob_bad,
):  # fmt: skip
    # q_blk [B, M, H, D]; k_band/v_band [B, K, H, D] = rows band_start..band_start+K;
    # k_glob/v_glob [B, G, H, D]; q_flags [B, M]; band_flags [B, K]; glob_valid [B, G];
    # q_bad [B, M, H], band_bad [B, K, H], glob_bad [B, G, H] (see _attend)
    m, k = q_blk.shape[1], k_band.shape[1]
    rows = torch.arange(start, start + m, device=q_blk.device)
    cols = torch.arange(band_start, band_start + k, device=q_blk.device)
    in_band = (rows[:, None] - cols[None, :]).abs() <= window  # [M, K]
    allowed = in_band[None] & (band_flags == LOCAL)[:, None, :]  # [B, M, K]
    keys, values, kv_bad = k_band, v_band, band_bad
    if k_glob is not None:
        allowed = torch.cat([allowed, glob_valid[:, None, :].expand(-1, m, -1)], dim=2)
        keys, values = torch.cat([k_band, k_glob], dim=1), torch.cat([v_band, v_glob], dim=1)
        kv_bad = torch.cat([band_bad, glob_bad], dim=1)
    allowed = allowed & (q_flags != PADDING)[:, :, None]  # padding queries attend nothing -> 0
    return _attend(q_blk, keys, values, allowed, scale, q_bad, kv_bad)


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
    q, q_bad = _split_nonfinite(q)
    k, k_bad = _split_nonfinite(k)
    v, v_bad = _split_nonfinite(v)
    kv_bad = (k_bad | v_bad).to(torch.float32)
    # every non-padded row attends something: itself (a local key in its own band) or, for a global
    # row, the global keys, itself among them
    q_bad = q_bad & (key_flags != PADDING)[:, :, None]
    k_glob = v_glob = glob_valid = glob_bad = None
    if global_idx is not None and global_idx.shape[1] > 0:
        glob_valid = valid_global_slots(global_idx, key_flags)
        k_glob, v_glob = gather_rows(k, global_idx), gather_rows(v, global_idx)
        slots = global_idx.long().clamp(0, n - 1)[:, :, None].expand(-1, -1, h)  # as gather_rows reads
        glob_bad = torch.gather(kv_bad, 1, slots)
    blocks = []
    block_m = _block_rows(window)
    # Loop over a block count, not range(0, n, block_m): under torch.compile with a dynamic length,
    # the count is all the graph specialises on, so a new length recompiles only when it changes the
    # number of blocks.
    for i in range((n + block_m - 1) // block_m):
        start = i * block_m
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
                q_bad[:, start:end],
                kv_bad[:, band_start:band_end],
                glob_bad,
            )
        )
    return torch.cat(blocks, dim=1)


def _global_block(q_blk, k, v, key_flags, row_valid, scale, q_bad, kv_bad):
    # q_blk [B, M, H, D] global query rows; k/v [B, N, H, D]; row_valid [B, M]
    allowed = (key_flags != PADDING)[:, None, :] & row_valid[:, :, None]  # [B, M, N]
    return _attend(q_blk, k, v, allowed, scale, q_bad, kv_bad)


def global_attention(q_global, k_global, v_global, global_idx, key_flags, scale: float) -> torch.Tensor:
    """Kernel B semantics: each valid global slot attends every non-padded key; invalid slots give 0."""
    g = q_global.shape[1]
    if q_global.numel() == 0 or k_global.shape[1] == 0:
        return q_global * 0
    row_valid = valid_global_slots(global_idx, key_flags)
    q_global, q_bad = _split_nonfinite(q_global)
    k_global, k_bad = _split_nonfinite(k_global)
    v_global, v_bad = _split_nonfinite(v_global)
    kv_bad = (k_bad | v_bad).to(torch.float32)
    q_bad = q_bad & row_valid[:, :, None]  # a valid slot attends at least its own (global) key
    blocks = [
        _run(
            _global_block,
            q_global[:, start : start + GLOBAL_BLOCK],
            k_global,
            v_global,
            key_flags,
            row_valid[:, start : start + GLOBAL_BLOCK],
            scale,
            q_bad[:, start : start + GLOBAL_BLOCK],
            kv_bad,
        )
        for start in range(0, g, GLOBAL_BLOCK)
    ]
    return torch.cat(blocks, dim=1)


__all__ = ["banded_attention", "global_attention", "GLOBAL", "LOCAL", "PADDING"]
