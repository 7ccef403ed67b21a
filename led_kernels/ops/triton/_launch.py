"""Kernel launches with less host work per call than Triton's generic ``kernel[grid](...)``.

A layer whose kernels take a few hundred microseconds waits on the host when the Python around them
takes longer, and Triton's generic launch path does more per call than a fixed call site needs: the
autotuner rebuilds dicts of every argument to find its key, the JIT prints its options into a string
to find the compiled kernel, checks its globals and reads its knobs, and calls its (usually empty)
launch hooks. Here the first launch of each kernel and tuning key goes through Triton's path (tuning
and compiling as usual); a new argument signature then runs Triton's own binder, which specialises
every argument (dtype, alignment, integer value and width), to find the compiled kernel; and a
repeated signature (the exact scalar values with their types, each tensor's dtype and address mod
16, the keywords and Triton's option knobs) reuses it directly. Anything unexpected (the
interpreter, stand-ins for kernels, another Triton version or target, hooks) takes Triton's path.

``LED_KERNELS_FAST_LAUNCH=0`` turns it off.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import triton
from triton.runtime.autotuner import Autotuner
from triton.runtime.driver import driver
from triton.runtime.jit import JITFunction

try:  # the knobs that Triton's own launch reads on every call
    from triton import knobs as _knobs
except ImportError:  # pragma: no cover - older Triton: its own path only
    _knobs = None

#: Triton versions whose launch path (JITFunction.run, the launcher's calling convention, the options
#: the JIT adds to a call) this module was checked against; any other takes Triton's own path
VERIFIED_TRITON = ((3, 6), (3, 9))


def _triton_version() -> tuple[int, int]:
    try:
        major, minor = triton.__version__.split(".")[:2]
        return int(major), int(minor)
    except (AttributeError, ValueError):
        return (0, 0)


ENABLED = (
    _knobs is not None
    and _triton_version() in VERIFIED_TRITON
    and os.environ.get("TRITON_INTERPRET", "0") != "1"
    and os.environ.get("LED_KERNELS_FAST_LAUNCH", "1") != "0"
)
#: options JITFunction.run adds to every call from Triton's compilation knobs (3.9 adds the last)
_KNOB_OPTIONS = ("instrumentation_mode", "fpsan_homomorphic_casts")

#: (autotuner, its key, the call's keyword arguments) -> the launch keywords of the config it chose
_TUNED: dict = {}
#: autotuner -> positions of its key arguments among the positional arguments, and their names
_PLANS: dict = {}
#: (id of the jit function, device, specialization, options) -> the compiled kernel
_COMPILED: dict = {}
#: (id of the jit function, device, knobs, keywords, argument values) -> (compiled kernel, the
#: trailing launch values)
_BY_ARGS: dict = {}
_MAX_ENTRIES = 4096
#: argument types taken by value into the launch key, with their type (True, 1 and 1.0 are equal and
#: hash alike, but Triton specialises them apart); anything else is a tensor (dtype, address mod 16)
_PLAIN = frozenset({int, float, bool, str, type(None)})
#: set when this Triton's internals are not the ones the fast path was written against
_UNSUPPORTED: list[str] = []


def launch(kernel: Any, grid: Any, *args: Any, **meta: Any) -> None:
    """``kernel[grid](*args, **meta)``, with the per-call host work cached after the first call. A
    callable grid is called with the launch keywords (``meta``, the autotuner's config included), not
    with every argument by name as Triton's own path does."""
    if ENABLED and not _UNSUPPORTED:
        kind = type(kernel)
        if kind is Autotuner:
            if _launch_tuned(kernel, grid, args, meta):
                return
        elif kind is JITFunction:
            if _launch_jit(kernel, grid, args, meta):
                return
    kernel[grid](*args, **meta)


def _launch_tuned(tuner: Autotuner, grid: Any, args: tuple, meta: dict) -> bool:
    plan = _PLANS.get(tuner)
    if plan is None:
        try:  # where the autotuner's key arguments and the tensors are among the positional arguments
            keys = [tuner.arg_names.index(k) for k in tuner.keys]
        except (AttributeError, ValueError) as e:
            _UNSUPPORTED.append(f"autotuner: {e!r}")
            return False
        plan = _PLANS[tuner] = (tuple(keys), tuple(tuner.keys))
    keys, names = plan
    try:
        key_values = tuple(args[i] if i < len(args) else meta[k] for i, k in zip(keys, names))
    except (IndexError, KeyError):  # another call shape at this kernel: Triton's path
        return False
    dtypes = tuple([a.dtype for a in args if isinstance(a, torch.Tensor)])
    # the autotuner's own key (its key arguments, the tensors' dtypes) plus the call's keywords, on
    # which the autotuner does not key but which may differ between call sites
    key = (tuner, key_values, dtypes, tuple(meta.items()))
    tuned = _TUNED.get(key)
    if tuned is None:
        tuner[grid](*args, **meta)  # tunes on the first call of this key, and launches
        # the autotuner's cache entry for this key (its format in Triton 3.6 / 3.9); else its last choice
        own_key = (*key_values, *(str(d) for d in dtypes))
        config = getattr(tuner, "cache", {}).get(own_key) or getattr(tuner, "best_config", None)
        if config is not None and config.pre_hook is None and type(tuner.fn) is JITFunction:
            _TUNED[key] = config.all_kwargs()
        return True
    return _launch_jit(tuner.fn, grid, args, {**meta, **tuned})


def _launch_jit(fn: JITFunction, grid: Any, args: tuple, meta: dict) -> bool:
    if getattr(_knobs.runtime, "add_stages_inspection_hook", None) is not None or getattr(
        fn, "pre_run_hooks", None
    ):
        return False  # a hook that adds to the specialisation or runs before each launch: Triton's path
    try:
        device = driver.active.get_current_device()
        # keyed by id(fn): a JITFunction hashes its source key in Python, and kernels live as long as
        # their modules. Exact argument values (each tensor by dtype and address mod 16): as fine as the
        # specialisation Triton derives from them, and cheaper to form than running its binder; the
        # knobs that Triton turns into options, in case they change between calls
        knobs = (_knobs.runtime.debug, *(getattr(_knobs.compilation, k, None) for k in _KNOB_OPTIONS))
        arg_key = [
            a if type(a) is int else (type(a), a) if type(a) in _PLAIN else (a.dtype, a.data_ptr() & 15)
            for a in args
        ]
        by_args = (id(fn), device, knobs, tuple(meta.items()), tuple(arg_key))
        entry = _BY_ARGS.get(by_args)
    except (AttributeError, RuntimeError, TypeError):  # e.g. an unhashable argument: Triton's path
        return False
    if entry is not None:
        compiled, tail = entry
        _run(compiled, device, grid, args + tail, meta)
        return True
    try:
        _, _, target, _, binder = fn.device_caches[device]
        if target.backend != "cuda":
            # checked against the CUDA backend only (AMD's also specialises on the storage size)
            _UNSUPPORTED.append(f"target {target.backend}")
            return False
        # meta is this call's own dict (from **meta): adding Triton's options to it is harmless for a
        # fallback launch, which adds the same
        meta["debug"] = meta.get("debug", fn.debug) or _knobs.runtime.debug
        for name in _KNOB_OPTIONS:
            if hasattr(_knobs.compilation, name):
                meta[name] = getattr(_knobs.compilation, name)
        bound, specialization, options = binder(*args, **meta)
        key = (id(fn), device, tuple(specialization), tuple(options.items()))
        compiled = _COMPILED.get(key)
    except (AttributeError, IndexError, ValueError) as e:  # not the internals this was written for
        _UNSUPPORTED.append(f"jit: {e!r}")
        return False
    except (KeyError, TypeError):  # a call the binder rejects: Triton's path raises the error
        return False
    if compiled is None:
        compiled = fn.run(*args, grid=grid, warmup=False, **meta)  # compiles if needed, and launches
        if hasattr(compiled, "result"):  # asynchronous compilation
            compiled = compiled.result()
        _COMPILED[key] = compiled
        return True
    values = tuple(bound.values())
    _run(compiled, device, grid, values, meta)
    # the launch arguments are the positional ones followed by values fixed by meta (constexprs and
    # defaults), so the same call needs no binder next time
    if len(_BY_ARGS) > _MAX_ENTRIES:
        _BY_ARGS.clear()
    if all(x is y for x, y in zip(values, args)):
        _BY_ARGS[by_args] = (compiled, values[len(args) :])
    return True


def _run(compiled: Any, device: int, grid: Any, values: tuple, meta: dict) -> None:
    """What Triton's JITFunction.run does once it has the compiled kernel."""
    stream = driver.active.get_current_stream(device)
    if callable(grid):
        grid = grid(meta)
    n = len(grid)
    grid_0, grid_1, grid_2 = grid[0], grid[1] if n > 1 else 1, grid[2] if n > 2 else 1
    enter_hook, exit_hook = _knobs.runtime.launch_enter_hook, _knobs.runtime.launch_exit_hook
    if _empty_chain(enter_hook) and _empty_chain(exit_hook):
        # Triton >= 3.5 keeps an (empty) chain of hooks, and its own path builds the launch metadata
        # and calls the empty chains on every launch; with no hook there is nothing to call
        enter_hook = exit_hook = launch_metadata = None
    elif enter_hook is None:
        launch_metadata = None
    else:
        launch_metadata = compiled.launch_metadata(grid, stream, *values)
    compiled.run(
        grid_0, grid_1, grid_2, stream, compiled.function, compiled.packed_metadata, launch_metadata,
        enter_hook, exit_hook, *values,
    )  # fmt: skip


def _empty_chain(hook: Any) -> bool:
    return hook is None or (type(hook).__name__ == "HookChain" and not getattr(hook, "calls", True))


def clear_caches() -> None:
    """Forget the cached configs and compiled kernels (e.g. after changing Triton's knobs)."""
    _TUNED.clear()
    _PLANS.clear()
    _COMPILED.clear()
    _BY_ARGS.clear()
    _UNSUPPORTED.clear()


__all__ = ["ENABLED", "clear_caches", "launch"]
