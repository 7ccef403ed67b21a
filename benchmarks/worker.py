"""Subprocess entry point: measure one (provider, case) in a fresh process and print the results.

Usage (what :mod:`benchmarks.harness` runs on the CPU)::

    python -m benchmarks.worker '{"provider": "torch", "case": {...}, "modes": ["fwd"], "reps": 5, ...}'

A fresh process is what makes the CPU peak-memory figure meaningful (``ru_maxrss`` minus the resident
set size after the inputs exist; see :mod:`benchmarks.measure`). The worker sets
``torch.set_num_threads`` to the job's ``threads`` (the machine's cores) before any work, logs to
stderr, and prints one line ``RESULT <json>`` on stdout: mode -> :class:`~benchmarks.measure.Measurement`.
"""

from __future__ import annotations

import json
import sys

RESULT_PREFIX = "RESULT "


def run_job(job: dict) -> dict:
    """Run one job (a dict as built by :func:`benchmarks.harness.cpu_job`); returns mode -> measurement."""
    import torch

    torch.set_num_threads(int(job["threads"]))
    from benchmarks.cases import Case
    from benchmarks.measure import measure
    from benchmarks.providers import FlexProvider, SDPAProvider, get_provider

    name = job["provider"]
    if name == "flex" and job.get("allow_cpu"):
        provider = FlexProvider(allow_cpu=True)
    elif name == "sdpa" and job.get("allow_cpu"):
        provider = SDPAProvider(allow_cpu=True)
    else:
        provider = get_provider(name)
    case = Case(**job["case"])
    device = torch.device(job.get("device", "cpu"))
    results = measure(
        provider,
        case,
        list(job["modes"]),
        device,
        reps=int(job["reps"]),
        warmup=int(job["warmup"]),
        seed=int(job.get("seed", 0)),
        check=bool(job.get("check", False)),
        fresh_process=True,
        time_budget_s=job.get("time_budget_s"),
        log=lambda line: print(line, file=sys.stderr, flush=True),
    )
    return {mode: m.to_dict() for mode, m in results.items()}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    result = run_job(json.loads(argv[0]))
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
