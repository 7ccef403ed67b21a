"""The Triton key-flag builder (``triton_key_flags``) against ``led_kernels.masks.key_flags``, and the
Triton key-flag preprocessing (``launch_prep``) against a pure-torch computation of its three
outputs: prefix counts of excluded (flag != LOCAL) and padded keys, and the per-row bounds (first
non-padded key, last non-padded + 1, number of listed global slots, 0).

The kernel is parallel over the sequence (each block sums the keys before it), so the lengths cover
one block, block edges and several blocks with a partial last one; under the interpreter blocks are
small (N / 16, at least 16 keys), on a GPU 1024 keys. Every output buffer starts as garbage, and every
element is compared, so an element no program writes shows up.
"""

from __future__ import annotations

import os

import pytest
import torch

triton = pytest.importorskip("triton")
tl = pytest.importorskip("triton.language")

if not torch.cuda.is_available():
    # must precede the first import of the kernels: @triton.jit picks the interpreter at decoration
    os.environ.setdefault("TRITON_INTERPRET", "1")
os.environ.setdefault("LED_KERNELS_AUTOTUNE", "0")

from led_kernels.masks import GLOBAL, LOCAL, PADDING  # noqa: E402
from led_kernels.ops.triton import _common  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("triton kernels need a GPU or TRITON_INTERPRET=1", allow_module_level=True)

GARBAGE = -0x3F3F3F3F


@pytest.fixture(autouse=True)
def garbage_allocations(monkeypatch):
    """Integer outputs are not NaN-poisoned by conftest: fill them with garbage instead."""

    def poisoned(shape, dtype, device):
        fill = 77 if dtype == torch.int8 else GARBAGE  # 77: no flag value
        return torch.full(shape, fill, dtype=dtype, device=device)

    monkeypatch.setattr(_common, "empty", poisoned)


def _expected(flags: torch.Tensor, gi: torch.Tensor):
    b, n = flags.shape
    f = flags.long().cpu()
    zero = torch.zeros(b, 1, dtype=torch.long)
    cum_excl = torch.cat([zero, (f != LOCAL).long().cumsum(1)], 1)
    cum_pad = torch.cat([zero, (f == PADDING).long().cumsum(1)], 1)
    bounds = torch.zeros(b, 4, dtype=torch.long)
    for r in range(b):
        kept = (f[r] != PADDING).nonzero().flatten()
        bounds[r, 0] = kept[0] if len(kept) else n
        bounds[r, 1] = kept[-1] + 1 if len(kept) else 0
        bounds[r, 2] = (gi[r].cpu() >= 0).sum()
    return cum_excl.int(), cum_pad.int(), bounds.int()


def _flags(b: int, n: int, pattern: str, gen: torch.Generator) -> torch.Tensor:
    flags = torch.randint(0, 3, (b, n), generator=gen, dtype=torch.int8)
    if pattern == "sparse":  # mostly local, a few padded / global keys
        flags = torch.where(torch.rand(b, n, generator=gen) < 0.85, LOCAL, flags).to(torch.int8)
    if b > 1:  # row 0 all padded, row 1 without any padding (locals and globals)
        flags[0] = PADDING
        flags[1] = torch.where(flags[1] == PADDING, GLOBAL, flags[1])
    return flags


def _global_idx(b: int, g: int, n: int, gen: torch.Generator) -> torch.Tensor:
    # listed slots (any index >= 0 counts, even out of range) and unused -1 slots, in any order
    gi = torch.randint(-1, max(n, 1) + 2, (b, g), generator=gen, dtype=torch.int32)
    return torch.where(torch.rand(b, g, generator=gen) < 0.3, -1, gi).int()


def _check(flags: torch.Tensor, gi: torch.Tensor):
    outs = _common.launch_prep(flags.to(DEVICE), gi.to(DEVICE))
    for name, got, want in zip(("cum_excl", "cum_pad", "bounds"), outs, _expected(flags, gi)):
        assert got.dtype == torch.int32 and got.shape == want.shape, (name, got.dtype, got.shape)
        got = got.cpu()
        bad = (got != want).nonzero()
        assert len(bad) == 0, (name, bad[:8].tolist(), got[tuple(bad[0])].item(), want[tuple(bad[0])].item())


@pytest.mark.parametrize("n", [1, 15, 16, 17, 100, 257])
@pytest.mark.parametrize("b", [1, 3])
@pytest.mark.parametrize("pattern", ["uniform", "sparse"])
@pytest.mark.parametrize("g", [0, 1, 5, 40])
def test_prep_matches_torch(n, b, pattern, g):
    gen = torch.Generator().manual_seed(1000 * n + 10 * b + g + (pattern == "sparse"))
    _check(_flags(b, n, pattern, gen), _global_idx(b, g, n, gen))


@pytest.mark.parametrize("n", [1, 17, 100])
@pytest.mark.parametrize("fill", [LOCAL, PADDING, GLOBAL])
def test_prep_uniform_rows(n, fill):
    """Rows of one flag only: all local (no excluded key), all padded (bounds n, 0), all global."""
    gen = torch.Generator().manual_seed(n + fill)
    _check(torch.full((2, n), fill, dtype=torch.int8), _global_idx(2, 3, n, gen))


@pytest.mark.parametrize("g", [0, 3])
def test_prep_empty_sequence(g):
    """N = 0: entry 0 of both prefix counts is 0, bounds (0, 0, #slots, 0)."""
    gen = torch.Generator().manual_seed(g)
    _check(torch.zeros(2, 0, dtype=torch.int8), _global_idx(2, g, 0, gen))


def test_prep_empty_batch():
    outs = _common.launch_prep(
        torch.zeros(0, 9, dtype=torch.int8, device=DEVICE),
        torch.zeros(0, 2, dtype=torch.int32, device=DEVICE),
    )
    assert [tuple(t.shape) for t in outs] == [(0, 10), (0, 10), (0, 4)]


def test_prep_long_row_several_blocks():
    """A longer row: many blocks whose carries span several walk chunks."""
    gen = torch.Generator().manual_seed(7)
    n = 3000 if DEVICE == "cpu" else 20000
    flags = _flags(2, n, "sparse", gen)
    flags[1, : n // 3] = PADDING  # padded head and tail: bounds strictly inside the row
    flags[1, -n // 4 :] = PADDING
    _check(flags, _global_idx(2, 4, n, gen))


# ----------------------------------------------------------------------------------------------------
# how the band kernels use the prefix counts: the tiles of a run the unmasked body may walk
# ----------------------------------------------------------------------------------------------------


@triton.jit
def _unmasked_run_kernel(Cum, Runs, Out, U: tl.constexpr):
    i = tl.program_id(0)
    a, b = _common.unmasked_run(tl.load(Runs + 2 * i), tl.load(Runs + 2 * i + 1), Cum, U)
    tl.store(Out + 2 * i, a)
    tl.store(Out + 2 * i + 1, b)


def _unmasked_expected(excluded: set[int], lo: int, hi: int, u: int) -> tuple[int, int]:
    inside = {j for j in excluded if lo <= j < hi}
    if not inside:
        return lo, hi
    if all(j < lo + u for j in inside):
        return lo + u, hi
    if all(j >= hi - u for j in inside):
        return lo, hi - u
    return hi, hi


# (excluded key positions, runs [lo, hi) of whole tiles of 8 keys) in a row of 64 keys
UNMASKED_RUN_CASES = [
    (set(), [(16, 48), (0, 64), (24, 24)]),
    ({0, 1, 2}, [(0, 48), (8, 48), (0, 8), (0, 0)]),  # a leading block of global tokens
    ({16}, [(16, 48), (8, 48), (16, 24), (24, 40)]),
    ({17, 23}, [(16, 48), (16, 32)]),  # two keys of one first tile
    ({40, 47}, [(16, 48), (40, 48), (8, 56)]),  # ... of one last tile
    ({16, 47}, [(16, 48), (16, 56)]),  # first and last tile: nothing unmasked
    ({30}, [(16, 48), (24, 32), (32, 64)]),  # a middle tile
    ({20, 33}, [(16, 40), (16, 48)]),
    (set(range(45, 64)), [(0, 64), (8, 48), (40, 48), (48, 64)]),  # a padded tail
]


@pytest.mark.parametrize(
    "excluded,runs", UNMASKED_RUN_CASES, ids=lambda x: str(sorted(x))[:24] if isinstance(x, set) else ""
)
def test_unmasked_run(excluded, runs):
    """The tiles an interior run keeps for the unmasked body: all of it when it holds no excluded key;
    without its first tile when that tile holds them all, else without its last tile when that one
    does; else none. What it leaves out holds every excluded key of the run."""
    n, u = 64, 8
    flags = torch.zeros(n, dtype=torch.int8)
    flags[sorted(excluded)] = GLOBAL
    cum = torch.cat([torch.zeros(1), (flags != LOCAL).cumsum(0)]).int().to(DEVICE)
    run_t = torch.tensor(runs, dtype=torch.int32, device=DEVICE).flatten()
    out = torch.full((2 * len(runs),), GARBAGE, dtype=torch.int32, device=DEVICE)
    _unmasked_run_kernel[(len(runs),)](cum, run_t, out, U=u)
    got = [tuple(pair) for pair in out.view(-1, 2).tolist()]
    for (lo, hi), (a, b) in zip(runs, got):
        assert (a, b) == _unmasked_expected(excluded, lo, hi, u), (sorted(excluded), lo, hi, a, b)
        assert lo <= a <= b <= hi and (a - lo) % u == 0 and (hi - b) % u == 0
        assert not any(a <= j < b for j in excluded), (sorted(excluded), lo, hi, a, b)


# ----------------------------------------------------------------------------------------------------
# the key flags themselves: one launch instead of the aten ops of masks.key_flags, same values
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("b,n,g", [(1, 1, 0), (1, 1, 1), (2, 17, 3), (3, 100, 7), (2, 257, 40), (1, 64, 64)])
@pytest.mark.parametrize("padding", ["none", "random", "strided"])
def test_key_flags_match_the_aten_reference(b, n, g, padding):
    from led_kernels.masks import key_flags as reference_flags

    gen = torch.Generator().manual_seed(b * 1000 + n * 10 + g)
    # slots: sorted positions, unused slots -1, some out of range, duplicates (the reference ignores
    # what is outside [0, N) and writes GLOBAL once per position)
    gi = torch.randint(-3, n + 3, (b, g), generator=gen, dtype=torch.int32)
    gi = torch.where(torch.rand(b, g, generator=gen) < 0.2, torch.full_like(gi, -1), gi)
    mask = None
    if padding == "random":
        mask = torch.rand(b, n, generator=gen) < 0.3
    elif padding == "strided":  # a non-contiguous view, read through its strides
        mask = (torch.rand(n, b, generator=gen) < 0.3).t()
        assert not mask.is_contiguous() or b == 1
    gi, mask = gi.to(DEVICE), None if mask is None else mask.to(DEVICE)
    got = _common.key_flags(b, n, torch.device(DEVICE), mask, gi)
    want = reference_flags(b, n, torch.device(DEVICE), mask, gi)
    assert got.dtype == torch.int8 and got.shape == (b, n) and got.is_contiguous()
    assert torch.equal(got.cpu(), want.cpu())
    if mask is not None and bool(mask.any()):
        assert bool((got[mask] == PADDING).all())  # padding wins over a global slot at that position


def test_key_flags_without_globals_or_keys():
    dev = torch.device(DEVICE)
    pad = torch.zeros(2, 5, dtype=torch.bool, device=dev)
    pad[1, 3:] = True
    got = _common.key_flags(2, 5, dev, pad, None)
    assert torch.equal(got.cpu(), torch.tensor([[0] * 5, [0, 0, 0, 1, 1]], dtype=torch.int8))
    no_slots = torch.zeros(2, 0, dtype=torch.int32, device=dev)
    assert _common.key_flags(2, 0, dev, None, no_slots).shape == (2, 0)
    assert _common.key_flags(0, 7, dev, None, None).shape == (0, 7)
