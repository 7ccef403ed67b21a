"""Test-wide set-up: seeding, NaN-poisoned allocations, the Triton interpreter on CPU-only machines,
and under the interpreter a bounds check of every load and store of the Triton kernels
(``triton_bounds``: a test whose launches touch memory outside their tensor arguments fails).

NaN poisoning: while a test runs, ``torch.empty``/``empty_like``/``Tensor.new_empty`` return
floating-point tensors filled with NaN, so an output element a kernel forgot to write shows up as NaN
instead of as plausible stale memory. Mark a test ``no_nan_poison`` to opt out (e.g. when tracing
with ``torch.compile``).
"""

from __future__ import annotations

import os
import random

import pytest
import torch

# The interpreter flag is read when a @triton.jit kernel is defined, so set it before anything
# imports the kernels: on a machine with no GPU, the Triton backend runs through the interpreter.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
# the tests must not autotune
os.environ.setdefault("LED_KERNELS_AUTOTUNE", "0")
BOUNDS_CHECKED = False
if os.environ.get("TRITON_INTERPRET") == "1":
    import triton_bounds

    BOUNDS_CHECKED = triton_bounds.install()
# pytest-xdist workers share the cores: with each worker's intra-op threads (torch's and the cpu
# backend's OpenMP) on every core, threads that spin-wait at barriers get preempted, and a test that
# takes 7 s alone took 62 s under two workers on two cores. The tests that vary the thread count set
# their own.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    from benchmarks.cases import cpu_threads

    torch.set_num_threads(max(1, cpu_threads() // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))


def pytest_configure(config):
    config.addinivalue_line("markers", "no_nan_poison: do not replace torch.empty with NaN-filled tensors")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture(autouse=True)
def _triton_bounds():
    if not BOUNDS_CHECKED:
        yield
        return
    triton_bounds.VIOLATIONS.clear()
    yield
    found = list(triton_bounds.VIOLATIONS)
    triton_bounds.VIOLATIONS.clear()
    if found:
        pytest.fail("Triton kernels accessed memory outside their tensors:\n" + triton_bounds.describe(found))


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    torch.manual_seed(0)
    yield


def _poisoned(factory):
    def wrapper(*args, **kwargs):
        out = factory(*args, **kwargs)
        if out.is_floating_point() or out.is_complex():
            with torch.no_grad():  # a leaf that requires grad (e.g. checkpoint's dummy) is filled too
                out.fill_(float("nan"))
        return out

    return wrapper


@pytest.fixture(autouse=True)
def _nan_poison(request, monkeypatch):
    if "no_nan_poison" in request.keywords:
        yield
        return
    monkeypatch.setattr(torch, "empty", _poisoned(torch.empty))
    monkeypatch.setattr(torch, "empty_like", _poisoned(torch.empty_like))
    monkeypatch.setattr(torch.Tensor, "new_empty", _poisoned(torch.Tensor.new_empty))
    yield


@pytest.fixture(scope="session")
def cuda_emulator(tmp_path_factory):
    """The cuda backend's kernels compiled for the CPU emulator of tests/cuda_emu/: once per test run,
    in the run's temporary root, from which every pytest-xdist worker loads the one library."""
    from cuda_emu import emulated

    if emulated.cuda_include_dir() is None:
        pytest.skip("no CUDA toolkit headers (cuda_fp16.h) for the emulated kernels: set CUDA_HOME")
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the run's directory, above each worker's own
    return emulated.Emulated(emulated.build(root / "cuda_emu"))


@pytest.fixture
def emulated_cuda_backend(cuda_emulator, monkeypatch):
    """The ``cuda`` backend's Python layer running the emulated kernels on host tensors."""
    from cuda_emu import emulated

    from led_kernels.ops import cuda

    kernels = emulated.EmulatedExtension(cuda_emulator)
    monkeypatch.setattr(cuda, "_kernels", kernels)
    return kernels


@pytest.fixture
def emulated_cuda_interface(emulated_cuda_backend, monkeypatch):
    """``backend="cuda"`` of the public functions taking host tensors, on the emulated kernels."""
    from led_kernels import backends

    device_ok = backends._device_ok
    monkeypatch.setitem(backends._STATUS, "cuda", lambda: (True, "emulated kernels (tests/cuda_emu/)"))
    monkeypatch.setattr(
        backends, "_device_ok", lambda name, device: (True, "") if name == "cuda" else device_ok(name, device)
    )
    backends._cached_status.cache_clear()
    yield emulated_cuda_backend
    backends._cached_status.cache_clear()
