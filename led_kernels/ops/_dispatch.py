"""How the backends call their registered ops from inside their own autograd Functions, and the autograd
Function of the backends that run a whole layer as one pair of ops (``triton``, ``cuda``)."""

from __future__ import annotations

from typing import Any

import torch

from led_kernels.masks import gather_rows, place_rows, slot_targets
from led_kernels.ops._compiled import rows_last_dim_contiguous


def call_op(op: Any, *args: Any) -> Any:
    """Run a registered op (a ``torch.library.custom_op``): through the dispatcher while torch.compile
    or torch.jit traces, a dispatch mode (fake tensors, ...) is active or the first argument is a tensor
    subclass; its Python body directly otherwise (so a kernel registered for the op with
    ``register_kernel`` is not used in eager mode, and profiles show the kernels, not the op). The
    ops run inside an autograd.Function, where the dispatcher's layers (autograd, the compile-disable
    wrapper, redispatch) do nothing for them but cost several microseconds of host time per call."""
    body = getattr(op, "_init_fn", None)
    if (
        body is None
        or type(args[0]) is not torch.Tensor  # a tensor subclass dispatches through the op
        or torch.compiler.is_compiling()
        or torch._C._len_torch_dispatch_stack() > 0
        or torch.jit.is_tracing()
    ):
        return op(*args)
    return body(*args)


def refuse_double_backward(bwd_op: Any, dout: torch.Tensor, inputs: tuple[torch.Tensor, ...]) -> None:
    """Raise when a backward made of kernels (the registered op ``bwd_op``) is asked for a differentiable
    result (``create_graph=True``: second derivatives, a gradient penalty). The kernels' gradients carry
    no autograd history, so the second-order terms would silently be zero; torch.compile reports double
    backward itself. ``inputs``: the differentiable inputs the backward saved, unpacked by the caller
    (``ctx.saved_tensors`` may be read only once under activation checkpointing)."""
    if (
        torch.is_grad_enabled()
        and not torch.compiler.is_compiling()
        and (dout.requires_grad or any(t.requires_grad for t in inputs))
    ):
        # a custom_op's name, or a torch.ops packet's
        name = getattr(bwd_op, "_qualname", None) or getattr(bwd_op, "_qualified_op_name", repr(bwd_op))
        raise RuntimeError(
            f"{name}: the backward kernels are first-order only, so create_graph=True (second derivatives)"
            " is not supported; use backend='torch' for higher-order gradients"
        )


def layer_function(fwd_op: Any, bwd_op: Any) -> type[torch.autograd.Function]:
    """The autograd Function of a backend's layer op pair.

    ``fwd_op(q, k, v, q_global, k_global, v_global, key_flags, global_idx, window, scale)`` returns
    ``(out, lse, glse, *extra)``; ``bwd_op(dout, q, k, v, q_global, k_global, v_global, out, lse, glse,
    key_flags, global_idx, *extra, window, scale, shared)`` returns the six projections' gradients, the
    global ones as placeholders when ``shared`` (the kernels fold them into q, k, v's).

    With ``q_global_rows`` the Function's q_global is (B, G, H, D), one row per slot of ``global_idx``. The
    ops read the global query rows at their positions of an (N, D) view, which only valid slots' rows are
    read from: each op gets the rows placed there in an unfilled (B, N, H, D) tensor, built anew in the
    backward instead of kept from the forward (only the G rows are saved), and the rows' gradient is
    gathered from the op's dq_global (whose rows at padded positions the kernels zero; a -1 slot gets 0).
    """

    class LongformerAttentionFunction(torch.autograd.Function):
        @staticmethod
        def forward(
            ctx,
            q,
            k,
            v,
            q_global,
            k_global,
            v_global,
            window,
            key_flags,
            global_idx,
            scale,
            shared,
            q_global_rows,
        ):
            n = q.shape[1]
            saved_q_global, targets = q_global, None
            if q_global_rows:
                targets = slot_targets(global_idx, n)
                q_global = place_rows(q_global, targets, n)
            out, lse, glse, *extra = call_op(
                fwd_op, q, k, v, q_global, k_global, v_global, key_flags, global_idx, window, scale
            )
            ctx.save_for_backward(
                q, k, v, saved_q_global, k_global, v_global, out, lse, glse, key_flags, global_idx, *extra
            )
            ctx.window, ctx.scale, ctx.shared, ctx.targets = window, scale, shared, targets
            return out

        @staticmethod
        def backward(ctx, dout):
            saved = list(ctx.saved_tensors)  # once: a checkpointed forward's tensors unpack only once
            refuse_double_backward(bwd_op, dout, saved[:6])
            n, targets = saved[0].shape[1], ctx.targets
            if targets is not None:
                saved[3] = place_rows(saved[3], targets, n)
            grads = call_op(bwd_op, rows_last_dim_contiguous(dout), *saved, ctx.window, ctx.scale, ctx.shared)
            dq, dk, dv, dqg, dkg, dvg = grads
            if ctx.shared:
                dqg = dkg = dvg = None
            elif targets is not None:
                dqg = torch.where((targets < n)[:, :, None, None], gather_rows(dqg, targets), 0.0)
            return dq, dk, dv, dqg, dkg, dvg, None, None, None, None, None, None

    return LongformerAttentionFunction


def global_grads_like(
    q_global: torch.Tensor,
    k_global: torch.Tensor,
    v_global: torch.Tensor,
    shared: bool,
    empty: Any,
    zero_dq_global: bool = True,
) -> list[torch.Tensor]:
    """The global projections' gradients a layer backward op returns: 0-element placeholders when
    ``shared`` (folded into dq, dk, dv; an op's outputs may not alias), else dq_global zero-filled (kernel B
    writes only the global rows; ``zero_dq_global=False`` leaves the zeros to the backend's kernels) and
    dk_global, dv_global (written whole) from the backend's allocator, called as ``empty(shape,
    dtype=dtype, device=device)``."""
    if shared:
        return [x.new_empty((0,)) for x in (q_global, k_global, v_global)]
    alloc = torch.zeros if zero_dq_global else empty
    dq_global = alloc(q_global.shape, dtype=q_global.dtype, device=q_global.device)
    return [dq_global, *(empty(x.shape, dtype=x.dtype, device=x.device) for x in (k_global, v_global))]


def apply_layer(
    function: type[torch.autograd.Function],
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
    """Runs a :func:`layer_function`. With one projection for both kernels (all three global ones None),
    kernel B's gradients are accumulated into A's in the kernels; when only some global projections are
    given, the others are the local ones (autograd adds those gradients). ``q_global_rows``: q_global is
    (B, G, H, D), a row per slot of global_idx."""
    shared = q_global is None and k_global is None and v_global is None
    q_global = q if q_global is None else q_global
    k_global = k if k_global is None else k_global
    v_global = v if v_global is None else v_global
    return function.apply(
        q, k, v, q_global, k_global, v_global, int(window), key_flags, global_idx, float(scale), shared,
        bool(q_global_rows),
    )  # fmt: skip


__all__ = ["apply_layer", "call_op", "global_grads_like", "layer_function", "refuse_double_backward"]
