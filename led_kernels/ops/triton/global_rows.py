"""Kernel B: the rows of global queries. Slot s of batch b (valid iff global_idx[b, s] >= 0 and that
token's flag is GLOBAL) attends every non-padded key with the global projections, in fp32. Layout:
jit tile bodies, kernels, launchers registered as ``led_kernels::`` ops, autograd Function, public
``global_attention``.

G is often 1 (summarization) or a few hundred (QA), while N is up to 16k, so the forward and dQ split
the keys across programs (split-KV): each (slot tile, key chunk) program writes an fp32 partial
(output normalised by its own sum, plus its LSE), and a second small kernel merges the chunks by LSE
in a fixed order. dK/dV need no split: one program per key tile walks the (few) slot tiles and owns
its rows outright. Nothing uses atomics, so results and gradients are bitwise reproducible.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from led_kernels.ops._dispatch import call_op, refuse_double_backward

from . import _common
from ._common import (
    block_d,
    bwd_delta,
    check_head_dim,
    check_scale,
    chunk_tiles,
    dot_precision,
    load_finite_kv,
    load_rows,
    log2_scale,
    poisoned_lse,
    reduce_partials,
    softmax_step,
    store_rows,
    strides3,
    unmasked_run,
)
from ._launch import launch
from .banded import _dkdv_tile

# ----------------------------------------------------------------------------------------------------
# tile bodies
# ----------------------------------------------------------------------------------------------------


@triton.jit
def _fwd_tile(
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
    offs_n,
    offs_d,
    N,
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
    # padded keys (attended by no row) load as 0, see _common
    if MASKED:
        col_ok = cols < N
        kf = tl.load(flags_row + cols, mask=col_ok, other=1)
        k = load_rows(k_ptrs, kf != 1, offs_d, HEAD_DIM, BLOCK_D, True)  # [BLOCK_N, BLOCK_D]
        v = load_rows(v_ptrs, kf != 1, offs_d, HEAD_DIM, BLOCK_D, True)
        qk = tl.dot(q, tl.trans(k), input_precision=DOT_PREC)  # [BLOCK_M, BLOCK_N]
        qk = tl.where((kf != 1)[None, :], qk, float("-inf"))
    else:  # no padded key in the unmasked run (see the kernels): nothing to mask
        k = load_rows(k_ptrs, cols, offs_d, HEAD_DIM, BLOCK_D, False)
        v = load_rows(v_ptrs, cols, offs_d, HEAD_DIM, BLOCK_D, False)
        qk = tl.dot(q, tl.trans(k), input_precision=DOT_PREC)
    p, alpha, m_new = softmax_step(m_i, qk, qk_scale)
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=DOT_PREC)  # [BLOCK_M, BLOCK_D]
    return acc, l_i, m_new


@triton.jit
def _dq_tile(
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
    offs_n,
    offs_d,
    N,
    qk_scale,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_N: tl.constexpr,
    MASKED: tl.constexpr,
    DOT_PREC: tl.constexpr,
):
    cols = start_n + offs_n
    k_ptrs = k_base + cols[:, None] * stride_kn + offs_d[None, :]
    v_ptrs = v_base + cols[:, None] * stride_vn + offs_d[None, :]
    # padded keys (attended by no row) load as 0, see _common
    if MASKED:
        col_ok = cols < N
        kf = tl.load(flags_row + cols, mask=col_ok, other=1)
        k = load_rows(k_ptrs, kf != 1, offs_d, HEAD_DIM, BLOCK_D, True)  # [BLOCK_N, BLOCK_D]
        v = load_rows(v_ptrs, kf != 1, offs_d, HEAD_DIM, BLOCK_D, True)
        qk = tl.dot(q, tl.trans(k), input_precision=DOT_PREC)  # [BLOCK_M, BLOCK_N]
        p = tl.where((kf != 1)[None, :], tl.exp2(qk * qk_scale - lse[:, None]), 0.0)
    else:  # as in _fwd_tile: nothing to mask
        k = load_rows(k_ptrs, cols, offs_d, HEAD_DIM, BLOCK_D, False)
        v = load_rows(v_ptrs, cols, offs_d, HEAD_DIM, BLOCK_D, False)
        qk = tl.dot(q, tl.trans(k), input_precision=DOT_PREC)
        p = tl.exp2(qk * qk_scale - lse[:, None])
    dp = tl.dot(do, tl.trans(v), input_precision=DOT_PREC)  # [BLOCK_M, BLOCK_N]
    ds = p * (dp - delta[:, None])
    dq += tl.dot(ds.to(k.dtype), k, input_precision=DOT_PREC)  # [BLOCK_M, BLOCK_D]
    return dq


@triton.jit
def _slot_rows(GIdx, flags_row, b, G, N, rows):
    """Slots ``rows`` of batch b: in range (< G), valid (a global, non-padded token), and the token's
    position (0 where invalid, so that it can be used as an address)."""
    row_in = rows < G
    gi = tl.load(GIdx + b * G + rows, mask=row_in, other=-1)
    gf = tl.load(flags_row + gi, mask=(gi >= 0) & (gi < N), other=0)  # out of range: not global
    row_ok = (gi >= 0) & (gf == 2)
    return row_in, row_ok, tl.where(row_ok, gi, 0).to(tl.int64)


@triton.jit
def _slot_pos(GIdx, flags_row, b, G, N, rows, BY_INDEX: tl.constexpr):
    """Where slot rows ``rows`` are read: the rows themselves, or, BY_INDEX, the valid slots' token
    positions (0 for the others, whose lse is +inf)."""
    if BY_INDEX:
        return _slot_rows(GIdx, flags_row, b, G, N, rows)[2]
    else:
        return rows


@triton.jit
def _store_slot_rows(
    base,
    stride_n,
    x,
    rows,
    gi64,
    row_in,
    row_ok,
    offs_d,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BY_INDEX: tl.constexpr,
):
    """Store one [BLOCK_M, BLOCK_D] tile of slot rows: at rows ``rows`` of a (G, D) view (every slot in
    range), or, BY_INDEX, at the slots' token rows of an (N, D) view (valid slots only: the other rows
    belong to kernel A)."""
    if BY_INDEX:
        ptrs = base + gi64[:, None] * stride_n + offs_d[None, :]
        store_rows(ptrs, x.to(base.dtype.element_ty), row_ok, offs_d, HEAD_DIM, BLOCK_D)
    else:
        ptrs = base + rows[:, None] * stride_n + offs_d[None, :]
        store_rows(ptrs, x.to(base.dtype.element_ty), row_in, offs_d, HEAD_DIM, BLOCK_D)


# ----------------------------------------------------------------------------------------------------
# kernels
# ----------------------------------------------------------------------------------------------------


@triton.jit
def _glob_fwd_program(
    pid_g,
    pid_s,
    n_split,
    pid_bh,
    QG,  # (B, G, H, D), or (B, N, H, D) with BY_INDEX
    K,
    V,
    Out,  # DIRECT: (B, G, H, D) ((B, N, H, D) with BY_INDEX); else fp32 partials (B*H, S, G, BLOCK_D)
    Lse,  # DIRECT: fp32 (B, H, G); else fp32 partial LSEs (B*H, S, G)
    Flags,
    CumPad,
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
    chunk,
    qk_scale,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    DOT_PREC: tl.constexpr,
    DIRECT: tl.constexpr,
    BY_INDEX: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    KEY_STAGES: tl.constexpr,
):
    """Program (slot tile pid_g, key chunk pid_s of n_split, pid_bh) of kernel B's forward; also run
    inside the layer's forward launch (``longformer._layer_fwd_kernel``). BY_INDEX: slot s's q row and
    output row are rows GIdx[b, s] of (B, N, H, D) tensors (q_global; kernel A's output, whose rows of
    global queries this overwrites) instead of rows s of (B, G, H, D) ones. KEY_STAGES: the key loops'
    pipeline depth, None for the launch's (in A's launch B's may differ: ``longformer.LAYER_KEY_TILE``)."""
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    q_base = QG + b * stride_qb + h * stride_qh
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    flags_row = Flags + b * N
    cum_row = CumPad + b * (N + 1)

    rows = pid_g * BLOCK_M + tl.arange(0, BLOCK_M)  # slots
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    row_in, row_ok, gi64 = _slot_rows(GIdx, flags_row, b, G, N, rows)
    if BY_INDEX:
        q = load_rows(
            q_base + gi64[:, None] * stride_qn + offs_d[None, :], row_ok, offs_d, HEAD_DIM, BLOCK_D, True
        )
    else:
        q = load_rows(
            q_base + rows[:, None] * stride_qn + offs_d[None, :], row_in, offs_d, HEAD_DIM, BLOCK_D, True
        )

    kv_lo = tl.load(Bounds + b * 4 + 0)
    kv_hi = tl.load(Bounds + b * 4 + 1)
    nslots = tl.load(Bounds + b * 4 + 2)
    hi_b = tl.where(pid_g * BLOCK_M < nslots, kv_hi, 0)  # slot tile of -1 padding: no work
    lo, full_hi, hi_r = chunk_tiles(pid_s * chunk, chunk, kv_lo, hi_b, N, BLOCK_N)
    # the run of full tiles goes to the unmasked body, but for a last tile holding every padded key of
    # the run (the padded tail's first, partial tile); any other run with a padded key, whole to the
    # masked body
    run_a, run_b = unmasked_run(lo, full_hi, cum_row, BLOCK_N)
    full_hi = tl.where(run_a == lo, run_b, lo)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for start_n in tl.range(lo, full_hi, BLOCK_N, num_stages=KEY_STAGES):
        acc, l_i, m_i = _fwd_tile(
            acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_vn, flags_row, start_n,
            offs_n, offs_d, N, qk_scale, HEAD_DIM, BLOCK_D, BLOCK_N, False, DOT_PREC,
        )  # fmt: skip
    for start_n in tl.range(full_hi, hi_r, BLOCK_N, num_stages=KEY_STAGES):
        acc, l_i, m_i = _fwd_tile(
            acc, l_i, m_i, q, k_base, v_base, stride_kn, stride_vn, flags_row, start_n,
            offs_n, offs_d, N, qk_scale, HEAD_DIM, BLOCK_D, BLOCK_N, True, DOT_PREC,
        )  # fmt: skip

    if DIRECT:
        live = row_ok & ((l_i > 0.0) | (l_i != l_i))  # a NaN l stays NaN (see _common)
        l_safe = tl.where(live, l_i, 1.0)
        out = tl.where(live[:, None], acc / l_safe[:, None], 0.0)
        lse = poisoned_lse(tl.where(live, m_i + tl.log2(l_safe), float("inf")), out)
        _store_slot_rows(
            Out + b * stride_ob + h * stride_oh, stride_on, out, rows, gi64, row_in, row_ok, offs_d,
            HEAD_DIM, BLOCK_D, BY_INDEX,
        )  # fmt: skip
        tl.store(Lse + pid_bh.to(tl.int64) * G + rows, lse, mask=row_in)
    else:
        # partial: normalised by its own sum, weighted later by exp2(lse_part - lse_total)
        has = (l_i > 0.0) | (l_i != l_i)
        l_safe = tl.where(has, l_i, 1.0)
        part = (pid_bh.to(tl.int64) * n_split + pid_s) * G + rows  # [BLOCK_M]
        tl.store(Out + part[:, None] * BLOCK_D + offs_d[None, :], acc / l_safe[:, None], mask=row_in[:, None])
        tl.store(Lse + part, tl.where(has, m_i + tl.log2(l_safe), float("-inf")), mask=row_in)


@triton.jit
def _glob_fwd_kernel(
    QG,  # (B, G, H, D), or (B, N, H, D) with BY_INDEX
    K,
    V,
    Out,  # DIRECT: (B, G, H, D) ((B, N, H, D) with BY_INDEX); else fp32 partials (B*H, S, G, BLOCK_D)
    Lse,  # DIRECT: fp32 (B, H, G); else fp32 partial LSEs (B*H, S, G)
    Flags,
    CumPad,
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
    chunk,
    qk_scale,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    DOT_PREC: tl.constexpr,
    DIRECT: tl.constexpr,
    BY_INDEX: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    KEY_STAGES: tl.constexpr,
):
    _glob_fwd_program(
        tl.program_id(0), tl.program_id(1), tl.num_programs(1), tl.program_id(2),
        QG, K, V, Out, Lse, Flags, CumPad, Bounds, GIdx,
        stride_qb, stride_qn, stride_qh, stride_kb, stride_kn, stride_kh, stride_vb, stride_vn, stride_vh,
        stride_ob, stride_on, stride_oh, N, H, G, chunk, qk_scale,
        HEAD_DIM, BLOCK_D, DOT_PREC, DIRECT, BY_INDEX, BLOCK_M, BLOCK_N, KEY_STAGES,
    )  # fmt: skip


@triton.jit
def _glob_combine_kernel(
    OPart,  # fp32 (B*H, S, G, BLOCK_D)
    LsePart,  # fp32 (B*H, S, G)
    Out,
    Lse,
    Flags,
    GIdx,
    stride_ob,
    stride_on,
    stride_oh,
    S,
    N,
    H,
    G,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_S: tl.constexpr,
    BY_INDEX: tl.constexpr,
):
    # One slot row per program, its S partials merged with weights 2^(lse_s - max_s lse_s): BLOCK_S
    # partials per load (usually all of them), so no chain of dependent loads as a running merge has.
    # Sums in a fixed order: deterministic.
    pid_g = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    rows = pid_g + tl.arange(0, 1)  # [1]
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, BLOCK_D)
    row_in, row_ok, gi64 = _slot_rows(GIdx, Flags + b * N, b, G, N, rows)
    base = pid_bh.to(tl.int64) * S * G + pid_g  # partial s of this row: base + s * G
    m = tl.full([BLOCK_S], float("-inf"), dtype=tl.float32)
    for s0 in range(0, S, BLOCK_S):
        sp = s0 + offs_s
        m = tl.maximum(m, tl.load(LsePart + base + sp * G, mask=sp < S, other=float("-inf")))
    m_max = tl.max(m, 0)
    m_use = tl.where(m_max == float("-inf"), 0.0, m_max)  # nothing attended: weights 0, not NaN
    l_s = tl.zeros([BLOCK_S], dtype=tl.float32)
    acc = tl.zeros([BLOCK_S, BLOCK_D], dtype=tl.float32)
    for s0 in range(0, S, BLOCK_S):
        sp = s0 + offs_s
        lse_p = tl.load(LsePart + base + sp * G, mask=sp < S, other=float("-inf"))  # [BLOCK_S]
        o_ptrs = OPart + (base + sp * G)[:, None] * BLOCK_D + offs_d[None, :]
        o_p = tl.load(o_ptrs, mask=(sp < S)[:, None], other=0.0)  # [BLOCK_S, BLOCK_D]
        wgt = tl.exp2(lse_p - m_use)  # a NaN partial (it attended a NaN) stays NaN through its weight
        acc += wgt[:, None] * o_p  # [BLOCK_S, BLOCK_D]
        l_s += wgt
    l_i = tl.sum(l_s, 0) + tl.zeros([1], dtype=tl.float32)  # [1]
    acc_row = tl.sum(acc, 0)[None, :]  # [1, BLOCK_D]
    live = row_ok & ((l_i > 0.0) | (l_i != l_i))
    l_safe = tl.where(live, l_i, 1.0)
    out = tl.where(live[:, None], acc_row / l_safe[:, None], 0.0)
    lse = poisoned_lse(tl.where(live, m_max + tl.log2(l_safe), float("inf")), out)
    _store_slot_rows(
        Out + b * stride_ob + h * stride_oh, stride_on, out, rows, gi64, row_in, row_ok, offs_d,
        HEAD_DIM, BLOCK_D, BY_INDEX,
    )  # fmt: skip
    tl.store(Lse + pid_bh.to(tl.int64) * G + rows, lse, mask=row_in)


@triton.jit
def _glob_dq_kernel(
    QG,  # (B, G, H, D) slot rows, or (B, N, H, D) with BY_INDEX (read at the slots' positions)
    K,
    V,
    DO,  # as QG
    DQ,  # DIRECT: (B, G, H, D), or (B, N, H, D) with BY_INDEX; else fp32 partials (B*H, S, G, BLOCK_D)
    Lse,  # fp32 (B, H, G)
    Delta,  # fp32 (B, H, G), or (B, H, N) with BY_INDEX (kernel A's dQ pass stores every row's)
    Flags,
    CumPad,
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
    stride_dqb,
    stride_dqn,
    stride_dqh,
    N,
    H,
    G,
    chunk,
    qk_scale,
    scale,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    DOT_PREC: tl.constexpr,
    DIRECT: tl.constexpr,
    BY_INDEX: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    pid_g = tl.program_id(0)
    pid_s = tl.program_id(1)
    pid_bh = tl.program_id(2)
    n_split = tl.num_programs(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    q_base = QG + b * stride_qb + h * stride_qh
    do_base = DO + b * stride_dob + h * stride_doh
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    flags_row = Flags + b * N
    cum_row = CumPad + b * (N + 1)

    rows = pid_g * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    row_in, row_ok, gi64 = _slot_rows(GIdx, flags_row, b, G, N, rows)
    if BY_INDEX:
        pos, pos_ok, delta_row = gi64, row_ok, Delta + pid_bh.to(tl.int64) * N
    else:
        pos, pos_ok, delta_row = rows, row_in, Delta + pid_bh.to(tl.int64) * G
    q = load_rows(
        q_base + pos[:, None] * stride_qn + offs_d[None, :], pos_ok, offs_d, HEAD_DIM, BLOCK_D, True
    )
    do = load_rows(
        do_base + pos[:, None] * stride_don + offs_d[None, :], pos_ok, offs_d, HEAD_DIM, BLOCK_D, True
    )
    # invalid slots stored lse = +inf in the forward, so their p (and dQ) is exactly 0
    lse = tl.load(Lse + pid_bh.to(tl.int64) * G + rows, mask=row_in, other=float("inf"))
    delta = tl.load(delta_row + pos, mask=pos_ok, other=0.0)

    kv_lo = tl.load(Bounds + b * 4 + 0)
    kv_hi = tl.load(Bounds + b * 4 + 1)
    nslots = tl.load(Bounds + b * 4 + 2)
    hi_b = tl.where(pid_g * BLOCK_M < nslots, kv_hi, 0)
    lo, full_hi, hi_r = chunk_tiles(pid_s * chunk, chunk, kv_lo, hi_b, N, BLOCK_N)
    # the run of full tiles goes to the unmasked body, but for a last tile holding every padded key of
    # the run (the padded tail's first, partial tile); any other run with a padded key, whole to the
    # masked body
    run_a, run_b = unmasked_run(lo, full_hi, cum_row, BLOCK_N)
    full_hi = tl.where(run_a == lo, run_b, lo)

    dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for start_n in range(lo, full_hi, BLOCK_N):
        dq = _dq_tile(
            dq, q, do, lse, delta, k_base, v_base, stride_kn, stride_vn, flags_row, start_n,
            offs_n, offs_d, N, qk_scale, HEAD_DIM, BLOCK_D, BLOCK_N, False, DOT_PREC,
        )  # fmt: skip
    for start_n in range(full_hi, hi_r, BLOCK_N):
        dq = _dq_tile(
            dq, q, do, lse, delta, k_base, v_base, stride_kn, stride_vn, flags_row, start_n,
            offs_n, offs_d, N, qk_scale, HEAD_DIM, BLOCK_D, BLOCK_N, True, DOT_PREC,
        )  # fmt: skip

    # invalid slots: 0, even where a non-finite score made their p NaN
    dq = tl.where((lse != float("inf"))[:, None], dq, 0.0)
    if DIRECT:
        _store_slot_rows(
            DQ + b * stride_dqb + h * stride_dqh, stride_dqn, dq * scale, rows, gi64, row_in, row_ok,
            offs_d, HEAD_DIM, BLOCK_D, BY_INDEX,
        )  # fmt: skip
    else:
        part = (pid_bh.to(tl.int64) * n_split + pid_s) * G + rows
        tl.store(DQ + part[:, None] * BLOCK_D + offs_d[None, :], dq, mask=row_in[:, None])


def _autotune_warps(fn):
    """Autotuning over the warp count alone: the tile sizes fix the layout of the dQ partials, so they
    stay the launcher's (``_slot_config``). Kernel B's dK/dV is memory- and latency-bound with few
    programs per SM (on an H100 at the headline, 4 warps and 186 registers: 8 warps per SM; 8 warps
    take 98 registers, offline); which count is faster is the GPU's to say. DK and DV are restored
    between the timed runs (they may be accumulated into)."""
    if not _common.AUTOTUNE:
        return fn
    return triton.autotune(
        configs=[triton.Config({}, num_warps=w, num_stages=2) for w in (4, 8)],
        key=["HEAD_DIM", "BLOCK_M", "BLOCK_N", "ACCUMULATE", "BY_INDEX", "DQ_PARTIALS"],
        restore_value=["DK", "DV"],
    )(fn)


@_autotune_warps
@triton.jit
def _glob_dkdv_kernel(
    QG,  # (B, G, H, D) slot rows, or (B, N, H, D) with BY_INDEX (read at the slots' positions)
    K,
    V,
    DO,  # as QG
    DK,
    DV,
    Lse,  # fp32 (B, H, G)
    Delta,  # fp32 (B, H, G), or (B, H, N) with BY_INDEX
    Flags,
    Bounds,
    GIdx,
    DQPart,  # DQ_PARTIALS: fp32 (B*H, key tiles, G, BLOCK_D), this key tile's dQ of every slot (unscaled)
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
    qk_scale,
    scale,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    DOT_PREC: tl.constexpr,
    ACCUMULATE: tl.constexpr,
    BY_INDEX: tl.constexpr,
    DQ_PARTIALS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    # One program per key tile walking all slot tiles: every key row is owned by one program.
    # ACCUMULATE: add to what DK/DV hold (kernel A's gradient, when both kernels share k and v) in fp32.
    # DQ_PARTIALS (G <= BLOCK_M, one slot tile): also the slots' dQ over this key tile, from the same
    # dS, so that kernel B's dQ needs no second sweep over K and V (a fixed-order reduction follows).
    pid_n = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    q_base = QG + b * stride_qb + h * stride_qh
    do_base = DO + b * stride_dob + h * stride_doh
    k_base = K + b * stride_kb + h * stride_kh
    v_base = V + b * stride_vb + h * stride_vh
    lse_row = Lse + pid_bh.to(tl.int64) * G
    if BY_INDEX:
        delta_row = Delta + pid_bh.to(tl.int64) * N
    else:
        delta_row = Delta + pid_bh.to(tl.int64) * G

    n0 = pid_n * BLOCK_N
    offs_n = n0 + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    col_ok = offs_n < N
    # non-finite rows load as 0: the slots that attend one carry a NaN statistic (see _common)
    k, v = load_finite_kv(
        k_base + offs_n[:, None] * stride_kn + offs_d[None, :],
        v_base + offs_n[:, None] * stride_vn + offs_d[None, :],
        col_ok, offs_d, HEAD_DIM, BLOCK_D,
    )  # fmt: skip
    kf = tl.load(Flags + b * N + offs_n, mask=col_ok, other=1)
    key_keep = kf != 1  # [BLOCK_N]
    n_keep = tl.sum(key_keep.to(tl.int32), 0)
    need_mask = n_keep != BLOCK_N  # some key of this tile is padding: mask its columns

    nslots = tl.load(Bounds + b * 4 + 2)
    s_hi = tl.where(n_keep > 0, ((nslots + BLOCK_M - 1) // BLOCK_M) * BLOCK_M, 0)
    s_full = tl.minimum((G // BLOCK_M) * BLOCK_M, s_hi)

    dk = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], dtype=tl.float32)
    if DQ_PARTIALS:
        dq = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
        if s_hi > 0:
            dk, dv, ds_t = _dkdv_tile(
                dk, dv, k, v, key_keep, need_mask, q_base, do_base, lse_row, delta_row, stride_qn,
                stride_don, 0, _slot_pos(GIdx, Flags + b * N, b, G, N, offs_m, BY_INDEX), offs_m, offs_n,
                offs_d, G, 0, qk_scale, HEAD_DIM, BLOCK_D, True, False, DOT_PREC,
            )  # fmt: skip
            # [BLOCK_M, BLOCK_D]; k's non-finite rows are 0 here, and the slots that attend one have a
            # NaN lse, so their dS (and dQ) is NaN as in _glob_dq_kernel
            dq = tl.dot(tl.trans(ds_t.to(k.dtype)), k, input_precision=DOT_PREC)
        lse = tl.load(lse_row + offs_m, mask=offs_m < G, other=float("inf"))
        dq = tl.where((lse != float("inf"))[:, None], dq, 0.0)  # invalid slots: 0 (as _glob_dq_kernel)
        part = (pid_bh.to(tl.int64) * tl.num_programs(0) + pid_n) * G + offs_m
        tl.store(DQPart + part[:, None] * BLOCK_D + offs_d[None, :], dq, mask=(offs_m < G)[:, None])
    else:
        for s0 in range(0, s_full, BLOCK_M):
            dk, dv, _ = _dkdv_tile(
                dk, dv, k, v, key_keep, need_mask, q_base, do_base, lse_row, delta_row, stride_qn,
                stride_don, s0, _slot_pos(GIdx, Flags + b * N, b, G, N, s0 + offs_m, BY_INDEX), offs_m,
                offs_n, offs_d, G, 0, qk_scale, HEAD_DIM, BLOCK_D, False, False, DOT_PREC,
            )  # fmt: skip
        for s0 in range(s_full, s_hi, BLOCK_M):
            dk, dv, _ = _dkdv_tile(
                dk, dv, k, v, key_keep, need_mask, q_base, do_base, lse_row, delta_row, stride_qn,
                stride_don, s0, _slot_pos(GIdx, Flags + b * N, b, G, N, s0 + offs_m, BY_INDEX), offs_m,
                offs_n, offs_d, G, 0, qk_scale, HEAD_DIM, BLOCK_D, True, False, DOT_PREC,
            )  # fmt: skip

    dk = dk * scale
    dk_ptrs = DK + b * stride_dkb + h * stride_dkh + offs_n[:, None] * stride_dkn + offs_d[None, :]
    dv_ptrs = DV + b * stride_dvb + h * stride_dvh + offs_n[:, None] * stride_dvn + offs_d[None, :]
    if ACCUMULATE:
        dk += load_rows(dk_ptrs, col_ok, offs_d, HEAD_DIM, BLOCK_D, True).to(tl.float32)
        dv += load_rows(dv_ptrs, col_ok, offs_d, HEAD_DIM, BLOCK_D, True).to(tl.float32)
    store_rows(dk_ptrs, dk.to(DK.dtype.element_ty), col_ok, offs_d, HEAD_DIM, BLOCK_D)
    store_rows(dv_ptrs, dv.to(DV.dtype.element_ty), col_ok, offs_d, HEAD_DIM, BLOCK_D)


# ----------------------------------------------------------------------------------------------------
# launchers (registered ops)
# ----------------------------------------------------------------------------------------------------


def _slot_config(kind: str, g: int, head_dim: int, like: torch.Tensor) -> dict:
    """Fixed config with the slot tile widened from G: 16 rows (the smallest MMA) for the usual
    handful of globals, up to 64 for QA-style hundreds of global tokens; then refitted to smem."""
    return dict(_slot_config_cached(kind, g, head_dim, like.device, like.element_size()))


@_common.device_cache
def _slot_config_cached(kind: str, g: int, head_dim: int, device: torch.device, elem_bytes: int) -> dict:
    cfg = _common.kernel_config(kind, head_dim, device, elem_bytes)
    if _common.INTERPRET:
        return cfg
    cfg["BLOCK_M"] = min(64, max(cfg["BLOCK_M"], _common.next_power_of_2(max(g, 1))))
    if kind == "glob_dkdv" and cfg["BLOCK_M"] >= 32:
        # the [BLOCK_N, D] dK/dV accumulators plus a wide slot tile spill kilobytes at 4 warps (sm_90,
        # G = 64: benchmarks.inspect_kernels); 8 warps hold them in registers
        cfg["num_warps"] = 8
    return _common.fit_config(kind, cfg, head_dim, elem_bytes, device)


def _tile_only(cfg: dict) -> dict:
    """The block sizes of a config, for a launch whose warp count the autotuner chooses."""
    return {"BLOCK_M": cfg["BLOCK_M"], "BLOCK_N": cfg["BLOCK_N"]}


def launch_global_fwd(
    q_rows: torch.Tensor,
    k_global: torch.Tensor,
    v_global: torch.Tensor,
    global_idx: torch.Tensor,
    key_flags: torch.Tensor,
    cum_pad: torch.Tensor,
    bounds: torch.Tensor,
    scale: float,
    out: torch.Tensor,
    lse: torch.Tensor,
    by_index: bool,
) -> None:
    """Kernel B forward; writes lse (B, H, G) and the output. q_rows (B, G, H, D) are the slot rows and
    ``out`` is (B, G, H, D); or, ``by_index``, q_rows is q_global (B, N, H, D) and the valid slots' rows
    are read from it and written to ``out`` (B, N, H, D) at the slots' positions."""
    bsz, _, h, d = q_rows.shape
    g = global_idx.shape[1]
    n = k_global.shape[1]
    dev = q_rows.device
    bd = block_d(d)
    cfg = _slot_config("glob_fwd", g, d, q_rows)
    n_gtiles = _common.cdiv(g, cfg["BLOCK_M"])
    splits, chunk = _common.split_plan(n, cfg["BLOCK_N"], n_gtiles * bsz * h, dev)
    direct = splits == 1
    o_t, lse_t = (out, lse) if direct else partial_outputs(bsz * h, splits, g, bd, dev)
    launch(
        _glob_fwd_kernel, (n_gtiles, splits, bsz * h),
        q_rows, k_global, v_global, o_t, lse_t, key_flags, cum_pad, bounds, global_idx,
        *strides3(q_rows), *strides3(k_global), *strides3(v_global), *strides3(out),
        n, h, g, chunk, log2_scale(scale),
        HEAD_DIM=d, BLOCK_D=bd, DOT_PREC=dot_precision(q_rows.dtype), DIRECT=direct,
        BY_INDEX=by_index, KEY_STAGES=None, **cfg,
    )  # fmt: skip
    if not direct:
        launch_global_combine(o_t, lse_t, out, lse, key_flags, global_idx, by_index)


def partial_outputs(
    bh: int, splits: int, g: int, bd: int, dev: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernel B's forward split over key chunks: fp32 outputs (B*H, S, G, BLOCK_D), each normalised by
    its own sum, and their LSEs (B*H, S, G)."""
    return (
        _common.empty((bh, splits, g, bd), torch.float32, dev),
        _common.empty((bh, splits, g), torch.float32, dev),
    )


def launch_global_combine(
    o_t: torch.Tensor,
    lse_t: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    key_flags: torch.Tensor,
    global_idx: torch.Tensor,
    by_index: bool,
) -> None:
    """Merge the key-chunk partials of ``partial_outputs`` (sums in a fixed order: deterministic) into
    kernel B's rows of ``out`` and ``lse`` (B, H, G); ``by_index`` as in ``launch_global_fwd``."""
    bh, splits, g, bd = o_t.shape
    n, h, d = key_flags.shape[1], out.shape[2], out.shape[3]
    launch(
        _glob_combine_kernel, (g, bh),
        o_t, lse_t, out, lse, key_flags, global_idx, *strides3(out), splits, n, h, g,
        HEAD_DIM=d, BLOCK_D=bd, BLOCK_S=_common.partials_per_load(splits), BY_INDEX=by_index, num_warps=4,
    )  # fmt: skip


@torch.library.custom_op("led_kernels::triton_global_fwd", mutates_args=())
def triton_global_fwd(
    q_global: torch.Tensor,
    k_global: torch.Tensor,
    v_global: torch.Tensor,
    global_idx: torch.Tensor,
    key_flags: torch.Tensor,
    cum_pad: torch.Tensor,
    bounds: torch.Tensor,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    bsz, g, h, d = q_global.shape
    dev = q_global.device
    out = _common.empty((bsz, g, h, d), q_global.dtype, dev)
    lse = _common.empty((bsz, h, g), torch.float32, dev)
    if out.numel() == 0:
        return out, lse
    launch_global_fwd(
        q_global, k_global, v_global, global_idx, key_flags, cum_pad, bounds, scale, out, lse, False
    )
    return out, lse


@triton_global_fwd.register_fake
def _(q_global, k_global, v_global, global_idx, key_flags, cum_pad, bounds, scale):
    bsz, g, h, d = q_global.shape
    return q_global.new_empty((bsz, g, h, d)), q_global.new_empty((bsz, h, g), dtype=torch.float32)


#: kernel B's backward takes its dQ from the dK/dV pass (per key tile, then reduced) up to this many
#: slots; beyond, the partials (key tiles x G rows) would outweigh the second sweep over K and V that
#: _glob_dq_kernel makes. LED_KERNELS_DQ_IN_DKDV_MAX_SLOTS=0 turns it off (to time the two)
DQ_IN_DKDV_MAX_SLOTS = _common.env_count("LED_KERNELS_DQ_IN_DKDV_MAX_SLOTS", 16)


def launch_global_bwd(
    dout: torch.Tensor,
    q_global: torch.Tensor,
    k_global: torch.Tensor,
    v_global: torch.Tensor,
    lse: torch.Tensor,
    delta: torch.Tensor,
    global_idx: torch.Tensor,
    key_flags: torch.Tensor,
    cum_pad: torch.Tensor,
    bounds: torch.Tensor,
    scale: float,
    dq: torch.Tensor,
    dk: torch.Tensor,
    dv: torch.Tensor,
    by_index: bool,
    accumulate_kv: bool,
) -> None:
    """Kernel B backward; lse (B, H, G) is its forward's.

    The slot rows: dout and q_global (B, G, H, D) with delta (B, H, G), and dQ written to dq (B, G, H, D);
    or, ``by_index`` (the layer, whose backward already has delta of every row), dout and q_global
    (B, N, H, D) and delta (B, H, N) read at the valid slots' token positions, and dQ written at those
    rows of dq (B, N, H, D) (the other rows are left alone). dK/dV (B, N, H, D): every row written, or,
    ``accumulate_kv``, added to (kernel A's gradient of shared k, v)."""
    bsz, n, h, d = k_global.shape
    g = global_idx.shape[1]
    dev = k_global.device
    bd = block_d(d)
    prec = dot_precision(k_global.dtype)

    # dK/dV of every key (G = 0 included: the loop is empty and the rows are written as zeros); with a
    # few slots (one slot tile) also their dQ per key tile, reduced below
    cfg = _slot_config("glob_dkdv", g, d, k_global)
    key_tiles = _common.cdiv(n, cfg["BLOCK_N"])
    dq_partials = 0 < g <= min(cfg["BLOCK_M"], DQ_IN_DKDV_MAX_SLOTS)
    dq_t = _common.empty((bsz * h, key_tiles, g, bd), torch.float32, dev) if dq_partials else dk
    launch(
        _glob_dkdv_kernel, (key_tiles, bsz * h),
        q_global, k_global, v_global, dout, dk, dv, lse, delta, key_flags, bounds, global_idx, dq_t,
        *strides3(q_global), *strides3(k_global), *strides3(v_global), *strides3(dout),
        *strides3(dk), *strides3(dv),
        n, h, g, log2_scale(scale), scale,
        HEAD_DIM=d, BLOCK_D=bd, DOT_PREC=prec, ACCUMULATE=accumulate_kv, BY_INDEX=by_index,
        DQ_PARTIALS=dq_partials, **(_tile_only(cfg) if _common.AUTOTUNE else cfg),
    )  # fmt: skip
    if dq_partials:
        reduce_partials(dq_t, dq, global_idx, key_flags, scale, scatter=by_index)
    if g == 0 or dq_partials:
        return
    cfg = _slot_config("glob_dq", g, d, k_global)
    n_gtiles = _common.cdiv(g, cfg["BLOCK_M"])
    splits, chunk = _common.split_plan(n, cfg["BLOCK_N"], n_gtiles * bsz * h, dev)
    direct = splits == 1
    dq_t = dq if direct else _common.empty((bsz * h, splits, g, bd), torch.float32, dev)
    launch(
        _glob_dq_kernel, (n_gtiles, splits, bsz * h),
        q_global, k_global, v_global, dout, dq_t, lse, delta, key_flags, cum_pad, bounds, global_idx,
        *strides3(q_global), *strides3(k_global), *strides3(v_global), *strides3(dout),
        *strides3(dq),
        n, h, g, chunk, log2_scale(scale), scale,
        HEAD_DIM=d, BLOCK_D=bd, DOT_PREC=prec, DIRECT=direct, BY_INDEX=by_index, **cfg,
    )  # fmt: skip
    if not direct:
        reduce_partials(dq_t, dq, global_idx, key_flags, scale, scatter=by_index)


@torch.library.custom_op("led_kernels::triton_global_bwd", mutates_args=())
def triton_global_bwd(
    dout: torch.Tensor,
    q_global: torch.Tensor,
    k_global: torch.Tensor,
    v_global: torch.Tensor,
    out: torch.Tensor,
    lse: torch.Tensor,
    global_idx: torch.Tensor,
    key_flags: torch.Tensor,
    cum_pad: torch.Tensor,
    bounds: torch.Tensor,
    scale: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    bsz, g, h, d = q_global.shape
    n = k_global.shape[1]
    dev = q_global.device
    dq = _common.empty((bsz, g, h, d), q_global.dtype, dev)
    dk = _common.empty((bsz, n, h, d), k_global.dtype, dev)
    dv = _common.empty((bsz, n, h, d), v_global.dtype, dev)
    if bsz * h == 0:
        return dq, dk, dv
    delta = bwd_delta(out, dout)
    launch_global_bwd(
        dout, q_global, k_global, v_global, lse, delta, global_idx, key_flags, cum_pad, bounds, scale,
        dq, dk, dv, by_index=False, accumulate_kv=False,
    )  # fmt: skip
    return dq, dk, dv


@triton_global_bwd.register_fake
def _(dout, q_global, k_global, v_global, out, lse, global_idx, key_flags, cum_pad, bounds, scale):
    return (
        q_global.new_empty(q_global.shape),
        k_global.new_empty(k_global.shape),
        v_global.new_empty(v_global.shape),
    )


# ----------------------------------------------------------------------------------------------------
# autograd + public entry point
# ----------------------------------------------------------------------------------------------------


class GlobalAttentionFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q_global, k_global, v_global, global_idx, key_flags, scale):
        _, cum_pad, bounds = call_op(_common.triton_prep, key_flags, global_idx)
        out, lse = call_op(
            triton_global_fwd, q_global, k_global, v_global, global_idx, key_flags, cum_pad, bounds, scale
        )
        ctx.save_for_backward(q_global, k_global, v_global, out, lse, global_idx, key_flags, cum_pad, bounds)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, dout):
        q_global, k_global, v_global, out, lse, global_idx, key_flags, cum_pad, bounds = ctx.saved_tensors
        refuse_double_backward(triton_global_bwd, dout, (q_global, k_global, v_global))
        if dout.stride(-1) != 1:
            dout = dout.contiguous()
        dq, dk, dv = call_op(
            triton_global_bwd, dout, q_global, k_global, v_global, out, lse, global_idx, key_flags, cum_pad,
            bounds, ctx.scale,
        )  # fmt: skip
        return dq, dk, dv, None, None, None


def global_attention(
    q_global: torch.Tensor,
    k_global: torch.Tensor,
    v_global: torch.Tensor,
    global_idx: torch.Tensor,
    key_flags: torch.Tensor,
    scale: float,
) -> torch.Tensor:
    """Rows of the global queries (Triton kernel B), differentiable in q_global, k_global, v_global.

    Args:
        q_global: (B, G, H, D), one row per slot of ``global_idx`` (already gathered).
        k_global, v_global: (B, N, H, D). All three: same float dtype and device, last dim contiguous
            (read in place through their strides).
        global_idx: int32 (B, G), ascending global positions then -1. Slot s is valid iff
            global_idx[b, s] >= 0 and key_flags[b, global_idx[b, s]] == 2.
        key_flags: int8 (B, N), 0 local, 1 padding, 2 global.
        scale: softmax scale (>= 0), usually 1/sqrt(D).

    Returns:
        (B, G, H, D) in q_global's dtype: valid slots attend every non-padded key (fp32 softmax);
        invalid slots are 0.
    """
    check_head_dim(q_global.shape[-1])
    check_scale(scale)
    return GlobalAttentionFunction.apply(q_global, k_global, v_global, global_idx, key_flags, float(scale))
