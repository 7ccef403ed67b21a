"""``python -m benchmarks.profile_layer``: where one provider's time goes, kernel by kernel (GPU).

Runs a provider of the attention benchmark (same inputs, same calls as ``python -m benchmarks``) under
``torch.profiler`` and prints, for the forward and for forward + backward: the GPU time of every
kernel per call, the GPU time summed, the wall time per call, and for the ``triton`` backend the tile
configs its autotuner chose. A call whose wall time is well above its summed GPU time is host-bound.
``--host`` adds where the host time of a forward and of a forward + backward goes: the Python time
per call without the profiler (calls queued, no host sync between them), any host-device
synchronisation inside a call (torch's sync debug mode) and ``cProfile``'s functions by their own
time. On a GPU autograd runs a backward on a worker thread of its own, which cProfile does not see:
forward + backward is also timed, and profiled, with ``torch.autograd.set_multithreading_enabled(False)``
(the backward then runs on the calling thread), which also shows what the hand-off to that thread costs.
``--ncu`` instead marks one forward and one forward + backward for Nsight Compute (hardware counters
of each kernel), e.g.

    ncu --profile-from-start off --clock-control none --set full -k regex:_band_ -o report \
        python -m benchmarks.profile_layer --ncu

    python -m benchmarks.profile_layer [--provider triton] [--seqlen 16384] [--globals 1] [--host]
        [--out FILE] [--ncu]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
import warnings
from pathlib import Path

import torch

from benchmarks.cases import Case, make_inputs
from benchmarks.measure import run_mode
from benchmarks.providers import get_provider


def autotuned_configs() -> dict[str, str]:
    """The config each autotuned Triton kernel of the backend picked, per autotuning key."""
    from led_kernels.ops.triton import banded, global_rows, longformer

    chosen = {}
    for module, name in (
        (banded, "_band_fwd_kernel"),
        (longformer, "_layer_fwd_kernel"),  # kernel A's forward with B's key chunks (the default, G > 0)
        (banded, "_band_dq_kernel"),
        (banded, "_band_dkdv_kernel"),
        (global_rows, "_glob_dkdv_kernel"),  # its warp count only
    ):
        kernel = getattr(module, name)
        for key, config in getattr(kernel, "cache", {}).items():
            chosen[f"{name} {key}"] = str(config)
    return chosen


def profile_mode(prep, mode: str, reps: int) -> tuple[str, float, float]:
    """(kernel table, summed GPU ms per call, wall ms per call) of ``reps`` back-to-back calls."""
    for _ in range(3):
        run_mode(prep, mode, prep.forward() if mode == "bwd" else None)
    torch.cuda.synchronize()
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as prof:
        t0 = time.perf_counter()
        for _ in range(reps):
            run_mode(prep, mode)
        torch.cuda.synchronize()
        wall_ms = (time.perf_counter() - t0) * 1e3 / reps
    events = [e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA]
    events = events or [e for e in prof.key_averages() if getattr(e, "self_device_time_total", 0) > 0]
    rows, gpu_us = [], 0.0
    for e in sorted(events, key=lambda e: -e.self_device_time_total):
        us = e.self_device_time_total / reps
        gpu_us += us
        rows.append(f"  {us:9.1f} us  x{e.count // reps:<3d} {e.key[:90]}")
    return "\n".join(rows), gpu_us / 1e3, wall_ms


def median_host_ms(prep, mode: str, reps: int) -> float:
    """Median Python time of one call (no profiler, calls queued as in training)."""
    for _ in range(5):
        run_mode(prep, mode)
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        result = run_mode(prep, mode)
        times.append((time.perf_counter() - t0) * 1e3)
        del result
    torch.cuda.synchronize()
    return sorted(times)[len(times) // 2]


def host_profile(prep, mode: str, reps: int, top: int = 25) -> str:
    """The median host time of one call and cProfile's functions by own time over ``reps`` calls; for a
    mode with a backward also with autograd's backward on the calling thread (see the module doc)."""
    lines = [f"{mode} host: {median_host_ms(prep, mode, reps):.3f} ms per call (median of {reps})"]
    lines += syncs(prep, mode)
    one_thread = mode != "fwd"
    with torch.autograd.set_multithreading_enabled(not one_thread):
        if one_thread:
            ms = median_host_ms(prep, mode, reps)
            lines.append(f"{mode} host with the backward on the calling thread: {ms:.3f} ms per call")
        profiler = cProfile.Profile()
        profiler.enable()
        for _ in range(reps):
            run_mode(prep, mode)
        profiler.disable()
        torch.cuda.synchronize()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return "\n".join([*lines, *(line for line in out.getvalue().splitlines() if line.strip())])


def is_sync_warning(message: str) -> bool:
    """Whether a warning raised under torch's sync debug mode reports a synchronizing operation (torch
    also warns, once, that the mode itself is a prototype: that notice is no synchronisation)."""
    text = message.lower()
    return "synchroniz" in text and "prototype feature" not in text


def syncs(prep, mode: str) -> list[str]:
    """The host-device synchronisations of one call, as torch's sync debug mode reports them."""
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run_mode(prep, mode)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    found = [m for m in (str(w.message).splitlines()[0] for w in caught) if is_sync_warning(m)]
    return [f"{mode} host-device syncs in one call: {len(found)}", *(f"  {m[:150]}" for m in found)]


def mark_for_ncu(prep) -> None:
    """One forward, then one forward + backward, between cudaProfilerStart and cudaProfilerStop (what
    ``ncu --profile-from-start off`` profiles), after three untimed calls of each (autotuning, caches).
    No torch profiler here: its CUPTI session would clash with Nsight Compute's."""
    for mode in ("fwd", "fwd_bwd"):
        for _ in range(3):
            run_mode(prep, mode)
    torch.cuda.synchronize()
    cudart = torch.cuda.cudart()
    cudart.cudaProfilerStart()
    for mode in ("fwd", "fwd_bwd"):
        run_mode(prep, mode)
    torch.cuda.synchronize()
    cudart.cudaProfilerStop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.profile_layer", description=__doc__.splitlines()[0]
    )
    p.add_argument("--provider", default="triton")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seqlen", type=int, default=16384)
    p.add_argument("--heads", type=int, default=12)
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--window", type=int, default=512)
    p.add_argument("--globals", type=int, default=1)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--host", action="store_true", help="also profile the host side of the calls")
    p.add_argument("--out", type=Path, help="also write the report here")
    p.add_argument(
        "--ncu",
        action="store_true",
        help="only mark one call of each mode for Nsight Compute, after a warm-up (autotuning): run as "
        "ncu --profile-from-start off --clock-control none ... python -m benchmarks.profile_layer --ncu",
    )
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        p.error("needs a CUDA GPU")
    case = Case(args.batch, args.seqlen, args.heads, args.head_dim, args.window, args.globals, args.dtype)
    provider = get_provider(args.provider)
    reason = provider.skip_reason(case, torch.device("cuda"), caps=False)
    if reason:
        p.error(f"{args.provider} cannot run {case.short()}: {reason}")
    prep = provider.prepare(make_inputs(case, "cuda"))
    if args.ncu:
        mark_for_ncu(prep)
        return 0
    lines = [f"{args.provider} on {case.short()}, {torch.cuda.get_device_name()}, {args.reps} calls per mode"]
    for mode in ("fwd", "fwd_bwd"):
        table, gpu_ms, wall_ms = profile_mode(prep, mode, args.reps)
        lines += [f"{mode}: GPU {gpu_ms:.3f} ms (kernels summed), wall {wall_ms:.3f} ms per call", table]
    if args.host:
        lines += [host_profile(prep, mode, max(args.reps, 100)) for mode in ("fwd", "fwd_bwd")]
    if args.provider == "triton":
        lines += ["autotuned configs:"] + [f"  {k}: {v}" for k, v in autotuned_configs().items()]
    report = "\n".join(lines)
    print(report)
    if args.out:
        args.out.write_text(report + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
