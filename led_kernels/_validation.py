"""Argument checks for the public ops: every wrong input becomes a ValueError/TypeError that names it.

Only metadata is inspected (shapes, dtypes, devices, strides), so the checks cost no device work and
no host synchronisation. The values of ``global_idx`` are checked where that is free: on CPU tensors in
eager mode (or on any device when ``LED_KERNELS_CHECK_VALUES=1``). Not inside a ``torch.compile``
graph: reading them there would be a graph break and, on a GPU, a host sync on every call. Instead
every backend treats an index outside [-1, N) as -1 (``led_kernels.masks``), so a bad index can
neither read out of bounds nor change the other rows' results.
"""

from __future__ import annotations

import math
import numbers
import operator
import os
import reprlib

import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
INDEX_DTYPES = (torch.int32, torch.int64)
# the kernels fold scale * log2(e) into one float32 constant, which must stay finite
MAX_SCALE = torch.finfo(torch.float32).max / math.log2(math.e)
# global slots are int32 positions and counts
MAX_GLOBAL_SLOTS = 2**31 - 1


def check_tensor(x, name: str, ndim: int) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.layout != torch.strided:  # the kernels read memory through strides
        raise TypeError(f"{name} must be a dense (strided) tensor, got layout {x.layout}")
    if x.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(x.shape)}")


def check_qkv(tensors: dict[str, torch.Tensor], layout: str = "(B, N, H, D)") -> None:
    """Same dtype/device, float dtype, 4-D, last dimension contiguous."""
    ref_name, ref = next(iter(tensors.items()))
    tracing = torch.compiler.is_compiling()  # (once per call: this runs on every layer's call)
    for name, x in tensors.items():
        check_tensor(x, name, 4)
        if x.dtype not in FLOAT_DTYPES:
            raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got {x.dtype}")
        if x.dtype != ref.dtype:
            raise TypeError(f"{name} has dtype {x.dtype} but {ref_name} has {ref.dtype}; they must match")
        if x.device != ref.device:
            raise ValueError(f"{name} is on {x.device} but {ref_name} is on {ref.device}; they must match")
        if x.shape[-1] > 1 and x.stride(-1) != 1:
            raise ValueError(
                f"{name} must have a contiguous last dimension (stride 1), got strides {x.stride()}; "
                f"layout is {layout}"
            )
        if x.shape[-1] == 0:
            raise ValueError(f"{name} has head_dim 0")
        # the kernels read raw memory, where a lazily negated view is not negated (not checked while
        # torch.compile traces: is_neg cannot be traced)
        if not tracing and x.is_neg():
            raise ValueError(
                f"{name} is a lazily negated view (its neg bit is set); pass {name}.resolve_neg()"
            )


def check_same_shape(a: torch.Tensor, a_name: str, b: torch.Tensor, b_name: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{b_name} has shape {tuple(b.shape)} but {a_name} has {tuple(a.shape)}; they must match"
        )


def check_mask(mask, name: str, batch: int | None = None, n: int | None = None, device=None) -> None:
    check_tensor(mask, name, 2)
    if mask.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor (True = {_mask_meaning(name)}), got {mask.dtype}")
    if batch is not None and tuple(mask.shape) != (batch, n):
        raise ValueError(f"{name} must have shape (B, N) = ({batch}, {n}), got {tuple(mask.shape)}")
    if device is not None and mask.device != device:
        raise ValueError(f"{name} is on {mask.device} but the inputs are on {device}")


def _mask_meaning(name: str) -> str:
    return "padding" if "padding" in name else "global token"


def as_int(value, name: str, expected: str = "an int") -> int:
    """``value`` as an int. Integer-like values (numpy ints, 0-d integer tensors) are accepted; bools,
    bool tensors, floats and strings are a TypeError naming ``name`` and what was ``expected``."""
    if isinstance(value, bool) or (isinstance(value, torch.Tensor) and value.dtype == torch.bool):
        raise TypeError(f"{name} must be {expected}, got {value!r}")
    try:
        return operator.index(value)
    except (TypeError, RuntimeError):  # (a tensor of several elements: RuntimeError)
        got = type(value).__name__
        if not isinstance(value, torch.Tensor):
            got += f" {reprlib.repr(value)}"
        raise TypeError(f"{name} must be {expected}, got {got}") from None


def check_window(window) -> int:
    """An int >= 0 (integer-like values accepted, as by ``as_int``)."""
    window = as_int(window, "window", "an int (one-sided width w)")
    if window < 0:
        raise ValueError(f"window must be >= 0 (the one-sided width w), got {window}")
    return window


def check_scale(scale, head_dim: int) -> float:
    """None (1 / sqrt(head_dim)) or a real number of magnitude <= MAX_SCALE; numpy floats are accepted.
    (The triton backend also refuses a negative scale, which its kernels do not support.)"""
    if scale is None:
        return head_dim**-0.5
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale must be a float or None, got {type(scale).__name__}")
    try:
        value = float(scale)
    except OverflowError:
        raise ValueError(f"scale must be finite, got {scale}") from None
    if not math.isfinite(value):
        raise ValueError(f"scale must be finite, got {scale}")
    if abs(value) > MAX_SCALE:
        raise ValueError(
            f"scale must be at most {MAX_SCALE:.3g} in magnitude (scale * log2(e) is a float32), got {scale}"
        )
    return value


def check_max_global(max_global) -> int | None:
    """None or an int in [0, 2**31) (integer-like values accepted, as by ``as_int``)."""
    if max_global is None:
        return None
    value = as_int(max_global, "max_global", "an int or None")
    if not 0 <= value <= MAX_GLOBAL_SLOTS:
        raise ValueError(f"max_global must be in [0, {MAX_GLOBAL_SLOTS}] (int32 slots), got {value}")
    return value


def check_global_idx(global_idx, batch: int, n: int, device) -> torch.Tensor:
    """Returns the indices as a contiguous int32 tensor."""
    check_tensor(global_idx, "global_idx", 2)
    if global_idx.dtype not in INDEX_DTYPES:
        raise TypeError(f"global_idx must be int32 or int64 (from lk.global_indices), got {global_idx.dtype}")
    if global_idx.shape[0] != batch:
        raise ValueError(f"global_idx must have shape (B, G) with B = {batch}, got {tuple(global_idx.shape)}")
    if global_idx.device != device:
        raise ValueError(f"global_idx is on {global_idx.device} but the inputs are on {device}")
    if _should_check_values(global_idx):
        _check_global_idx_values(global_idx, n)
    return global_idx.to(torch.int32).contiguous()


def check_global_rows(rows: torch.Tensor, name: str, like: torch.Tensor, like_name: str, global_idx) -> None:
    """rows (B, G, H, D): one row per slot of global_idx (B, G), with the B, H and D of like (B, N, H, D)."""
    b, _, h, d = like.shape
    if rows.shape[0] != b or rows.shape[2:] != (h, d):
        raise ValueError(
            f"{name} must have shape (B, G, H, D) = ({b}, G, {h}, {d}) to match {like_name}, "
            f"got {tuple(rows.shape)}"
        )
    if global_idx is None:
        raise ValueError(f"{name} needs global_idx (or global_mask): its rows are the global tokens' slots")
    if global_idx.shape[1] != rows.shape[1]:
        raise ValueError(
            f"global_idx has {global_idx.shape[1]} slots but {name} has {rows.shape[1]} rows; they must match"
        )


def _should_check_values(x: torch.Tensor) -> bool:
    if torch.compiler.is_compiling():
        return False
    return x.device.type == "cpu" or os.environ.get("LED_KERNELS_CHECK_VALUES", "0") == "1"


def _check_global_idx_values(global_idx: torch.Tensor, n: int) -> None:
    if global_idx.numel() == 0:
        return
    idx = global_idx.long()
    if bool(((idx < -1) | (idx >= n)).any()):
        raise ValueError(f"global_idx values must be in [-1, N) with N = {n}")
    valid = idx >= 0
    # valid slots first, then only -1: once a row has a -1, everything after it is -1
    if bool((valid[:, 1:] & ~valid[:, :-1]).any()):
        raise ValueError("global_idx rows must list their positions first and pad with -1 at the end")
    both = valid[:, 1:] & valid[:, :-1]
    if bool((both & (idx[:, 1:] <= idx[:, :-1])).any()):
        raise ValueError(
            "global_idx rows must be strictly increasing (sorted, no duplicates); use lk.global_indices"
        )


def check_backend_name(backend) -> str:
    from led_kernels.backends import BACKENDS

    if not isinstance(backend, str):
        raise TypeError(f"backend must be a str, got {type(backend).__name__}")
    if backend != "auto" and backend not in BACKENDS:
        raise ValueError(f"backend must be 'auto' or one of {list(BACKENDS)}, got {backend!r}")
    return backend
