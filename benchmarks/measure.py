"""Timing and peak memory of one provider on one case, per mode.

Modes (``torch.autograd.grad(out, leaf, dout)`` is the backward; the gradient is that of the fused
(B, N, 6, H, D) leaf, i.e. all six projections at once):

- ``fwd``: one forward with autograd recording, as in training (saved tensors included).
- ``bwd``: the backward alone. Each rep runs a fresh forward *outside* the timed region (no
  ``retain_graph``: a backward may free what its forward saved), then times only the backward.
- ``fwd_bwd``: forward then backward, both timed.

Timing: ``warmup`` untimed reps (they also trigger ``torch.compile``), then ``reps`` timed reps; the
median is reported. On a GPU (as ``triton.testing.do_bench`` does) the reps are queued back to back
with no host synchronisation between them, each one after an L2 flush (a 256 MiB buffer is zeroed) and
bracketed by CUDA events: ``median_ms`` is the GPU time of one call, as in training, where Python runs
ahead of the GPU. Where Python cannot keep up (the call's host time exceeds its GPU time, or the call
synchronises the host), the GPU waits inside the bracket and the wait is counted. ``host_ms`` is the
median host (Python) time of one call, so that a host-bound call shows as ``host_ms`` close to
``median_ms``. On the CPU ``time.perf_counter`` gives both. Python's garbage collector is off during
the reps; each rep's results are released after its end event is queued (the caching allocator orders
the reuse on the stream).

Peak memory (``peak_mem_mb``, MiB = 2^20 bytes), always above what the inputs already hold (the fused
leaf, the upstream gradient, masks and other per-case state built in ``prepare``):

- GPU: ``torch.cuda.memory_allocated()`` is read before the call, ``reset_peak_memory_stats()``, one
  call, then ``max_memory_allocated()`` minus that baseline. It runs after the warmup, so compilation
  workspaces are not counted. For ``bwd`` the forward runs before the reset, so the figure is the memory
  above the inputs while the backward runs: the forward's output and saved tensors plus the backward's
  own (e.g. the gradient of the fused leaf).
- CPU: there is no allocator statistic, so every (provider, case) runs in a fresh subprocess
  (:mod:`benchmarks.worker`) with ``torch.set_num_threads`` = the machine's cores. It imports
  everything, runs a tiny instance of the same calls once (so lazily initialized libraries and thread
  pools are not counted), builds the inputs, and then for each mode: collects garbage, returns freed heap
  memory to the OS (``malloc_trim``), resets the peak RSS (``/proc/self/clear_refs`` = 5, which
  ``ru_maxrss`` follows), reads the current resident set size from ``/proc/self/statm`` as the baseline,
  runs the call once, and reports ``ru_maxrss`` (``resource.getrusage``, KiB on Linux) minus that
  baseline. The timed reps of that mode follow in the same process. Where the peak cannot be reset, a
  mode whose figure may be hidden by an earlier peak is rerun alone in a fresh process by the harness.
  For ``bwd`` the figure includes its forward (the process peak cannot separate them). RSS is what the
  OS charges the process: besides live tensors it includes memory that glibc's allocator keeps after
  ``free`` (with its default dynamic mmap threshold, many mid-sized temporaries, as in a blocked
  implementation, are served from and retained in the heap), so it can exceed the live-tensor peak.
  The harness therefore starts every worker, whatever the provider, with
  ``MALLOC_MMAP_THRESHOLD_=131072`` (glibc's static default, which turns the dynamic adjustment off):
  large blocks are then returned to the OS on ``free`` and RSS tracks the live allocations. Set the
  variable yourself to measure under another policy.
"""

from __future__ import annotations

import gc
import os
import resource
import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from benchmarks.cases import Case, make_inputs
from benchmarks.providers import LedKernelsProvider, Prepared, Provider

MIB = 2**20
#: max |provider - torch backend| on the forward output accepted by ``--check``, per dtype
CHECK_TOLERANCE = {"float32": 1e-4, "float16": 1e-2, "bfloat16": 5e-2}


@dataclass
class Measurement:
    """Outcome of one (provider, case, mode): ``status`` is 'ok', 'skip' (with ``reason``) or 'error'."""

    status: str
    median_ms: float | None = None
    peak_mem_mb: float | None = None
    times_ms: list[float] = field(default_factory=list)
    host_ms: float | None = None
    reason: str = ""
    max_abs_err: float | None = None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def is_oom(exc: BaseException) -> bool:
    """True for CUDA out-of-memory errors and failed CPU allocations."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    msg = str(exc)
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        "out of memory" in msg.lower() or "can't allocate memory" in msg or isinstance(exc, MemoryError)
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_mode(prep: Prepared, mode: str, out: torch.Tensor | None = None) -> object:
    """Run ``mode`` once and return what it produced (kept alive by the caller until measured).

    For ``bwd``, ``out`` must be the output of a forward that ran before (untimed).
    """
    if mode == "fwd":
        return prep.forward()
    if mode == "bwd":
        if out is None:
            raise ValueError("bwd needs the output of a forward")
        return torch.autograd.grad(out, prep.leaf, prep.dout)
    if mode == "fwd_bwd":
        return torch.autograd.grad(prep.forward(), prep.leaf, prep.dout)
    raise ValueError(f"unknown mode {mode!r}")


_FLUSH: dict[torch.device, torch.Tensor] = {}


def _l2_flush_buffer(device: torch.device) -> torch.Tensor | None:
    if device.type != "cuda":
        return None
    if device not in _FLUSH:
        _FLUSH[device] = torch.empty(256 * MIB // 4, dtype=torch.int32, device=device)
    return _FLUSH[device]


def time_mode(
    prep: Prepared, mode: str, device: torch.device, reps: int, warmup: int
) -> tuple[list[float], list[float]]:
    """Milliseconds of each of ``reps`` timed runs of ``mode`` after ``warmup`` untimed ones: the GPU
    (or, on the CPU, wall) time of each run and its host time (see the module doc)."""
    flush = _l2_flush_buffer(device)
    on_gpu = device.type == "cuda"
    events: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
    times: list[float] = []
    host: list[float] = []
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        _sync(device)
        for i in range(warmup + reps):
            pre = prep.forward() if mode == "bwd" else None
            if flush is not None:
                flush.zero_()
            if on_gpu:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
            t0 = time.perf_counter()
            result = run_mode(prep, mode, pre)
            t_host = (time.perf_counter() - t0) * 1e3
            if on_gpu:
                end.record()
            del result, pre
            if i >= warmup:
                host.append(t_host)
                if on_gpu:
                    events.append((start, end))
                else:
                    times.append(t_host)
        _sync(device)
    finally:
        if gc_was_enabled:
            gc.enable()
    if on_gpu:
        times = [start.elapsed_time(end) for start, end in events]
    return times, host


def gpu_peak_mb(prep: Prepared, mode: str, device: torch.device) -> float:
    """Peak CUDA memory (MiB) of one run of ``mode`` above what was allocated before it (see module doc)."""
    gc.collect()
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    pre = prep.forward() if mode == "bwd" else None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    result = run_mode(prep, mode, pre)
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - base
    del result, pre
    return peak / MIB


def current_rss_mb() -> float:
    """Resident set size of this process now (MiB), from /proc/self/statm."""
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / MIB


def max_rss_mb() -> float:
    """Largest resident set size of this process so far (MiB): ``ru_maxrss`` (KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _malloc_trim() -> None:
    """Give freed heap memory back to the OS (glibc), so the baseline RSS holds only live memory."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def reset_peak_rss() -> bool:
    """Reset the process's peak RSS to its current RSS (``/proc/self/clear_refs`` = 5, Linux >= 4.0).

    ``ru_maxrss`` follows the reset as long as no thread of the process has exited. Returns whether the
    reset took effect (``ru_maxrss`` within 16 MiB of the current RSS afterwards).
    """
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return max_rss_mb() - current_rss_mb() < 16.0


def cpu_peak_mb(prep: Prepared, mode: str) -> tuple[float, str]:
    """Peak RSS (MiB) of one run of ``mode`` above the RSS before it, and a note ('' if exact).

    The freed heap is trimmed and the peak RSS reset first (:func:`reset_peak_rss`); then the baseline is
    the current RSS, the call runs once, and the result is ``ru_maxrss`` minus the baseline. Where the
    reset is not possible, the figure is exact only for the first measurement of a fresh process (the
    note says when an earlier peak may hide this one; the harness then reruns the mode in its own process).
    """
    gc.collect()
    _malloc_trim()
    reset_ok = reset_peak_rss()
    base = current_rss_mb()
    before = max(0.0, max_rss_mb() - base)
    pre = prep.forward() if mode == "bwd" else None
    result = run_mode(prep, mode, pre)
    peak = max_rss_mb() - base
    del result, pre
    note = ""
    if not reset_ok and before > 16.0 and peak <= before + 1.0:
        note = f"stale: an earlier peak {before:.0f} MiB above the baseline may hide this one"
    return peak, note


def check_output(prep: Prepared, inputs, case: Case) -> float:
    """Max |provider - led_kernels torch backend| over the forward output on the real tokens (no grad)."""
    ref_prep = LedKernelsProvider("torch").prepare(inputs)
    with torch.no_grad():
        ref = ref_prep.forward().float()
        out = prep.real_rows(prep.forward()).float()
    return float((out - ref).abs().max()) if out.numel() else 0.0


def measure(
    provider: Provider,
    case: Case,
    modes: list[str],
    device: torch.device,
    *,
    reps: int,
    warmup: int,
    seed: int = 0,
    check: bool = False,
    fresh_process: bool = False,
    time_budget_s: float | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Measurement]:
    """Measure ``provider`` on ``case`` for every mode; never raises (errors become 'error' entries).

    ``fresh_process=True`` (CPU workers, in a new process): peak memory by ``ru_maxrss`` (see
    :func:`cpu_peak_mb`), after a tiny instance of the same calls has run once. Otherwise (GPU): the
    warmup runs first, then :func:`gpu_peak_mb`, then the timed reps.

    ``time_budget_s`` (CPU): the memory-measuring call, which already runs at full size, gives the time
    of one call ``t``; then ``reps`` becomes ``clamp(budget / t, min(3, reps), reps)`` and the warmup is
    dropped when ``t * (warmup + reps)`` would exceed the budget (the memory call was the warmup at full
    size).
    Out-of-memory errors become 'skip' entries, after which the memory is released.
    """
    results: dict[str, Measurement] = {}
    try:
        if fresh_process:  # tiny instance first: lazily initialized libraries are not counted as peak
            tiny = replace(
                case, seqlen=min(case.seqlen, 128), window=min(case.window, 16), globals=min(case.globals, 4)
            )
            tiny_inputs = make_inputs(tiny, device, seed)
            tiny_prep = provider.prepare(tiny_inputs)
            for mode in modes:
                run_mode(tiny_prep, mode, tiny_prep.forward() if mode == "bwd" else None)
            del tiny_prep, tiny_inputs
        inputs = make_inputs(case, device, seed)
        prep = provider.prepare(inputs)
    except Exception as exc:  # noqa: BLE001
        prepare_failure = _failure(exc, "prepare")
    else:
        prepare_failure = None
    if prepare_failure is not None:  # outside the except block: the traceback no longer pins tensors
        _release(device)
        for mode in modes:
            log(format_measurement(provider.name, mode, prepare_failure))
        return {mode: prepare_failure for mode in modes}

    for mode in modes:
        failure: Measurement | None = None
        try:
            if fresh_process:
                t0 = time.perf_counter()
                peak, note = cpu_peak_mb(prep, mode)
                t_call = time.perf_counter() - t0
                m = Measurement("ok", peak_mem_mb=peak, reason=note)
                n_reps, n_warmup = reps, warmup
                if time_budget_s is not None and t_call > 0:
                    n_reps = max(min(3, reps), min(reps, int(time_budget_s / t_call)))
                    if t_call * (warmup + n_reps) > time_budget_s:
                        n_warmup = 0
                times, host = time_mode(prep, mode, device, n_reps, n_warmup)
            else:
                time_mode(prep, mode, device, 0, max(1, warmup))  # warmup (and compilation) first
                peak = gpu_peak_mb(prep, mode, device) if device.type == "cuda" else float("nan")
                m = Measurement("ok", peak_mem_mb=peak)
                times, host = time_mode(prep, mode, device, reps, 0)
            m.times_ms = times
            m.median_ms = statistics.median(times)
            m.host_ms = statistics.median(host)
            if check and mode == modes[0]:
                err = check_output(prep, inputs, case)
                m.max_abs_err = err
                tol = CHECK_TOLERANCE[case.dtype]
                if not err <= tol:
                    m.status, m.reason = (
                        "error",
                        f"forward differs from the torch backend: {err:.3g} > {tol:g}",
                    )
        except Exception as exc:  # noqa: BLE001 - reported as a skip/error row, the sweep goes on
            failure = _failure(exc, mode)
        if failure is not None:  # outside the except block: the traceback no longer pins tensors
            _release(device)
            m = failure
        results[mode] = m
        log(format_measurement(provider.name, mode, m))
    del prep, inputs
    _release(device)
    return results


def _release(device: torch.device) -> None:
    """Free what the last measurement left (cyclic garbage, the CUDA caching allocator's blocks)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def format_measurement(provider: str, mode: str, m: Measurement) -> str:
    """One log line for a measurement."""
    if m.status == "ok":
        line = f"    {provider:6s} {mode:7s} {m.median_ms:11.3f} ms  peak {m.peak_mem_mb:9.1f} MiB"
        if m.host_ms is not None and m.host_ms != m.median_ms:
            line += f"  host {m.host_ms:.3f} ms"
        if m.times_ms:
            line += f"  (min {min(m.times_ms):.3f}, max {max(m.times_ms):.3f}, n={len(m.times_ms)})"
    else:
        line = f"    {provider:6s} {mode:7s} {m.status.upper()}: {m.reason}"
    if m.status == "ok" and m.reason:
        line += f"  [{m.reason}]"
    if m.max_abs_err is not None:
        line += f"  max|err| vs torch {m.max_abs_err:.2e}"
    return line


def _failure(exc: BaseException, where: str) -> Measurement:
    if is_oom(exc):
        return Measurement("skip", reason=f"out of memory in {where}: {str(exc).splitlines()[0][:200]}")
    if isinstance(exc, (NotImplementedError, ValueError)) and "head_dim" in str(exc):
        return Measurement("skip", reason=f"unsupported: {exc}")
    frames = traceback.extract_tb(exc.__traceback__)[-2:]
    at = "; ".join(f"{Path(f.filename).name}:{f.lineno} in {f.name}" for f in frames)
    message = str(exc).strip().replace("\n", " | ")[:500]
    return Measurement("error", reason=f"{where}: {exc.__class__.__name__}: {message} (at {at})")
