"""The ``cpu`` backend: C++ kernels of ``led_kernels._C`` (csrc/cpu/attention*.cpp), forward and backward.

``banded_attention`` (kernel A: band minus global/padded keys, plus the valid global keys, one softmax
per row) and ``global_attention`` (kernel B: the global slots' rows over every non-padded key), each a
``torch.library.custom_op`` (``led_kernels::cpu_banded_fwd`` / ``cpu_banded_bwd`` / ``cpu_global_fwd`` /
``cpu_global_bwd``) with a fake implementation and a registered autograd formula, so
``torch.compile(fullgraph=True)`` traces through them.

The kernels (see csrc/cpu/attention_impl.h) are FlashAttention-2 style: 64 x 64 tiles, a register-blocked
micro-GEMM, an online base-2 softmax with a vectorized exp2, OpenMP over (batch, head, tile) with
``torch.get_num_threads()`` threads. The banded backward is fused (dQ, and dK/dV accumulated in a ring of
key rows, per run of consecutive query tiles); every gradient element is produced by one task in a fixed
order, so gradients are bitwise reproducible, for any thread count. The backward's delta = sum_j P dP is
reduced from the recomputed probabilities inside the kernels (not from the forward's output, see
bwd_q_tile), so the ``attention_delta`` kernel is not needed here. The kernels are compiled for AVX-512,
AVX2+FMA and plain 16-byte vectors and the best one the CPU supports is chosen at run time
(``led_kernels._C.cpu_attention_isa()``; the environment variable ``LED_KERNELS_CPU_ISA`` may lower it).

Inputs are read in place through their strides (views of a fused projection are never copied); compute
is float32 for float32/float16/bfloat16 inputs and outputs have the input dtype. float64 is not
supported (``TypeError``): use the ``torch`` backend for it.

A NaN or inf in a row of q, k, v (or of the upstream gradient) reaches only the rows that attend it
(they come out NaN) and the gradients that depend on those: masked pairs have probability exactly 0,
and the products of a tile that holds a non-finite operand row skip zero factors instead of
multiplying them (``ukernel``'s safe path, taken only for such tiles; finite results are bitwise the
same).
"""

import torch
from torch import Tensor

from led_kernels import _extension as ext
from led_kernels.ops._compiled import prepare_indices, rows_last_dim_contiguous, strides3
from led_kernels.ops._dispatch import refuse_double_backward

_KIND_BANDED = 0  # AttnKind::kBanded in csrc/include/led_kernels/cpu_attention.h
_KIND_GLOBAL = 1  # AttnKind::kGlobalRows
_SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# The forward saves per row, in base-2 units of the scaled scores t = scale * log2(e) * q.k, the row
# max m = max_j t_j and log2(l), l = sum_j 2^(t_j - m) (+inf and 0 for a row that attends nothing):
# "lse" (B, H, 2, rows) with [:, :, 0] = m and [:, :, 1] = log2(l), so LSE = (m + log2(l)) * ln(2).
# Keeping the two apart lets the backward form 2^((t - m) - log2(l)), whose first difference is exact
# near the max, instead of 2^(t - lse) with lse rounded to fp32 at the scores' magnitude (a relative error
# of ~|lse| * 2^-24 in every probability).


def _gidx_args(global_idx: Tensor | None) -> tuple[int, int]:
    # (pointer, G) for the kernels; 0 / 0 when there are no global slots
    if global_idx is None or global_idx.numel() == 0:
        return 0, 0 if global_idx is None else global_idx.shape[1]
    return global_idx.data_ptr(), global_idx.shape[1]


def _check_dtype(t: Tensor, name: str) -> None:
    if t.dtype not in _SUPPORTED_DTYPES:
        raise TypeError(
            f"backend 'cpu' supports float32, float16 and bfloat16 inputs, got {name} of dtype {t.dtype} "
            "(use backend='torch' for float64)"
        )
    if t.device.type != "cpu":
        raise ValueError(f"backend 'cpu' needs CPU tensors, got {name} on {t.device}")


# ----------------------------------------------------------------------------------------------------
# kernel A: banded rows
# ----------------------------------------------------------------------------------------------------


@torch.library.custom_op("led_kernels::cpu_banded_fwd", mutates_args=(), device_types="cpu")
def cpu_banded_fwd(
    q: Tensor, k: Tensor, v: Tensor, key_flags: Tensor, global_idx: Tensor | None, window: int, scale: float
) -> tuple[Tensor, Tensor]:
    # q, k, v (B, N, H, D) -> out (B, N, H, D) input dtype, lse (B, H, 2, N) float32 row statistics (_STATS)
    b, n, h, d = q.shape
    out = torch.empty((b, n, h, d), dtype=q.dtype)
    lse = torch.empty((b, h, 2, n), dtype=torch.float32)
    if out.numel() == 0:
        return out, lse.fill_(float("inf"))
    gptr, g = _gidx_args(global_idx)
    ext.C.attention_fwd_cpu(
        _KIND_BANDED, q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), lse.data_ptr(),
        key_flags.data_ptr(), gptr, b, n, n, h, d, g, window, scale,
        strides3(q), strides3(k), strides3(v), strides3(out),
        ext.dtype_code(q.dtype), torch.get_num_threads(),
    )  # fmt: skip
    return out, lse


@cpu_banded_fwd.register_fake
def _(q, k, v, key_flags, global_idx, window, scale):
    b, n, h, d = q.shape
    return q.new_empty((b, n, h, d)), q.new_empty((b, h, 2, n), dtype=torch.float32)


@torch.library.custom_op("led_kernels::cpu_banded_bwd", mutates_args=(), device_types="cpu")
def cpu_banded_bwd(
    dout: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    lse: Tensor,
    key_flags: Tensor,
    global_idx: Tensor | None,
    window: int,
    scale: float,
) -> tuple[Tensor, Tensor, Tensor]:
    # dout, q, k, v (B, N, H, D), lse (B, H, 2, N) -> dq, dk, dv (B, N, H, D) in the input dtype
    b, n, h, d = q.shape
    dq = torch.empty((b, n, h, d), dtype=q.dtype)
    dk = torch.empty((b, n, h, d), dtype=q.dtype)
    dv = torch.empty((b, n, h, d), dtype=q.dtype)
    if dq.numel() == 0:
        return dq, dk, dv
    gptr, g = _gidx_args(global_idx)
    ext.C.attention_bwd_cpu(
        _KIND_BANDED, q.data_ptr(), k.data_ptr(), v.data_ptr(), dout.data_ptr(), lse.data_ptr(),
        dq.data_ptr(), dk.data_ptr(), dv.data_ptr(), key_flags.data_ptr(), gptr,
        b, n, n, h, d, g, window, scale,
        strides3(q), strides3(k), strides3(v), strides3(dout),
        strides3(dq), strides3(dk), strides3(dv),
        ext.dtype_code(q.dtype), torch.get_num_threads(),
    )  # fmt: skip
    return dq, dk, dv


@cpu_banded_bwd.register_fake
def _(dout, q, k, v, lse, key_flags, global_idx, window, scale):
    # contiguous like the real op (empty_like would keep a dense permuted input's strides, and compiled
    # code that trusted them would read the gradients in the wrong order)
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _banded_setup_context(ctx, inputs, output):
    q, k, v, key_flags, global_idx, window, scale = inputs
    _, lse = output
    ctx.save_for_backward(q, k, v, lse, key_flags, global_idx)
    ctx.window = window
    ctx.scale = scale


def _banded_backward(ctx, dout, dlse):
    q, k, v, lse, key_flags, global_idx = ctx.saved_tensors
    refuse_double_backward(torch.ops.led_kernels.cpu_banded_bwd, dout, (q, k, v))
    dq, dk, dv = torch.ops.led_kernels.cpu_banded_bwd(
        rows_last_dim_contiguous(dout), q, k, v, lse, key_flags, global_idx, ctx.window, ctx.scale
    )
    return dq, dk, dv, None, None, None, None


cpu_banded_fwd.register_autograd(_banded_backward, setup_context=_banded_setup_context)


def banded_attention(
    q: Tensor, k: Tensor, v: Tensor, window: int, key_flags: Tensor, global_idx: Tensor | None, scale: float
) -> Tensor:
    """Longformer/LED banded attention of every query row (kernel A), differentiable in q, k, v.

    Args:
        q, k, v: (B, N, H, D) float32/float16/bfloat16 CPU tensors, last dim contiguous, any other
            strides (read in place). Any head dim.
        window: one-sided window w >= 0 (w >= N: dense).
        key_flags: int8 (B, N): 0 local, 1 padding, 2 global.
        global_idx: int32 (B, G) sorted global positions then -1, or None. Slot s is used iff
            global_idx[b, s] >= 0 and key_flags[b, global_idx[b, s]] == 2.
        scale: score scale.

    Returns:
        (B, N, H, D) in the input dtype: row i (not padding) attends {|i - j| <= w, key j local} plus
        the valid global keys under one float32 softmax; padding rows and rows with nothing to attend are 0.
    """
    for name, t in (("q", q), ("k", k), ("v", v)):
        _check_dtype(t, name)
    key_flags, global_idx = prepare_indices(key_flags, global_idx)
    out, _ = torch.ops.led_kernels.cpu_banded_fwd(q, k, v, key_flags, global_idx, int(window), float(scale))
    return out


# ----------------------------------------------------------------------------------------------------
# kernel B: global rows
# ----------------------------------------------------------------------------------------------------


@torch.library.custom_op("led_kernels::cpu_global_fwd", mutates_args=(), device_types="cpu")
def cpu_global_fwd(
    q_global: Tensor, k_global: Tensor, v_global: Tensor, global_idx: Tensor, key_flags: Tensor, scale: float
) -> tuple[Tensor, Tensor]:
    # q_global (B, G, H, D), k_global/v_global (B, N, H, D) -> out (B, G, H, D), lse (B, H, 2, G) float32
    b, g, h, d = q_global.shape
    n = k_global.shape[1]
    out = torch.empty((b, g, h, d), dtype=q_global.dtype)
    lse = torch.empty((b, h, 2, g), dtype=torch.float32)
    if out.numel() == 0:
        return out, lse.fill_(float("inf"))
    ext.C.attention_fwd_cpu(
        _KIND_GLOBAL, q_global.data_ptr(), k_global.data_ptr(), v_global.data_ptr(), out.data_ptr(),
        lse.data_ptr(), key_flags.data_ptr(), global_idx.data_ptr(), b, g, n, h, d, g, 0, scale,
        strides3(q_global), strides3(k_global), strides3(v_global), strides3(out),
        ext.dtype_code(q_global.dtype), torch.get_num_threads(),
    )  # fmt: skip
    return out, lse


@cpu_global_fwd.register_fake
def _(q_global, k_global, v_global, global_idx, key_flags, scale):
    b, g, h, d = q_global.shape
    return q_global.new_empty((b, g, h, d)), q_global.new_empty((b, h, 2, g), dtype=torch.float32)


@torch.library.custom_op("led_kernels::cpu_global_bwd", mutates_args=(), device_types="cpu")
def cpu_global_bwd(
    dout: Tensor,
    q_global: Tensor,
    k_global: Tensor,
    v_global: Tensor,
    lse: Tensor,
    global_idx: Tensor,
    key_flags: Tensor,
    scale: float,
) -> tuple[Tensor, Tensor, Tensor]:
    # dout (B, G, H, D), lse (B, H, 2, G) -> dq_global (B, G, H, D), dk_global, dv_global (B, N, H, D)
    b, g, h, d = q_global.shape
    n = k_global.shape[1]
    dq = torch.empty((b, g, h, d), dtype=q_global.dtype)
    dk = torch.empty((b, n, h, d), dtype=k_global.dtype)
    dv = torch.empty((b, n, h, d), dtype=v_global.dtype)
    if b * h * d == 0:
        return dq, dk, dv
    if g == 0:  # no global rows: no gradient anywhere
        return dq, dk.zero_(), dv.zero_()
    ext.C.attention_bwd_cpu(
        _KIND_GLOBAL, q_global.data_ptr(), k_global.data_ptr(), v_global.data_ptr(), dout.data_ptr(),
        lse.data_ptr(), dq.data_ptr(), dk.data_ptr(), dv.data_ptr(), key_flags.data_ptr(),
        global_idx.data_ptr(), b, g, n, h, d, g, 0, scale,
        strides3(q_global), strides3(k_global), strides3(v_global), strides3(dout),
        strides3(dq), strides3(dk), strides3(dv),
        ext.dtype_code(q_global.dtype), torch.get_num_threads(),
    )  # fmt: skip
    return dq, dk, dv


@cpu_global_bwd.register_fake
def _(dout, q_global, k_global, v_global, lse, global_idx, key_flags, scale):
    # contiguous like the real op (see cpu_banded_bwd's fake)
    return (
        q_global.new_empty(q_global.shape),
        k_global.new_empty(k_global.shape),
        v_global.new_empty(v_global.shape),
    )


def _global_setup_context(ctx, inputs, output):
    q_global, k_global, v_global, global_idx, key_flags, scale = inputs
    _, lse = output
    ctx.save_for_backward(q_global, k_global, v_global, lse, global_idx, key_flags)
    ctx.scale = scale


def _global_backward(ctx, dout, dlse):
    q_global, k_global, v_global, lse, global_idx, key_flags = ctx.saved_tensors
    refuse_double_backward(torch.ops.led_kernels.cpu_global_bwd, dout, (q_global, k_global, v_global))
    dq, dk, dv = torch.ops.led_kernels.cpu_global_bwd(
        rows_last_dim_contiguous(dout), q_global, k_global, v_global, lse, global_idx, key_flags, ctx.scale
    )
    return dq, dk, dv, None, None, None


cpu_global_fwd.register_autograd(_global_backward, setup_context=_global_setup_context)


def global_attention(
    q_global: Tensor, k_global: Tensor, v_global: Tensor, global_idx: Tensor, key_flags: Tensor, scale: float
) -> Tensor:
    """Dense attention of the global rows (kernel B), differentiable in q_global, k_global, v_global.

    Args:
        q_global: (B, G, H, D) one query row per slot of ``global_idx``.
        k_global, v_global: (B, N, H, D). Same dtype rules and strides as :func:`banded_attention`.
        global_idx: int32 (B, G) sorted positions then -1.
        key_flags: int8 (B, N): 0 local, 1 padding, 2 global.
        scale: score scale.

    Returns:
        (B, G, H, D): a valid slot attends every non-padded key under one float32 softmax; invalid slots
        (-1, or a position that is not global) are 0.
    """
    for name, t in (("q_global", q_global), ("k_global", k_global), ("v_global", v_global)):
        _check_dtype(t, name)
    key_flags, global_idx = prepare_indices(key_flags, global_idx)
    out, _ = torch.ops.led_kernels.cpu_global_fwd(
        q_global, k_global, v_global, global_idx, key_flags, float(scale)
    )
    return out


__all__ = ["banded_attention", "global_attention"]
