"""Backend registry and chooser.

Each backend has a predicate that says whether it can run here (and, if not, why) and whether it
can run a given call (device, dtype, head dim). ``auto`` prefers the compiled or fused backend for
the tensors' device: on a GPU ``triton``, then ``cuda`` (float16/bfloat16 only), then ``torch``; on
the CPU ``cpu``, then ``torch``. The environment variable ``LED_KERNELS_BACKEND`` replaces ``auto``;
an explicit ``backend=`` argument always wins.

``cuda`` comes after ``triton`` (DESIGN asks for the reverse) while it is the slower of the two: its GPU
tests pass on an H100, but at the headline layer (N=16384, H=12, D=64, w=512, G=1, bf16) it took 0.577
ms forward and 3.106 ms forward + backward against ``triton``'s 0.249 and 1.211 ms in the same run
(benchmarks/results/h100-sxm-owed-session.log).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
from dataclasses import dataclass
from types import ModuleType

import torch

BACKENDS = ("torch", "triton", "cuda", "cpu")
AUTO_ORDER = {"cuda": ("triton", "cuda", "torch"), "cpu": ("cpu", "torch")}


@dataclass(frozen=True)
class BackendStatus:
    """Whether a backend can run on this machine, and if not, why."""

    name: str
    available: bool
    reason: str

    def __str__(self) -> str:
        return f"{self.name}: {'available' if self.available else 'unavailable'} ({self.reason})"


def _triton_status() -> tuple[bool, str]:
    try:
        import triton  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - any import failure means "not here"
        return False, f"triton is not importable ({exc.__class__.__name__}: {exc})"
    if importlib.util.find_spec("led_kernels.ops.triton") is None:
        return False, "the triton kernels are not part of this build"
    if torch.cuda.is_available():
        return True, "CUDA GPU found"
    if os.environ.get("TRITON_INTERPRET") == "1":
        return True, "CPU tensors through the Triton interpreter (TRITON_INTERPRET=1; slow, for testing)"
    return False, "no CUDA GPU (set TRITON_INTERPRET=1 to run the kernels on the CPU, slowly, for testing)"


def _cuda_status() -> tuple[bool, str]:
    if importlib.util.find_spec("led_kernels.ops.cuda") is None:
        return False, "the CUDA kernels are not implemented in this version"
    from led_kernels import _extension

    return _extension.cuda_usable()


def _cpu_status() -> tuple[bool, str]:
    if importlib.util.find_spec("led_kernels.ops.cpu") is None:
        return False, "the C++ CPU kernels are not implemented in this version"
    from led_kernels import _extension

    if not _extension.is_built():
        return False, f"the compiled extension is not built: {_extension.build_error()}"
    return True, "compiled extension with the C++ CPU kernels"


_STATUS = {
    "torch": lambda: (True, "pure PyTorch reference, runs everywhere"),
    "triton": _triton_status,
    "cuda": _cuda_status,
    "cpu": _cpu_status,
}

_MODULES = {
    "torch": "led_kernels.ops.reference",
    "triton": "led_kernels.ops.triton",
    "cuda": "led_kernels.ops.cuda",
    "cpu": "led_kernels.ops.cpu",
}


@functools.cache
def _cached_status(name: str, triton_interpret: str | None) -> tuple[bool, str]:
    return _STATUS[name]()


def _status(name: str) -> tuple[bool, str]:
    # cached per process; TRITON_INTERPRET is part of the key because tests flip it
    return _cached_status(name, os.environ.get("TRITON_INTERPRET"))


def available_backends() -> dict[str, BackendStatus]:
    """Every backend, whether it can run on this machine, and why not if it cannot.

    Example::

        >>> import led_kernels as lk
        >>> for status in lk.available_backends().values():
        ...     print(status)
        torch: available (pure PyTorch reference, runs everywhere)
        ...
    """
    result = {}
    for name in BACKENDS:
        ok, reason = _status(name)
        result[name] = BackendStatus(name, ok, reason)
    return result


def _device_ok(name: str, device: torch.device) -> tuple[bool, str]:
    if name == "cuda" and device.type != "cuda":
        return False, f"backend 'cuda' needs CUDA tensors, got tensors on {device}"
    if name == "cpu" and device.type != "cpu":
        return False, f"backend 'cpu' needs CPU tensors, got tensors on {device}"
    if name == "triton" and device.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
        return False, "backend 'triton' needs CUDA tensors (or TRITON_INTERPRET=1 for CPU tensors)"
    if name == "triton" and device.type not in ("cpu", "cuda"):
        return False, f"backend 'triton' runs on CUDA tensors, got tensors on {device}"
    return True, ""


def _dtype_ok(name: str, dtype: torch.dtype) -> tuple[bool, str]:
    if name != "torch" and dtype == torch.float64:
        return False, f"backend {name!r} does not support float64 inputs (use backend='torch')"
    if name == "cuda" and dtype == torch.float32:
        return False, "backend 'cuda' takes float16 and bfloat16 inputs, got float32 (use backend='triton')"
    return True, ""


def _head_dim_ok(name: str, head_dim: int) -> tuple[bool, str]:
    if name in ("triton", "cuda") and head_dim not in _supported_head_dims(name):
        return False, f"backend {name!r} supports head_dim in {_supported_head_dims(name)}, got {head_dim}"
    return True, ""


def _supported_head_dims(name: str) -> tuple[int, ...]:
    module = load_backend(name)
    return getattr(module, "SUPPORTED_HEAD_DIMS", (16, 32, 64, 128))


_LOADED: dict[str, ModuleType] = {}


def load_backend(name: str) -> ModuleType:
    module = _LOADED.get(name)
    if module is None:
        if torch.compiler.is_compiling():
            # importlib cannot be traced. The CPU-side backends are imported with this module (see
            # the end of the file); a GPU backend's first call must happen in eager mode, or this
            # call is a graph break.
            module = _import_outside_graph(name)
        else:
            module = importlib.import_module(_MODULES[name])
        _LOADED[name] = module
    return module


@torch.compiler.disable
def _import_outside_graph(name: str) -> ModuleType:
    return importlib.import_module(_MODULES[name])


def choose_backend(requested: str, device: torch.device, dtype: torch.dtype, head_dim: int) -> ModuleType:
    """The backend module that runs this call. Raises a clear error for an unusable explicit request."""
    from led_kernels._validation import check_backend_name

    requested = check_backend_name(requested)
    if requested == "auto":
        requested = check_backend_name(os.environ.get("LED_KERNELS_BACKEND", "auto"))
    if requested != "auto":
        ok, reason = _status(requested)
        if not ok:
            raise RuntimeError(f"backend {requested!r} is not available here: {reason}")
        checks = (
            (_device_ok(requested, device), ValueError),
            (_dtype_ok(requested, dtype), TypeError),
            (_head_dim_ok(requested, head_dim), ValueError),
        )
        for (ok, reason), error in checks:
            if not ok:
                raise error(reason)
        return load_backend(requested)
    for name in AUTO_ORDER.get(device.type, ("torch",)):
        if not _status(name)[0]:
            continue
        if _device_ok(name, device)[0] and _dtype_ok(name, dtype)[0] and _head_dim_ok(name, head_dim)[0]:
            return load_backend(name)
    return load_backend("torch")


# Import the backends that need no GPU now, so that torch.compile never meets an import in a graph.
# (The GPU ones are imported on first use: probing CUDA at import time would initialise it before
# a DataLoader forks.)
for _name in ("torch", "cpu"):
    if _status(_name)[0]:
        load_backend(_name)
