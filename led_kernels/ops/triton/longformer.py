"""The whole layer on the Triton backend: kernel A for every row, then kernel B for the rows of the
global queries, as one autograd Function over two registered ops (forward and backward).

Composing the two public functions (``banded_attention`` then ``global_attention``, then scattering
B's rows into A's output) costs a second key-flag preprocessing, a gather and a scatter of the
output, their backward, and autograd additions of the gradients when both kernels share q, k, v. Here:

- forward: one ``prep``; kernel A writes every row and stores lse = +inf at the global rows (taking
  them out of its own backward); kernel B reads its q rows at the global positions and writes its
  output straight into A's output there.
- backward: kernel A's backward (its delta pass, dQ, dK/dV; the global rows drop out through their
  lse); one launch gathers kernel B's slot rows of q and dO with their delta; kernel B's dK/dV are
  added in place to A's when the projections are shared (else written to their own tensors), and its
  dQ rows are written at the global rows.

Deterministic: no atomics, every element has one writer per launch and the launches are ordered on
one stream.
"""

from __future__ import annotations

import torch

from . import _common
from ._common import bwd_delta, check_head_dim, check_scale, launch_prep
from ._launch import call_op
from .banded import launch_band_bwd, launch_band_fwd
from .global_rows import gather_slots, launch_global_bwd, launch_global_fwd

# ----------------------------------------------------------------------------------------------------
# registered ops
# ----------------------------------------------------------------------------------------------------


@torch.library.custom_op("led_kernels::triton_longformer_fwd", mutates_args=())
def triton_longformer_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_global: torch.Tensor,
    k_global: torch.Tensor,
    v_global: torch.Tensor,
    key_flags: torch.Tensor,
    global_idx: torch.Tensor,
    window: int,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> out (B, N, H, D), lse of kernel A (B, H, N), lse of kernel B (B, H, G), and the prep outputs
    (cum_excl, cum_pad, bounds) that the backward reuses."""
    bsz, n, h, d = q.shape
    g = global_idx.shape[1]
    dev = q.device
    out = _common.empty((bsz, n, h, d), q.dtype, dev)
    lse = _common.empty((bsz, h, n), torch.float32, dev)
    glse = _common.empty((bsz, h, g), torch.float32, dev)
    cum_excl, cum_pad, bounds = launch_prep(key_flags, global_idx)
    if out.numel() == 0:
        return out, lse.fill_(float("inf")), glse.fill_(float("inf")), cum_excl, cum_pad, bounds
    launch_band_fwd(q, k, v, key_flags, global_idx, cum_excl, bounds, window, scale, out, lse, True)
    if g > 0:
        launch_global_fwd(
            q_global, k_global, v_global, global_idx, key_flags, cum_pad, bounds, scale, out, glse, True
        )
    return out, lse, glse, cum_excl, cum_pad, bounds


@triton_longformer_fwd.register_fake
def _(q, k, v, q_global, k_global, v_global, key_flags, global_idx, window, scale):
    bsz, n, h, d = q.shape
    g = global_idx.shape[1]
    return (
        q.new_empty((bsz, n, h, d)),
        q.new_empty((bsz, h, n), dtype=torch.float32),
        q.new_empty((bsz, h, g), dtype=torch.float32),
        key_flags.new_empty((bsz, n + 1), dtype=torch.int32),
        key_flags.new_empty((bsz, n + 1), dtype=torch.int32),
        key_flags.new_empty((bsz, 4), dtype=torch.int32),
    )


def _global_grads_like(q_global, k_global, v_global, shared: bool):
    if shared:  # folded into dq, dk, dv: empty placeholders (an op's outputs may not alias)
        return tuple(x.new_empty((0,)) for x in (q_global, k_global, v_global))
    # dQ_global is zero except at the global rows; dK/dV_global get every row written
    return (
        torch.zeros(q_global.shape, dtype=q_global.dtype, device=q_global.device),
        _common.empty(k_global.shape, k_global.dtype, k_global.device),
        _common.empty(v_global.shape, v_global.dtype, v_global.device),
    )


@torch.library.custom_op("led_kernels::triton_longformer_bwd", mutates_args=())
def triton_longformer_bwd(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_global: torch.Tensor,
    k_global: torch.Tensor,
    v_global: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    glse: torch.Tensor,
    key_flags: torch.Tensor,
    global_idx: torch.Tensor,
    cum_excl: torch.Tensor,
    cum_pad: torch.Tensor,
    bounds: torch.Tensor,
    window: int,
    scale: float,
    shared: bool,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> dq, dk, dv (B, N, H, D) and, unless ``shared`` (q_global is q, ...: their gradient is in dq,
    dk, dv), dq_global, dk_global, dv_global (B, N, H, D); 0-element placeholders when shared."""
    bsz, n, h, d = q.shape
    g = global_idx.shape[1]
    dev = q.device
    dq = _common.empty((bsz, n, h, d), q.dtype, dev)
    dk = _common.empty((bsz, n, h, d), k.dtype, dev)
    dv = _common.empty((bsz, n, h, d), v.dtype, dev)
    dqg, dkg, dvg = _global_grads_like(q_global, k_global, v_global, shared)
    if dq.numel() == 0:
        return dq, dk, dv, dqg, dkg, dvg
    delta = bwd_delta(out, dout)
    launch_band_bwd(
        dout, q, k, v, lse, delta, key_flags, global_idx, cum_excl, bounds, window, scale, dq, dk, dv
    )
    if g == 0:
        if not shared:
            dkg.zero_()
            dvg.zero_()
        return dq, dk, dv, dqg, dkg, dvg
    q_rows, dout_rows, delta_rows = gather_slots(q_global, global_idx, key_flags, dout, out)
    targets = (dq, dk, dv) if shared else (dqg, dkg, dvg)
    launch_global_bwd(
        dout_rows, q_rows, k_global, v_global, glse, delta_rows, global_idx, key_flags, cum_pad, bounds,
        scale, *targets, dq_by_index=True, accumulate_kv=shared,
    )  # fmt: skip
    return dq, dk, dv, dqg, dkg, dvg


@triton_longformer_bwd.register_fake
def _(dout, q, k, v, q_global, k_global, v_global, out, lse, glse, key_flags, global_idx, cum_excl,
      cum_pad, bounds, window, scale, shared):  # fmt: skip
    grads = [x.new_empty(x.shape) for x in (q, k, v)]
    if shared:
        grads += [x.new_empty((0,)) for x in (q_global, k_global, v_global)]
    else:
        grads += [x.new_empty(x.shape) for x in (q_global, k_global, v_global)]
    return tuple(grads)


# ----------------------------------------------------------------------------------------------------
# autograd + entry point
# ----------------------------------------------------------------------------------------------------


class LongformerAttentionFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, q_global, k_global, v_global, window, key_flags, global_idx, scale, shared):
        out, lse, glse, cum_excl, cum_pad, bounds = call_op(
            triton_longformer_fwd, q, k, v, q_global, k_global, v_global, key_flags, global_idx, window, scale
        )
        ctx.save_for_backward(
            q,
            k,
            v,
            q_global,
            k_global,
            v_global,
            out,
            lse,
            glse,
            key_flags,
            global_idx,
            cum_excl,
            cum_pad,
            bounds,
        )
        ctx.window, ctx.scale, ctx.shared = window, scale, shared
        return out

    @staticmethod
    def backward(ctx, dout):
        if dout.stride(-1) != 1:
            dout = dout.contiguous()
        grads = call_op(triton_longformer_bwd, dout, *ctx.saved_tensors, ctx.window, ctx.scale, ctx.shared)
        dq, dk, dv, dqg, dkg, dvg = grads
        if ctx.shared:
            dqg = dkg = dvg = None
        return dq, dk, dv, dqg, dkg, dvg, None, None, None, None, None


def longformer_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_global: torch.Tensor | None,
    k_global: torch.Tensor | None,
    v_global: torch.Tensor | None,
    window: int,
    key_flags: torch.Tensor,
    global_idx: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """A whole Longformer/LED layer (kernels A and B), differentiable in all six projections.

    Args:
        q, k, v: (B, N, H, D) local projections (see ``banded_attention``).
        q_global, k_global, v_global: (B, N, H, D) global projections; None means the local one
            (all three None: one shared projection, whose gradients the kernels fold into q, k, v's).
        window, key_flags, global_idx, scale: as in ``banded_attention`` / ``global_attention``.

    Returns:
        (B, N, H, D): kernel A's rows, with the rows of valid global slots replaced by kernel B's.
    """
    check_head_dim(q.shape[-1])
    check_scale(scale)
    # one projection for both kernels: B's gradients are accumulated into A's in the kernels; when only
    # some global projections are given, the others are the local ones (autograd adds those gradients)
    shared = q_global is None and k_global is None and v_global is None
    q_global = q if q_global is None else q_global
    k_global = k if k_global is None else k_global
    v_global = v if v_global is None else v_global
    return LongformerAttentionFunction.apply(
        q, k, v, q_global, k_global, v_global, int(window), key_flags, global_idx, float(scale), shared
    )
