"""Argument plumbing shared by the ops whose kernels live in the compiled extension (the ``cpu`` and ``cuda``
backends, ``attention_delta``): the kernels take raw pointers and element strides, so tensors are brought to
the layouts they read, and CUDA launches need the device made current and a stream."""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor


def strides3(t: Tensor) -> tuple[int, int, int]:
    """The (b, n, h) element strides of a (B, N, H, D) tensor whose last dimension is contiguous."""
    return t.stride(0), t.stride(1), t.stride(2)


def prepare_indices(key_flags: Tensor, global_idx: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """int8 contiguous key flags and int32 contiguous global indices (no-ops for what the frontend passes)."""
    key_flags = key_flags.to(torch.int8).contiguous()
    if global_idx is not None:
        global_idx = global_idx.to(torch.int32).contiguous()
    return key_flags, global_idx


def rows_last_dim_contiguous(t: Tensor) -> Tensor:
    """Upstream gradients may be expanded or transposed views; the kernels need stride(D) == 1."""
    return t if t.shape[-1] <= 1 or t.stride(-1) == 1 else t.contiguous()


@functools.cache
def several_gpus() -> bool:
    return torch.cuda.device_count() > 1


class cuda_launch:
    """``with cuda_launch(t, kernels) as stream:`` makes ``t``'s device current and gives the handle of
    torch's current stream there (0 for host tensors: the emulated kernels of the tests). The extension's
    own (static) CUDA runtime launches on the context torch makes current; with several GPUs it is also
    told the device (``kernels.cuda_set_device``), so as not to depend on when torch's runtime makes a
    device's context current."""

    def __init__(self, t: Tensor, kernels: Any) -> None:
        self.device = t.device
        self.kernels = kernels
        self.guard = torch.cuda.device(t.device) if t.device.type == "cuda" else None

    def __enter__(self) -> int:
        if self.guard is None:
            return 0
        self.guard.__enter__()
        if several_gpus():
            index = self.device.index if self.device.index is not None else torch.cuda.current_device()
            self.kernels.cuda_set_device(index)
        return torch.cuda.current_stream(self.device).cuda_stream

    def __exit__(self, *exc: object) -> None:
        if self.guard is not None:
            self.guard.__exit__(*exc)


__all__ = ["cuda_launch", "prepare_indices", "rows_last_dim_contiguous", "several_gpus", "strides3"]
