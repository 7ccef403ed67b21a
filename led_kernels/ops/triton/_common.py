"""Shared pieces of the Triton backend: switches, tile configs, small jit helpers, and the three
auxiliary kernels both attention ops use (key-flag preprocessing, ``delta = rowsum(dO * O)``, and the
deterministic reduction of split partials).

Conventions used by every kernel in this package:

- Tensors are (B, N, H, D) with the last dim contiguous; every other stride is passed explicitly and
  inputs are read in place.
- Scores live in the log2 domain: ``s = q.k * scale * log2(e)``, so the softmax uses ``exp2`` and the
  scale is one folded constant. The saved row LSE is ``m + log2(l)`` in that same domain; rows with
  nothing to attend (and padded query rows) store ``+inf`` so that the backward's
  ``exp2(s - lse)`` is exactly 0 for them without any extra masking.
- Key flags: 0 = local, 1 = padding, 2 = global (padding wins when both).
- Non-finite inputs stay with the rows that attend them. A masked pair has p = 0 (or dS = 0), and
  0 * NaN = NaN inside a tl.dot would reach every row of the tile, so no dot may meet a non-finite
  row next to a masked pair: masked tiles zero their non-finite key / value rows
  (``nonfinite_rows``; kernel B also loads its padded keys as 0, while kernel A's band loads its
  global / padded keys as they are and masks their scores) and set the scores of the pairs that
  attend one to NaN; unmasked tiles hold
  no such key at all (``unmasked_run``: the tiles of an unmasked run that would meet one take the
  masked body instead); a row whose output is not finite saves a NaN lse (``poisoned_lse``), and a
  backward pass over queries loads the rows without a finite lse as 0 and uses delta = 0 for them
  (``live_rows``). A row that attended a non-finite value comes out NaN (never 0), and so do the
  gradients that depend on it.
"""

from __future__ import annotations

import functools
import math
import os

import torch
import triton
import triton.language as tl

from led_kernels.ops._dispatch import call_op

from ._launch import launch

LOG2E = math.log2(math.e)
LOCAL, PADDING, GLOBAL = 0, 1, 2
MAX_HEAD_DIM = 256

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
# Autotuning is for real GPUs only: under the interpreter it would just multiply the (slow) runtime,
# and tests want one reproducible config. LED_KERNELS_AUTOTUNE=0 pins the fixed configs on a GPU too.
AUTOTUNE = (not INTERPRET) and os.environ.get("LED_KERNELS_AUTOTUNE", "1") != "0"


def env_count(name: str, default: int) -> int:
    """A non-negative integer from the environment variable ``name`` (``default`` when unset); anything
    else is a ValueError naming the variable."""
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if value < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {raw!r}")
    return value


def _install_interpreter_numpy_shim() -> None:
    """Triton's interpreter converts scalar tensors (numpy arrays of shape (1,)) to Python ints with
    ``int(array)``, which NumPy >= 2.4 refuses, so every loop with a runtime bound fails under
    TRITON_INTERPRET=1. Re-patch ``__index__`` to read the single element. CPU interpreter only."""
    import numpy as np

    try:
        int(np.zeros(1, dtype=np.int32))
        return
    except TypeError:
        pass
    from triton.runtime import interpreter as _interp

    original = getattr(_interp, "_patch_lang_tensor", None)
    if original is None or getattr(original, "_led_kernels_shim", False):
        return

    def patched(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    patched._led_kernels_shim = True
    _interp._patch_lang_tensor = patched


def _install_interpreter_patch_once() -> None:
    """Triton's interpreter patches the ``triton.language`` modules that a ``@triton.jit`` function sees
    (``tl``, ``tl.core``) at each launch, and again at every call of a jit helper inside the kernel,
    though those patches are in place already: a scan of the language modules per helper call, about a
    third of the interpreter's time on these kernels. Inside a launch, a helper whose modules are
    patched skips the repeat; a helper that sees a module not patched yet (Triton's own ``tl.sum`` sees
    ``tl.core``), launches and calls outside a launch patch as before. CPU interpreter only; a Triton
    without these internals is left alone."""
    import inspect

    from triton.runtime import interpreter as _interp

    original_patch = getattr(_interp, "_patch_lang", None)
    executor = getattr(_interp, "GridExecutor", None)
    scope_type = getattr(_interp, "_LangPatchScope", None)
    if None in (original_patch, executor, scope_type) or getattr(original_patch, "_led_kernels_shim", False):
        return
    original_call = executor.__call__
    languages = (tl, tl.core)
    state = {"launches": 0, "patched": set()}  # ids of the language modules patched in this launch

    # per module namespace (held, so that its id is not reused) and its size (the interpreter adds its
    # own names, ``tl`` among them, to a module's namespace when it first rewrites a function of it): the
    # language modules it holds
    seen_by: dict[tuple[int, int], tuple[dict, frozenset]] = {}

    def modules_seen(fn) -> frozenset:
        # the modules _patch_lang patches for fn. A stale entry would only leave a module unpatched, which
        # fails loudly at its first builtin ("_semantic argument must be provided")
        names = fn.__globals__
        key = (id(names), len(names))
        if key not in seen_by:
            seen = frozenset(id(m) for m in names.values() if inspect.ismodule(m) and m in languages)
            seen_by[key] = (names, seen)
        return seen_by[key][1]

    def patch_lang(fn):
        seen = modules_seen(fn)
        if state["launches"] and seen <= state["patched"]:
            return scope_type()
        scope = original_patch(fn)
        if state["launches"]:
            state["patched"] |= seen
        return scope

    def launch(self, *args, **kwargs):
        state["launches"] += 1
        try:
            return original_call(self, *args, **kwargs)
        finally:
            state["launches"] -= 1
            state["patched"] = set()  # the launch undid its patches: the next one patches again

    patch_lang._led_kernels_shim = True
    _interp._patch_lang = patch_lang
    executor.__call__ = launch


if INTERPRET:
    _install_interpreter_numpy_shim()
    _install_interpreter_patch_once()


# ----------------------------------------------------------------------------------------------------
# host-side helpers (tests monkeypatch `empty`, `kernel_config` and `target_programs`)
# ----------------------------------------------------------------------------------------------------


def cdiv(a: int, b: int) -> int:
    """Host-side ceil division for launch grids (``triton.cdiv`` is a constexpr function whose Python
    call costs microseconds, which adds up over a layer's launches)."""
    return -(-a // b)


def next_power_of_2(x: int) -> int:
    """Host-side ``triton.next_power_of_2`` (see ``cdiv``); 1 for x <= 1."""
    return 1 << (x - 1).bit_length() if x > 1 else 1


def strides3(t: torch.Tensor) -> tuple[int, int, int]:
    """Element strides of the batch, sequence and head dims of a (B, N, H, D) tensor (D is contiguous)."""
    return t.stride(0), t.stride(1), t.stride(2)


def empty(shape, dtype, device) -> torch.Tensor:
    """Every output/scratch buffer of this backend is allocated here, uninitialised: kernels must
    write every element (the tests swap this for a NaN-filled allocator to prove it)."""
    return torch.empty(shape, dtype=dtype, device=device)


def block_d(head_dim: int) -> int:
    return max(16, next_power_of_2(head_dim))


def check_head_dim(head_dim: int) -> None:
    if not 1 <= head_dim <= MAX_HEAD_DIM:
        raise ValueError(
            f"triton backend: head_dim must be in [1, {MAX_HEAD_DIM}] (non powers of two are padded), "
            f"got head_dim={head_dim}"
        )


def check_scale(scale: float) -> None:
    # The kernels take the row max of the raw scores and scale it afterwards, which only preserves
    # order for scale >= 0; a negative softmax scale has no use in attention, so refuse it loudly.
    if not scale >= 0.0 or math.isinf(scale):
        raise ValueError(f"triton backend: scale must be a finite float >= 0, got scale={scale}")


def log2_scale(scale: float) -> float:
    """The folded constant ``scale * log2(e)``, kept > 0: with scale == 0 a masked -inf score times 0
    would be NaN, while 1e-30 gives exp2 arguments that round to exactly the same uniform weights."""
    return max(scale * LOG2E, 1e-30)


def dot_precision(dtype: torch.dtype) -> str:
    """fp32 inputs follow torch's matmul TF32 switch (off by default: exact fp32); 16-bit inputs
    ignore the setting."""
    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return "ieee"
    return "tf32"


def device_cache(fn):
    """``functools.lru_cache`` for lookups that depend on the device's properties, listed in
    ``DEVICE_CACHES`` so that ``clear_device_caches`` can reset them (offline inspection fakes them)."""
    cached = functools.lru_cache(maxsize=256)(fn)
    DEVICE_CACHES.append(cached)
    return cached


DEVICE_CACHES: list = []


def clear_device_caches() -> None:
    for cached in DEVICE_CACHES:
        cached.cache_clear()


@device_cache
def _num_sms(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


def target_programs(device: torch.device) -> int:
    """How many programs a split-KV launch should aim for (about two waves on a GPU)."""
    if device.type == "cuda":
        return 2 * _num_sms(device.index if device.index is not None else torch.cuda.current_device())
    return 8


def split_plan(n_rows: int, block: int, base_programs: int, device: torch.device) -> tuple[int, int]:
    """Split ``n_rows`` (keys or queries) into ``splits`` chunks of ``chunk`` rows, ``chunk`` a multiple
    of ``block``, so that ``base_programs * splits`` roughly fills the machine. Depends on shapes only
    (no host sync), so the launch is capturable by torch.compile / CUDA graphs."""
    n_tiles = cdiv(max(n_rows, 1), block)
    want = max(1, cdiv(target_programs(device), max(base_programs, 1)))
    min_tiles = 4 if device.type == "cuda" else 2  # amortise the extra combine pass
    tiles_per = min(max(cdiv(n_tiles, want), min_tiles), n_tiles)
    return cdiv(n_tiles, tiles_per), tiles_per * block


def kernel_config(kind: str, head_dim: int, device: torch.device, elem_bytes: int = 2) -> dict:
    """Fixed tile config per kernel kind (used whenever autotuning is off, and always for the small
    split/reduce kernels), shrunk to the device's shared memory for wide heads / fp32. Under the
    interpreter every tile is 16 so that tiny test shapes still cover several tiles, interior tiles and
    both edges. Cached: it runs on every launch, where host time is what a small layer waits on."""
    return dict(_kernel_config(kind, head_dim, device, elem_bytes))


@device_cache
def _kernel_config(kind: str, head_dim: int, device: torch.device, elem_bytes: int) -> dict:
    if INTERPRET or device.type != "cuda":
        return {
            "BLOCK_M": 16,
            "BLOCK_N": 16,
            "num_warps": 4,
            "num_stages": 1,
        }
    big = head_dim > 64
    huge = head_dim > 128
    # Before Hopper the dots are mma.sync with register-resident accumulators, and ptxas spills the
    # Hopper tiles (dK/dV 64x128 by kilobytes at D=64): narrower tiles there, checked spill-free with
    # benchmarks.inspect_kernels
    ampere = torch.cuda.get_device_capability(device)[0] < 9
    table = {
        # kernel A forward: query tile x key tile
        "band_fwd": (64, 32, 4, 2)
        if huge or (ampere and big)
        else (128, 32 if ampere else 64, 8 if big else 4, 3),
        # kernel A dQ: query tile x key tile
        "band_dq": (64, 32, 4, 2) if huge else (128, 32 if ampere else 64, 8, 2),
        # kernel A dK/dV: query tile (BLOCK_M) walked by a key tile (BLOCK_N)
        "band_dkdv": (32, 64, 4, 2) if huge or (ampere and big) else (32 if ampere else 64, 128, 8, 2),
        # kernel A: dK/dV of the gathered global keys, query tile (slot tile set apart)
        "gkey_dkdv": (64, 64, 4, 2) if not huge else (32, 32, 4, 2),
        # kernel B (global rows): BLOCK_M = slot tile (widened from G by the launcher), BLOCK_N = key tile
        "glob_fwd": (16, 128 if not big else 64, 4, 3),
        "glob_dq": (16, 64, 4, 2),
        "glob_dkdv": (16, 128 if not big else 64, 4, 2),
    }
    bm, bn, warps, stages = table[kind]
    cfg = {"BLOCK_M": bm, "BLOCK_N": bn, "num_warps": warps, "num_stages": stages}
    return fit_config(kind, cfg, head_dim, elem_bytes, device)


@device_cache
def _smem_budget(device_index: int) -> int:
    props = torch.cuda.get_device_properties(device_index)
    optin = getattr(props, "shared_memory_per_block_optin", 0) or 166912  # A100's, the smallest target
    return optin - 4096  # barriers, reduction scratch, layout conversions


def smem_budget(device: torch.device) -> int:
    if INTERPRET or device.type != "cuda":
        return 1 << 30
    return _smem_budget(device.index if device.index is not None else torch.cuda.current_device())


def smem_estimate(kind: str, bm: int, bn: int, stages: int, bd: int, elem_bytes: int) -> int:
    """Shared memory of the pipelined operands: tiles resident for the whole program plus ``stages``
    copies of the streamed K/V (or Q/dO) tiles. Matches Triton's allocation to a few percent."""
    if kind in ("band_fwd", "glob_fwd"):
        resident, streamed = bm * bd, 2 * bn * bd  # q; k, v
    elif kind in ("band_dq", "glob_dq"):
        resident, streamed = 2 * bm * bd, 2 * bn * bd  # q, dO; k, v
    elif kind == "gkey_dkdv":
        resident, streamed = 2 * 64 * bd, 2 * bm * bd  # gathered k, v (slot tile <= 64); q, dO
    else:  # band_dkdv, glob_dkdv
        resident, streamed = 2 * bn * bd, 2 * bm * bd  # k, v; q, dO
    return (resident + stages * streamed) * elem_bytes


def fit_config(kind: str, cfg: dict, head_dim: int, elem_bytes: int, device: torch.device) -> dict:
    """Shrink a config until it fits the device's shared memory: fewer stages first (down to 2),
    then halve the streamed tile, then the resident one (not below 16)."""
    cfg = dict(cfg)
    budget = smem_budget(device)
    bd = block_d(head_dim)
    streamed_key = "BLOCK_M" if kind in ("band_dkdv", "glob_dkdv", "gkey_dkdv") else "BLOCK_N"
    resident_key = "BLOCK_N" if streamed_key == "BLOCK_M" else "BLOCK_M"

    def est():
        return smem_estimate(kind, cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["num_stages"], bd, elem_bytes)

    while est() > budget:
        if cfg["num_stages"] > 2:
            cfg["num_stages"] -= 1
        elif cfg[streamed_key] > 16:
            cfg[streamed_key] //= 2
        elif cfg[resident_key] > 16:
            cfg[resident_key] //= 2
        else:
            break
    return cfg


def autotune_configs(kind: str) -> list[triton.Config]:
    """A short list for the three heavy kernels of kernel A; everything else keeps its fixed config."""
    # (BLOCK_M, BLOCK_N, warps, stages, max registers per thread or 0), screened offline for sm_90 at
    # D=64 with benchmarks.inspect_kernels: no candidate spills more than a few bytes or has ptxas
    # serialise its wgmma (64x128 dK/dV with 3 stages does, so it is not here). The register-capped
    # 8-warp forward fits two programs per SM, so one program's softmax can overlap the other's MMAs.
    if kind == "band_fwd":
        shapes = [
            (128, 64, 4, 3, 0),
            (128, 64, 8, 3, 128),
            (128, 64, 8, 3, 0),
            (128, 128, 8, 3, 0),  # FlashAttention-2's D=64 forward tile: half the key-loop trips
            (64, 64, 4, 4, 0),
            (64, 64, 4, 3, 0),
            (128, 32, 4, 4, 0),
            # 4 programs per SM (125 registers capped without a spill, 41 KB): the most warps of any
            # candidate for a latency-bound loop, with its copies one tile ahead instead of 2-3
            (64, 64, 4, 2, 128),
        ]
    elif kind == "band_dq":
        shapes = [(128, 64, 8, 2, 0), (128, 64, 8, 3, 0), (128, 32, 4, 3, 0), (64, 64, 4, 3, 0)]
    else:  # band_dkdv
        shapes = [
            (64, 128, 8, 2, 0),
            (64, 64, 4, 3, 0),
            (32, 128, 8, 2, 0),
            (32, 128, 4, 3, 0),
            # 3 programs per SM (163 registers), where the 64x64 tile an H100 picked runs 2 (243): twice
            # the query-tile trips, half as long, with more warps to wait on each other's loads
            (32, 64, 4, 3, 0),
        ]
    return [
        triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=w, num_stages=s, maxnreg=r or None)
        for bm, bn, w, s, r in shapes
    ]


def smallest_block_m(kind: str, head_dim: int, device: torch.device, elem_bytes: int) -> int:
    """The smallest BLOCK_M a launch of ``kind`` can run with here: over the fixed config (which the
    pruning falls back to) and the autotune candidates that fit the device's shared memory, whether or
    not autotuning is on. For outputs laid out per BLOCK_M rows before the autotuner has chosen
    (cached)."""
    return _smallest_block_m(kind, head_dim, device, elem_bytes)


@device_cache
def _smallest_block_m(kind: str, head_dim: int, device: torch.device, elem_bytes: int) -> int:
    fixed = kernel_config(kind, head_dim, device, elem_bytes)["BLOCK_M"]
    if INTERPRET or device.type != "cuda":
        return fixed
    budget, bd = smem_budget(device), block_d(head_dim)
    fits = [
        c.kwargs["BLOCK_M"]
        for c in autotune_configs(kind)
        if smem_estimate(kind, c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_stages, bd, elem_bytes)
        <= budget
    ]
    return min([*fits, fixed])


def _prune_to_smem(kind: str):
    """Autotune pruning: drop configs that cannot fit this device's shared memory (wide heads, fp32);
    if none is left, fall back to the fixed config shrunk to fit."""

    def prune(configs, named_args, **kwargs):
        q = named_args["Q"]
        head_dim = kwargs["HEAD_DIM"]
        budget = smem_budget(q.device)
        bd = block_d(head_dim)
        elem = q.element_size()
        keep = [
            c
            for c in configs
            if smem_estimate(kind, c.kwargs["BLOCK_M"], c.kwargs["BLOCK_N"], c.num_stages, bd, elem) <= budget
        ]
        if keep:
            return keep
        cfg = kernel_config(kind, head_dim, q.device, elem)
        return [
            triton.Config(
                {"BLOCK_M": cfg["BLOCK_M"], "BLOCK_N": cfg["BLOCK_N"]},
                num_warps=cfg["num_warps"],
                num_stages=cfg["num_stages"],
            )
        ]

    return prune


def maybe_autotune(kind: str, extra_keys: tuple[str, ...] = ()):
    """Decorator: autotune over `autotune_configs(kind)` when AUTOTUNE, else leave the kernel plain (the
    launcher then passes the fixed config). The key buckets N and w so a training run with varying
    lengths does not retune on every new length; ``extra_keys`` names further (bucketed) key arguments
    of the kernel."""

    def deco(fn):
        if not AUTOTUNE:
            return fn
        return triton.autotune(
            configs=autotune_configs(kind),
            key=["HEAD_DIM", "N_BUCKET", "W_BUCKET", *extra_keys],
            prune_configs_by={"early_config_prune": _prune_to_smem(kind)},
        )(fn)

    return deco


def launch_config(kind: str, head_dim: int, device: torch.device, elem_bytes: int, autotuned: bool) -> dict:
    """Keyword arguments for a launch: nothing when the autotuner owns the block sizes."""
    if autotuned and AUTOTUNE:
        return {}
    return kernel_config(kind, head_dim, device, elem_bytes)


def bucket(x: int) -> int:
    return next_power_of_2(max(1, min(x, 1 << 16)))


# ----------------------------------------------------------------------------------------------------
# jit helpers
# ----------------------------------------------------------------------------------------------------


@triton.jit
def load_rows(ptrs, row_ok, offs_d, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, MASK_ROWS: tl.constexpr):
    """Load a [rows, BLOCK_D] tile; the row mask is compiled in only for edge tiles and the column
    mask only when head_dim is not a power of two."""
    if MASK_ROWS:
        if BLOCK_D == HEAD_DIM:
            x = tl.load(ptrs, mask=row_ok[:, None], other=0.0)
        else:
            x = tl.load(ptrs, mask=row_ok[:, None] & (offs_d < HEAD_DIM)[None, :], other=0.0)
    else:
        if BLOCK_D == HEAD_DIM:
            x = tl.load(ptrs)
        else:
            x = tl.load(ptrs, mask=(offs_d < HEAD_DIM)[None, :], other=0.0)
    return x


@triton.jit
def nonfinite_rows(x):
    """[rows] fp32 of a [rows, cols] tile: 0 for a finite row, NaN for a row holding a NaN or an inf
    (x * 0 is NaN exactly there); added to scores, it poisons the pairs that attend such a row."""
    return tl.sum(x.to(tl.float32) * 0.0, 1)


@triton.jit
def load_finite_kv(k_ptrs, v_ptrs, row_ok, offs_d, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr):
    """A program's resident key and value tiles, with the rows holding a NaN or an inf (in k or v)
    loaded as 0. Loaded twice rather than zeroed in registers: the tiles the dots read then come
    straight from memory, which keeps ptxas from serialising Hopper's wgmma (C7513)."""
    k = load_rows(k_ptrs, row_ok, offs_d, HEAD_DIM, BLOCK_D, True)
    v = load_rows(v_ptrs, row_ok, offs_d, HEAD_DIM, BLOCK_D, True)
    ok = row_ok & (nonfinite_rows(k) == 0.0) & (nonfinite_rows(v) == 0.0)
    k = load_rows(k_ptrs, ok, offs_d, HEAD_DIM, BLOCK_D, True)
    v = load_rows(v_ptrs, ok, offs_d, HEAD_DIM, BLOCK_D, True)
    return k, v


@triton.jit
def live_rows(lse):
    """Query rows with a finite saved statistic: rows that attend nothing store lse = +inf, rows whose
    output is not finite (they attended a non-finite score or value) a NaN one (``poisoned_lse``)."""
    return tl.abs(lse) < float("inf")


@triton.jit
def poisoned_lse(lse, out):
    """lse, NaN on the rows of out (a [rows, cols] tile) that are not finite: a row that met a NaN value
    only through p @ v has a finite sum, and the backward must still know it is not live."""
    return lse + nonfinite_rows(out)


@triton.jit
def store_rows(ptrs, x, row_ok, offs_d, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr):
    if BLOCK_D == HEAD_DIM:
        tl.store(ptrs, x, mask=row_ok[:, None])
    else:
        tl.store(ptrs, x, mask=row_ok[:, None] & (offs_d < HEAD_DIM)[None, :])


@triton.jit
def softmax_step(m_i, qk, qk_scale):
    """Online-softmax step on raw scores ``qk`` (masked entries already -inf; qk_scale > 0, so the scale
    commutes with the row max and rides inside the exp2 argument as one FMA per score).

    A row that has seen only -inf so far keeps m = -inf; exponentiating against 0 instead keeps every
    exp2 argument free of (-inf) - (-inf) = NaN and gives p = 0, alpha = 0 for it. The guard is per row,
    so unmasked tiles pay next to nothing for it."""
    m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)  # [BLOCK_M]
    m_use = tl.where(m_new == float("-inf"), 0.0, m_new)
    p = tl.exp2(qk * qk_scale - m_use[:, None])  # [BLOCK_M, BLOCK_N]
    alpha = tl.exp2(m_i - m_use)  # [BLOCK_M]
    return p, alpha, m_new


@triton.jit
def band_tiles(t0, T: tl.constexpr, U: tl.constexpr, window, lo_b, hi_b, N):
    """Tiles of size U of the *other* axis that the band of the owner tile [t0, t0 + T) touches,
    clipped to [lo_b, hi_b) (the span of non-padded tokens), split into three runs:

        [lo, int_lo)      left edge: needs the |i - j| <= w mask
        [int_lo, int_hi)  interior: every pair is inside the band and every row in bounds, so no
                          band mask and no bounds mask
        [int_hi, hi_r)    right edge: band mask (and bounds mask past N)

    The band relation is symmetric, so kernel A's forward / dQ (owner = query tile) and dK/dV
    (owner = key tile) share this. All quantities are >= 0, so integer division is floor."""
    lo = tl.maximum(t0 - window, lo_b)
    hi = tl.minimum(t0 + T + window, hi_b)
    lo = (lo // U) * U
    hi_r = tl.maximum(((hi + U - 1) // U) * U, lo)
    # interior tile start u0 needs u0 >= t0 + T - 1 - w and end u0 + U <= min(t0 + w + 1, N)
    int_lo = ((tl.maximum(t0 + T - 1 - window, lo) + U - 1) // U) * U
    int_lo = tl.minimum(int_lo, hi_r)
    int_hi = (tl.minimum(t0 + window + 1, N) // U) * U
    int_hi = tl.minimum(tl.maximum(int_hi, int_lo), hi_r)
    return lo, int_lo, int_hi, hi_r


@triton.jit
def unmasked_run(run_lo, run_hi, cum_row, U: tl.constexpr):
    """The tiles [a, b) of the run [run_lo, run_hi) (whole tiles of size U, run_hi <= N) that the
    unmasked body may walk, with ``cum_row`` the prefix counts of the excluded keys: all of the run when
    it holds none; all but its first tile when that tile holds every one of them (a leading block of
    global tokens), or all but its last (the padded tail's first, partial tile); else none (a = b =
    run_hi). The tiles left out go to the masked body, which masks the excluded keys and zeroes their
    non-finite rows, so the unmasked body needs no key mask, no per-tile flag lookup and no branch,
    and a walk that meets a global token or the padding takes the masked body on one more tile, not
    on all of them. Four scalar loads, issued together."""
    has_run = run_hi > run_lo
    at_lo = tl.load(cum_row + run_lo, mask=has_run, other=0)
    at_hi = tl.load(cum_row + run_hi, mask=has_run, other=0)
    after_first = tl.load(cum_row + run_lo + U, mask=has_run, other=0)
    before_last = tl.load(cum_row + run_hi - U, mask=has_run, other=0)
    clean = at_hi == at_lo
    # every excluded key of the run lies in its first tile; else, all in its last tile (in a run of one
    # tile both hold, and the first decides: nothing unmasked)
    first_only = ~clean & (at_hi == after_first)
    last_only = ~clean & ~first_only & (before_last == at_lo)
    a = tl.where(clean | last_only, run_lo, tl.where(first_only, run_lo + U, run_hi))
    b = tl.where(clean | first_only, run_hi, tl.where(last_only, run_hi - U, run_hi))
    return a, b


@triton.jit
def chunk_tiles(c0, chunk, lo_b, hi_b, N, U: tl.constexpr):
    """Tiles of size U inside the split chunk [c0, c0 + chunk) (c0 and chunk multiples of U), clipped
    to [lo_b, hi_b): full in-bounds tiles [lo, full_hi) and the ragged tail [full_hi, hi_r)."""
    lo = (tl.maximum(c0, lo_b) // U) * U
    hi = tl.minimum(c0 + chunk, hi_b)
    hi_r = tl.maximum(((hi + U - 1) // U) * U, lo)
    full_hi = tl.minimum(tl.maximum((N // U) * U, lo), hi_r)
    return lo, full_hi, hi_r


# ----------------------------------------------------------------------------------------------------
# auxiliary kernels
# ----------------------------------------------------------------------------------------------------


@triton.jit
def _prep_kernel(
    Flags,  # int8 (B, N)
    GIdx,  # int32 (B, G)
    CumExcl,  # int32 (B, N + 1): CumExcl[b, j] = #{j' < j : flag != LOCAL}
    CumPad,  # int32 (B, N + 1): CumPad[b, j] = #{j' < j : flag == PADDING}
    Bounds,  # int32 (B, 4): first non-padded token, last non-padded + 1, #slots with idx >= 0, 0
    N,
    G,
    BLOCK: tl.constexpr,
    WALK: tl.constexpr,
    BLOCK_G: tl.constexpr,
):
    # Grid (B, max(1, cdiv(N, BLOCK))): program (b, i) writes CumExcl / CumPad[b, 1 + i*BLOCK + k]
    # for its block; program (b, 0) also writes entry 0 and Bounds[b], so every output element has
    # exactly one writer (deterministic, no atomics). For N = 0 the single program (b, 0) writes just
    # entry 0 and the bounds. The prefix counts let every attention kernel decide with two scalar
    # loads whether a key tile of *any* size contains an excluded key, so autotuned tile sizes need
    # no re-preprocessing; the bounds let them skip fully padded tails.
    b = tl.program_id(0).to(tl.int64)  # int64: b * (N + 1) may pass 2**31
    start = tl.program_id(1) * BLOCK
    flags_row = Flags + b * N
    ce_row = CumExcl + b * (N + 1)
    cp_row = CumPad + b * (N + 1)
    offs = start + tl.arange(0, BLOCK)  # [BLOCK]
    inb = offs < N
    f = tl.load(flags_row + offs, mask=inb, other=0)  # [BLOCK], issued before the carry walk
    # carry = counts over [0, start). The walk adds into [WALK] vectors and reduces once after the
    # loop, so iterations depend on each other only through elementwise adds (no reduction per
    # chunk); WALK >= BLOCK keeps the walk short for the last blocks of a long row.
    offs_w = tl.arange(0, WALK)  # [WALK]
    acc_e = tl.zeros([WALK], dtype=tl.int32)
    acc_p = tl.zeros([WALK], dtype=tl.int32)
    for s0 in range(0, start, WALK):
        fw = tl.load(flags_row + s0 + offs_w, mask=s0 + offs_w < start, other=0)  # [WALK]
        acc_e += (fw != 0).to(tl.int32)
        acc_p += (fw == 1).to(tl.int32)
    carry_e = tl.sum(acc_e, 0)
    carry_p = tl.sum(acc_p, 0)
    excl = (f != 0).to(tl.int32)  # [BLOCK]
    pad = (f == 1).to(tl.int32)  # [BLOCK]
    tl.store(ce_row + 1 + offs, tl.cumsum(excl, 0) + carry_e, mask=inb)
    tl.store(cp_row + 1 + offs, tl.cumsum(pad, 0) + carry_p, mask=inb)
    if start == 0:
        tl.store(ce_row, 0)
        tl.store(cp_row, 0)
        # bounds over the whole row, vectorized like the carry walk: elementwise min / max per
        # lane, one reduction at the end (out-of-range lanes load as padding, so they never count)
        lo_v = tl.zeros([WALK], dtype=tl.int32) + N
        hi_v = tl.zeros([WALK], dtype=tl.int32)
        for s0 in range(0, N, WALK):
            pos = s0 + offs_w  # [WALK]
            fw = tl.load(flags_row + pos, mask=pos < N, other=1)  # [WALK]
            keep = fw != 1
            lo_v = tl.minimum(lo_v, tl.where(keep, pos, N))
            hi_v = tl.maximum(hi_v, tl.where(keep, pos + 1, 0))
        offs_g = tl.arange(0, BLOCK_G)  # [BLOCK_G]
        slots_v = tl.zeros([BLOCK_G], dtype=tl.int32)
        for s0 in range(0, G, BLOCK_G):
            gi = tl.load(GIdx + b * G + s0 + offs_g, mask=s0 + offs_g < G, other=-1)  # [BLOCK_G]
            slots_v += (gi >= 0).to(tl.int32)
        tl.store(Bounds + b * 4 + 0, tl.min(lo_v, 0))
        tl.store(Bounds + b * 4 + 1, tl.max(hi_v, 0))
        tl.store(Bounds + b * 4 + 2, tl.sum(slots_v, 0))
        tl.store(Bounds + b * 4 + 3, 0)


@triton.jit
def row_delta(do, o_base, stride_on, rows, offs_d, row_ok, HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr):
    """delta = rowsum(dO * O) in fp32, [BLOCK_M], for a loaded dO tile [BLOCK_M, BLOCK_D] of rows ``rows``
    (out-of-range rows loaded as 0) and the forward's output O at ``o_base`` (its rows ``rows``)."""
    o = load_rows(
        o_base + rows[:, None] * stride_on + offs_d[None, :], row_ok, offs_d, HEAD_DIM, BLOCK_D, True
    )
    return tl.sum(o.to(tl.float32) * do.to(tl.float32), 1)


@triton.jit
def _bwd_delta_kernel(
    Out,
    DO,
    Delta,  # fp32 (B, H, M)
    stride_ob,
    stride_om,
    stride_oh,
    stride_dob,
    stride_dom,
    stride_doh,
    M,
    H,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_d = tl.arange(0, BLOCK_D)
    row_ok = rows < M
    do_ptrs = DO + b * stride_dob + h * stride_doh + rows[:, None] * stride_dom + offs_d[None, :]
    do = load_rows(do_ptrs, row_ok, offs_d, HEAD_DIM, BLOCK_D, True)  # [BLOCK_M, BLOCK_D]
    delta = row_delta(
        do, Out + b * stride_ob + h * stride_oh, stride_om, rows, offs_d, row_ok, HEAD_DIM, BLOCK_D
    )
    tl.store(Delta + pid_bh.to(tl.int64) * M + rows, delta, mask=row_ok)


@triton.jit
def _reduce_partials_kernel(
    Part,  # fp32 (B*H, S, R, BLOCK_D)
    Out,  # (B, *, H, HEAD_DIM) in the output dtype
    Part2,  # program_id(2) == 1: a second (partials, output, scale) of the same shapes (dK then dV)
    Out2,
    GIdx,  # int32 (B, R): destination rows when SCATTER
    Flags,  # int8 (B, N)
    stride_ob,
    stride_on,
    stride_oh,
    S,
    R,
    N,
    H,
    scale,
    scale2,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_S: tl.constexpr,
    SCATTER: tl.constexpr,
):
    # Sums the split partials of one row per program, BLOCK_S of them per load (usually all: no chain of
    # loads), in a fixed order (deterministic, no atomics). With SCATTER, slot r goes to row GIdx[b, r]
    # when that slot is valid; distinct slots name distinct rows, so the stores never race.
    pid_r = tl.program_id(0)
    pid_bh = tl.program_id(1)
    if tl.program_id(2) == 1:
        Part = Part2
        Out = Out2
        scale = scale2
    b = (pid_bh // H).to(tl.int64)
    h = (pid_bh % H).to(tl.int64)
    rows = pid_r + tl.arange(0, 1)  # [1]
    offs_s = tl.arange(0, BLOCK_S)
    offs_d = tl.arange(0, BLOCK_D)
    row_in = rows < R
    acc = tl.zeros([BLOCK_S, BLOCK_D], dtype=tl.float32)
    part_base = Part + pid_bh.to(tl.int64) * S * R * BLOCK_D
    for s0 in range(0, S, BLOCK_S):
        sp = s0 + offs_s
        ptrs = part_base + (sp * R + pid_r)[:, None] * BLOCK_D + offs_d[None, :]
        acc += tl.load(ptrs, mask=(sp < S)[:, None], other=0.0)  # [BLOCK_S, BLOCK_D]
    acc = tl.sum(acc, 0)[None, :] * scale  # [1, BLOCK_D]
    if SCATTER:
        gi = tl.load(GIdx + b * R + rows, mask=row_in, other=-1)
        gf = tl.load(Flags + b * N + gi, mask=(gi >= 0) & (gi < N), other=0)  # out of range: not global
        ok = (gi >= 0) & (gf == 2)
        dest = tl.where(ok, gi, 0).to(tl.int64)
    else:
        ok = row_in
        dest = rows.to(tl.int64)
    ptrs = Out + b * stride_ob + h * stride_oh + dest[:, None] * stride_on + offs_d[None, :]
    store_rows(ptrs, acc.to(Out.dtype.element_ty), ok, offs_d, HEAD_DIM, BLOCK_D)


@triton.jit
def _key_flags_kernel(
    Pad,  # uint8 (B, N), 1 = padding (read only when HAS_PAD)
    GIdx,  # int32 (B, G), contiguous: global positions, -1 (or out of range) = unused slot
    Flags,  # int8 (B, N), contiguous: 0 local, 1 padding, 2 global (padding wins)
    N,
    G,
    stride_pb,
    stride_pn,
    HAS_PAD: tl.constexpr,
    BLOCK: tl.constexpr,
    BLOCK_G: tl.constexpr,
):
    # One program per batch element: the row is filled, then the global slots are scattered into it.
    # One launch where the same flags from aten ops take five (zeros, clamp, remainder, cast, scatter).
    b = tl.program_id(0).to(tl.int64)
    flags_row = Flags + b * N
    for start in range(0, N, BLOCK):
        offs = start + tl.arange(0, BLOCK)  # [BLOCK]
        inb = offs < N
        f = tl.zeros([BLOCK], dtype=tl.int8)
        if HAS_PAD:
            p = tl.load(Pad + b * stride_pb + offs.to(tl.int64) * stride_pn, mask=inb, other=0)
            f = (p != 0).to(tl.int8)  # PADDING = 1
        tl.store(flags_row + offs, f, mask=inb)
    # the scatter may hit positions that other threads filled: their stores must land first
    tl.debug_barrier()
    for s0 in range(0, G, BLOCK_G):
        offs_g = s0 + tl.arange(0, BLOCK_G)  # [BLOCK_G]
        gi = tl.load(GIdx + b * G + offs_g, mask=offs_g < G, other=-1)
        ok = (gi >= 0) & (gi < N)
        if HAS_PAD:
            p = tl.load(Pad + b * stride_pb + gi.to(tl.int64) * stride_pn, mask=ok, other=1)
            ok = ok & (p == 0)
        tl.store(flags_row + gi, tl.full([BLOCK_G], 2, tl.int8), mask=ok)  # GLOBAL = 2


# ----------------------------------------------------------------------------------------------------
# launchers + registered ops shared by both attention ops
# ----------------------------------------------------------------------------------------------------


@torch.library.custom_op("led_kernels::triton_key_flags", mutates_args=())
def triton_key_flags(global_idx: torch.Tensor, key_padding_mask: torch.Tensor | None, n: int) -> torch.Tensor:
    """int8 (B, N) key flags from global_idx (B, G) int32 and an optional (B, N) bool padding mask:
    the same values as ``led_kernels.masks.key_flags``, in one launch."""
    if global_idx.dtype != torch.int32 or not global_idx.is_contiguous():
        raise ValueError("triton_key_flags: global_idx must be a contiguous int32 tensor")
    if key_padding_mask is not None and key_padding_mask.dtype != torch.bool:
        raise TypeError(f"triton_key_flags: key_padding_mask must be bool, got {key_padding_mask.dtype}")
    bsz = global_idx.shape[0]
    flags = empty((bsz, n), torch.int8, global_idx.device)
    if flags.numel() == 0:
        return flags
    has_pad = key_padding_mask is not None
    pad = key_padding_mask.view(torch.uint8) if has_pad else flags
    g = global_idx.shape[1]
    launch(
        _key_flags_kernel,
        (bsz,),
        pad,
        global_idx,
        flags,
        n,
        g,
        pad.stride(0),
        pad.stride(1),
        HAS_PAD=has_pad,
        BLOCK=min(next_power_of_2(max(n, 16)), 1024 if global_idx.device.type == "cuda" else 64),
        BLOCK_G=min(next_power_of_2(max(g, 16)), 1024 if global_idx.device.type == "cuda" else 32),
        num_warps=4,
    )
    return flags


@triton_key_flags.register_fake
def _(global_idx, key_padding_mask, n):
    return global_idx.new_empty((global_idx.shape[0], n), dtype=torch.int8)


def key_flags(
    batch: int,
    n: int,
    device: torch.device,
    key_padding_mask: torch.Tensor | None,
    global_idx: torch.Tensor | None,
) -> torch.Tensor:
    """``led_kernels.masks.key_flags`` for this backend (same signature and values)."""
    if global_idx is None:
        global_idx = torch.empty((batch, 0), dtype=torch.int32, device=device)
    return call_op(triton_key_flags, global_idx, key_padding_mask, n)


@torch.library.custom_op("led_kernels::triton_prep", mutates_args=())
def triton_prep(
    key_flags: torch.Tensor, global_idx: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per batch element: prefix counts of excluded (non-local) and padded keys, and the bounds
    (first non-padded, last non-padded + 1, number of listed global slots)."""
    return launch_prep(key_flags, global_idx)


def launch_prep(
    key_flags: torch.Tensor, global_idx: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The body of ``triton_prep``, callable from inside other ops without a second dispatch."""
    bsz, n = key_flags.shape
    g = global_idx.shape[1]
    dev = key_flags.device
    cum_excl = empty((bsz, n + 1), torch.int32, dev)
    cum_pad = empty((bsz, n + 1), torch.int32, dev)
    bounds = empty((bsz, 4), torch.int32, dev)
    if bsz == 0:
        return cum_excl, cum_pad, bounds
    # parallel over the sequence: blocks of BLOCK keys, each summing the keys before it in WALK-wide
    # chunks. On a GPU, 1024-key blocks give 16 programs per row at N = 16k, and 4096-key chunks keep
    # the longest walk (the last block's carry, block 0's bounds) at 4 iterations. Under the
    # interpreter, blocks of N / 16 (at least 16) and 2-block chunks: several blocks and a partial
    # last chunk even for short rows, so CPU tests cover the carry, while the quadratic walk stays small.
    if dev.type == "cuda":
        block = min(next_power_of_2(max(n, 16)), 1024)
        walk = min(next_power_of_2(max(n, 16)), 4096)
    else:
        block = min(max(next_power_of_2(cdiv(n, 16)), 16), 1024)
        walk = 2 * block
    block_g = min(next_power_of_2(max(g, 16)), 1024)
    # at least one block, so that N = 0 still writes entry 0 and the bounds of every row
    launch(
        _prep_kernel,
        (bsz, max(cdiv(n, block), 1)),
        key_flags,
        global_idx,
        cum_excl,
        cum_pad,
        bounds,
        n,
        g,
        BLOCK=block,
        WALK=walk,
        BLOCK_G=block_g,
        num_warps=4,
    )
    return cum_excl, cum_pad, bounds


@triton_prep.register_fake
def _(key_flags, global_idx):
    bsz, n = key_flags.shape
    return (
        key_flags.new_empty((bsz, n + 1), dtype=torch.int32),
        key_flags.new_empty((bsz, n + 1), dtype=torch.int32),
        key_flags.new_empty((bsz, 4), dtype=torch.int32),
    )


def bwd_delta(out: torch.Tensor, dout: torch.Tensor) -> torch.Tensor:
    """delta[b, h, m] = sum_d dO * O in fp32, (B, H, M)."""
    bsz, m, h, d = out.shape
    delta = empty((bsz, h, m), torch.float32, out.device)
    if delta.numel() == 0:
        return delta
    block_m = 16 if INTERPRET else 64
    launch(
        _bwd_delta_kernel,
        (cdiv(m, block_m), bsz * h),
        out,
        dout,
        delta,
        out.stride(0),
        out.stride(1),
        out.stride(2),
        dout.stride(0),
        dout.stride(1),
        dout.stride(2),
        m,
        h,
        HEAD_DIM=d,
        BLOCK_D=block_d(d),
        BLOCK_M=block_m,
        num_warps=4,
    )
    return delta


def partials_per_load(splits: int) -> int:
    """How many of a row's split partials the merge kernels (the partial reduction, kernel B's combine)
    load at once: all of them up to 64; under the interpreter 2, so that the tests also take the loop
    over blocks."""
    return 2 if INTERPRET else min(64, next_power_of_2(splits))


def reduce_partials(
    part: torch.Tensor,
    out: torch.Tensor,
    global_idx: torch.Tensor,
    key_flags: torch.Tensor,
    scale: float,
    scatter: bool,
    second: tuple[torch.Tensor, torch.Tensor, float] | None = None,
) -> None:
    """out[rows] = scale * sum over splits of part, (B*H, S, R, BLOCK_D) -> rows of ``out``; ``second``
    = (part, out, scale) of the same shapes, strides and dtype, reduced in the same launch (dK, dV)."""
    bh, splits, r, bd = part.shape
    bsz, n, h, d = out.shape
    if bh == 0 or r == 0:
        return
    if second is None:
        part2, out2, scale2 = part, out, scale
    else:
        part2, out2, scale2 = second
        if part2.shape != part.shape or out2.stride() != out.stride() or out2.dtype != out.dtype:
            raise ValueError("reduce_partials: the second pair must match the first (shape, strides, dtype)")
    block_s = partials_per_load(splits)
    launch(
        _reduce_partials_kernel,
        (r, bh, 1 if second is None else 2),
        part,
        out,
        part2,
        out2,
        global_idx,
        key_flags,
        out.stride(0),
        out.stride(1),
        out.stride(2),
        splits,
        r,
        key_flags.shape[1],
        h,
        scale,
        scale2,
        HEAD_DIM=d,
        BLOCK_D=bd,
        BLOCK_S=block_s,
        SCATTER=scatter,
        num_warps=4,
    )
