"""``delta = rowsum(dO * O)``: the preprocessing step of attention backward.

FlashAttention-style backward kernels need, per query row, ``delta_i = sum_d dO_id * O_id``
(it equals ``sum_j P_ij dP_ij``, the term subtracted in ``dS = P * (dP - delta)``). Computing it
once in a small bandwidth-bound kernel keeps it out of the inner loop of the backward kernels.

Layout: ``out`` and ``grad_out`` are (B, N, H, D) with any strides but a contiguous last
dimension (read in place, never copied); the result is (B, H, N) float32, contiguous, the order in
which the backward kernels walk it (one batch-head at a time along the sequence).

Registered as ``torch.ops.led_kernels.attention_delta`` with a fake implementation, so
``torch.compile(fullgraph=True)`` traces through it.
"""

import torch
from torch import Tensor

from led_kernels import _extension as ext
from led_kernels.ops._compiled import cuda_launch

_SUPPORTED_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def _check_inputs(out: Tensor, grad_out: Tensor) -> None:
    for name, t in (("out", out), ("grad_out", grad_out)):
        if not isinstance(t, Tensor):
            raise TypeError(f"attention_delta: {name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"attention_delta: {name} must be 4-D (B, N, H, D), got shape {tuple(t.shape)}")
        if t.dtype not in _SUPPORTED_DTYPES:
            raise TypeError(f"attention_delta: {name} must be float32, float16 or bfloat16, got {t.dtype}")
        if t.device.type not in ("cpu", "cuda"):
            raise ValueError(f"attention_delta: {name} must be on a CPU or CUDA device, got {t.device}")
        # A size-1 last dimension has no meaningful stride; otherwise rows must be contiguous.
        if t.shape[-1] > 1 and t.stride(-1) != 1:
            raise ValueError(
                f"attention_delta: {name} must have a contiguous last dimension (stride 1), got strides "
                f"{tuple(t.stride())}"
            )
    if grad_out.shape != out.shape:
        raise ValueError(
            f"attention_delta: grad_out must have the shape of out {tuple(out.shape)}, "
            f"got {tuple(grad_out.shape)}"
        )
    if grad_out.dtype != out.dtype:
        raise TypeError(
            f"attention_delta: grad_out must have the dtype of out ({out.dtype}), got {grad_out.dtype}"
        )
    if grad_out.device != out.device:
        raise ValueError(
            f"attention_delta: grad_out must be on the device of out ({out.device}), got {grad_out.device}"
        )


@torch.library.custom_op("led_kernels::attention_delta", mutates_args=())
def _attention_delta_op(out: Tensor, grad_out: Tensor) -> Tensor:
    # out, grad_out: (B, N, H, D), validated by attention_delta -> delta (B, H, N) float32
    B, N, H, D = out.shape
    delta = torch.empty((B, H, N), dtype=torch.float32, device=out.device)
    if delta.numel() == 0:
        return delta
    if D == 0:  # empty rows sum to 0; nothing to read
        return delta.zero_()
    o_strides = (out.stride(0), out.stride(1), out.stride(2))
    do_strides = (grad_out.stride(0), grad_out.stride(1), grad_out.stride(2))
    code = ext.dtype_code(out.dtype)
    if out.device.type == "cuda":
        ok, why = ext.cuda_usable()
        if not ok:
            raise RuntimeError(f"attention_delta on {out.device}: the CUDA kernels cannot run here: {why}")
        with cuda_launch(out, ext.C) as stream:
            ext.C.delta_cuda(
                out.data_ptr(), grad_out.data_ptr(), delta.data_ptr(), B, N, H, D,
                o_strides, do_strides, code, stream,
            )  # fmt: skip
    else:
        ext.C.delta_cpu(
            out.data_ptr(), grad_out.data_ptr(), delta.data_ptr(), B, N, H, D,
            o_strides, do_strides, code, torch.get_num_threads(),
        )  # fmt: skip
    return delta


@_attention_delta_op.register_fake
def _attention_delta_fake(out: Tensor, grad_out: Tensor) -> Tensor:
    B, N, H, _ = out.shape
    return out.new_empty((B, H, N), dtype=torch.float32)


def attention_delta(out: Tensor, grad_out: Tensor) -> Tensor:
    """``delta[b, h, i] = sum_d float(grad_out[b, i, h, d]) * float(out[b, i, h, d])``.

    Args:
        out: (B, N, H, D) attention output, float32/float16/bfloat16, CPU or CUDA, last dim contiguous.
        grad_out: its gradient, same shape, dtype and device (any strides, last dim contiguous).

    Returns:
        (B, H, N) float32 contiguous tensor, on the inputs' device. Equals
        ``(grad_out.float() * out.float()).sum(-1).transpose(1, 2)`` up to fp32 summation order.
    """
    _check_inputs(out, grad_out)
    return torch.ops.led_kernels.attention_delta(out, grad_out)


__all__ = ["attention_delta"]
