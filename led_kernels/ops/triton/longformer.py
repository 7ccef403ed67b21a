"""The whole layer on the Triton backend: kernel A for every row, then kernel B for the rows of the
global queries, as one autograd Function over two registered ops (forward and backward).

Composing the two public functions (``banded_attention`` then ``global_attention``, then scattering
B's rows into A's output) costs a second key-flag preprocessing, a gather and a scatter of the
output, their backward, and autograd additions of the gradients when both kernels share q, k, v. Here:

- forward: one ``prep``; kernel A writes every row and stores lse = +inf at the global rows (taking
  them out of its own backward); kernel B reads its q rows at the global positions and writes its
  output straight into A's output there. B's key chunks run as extra programs of A's launch
  (``_layer_fwd_kernel``) and only B's combine follows it (``LED_KERNELS_FUSED_FORWARD=0``: B in a
  launch of its own after A's).
- backward: kernel A's backward (its dQ pass, which also stores every row's delta, then dK/dV; the
  global rows drop out through their lse); kernel B's backward reads its rows of q, dO and delta in
  place at the global positions; its dK/dV are added in place to A's when the projections are shared
  (else written to their own tensors), and its dQ rows are written at the global rows.

Deterministic: no atomics, every element has one writer per launch and the launches are ordered on
one stream.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from led_kernels.ops._dispatch import apply_layer, global_grads_like, layer_function

from . import _common
from ._common import (
    block_d,
    check_head_dim,
    check_scale,
    dot_precision,
    launch_config,
    launch_prep,
    log2_scale,
    maybe_autotune,
    strides3,
)
from ._launch import launch
from .banded import GLOBAL_KEY_TILE, _band_fwd_program, launch_band_bwd, launch_band_fwd
from .global_rows import (
    _glob_fwd_program,
    _slot_config,
    launch_global_bwd,
    launch_global_combine,
    launch_global_fwd,
    partial_outputs,
)

#: kernel B's forward programs in kernel A's launch (``_layer_fwd_kernel``) instead of a launch of their
#: own after it: one launch fewer, and B's memory-bound sweep over the keys runs beside A's tiles. On an
#: H100 at N=16384, H=12, D=64, w=512 (benchmarks/results/h100-sxm-attention-fused-ab.log) the forward
#: took 0.234 ms against 0.252 at G=1 and 0.375 against 0.458 at G=64. ``LED_KERNELS_FUSED_FORWARD=0``
#: gives the two launches.
FUSED_FORWARD = os.environ.get("LED_KERNELS_FUSED_FORWARD", "1") != "0"

#: kernel B's key tile inside kernel A's launch, walked with a 2-deep pipeline (A's own depth is 3-4).
#: B's programs are latency-bound: a tile's cost is mostly its cross-warp row reductions and the
#: broadcast of P to every warp, not its size, so 128 keys halve B's trips per chunk. Their K/V ring
#: (2 x 2 x 128 rows) is then no bigger than A's (3-4 x 2 x 64 rows plus Q), so A keeps its programs per
#: SM at every autotune candidate (``benchmarks.inspect_kernels --arch 90 --globals 1 --autotune``).
#: Only with B's 16-row slot tile (up to 16 global tokens): at G=64 its 64 x 128 score tile made the
#: register-capped 8-warp candidate spill and serialise its wgmmas (C7512), so wider slot tiles keep 64
#: keys. ``LED_KERNELS_LAYER_KEY_TILE=64`` gives the earlier 64-key tile at A's pipeline depth.
LAYER_KEY_TILE = _common.env_count("LED_KERNELS_LAYER_KEY_TILE", 128)
if LAYER_KEY_TILE not in (64, 128):
    raise ValueError(f"LED_KERNELS_LAYER_KEY_TILE must be 64 or 128, got {LAYER_KEY_TILE}")

# ----------------------------------------------------------------------------------------------------
# the forward as one launch (kernel A's tiles and kernel B's key chunks), then B's combine
# ----------------------------------------------------------------------------------------------------


# tuned per number of global-key slot tiles too: the tile that suits one slot tile after the band walk
# need not suit four (on an H100 the forward at G=64 took 0.542 ms with the tile tuned at G=1, against
# 0.236 at G=1: benchmarks/results/h100-sxm-attention-ratios.log)
@maybe_autotune("band_fwd", extra_keys=("G_BUCKET",))
@triton.jit
def _layer_fwd_kernel(
    Q,
    K,
    V,
    Out,
    Lse,  # fp32 (B, H, N), log2 domain
    Flags,
    CumExcl,
    Bounds,
    GIdx,
    stride_qb,
    stride_qn,
    stride_qh,
    stride_kb,
    stride_kn,
    stride_kh,
    stride_vb,
    stride_vn,
    stride_vh,
    stride_ob,
    stride_on,
    stride_oh,
    QG,  # (B, N, H, D): kernel B reads its q rows at the global positions
    KG,
    VG,
    OPart,  # fp32 (B*H, S, G, BLOCK_D): kernel B's per-chunk outputs, merged by _glob_combine_kernel
    LsePart,  # fp32 (B*H, S, G)
    CumPad,
    stride_gqb,
    stride_gqn,
    stride_gqh,
    stride_gkb,
    stride_gkn,
    stride_gkh,
    stride_gvb,
    stride_gvn,
    stride_gvh,
    N,
    H,
    G,
    window,
    qk_scale,
    chunk,
    n_split,
    N_BUCKET,  # autotune key only
    W_BUCKET,  # autotune key only
    G_BUCKET,  # autotune key only: slot tiles of global keys, bucketed
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_G: tl.constexpr,
    DOT_PREC: tl.constexpr,
    SLOT_BLOCK: tl.constexpr,  # kernel B's slot tile
    KEY_BLOCK: tl.constexpr,  # kernel B's key tile (with A's 128-row tiles; else 64)
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    # per (batch, head): kernel A's query tiles, then kernel B's (slot tile, key chunk) programs, so
    # that B's memory-bound sweep over all keys runs beside A's compute-bound tiles instead of after
    pid = tl.program_id(0)
    pid_bh = tl.program_id(1)
    n_band = tl.cdiv(N, BLOCK_M)
    if pid < n_band:
        _band_fwd_program(
            pid, pid_bh, Q, K, V, Out, Lse, Flags, CumExcl, Bounds, GIdx,
            stride_qb, stride_qn, stride_qh, stride_kb, stride_kn, stride_kh, stride_vb, stride_vn,
            stride_vh, stride_ob, stride_on, stride_oh, N, H, G, window, qk_scale,
            HEAD_DIM, BLOCK_D, BLOCK_G, DOT_PREC, True, True, BLOCK_M, BLOCK_N,
        )  # fmt: skip
    else:
        # A's 64-row tiles hold fewer registers than B's 128-key ones would take (3 -> 2 programs per
        # SM at 64x64, 4 warps): B keeps 64 keys there (a chunk is a multiple of 128 keys). A 128-key
        # tile walks 2 deep, a 64-key one at A's depth (None: the launch's)
        j = pid - n_band
        _glob_fwd_program(
            j // n_split, j % n_split, n_split, pid_bh, QG, KG, VG, OPart, LsePart, Flags, CumPad, Bounds,
            GIdx, stride_gqb, stride_gqn, stride_gqh, stride_gkb, stride_gkn, stride_gkh, stride_gvb,
            stride_gvn, stride_gvh, stride_ob, stride_on, stride_oh, N, H, G, chunk, qk_scale,
            HEAD_DIM, BLOCK_D, DOT_PREC, False, True, SLOT_BLOCK,
            KEY_BLOCK if BLOCK_M >= 128 else min(KEY_BLOCK, 64),
            2 if BLOCK_M >= 128 and KEY_BLOCK > 64 else None,
        )  # fmt: skip


def launch_layer_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    q_global: torch.Tensor,
    k_global: torch.Tensor,
    v_global: torch.Tensor,
    key_flags: torch.Tensor,
    global_idx: torch.Tensor,
    cum_excl: torch.Tensor,
    cum_pad: torch.Tensor,
    bounds: torch.Tensor,
    window: int,
    scale: float,
    out: torch.Tensor,
    lse: torch.Tensor,
    glse: torch.Tensor,
) -> None:
    """The layer's forward in two launches (G > 0): kernel A's tiles with kernel B's key chunks, then
    B's combine, which writes the global rows of ``out`` (A wrote them first, with lse = +inf)."""
    bsz, n, h, d = q.shape
    g = global_idx.shape[1]
    dev = q.device
    bd = block_d(d)
    w = min(window, n)
    cfg = launch_config("band_fwd", d, dev, q.element_size(), autotuned=True)
    slot = _slot_config("glob_fwd", g, d, q_global)
    # B's key ring no bigger than A's tiles' (see LAYER_KEY_TILE): 128 keys 2 deep, or 64 at A's depth
    key_block = min(slot["BLOCK_N"], LAYER_KEY_TILE if slot["BLOCK_M"] <= 16 else 64)
    n_gtiles = _common.cdiv(g, slot["BLOCK_M"])
    splits, chunk = _common.split_plan(n, key_block, n_gtiles * bsz * h, dev)
    o_t, lse_t = partial_outputs(bsz * h, splits, g, bd, dev)
    n_glob = n_gtiles * splits
    grid = lambda meta: (_common.cdiv(n, meta["BLOCK_M"]) + n_glob, bsz * h)  # noqa: E731
    launch(
        _layer_fwd_kernel, grid,
        q, k, v, out, lse, key_flags, cum_excl, bounds, global_idx,
        *strides3(q), *strides3(k), *strides3(v), *strides3(out),
        q_global, k_global, v_global, o_t, lse_t, cum_pad,
        *strides3(q_global), *strides3(k_global), *strides3(v_global),
        n, h, g, w, log2_scale(scale), chunk, splits, _common.bucket(n), _common.bucket(w),
        _common.bucket(_common.cdiv(g, GLOBAL_KEY_TILE)),
        HEAD_DIM=d, BLOCK_D=bd, BLOCK_G=GLOBAL_KEY_TILE, DOT_PREC=dot_precision(q.dtype),
        SLOT_BLOCK=slot["BLOCK_M"], KEY_BLOCK=key_block, **cfg,
    )  # fmt: skip
    launch_global_combine(o_t, lse_t, out, glse, key_flags, global_idx, True)


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
    if g > 0 and FUSED_FORWARD:
        launch_layer_fwd(
            q, k, v, q_global, k_global, v_global, key_flags, global_idx, cum_excl, cum_pad, bounds, window,
            scale, out, lse, glse,
        )  # fmt: skip
        return out, lse, glse, cum_excl, cum_pad, bounds
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
    # dq_global's zeros (kernel B writes only its global rows) come from kernel A's dQ pass
    dqg, dkg, dvg = global_grads_like(q_global, k_global, v_global, shared, _common.empty, False)
    if dq.numel() == 0:
        return dq, dk, dv, dqg, dkg, dvg
    delta = launch_band_bwd(
        dout, q, k, v, out, lse, key_flags, global_idx, cum_excl, bounds, window, scale, dq, dk, dv,
        None if shared else dqg,
    )  # fmt: skip
    if g == 0:
        if not shared:
            dkg.zero_()
            dvg.zero_()
        return dq, dk, dv, dqg, dkg, dvg
    targets = (dq, dk, dv) if shared else (dqg, dkg, dvg)
    launch_global_bwd(
        dout, q_global, k_global, v_global, glse, delta, global_idx, key_flags, cum_pad, bounds, scale,
        *targets, by_index=True, accumulate_kv=shared,
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


LongformerAttentionFunction = layer_function(triton_longformer_fwd, triton_longformer_bwd)


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
    q_global_rows: bool = False,
) -> torch.Tensor:
    """A whole Longformer/LED layer (kernels A and B), differentiable in all six projections.

    Args:
        q, k, v: (B, N, H, D) local projections (see ``banded_attention``).
        q_global, k_global, v_global: (B, N, H, D) global projections; None means the local one
            (all three None: one shared projection, whose gradients the kernels fold into q, k, v's).
        window, key_flags, global_idx, scale: as in ``banded_attention`` / ``global_attention``.
        q_global_rows: q_global is (B, G, H, D), one row per slot of ``global_idx`` (the kernels get them
            placed at their positions: ``led_kernels.ops._dispatch.layer_function``).

    Returns:
        (B, N, H, D): kernel A's rows, with the rows of valid global slots replaced by kernel B's.
    """
    check_head_dim(q.shape[-1])
    check_scale(scale)
    return apply_layer(
        LongformerAttentionFunction, q, k, v, q_global, k_global, v_global, window, key_flags, global_idx,
        scale, q_global_rows,
    )  # fmt: skip
