"""Draw a results CSV: time and peak memory against sequence length, one line per provider.

``python -m benchmarks.plot benchmarks/results/<slug>-attention.csv [--out file.png]`` redraws the PNG
beside the CSV. One row of two panels (median time, peak memory above the inputs) per mode, both axes
logarithmic. A CSV holds sweeps over several parameters; the plot shows the sequence-length sweep: of the
groups of rows that share (dtype, batch, heads, head_dim, window, globals) it picks the one with the most
sequence lengths (override with ``--window``/``--globals``/``--head-dim``/``--dtype``).
"""

from __future__ import annotations

import argparse
import csv
import math
from collections import Counter, defaultdict
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullLocator  # noqa: E402

MODES = ("fwd", "bwd", "fwd_bwd")
MODE_TITLES = {"fwd": "forward", "bwd": "backward", "fwd_bwd": "forward + backward"}
STYLE = {  # provider -> (color, marker): ours solid, peers dashed
    "triton": ("tab:red", "o", "-"),
    "triton-two-launch": ("tab:pink", "o", "-"),
    "triton-fused": ("tab:pink", "o", "-"),  # the one-launch forward before it was the default
    "triton-key64": ("tab:red", "o", ":"),
    "cuda": ("tab:purple", "s", "-"),
    "cuda-wgmma": ("tab:olive", "s", "-"),
    "cuda-wgmma16": ("tab:cyan", "s", "-"),
    "cuda-mma": ("tab:pink", "s", "-"),
    "cuda-wgmma16s": ("tab:brown", "s", "-"),
    "cuda-wgmma2g": ("gold", "s", "-"),
    "cuda-wgmma16o": ("tab:gray", "s", "-"),
    "cuda-nolean": ("tab:purple", "s", ":"),
    "cuda-two-launch": ("tab:purple", "s", "-."),
    "cpu": ("tab:orange", "D", "-"),
    "torch": ("tab:blue", "^", "-"),
    "flex": ("tab:green", "v", "--"),
    "sdpa": ("tab:brown", "P", "--"),
    "hf": ("tab:gray", "X", "--"),
}
GROUP_KEYS = ("dtype", "batch", "heads", "head_dim", "window", "globals")


def _number(value: float, _pos: int | None = None) -> str:
    return f"{value:g}"


def _minor_number(value: float, _pos: int | None = None) -> str:
    """Label the 2x and 5x minor ticks of a log axis (readable without the exponent notation)."""
    mantissa = value / 10 ** math.floor(math.log10(value)) if value > 0 else 0
    return f"{value:g}" if round(mantissa) in (2, 5) and abs(mantissa - round(mantissa)) < 1e-6 else ""


def read_rows(csv_path: Path) -> list[dict]:
    with Path(csv_path).open(newline="") as f:
        return list(csv.DictReader(f))


def select_sweep(rows: list[dict], **fixed: str | int | None) -> tuple[dict, list[dict]]:
    """(the fixed parameters, the rows) of the sequence-length sweep to draw; ``fixed`` narrows the choice."""
    rows = [r for r in rows if all(v is None or str(r[k]) == str(v) for k, v in fixed.items())]
    if not rows:
        raise ValueError(f"no rows match {fixed}")
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for r in rows:
        groups[tuple(r[k] for k in GROUP_KEYS)].append(r)
    best = max(groups, key=lambda k: (len({r["seqlen"] for r in groups[k]}), len(groups[k])))
    return dict(zip(GROUP_KEYS, best)), groups[best]


def plot_results(
    csv_path: Path | str,
    png_path: Path | str | None = None,
    *,
    gpu: str | None = None,
    **fixed: str | int | None,
) -> Path:
    """Draw ``csv_path`` into ``png_path`` (default: the CSV's name with .png) and return the PNG's path.

    ``gpu`` selects the device rows (default: the most common ``gpu`` value in the file); ``fixed`` may
    pin any of dtype, batch, heads, head_dim, window, globals.
    """
    csv_path = Path(csv_path)
    png_path = Path(png_path) if png_path else csv_path.with_suffix(".png")
    rows = [r for r in read_rows(csv_path) if r["op"] == "longformer_attention"]
    if not rows:
        raise ValueError(f"{csv_path} has no longformer_attention rows")
    gpu = gpu or Counter(r["gpu"] for r in rows).most_common(1)[0][0]
    params, rows = select_sweep([r for r in rows if r["gpu"] == gpu], **fixed)
    modes = [m for m in MODES if any(r["mode"] == m for r in rows)]
    providers = sorted(
        {r["provider"] for r in rows}, key=lambda p: list(STYLE).index(p) if p in STYLE else 99
    )

    height = 3.6 * len(modes) + 0.8
    fig, axes = plt.subplots(len(modes), 2, figsize=(12, height), squeeze=False)
    for row_axes, mode in zip(axes, modes):
        for col, (field, ylabel) in enumerate(
            (("median_ms", "median time (ms)"), ("peak_mem_mb", "peak memory above inputs (MiB)"))
        ):
            ax = row_axes[col]
            for prov in providers:
                pts = sorted(
                    (int(r["seqlen"]), float(r[field]))
                    for r in rows
                    if r["provider"] == prov and r["mode"] == mode and float(r[field]) > 0
                )
                if not pts:
                    continue
                color, marker, ls = STYLE.get(prov, ("black", ".", ":"))
                ax.plot([p[0] for p in pts], [p[1] for p in pts], ls, color=color, marker=marker, label=prov)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            seqlens = sorted({int(r["seqlen"]) for r in rows})
            ax.set_xticks(seqlens, [f"{n // 1024}k" if n % 1024 == 0 else str(n) for n in seqlens])
            ax.xaxis.set_minor_locator(NullLocator())
            ax.yaxis.set_major_formatter(FuncFormatter(_number))
            ax.yaxis.set_minor_formatter(FuncFormatter(_minor_number))
            ax.set_xlabel("sequence length N")
            ax.set_ylabel(ylabel)
            ax.set_title(f"{MODE_TITLES[mode]}: {'time' if col == 0 else 'peak memory'}")
            ax.grid(True, which="major", alpha=0.3)
            ax.grid(True, which="minor", axis="y", alpha=0.1)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", ncol=len(labels), frameon=False)
    commits = sorted({r["commit"] for r in rows})
    fig.suptitle(
        f"Longformer/LED attention layer on {gpu}\n"
        f"{params['dtype']}, B={params['batch']}, H={params['heads']}, D={params['head_dim']}, "
        f"w={params['window']}, G={params['globals']} (first G tokens global); commit {', '.join(commits)}",
        x=0.01,
        ha="left",
        fontsize=10,
    )
    fig.tight_layout()  # makes room for the suptitle
    png_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png_path, dpi=120)
    plt.close(fig)
    return png_path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.plot", description=__doc__.splitlines()[0])
    p.add_argument("csv", type=Path)
    p.add_argument("--out", type=Path, help="PNG path (default: beside the CSV)")
    p.add_argument("--gpu", help="the device rows to draw (default: the most common)")
    for name in ("dtype", "batch", "heads", "head-dim", "window", "globals"):
        p.add_argument(f"--{name}")
    a = p.parse_args(argv)
    fixed = {k: getattr(a, k) for k in ("dtype", "batch", "heads", "head_dim", "window", "globals")}
    print(plot_results(a.csv, a.out, gpu=a.gpu, **fixed))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
