"""Argument plumbing shared by the backends whose kernels live in the compiled extension (``cpu``, ``cuda``):
the kernels take raw pointers and element strides, so tensors are brought to the layouts they read."""

from __future__ import annotations

import torch
from torch import Tensor


def strides3(t: Tensor) -> tuple[int, int, int]:
    """The (b, n, h) element strides of a (B, N, H, D) tensor whose last dimension is contiguous."""
    return t.stride(0), t.stride(1), t.stride(2)


def prepare_indices(key_flags: Tensor, global_idx: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """int8 contiguous key flags and int32 contiguous global indices (no-ops for what the frontend passes)."""
    key_flags = key_flags.to(torch.int8).contiguous()
    if global_idx is not None:
        global_idx = global_idx.to(torch.int32).contiguous()
    return key_flags, global_idx


def rows_last_dim_contiguous(t: Tensor) -> Tensor:
    """Upstream gradients may be expanded or transposed views; the kernels need stride(D) == 1."""
    return t if t.shape[-1] <= 1 or t.stride(-1) == 1 else t.contiguous()


__all__ = ["prepare_indices", "rows_last_dim_contiguous", "strides3"]
