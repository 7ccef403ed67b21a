"""``python -m benchmarks``: time every provider of the Longformer/LED attention layer on this machine.

For each case of the sweep and each provider that can run it, every mode (fwd, bwd, fwd_bwd) is
measured (median time over ``--reps`` after ``--warmup``, peak memory above the inputs; see
:mod:`benchmarks.measure` for exactly how), and rows in the fixed schema

    gpu,op,provider,dtype,batch,seqlen,heads,head_dim,window,globals,mode,median_ms,tflops,peak_mem_mb,host_ms,commit

are merged into ``<out-dir>/<device-slug>-attention[-<tag>].csv`` (rows of the same device, provider,
shape and mode are replaced; ``--overwrite`` starts the file afresh). A table with each provider's
speed-up and memory relative to ``hf`` is printed, the PNG beside the CSV is redrawn
(:mod:`benchmarks.plot`) and the console output is appended to the ``.log`` beside it (one section per
run, like the CSV it accumulates; ``--overwrite`` also starts the log afresh).

The sweep is one factor at a time around a headline shape: every value of ``--seqlens`` at the headline
window/globals/head_dim, every ``--window`` at the headline length, and so on (``--product`` runs the
full cross product instead). Defaults depend on the device:

- GPU: providers triton, cuda, flex, sdpa, hf, torch; bfloat16; headline B=1, N=16384, H=12, D=64,
  w=512, G=1; sweeps N 1024..16384 (doubling), w 256/512, G 0/1/64, D 64/128; all three modes.
- CPU: providers torch, cpu, hf; float32; B=1, H=12, D=64, w=256, G=1, N 1024/2048/4096; fwd and
  fwd_bwd; 5 reps after 1 warmup, fewer for calls slower than ``--time-budget`` allows (at least 3).
  On the CPU every (provider, case) runs in a fresh subprocess (peak RSS), with
  ``torch.set_num_threads`` = the cores this process may use. Timings on a shared machine are only as
  good as its idleness: the 1-minute load average is logged at the start and the end.

Global tokens are the first G positions (LED summarization's ``<s>`` for G=1). Providers that cannot
run here (no GPU, backend not built, above the size cap in :data:`benchmarks.providers.SEQLEN_CAPS`, out
of memory) are skipped with the reason logged; the run goes on.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from benchmarks.cases import (
    CSV_COLUMNS,
    DTYPES,
    MODES,
    OP,
    RESULTS_DIR,
    Case,
    attention_flops,
    check_minimums,
    cpu_threads,
    device_name,
    device_slug,
    git_commit,
)
from benchmarks.measure import Measurement, format_measurement, measure
from benchmarks.providers import PROVIDERS, get_provider
from benchmarks.worker import RESULT_PREFIX

REPO_ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("benchmarks")


@dataclass(frozen=True)
class Defaults:
    """Per-device defaults. Each swept dimension is (headline value, sweep values)."""

    providers: tuple[str, ...]
    dtype: str
    batch: int
    heads: int
    seqlens: tuple[int, tuple[int, ...]]
    window: tuple[int, tuple[int, ...]]
    globals: tuple[int, tuple[int, ...]]
    head_dim: tuple[int, tuple[int, ...]]
    modes: tuple[str, ...]
    reps: int
    warmup: int


GPU_DEFAULTS = Defaults(
    providers=("triton", "cuda", "flex", "sdpa", "hf", "torch"),
    dtype="bfloat16",
    batch=1,
    heads=12,
    seqlens=(16384, (1024, 2048, 4096, 8192, 16384)),
    window=(512, (256, 512)),
    globals=(1, (0, 1, 64)),
    head_dim=(64, (64, 128)),
    modes=MODES,
    reps=20,
    warmup=5,
)
GPU_QUICK = replace(
    GPU_DEFAULTS,
    seqlens=(16384, (2048, 16384)),
    window=(512, (512,)),
    globals=(1, (1,)),
    head_dim=(64, (64,)),
    reps=5,
    warmup=2,
)
CPU_DEFAULTS = Defaults(
    providers=("torch", "cpu", "hf"),
    dtype="float32",
    batch=1,
    heads=12,
    seqlens=(4096, (1024, 2048, 4096)),
    window=(256, (256,)),
    globals=(1, (1,)),
    head_dim=(64, (64,)),
    modes=("fwd", "fwd_bwd"),
    reps=5,
    warmup=1,
)
CPU_QUICK = replace(CPU_DEFAULTS, seqlens=(1024, (1024,)), reps=3, warmup=1)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark the Longformer/LED attention layer (led_kernels and peers) on this machine.",
    )
    p.add_argument("--providers", nargs="+", choices=sorted(PROVIDERS), help="default: by device")
    p.add_argument("--dtype", choices=sorted(DTYPES), help="default: bfloat16 on GPU, float32 on CPU")
    p.add_argument("--batch", type=int, help="B (default 1)")
    p.add_argument("--seqlens", nargs="+", type=int, help="sequence lengths N")
    p.add_argument("--window", nargs="+", type=int, help="one-sided windows w")
    p.add_argument("--globals", nargs="+", type=int, help="global tokens G per batch element (the first G)")
    p.add_argument("--heads", type=int, help="H (default 12)")
    p.add_argument("--head-dim", nargs="+", type=int, help="head dims D")
    p.add_argument("--modes", nargs="+", choices=MODES, help="default: all on GPU, fwd fwd_bwd on CPU")
    p.add_argument("--reps", type=int, help="timed repetitions (median reported)")
    p.add_argument("--warmup", type=int, help="untimed repetitions before timing")
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR, help="where CSV/PNG/log go")
    p.add_argument("--quick", action="store_true", help="a small sweep with few reps (smoke test)")
    p.add_argument("--tag", help="suffix of the output file names: <slug>-attention-<tag>.csv")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--product", action="store_true", help="full cross product instead of one-at-a-time")
    p.add_argument("--no-caps", action="store_true", help="ignore the per-provider sequence-length caps")
    p.add_argument("--check", action="store_true", help="also compare each forward with the torch backend")
    p.add_argument("--overwrite", action="store_true", help="replace the CSV instead of merging into it")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--job-timeout", type=float, default=900.0, help="seconds per CPU subprocess")
    p.add_argument(
        "--time-budget",
        type=float,
        default=3.0,
        help="CPU: seconds per measurement; slower calls get fewer reps (at least 3) and no warmup; 0: off",
    )
    args = p.parse_args(argv)
    least = {
        "batch": 1,
        "heads": 1,
        "reps": 1,
        "warmup": 0,
        "seqlens": 1,
        "head_dim": 1,
        "window": 0,
        "globals": 0,
    }
    check_minimums(p.error, args, least)
    if not args.job_timeout > 0:  # (also refuses nan)
        p.error(f"--job-timeout must be > 0 seconds, got {args.job_timeout}")
    if not 0 <= args.time_budget < float("inf"):
        p.error(f"--time-budget must be >= 0 seconds (0: off), got {args.time_budget}")
    return args


def _dimension(given: list[int] | None, default: tuple[int, tuple[int, ...]]) -> tuple[int, list[int]]:
    headline, values = default
    if not given:
        return headline, list(values)
    values = list(dict.fromkeys(given))
    return (headline if headline in values else values[0]), values


def build_cases(args: argparse.Namespace, d: Defaults) -> list[Case]:
    """The cases to run: one-at-a-time sweeps around the headline (or the cross product with --product)."""
    dtype = args.dtype or d.dtype
    batch, heads = args.batch or d.batch, args.heads or d.heads
    dims = {
        "seqlen": _dimension(args.seqlens, d.seqlens),
        "window": _dimension(args.window, d.window),
        "globals": _dimension(args.globals, d.globals),
        "head_dim": _dimension(args.head_dim, d.head_dim),
    }
    combos: list[dict[str, int]] = []
    if args.product:
        import itertools

        for values in itertools.product(*(v for _, v in dims.values())):
            combos.append(dict(zip(dims, values)))
    else:
        headline = {k: h for k, (h, _) in dims.items()}
        for key, (_, values) in dims.items():
            for value in values:
                combos.append({**headline, key: value})
    cases: list[Case] = []
    for c in combos:
        g = min(c["globals"], c["seqlen"])
        case = Case(batch, c["seqlen"], heads, c["head_dim"], c["window"], g, dtype)
        if case not in cases:
            cases.append(case)
    return cases


def pick_device(choice: str) -> torch.device:
    if choice == "cuda" or (choice == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda: no CUDA GPU is available")
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def output_paths(out_dir: Path, slug: str, tag: str | None) -> dict[str, Path]:
    stem = f"{slug}-attention" + (f"-{tag}" if tag else "")
    return {ext: out_dir / f"{stem}.{ext}" for ext in ("csv", "png", "log")}


def setup_logging(log_path: Path) -> None:
    log.setLevel(logging.INFO)
    log.handlers.clear()
    log.propagate = False
    fmt = logging.Formatter("%(message)s")
    for handler in (logging.StreamHandler(sys.stdout), logging.FileHandler(log_path, mode="a")):
        handler.setFormatter(fmt)
        log.addHandler(handler)


def cpu_job(
    provider: str, case: Case, modes: list[str], args: argparse.Namespace, reps: int, warmup: int
) -> dict:
    """The JSON job :mod:`benchmarks.worker` runs for one (provider, case) on the CPU."""
    return {
        "provider": provider,
        "case": case.to_dict(),
        "modes": list(modes),
        "reps": reps,
        "warmup": warmup,
        "seed": args.seed,
        "check": args.check,
        "threads": cpu_threads(),
        "device": "cpu",
        "time_budget_s": args.time_budget if args.time_budget > 0 else None,
    }


def run_cpu_job(job: dict, timeout: float) -> dict[str, Measurement]:
    """Run one job in a fresh ``python -m benchmarks.worker`` process; failures become skip/error entries."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    # Every provider's worker runs with glibc's mmap threshold pinned at its static default (128 KiB):
    # blocks above it are mmap'ed and unmapped on free, so RSS follows the live allocations. With the
    # default *dynamic* threshold, freed mid-sized temporaries stay in the heap and RSS would measure
    # the allocator's retention policy rather than the provider (see benchmarks.measure).
    env.setdefault("MALLOC_MMAP_THRESHOLD_", "131072")
    cmd = [sys.executable, "-m", "benchmarks.worker", json.dumps(job)]
    modes = job["modes"]
    try:
        proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        m = Measurement("skip", reason=f"too slow: worker exceeded --job-timeout {timeout:g} s")
        return {mode: m for mode in modes}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return {mode: Measurement(**d) for mode, d in json.loads(line[len(RESULT_PREFIX) :]).items()}
    tail = " | ".join(proc.stderr.strip().splitlines()[-4:])[-600:]
    if proc.returncode in (-9, 137):
        m = Measurement("skip", reason=f"worker killed (SIGKILL; out of memory?) {tail}")
    else:
        m = Measurement("error", reason=f"worker exited with {proc.returncode}: {tail}")
    return {mode: m for mode in modes}


def measure_on_cpu(name: str, case: Case, modes: list[str], args: argparse.Namespace, reps: int, warmup: int):
    """All modes of (provider, case) in one fresh worker; a mode whose peak was not measurable there
    (peak RSS could not be reset) is rerun alone in a fresh worker."""
    results = run_cpu_job(cpu_job(name, case, modes, args, reps, warmup), args.job_timeout)
    for mode in modes[1:]:
        if results[mode].status == "ok" and results[mode].reason.startswith("stale"):
            results[mode] = run_cpu_job(cpu_job(name, case, [mode], args, reps, warmup), args.job_timeout)[
                mode
            ]
    return results


def make_row(gpu: str, provider: str, case: Case, mode: str, m: Measurement, commit: str) -> dict:
    """A CSV row in the fixed schema; ``tflops`` from :func:`benchmarks.cases.attention_flops`."""
    tflops = attention_flops(case, mode) / (m.median_ms * 1e-3) / 1e12 if m.median_ms else float("nan")
    return {
        "gpu": gpu,
        "op": OP,
        "provider": provider,
        "dtype": case.dtype,
        "batch": case.batch,
        "seqlen": case.seqlen,
        "heads": case.heads,
        "head_dim": case.head_dim,
        "window": case.window,
        "globals": case.globals,
        "mode": mode,
        "median_ms": f"{m.median_ms:.4f}",
        "tflops": f"{tflops:.4f}",
        "peak_mem_mb": f"{m.peak_mem_mb:.1f}",
        "host_ms": "" if m.host_ms is None else f"{m.host_ms:.4f}",
        "commit": commit,
    }


_KEY = [c for c in CSV_COLUMNS if c not in ("median_ms", "tflops", "peak_mem_mb", "host_ms", "commit")]
_PROVIDER_ORDER = {
    name: i
    for i, name in enumerate(
        (
            *("triton", "triton-two-launch", "triton-fused", "triton-key64"),
            *("cuda", "cuda-two-launch", "cuda-nolean", "cuda-wgmma", "cuda-wgmma16", "cuda-wgmma16s"),
            "cuda-wgmma2g",
            "cuda-wgmma16o",
            "cuda-mma",
            *("cpu", "flex", "sdpa", "torch", "hf"),
        )
    )
}
_MODE_ORDER = {m: i for i, m in enumerate(MODES)}


def _sort_key(row: dict) -> tuple:
    return (
        row["gpu"],
        row["op"],
        row["dtype"],
        int(row["batch"]),
        int(row["heads"]),
        int(row["head_dim"]),
        int(row["window"]),
        int(row["globals"]),
        int(row["seqlen"]),
        _MODE_ORDER.get(row["mode"], 9),
        _PROVIDER_ORDER.get(row["provider"], 99),
        row["provider"],
    )


def write_csv(path: Path, rows: list[dict], *, merge: bool) -> int:
    """Write ``rows``, merged with those already in ``path`` unless ``merge`` is False; returns the count."""
    existing: list[dict] = []
    if merge and path.exists():
        with path.open(newline="") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames and set(reader.fieldnames) <= set(CSV_COLUMNS):
                # files written before a column was added keep their rows (the new column empty)
                existing = [{c: r.get(c) or "" for c in CSV_COLUMNS} for r in reader]
            else:
                log.warning("%s has another header; rewriting it with this run's rows only", path)
    new_keys = {tuple(str(r[k]) for k in _KEY) for r in rows}
    kept = [r for r in existing if tuple(r[k] for k in _KEY) not in new_keys]
    merged = sorted(kept + [{k: str(v) for k, v in r.items()} for r in rows], key=_sort_key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(merged)
    tmp.replace(path)
    return len(merged)


def format_table(rows: list[dict]) -> str:
    """Aligned table of this run's rows; per (shape, mode): speed-up vs hf (hf_ms / ms) and memory / hf's."""
    if not rows:
        return "(no measurements)"
    header = [
        "dtype",
        "B",
        "N",
        "H",
        "D",
        "w",
        "G",
        "mode",
        "provider",
        "ms",
        "TFLOP/s",
        "peak MiB",
        "speedup vs hf",
        "mem vs hf",
    ]
    groups: dict[tuple, list[dict]] = {}
    for r in sorted(rows, key=_sort_key):
        groups.setdefault(tuple(r[k] for k in _KEY if k != "provider"), []).append(r)
    lines: list[list[str]] = []
    for group in groups.values():
        hf = next((r for r in group if r["provider"] == "hf"), None)
        for r in group:
            ms, mem = float(r["median_ms"]), float(r["peak_mem_mb"])
            speed = f"x{float(hf['median_ms']) / ms:.2f}" if hf and ms > 0 else "-"
            hf_mem = float(hf["peak_mem_mb"]) if hf else 0.0
            memr = f"x{mem / hf_mem:.2f}" if hf and hf_mem > 0 else "-"
            lines.append(
                [
                    r["dtype"],
                    str(r["batch"]),
                    str(r["seqlen"]),
                    str(r["heads"]),
                    str(r["head_dim"]),
                    str(r["window"]),
                    str(r["globals"]),
                    r["mode"],
                    r["provider"],
                    f"{ms:.3f}",
                    f"{float(r['tflops']):.3f}",
                    f"{mem:.1f}",
                    speed,
                    memr,
                ]
            )
        lines.append([])
    widths = [max(len(h), *(len(line[i]) for line in lines if line)) for i, h in enumerate(header)]
    left = {0, 7, 8}

    def fmt(cells: list[str]) -> str:
        return "  ".join(
            c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
        )

    out = [fmt(header), "  ".join("-" * w for w in widths)]
    out += [fmt(line) if line else "" for line in lines]
    return "\n".join(out).rstrip()


def _log_load() -> None:
    """Log the load average; warn when other work competes for the cores (timings get noisy)."""
    try:
        load1 = float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return
    cores = os.cpu_count() or 1
    if load1 > 0.5 * cores:
        log.warning(
            "load average %.2f on %d cores (1-minute mean): if others compete, timings are noisy",
            load1,
            cores,
        )
    else:
        log.info("load average %.2f on %d cores", load1, cores)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    device = pick_device(args.device)
    on_gpu = device.type == "cuda"
    defaults = (
        (GPU_QUICK if args.quick else GPU_DEFAULTS) if on_gpu else (CPU_QUICK if args.quick else CPU_DEFAULTS)
    )
    providers = list(dict.fromkeys(args.providers or defaults.providers))
    modes = [m for m in MODES if m in (args.modes or defaults.modes)]
    reps = args.reps if args.reps is not None else defaults.reps
    warmup = args.warmup if args.warmup is not None else defaults.warmup
    cases = build_cases(args, defaults)

    slug, gpu = device_slug(device), device_name(device)
    paths = output_paths(args.out_dir, slug, args.tag)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if args.overwrite and paths["log"].exists():
        paths["log"].unlink()
    setup_logging(paths["log"])
    commit = git_commit(REPO_ROOT)
    log.info("=" * 100)
    log.info(
        "%s  python -m benchmarks %s", time.strftime("%Y-%m-%d %H:%M:%S"), " ".join(argv or sys.argv[1:])
    )
    log.info(
        "led-kernels attention benchmark: %s (%s), torch %s, commit %s",
        gpu,
        device,
        torch.__version__,
        commit,
    )
    if not on_gpu:
        log.info("CPU: each (provider, case) in a fresh subprocess, torch threads = %d", cpu_threads())
    _log_load()
    log.info(
        "providers %s; modes %s; reps %d after %d warmup; %d case(s); global tokens = the first G positions",
        " ".join(providers),
        " ".join(modes),
        reps,
        warmup,
        len(cases),
    )
    import led_kernels as lk

    for status in lk.available_backends().values():
        log.info("  led_kernels backend %s", status)

    rows: list[dict] = []
    skipped: list[str] = []
    errors: list[str] = []
    for ci, case in enumerate(cases, 1):
        log.info("[%d/%d] %s", ci, len(cases), case.short())
        for name in providers:
            provider = get_provider(name)
            reason = provider.skip_reason(case, device, caps=not args.no_caps)
            if reason:
                log.info("    %-6s skipped: %s", name, reason)
                skipped.append(f"{name} {case.short()}: {reason}")
                continue
            if on_gpu:
                results = measure(
                    provider,
                    case,
                    modes,
                    device,
                    reps=reps,
                    warmup=warmup,
                    seed=args.seed,
                    check=args.check,
                    log=lambda line: None,
                )
                for mode in modes:
                    log.info(format_measurement(name, mode, results[mode]))
            else:
                results = measure_on_cpu(name, case, modes, args, reps, warmup)
                for mode in modes:
                    log.info(format_measurement(name, mode, results[mode]))
            for mode, m in results.items():
                if m.status == "ok":
                    rows.append(make_row(gpu, name, case, mode, m, commit))
                elif m.status == "skip":
                    skipped.append(f"{name} {mode} {case.short()}: {m.reason}")
                else:
                    errors.append(f"{name} {mode} {case.short()}: {m.reason}")

    log.info("")
    log.info(format_table(rows))
    log.info("")
    if rows:
        total = write_csv(paths["csv"], rows, merge=not args.overwrite)
        log.info("wrote %d row(s) (%d in the file) to %s", len(rows), total, paths["csv"])
        try:
            from benchmarks.plot import plot_results

            plot_results(paths["csv"], paths["png"], gpu=gpu)
            log.info("drew %s", paths["png"])
        except Exception as exc:  # noqa: BLE001 - the CSV is the result; a plot failure is reported
            log.error("plot failed: %s: %s", exc.__class__.__name__, exc)
    if skipped:
        log.info("%d skipped (provider, case[, mode]):", len(skipped))
        for s in dict.fromkeys(skipped):
            log.info("  %s", s)
    if errors:
        log.error("%d error(s):", len(errors))
        for e in errors:
            log.error("  %s", e)
    _log_load()
    log.info("total wall time %.1f s; log in %s", time.perf_counter() - t_start, paths["log"])
    return 1 if errors else 0
