"""What is benchmarked: the shape of one attention layer, its inputs, its FLOP count, the device.

Global tokens are the **first G positions** of every batch element (LED summarization makes the
leading ``<s>`` global, QA makes the question prefix global); the headline is G = 1 (position 0).
No padding: every position is a real token.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

MODES = ("fwd", "bwd", "fwd_bwd")
#: FLOP multiplier of each mode relative to the forward (FlashAttention's convention).
MODE_FLOP_FACTOR = {"fwd": 1.0, "bwd": 2.5, "fwd_bwd": 3.5}
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
OP = "longformer_attention"
CSV_COLUMNS = (
    "gpu,op,provider,dtype,batch,seqlen,heads,head_dim,window,globals,mode,median_ms,tflops,peak_mem_mb,"
    "host_ms,commit"
).split(",")


@dataclass(frozen=True)
class Case:
    """One layer shape: B x N tokens, H heads of size D, one-sided window w, G global tokens per row."""

    batch: int
    seqlen: int
    heads: int
    head_dim: int
    window: int
    globals: int
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if not 0 <= self.globals <= self.seqlen:
            raise ValueError(f"globals must be in [0, seqlen={self.seqlen}], got {self.globals}")
        if min(self.batch, self.seqlen, self.heads, self.head_dim) < 1 or self.window < 0:
            raise ValueError(f"invalid case {self}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def to_dict(self) -> dict:
        return asdict(self)

    def short(self) -> str:
        return (
            f"B={self.batch} N={self.seqlen} H={self.heads} D={self.head_dim} w={self.window} "
            f"G={self.globals} {self.dtype}"
        )


def check_minimums(error, args, minimums: dict[str, int]) -> None:
    """Command-line checks: no value of an option (argparse dest -> least value; a list or one value,
    None unset) below its least value; ``error`` is the parser's ``error`` (exit 2, naming the option)."""
    for name, low in minimums.items():
        values = getattr(args, name)
        for value in values if isinstance(values, list) else [values]:
            if value is not None and value < low:
                error(f"--{name.replace('_', '-')} must be >= {low}, got {value}")


def global_positions(case: Case) -> list[int]:
    """The global token positions used for every batch element: the first ``case.globals`` positions."""
    return list(range(case.globals))


def score_entries(seqlen: int, window: int, global_positions: list[int] | tuple[int, ...]) -> int:
    """Number of unmasked attention-score entries of one (batch element, head) of a Longformer/LED layer.

    Counted from the semantics (DESIGN section 2), not from what any kernel computes:

    - each *local* row i (not global; no padding here) attends its in-window local keys
      ``{j : |i - j| <= window, j not global}`` plus all G global keys;
    - each *global* row attends all N keys (with the global projections).

    FLOPs follow FlashAttention's convention (``hopper/benchmark_attn.py``): a forward costs
    ``4 * head_dim`` FLOP per entry (QK^T and PV, 2 FLOP per multiply-add each), a backward 2.5x that,
    forward + backward 3.5x; see :func:`attention_flops`. Masked, padded or recomputed work is not
    counted, so every provider is credited with the same useful work.

    Example: LED-base, N = 16384, w = 512, G = 1 (position 0) gives 16,562,686 entries per head, i.e.
    ~50.9 GFLOP forward for 12 heads of size 64 (ANCHORS.md: "about 50.8").
    """
    n, w = seqlen, window
    is_global = [False] * n
    for p in global_positions:
        if not 0 <= p < n:
            raise ValueError(f"global position {p} outside [0, {n})")
        is_global[p] = True
    g = sum(is_global)
    # prefix[i] = number of local (non-global) positions in [0, i)
    prefix = [0] * (n + 1)
    for i in range(n):
        prefix[i + 1] = prefix[i] + (0 if is_global[i] else 1)
    total = 0
    for i in range(n):
        if is_global[i]:
            total += n
        else:
            lo, hi = max(0, i - w), min(n - 1, i + w)
            total += prefix[hi + 1] - prefix[lo] + g
    return total


def attention_flops(case: Case, mode: str) -> float:
    """FLOPs credited to one call of ``mode`` on ``case``: entries x 4·D x B x H x mode factor."""
    entries = score_entries(case.seqlen, case.window, global_positions(case))
    return 4.0 * case.head_dim * entries * case.batch * case.heads * MODE_FLOP_FACTOR[mode]


# --------------------------------------------------------------------------------------------- inputs


@dataclass
class Inputs:
    """The random inputs every provider receives for one case (identical values for every provider).

    ``fused`` is ONE (B, N, 6, H, D) leaf tensor with ``requires_grad`` (like the output of a fused
    q/k/v/q_global/k_global/v_global projection); the six (B, N, H, D) operands are its views, taken
    anew in each call by :meth:`views` so that the backward ends in one fused gradient, as in a model.
    """

    case: Case
    device: torch.device
    fused: torch.Tensor  # (B, N, 6, H, D), requires_grad
    global_mask: torch.Tensor  # (B, N) bool, the first G positions
    global_idx: torch.Tensor  # (B, G) int32 from lk.global_indices
    dout: torch.Tensor  # (B, N, H, D) upstream gradient

    def views(self) -> tuple[torch.Tensor, ...]:
        """(q, k, v, q_global, k_global, v_global), each a (B, N, H, D) view of ``fused``."""
        return self.fused.unbind(2)


def make_inputs(case: Case, device: torch.device | str, seed: int = 0) -> Inputs:
    """Build the shared inputs of ``case`` on ``device`` from ``seed`` (same values on every call)."""
    import led_kernels as lk

    device = torch.device(device)
    gen = torch.Generator(device=device).manual_seed(seed)
    b, n, h, d = case.batch, case.seqlen, case.heads, case.head_dim
    fused = torch.randn(b, n, 6, h, d, generator=gen, device=device, dtype=case.torch_dtype)
    fused.requires_grad_(True)
    dout = torch.randn(b, n, h, d, generator=gen, device=device, dtype=case.torch_dtype)
    global_mask = torch.zeros(b, n, dtype=torch.bool, device=device)
    global_mask[:, global_positions(case)] = True
    global_idx = lk.global_indices(global_mask, max_global=case.globals)
    return Inputs(case, device, fused, global_mask, global_idx, dout)


# --------------------------------------------------------------------------------------------- device


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or platform), e.g. 'AMD EPYC 7763 64-Core Processor'."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_threads() -> int:
    """CPU cores this process may use (the affinity mask), which the CPU workers give torch."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def device_name(device: torch.device) -> str:
    """The ``gpu`` column: the GPU's name, or 'CPU: <model> (<threads> threads)'."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU: {cpu_model()} ({cpu_threads()} threads)"


def _slugify(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def device_slug(device: torch.device) -> str:
    """File-name slug of the device: e.g. 'h100-sxm', 'h100-pcie', 'a100-sxm4-80gb', 'cpu-amd-epyc-7763'."""
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        return gpu_slug(name)
    model = cpu_model()
    model = re.sub(r"\((R|TM|tm|r)\)", " ", model)
    model = re.sub(r"@.*$", " ", model)
    model = re.sub(r"\b(CPU|Processor|\d+-Core|with .*)\b", " ", model)
    words = _slugify(model).split("-")[:4]
    return "cpu-" + "-".join(w for w in words if w) if any(words) else "cpu"


def gpu_slug(name: str) -> str:
    """Slug from a CUDA device name: 'NVIDIA H100 80GB HBM3' -> 'h100-sxm' (HBM3 H100s are SXM parts)."""
    low = name.lower().replace("nvidia", "").strip()
    if "h100" in low:
        if "pcie" in low:
            return "h100-pcie"
        if "nvl" in low:
            return "h100-nvl"
        return "h100-sxm"
    return _slugify(low) or "gpu"


#: where the benchmarks write their results and logs (the default --out-dir of every benchmark)
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def git_commit(repo: Path | None = None) -> str:
    """Short hash of HEAD, plus '-dirty' when tracked files differ from it (``git describe --dirty``
    semantics: untracked files do not count) outside ``benchmarks/results/``, where the run itself
    writes (its log is open before its rows get this); 'unknown' outside git."""
    repo = repo or Path(__file__).resolve().parent.parent
    results = RESULTS_DIR.relative_to(RESULTS_DIR.parents[1]).as_posix()  # as git names it in any clone
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", f":(exclude){results}"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    if not sha:
        return "unknown"
    return sha + ("-dirty" if status else "")
