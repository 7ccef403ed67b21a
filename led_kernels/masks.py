"""Mask bookkeeping shared by every backend: global indices and per-key flags.

Kernels never see boolean masks directly. They get

- ``key_flags``: int8 (B, N), ``LOCAL`` (0), ``PADDING`` (1) or ``GLOBAL`` (2); padding wins when a
  position is both, as in Hugging Face (``attention_mask * (global_attention_mask + 1)``).
- ``global_idx``: int32 (B, G), each row the sorted global positions of one batch element, then -1.
  A slot is *valid* when its index is in [0, N) and the flag there is ``GLOBAL`` (so a global token
  that is also padding is ignored everywhere). An index outside [0, N) acts as -1 here and in every
  kernel: the public ops reject one where that check is free (see ``_validation``), and where it is
  not (compiled graphs, GPU tensors) it can neither read out of bounds nor change the result.

Both are built with a handful of elementwise/scatter ops and no host synchronisation, except
``global_indices(mask)`` without ``max_global``, which reads the largest count once.
"""

from __future__ import annotations

import torch

LOCAL, PADDING, GLOBAL = 0, 1, 2


def global_indices(global_mask: torch.Tensor, max_global: int | None = None) -> torch.Tensor:
    """Positions of the global tokens of each batch element, sorted, padded with -1.

    Args:
        global_mask: (B, N) bool, True where a token has global attention.
        max_global: the number of slots G to return. Give it to avoid the one host
            synchronisation that finding the batch's largest count needs (what
            ``torch.compile`` users pass). It must be at least the largest count; on CPU
            tensors that is checked, on GPU tensors it is checked asynchronously on the device.

    Returns:
        (B, G) int32: row b lists the positions where ``global_mask[b]`` is True in increasing
        order, followed by -1. Compute it once per forward and pass it to every layer.

    Example::

        >>> mask = torch.tensor([[True, False, True, False]])
        >>> global_indices(mask)
        tensor([[0, 2]], dtype=torch.int32)
        >>> global_indices(mask, max_global=3)
        tensor([[ 0,  2, -1]], dtype=torch.int32)
    """
    from led_kernels._validation import check_mask, check_max_global

    check_mask(global_mask, "global_mask")
    max_global = check_max_global(max_global)
    batch, n = global_mask.shape
    counts = global_mask.sum(dim=1)
    if max_global is None and global_mask.device.type == "meta":
        raise ValueError("global_indices of a meta global_mask needs max_global: its count cannot be read")
    if max_global is None:
        max_global = int(counts.max()) if batch > 0 and n > 0 else 0  # the one host sync
    elif global_mask.device.type == "cpu" and not torch.compiler.is_compiling():
        largest = int(counts.max()) if batch > 0 and n > 0 else 0
        if largest > max_global:
            raise ValueError(
                f"max_global={max_global} is smaller than the largest number of global tokens in a "
                f"batch element ({largest})"
            )
    elif batch > 0 and n > 0 and not torch.compiler.is_compiling():
        torch._assert_async((counts <= max_global).all(), "max_global is smaller than a row's global count")
    # rank of each global token within its row; non-global tokens (and any overflow) go to a
    # spill column G that is cut off afterwards, so the scatter needs no data-dependent shape.
    rank = torch.cumsum(global_mask.to(torch.int32), dim=1) - 1
    target = torch.where(global_mask & (rank < max_global), rank, torch.full_like(rank, max_global))
    positions = torch.arange(n, device=global_mask.device, dtype=torch.int32).expand(batch, n)
    out = torch.full((batch, max_global + 1), -1, dtype=torch.int32, device=global_mask.device)
    out.scatter_(1, target.long(), positions)
    return out[:, :max_global].contiguous()


def slot_targets(global_idx: torch.Tensor, n: int) -> torch.Tensor:
    """(B, G) int64: each slot's position, with -1 (and any index outside [0, N)) sent to N, a spill row
    (clamped to [-1, N], then -1 -> N)."""
    return global_idx.long().clamp(-1, n) % (n + 1)


def key_flags(
    batch: int,
    n: int,
    device: torch.device,
    key_padding_mask: torch.Tensor | None,
    global_idx: torch.Tensor | None,
) -> torch.Tensor:
    """(B, N) int8 per-key flags from the padding mask and the global indices."""
    flags = torch.zeros(batch, n + 1, dtype=torch.int8, device=device)
    if global_idx is not None and global_idx.shape[1] > 0:
        # -1 and out-of-range slots land in column n, which is cut off; few ops, since on a GPU each one
        # costs a launch on every layer's call
        flags.scatter_(1, slot_targets(global_idx, n), GLOBAL)
    flags = flags[:, :n]
    if key_padding_mask is not None:
        flags = flags.masked_fill(key_padding_mask, PADDING)
    return flags.contiguous()


def valid_global_slots(global_idx: torch.Tensor, flags: torch.Tensor) -> torch.Tensor:
    """(B, G) bool: the slot names a position that is global and not padding."""
    n = flags.shape[1]
    gathered = torch.gather(flags, 1, global_idx.long().clamp(0, max(n - 1, 0)))
    return (global_idx >= 0) & (global_idx < n) & (gathered == GLOBAL)


def gather_rows(x: torch.Tensor, global_idx: torch.Tensor) -> torch.Tensor:
    """x (B, N, H, D) -> (B, G, H, D): the rows named by global_idx (slot -1, or out of range, reads
    row 0 or N - 1)."""
    b, n, h, d = x.shape
    index = global_idx.long().clamp(0, max(n - 1, 0))[:, :, None, None].expand(b, global_idx.shape[1], h, d)
    return torch.gather(x, 1, index)


def scatter_rows(out: torch.Tensor, rows: torch.Tensor, global_idx: torch.Tensor, valid: torch.Tensor):
    """Copy of out (B, N, H, D) with rows (B, G, H, D) written at the valid global positions."""
    b, n, h, d = out.shape
    target = torch.where(valid, global_idx.long(), torch.full_like(global_idx, n, dtype=torch.long))
    spill = out.new_zeros(b, 1, h, d)  # invalid slots land here and are cut off
    extended = torch.cat([out, spill], dim=1)
    extended = extended.scatter(1, target[:, :, None, None].expand_as(rows), rows)
    return extended[:, :n]


def place_rows(rows: torch.Tensor, targets: torch.Tensor, n: int) -> torch.Tensor:
    """rows (B, G, H, D) -> (B, N, H, D) holding row s at position targets[b, s] (:func:`slot_targets`).

    The other positions are left unwritten (``torch.empty``): only for kernels that read the rows of
    valid global slots alone (the layer ops of the ``triton`` and ``cuda`` backends), so placing the G
    rows costs one scatter and no fill of N rows.
    """
    b, g, h, d = rows.shape
    placed = rows.new_empty(b, n + 1, h, d)
    placed.scatter_(1, targets[:, :, None, None].expand(b, g, h, d), rows)
    return placed[:, :n]
