"""How the backends call their registered ops from inside their own autograd Functions."""

from __future__ import annotations

from typing import Any

import torch


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


__all__ = ["call_op"]
