"""Out-of-bounds checks for the Triton kernels under the CPU interpreter.

On a GPU a kernel that loads or stores outside its tensors may read stale memory, corrupt another
tensor, or stop the process with an illegal memory access, depending on where the allocator happened
to put the tensor; the interpreter reads whatever host memory lies there. So while a launch runs, every
address that a load or store touches (its masked-on lanes) must lie within one of the launch's tensor
arguments: within the view's extent, from its lowest to its highest addressed element, not just its
storage, so that reading past the rows of ``q`` inside a fused QKV projection counts too.

:func:`install` hooks the interpreter once per process; :data:`VIOLATIONS` collects what it finds
(the conftest fails a test that leaves any).
"""

from __future__ import annotations

import numpy as np
import torch

#: (kernel name, "load" / "store", program id, how many addresses, the first one) per faulty access
VIOLATIONS: list[tuple[str, str, tuple[int, int, int], int, int]] = []
# the running launch: its kernel's name and the sorted, merged byte ranges of its tensor arguments
_launch: dict = {"name": "", "lo": np.zeros(0, np.uint64), "hi": np.zeros(0, np.uint64)}


def _extent(t: torch.Tensor) -> tuple[int, int] | None:
    """Bytes [first, last + 1) that a view addresses, or None for an empty one."""
    if t.numel() == 0:
        return None
    low = sum((n - 1) * s for n, s in zip(t.shape, t.stride()) if s < 0)
    high = sum((n - 1) * s for n, s in zip(t.shape, t.stride()) if s > 0)
    size = t.element_size()
    return t.data_ptr() + low * size, t.data_ptr() + (high + 1) * size


def _set_ranges(name: str, args) -> None:
    # a tensor reinterpreted as another dtype (triton.reinterpret) arrives wrapped, with its tensor as .base
    tensors = [a if isinstance(a, torch.Tensor) else getattr(a, "base", None) for a in args]
    spans = sorted(e for t in tensors if isinstance(t, torch.Tensor) and (e := _extent(t)) is not None)
    merged: list[list[int]] = []
    for lo, hi in spans:  # overlapping views (q, k and v of one projection) become one range
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    _launch["name"] = name
    _launch["lo"] = np.array([m[0] for m in merged], dtype=np.uint64)
    _launch["hi"] = np.array([m[1] for m in merged], dtype=np.uint64)


def _check(kind: str, ptrs: np.ndarray, mask: np.ndarray, width: int, grid_idx) -> None:
    addrs = ptrs[np.broadcast_to(mask, ptrs.shape)] if mask is not None else ptrs.reshape(-1)
    if addrs.size == 0:
        return
    lo, hi = _launch["lo"], _launch["hi"]
    first, last = addrs.min(), addrs.max()
    i = np.searchsorted(lo, first, side="right") - 1
    if i >= 0 and last + np.uint64(width) <= hi[i]:  # the usual case: all inside one tensor
        return
    j = np.searchsorted(lo, addrs, side="right") - 1
    inside = (j >= 0) & (addrs + np.uint64(width) <= hi[np.maximum(j, 0)])
    if not inside.all():
        bad = addrs[~inside]
        program = tuple(int(x) for x in (grid_idx or (0, 0, 0)))
        VIOLATIONS.append((_launch["name"], kind, program, int(bad.size), int(bad[0])))


def install() -> bool:
    """Hook Triton's interpreter (once per process). Returns False where its internals are not the ones
    this was written against (then nothing is checked)."""
    from triton.runtime import interpreter as interp

    executor, builder = getattr(interp, "GridExecutor", None), getattr(interp, "InterpreterBuilder", None)
    hooks = [(executor, "_init_args_hst"), (builder, "create_masked_load"), (builder, "create_masked_store")]
    if not all(hasattr(owner, name) for owner, name in hooks):
        return False
    if getattr(builder.create_masked_load, "_led_kernels_bounds", False):
        return True
    init_args, load, store = executor._init_args_hst, builder.create_masked_load, builder.create_masked_store

    def init_args_checked(self, args_dev, kwargs):
        args_hst, kwargs_hst = init_args(self, args_dev, kwargs)
        _set_ranges(getattr(self.fn, "__name__", "?"), [*args_hst, *kwargs_hst.values()])
        return args_hst, kwargs_hst

    def load_checked(self, ptrs, mask, other, *rest):
        width = np.dtype(interp._get_np_dtype(ptrs.get_element_ty())).itemsize
        _check("load", ptrs.data, None if mask is None else mask.data, width, self.grid_idx)
        return load(self, ptrs, mask, other, *rest)

    def store_checked(self, ptrs, value, mask, *rest):
        width = value.data.dtype.itemsize
        _check("store", ptrs.data, None if mask is None else mask.data, width, self.grid_idx)
        return store(self, ptrs, value, mask, *rest)

    load_checked._led_kernels_bounds = True
    executor._init_args_hst = init_args_checked
    builder.create_masked_load, builder.create_masked_store = load_checked, store_checked
    return True


def describe(violations) -> str:
    return "\n".join(
        f"{name}: {kind} of {count} address(es) outside every tensor argument, program {program}, "
        f"first {first:#x}"
        for name, kind, program, count, first in violations[:10]
    )
