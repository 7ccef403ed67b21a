"""pytest-benchmark micro-benchmarks (not part of the CI test run; ``testpaths = ["tests"]``).

Run with ``pytest benchmarks/test_micro.py`` (add ``--benchmark-only`` to skip the plain checks,
``--benchmark-autosave`` to keep the results under ``.benchmarks/``). Each benchmark times one small
call in this process, on the CPU unless a GPU is present; the full layer sweep is ``python -m benchmarks``.
"""

from __future__ import annotations

import pytest
import torch

import led_kernels as lk
from benchmarks.cases import Case, attention_flops, make_inputs, score_entries
from benchmarks.measure import run_mode
from benchmarks.providers import get_provider

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
DTYPE = "bfloat16" if DEVICE.type == "cuda" else "float32"
SMALL = Case(batch=1, seqlen=1024, heads=12, head_dim=64, window=128, globals=1, dtype=DTYPE)


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def test_score_entries_matches_anchor() -> None:
    """The FLOP count of the headline shape: ~50.8 GFLOP forward (ANCHORS.md, 'The shape that matters')."""
    # by hand: 15359 full rows x 1025 + two edges of 393472 + 16383 global-key entries + 16384 (global row)
    assert score_entries(16384, 512, [0]) == 16_562_686
    case = Case(1, 16384, 12, 64, 512, 1)
    assert attention_flops(case, "fwd") == pytest.approx(50.8e9, rel=0.01)
    assert attention_flops(case, "fwd_bwd") == pytest.approx(3.5 * attention_flops(case, "fwd"))
    # dense limit: w >= N and no globals -> N^2 entries
    assert score_entries(100, 100, []) == 100 * 100
    # everything global -> every row attends all N keys
    assert score_entries(10, 2, list(range(10))) == 100


@pytest.mark.parametrize("n,w,positions", [(37, 5, [0]), (64, 3, [3, 10, 63]), (20, 30, [5]), (50, 0, [])])
def test_score_entries_brute_force(n: int, w: int, positions: list[int]) -> None:
    """score_entries equals the number of True entries of the dense 'may attend' matrix."""
    idx = torch.arange(n)
    is_global = torch.zeros(n, dtype=torch.bool)
    is_global[positions] = True
    local = ((idx[:, None] - idx[None, :]).abs() <= w) & ~is_global[None, :]
    allowed = local | is_global[None, :]
    allowed[is_global] = True  # global rows attend every key
    assert score_entries(n, w, positions) == int(allowed.sum())


@pytest.mark.parametrize("mode", ["fwd", "fwd_bwd"])
def test_torch_backend_layer(benchmark, mode: str) -> None:
    """led_kernels torch backend, whole layer (six projections), N=1024, w=128, G=1."""
    prep = get_provider("torch").prepare(make_inputs(SMALL, DEVICE))

    def run() -> None:
        run_mode(prep, mode)
        _sync()

    benchmark(run)


@pytest.mark.parametrize("mode", ["fwd", "fwd_bwd"])
def test_hf_layer(benchmark, mode: str) -> None:
    """transformers' LEDEncoderSelfAttention on the same inputs (the baseline of the table)."""
    pytest.importorskip("transformers")
    prep = get_provider("hf").prepare(make_inputs(SMALL, DEVICE))

    def run() -> None:
        run_mode(prep, mode)
        _sync()

    benchmark(run)


@pytest.mark.parametrize("max_global", [None, 64], ids=["sync", "no-sync"])
def test_global_indices(benchmark, max_global: int | None) -> None:
    """lk.global_indices on a (8, 16384) mask with 64 scattered globals per row."""
    mask = torch.zeros(8, 16384, dtype=torch.bool, device=DEVICE)
    mask[:, ::256] = True

    def run() -> torch.Tensor:
        out = lk.global_indices(mask, max_global=max_global)
        _sync()
        return out

    out = benchmark(run)
    assert out.shape == (8, 64)


def test_banded_attention_no_globals(benchmark) -> None:
    """lk.banded_attention (torch backend) forward without globals, N=2048, w=256, no autograd."""
    q, k, v = torch.randn(3, 1, 2048, 12, 64, device=DEVICE, dtype=SMALL.torch_dtype).unbind(0)

    def run() -> torch.Tensor:
        with torch.no_grad():
            out = lk.banded_attention(q, k, v, 256, backend="torch")
        _sync()
        return out

    benchmark(run)
