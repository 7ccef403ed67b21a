"""The ``cuda`` backend: CUDA kernels of ``led_kernels._C`` (csrc/cuda/attention*.cuh), forward and backward.

``banded_attention`` (kernel A: band minus global/padded keys, plus the valid global keys, one softmax per
row) and ``global_attention`` (kernel B: the global slots' rows over every non-padded key), each a
``torch.library.custom_op`` (``led_kernels::cuda_banded_fwd`` / ``cuda_banded_bwd`` / ``cuda_global_fwd`` /
``cuda_global_bwd``) with a fake implementation and a registered autograd formula, so
``torch.compile(fullgraph=True)`` traces through them. ``longformer_attention`` runs the whole layer as
one pair of ops (``led_kernels::cuda_longformer_fwd`` / ``cuda_longformer_bwd``) inside an
autograd.Function: kernel B reads its query rows and writes its output rows at the global positions of
kernel A's tensors (the kernels' layer mode, csrc/include/led_kernels/cpu_attention.h), so no gather,
scatter or gradient addition runs around the kernels; when kernel B is split into key chunks, its chunks run
as extra blocks of kernel A's launch and only B's combine follows (``LED_KERNELS_FUSED_FORWARD=0``: B in
a launch of its own after A's; the same bits), and its backward is one call, with kernel B's dQ chunks
inside kernel A's dQ launch (``LED_KERNELS_FUSED_BACKWARD=0``: in a launch of their own).

The kernels are FlashAttention-2 style on tensor cores (``mma.sync`` m16n8k16 with fp32 accumulation,
``ldmatrix``): blocks of 4 warps x 16 query rows, key tiles of 64 staged in shared memory, an online base-2
softmax in registers, band-aware tile ranges. Kernel B splits its keys into chunks combined by their
statistics when there are few global rows. The backward recomputes the probabilities from the saved
statistics: dQ per query tile, dK/dV per key tile (each warp owns 16 keys); the sweeps that would leave the
GPU idle (kernel A's global keys over every row, kernel B's dQ over every key) are split into chunks whose
fp32 partials are summed in a fixed order, so gradients are bitwise reproducible (no atomics).

float16 and bfloat16 inputs, head dims 16, 32, 64 and 128, any strides with a contiguous last dimension
(read in place when every row starts 16-byte aligned, the usual case, else from an aligned copy). float32
inputs are refused with a ``TypeError`` naming the ``triton`` backend, which takes them
(``backend="auto"`` picks it for float32). The statistics saved per row are the ``cpu`` backend's: ``lse``
(B, H, 2, rows) float32 with the row max and log2 of the row sum in base-2 units.

A NaN or inf in a row of q, k, v (or of the upstream gradient) reaches only the rows that attend it and the
gradients that depend on those (see csrc/cuda/attention_common.cuh).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from led_kernels import _extension as ext
from led_kernels.ops._compiled import cuda_launch, prepare_indices, rows_last_dim_contiguous, strides3
from led_kernels.ops._dispatch import apply_layer, global_grads_like, layer_function, refuse_double_backward

SUPPORTED_HEAD_DIMS = (16, 32, 64, 128)
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16)
_KIND_BANDED = 0  # AttnKind::kBanded (csrc/include/led_kernels/cpu_attention.h)
_KIND_GLOBAL = 1  # AttnKind::kGlobalRows

# The kernel entry points: the compiled extension, or (tests only) the same kernels built for the CPU
# emulator of tests/cuda_emu/, which run on host memory (cuda_launch gives them stream 0).
_kernels: Any = None


def _c() -> Any:
    return ext.C if _kernels is None else _kernels


def _check_input(t: Tensor, name: str) -> None:
    if t.dtype not in SUPPORTED_DTYPES:
        raise TypeError(
            f"backend 'cuda' supports float16 and bfloat16 inputs, got {name} of dtype {t.dtype} "
            "(backend='triton' takes float32; backend='auto' picks it)"
        )
    if t.shape[-1] not in SUPPORTED_HEAD_DIMS:
        raise ValueError(
            f"backend 'cuda' supports head_dim in {SUPPORTED_HEAD_DIMS}, got {name} with {t.shape[-1]}"
        )
    if _kernels is None and t.device.type != "cuda":
        raise ValueError(f"backend 'cuda' needs CUDA tensors, got {name} on {t.device}")


def _workspace(
    backward: bool, kind: int, b: int, h: int, g: int, n: int, d: int, device
) -> tuple[Tensor, int]:
    nbytes = int(_c().attention_cuda_workspace_bytes(backward, kind, b, h, g, n, d))
    return torch.empty((max(nbytes, 4) + 3) // 4, dtype=torch.float32, device=device), nbytes


def _ptr(t: Tensor | None) -> int:
    return 0 if t is None else t.data_ptr()


def _aligned_rows(t: Tensor) -> Tensor:
    # the kernels read rows as 16-byte vectors (csrc/cuda/attention_common.cuh): a view whose rows do not
    # all start 16-byte aligned (an odd storage offset or stride) is read from an aligned copy
    step = 16 // t.element_size()
    if t.data_ptr() % 16 == 0 and all(s % step == 0 for s in t.stride()[:-1]):
        return t
    return t.clone(memory_format=torch.contiguous_format)


def _sizes(kind: int, q: Tensor, k: Tensor, global_idx: Tensor | None, layer: bool) -> tuple[int, ...]:
    # (B, M, N, H, D, G): M rows of q, except for the layer mode's kernel B, whose q has N rows of which
    # its G slots are the rows (cpu_attention.h)
    b, m, h, d = q.shape
    g = 0 if global_idx is None else global_idx.shape[1]
    return b, g if layer and kind == _KIND_GLOBAL else m, k.shape[1], h, d, g


def _forward(
    kind, q, k, v, key_flags, global_idx, window, scale, out=None, layer=False
) -> tuple[Tensor, Tensor]:
    # q (B, M, H, D) rows, k/v (B, N, H, D) -> out (B, M, H, D), lse (B, H, 2, M) float32. The layer
    # mode's kernel B (cpu_attention.h): q (B, N, H, D), its G slot rows written into `out` (B, N, H, D)
    b, m, n, h, d, g = _sizes(kind, q, k, global_idx, layer)
    if out is None:
        out = torch.empty((b, m, h, d), dtype=q.dtype, device=q.device)
    lse = torch.empty((b, h, 2, m), dtype=torch.float32, device=q.device)
    if b * m * h * d == 0:
        return out, lse.fill_(float("inf"))
    workspace, nbytes = _workspace(False, kind, b, h, g, n, d, q.device)
    q, k, v = _aligned_rows(q), _aligned_rows(k), _aligned_rows(v)
    with cuda_launch(q, _c()) as stream:
        _c().attention_fwd_cuda(
            kind, q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), lse.data_ptr(),
            key_flags.data_ptr(), _ptr(global_idx), b, m, n, h, d, g, window, scale,
            strides3(q), strides3(k), strides3(v), strides3(out),
            ext.dtype_code(q.dtype), workspace.data_ptr(), nbytes, stream, layer,
        )  # fmt: skip
    return out, lse


def _layer_forward(q, k, v, q_global, k_global, v_global, key_flags, global_idx, window, scale):
    # kernel A over q, k, v (B, N, H, D), then kernel B's G slot rows of q_global written into A's
    # output (the layer mode, cpu_attention.h), in one launch where the kernels can share it ->
    # out (B, N, H, D), lse (B, H, 2, N), glse (B, H, 2, G)
    b, n, h, d = q.shape
    g = global_idx.shape[1]
    out = torch.empty((b, n, h, d), dtype=q.dtype, device=q.device)
    lse = torch.empty((b, h, 2, n), dtype=torch.float32, device=q.device)
    glse = torch.empty((b, h, 2, g), dtype=torch.float32, device=q.device)
    if b * n * h * d == 0:
        return out, lse.fill_(float("inf")), glse.fill_(float("inf"))
    workspace, nbytes = _workspace(False, _KIND_GLOBAL, b, h, g, n, d, q.device)
    q, k, v = _aligned_rows(q), _aligned_rows(k), _aligned_rows(v)
    q_global, k_global, v_global = _aligned_rows(q_global), _aligned_rows(k_global), _aligned_rows(v_global)
    with cuda_launch(q, _c()) as stream:
        _c().attention_layer_fwd_cuda(
            q.data_ptr(), k.data_ptr(), v.data_ptr(), q_global.data_ptr(), k_global.data_ptr(),
            v_global.data_ptr(), out.data_ptr(), lse.data_ptr(), glse.data_ptr(), key_flags.data_ptr(),
            global_idx.data_ptr(), b, n, h, d, g, window, scale, strides3(q), strides3(k), strides3(v),
            strides3(q_global), strides3(k_global), strides3(v_global), strides3(out),
            ext.dtype_code(q.dtype), workspace.data_ptr(), nbytes, stream,
        )  # fmt: skip
    return out, lse, glse


def _backward(
    kind, dout, q, k, v, out, lse, key_flags, global_idx, window, scale, grads=None, layer=False,
    accumulate_kv=False,
) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    # dq like q, dk and dv (B, N, H, D); the layer mode's kernel B writes into `grads` (see _forward)
    b, m, n, h, d, g = _sizes(kind, q, k, global_idx, layer)
    if grads is None:
        dq = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        dk = torch.empty((b, n, h, d), dtype=k.dtype, device=q.device)
        dv = torch.empty((b, n, h, d), dtype=v.dtype, device=q.device)
    else:
        dq, dk, dv = grads
    if b * h * d == 0 or (m == 0 and n == 0):
        return dq, dk, dv
    workspace, nbytes = _workspace(True, kind, b, h, g, n, d, q.device)
    q, k, v, dout = (_aligned_rows(t) for t in (q, k, v, dout))
    with cuda_launch(q, _c()) as stream:
        _c().attention_bwd_cuda(
            kind, q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), dout.data_ptr(), lse.data_ptr(),
            dq.data_ptr(), dk.data_ptr(), dv.data_ptr(), key_flags.data_ptr(), _ptr(global_idx),
            b, m, n, h, d, g, window, scale,
            strides3(q), strides3(k), strides3(v), strides3(out), strides3(dout),
            strides3(dq), strides3(dk), strides3(dv),
            ext.dtype_code(q.dtype), workspace.data_ptr(), nbytes, stream, layer, accumulate_kv,
        )  # fmt: skip
    return dq, dk, dv


def _layer_backward(
    dout, q, k, v, q_global, k_global, v_global, out, lse, glse, key_flags, global_idx, window, scale, shared,
    global_grads,
) -> tuple[Tensor, Tensor, Tensor]:  # fmt: skip
    # kernel A's backward (its global rows dead) then kernel B's in the layer mode, in one call (B's dQ
    # chunks inside A's dQ launch where they can be): dq, dk, dv (B, N, H, D); B's gradients go into them
    # when `shared` (dk, dv added), else into `global_grads` (dq_global zero-filled)
    b, n, h, d = q.shape
    g = global_idx.shape[1]
    dq, dk, dv = (torch.empty((b, n, h, d), dtype=q.dtype, device=q.device) for _ in range(3))
    targets = (dq, dk, dv) if shared else tuple(global_grads)
    workspace, nbytes = _workspace(True, _KIND_BANDED, b, h, g, n, d, q.device)
    glob_workspace, glob_nbytes = _workspace(True, _KIND_GLOBAL, b, h, g, n, d, q.device)
    q, k, v, dout = (_aligned_rows(t) for t in (q, k, v, dout))
    q_global, k_global, v_global = (_aligned_rows(t) for t in (q_global, k_global, v_global))
    with cuda_launch(q, _c()) as stream:
        _c().attention_layer_bwd_cuda(
            q.data_ptr(), k.data_ptr(), v.data_ptr(), q_global.data_ptr(), k_global.data_ptr(),
            v_global.data_ptr(), out.data_ptr(), dout.data_ptr(), lse.data_ptr(), glse.data_ptr(),
            dq.data_ptr(), dk.data_ptr(), dv.data_ptr(), *(t.data_ptr() for t in targets),
            key_flags.data_ptr(), global_idx.data_ptr(), b, n, h, d, g, window, scale,
            strides3(q), strides3(k), strides3(v), strides3(q_global), strides3(k_global), strides3(v_global),
            strides3(out), strides3(dout), strides3(dq), strides3(dk), strides3(dv),
            *(strides3(t) for t in targets), ext.dtype_code(q.dtype), workspace.data_ptr(), nbytes,
            glob_workspace.data_ptr(), glob_nbytes, stream, shared,
        )  # fmt: skip
    return dq, dk, dv


# ----------------------------------------------------------------------------------------------------
# key flags
# ----------------------------------------------------------------------------------------------------


@torch.library.custom_op("led_kernels::cuda_key_flags", mutates_args=())
def cuda_key_flags(global_idx: Tensor, key_padding_mask: Tensor | None, n: int) -> Tensor:
    # global_idx int32 (B, G) contiguous, key_padding_mask bool (B, N) or None -> int8 (B, N)
    b, g = global_idx.shape
    flags = torch.empty((b, n), dtype=torch.int8, device=global_idx.device)
    if flags.numel() == 0:
        return flags
    pad = None if key_padding_mask is None else key_padding_mask.view(torch.uint8)
    pad_strides = (0, 0) if pad is None else (pad.stride(0), pad.stride(1))
    with cuda_launch(global_idx, _c()) as stream:
        _c().key_flags_cuda(
            _ptr(pad), *pad_strides, _ptr(global_idx if g > 0 else None), flags.data_ptr(), b, n, g, stream
        )
    return flags


@cuda_key_flags.register_fake
def _(global_idx, key_padding_mask, n):
    return global_idx.new_empty((global_idx.shape[0], n), dtype=torch.int8)


def key_flags(
    batch: int, n: int, device: torch.device, key_padding_mask: Tensor | None, global_idx: Tensor | None
) -> Tensor:
    """``led_kernels.masks.key_flags`` for this backend (same signature and values), in one launch."""
    if _kernels is None and device.type != "cuda":
        raise ValueError(f"backend 'cuda' needs CUDA tensors, got tensors on {device}")
    if global_idx is None:
        global_idx = torch.empty((batch, 0), dtype=torch.int32, device=device)
    else:
        global_idx = global_idx.to(torch.int32).contiguous()
    return torch.ops.led_kernels.cuda_key_flags(global_idx, key_padding_mask, n)


# ----------------------------------------------------------------------------------------------------
# kernel A: banded rows
# ----------------------------------------------------------------------------------------------------


@torch.library.custom_op("led_kernels::cuda_banded_fwd", mutates_args=())
def cuda_banded_fwd(
    q: Tensor, k: Tensor, v: Tensor, key_flags: Tensor, global_idx: Tensor | None, window: int, scale: float
) -> tuple[Tensor, Tensor]:
    # q, k, v (B, N, H, D) -> out (B, N, H, D) input dtype, lse (B, H, 2, N) float32 row statistics
    return _forward(_KIND_BANDED, q, k, v, key_flags, global_idx, window, scale)


@cuda_banded_fwd.register_fake
def _(q, k, v, key_flags, global_idx, window, scale):
    b, n, h, d = q.shape
    return q.new_empty((b, n, h, d)), q.new_empty((b, h, 2, n), dtype=torch.float32)


@torch.library.custom_op("led_kernels::cuda_banded_bwd", mutates_args=())
def cuda_banded_bwd(
    dout: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    out: Tensor,
    lse: Tensor,
    key_flags: Tensor,
    global_idx: Tensor | None,
    window: int,
    scale: float,
) -> tuple[Tensor, Tensor, Tensor]:
    # dout, q, k, v, out (B, N, H, D), lse (B, H, 2, N) -> dq, dk, dv (B, N, H, D) in the input dtype
    return _backward(_KIND_BANDED, dout, q, k, v, out, lse, key_flags, global_idx, window, scale)


@cuda_banded_bwd.register_fake
def _(dout, q, k, v, out, lse, key_flags, global_idx, window, scale):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape)


def _banded_setup_context(ctx, inputs, output):
    q, k, v, key_flags, global_idx, window, scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, out, lse, key_flags, global_idx)
    ctx.window = window
    ctx.scale = scale


def _banded_backward(ctx, dout, dlse):
    q, k, v, out, lse, key_flags, global_idx = ctx.saved_tensors
    refuse_double_backward(torch.ops.led_kernels.cuda_banded_bwd, dout, (q, k, v))
    dq, dk, dv = torch.ops.led_kernels.cuda_banded_bwd(
        rows_last_dim_contiguous(dout), q, k, v, out, lse, key_flags, global_idx, ctx.window, ctx.scale
    )
    return dq, dk, dv, None, None, None, None


cuda_banded_fwd.register_autograd(_banded_backward, setup_context=_banded_setup_context)


def banded_attention(
    q: Tensor, k: Tensor, v: Tensor, window: int, key_flags: Tensor, global_idx: Tensor | None, scale: float
) -> Tensor:
    """Longformer/LED banded attention of every query row (kernel A), differentiable in q, k, v.

    Args:
        q, k, v: (B, N, H, D) float16/bfloat16 CUDA tensors, D in 16/32/64/128, last dim contiguous, any
            other strides (read in place).
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
        _check_input(t, name)
    key_flags, global_idx = prepare_indices(key_flags, global_idx)
    if global_idx is not None and global_idx.shape[1] == 0:
        global_idx = None
    out, _ = torch.ops.led_kernels.cuda_banded_fwd(q, k, v, key_flags, global_idx, int(window), float(scale))
    return out


# ----------------------------------------------------------------------------------------------------
# kernel B: global rows
# ----------------------------------------------------------------------------------------------------


@torch.library.custom_op("led_kernels::cuda_global_fwd", mutates_args=())
def cuda_global_fwd(
    q_global: Tensor, k_global: Tensor, v_global: Tensor, global_idx: Tensor, key_flags: Tensor, scale: float
) -> tuple[Tensor, Tensor]:
    # q_global (B, G, H, D), k_global/v_global (B, N, H, D) -> out (B, G, H, D), lse (B, H, 2, G) float32
    return _forward(_KIND_GLOBAL, q_global, k_global, v_global, key_flags, global_idx, 0, scale)


@cuda_global_fwd.register_fake
def _(q_global, k_global, v_global, global_idx, key_flags, scale):
    b, g, h, d = q_global.shape
    return q_global.new_empty((b, g, h, d)), q_global.new_empty((b, h, 2, g), dtype=torch.float32)


@torch.library.custom_op("led_kernels::cuda_global_bwd", mutates_args=())
def cuda_global_bwd(
    dout: Tensor,
    q_global: Tensor,
    k_global: Tensor,
    v_global: Tensor,
    out: Tensor,
    lse: Tensor,
    global_idx: Tensor,
    key_flags: Tensor,
    scale: float,
) -> tuple[Tensor, Tensor, Tensor]:
    # dout, out (B, G, H, D), lse (B, H, 2, G) -> dq_global (B, G, H, D), dk_global, dv_global (B, N, H, D)
    return _backward(
        _KIND_GLOBAL, dout, q_global, k_global, v_global, out, lse, key_flags, global_idx, 0, scale
    )


@cuda_global_bwd.register_fake
def _(dout, q_global, k_global, v_global, out, lse, global_idx, key_flags, scale):
    return (
        q_global.new_empty(q_global.shape),
        k_global.new_empty(k_global.shape),
        v_global.new_empty(v_global.shape),
    )


def _global_setup_context(ctx, inputs, output):
    q_global, k_global, v_global, global_idx, key_flags, scale = inputs
    out, lse = output
    ctx.save_for_backward(q_global, k_global, v_global, out, lse, global_idx, key_flags)
    ctx.scale = scale


def _global_backward(ctx, dout, dlse):
    q_global, k_global, v_global, out, lse, global_idx, key_flags = ctx.saved_tensors
    refuse_double_backward(torch.ops.led_kernels.cuda_global_bwd, dout, (q_global, k_global, v_global))
    dq, dk, dv = torch.ops.led_kernels.cuda_global_bwd(
        rows_last_dim_contiguous(dout),
        q_global,
        k_global,
        v_global,
        out,
        lse,
        global_idx,
        key_flags,
        ctx.scale,
    )
    return dq, dk, dv, None, None, None


cuda_global_fwd.register_autograd(_global_backward, setup_context=_global_setup_context)


def global_attention(
    q_global: Tensor, k_global: Tensor, v_global: Tensor, global_idx: Tensor, key_flags: Tensor, scale: float
) -> Tensor:
    """Dense attention of the global rows (kernel B), differentiable in q_global, k_global, v_global.

    Args:
        q_global: (B, G, H, D) one query row per slot of ``global_idx``.
        k_global, v_global: (B, N, H, D). Same dtype, head-dim and stride rules as :func:`banded_attention`.
        global_idx: int32 (B, G) sorted positions then -1.
        key_flags: int8 (B, N): 0 local, 1 padding, 2 global.
        scale: score scale.

    Returns:
        (B, G, H, D): a valid slot attends every non-padded key under one float32 softmax; invalid slots
        (-1, or a position that is not global) are 0.
    """
    for name, t in (("q_global", q_global), ("k_global", k_global), ("v_global", v_global)):
        _check_input(t, name)
    key_flags, global_idx = prepare_indices(key_flags, global_idx)
    out, _ = torch.ops.led_kernels.cuda_global_fwd(
        q_global, k_global, v_global, global_idx, key_flags, float(scale)
    )
    return out


# ----------------------------------------------------------------------------------------------------
# the whole layer: kernel A, then kernel B over A's output (the layer mode of cpu_attention.h)
# ----------------------------------------------------------------------------------------------------


@torch.library.custom_op("led_kernels::cuda_longformer_fwd", mutates_args=())
def cuda_longformer_fwd(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    q_global: Tensor,
    k_global: Tensor,
    v_global: Tensor,
    key_flags: Tensor,
    global_idx: Tensor,
    window: int,
    scale: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """-> out (B, N, H, D), kernel A's lse (B, H, 2, N) and kernel B's (B, H, 2, G), float32."""
    b, _, h, _ = q.shape
    g = global_idx.shape[1]
    if g == 0:
        out, lse = _forward(_KIND_BANDED, q, k, v, key_flags, None, window, scale)
        return out, lse, lse.new_empty((b, h, 2, 0))
    # B's rows go straight into A's output at the global positions
    return _layer_forward(q, k, v, q_global, k_global, v_global, key_flags, global_idx, window, scale)


@cuda_longformer_fwd.register_fake
def _(q, k, v, q_global, k_global, v_global, key_flags, global_idx, window, scale):
    b, n, h, d = q.shape
    g = global_idx.shape[1]
    return (
        q.new_empty((b, n, h, d)),
        q.new_empty((b, h, 2, n), dtype=torch.float32),
        q.new_empty((b, h, 2, g), dtype=torch.float32),
    )


@torch.library.custom_op("led_kernels::cuda_longformer_bwd", mutates_args=())
def cuda_longformer_bwd(
    dout: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    q_global: Tensor,
    k_global: Tensor,
    v_global: Tensor,
    out: Tensor,
    lse: Tensor,
    glse: Tensor,
    key_flags: Tensor,
    global_idx: Tensor,
    window: int,
    scale: float,
    shared: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """-> dq, dk, dv (B, N, H, D) and, unless ``shared`` (the global projections are the local ones, whose
    gradients then hold theirs), dq_global, dk_global, dv_global (B, N, H, D); 0-element placeholders when
    shared."""
    g = global_idx.shape[1]
    global_grads = global_grads_like(q_global, k_global, v_global, shared, torch.empty)
    b, n, h, d = q.shape
    if g == 0 or b * n * h * d == 0:
        # kernel A alone: the global rows are dead (their output is B's)
        a_idx = global_idx if g > 0 else None
        dq, dk, dv = _backward(
            _KIND_BANDED, dout, q, k, v, out, lse, key_flags, a_idx, window, scale, layer=True
        )
        if not shared:
            global_grads[1].zero_(), global_grads[2].zero_()
        return dq, dk, dv, *global_grads
    # kernel B: its dq rows written at the global positions (where A's are 0), its dk / dv added to A's
    # when shared
    dq, dk, dv = _layer_backward(
        dout, q, k, v, q_global, k_global, v_global, out, lse, glse, key_flags, global_idx, window, scale,
        shared, global_grads,
    )  # fmt: skip
    return dq, dk, dv, *global_grads


@cuda_longformer_bwd.register_fake
def _(
    dout, q, k, v, q_global, k_global, v_global, out, lse, glse, key_flags, global_idx, window, scale, shared
):
    grads = [x.new_empty(x.shape) for x in (q, k, v)]
    glob = (q_global, k_global, v_global)
    grads += [x.new_empty((0,)) for x in glob] if shared else [x.new_empty(x.shape) for x in glob]
    return tuple(grads)


LongformerAttentionFunction = layer_function(cuda_longformer_fwd, cuda_longformer_bwd)


def longformer_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    q_global: Tensor | None,
    k_global: Tensor | None,
    v_global: Tensor | None,
    window: int,
    key_flags: Tensor,
    global_idx: Tensor,
    scale: float,
    q_global_rows: bool = False,
) -> Tensor:
    """A whole Longformer/LED layer (kernels A and B), differentiable in all six projections.

    Kernel A writes every row; kernel B reads its query rows at the global positions and writes its output
    rows there, over A's, with no gather or scatter around them. In the backward kernel A treats the global
    rows as dead and kernel B writes their dQ; with one shared projection B's dK and dV are added to A's in
    its kernel.

    Args:
        q, k, v: (B, N, H, D) local projections (see :func:`banded_attention`).
        q_global, k_global, v_global: (B, N, H, D) global projections; None means the local one (all three
            None: one shared projection).
        window, key_flags, scale: as in :func:`banded_attention`.
        global_idx: int32 (B, G) sorted positions then -1 (G may be 0).
        q_global_rows: q_global is (B, G, H, D), one row per slot of ``global_idx`` (the kernels get them
            placed at their positions: :func:`led_kernels.ops._dispatch.layer_function`).

    Returns:
        (B, N, H, D): kernel A's rows, with the rows of valid global slots replaced by kernel B's.
    """
    tensors = {"q": q, "k": k, "v": v, "q_global": q_global, "k_global": k_global, "v_global": v_global}
    for name, t in tensors.items():
        if t is not None:
            _check_input(t, name)
    key_flags, global_idx = prepare_indices(key_flags, global_idx)
    return apply_layer(
        LongformerAttentionFunction, q, k, v, q_global, k_global, v_global, window, key_flags, global_idx,
        scale, q_global_rows,
    )  # fmt: skip


__all__ = [
    "SUPPORTED_DTYPES",
    "SUPPORTED_HEAD_DIMS",
    "banded_attention",
    "global_attention",
    "key_flags",
    "longformer_attention",
]
