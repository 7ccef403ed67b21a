"""``python -m benchmarks.train_step``: one LED-base training step on a long document, per implementation.

What users feel: tokens per second and peak memory of ``model(...).loss.backward()`` for an LED-base
model (d_model 768, 6+6 layers, 12 heads, FFN 3072, attention_window 1024 so w = 512, 16384 encoder
positions; random weights) at 4k, 8k and 16k encoder tokens (B=1, global attention on ``<s>``, 256
label tokens), for

- ``led[<backend>]``: our :class:`led.LEDForConditionalGeneration` on ``led_kernels`` (default backend:
  ``auto``: triton on a GPU, cpu on a CPU);
- ``hf+patch[<backend>]``: ``transformers.LEDForConditionalGeneration`` after
  :func:`led_kernels.patch_hf_model`;
- ``hf``: ``transformers.LEDForConditionalGeneration`` as it is (chunked attention);

each with and without gradient checkpointing (provider suffix ``+ckpt``). The weights are written once
by ``transformers`` (``--folder``) and loaded by every implementation, so all run the same model. Each
(implementation, length, checkpointing) runs in a fresh Python process: load, move to the device, put
in ``train()`` mode (dropout 0.1 active, attention dropout 0 as in LED-base), run ``--warmup`` +
``--reps`` steps (gradients set to None in between), report the median step time and the peak memory
**above the loaded model**: on a GPU ``max_memory_allocated`` minus the allocation before the first step;
on a CPU the peak resident set size (``ru_maxrss``) minus the resident set before the first step.
``--bf16`` runs the steps under ``torch.autocast(dtype=bfloat16)`` (weights stay fp32, as in mixed-precision
training). Out-of-memory is reported as such, not as a row.

Rows go to ``<out-dir>/<device-slug>-led-train-step.csv`` in the results schema with ``op`` =
``led_train_step``, ``mode`` = ``fwd_bwd``, heads/head_dim/window/globals of the encoder attention and
``tflops`` left empty (this is a whole-model step, not an attention count); rows of the same key are
replaced. A plot (tokens/s and peak memory against length) is drawn beside the CSV and the console output
is appended to the ``.log``.

Examples::

    python -m benchmarks.train_step                                   # GPU: 4k/8k/16k, bf16, all six variants
    python -m benchmarks.train_step --seqlens 4096 8192 --impls led hf  # CPU: a subset (slow: tens of s/step)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.cases import RESULTS_DIR, check_minimums, device_name, device_slug, git_commit
from led.configuration import BACKEND_NAMES
from led.train.presets import PRESETS

OP = "led_train_step"
IMPLS = ("led", "hf+patch", "hf")
# led-base-16384: the `base` preset's shape (led.train.presets) with the released checkpoint's vocabulary
# and positions, the per-layer window list transformers' config expects, and no attention dropout
LED_BASE = dict(
    PRESETS["base"],
    vocab_size=50265,
    attention_window=[PRESETS["base"]["attention_window"]] * PRESETS["base"]["encoder_layers"],
    max_encoder_position_embeddings=16384,
    max_decoder_position_embeddings=1024,
    attention_dropout=0.0,
)
RESULT_PREFIX = "TRAIN_STEP_RESULT "
REPO_ROOT = Path(__file__).resolve().parent.parent
log = logging.getLogger("benchmarks.train_step")


def provider_name(impl: str, backend: str, checkpointing: bool) -> str:
    """The ``provider`` column: ``led[triton]``, ``hf+patch[cpu]+ckpt``, ``hf``, ..."""
    name = impl if impl == "hf" else f"{impl}[{backend}]"
    return name + ("+ckpt" if checkpointing else "")


def resolved_backend(requested: str, device, bf16: bool) -> str:
    """The backend ``requested`` stands for on ``device`` (``auto`` -> what led_kernels would pick)."""
    import torch

    from led_kernels.backends import _MODULES, choose_backend

    dtype = torch.bfloat16 if bf16 else torch.float32
    module = choose_backend(
        requested, device, dtype, LED_BASE["d_model"] // LED_BASE["encoder_attention_heads"]
    )
    return next(name for name, path in _MODULES.items() if path == module.__name__)


def make_folder(folder: str) -> None:
    """Write a random-weight LED-base folder with ``transformers`` (kept when it already exists)."""
    if os.path.isfile(os.path.join(folder, "config.json")):
        return
    import torch
    import transformers

    torch.manual_seed(0)
    transformers.LEDForConditionalGeneration(transformers.LEDConfig(**LED_BASE)).save_pretrained(folder)


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status (Linux only)")


def _load(job: dict):
    import torch

    if job["impl"] == "led":
        import led

        model = led.LEDForConditionalGeneration.from_pretrained(job["folder"], attn_backend=job["backend"])
    else:
        import transformers

        transformers.logging.set_verbosity_error()  # its "padded to a multiple of window" notice
        model = transformers.LEDForConditionalGeneration.from_pretrained(job["folder"])
        if job["impl"] == "hf+patch":
            import led_kernels

            led_kernels.patch_hf_model(model, backend=job["backend"])
    if job["checkpointing"]:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    model.to(torch.device(job["device"]))
    with torch.no_grad():  # page in weights that may be memory-mapped before measuring
        for p in model.parameters():
            p.sum()
    return model.train()


def run_job(job: dict) -> dict:
    """In a fresh process: load one implementation and time ``reps`` training steps."""
    import resource

    import torch

    device = torch.device(job["device"])
    if job["threads"]:
        torch.set_num_threads(job["threads"])
    model = _load(job)
    gen = torch.Generator().manual_seed(0)
    vocab = model.config.vocab_size
    ids = torch.randint(3, vocab, (1, job["seqlen"]), generator=gen)
    ids[:, 0], ids[:, -1] = 0, 2  # <s> ... </s>
    glob = torch.zeros_like(ids)
    glob[:, 0] = 1
    labels = torch.randint(3, vocab, (1, job["target_len"]), generator=gen)
    batch = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "global_attention_mask": glob,
        "labels": labels,
    }
    batch = {k: v.to(device) for k, v in batch.items()}
    if job["impl"] == "led":
        batch["max_global"] = 1  # the count is known: no host sync in the encoder
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=job["bf16"])

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device) / 2**20
    else:
        base = _rss_mb()
    times, losses = [], []
    try:
        for i in range(job["warmup"] + job["reps"]):
            model.zero_grad(set_to_none=True)
            sync()
            start = time.perf_counter()
            with autocast:
                loss = model(**batch).loss
            loss.backward()
            sync()
            if i >= job["warmup"]:
                times.append(time.perf_counter() - start)
            losses.append(float(loss))
    except torch.OutOfMemoryError as exc:
        return {"status": "oom", "error": str(exc).splitlines()[0]}
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20 - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    return {
        "status": "ok",
        "step_ms": statistics.median(times) * 1e3,
        "step_ms_all": [t * 1e3 for t in times],
        "peak_mem_mb": peak,
        "base_mb": base,
        "loss": losses[-1],
        "threads": torch.get_num_threads(),
    }


def _spawn(job: dict, timeout: float) -> dict:
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
    )
    argv = [sys.executable, "-m", "benchmarks.train_step", "--job", json.dumps(job)]
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO_ROOT)
    except subprocess.TimeoutExpired:
        return {"status": "failed", "error": f"timed out after {timeout:.0f} s"}
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
    if proc.returncode < 0 or proc.returncode == 137:
        return {"status": "failed", "error": f"killed (signal {-proc.returncode}); out of host memory?"}
    return {"status": "failed", "error": f"exit {proc.returncode}: " + " | ".join(tail)}


def make_row(gpu: str, job: dict, result: dict, commit: str) -> dict:
    return {
        "gpu": gpu,
        "op": OP,
        "provider": provider_name(job["impl"], job["backend"], job["checkpointing"]),
        "dtype": "bfloat16" if job["bf16"] else "float32",
        "batch": 1,
        "seqlen": job["seqlen"],
        "heads": LED_BASE["encoder_attention_heads"],
        "head_dim": LED_BASE["d_model"] // LED_BASE["encoder_attention_heads"],
        "window": LED_BASE["attention_window"][0] // 2,
        "globals": 1,
        "mode": "fwd_bwd",
        "median_ms": f"{result['step_ms']:.1f}",
        "tflops": "",
        "peak_mem_mb": f"{result['peak_mem_mb']:.1f}",
        "commit": commit,
    }


def plot(csv_path: Path, gpu: str) -> Path:
    """Tokens/s and peak memory against the encoder length, one line per provider."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from benchmarks.plot import read_rows

    rows = [r for r in read_rows(csv_path) if r["op"] == OP and r["gpu"] == gpu and r["median_ms"]]
    dtypes = sorted({r["dtype"] for r in rows})
    fig, axes = plt.subplots(len(dtypes), 2, figsize=(12, 4.2 * len(dtypes) + 0.6), squeeze=False)
    for row_axes, dtype in zip(axes, dtypes):
        sel = [r for r in rows if r["dtype"] == dtype]
        for prov in sorted({r["provider"] for r in sel}):
            pts = sorted(
                (int(r["seqlen"]), float(r["median_ms"]), float(r["peak_mem_mb"]))
                for r in sel
                if r["provider"] == prov
            )
            style = "--" if prov.startswith("hf") and "+patch" not in prov else "-"
            marker = "s" if prov.endswith("+ckpt") else "o"
            row_axes[0].plot(
                [p[0] for p in pts], [p[0] / p[1] * 1e3 for p in pts], style, marker=marker, label=prov
            )
            row_axes[1].plot([p[0] for p in pts], [p[2] for p in pts], style, marker=marker, label=prov)
        for ax, ylabel in zip(row_axes, ("tokens / s (training step)", "peak memory above the model (MiB)")):
            ax.set_xscale("log", base=2)
            lengths = sorted({int(r["seqlen"]) for r in sel})
            ax.set_xticks(lengths, [f"{n // 1024}k" for n in lengths])
            ax.minorticks_off()
            ax.set_xlabel("encoder tokens")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{dtype}: {ylabel.split(' (')[0]}")
            ax.grid(True, alpha=0.3)
        row_axes[0].legend(fontsize=8)
    fig.suptitle(
        f"LED-base training step (B=1, 256 labels, global <s>) on {gpu}", x=0.01, ha="left", fontsize=10
    )
    fig.tight_layout()
    png = csv_path.with_suffix(".png")
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.train_step", description=__doc__.splitlines()[0])
    p.add_argument("--seqlens", type=int, nargs="+", default=[4096, 8192, 16384])
    p.add_argument("--impls", nargs="+", choices=IMPLS, default=list(IMPLS))
    p.add_argument("--checkpointing", choices=["both", "on", "off"], default="both")
    p.add_argument("--backend", default="auto", help="led_kernels backend of led and hf+patch (default auto)")
    p.add_argument("--device", default="auto", help="cuda, cpu or auto (cuda when available)")
    p.add_argument(
        "--bf16",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="autocast to bfloat16 (default: on for cuda, off for cpu)",
    )
    p.add_argument("--target-len", type=int, default=256)
    p.add_argument(
        "--warmup", type=int, default=None, help="untimed first steps (default 2 on GPU, 0 on CPU)"
    )
    p.add_argument("--reps", type=int, default=None, help="timed steps (default 5 on GPU, 1 on CPU)")
    p.add_argument("--threads", type=int, default=0, help="torch threads on the CPU (default: torch's)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per (impl, length, checkpointing)")
    p.add_argument("--folder", default=os.path.join(tempfile.gettempdir(), "led-base-16384-random"))
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    p.add_argument("--no-write", action="store_true", help="print only; write no CSV/PNG/log")
    p.add_argument("--job", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    check_minimums(p.error, args, {"seqlens": 1, "target_len": 1, "warmup": 0, "reps": 1, "threads": 0})
    if not 0 < args.timeout < float("inf"):
        p.error(f"--timeout must be a finite number of seconds > 0, got {args.timeout}")
    if args.device != "auto":
        import torch

        try:
            kind = torch.device(args.device).type
        except (RuntimeError, ValueError):
            kind = None
        if kind not in ("cpu", "cuda"):
            p.error(f"--device must be auto, cpu or cuda (cuda:N), got {args.device!r}")
        if kind == "cuda" and not torch.cuda.is_available():
            p.error(f"--device {args.device}: no CUDA GPU is available here")
    if args.backend not in BACKEND_NAMES:
        p.error(f"--backend must be one of {', '.join(BACKEND_NAMES)}, got {args.backend!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.job:
        print(RESULT_PREFIX + json.dumps(run_job(json.loads(args.job))), flush=True)
        return 0

    import torch

    from benchmarks.harness import write_csv

    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    on_gpu = device.type == "cuda"
    bf16 = on_gpu if args.bf16 is None else args.bf16
    warmup = args.warmup if args.warmup is not None else (2 if on_gpu else 0)
    reps = args.reps if args.reps is not None else (5 if on_gpu else 1)
    gpu, commit = device_name(device), git_commit()
    backend = resolved_backend(args.backend, device, bf16)
    stem = args.out_dir / f"{device_slug(device)}-led-train-step"
    handlers = [logging.StreamHandler(sys.stdout)]
    if not args.no_write:
        args.out_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(stem.with_suffix(".log")))
    logging.basicConfig(level=logging.INFO, format="%(message)s", handlers=handlers, force=True)
    log.info("# python -m benchmarks.train_step %s", " ".join(argv if argv is not None else sys.argv[1:]))
    log.info(
        "# %s, commit %s, %s, %s, warmup %d, reps %d, load average %s",
        time.strftime("%Y-%m-%d %H:%M"),
        commit,
        gpu,
        "bf16 autocast" if bf16 else "fp32",
        warmup,
        reps,
        os.getloadavg()[0],
    )
    make_folder(args.folder)
    ckpt = {"both": (False, True), "on": (True,), "off": (False,)}[args.checkpointing]
    rows = []
    log.info("%-22s %7s %10s %9s %12s %9s", "provider", "tokens", "step ms", "tokens/s", "peak MiB", "loss")
    for seqlen in args.seqlens:
        for impl in args.impls:
            for checkpointing in ckpt:
                job = dict(
                    impl=impl,
                    backend=backend,
                    checkpointing=checkpointing,
                    seqlen=seqlen,
                    target_len=args.target_len,
                    device=str(device),
                    bf16=bf16,
                    warmup=warmup,
                    reps=reps,
                    threads=args.threads,
                    folder=args.folder,
                )
                name = provider_name(impl, backend, checkpointing)
                result = _spawn(job, args.timeout)
                if result["status"] != "ok":
                    log.info("%-22s %7d %s: %s", name, seqlen, result["status"], result["error"])
                    continue
                log.info(
                    "%-22s %7d %10.1f %9.0f %12.0f %9.4f",
                    name,
                    seqlen,
                    result["step_ms"],
                    seqlen / result["step_ms"] * 1e3,
                    result["peak_mem_mb"],
                    result["loss"],
                )
                rows.append(make_row(gpu, job, result, commit))
    if rows and not args.no_write:
        csv_path = stem.with_suffix(".csv")
        write_csv(csv_path, rows, merge=True)
        log.info("# rows merged into %s; plot %s", csv_path, plot(csv_path, gpu))
    return 0


if __name__ == "__main__":
    sys.exit(main())
