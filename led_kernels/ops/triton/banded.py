"""Kernel A: every query row's Longformer/LED attention, fused. Query i (not padding) attends

    { j : |i - j| <= w and key j is local }  U  { the valid global keys }

under one fp32 softmax. Layout of this file: jit tile bodies, kernels (forward; backward dQ, dK/dV of
the band, dK/dV of the gathered global keys), launchers registered as ``led_kernels::`` ops, the
autograd Function, and the public ``banded_attention``.

Design, per (batch x head):

- Forward / dQ: one program per query tile. The band is walked as three runs of key tiles (left
  edge, interior, right edge, see ``band_tiles``). Interior tiles carry no mask at all: an interior
  tile holding a global or padded key goes to the masked body (which also keeps non-finite inputs in
  their rows, see ``_common``). Four scalar loads of the prefix counts find such tiles when they are
  the interior's first or last (a leading block of global tokens, the padded tail); otherwise the
  whole walk takes the masked body (``_common.unmasked_run``). The global keys are gathered in slot
  tiles of BLOCK_G (invalid slots masked): dQ takes them before the band, the forward after it. (A
  forward slot tile taken before the walk kept its shared-memory operands allocated through the whole
  walk, since Triton's wait after the walk lists them: 3 KB over the band's own tiles, which on sm_90
  cost the 64x64 tile with 4 stages its third program per SM.)
- dK/dV of the band: one program per key tile walking the query tiles of the transposed band (the
  same edge/interior split, decided per tile inside one loop). Global and padded keys get exactly 0
  here.
- dK/dV of the global keys (they receive gradient from every query): one program per (slot tile,
  query chunk); chunks write fp32 partials that a second kernel sums in a fixed order and scatters to
  the global rows of dK/dV, overwriting the zeros the band pass left there. No atomics anywhere, so
  gradients are bitwise reproducible.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from led_kernels.ops._dispatch import call_op, refuse_double_backward

from . import _common
from ._common import (
    band_tiles,
    block_d,
    check_head_dim,
    check_scale,
    chunk_tiles,
    dot_precision,
    launch_config,
    live_rows,
    load_finite_kv,
    load_rows,
    log2_scale,
    maybe_autotune,
    nonfinite_rows,
    poisoned_lse,
    reduce_partials,
    row_delta,
    softmax_step,
    store_rows,
    strides3,
    unmasked_run,
)
from ._launch import launch

# ----------------------------------------------------------------------------------------------------
# tile bodies
# ----------------------------------------------------------------------------------------------------


@triton.jit
def _fwd_band_tile(
    acc,
    l_i,
    m_i,
    q,
    k_base,
    v_base,
    stride_kn,
    stride_vn,
    flags_row,
    start_n,
    offs_m,
    offs_n,
    offs_d,
    N,
    window,
    qk_scale,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    MASKED: tl.constexpr,
    DOT_PREC: tl.constexpr,
):
    cols = start_n + offs_n  # [BLOCK_N]
    k_ptrs = k_base + cols[:, None] * stride_kn + offs_d[None, :]
    v_ptrs = v_base + cols[:, None] * stride_vn + offs_d[None, :]
    if MASKED:
        col_ok = cols < N
        kf = tl.load(flags_row + cols, mask=col_ok, other=1)  # [BLOCK_N]
        # global / padded keys load as they are (no load waits on the flags): their scores are masked
        # below, and a non-finite value row of theirs is zeroed like any other
        k = load_rows(k_ptrs, col_ok, offs_d, HEAD_DIM, BLOCK_D, True)  # [BLOCK_N, BLOCK_D]
        v = load_rows(v_ptrs, col_ok, offs_d, HEAD_DIM, BLOCK_D, True)
        # a non-finite value row is zeroed for p @ v and poisons the scores of the rows that attend it
        v_nan = nonfinite_rows(v)  # [BLOCK_N]
        v = tl.where((v_nan == 0.0)[:, None], v, tl.zeros_like(v))
        qk = tl.dot(q, tl.trans(k), input_precision=DOT_PREC)  # [BLOCK_M, BLOCK_N]
        dist = offs_m[:, None] - cols[None, :]
        keep = (dist <= window) & (dist >= -window) & (kf == 0)[None, :]
        qk = tl.where(keep, qk + v_nan[None, :], float("-inf"))
    else:
        # every pair is in the band and every key local (unmasked_run): nothing to mask
        k = load_rows(k_ptrs, cols, offs_d, HEAD_DIM, BLOCK_D, False)
        v = load_rows(v_ptrs, cols, offs_d, HEAD_DIM, BLOCK_D, False)
        qk = tl.dot(q, tl.trans(k), input_precision=DOT_PREC)  # [BLOCK_M, BLOCK_N]
    p, alpha, m_new = softmax_step(m_i, qk, qk_scale)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PREC)  # [BLOCK_M, BLOCK_D]
    return acc, l_i, m_new


@triton.jit
def _global_key_tile(
    GIdx,
    flags_row,
    k_base,
    v_base,
    stride_kn,
    stride_vn,
    b,
    G,
    N,
    nslots,
    slots,
    offs_d,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    ZERO_K: tl.constexpr,
):
    """Key and value rows [BLOCK_G, BLOCK_D] of the global slots ``slots`` of batch element b, and which
    slots are valid (listed, in range, a global token that is not padding). The token's flag and its
    rows are loaded together once the slot index is known (one wait, not two); the value rows of
    invalid slots (a padded global token) are zeroed after, and with ZERO_K the key rows too."""
    gi = tl.load(GIdx + b * G + slots, mask=slots < nslots, other=-1)  # [BLOCK_G]
    in_seq = (gi >= 0) & (gi < N)
    gi64 = tl.where(in_seq, gi, 0).to(tl.int64)
    gf = tl.load(flags_row + gi64, mask=in_seq, other=0)  # out of range: not global
    rows = gi64[:, None]
    k = load_rows(k_base + rows * stride_kn + offs_d[None, :], in_seq, offs_d, HEAD_DIM, BLOCK_D, True)
    v = load_rows(v_base + rows * stride_vn + offs_d[None, :], in_seq, offs_d, HEAD_DIM, BLOCK_D, True)
    g_ok = in_seq & (gf == 2)
    if ZERO_K:
        k = tl.where(g_ok[:, None], k, tl.zeros_like(k))
    v = tl.where(g_ok[:, None], v, tl.zeros_like(v))
    return k, v, g_ok


@triton.jit
def _fwd_global_step(acc, l_i, m_i, q, k, v, g_ok, qk_scale, DOT_PREC: tl.constexpr):
    """The forward's online-softmax step over one tile of gathered global keys (``_global_key_tile``:
    invalid slots become -inf columns; their key rows are not zeroed, their scores are replaced)."""
    qk = tl.dot(q, tl.trans(k), input_precision=DOT_PREC)  # [BLOCK_M, BLOCK_G]
    qk = tl.where(g_ok[None, :], qk, float("-inf"))
    p, alpha, m_new = softmax_step(m_i, qk, qk_scale)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PREC)  # [BLOCK_M, BLOCK_D]
    return acc, l_i, m_new


@triton.jit
def _dq_band_tile(
    dq,
    q,
    do,
    lse,
    delta,
    k_base,
    v_base,
    stride_kn,
    stride_vn,
    flags_row,
    start_n,
    offs_m,
    offs_n,
    offs_d,
    N,
    window,
    qk_scale,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    MASKED: tl.constexpr,
    DOT_PREC: tl.constexpr,
):
    cols = start_n + offs_n  # [BLOCK_N]
    k_ptrs = k_base + cols[:, None] * stride_kn + offs_d[None, :]
    v_ptrs = v_base + cols[:, None] * stride_vn + offs_d[None, :]
    if MASKED:
        col_ok = cols < N
        kf = tl.load(flags_row + cols, mask=col_ok, other=1)
        k = load_rows(k_ptrs, col_ok, offs_d, HEAD_DIM, BLOCK_D, True)  # [BLOCK_N, BLOCK_D]
        v = load_rows(v_ptrs, col_ok, offs_d, HEAD_DIM, BLOCK_D, True)
        # non-finite key / value rows zeroed (global / padded keys' too, which p masks): the rows that
        # attend one carry a NaN lse (see _common)
        k = tl.where((nonfinite_rows(k) == 0.0)[:, None], k, tl.zeros_like(k))
        v = tl.where((nonfinite_rows(v) == 0.0)[:, None], v, tl.zeros_like(v))
        qk = tl.dot(q, tl.trans(k), input_precision=DOT_PREC)  # [BLOCK_M, BLOCK_N]
        dist = offs_m[:, None] - cols[None, :]
        keep = (dist <= window) & (dist >= -window) & (kf == 0)[None, :]
        # where (not multiply): masked scores may overflow exp2 to inf, which must not reach dS
        p = tl.where(keep, tl.exp2(qk * qk_scale - lse[:, None]), 0.0)
    else:  # as in _fwd_band_tile: nothing to mask
        k = load_rows(k_ptrs, cols, offs_d, HEAD_DIM, BLOCK_D, False)
        v = load_rows(v_ptrs, cols, offs_d, HEAD_DIM, BLOCK_D, False)
        qk = tl.dot(q, tl.trans(k), input_precision=DOT_PREC)
        p = tl.exp2(qk * qk_scale - lse[:, None])  # [BLOCK_M, BLOCK_N]
    dp = tl.dot(do, tl.trans(v), input_precision=DOT_PREC)  # [BLOCK_M, BLOCK_N]
    ds = p * (dp - delta[:, None])
    dq += tl.dot(ds.to(k.dtype), k, input_precision=DOT_PREC)  # [BLOCK_M, BLOCK_D]
    return dq


@triton.jit
def _dkdv_tile(
    dk,
    dv,
    k,
    v,
    key_keep,
    need_mask,
    q_base,
    do_base,
    lse_row,
    delta_row,
    stride_qn,
    stride_don,
    start_m,
    row_pos,
    offs_m,
    offs_n,
    offs_d,
    N,
    window,
    qk_scale,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    MASK_ROWS: tl.constexpr,
    BAND: tl.constexpr,
    DOT_PREC: tl.constexpr,
):
    """One query tile's contribution to a key tile's dK/dV, computed transposed (keys on rows) so the
    accumulators stay [BLOCK_N, BLOCK_D]. Shared by the band pass (BAND: edge tiles add |i - j| <= w to
    the key mask) and the global passes (key_keep = slot validity / non-padded keys). ``need_mask``
    (runtime) is false for interior tiles of clean key tiles: those skip the select entirely. The tile's
    rows are start_m + offs_m (lse, the row bound N); ``row_pos`` [BLOCK_M] is where their q, dO and
    delta are read (the rows themselves, or the slots' token positions in kernel B's layer backward; any
    in-bounds position where lse is +inf). Also returns dS^T [BLOCK_N, BLOCK_M] (unscaled), for a caller
    that takes the rows' dQ from this key tile too."""
    rows = start_m + offs_m  # [BLOCK_M]
    q_ptrs = q_base + row_pos[:, None] * stride_qn + offs_d[None, :]
    do_ptrs = do_base + row_pos[:, None] * stride_don + offs_d[None, :]
    if MASK_ROWS:
        row_ok = rows < N
        # padded / out-of-range query rows: lse = +inf makes their probabilities exactly 0
        lse = tl.load(lse_row + rows, mask=row_ok, other=float("inf"))  # [BLOCK_M]
        delta = tl.load(delta_row + row_pos, mask=row_ok, other=0.0)
    else:
        lse = tl.load(lse_row + rows)
        delta = tl.load(delta_row + row_pos)
    # Rows that attend nothing or attended a non-finite value load as 0 with delta = 0 (see _common):
    # a predicate on the copies. Their probabilities stay exp2(. - lse), 0 or NaN as they should.
    live = live_rows(lse)
    q = load_rows(q_ptrs, live, offs_d, HEAD_DIM, BLOCK_D, True)  # [BLOCK_M, BLOCK_D]
    do = load_rows(do_ptrs, live, offs_d, HEAD_DIM, BLOCK_D, True)
    delta = tl.where(live, delta, 0.0)
    qkT = tl.dot(k, tl.trans(q), input_precision=DOT_PREC)  # [BLOCK_N, BLOCK_M]
    pT = tl.exp2(qkT * qk_scale - lse[None, :])
    if need_mask:
        if BAND:
            dist = rows[None, :] - offs_n[:, None]
            keep = (dist <= window) & (dist >= -window) & key_keep[:, None]
        else:
            keep = key_keep[:, None]
        pT = tl.where(keep, pT, 0.0)
    dv += tl.dot(pT.to(do.dtype), do, input_precision=DOT_PREC)  # [BLOCK_N, BLOCK_D]
    dpT = tl.dot(v, tl.trans(do), input_precision=DOT_PREC)  # [BLOCK_N, BLOCK_M]
    dsT = pT * (dpT - delta[None, :])
    dk += tl.dot(dsT.to(q.dtype), q, input_precision=DOT_PREC)  # [BLOCK_N, BLOCK_D]
    return dk, dv, dsT


# ----------------------------------------------------------------------------------------------------
# kernels
# ----------------------------------------------------------------------------------------------------


@triton.jit
def _band_fwd_program(
    pid_m,
    pid_bh,
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
    N,
    H,
    G,
    window,
    qk_scale,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_G: tl.constexpr,
    DOT_PREC: tl.constexpr,
    DROP_GLOBAL_ROWS: tl.constexpr,
    GLOBAL_KEYS: tl.constexpr,  # G > 0
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """Program (pid_m, pid_bh) of kernel A's forward: one query tile of one (batch, head); also run
    inside the layer's forward launch (``longformer._layer_fwd_kernel``)."""
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    q_base = Q + b * stride_qb + h * stride_qh
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    flags_row = Flags + b * N
    cum_row = CumExcl + b * (N + 1)

    m0 = pid_m * BLOCK_M
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_g = tl.arange(0, BLOCK_G)
    row_ok = offs_m < N

    kv_lo = tl.load(Bounds + b * 4 + 0)
    kv_hi = tl.load(Bounds + b * 4 + 1)
    nslots = tl.load(Bounds + b * 4 + 2)
    # a query tile entirely outside the non-padded span only writes zeros: empty every loop
    active = (m0 < kv_hi) & (m0 + BLOCK_M > kv_lo)
    nslots = tl.where(active, nslots, 0)
    hi_b = tl.where(active, kv_hi, 0)

    q = load_rows(
        q_base + offs_m[:, None] * stride_qn + offs_d[None, :], row_ok, offs_d, HEAD_DIM, BLOCK_D, True
    )
    qf = tl.load(flags_row + offs_m, mask=row_ok, other=1)  # [BLOCK_M]

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)

    lo, int_lo, int_hi, hi_r = band_tiles(m0, BLOCK_M, BLOCK_N, window, kv_lo, hi_b, N)
    # the interior's tiles that hold a global / padded key join the masked edge runs (see _common)
    int_lo, int_hi = unmasked_run(int_lo, int_hi, cum_row, BLOCK_N)
    for start_n in range(lo, int_lo, BLOCK_N):
        acc, l_i, m_i = _fwd_band_tile(
            acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_vn, flags_row, start_n,
            offs_m, offs_n, offs_d, N, window, qk_scale, HEAD_DIM, BLOCK_D, BLOCK_N, True, DOT_PREC,
        )  # fmt: skip
    for start_n in range(int_lo, int_hi, BLOCK_N):
        acc, l_i, m_i = _fwd_band_tile(
            acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_vn, flags_row, start_n,
            offs_m, offs_n, offs_d, N, window, qk_scale, HEAD_DIM, BLOCK_D, BLOCK_N, False, DOT_PREC,
        )  # fmt: skip
    for start_n in range(int_hi, hi_r, BLOCK_N):
        acc, l_i, m_i = _fwd_band_tile(
            acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_vn, flags_row, start_n,
            offs_m, offs_n, offs_d, N, window, qk_scale, HEAD_DIM, BLOCK_D, BLOCK_N, True, DOT_PREC,
        )  # fmt: skip

    # the gathered global keys, after the band (see the module docstring). The first slot tile is
    # straight-line code, not the first trip of a pipelined loop: no pipeline machinery around the one
    # trip that up to 16 global tokens take (5 registers fewer at 64x64 with 4 stages)
    if GLOBAL_KEYS:
        k, v, g_ok = _global_key_tile(
            GIdx, flags_row, k_base, v_base, stride_kn, stride_vn, b, G, N, nslots, offs_g, offs_d,
            HEAD_DIM, BLOCK_D, False,
        )  # fmt: skip
        acc, l_i, m_i = _fwd_global_step(acc, l_i, m_i, q, k, v, g_ok, qk_scale, DOT_PREC)
        for s0 in range(BLOCK_G, nslots, BLOCK_G):
            k, v, g_ok = _global_key_tile(
                GIdx, flags_row, k_base, v_base, stride_kn, stride_vn, b, G, N, nslots, s0 + offs_g, offs_d,
                HEAD_DIM, BLOCK_D, False,
            )  # fmt: skip
            acc, l_i, m_i = _fwd_global_step(acc, l_i, m_i, q, k, v, g_ok, qk_scale, DOT_PREC)

    # epilogue: padded query rows and rows that attended nothing output 0 and store lse = +inf; a
    # NaN l (the row attended a non-finite score) stays NaN
    live = (qf != 1) & ((l_i > 0.0) | (l_i != l_i))
    l_safe = tl.where(live, l_i, 1.0)
    out = tl.where(live[:, None], acc / l_safe[:, None], 0.0)
    lse = poisoned_lse(tl.where(live, m_i + tl.log2(l_safe), float("inf")), out)
    if DROP_GLOBAL_ROWS:
        # kernel B overwrites these rows: lse = +inf takes them out of this kernel's backward
        lse = tl.where(qf == 2, float("inf"), lse)
    o_ptrs = Out + b * stride_ob + h * stride_oh + offs_m[:, None] * stride_on + offs_d[None, :]
    store_rows(o_ptrs, out.to(Out.dtype.element_ty), row_ok, offs_d, HEAD_DIM, BLOCK_D)
    tl.store(Lse + pid_bh.to(tl.int64) * N + offs_m, lse, mask=row_ok)


@maybe_autotune("band_fwd")
@triton.jit
def _band_fwd_kernel(
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
    N,
    H,
    G,
    window,
    qk_scale,
    N_BUCKET,  # autotune key only
    W_BUCKET,  # autotune key only
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_G: tl.constexpr,
    DOT_PREC: tl.constexpr,
    DROP_GLOBAL_ROWS: tl.constexpr,
    GLOBAL_KEYS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    _band_fwd_program(
        tl.program_id(0), tl.program_id(1), Q, K, V, Out, Lse, Flags, CumExcl, Bounds, GIdx,
        stride_qb, stride_qn, stride_qh, stride_kb, stride_kn, stride_kh, stride_vb, stride_vn, stride_vh,
        stride_ob, stride_on, stride_oh, N, H, G, window, qk_scale,
        HEAD_DIM, BLOCK_D, BLOCK_G, DOT_PREC, DROP_GLOBAL_ROWS, GLOBAL_KEYS, BLOCK_M, BLOCK_N,
    )  # fmt: skip


@maybe_autotune("band_dq")
@triton.jit
def _band_dq_kernel(
    Q,
    K,
    V,
    DO,
    Out,  # the forward's output: this pass computes delta = rowsum(dO * O) of its rows
    DQ,
    Zeros,  # STORE_ZEROS: a (B, N, H, D) gradient whose rows this pass writes as 0 (kernel B's dq_global)
    Lse,
    Delta,  # fp32 (B, H, N), written here (for the dK/dV passes that follow)
    Flags,
    CumExcl,
    Bounds,
    GIdx,
    DKGPart,  # GKEY_PARTIALS: fp32 (B*H, cdiv(N, PART_ROWS), G, BLOCK_D), the global keys' dK per row tile
    DVGPart,  # ... and dV
    stride_qb,
    stride_qn,
    stride_qh,
    stride_kb,
    stride_kn,
    stride_kh,
    stride_vb,
    stride_vn,
    stride_vh,
    stride_dob,
    stride_don,
    stride_doh,
    stride_ob,
    stride_on,
    stride_oh,
    stride_dqb,
    stride_dqn,
    stride_dqh,
    stride_zb,
    stride_zn,
    stride_zh,
    N,
    H,
    G,
    window,
    qk_scale,
    scale,
    N_BUCKET,
    W_BUCKET,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_G: tl.constexpr,
    DOT_PREC: tl.constexpr,
    GKEY_PARTIALS: tl.constexpr,
    PART_ROWS: tl.constexpr,
    STORE_ZEROS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    # Backward, one program per query tile: same key walk as the forward, dQ in registers. Its rows'
    # delta = rowsum(dO * O) is computed here and stored for the dK/dV passes (no launch of its own).
    # GKEY_PARTIALS (G <= BLOCK_G, one slot tile): the prologue also writes this tile's share of the
    # global keys' dK/dV, from the same P and dS (no second sweep over q and dO, _gkey_dkdv_kernel); the
    # partials sit at PART_ROWS granularity (a divisor of every BLOCK_M the launch may pick: the launcher
    # does not know the autotuner's choice), this program's first slot holding them and its other
    # slots zeros, and a fixed-order reduction follows.
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    q_base = Q + b * stride_qb + h * stride_qh
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    do_base = DO + b * stride_dob + h * stride_doh
    o_base = Out + b * stride_ob + h * stride_oh
    flags_row = Flags + b * N
    cum_row = CumExcl + b * (N + 1)
    lse_row = Lse + pid_bh.to(tl.int64) * N
    delta_row = Delta + pid_bh.to(tl.int64) * N

    m0 = pid_m * BLOCK_M
    offs_m = m0 + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_g = tl.arange(0, BLOCK_G)
    row_ok = offs_m < N

    kv_lo = tl.load(Bounds + b * 4 + 0)
    kv_hi = tl.load(Bounds + b * 4 + 1)
    nslots = tl.load(Bounds + b * 4 + 2)
    active = (m0 < kv_hi) & (m0 + BLOCK_M > kv_lo)
    nslots = tl.where(active, nslots, 0)
    hi_b = tl.where(active, kv_hi, 0)

    # (each variant with its own loads: one shared pair, its mask chosen by the variant, made Triton 3.6
    # fail to compile the folded variant's 128x32 sm_90 autotune candidate)
    if GKEY_PARTIALS:
        lse = tl.load(lse_row + offs_m, mask=row_ok, other=float("inf"))  # [BLOCK_M]
        # rows without a finite statistic load q and dO as 0 (as in _dkdv_tile): the partials contract
        # over rows, where a padded row's non-finite input would otherwise reach every global key
        # through 0 * NaN; their own dQ is 0 (lse = +inf) or NaN (a NaN lse) either way
        live = live_rows(lse)
        do_ptrs = do_base + offs_m[:, None] * stride_don + offs_d[None, :]
        # every row's delta is stored for the passes that follow, also where this pass drops the row
        delta = row_delta(
            load_rows(do_ptrs, row_ok, offs_d, HEAD_DIM, BLOCK_D, True), o_base, stride_on, offs_m, offs_d,
            row_ok, HEAD_DIM, BLOCK_D,
        )  # fmt: skip
        tl.store(delta_row + offs_m, delta, mask=row_ok)
        delta = tl.where(live, delta, 0.0)
        q = load_rows(
            q_base + offs_m[:, None] * stride_qn + offs_d[None, :], live, offs_d, HEAD_DIM, BLOCK_D, True
        )
        do = load_rows(do_ptrs, live, offs_d, HEAD_DIM, BLOCK_D, True)
    else:
        q = load_rows(
            q_base + offs_m[:, None] * stride_qn + offs_d[None, :], row_ok, offs_d, HEAD_DIM, BLOCK_D, True
        )
        do = load_rows(
            do_base + offs_m[:, None] * stride_don + offs_d[None, :], row_ok, offs_d, HEAD_DIM, BLOCK_D, True
        )
        lse = tl.load(lse_row + offs_m, mask=row_ok, other=float("inf"))  # [BLOCK_M]
        delta = row_delta(do, o_base, stride_on, offs_m, offs_d, row_ok, HEAD_DIM, BLOCK_D)
        tl.store(delta_row + offs_m, delta, mask=row_ok)
    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    if GKEY_PARTIALS:
        tl.static_assert(BLOCK_M % PART_ROWS == 0)
        n_part = tl.cdiv(N, PART_ROWS)
        slot0 = pid_m * (BLOCK_M // PART_ROWS)
        g_in = (offs_g < G)[:, None]
        part = (pid_bh.to(tl.int64) * n_part + slot0) * G + offs_g  # [BLOCK_G]
        part_ptrs = part[:, None] * BLOCK_D + offs_d[None, :]  # [BLOCK_G, BLOCK_D]
        zeros_g = tl.zeros([BLOCK_G, BLOCK_D], dtype=tl.float32)
        for j in tl.static_range(1, BLOCK_M // PART_ROWS):
            # (a [BLOCK_G] comparison: some interpreters refuse a scalar mask broadcast into a block)
            in_range = g_in & (slot0 + j + 0 * offs_g < n_part)[:, None]
            tl.store(DKGPart + part_ptrs + j * G * BLOCK_D, zeros_g, mask=in_range)
            tl.store(DVGPart + part_ptrs + j * G * BLOCK_D, zeros_g, mask=in_range)
        if nslots == 0:  # no prologue below (no global token, or a tile past the non-padded span)
            tl.store(DKGPart + part_ptrs, zeros_g, mask=g_in)
            tl.store(DVGPart + part_ptrs, zeros_g, mask=g_in)

    for s0 in range(0, nslots, BLOCK_G):
        slots = s0 + offs_g
        # (k zeroed too: a non-finite key row would reach dQ through dS = 0)
        k, v, g_ok = _global_key_tile(
            GIdx, flags_row, k_base, v_base, stride_kn, stride_vn, b, G, N, nslots, slots, offs_d,
            HEAD_DIM, BLOCK_D, True,
        )  # fmt: skip
        qk = tl.dot(q, tl.trans(k), input_precision=DOT_PREC)  # [BLOCK_M, BLOCK_G]
        p = tl.where(g_ok[None, :], tl.exp2(qk * qk_scale - lse[:, None]), 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision=DOT_PREC)
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision=DOT_PREC)
        if GKEY_PARTIALS:  # stored at once (the loop runs at most once)
            # transposed, [BLOCK_D, BLOCK_G] each: the head dim as the MMA's rows (wgmma on sm_90)
            dk_g = tl.dot(tl.trans(q), ds.to(q.dtype), input_precision=DOT_PREC)
            tl.store(DKGPart + tl.trans(part_ptrs), dk_g, mask=tl.trans(g_in))
            dv_g = tl.dot(tl.trans(do), p.to(do.dtype), input_precision=DOT_PREC)
            tl.store(DVGPart + tl.trans(part_ptrs), dv_g, mask=tl.trans(g_in))

    lo, int_lo, int_hi, hi_r = band_tiles(m0, BLOCK_M, BLOCK_N, window, kv_lo, hi_b, N)
    # the interior's tiles that hold a global / padded key join the masked edge runs (see _common)
    int_lo, int_hi = unmasked_run(int_lo, int_hi, cum_row, BLOCK_N)
    for start_n in range(lo, int_lo, BLOCK_N):
        dq = _dq_band_tile(
            dq, q, do, lse, delta, k_base, v_base, stride_kn, stride_vn, flags_row, start_n,
            offs_m, offs_n, offs_d, N, window, qk_scale, HEAD_DIM, BLOCK_D, BLOCK_N, True, DOT_PREC,
        )  # fmt: skip
    for start_n in range(int_lo, int_hi, BLOCK_N):
        dq = _dq_band_tile(
            dq, q, do, lse, delta, k_base, v_base, stride_kn, stride_vn, flags_row, start_n,
            offs_m, offs_n, offs_d, N, window, qk_scale, HEAD_DIM, BLOCK_D, BLOCK_N, False, DOT_PREC,
        )  # fmt: skip
    for start_n in range(int_hi, hi_r, BLOCK_N):
        dq = _dq_band_tile(
            dq, q, do, lse, delta, k_base, v_base, stride_kn, stride_vn, flags_row, start_n,
            offs_m, offs_n, offs_d, N, window, qk_scale, HEAD_DIM, BLOCK_D, BLOCK_N, True, DOT_PREC,
        )  # fmt: skip

    # rows that attend nothing: 0, even where a non-finite score made their p NaN
    dq = tl.where((lse != float("inf"))[:, None], dq * scale, 0.0)
    dq_ptrs = DQ + b * stride_dqb + h * stride_dqh + offs_m[:, None] * stride_dqn + offs_d[None, :]
    store_rows(dq_ptrs, dq.to(DQ.dtype.element_ty), row_ok, offs_d, HEAD_DIM, BLOCK_D)
    if STORE_ZEROS:  # (a fill launch less; stores beside this compute-bound pass)
        z_ptrs = Zeros + b * stride_zb + h * stride_zh + offs_m[:, None] * stride_zn + offs_d[None, :]
        store_rows(z_ptrs, tl.zeros_like(dq).to(Zeros.dtype.element_ty), row_ok, offs_d, HEAD_DIM, BLOCK_D)


@maybe_autotune("band_dkdv")
@triton.jit
def _band_dkdv_kernel(
    Q,
    K,
    V,
    DO,
    DK,
    DV,
    Lse,
    Delta,
    Flags,
    Bounds,
    stride_qb,
    stride_qn,
    stride_qh,
    stride_kb,
    stride_kn,
    stride_kh,
    stride_vb,
    stride_vn,
    stride_vh,
    stride_dob,
    stride_don,
    stride_doh,
    stride_dkb,
    stride_dkn,
    stride_dkh,
    stride_dvb,
    stride_dvn,
    stride_dvh,
    N,
    H,
    window,
    qk_scale,
    scale,
    N_BUCKET,
    W_BUCKET,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    DOT_PREC: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    # One program per key tile; it owns dK/dV of its keys for the band part only (global and padded
    # keys are excluded from every band, so their rows are written as 0 here).
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    q_base = Q + b * stride_qb + h * stride_qh
    do_base = DO + b * stride_dob + h * stride_doh
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    flags_row = Flags + b * N
    lse_row = Lse + pid_bh.to(tl.int64) * N
    delta_row = Delta + pid_bh.to(tl.int64) * N

    n0 = pid_n * BLOCK_N
    offs_n = n0 + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    col_ok = offs_n < N

    # non-finite rows load as 0: the query rows that attend one carry a NaN statistic (see _common)
    k, v = load_finite_kv(
        k_base + offs_n[:, None] * stride_kn + offs_d[None, :],
        v_base + offs_n[:, None] * stride_vn + offs_d[None, :],
        col_ok, offs_d, HEAD_DIM, BLOCK_D,
    )  # fmt: skip
    kf = tl.load(flags_row + offs_n, mask=col_ok, other=1)
    key_keep = kf == 0  # [BLOCK_N]
    n_keep = tl.sum(key_keep.to(tl.int32), 0)
    keys_clean = (n_keep == BLOCK_N).to(tl.int32)

    kv_lo = tl.load(Bounds + b * 4 + 0)
    kv_hi = tl.load(Bounds + b * 4 + 1)
    hi_b = tl.where(n_keep > 0, kv_hi, 0)  # no local key in this tile: nothing to do

    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    lo, int_lo, int_hi, hi_r = band_tiles(n0, BLOCK_N, BLOCK_M, window, kv_lo, hi_b, N)
    # One loop with a per-tile runtime mask decision rather than three loops as in the forward: on
    # sm_90 a dK/dV accumulator carried across consecutive loops makes ptxas serialise the wgmmas
    # (C7515). Row-bound masks on the loads are kept (only the last query tile needs them; they are
    # predicates on the async copies, not score work).
    for start_m in range(lo, hi_r, BLOCK_M):
        need_mask = (start_m < int_lo) | (start_m >= int_hi) | (keys_clean == 0)
        dk, dv, _ = _dkdv_tile(
            dk, dv, k, v, key_keep, need_mask, q_base, do_base, lse_row, delta_row, stride_qn, stride_don,
            start_m, start_m + offs_m, offs_m, offs_n, offs_d, N, window, qk_scale, HEAD_DIM, BLOCK_D, True,
            True, DOT_PREC,
        )  # fmt: skip

    dk = dk * scale
    dk_ptrs = DK + b * stride_dkb + h * stride_dkh + offs_n[:, None] * stride_dkn + offs_d[None, :]
    dv_ptrs = DV + b * stride_dvb + h * stride_dvh + offs_n[:, None] * stride_dvn + offs_d[None, :]
    store_rows(dk_ptrs, dk.to(DK.dtype.element_ty), col_ok, offs_d, HEAD_DIM, BLOCK_D)
    store_rows(dv_ptrs, dv.to(DV.dtype.element_ty), col_ok, offs_d, HEAD_DIM, BLOCK_D)


@triton.jit
def _gkey_dkdv_kernel(
    Q,
    K,
    V,
    DO,
    DK,  # DIRECT: dK (B, N, H, D); else fp32 partials (B*H, S, G, BLOCK_D)
    DV,
    Lse,
    Delta,
    Flags,
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
    stride_dob,
    stride_don,
    stride_doh,
    stride_dkb,
    stride_dkn,
    stride_dkh,
    stride_dvb,
    stride_dvn,
    stride_dvh,
    N,
    H,
    G,
    chunk,
    qk_scale,
    scale,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_G: tl.constexpr,
    DOT_PREC: tl.constexpr,
    DIRECT: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    # Global keys get gradient from every non-padded query. One program per (slot tile, query chunk,
    # batch x head); G is usually tiny, so the query axis is what gets split across the machine.
    pid_g = tl.program_id(0)
    pid_s = tl.program_id(1)
    pid_bh = tl.program_id(2)
    n_split = tl.num_programs(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    q_base = Q + b * stride_qb + h * stride_qh
    do_base = DO + b * stride_dob + h * stride_doh
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    flags_row = Flags + b * N
    lse_row = Lse + pid_bh.to(tl.int64) * N
    delta_row = Delta + pid_bh.to(tl.int64) * N

    slots = pid_g * BLOCK_G + tl.arange(0, BLOCK_G)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    gi = tl.load(GIdx + b * G + slots, mask=slots < G, other=-1)  # [BLOCK_G]
    gf = tl.load(flags_row + gi, mask=(gi >= 0) & (gi < N), other=0)  # out of range: not global
    g_ok = (gi >= 0) & (gf == 2)
    gi64 = tl.where(g_ok, gi, 0).to(tl.int64)
    k, v = load_finite_kv(  # as in _band_dkdv_kernel
        k_base + gi64[:, None] * stride_kn + offs_d[None, :],
        v_base + gi64[:, None] * stride_vn + offs_d[None, :],
        g_ok, offs_d, HEAD_DIM, BLOCK_D,
    )  # fmt: skip

    kv_lo = tl.load(Bounds + b * 4 + 0)
    kv_hi = tl.load(Bounds + b * 4 + 1)
    nslots = tl.load(Bounds + b * 4 + 2)
    hi_b = tl.where(pid_g * BLOCK_G < nslots, kv_hi, 0)
    lo, full_hi, hi_r = chunk_tiles(pid_s * chunk, chunk, kv_lo, hi_b, N, BLOCK_M)

    dk = tl.zeros([BLOCK_G, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_G, BLOCK_D], dtype=tl.float32)
    for start_m in range(lo, full_hi, BLOCK_M):
        dk, dv, _ = _dkdv_tile(
            dk, dv, k, v, g_ok, 1, q_base, do_base, lse_row, delta_row, stride_qn, stride_don,
            start_m, start_m + offs_m, offs_m, slots, offs_d, N, 0, qk_scale, HEAD_DIM, BLOCK_D, False, False,
            DOT_PREC,
        )  # fmt: skip
    for start_m in range(full_hi, hi_r, BLOCK_M):
        dk, dv, _ = _dkdv_tile(
            dk, dv, k, v, g_ok, 1, q_base, do_base, lse_row, delta_row, stride_qn, stride_don,
            start_m, start_m + offs_m, offs_m, slots, offs_d, N, 0, qk_scale, HEAD_DIM, BLOCK_D, True, False,
            DOT_PREC,
        )  # fmt: skip

    if DIRECT:
        # a single chunk: write straight into the global rows (the band pass left zeros there)
        dk_ptrs = DK + b * stride_dkb + h * stride_dkh + gi64[:, None] * stride_dkn + offs_d[None, :]
        dv_ptrs = DV + b * stride_dvb + h * stride_dvh + gi64[:, None] * stride_dvn + offs_d[None, :]
        store_rows(dk_ptrs, (dk * scale).to(DK.dtype.element_ty), g_ok, offs_d, HEAD_DIM, BLOCK_D)
        store_rows(dv_ptrs, dv.to(DV.dtype.element_ty), g_ok, offs_d, HEAD_DIM, BLOCK_D)
    else:
        part = (pid_bh.to(tl.int64) * n_split + pid_s) * G
        p_ptrs = (part + slots)[:, None] * BLOCK_D + offs_d[None, :]
        tl.store(DK + p_ptrs, dk, mask=(slots < G)[:, None])
        tl.store(DV + p_ptrs, dv, mask=(slots < G)[:, None])


# ----------------------------------------------------------------------------------------------------
# launchers (registered ops)
# ----------------------------------------------------------------------------------------------------


#: Slot tile of the global keys in kernel A's forward and dQ, at every G. With the wider tiles these
#: kernels once took for more than 16 global tokens (32 or 64), ptxas serialises every wgmma of them on
#: sm_90, the band's included (C7515; at G = 64 all 80 of the layer forward's wgmmas and all 48 of
#: dQ's wait for their own completion, against 12 waits for 74 and 45 with this tile: ``python -m
#: benchmarks.inspect_kernels --arch 90 --globals 64 --sass``).
GLOBAL_KEY_TILE = 16


def _gkey_block(num_slots: int) -> int:
    """Slot tile of ``_gkey_dkdv_kernel`` (the global keys as its rows)."""
    if _common.INTERPRET:
        return 16
    return min(64, max(16, _common.next_power_of_2(max(num_slots, 1))))


def launch_band_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_flags: torch.Tensor,
    global_idx: torch.Tensor,
    cum_excl: torch.Tensor,
    bounds: torch.Tensor,
    window: int,
    scale: float,
    out: torch.Tensor,
    lse: torch.Tensor,
    drop_global_rows: bool,
) -> None:
    """Kernel A forward into out (B, N, H, D) and lse (B, H, N). ``drop_global_rows``: the rows of
    global queries get lse = +inf (kernel B overwrites them, so this kernel's backward skips them)."""
    bsz, n, h, d = q.shape
    g = global_idx.shape[1]
    w = min(window, n)
    cfg = launch_config("band_fwd", d, q.device, q.element_size(), autotuned=True)
    grid = lambda meta: (_common.cdiv(n, meta["BLOCK_M"]), bsz * h)
    launch(
        _band_fwd_kernel, grid,
        q, k, v, out, lse, key_flags, cum_excl, bounds, global_idx,
        *strides3(q), *strides3(k), *strides3(v), *strides3(out),
        n, h, g, w, log2_scale(scale), _common.bucket(n), _common.bucket(w),
        HEAD_DIM=d, BLOCK_D=block_d(d), BLOCK_G=GLOBAL_KEY_TILE, DOT_PREC=dot_precision(q.dtype),
        DROP_GLOBAL_ROWS=drop_global_rows, GLOBAL_KEYS=g > 0, **cfg,
    )  # fmt: skip


@torch.library.custom_op("led_kernels::triton_banded_fwd", mutates_args=())
def triton_banded_fwd(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_flags: torch.Tensor,
    global_idx: torch.Tensor,
    cum_excl: torch.Tensor,
    bounds: torch.Tensor,
    window: int,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    bsz, n, h, d = q.shape
    out = _common.empty((bsz, n, h, d), q.dtype, q.device)
    lse = _common.empty((bsz, h, n), torch.float32, q.device)
    if out.numel() == 0:
        return out, lse.fill_(float("inf"))
    launch_band_fwd(q, k, v, key_flags, global_idx, cum_excl, bounds, window, scale, out, lse, False)
    return out, lse


@triton_banded_fwd.register_fake
def _(q, k, v, key_flags, global_idx, cum_excl, bounds, window, scale):
    bsz, n, h, d = q.shape
    return q.new_empty((bsz, n, h, d)), q.new_empty((bsz, h, n), dtype=torch.float32)


#: up to this many global tokens, kernel A's dQ pass also computes the global keys' dK/dV (per tile of
#: query rows, then reduced) instead of _gkey_dkdv_kernel's second sweep over q and dO; the partials grow
#: with G (rows / PART_ROWS x G x D in fp32, twice), and past a few tokens they would cost that sweep.
#: LED_KERNELS_GKEY_IN_DQ_MAX_SLOTS=0 turns it off (to time the two against each other)
GKEY_IN_DQ_MAX_SLOTS = _common.env_count("LED_KERNELS_GKEY_IN_DQ_MAX_SLOTS", 4)


def launch_band_bwd(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    key_flags: torch.Tensor,
    global_idx: torch.Tensor,
    cum_excl: torch.Tensor,
    bounds: torch.Tensor,
    window: int,
    scale: float,
    dq: torch.Tensor,
    dk: torch.Tensor,
    dv: torch.Tensor,
    zeros: torch.Tensor | None = None,
) -> torch.Tensor:
    """Kernel A backward: every row of dq, dk, dv (B, N, H, D) written, and of ``zeros`` (a (B, N, H, D)
    gradient that a kernel B backward then fills at its global rows) as 0. Returns delta = rowsum(dout *
    out) in fp32 (B, H, N), every row's (the dQ pass computes it), for a kernel B backward that follows."""
    bsz, n, h, d = q.shape
    g = global_idx.shape[1]
    dev = q.device
    w = min(window, n)
    bd = block_d(d)
    prec = dot_precision(q.dtype)
    delta = _common.empty((bsz, h, n), torch.float32, dev)

    # with a few global tokens the dQ pass also takes their keys' dK/dV (partials per PART_ROWS rows)
    part_rows = _common.smallest_block_m("band_dq", d, dev, q.element_size())
    gkey_partials = 0 < g <= min(GKEY_IN_DQ_MAX_SLOTS, GLOBAL_KEY_TILE)  # (one slot tile)
    if gkey_partials:
        n_part = _common.cdiv(n, part_rows)
        dk_t = _common.empty((bsz * h, n_part, g, bd), torch.float32, dev)
        dv_t = _common.empty((bsz * h, n_part, g, bd), torch.float32, dev)
    else:
        dk_t, dv_t = dk, dv  # unused
    zeros_t = dq if zeros is None else zeros  # (dq: an unused stand-in)
    cfg = launch_config("band_dq", d, dev, q.element_size(), autotuned=True)
    grid = lambda meta: (_common.cdiv(n, meta["BLOCK_M"]), bsz * h)
    launch(
        _band_dq_kernel, grid,
        q, k, v, dout, out, dq, zeros_t, lse, delta, key_flags, cum_excl, bounds, global_idx, dk_t, dv_t,
        *strides3(q), *strides3(k), *strides3(v), *strides3(dout), *strides3(out), *strides3(dq),
        *strides3(zeros_t),
        n, h, g, w, log2_scale(scale), scale, _common.bucket(n), _common.bucket(w),
        HEAD_DIM=d, BLOCK_D=bd, BLOCK_G=GLOBAL_KEY_TILE, DOT_PREC=prec, GKEY_PARTIALS=gkey_partials,
        PART_ROWS=part_rows, STORE_ZEROS=zeros is not None, **cfg,
    )  # fmt: skip

    cfg = launch_config("band_dkdv", d, dev, q.element_size(), autotuned=True)
    grid = lambda meta: (_common.cdiv(n, meta["BLOCK_N"]), bsz * h)
    launch(
        _band_dkdv_kernel, grid,
        q, k, v, dout, dk, dv, lse, delta, key_flags, bounds,
        *strides3(q), *strides3(k), *strides3(v), *strides3(dout), *strides3(dk), *strides3(dv),
        n, h, w, log2_scale(scale), scale, _common.bucket(n), _common.bucket(w),
        HEAD_DIM=d, BLOCK_D=bd, DOT_PREC=prec, **cfg,
    )  # fmt: skip

    if gkey_partials:
        # after the band pass (same stream): it overwrites the zeros that pass wrote at global rows
        reduce_partials(dk_t, dk, global_idx, key_flags, scale, scatter=True, second=(dv_t, dv, 1.0))
    elif g > 0:
        # as above, after the band pass
        cfg = _common.kernel_config("gkey_dkdv", d, dev, q.element_size())
        block_g = _gkey_block(g)
        n_gtiles = _common.cdiv(g, block_g)
        splits, chunk = _common.split_plan(n, cfg["BLOCK_M"], n_gtiles * bsz * h, dev)
        direct = splits == 1
        if direct:
            dk_t, dv_t = dk, dv
        else:
            dk_t = _common.empty((bsz * h, splits, g, bd), torch.float32, dev)
            dv_t = _common.empty((bsz * h, splits, g, bd), torch.float32, dev)
        # no **cfg: this kernel has no BLOCK_N (its key tile is the slot tile BLOCK_G)
        launch(
            _gkey_dkdv_kernel, (n_gtiles, splits, bsz * h),
            q, k, v, dout, dk_t, dv_t, lse, delta, key_flags, bounds, global_idx,
            *strides3(q), *strides3(k), *strides3(v), *strides3(dout), *strides3(dk), *strides3(dv),
            n, h, g, chunk, log2_scale(scale), scale,
            HEAD_DIM=d, BLOCK_D=bd, BLOCK_G=block_g, DOT_PREC=prec, DIRECT=direct,
            BLOCK_M=cfg["BLOCK_M"], num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
        )  # fmt: skip
        if not direct:
            reduce_partials(dk_t, dk, global_idx, key_flags, scale, scatter=True, second=(dv_t, dv, 1.0))
    return delta


@torch.library.custom_op("led_kernels::triton_banded_bwd", mutates_args=())
def triton_banded_bwd(
    dout: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    key_flags: torch.Tensor,
    global_idx: torch.Tensor,
    cum_excl: torch.Tensor,
    bounds: torch.Tensor,
    window: int,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    bsz, n, h, d = q.shape
    dev = q.device
    dq = _common.empty((bsz, n, h, d), q.dtype, dev)
    dk = _common.empty((bsz, n, h, d), k.dtype, dev)
    dv = _common.empty((bsz, n, h, d), v.dtype, dev)
    if dq.numel() == 0:
        return dq, dk, dv
    launch_band_bwd(
        dout, q, k, v, out, lse, key_flags, global_idx, cum_excl, bounds, window, scale, dq, dk, dv
    )
    return dq, dk, dv


@triton_banded_bwd.register_fake
def _(dout, q, k, v, out, lse, key_flags, global_idx, cum_excl, bounds, window, scale):
    # contiguous like the real op (empty_like would keep a dense permuted input's strides)
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


# ----------------------------------------------------------------------------------------------------
# autograd + public entry point
# ----------------------------------------------------------------------------------------------------


class BandedAttentionFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, window, key_flags, global_idx, scale):
        cum_excl, _, bounds = call_op(_common.triton_prep, key_flags, global_idx)
        out, lse = call_op(triton_banded_fwd, q, k, v, key_flags, global_idx, cum_excl, bounds, window, scale)
        ctx.save_for_backward(q, k, v, out, lse, key_flags, global_idx, cum_excl, bounds)
        ctx.window = window
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, dout):
        q, k, v, out, lse, key_flags, global_idx, cum_excl, bounds = ctx.saved_tensors
        refuse_double_backward(triton_banded_bwd, dout, (q, k, v))
        if dout.stride(-1) != 1:
            dout = dout.contiguous()
        dq, dk, dv = call_op(
            triton_banded_bwd, dout, q, k, v, out, lse, key_flags, global_idx, cum_excl, bounds, ctx.window,
            ctx.scale,
        )  # fmt: skip
        return dq, dk, dv, None, None, None, None


def banded_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window: int,
    key_flags: torch.Tensor,
    global_idx: torch.Tensor | None,
    scale: float,
) -> torch.Tensor:
    """Longformer/LED banded attention of every query row (Triton kernel A), differentiable in q, k, v.

    Args:
        q, k, v: (B, N, H, D), same float dtype and device, last dim contiguous (any other strides,
            e.g. views of a fused QKV projection; read in place). Head dims up to 256; non powers of
            two are zero-padded inside the kernel.
        window: one-sided window w >= 0; query i sees local keys j with |i - j| <= w (w >= N: dense).
        key_flags: int8 (B, N), 0 local, 1 padding, 2 global.
        global_idx: int32 (B, G) ascending global positions then -1, or None for no global tokens.
            Slot s is used iff global_idx[b, s] >= 0 and key_flags[b, global_idx[b, s]] == 2; those keys
            are attended by every non-padded query (once, even inside its band).
        scale: softmax scale (>= 0), usually 1/sqrt(D).

    Returns:
        (B, N, H, D) in q's dtype; padded query rows (and rows with nothing to attend) are 0. Rows of
        global queries are computed like any other row (the caller overwrites them).
    """
    bsz, _, _, d = q.shape
    check_head_dim(d)
    check_scale(scale)
    if global_idx is None:
        global_idx = torch.full((bsz, 0), -1, dtype=torch.int32, device=q.device)
    return BandedAttentionFunction.apply(q, k, v, int(window), key_flags, global_idx, float(scale))
