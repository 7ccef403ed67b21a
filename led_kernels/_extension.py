"""Loader of the compiled extension ``led_kernels._C`` (NATTEN-style).

Importing this module never fails. When ``_C`` is missing or broken, ``C`` is a stand-in whose
every attribute access raises a ``RuntimeError`` that says how to build the extension and why the
import failed, so code paths that never need a compiled kernel (the ``torch`` and ``triton``
backends) keep working, and the ones that do fail with an actionable message.

``_C`` links no libtorch (DESIGN section 5): it takes raw pointers, sizes, element strides,
dtype codes (see :func:`dtype_code`) and CUDA stream handles; the wrappers in
``led_kernels.ops`` own all tensors.
"""

from __future__ import annotations

import functools
import types
from typing import Any

_BUILD_HINT = (
    "Build it from the source tree with `pip install .` (developers: "
    "`pip install --no-build-isolation -e .`); nvcc on PATH adds the CUDA kernels, and "
    "LED_KERNELS_BUILD_CUDA=OFF skips them (CPU kernels only)."
)


class _MissingExtension(types.ModuleType):
    """Stands in for ``led_kernels._C`` when it could not be imported."""

    def __init__(self, error: str) -> None:
        super().__init__("led_kernels._C")
        self.__dict__["_led_error"] = error

    def __getattr__(self, name: str) -> Any:
        # Dunder look-ups (copy, pickle, inspect.unwrap, hasattr(x, "__wrapped__"), ...) expect
        # AttributeError; turning those into RuntimeError would break unrelated introspection.
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        raise RuntimeError(
            f"led_kernels._C.{name} is unavailable: the compiled extension led_kernels._C is not "
            f"built or failed to import. {_BUILD_HINT} Original import error: {self.__dict__['_led_error']}"
        )

    def __repr__(self) -> str:
        return "<led_kernels._C (not built)>"


_build_error: str | None
try:
    from led_kernels import _C as _compiled  # noqa: N813

    C: Any = _compiled
    _build_error = None
except Exception as exc:  # ImportError, or OSError/undefined symbols from a broken build
    _build_error = f"{type(exc).__name__}: {exc}"
    C = _MissingExtension(_build_error)


def is_built() -> bool:
    """Whether ``led_kernels._C`` imported."""
    return _build_error is None


def build_error() -> str | None:
    """Why ``led_kernels._C`` failed to import (``None`` when it imported)."""
    return _build_error


def cuda_compiled() -> bool:
    """Whether the extension was built with its CUDA kernels (False when not built at all)."""
    return is_built() and bool(C.has_cuda())


@functools.cache
def cuda_usable() -> tuple[bool, str]:
    """Whether the extension's CUDA kernels can run here: ``(True, "")`` or ``(False, reason)``.

    Cached: none of its inputs change within a process (CUDA_VISIBLE_DEVICES is read once).
    """
    if not is_built():
        return False, f"the compiled extension led_kernels._C is not built ({_build_error}). {_BUILD_HINT}"
    if not C.has_cuda():
        return False, (
            "led_kernels._C was built without its CUDA kernels (nvcc was not found at build time, or "
            "LED_KERNELS_BUILD_CUDA=OFF); reinstall from the source tree with nvcc on PATH"
        )
    import torch

    if not torch.cuda.is_available():
        return False, "torch.cuda.is_available() is False (no GPU, no driver, or a CPU-only torch)"
    if C.cuda_device_count() == 0:
        # torch sees a GPU but our statically linked runtime does not: typically a driver older
        # than the CUDA toolkit the extension was built with.
        info = C.build_info()
        return False, (
            f"the extension's CUDA runtime (CUDA {info.get('cuda_compiler_version')}) sees no device: "
            f"{C.cuda_status()}; update the NVIDIA driver or rebuild with an older CUDA toolkit"
        )
    return True, ""


_DTYPE_CODES: dict[Any, int] | None = None


def dtype_code(dtype: Any) -> int:
    """The ``dtype_code`` the kernels take for a torch dtype (float32, float16, bfloat16).

    Read from ``_C.dtype_codes()`` so the numbering lives in C++ only. Raises ``TypeError`` for any
    other dtype and ``RuntimeError`` when the extension is not built.
    """
    global _DTYPE_CODES
    if _DTYPE_CODES is None:
        import torch

        _DTYPE_CODES = {getattr(torch, name): code for name, code in C.dtype_codes().items()}
    try:
        return _DTYPE_CODES[dtype]
    except KeyError:
        raise TypeError(
            f"dtype {dtype} is not supported by the compiled kernels (expected one of "
            f"{', '.join(str(d) for d in _DTYPE_CODES)})"
        ) from None


__all__ = [
    "C",
    "build_error",
    "cuda_compiled",
    "cuda_usable",
    "dtype_code",
    "is_built",
]
