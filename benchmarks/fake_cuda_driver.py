"""A stand-in for Triton's CUDA driver, so that the triton backend's real launch path runs without a
GPU: Triton's binder and kernel caches, the autotuner, compilation for a real target (sm_90 by
default, with Triton's ptxas), and led_kernels' launchers, on CPU tensors. Only the last step, the
C launcher that calls cuLaunchKernel, is replaced by a recorder (``LAUNCHES``), and the autotuner's
timing runs by a choice that depends only on the tuning key's values.

Uses: the host cost of a call with Triton's own launch overhead included (``python -m
benchmarks.host_overhead --triton-launch``), and tests that the backend's cached launch path passes
exactly what Triton's own path passes. ``install()`` must run before ``led_kernels``' triton backend is
imported, with ``TRITON_INTERPRET`` unset (interpreted kernels are never compiled).
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass

import torch


@dataclass
class Recorded:
    """One launch as the C launcher would have received it."""

    name: str
    grid: tuple[int, int, int]
    function: int  # the loaded kernel's handle: one per compiled kernel
    args: tuple  # the kernel's arguments, constexprs included, in signature order
    time: float = 0.0  # time.perf_counter() when the launch reached the C launcher


#: every launch since the last ``LAUNCHES.clear()``
LAUNCHES: list[Recorded] = []
_handles = itertools.count(1)


class _Launcher:
    def __init__(self, src, metadata):
        self.name = src.fn.__name__ if hasattr(src, "fn") else str(src)

    def __call__(self, gx, gy, gz, stream, function, packed_metadata, launch_metadata, enter, exit_, *args):
        LAUNCHES.append(Recorded(self.name, (gx, gy, gz), function, args, time.perf_counter()))


class _Utils:
    def __init__(self, props: dict):
        self.props = props

    def load_binary(self, name, kernel, shared, device):
        # (module, function, registers, spills, max threads per block): a fresh handle per kernel
        return next(_handles), next(_handles), 0, 0, 1024

    def get_device_properties(self, device):
        return dict(self.props)


def install(arch: int = 90, sms: int = 132, smem_optin: int = 232448) -> None:
    """Make Triton compile for `arch` and record launches; let led_kernels' triton backend take CPU
    tensors (its value checks of global_idx, done on CPU tensors only, are skipped as on a GPU)."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise RuntimeError("fake_cuda_driver: unset TRITON_INTERPRET (interpreted kernels are not compiled)")
    from triton.backends.compiler import GPUTarget
    from triton.backends.driver import DriverBase
    from triton.backends.nvidia.driver import ty_to_cpp
    from triton.runtime.autotuner import Autotuner
    from triton.runtime.driver import driver

    props = {"max_shared_mem": smem_optin, "multiprocessor_count": sms, "max_num_regs": 65536, "warpSize": 32}

    class FakeCudaDriver(DriverBase):
        def __init__(self):
            self.utils = _Utils(props)
            self.launcher_cls = _Launcher

        @staticmethod
        def is_active():
            return True

        def get_current_target(self):
            return GPUTarget("cuda", arch, 32)

        def get_current_device(self):
            return 0

        def set_current_device(self, device):
            pass

        def get_current_stream(self, device=None):
            return 0

        def get_active_torch_device(self):
            return torch.device("cpu")

        def get_device_interface(self):
            return torch.cuda

        def map_python_to_cpp_type(self, ty):
            return ty_to_cpp(ty)

        def get_benchmarker(self):
            raise RuntimeError("fake_cuda_driver: nothing can be timed")

        def get_empty_cache_for_benchmark(self):
            return None

        def clear_cache(self, cache):
            pass

    driver.set_active(FakeCudaDriver())

    def choice_by_key(self, *args, config, **kwargs):
        # no timing: the candidate "wins" that the tuning key's values pick (the same one every time
        # for a key, a different one for another key), so a cache that mixes keys up shows
        key = tuple(int(v) for v in (self.nargs.get(k) for k in self.keys) if isinstance(v, int))
        favourite = sum(v.bit_length() for v in key) % len(self.configs)
        index = self.configs.index(config) if config in self.configs else 0
        return [0.0 if index == favourite else 1.0 + index]

    Autotuner._bench = choice_by_key

    from led_kernels import _validation, backends

    status, device_ok = backends._status, backends._device_ok
    backends._status = lambda name: (True, "") if name == "triton" else status(name)
    backends._device_ok = lambda name, device: (True, "") if name == "triton" else device_ok(name, device)
    _validation._should_check_values = lambda x: False
