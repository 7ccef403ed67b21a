"""``python -m benchmarks.host_overhead``: the host (Python) cost of one call of the triton or cuda
backend, measurable without a GPU.

A small layer on a GPU is host-bound when the Python side of a call (validation, autograd, dispatch of
the registered ops, launch configuration, the aten ops around the kernels) takes longer than its
kernels. This runs ``led_kernels.longformer_attention(backend="triton")`` on tiny CPU tensors with every
Triton launch replaced by a no-op, so what is timed is that Python side alone. It does not include
Triton's own launch cost or the CUDA launch latency of the aten ops, so on a GPU machine the host time
is larger; the counts (Triton launches and aten calls per call) carry over as they are. Use it to
compare versions of the backend on one machine.

With ``--triton-launch`` the kernels are compiled for sm_90 and launched through Triton's real
launch path (its binder, caches and autotuner, and this backend's cached launches), with only the C
launcher that would call cuLaunchKernel replaced (``benchmarks.fake_cuda_driver``): Triton's own
per-launch cost is then included. ``LED_KERNELS_FAST_LAUNCH=0`` compares with Triton's generic path.
That mode also reports, for the forward, the host time from the call's start to the launch of its
attention kernel (``MAIN_KERNELS``), before which the GPU has only the small preprocessing kernels to
run: what a call on an idle GPU waits before its main kernel starts. In the GPU benchmark
(``benchmarks.measure``) reps are queued back to back, each after an L2 flush, so the host runs ahead
and shows in no timing while a rep's whole host time stays clearly below its GPU time (flush plus
kernels); as it nears it, some reps find the GPU waiting (the median grows, the minimum does not).

With ``--backend cuda`` the cuda backend's Python layer (its layer op: key flags, then kernels A and B
over the same tensors) runs with its compiled kernels replaced by no-ops
(``led_kernels.ops.cuda._kernels``; the "kernel calls" column counts their calls: the key flags, the
layer's forward and its backward (kernels A and B in one call each; kernel A's alone without global
tokens), which are several CUDA launches on a GPU).

With ``--global-rows`` the global queries are given as the G rows of the global tokens
(``q_global_rows``), as the LED model gives them.

    python -m benchmarks.host_overhead [--globals 0 1] [--reps 300] [--triton-launch] [--backend cuda]
                                       [--global-rows]
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import time

# decided before led_kernels' kernels are defined: interpreted (stubbed) or compiled (fake driver)
TRITON_LAUNCH = __name__ == "__main__" and "--triton-launch" in sys.argv[1:]
if TRITON_LAUNCH:
    os.environ.pop("TRITON_INTERPRET", None)
    from benchmarks import fake_cuda_driver

    fake_cuda_driver.install(arch=90)
else:
    os.environ["TRITON_INTERPRET"] = "1"  # lets the triton backend take CPU tensors; no kernel runs

import torch  # noqa: E402

import led_kernels as lk  # noqa: E402
from led_kernels import _validation  # noqa: E402
from led_kernels.ops.triton import _common, banded, global_rows, longformer  # noqa: E402

#: aten ops that launch no kernel: views, metadata, allocations
_NO_KERNEL = {
    "empty", "empty_strided", "empty_like", "new_empty", "new_empty_strided", "view", "_unsafe_view",
    "reshape", "slice", "narrow", "select", "as_strided", "expand", "unsqueeze", "squeeze", "detach",
    "alias", "t", "transpose", "permute", "unbind", "split", "lift_fresh", "resolve_conj", "resolve_neg",
}  # fmt: skip


class _NoLaunch:
    """Stands in for a @triton.jit / autotuned kernel: ``kernel[grid](...)`` counts and returns."""

    launches = 0

    def __getitem__(self, grid):
        def launch(*args, **kwargs):
            _NoLaunch.launches += 1

        return launch


class _NoCudaKernels:
    """Stands in for the extension's CUDA entry points (led_kernels.ops.cuda._kernels): counts calls."""

    calls = 0

    def attention_cuda_workspace_bytes(self, backward, kind, b, h, g, n, d):
        return 0

    def key_flags_cuda(self, *args):
        _NoCudaKernels.calls += 1

    def attention_fwd_cuda(self, *args):
        _NoCudaKernels.calls += 1

    def attention_layer_fwd_cuda(self, *args):
        _NoCudaKernels.calls += 1

    def attention_bwd_cuda(self, *args):
        _NoCudaKernels.calls += 1

    def attention_layer_bwd_cuda(self, *args):
        _NoCudaKernels.calls += 1


def _cuda_on_the_cpu() -> None:
    """The cuda backend accepts the CPU tensors here, with no-op kernels."""
    from led_kernels import backends
    from led_kernels.ops import cuda

    cuda._kernels = _NoCudaKernels()
    backends._STATUS["cuda"] = lambda: (True, "no-op kernels (benchmarks.host_overhead)")
    backends._cached_status.cache_clear()
    device_ok = backends._device_ok
    backends._device_ok = lambda name, device: (True, "") if name == "cuda" else device_ok(name, device)


def _as_on_a_gpu() -> None:
    """No kernel runs; global_idx's value checks (done on CPU tensors only: on a GPU they would be a
    host sync) are skipped, as they are for GPU tensors."""
    _validation._should_check_values = lambda x: False
    for module in (_common, banded, global_rows, longformer):
        for name in dir(module):
            if type(getattr(module, name)).__name__ in ("JITFunction", "InterpretedFunction", "Autotuner"):
                setattr(module, name, _NoLaunch())


#: the forward's attention kernels (kernel A's, with kernel B's key chunks in the layer's launch)
MAIN_KERNELS = ("_layer_fwd_kernel", "_band_fwd_kernel")


def _main_launch(call_launches: list):
    """The first launch of a forward attention kernel among one call's launches (in order)."""
    return next(r for r in call_launches if r.name in MAIN_KERNELS)


def _aten_calls(fn) -> collections.Counter:
    """aten ops of one call that would launch a kernel on a GPU (views and allocations left out)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    counts = collections.Counter()
    for event in prof.events():
        name = event.name.removeprefix("aten::")
        if name in ("to", "contiguous") and not event.cpu_children:
            continue  # already of that dtype / layout: returns its input, no kernel
        if event.name.startswith("aten::") and name not in _NO_KERNEL:
            # only the outermost aten op of a nest (aten::zeros -> aten::zero_ -> aten::fill_ is one)
            parent = event.cpu_parent
            while parent is not None and not parent.name.startswith("aten::"):
                parent = parent.cpu_parent
            if parent is None:
                counts[name] += 1
    return counts


def _calls(
    fused: torch.Tensor,
    dout: torch.Tensor,
    global_idx: torch.Tensor | None,
    window: int,
    backend: str,
    global_rows: bool = False,
):
    """The forward and forward+backward of one layer, as the attention benchmark's providers run them
    (six views of one fused projection); ``global_rows``: as the LED model runs them, with the global
    queries given as the G rows of the global tokens (``q_global_rows``, gathered outside the call)."""
    rows = None
    if global_rows and global_idx is not None:
        rows = fused[:, : global_idx.shape[1], 3]  # stands in for query_global of the gathered tokens

    def forward():
        q, k, v, qg, kg, vg = fused.unbind(2)
        if rows is not None:
            qg = None
        return lk.longformer_attention(
            q, k, v, window, q_global=qg, k_global=kg, v_global=vg, global_idx=global_idx, backend=backend,
            q_global_rows=rows,
        )  # fmt: skip

    def forward_backward():
        torch.autograd.grad(forward(), fused, dout)

    return {"fwd": forward, "fwd_bwd": forward_backward}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.host_overhead", description=__doc__.splitlines()[0]
    )
    p.add_argument("--globals", type=int, nargs="+", default=[0, 1], help="global tokens (the first G)")
    p.add_argument("--reps", type=int, default=300)
    p.add_argument(
        "--triton-launch",
        action="store_true",
        help="compile the kernels (sm_90) and time Triton's real launch path, only cuLaunchKernel faked",
    )
    p.add_argument("--backend", choices=("triton", "cuda"), default="triton")
    p.add_argument(
        "--global-rows",
        action="store_true",
        help="global queries as the G rows of the global tokens (q_global_rows), as the LED model gives them",
    )
    args = p.parse_args(argv)
    if args.triton_launch != TRITON_LAUNCH:
        p.error("--triton-launch is only honoured when run as python -m benchmarks.host_overhead")
    if args.backend == "cuda":
        if TRITON_LAUNCH:
            p.error("--triton-launch times the triton backend")
        _validation._should_check_values = lambda x: False  # as for GPU tensors
        _cuda_on_the_cpu()
        count_launches = lambda: _NoCudaKernels.calls  # noqa: E731
    elif TRITON_LAUNCH:
        launches = fake_cuda_driver.LAUNCHES
        count_launches = lambda: len(launches)  # noqa: E731
    else:
        _as_on_a_gpu()
        count_launches = lambda: _NoLaunch.launches  # noqa: E731
    torch.set_num_threads(1)
    b, n, h, d, w = 1, 64, 1, 16, 8  # tiny: the aten ops' own work is negligible
    dtype = torch.float16 if args.backend == "cuda" else torch.float32
    fused = torch.randn(b, n, 6, h, d, dtype=dtype, requires_grad=True)
    dout = torch.randn(b, n, h, d, dtype=dtype)
    kernels = "triton launches" if args.backend == "triton" else "kernel calls"
    to_main = " to main us" if TRITON_LAUNCH else ""
    print(f"{'G':>3} {'mode':8} {'host us':>8}{to_main} {kernels:>16} {'aten calls':>11}  aten calls by op")
    for g in args.globals:
        mask = torch.zeros(b, n, dtype=torch.bool)
        mask[:, :g] = True
        global_idx = lk.global_indices(mask) if g else None
        for mode, fn in _calls(fused, dout, global_idx, w, args.backend, args.global_rows).items():
            for _ in range(20):
                fn()
            _NoLaunch.launches = _NoCudaKernels.calls = 0
            if TRITON_LAUNCH:
                launches.clear()
            times, before_main = [], []
            for _ in range(args.reps):
                first = len(launches) if TRITON_LAUNCH else 0
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e6)
                if TRITON_LAUNCH and mode == "fwd":
                    before_main.append((_main_launch(launches[first:]).time - t0) * 1e6)
            n_launches = count_launches() / args.reps
            calls = _aten_calls(fn)
            by_op = ", ".join(f"{op} {c}" for op, c in calls.most_common())
            host = statistics.median(times)
            # the column is there only with --triton-launch (to_main), and filled only for the forward
            main = f" {statistics.median(before_main):10.0f}" if before_main else " " * len(to_main)
            print(f"{g:>3} {mode:8} {host:8.0f}{main} {n_launches:16.0f} {sum(calls.values()):11d}  {by_op}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
