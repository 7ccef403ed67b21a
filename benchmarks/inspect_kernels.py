"""Offline inspection of the Triton backend's compiled kernels: what the compiler made of them for a
given GPU architecture, without a GPU.

``python -m benchmarks.inspect_kernels [--arch 90] [--dtype bfloat16] [--head-dim 64] [--out DIR]``

Timings say *that* a kernel is slow; the compiled code often says *why*: main dots that did not lower
to Hopper's ``wgmma`` (or got serialised by ptxas), K/V tiles loaded straight into registers instead of
through pipelined asynchronous copies, register spills, shared memory that limits occupancy, integer
division or per-element masking left inside the hot loop. This tool makes those visible on any
machine (no GPU, no CUDA driver, no torch CUDA), so a tile/config change can be reviewed before it is
timed, and a compiled artifact can be diffed before and after a kernel edit.

How it works, so that what it compiles is what a GPU run would compile:

1. Every launcher of the backend (``led_kernels.ops.triton``: the key-flag preprocessing, kernel A
   forward and backward, kernel B forward and backward) is called as it would run on a GPU, on fake
   CUDA tensors (``FakeTensorMode``) of the headline shape, with ``torch.cuda.get_device_properties``
   answering for the chosen architecture (SM count, opt-in shared memory per block). The launchers
   therefore choose their tile configs, split-KV plans, slot tiles and constexprs with their own code
   (``_common.kernel_config`` / ``fit_config`` / ``split_plan``, ``_slot_config``, ``GLOBAL_KEY_TILE``).
   Triton's ``run`` is intercepted, so each ``kernel[grid](...)`` only records its arguments.
2. Autotuning is switched off for the capture (``_common.AUTOTUNE = False``, the same as
   ``LED_KERNELS_AUTOTUNE=0``): offline there is nothing to time, so the launchers pass their fixed
   configs. ``--autotune`` additionally compiles every candidate the autotuner would try on this
   architecture (``_common.autotune_configs``, pruned by ``_common._prune_to_smem``).
3. Each recorded launch is specialised exactly as ``JITFunction.run`` does (Triton's binder:
   16-byte divisibility of pointers and integers, integers equal to 1 folded) and compiled with
   ``triton.compile`` for ``GPUTarget("cuda", arch, 32)``, one kernel at a time.
4. From the artifacts: registers, spills and ptxas warnings (``ptxas -v`` rerun on the PTX, e.g. the
   C7515 "wgmma serialized" warning), shared memory (kernel metadata), and instruction counts in the
   PTX (``wgmma.mma_async`` vs ``mma.sync``; ``cp.async`` / ``cp.async.bulk`` for pipelined loads;
   128-bit ``ld.global``; ``ex2``; float->16-bit converts; integer div/rem) and in the SASS
   (``cuobjdump -sass``). ``--sass`` adds opcode counts per SASS loop: the static length of one
   iteration of each hot loop after ptxas, and its shortest path (if-bodies skipped), which is what an
   unmasked interior tile executes. ``--loops`` breaks the TTGIR down per ``scf.for`` loop (where
   masking, division and non-pipelined loads sit, whether the dots are wgmma and the loads async
   copies). ``--out`` writes TTIR, TTGIR, LLIR, PTX and SASS per kernel plus a JSON summary.
5. ``--set band_fwd:BLOCK_N=128,num_warps=8,maxnreg=128`` compiles a what-if variant of the matching
   launches with those launch keywords replaced, without editing the kernels.

A launch that Triton would refuse (e.g. a keyword the kernel does not take) is reported as an error
row, as it would fail on its first call on a GPU, and the exit status is then 1 (the CPU tests run the
interpreter, which ignores unknown launch keywords, so this is the only CPU-side check of launches).
Registers per thread, shared memory and threads give an estimate of the resident programs per SM
(``CTA/SM``), the occupancy calculator's arithmetic.

Counts are static (instructions in the code, not executed ones): use them to compare configs and
find anomalies, and time on a GPU before concluding. The tile accounting printed at the end (key
tiles computed per query tile vs the entries the band needs) is pure arithmetic on the band.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import subprocess
import tempfile
import types
from dataclasses import dataclass, field
from pathlib import Path

import torch
import triton
from torch._subclasses.fake_tensor import FakeTensorMode
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource, make_backend
from triton.runtime import autotuner as _tt_autotuner
from triton.runtime import jit as _tt_jit

from led_kernels.ops.triton import _common, _launch, banded, longformer

# Per architecture: a representative part, its SM count and opt-in shared memory per block (bytes),
# shared memory per SM (bytes), registers per SM and max resident threads per SM.
ARCHS = {
    80: ("A100", 108, 166912, 167936, 65536, 2048),
    86: ("RTX 3090", 82, 101376, 102400, 65536, 1536),
    89: ("L40S", 142, 101376, 102400, 65536, 1536),
    90: ("H100 SXM", 132, 232448, 233472, 65536, 2048),
}
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
# kernels wrapped by `maybe_autotune` and the kind whose candidate list they use
AUTOTUNED_KINDS = {
    "_band_fwd_kernel": "band_fwd",
    "_layer_fwd_kernel": "band_fwd",  # kernel A with kernel B's key chunks (the layer's default forward)
    "_band_dq_kernel": "band_dq",
    "_band_dkdv_kernel": "band_dkdv",
}

# PTX instruction patterns (static counts)
PTX_PATTERNS = {
    "wgmma": r"\bwgmma\.mma_async\b",
    "mma.sync": r"\bmma\.sync\.aligned\b",
    "cp.async": r"\bcp\.async\.c[ag]\.",
    "cp.async.bulk": r"\bcp\.async\.bulk\b",
    "ld.global.128": r"\bld\.global(?:\.[\w:]+)*\.(?:v4\.[bfsu]32|v2\.[bfsu]64)\b",
    "ld.global": r"\bld\.global\b",
    "ex2": r"\bex2\.approx\b",
    "cvt.f16": r"\bcvt\.rn\.(?:bf16x2|f16x2|bf16|f16)\.f32\b",
    "div/rem": r"\b(?:div|rem)\.[su](?:32|64)\b",
}
# SASS opcode patterns (static counts)
SASS_PATTERNS = {
    "HGMMA": r"\bHGMMA\.",
    "HMMA": r"\bHMMA\.",
    "LDGSTS": r"\bLDGSTS\b",
    "UTMALDG": r"\bUTMALDG\b",
    "LDG.128": r"\bLDG\.E\.(?:\w+\.)*128\b",
    "LDG": r"\bLDG\.",
    "LDS": r"\bLDS(?:M)?\b",
    "MUFU.EX2": r"\bMUFU\.EX2\b",
    "F2FP": r"\bF2FP\.",
    "BAR": r"\bBAR\.SYNC\b",
    "STL/LDL": r"\b(?:STL|LDL)\b",
}
# SASS opcode classes counted per loop (a loop = the code between a backward branch and its target)
SASS_LOOP_CLASSES = {
    "HGMMA": ("HGMMA",),
    "HMMA": ("HMMA",),
    "EX2": ("MUFU.EX2",),
    "F2FP": ("F2FP",),
    "FP32": ("FFMA", "FMUL", "FADD", "FMNMX", "FSEL", "FSETP"),
    "SHFL": ("SHFL",),
    "LDGSTS": ("LDGSTS",),
    "LDG": ("LDG",),
    "LDS/STS": ("LDS", "LDSM", "STS", "STSM"),
    "INT": ("IMAD", "IADD3", "VIADD", "ISETP", "LEA", "SEL", "LOP3", "SHF", "IMNMX", "VIMNMX", "I2F", "F2I"),
    "SYNC": ("BAR", "WARPGROUP", "WARPSYNC", "DEPBAR", "SYNCS"),
}
# TTGIR op patterns counted per scf.for loop
LOOP_PATTERNS = {
    "wgmma": r"\bttng\.warp_group_dot\b",
    "wg_wait": r"\bttng\.warp_group_dot_wait\b",
    "mma": r"\btt\.dot\b",
    "cp.async": r"\bttg\.async_copy_global_to_local\b",
    "tma": r"\b(?:ttng\.async_tma_copy_global_to_local|tt\.descriptor_load)\b",
    "wait": r"\bttg\.async_wait\b",
    "reg_load": r"\btt\.load\b",
    "local_load": r"\bttg\.local_load\b",
    "div/rem": r"\barith\.(?:div|rem|floordiv|ceildiv)[su]i\b",
    "exp2": r"\bmath\.exp2\b",
    "sel2d": r"\barith\.select\b.*tensor<\d+x\d+x",
    "cmp2d": r"\barith\.cmpi\b.*tensor<\d+x\d+x",
    "cvt_layout": r"\bttg\.convert_layout\b",
    "truncf": r"\barith\.truncf\b",
    "scf.if": r"\bscf\.if\b",
}


# ----------------------------------------------------------------------------------------------------
# capture: run the launchers on fake CUDA tensors, record every kernel[grid](...) call
# ----------------------------------------------------------------------------------------------------


@dataclass
class Launch:
    step: str  # which pass: "fwd" or "bwd"
    fn: _tt_jit.JITFunction
    args: tuple
    kwargs: dict
    grid: object
    label: str = ""
    count: int = 1

    @property
    def name(self) -> str:
        return self.fn.__name__

    def config(self) -> dict:
        return {
            k: self.kwargs[k]
            for k in ("BLOCK_M", "BLOCK_N", "num_warps", "num_stages", "maxnreg")
            if k in self.kwargs
        }

    def programs(self) -> int | None:
        """Programs of the launch; None for a variant whose launcher computed a fixed grid from other
        block sizes (the variant's grid is unknown)."""
        if self.grid is None:
            return None
        meta = dict(zip(self.fn.arg_names, self.args, strict=False), **self.kwargs)
        grid = self.grid(meta) if callable(self.grid) else self.grid
        return math.prod(int(g) for g in grid)


def _jit_fn(kernel) -> _tt_jit.JITFunction:
    while not isinstance(kernel, _tt_jit.JITFunction):
        kernel = kernel.fn  # Autotuner / Heuristics wrap the JITFunction
    return kernel


@contextlib.contextmanager
def fake_device(arch: int):
    """torch.cuda.get_device_properties answers for `arch`; the backend's cached lookups are reset."""
    part, sms, optin, *_ = ARCHS[arch]
    props = types.SimpleNamespace(
        name=f"{part} (offline)",
        major=arch // 10,
        minor=arch % 10,
        multi_processor_count=sms,
        shared_memory_per_block_optin=optin,
    )
    saved = torch.cuda.get_device_properties
    saved_autotune = _common.AUTOTUNE
    torch.cuda.get_device_properties = lambda *a, **k: props
    _common.AUTOTUNE = False
    _common.clear_device_caches()
    try:
        yield
    finally:
        torch.cuda.get_device_properties = saved
        _common.AUTOTUNE = saved_autotune
        _common.clear_device_caches()


@contextlib.contextmanager
def _recording(log: list, step: list):
    """Replace Triton's launch path: kernel[grid](*args, **kwargs) only records the call."""

    def fake_run(self, *args, grid, warmup, **kwargs):
        log.append(Launch(step[0], _jit_fn(self), args, kwargs, grid))

    classes = [_tt_jit.JITFunction, _tt_autotuner.Autotuner, _tt_autotuner.Heuristics]
    saved = [c.__dict__.get("run") for c in classes]
    saved_fast = _launch.ENABLED
    for c in classes:
        c.run = fake_run
    _launch.ENABLED = False  # every launch through kernel[grid](...), i.e. through fake_run
    try:
        yield
    finally:
        _launch.ENABLED = saved_fast
        for c, r in zip(classes, saved, strict=True):
            if r is None:
                del c.run
            else:
                c.run = r


def _launcher(op):
    """The Python body behind a registered ``led_kernels::triton_*`` op (what runs on a CUDA tensor);
    calling the op itself under FakeTensorMode would dispatch to its fake implementation instead."""
    return getattr(op, "_init_fn", op)


def capture_launches(arch, dtype, batch, seqlen, heads, head_dim, window, globals_) -> list[Launch]:
    """Every kernel launch of one forward + backward of a Longformer/LED layer (kernel A over all
    rows, kernel B over the global rows), as the launchers would launch them on `arch`."""
    if _common.INTERPRET:
        raise SystemExit("inspect_kernels: unset TRITON_INTERPRET (the interpreter picks test-only configs)")
    log: list[Launch] = []
    step = [""]
    scale = head_dim**-0.5
    dev = torch.device("cuda", 0)
    with fake_device(arch), _recording(log, step), FakeTensorMode():
        shape = (batch, seqlen, heads, head_dim)
        q, k, v, dout = (torch.empty(shape, dtype=dtype, device=dev) for _ in range(4))
        key_flags = torch.zeros((batch, seqlen), dtype=torch.int8, device=dev)
        global_idx = torch.zeros((batch, globals_), dtype=torch.int32, device=dev)

        if globals_ > 0:
            # what longformer_attention runs with global tokens: both kernels as one op (LED's separate
            # global projections)
            qg, kg, vg = (torch.empty(shape, dtype=dtype, device=dev) for _ in "qkv")
            step[0] = "fwd"
            out, lse, glse, *prep = _launcher(longformer.triton_longformer_fwd)(
                q, k, v, qg, kg, vg, key_flags, global_idx, window, scale
            )
            step[0] = "bwd"
            _launcher(longformer.triton_longformer_bwd)(
                dout, q, k, v, qg, kg, vg, out, lse, glse, key_flags, global_idx, *prep, window, scale, False
            )
        else:  # kernel A alone, as BandedAttentionFunction runs it
            step[0] = "fwd"
            cum_excl, _, bounds = _launcher(_common.triton_prep)(key_flags, global_idx)
            out, lse = _launcher(banded.triton_banded_fwd)(
                q, k, v, key_flags, global_idx, cum_excl, bounds, window, scale
            )
            step[0] = "bwd"
            _launcher(banded.triton_banded_bwd)(
                dout, q, k, v, out, lse, key_flags, global_idx, cum_excl, bounds, window, scale
            )
    # identical consecutive launches (e.g. the reduction run for dK then dV) are compiled once
    unique: list[Launch] = []
    for launch in log:
        launch.label = f"{launch.step} {launch.name.strip('_').removesuffix('_kernel')}"
        prev = unique[-1] if unique else None
        if prev is not None and prev.fn is launch.fn and prev.kwargs == launch.kwargs:
            prev.count += 1
            continue
        unique.append(launch)
    for launch in unique:
        if launch.count > 1:
            launch.label += f" x{launch.count}"
    return unique


def autotune_variants(launch: Launch, arch: int, dtype: torch.dtype) -> list[Launch]:
    """The candidates the autotuner would time for this launch on `arch` (after its smem pruning)."""
    kind = AUTOTUNED_KINDS.get(launch.name)
    if kind is None:
        return []
    with fake_device(arch), FakeTensorMode():
        q = torch.empty((1, 16, 1, 16), dtype=dtype, device="cuda:0")
        prune = _common._prune_to_smem(kind)
        configs = prune(_common.autotune_configs(kind), {"Q": q}, HEAD_DIM=launch.kwargs["HEAD_DIM"])
    out = []
    for i, c in enumerate(configs):
        kw = dict(launch.kwargs, **c.kwargs, num_warps=c.num_warps, num_stages=c.num_stages)
        if c.maxnreg:
            kw["maxnreg"] = c.maxnreg
        if kw == launch.kwargs:
            launch.label += f" [fixed=tune {i + 1}]"  # the fixed config is one of the candidates
            continue
        label = f"{launch.label.split(' [')[0]} [tune {i + 1}/{len(configs)}]"
        out.append(Launch(launch.step, launch.fn, launch.args, kw, launch.grid, label))
    return out


def override_variants(launches: list[Launch], specs: list[str]) -> list[Launch]:
    """``--set band_fwd:BLOCK_N=128,num_warps=8`` adds, after every launch whose label contains
    ``band_fwd`` (autotune candidates excepted), a variant with those launch keywords replaced (block
    sizes, num_warps, num_stages, maxnreg, ...): what-if compiles without editing the kernels."""
    parsed = []
    for spec in specs:
        which, _, assigns = spec.partition(":")
        kw = {}
        for item in filter(None, assigns.split(",")):
            key, _, val = item.partition("=")
            val = val.strip()
            kw[key.strip()] = int(val) if val.lstrip("-").isdigit() else val
        parsed.append((which, assigns, kw))
    out = []
    for launch in launches:
        out.append(launch)
        if "[tune" in launch.label:
            continue
        for which, assigns, kw in parsed:
            if which in launch.label:
                label = f"{launch.label.split(' [')[0]} [set {assigns}]"
                blocks_changed = any(
                    k.startswith("BLOCK") and launch.kwargs.get(k) != v for k, v in kw.items()
                )
                grid = None if blocks_changed and not callable(launch.grid) else launch.grid
                out.append(
                    Launch(launch.step, launch.fn, launch.args, dict(launch.kwargs, **kw), grid, label)
                )
    return out


# ----------------------------------------------------------------------------------------------------
# compile exactly as JITFunction.run would, then read the artifacts
# ----------------------------------------------------------------------------------------------------


def _mock(arg):
    """Fake tensors cannot give a data_ptr; Triton's MockTensor stands in (address 0: 16-aligned, as
    every CUDA allocation is), carrying the dtype that specialisation needs."""
    if isinstance(arg, torch.Tensor):
        return _tt_jit.MockTensor(arg.dtype)
    return arg


def compile_launch(launch: Launch, arch: int):
    target = GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    fn = launch.fn
    kwargs = dict(launch.kwargs)
    kwargs["debug"] = kwargs.get("debug", fn.debug) or triton.knobs.runtime.debug
    kwargs["instrumentation_mode"] = triton.knobs.compilation.instrumentation_mode
    binder = _tt_jit.create_function_from_signature(fn.signature, fn.params, backend)
    bound_args, specialization, options = binder(*map(_mock, launch.args), **kwargs)
    options, signature, constexprs, attrs = fn._pack_args(
        backend, kwargs, bound_args, specialization, options
    )
    return triton.compile(
        ASTSource(fn, signature, constexprs, attrs), target=target, options=options.__dict__
    )


def _tool(name: str) -> str:
    return getattr(triton.knobs.nvidia, name).path


def ptxas_report(ptx: str, arch: int) -> dict:
    """Rerun ptxas -v (Triton discards its log) for registers, spills and performance warnings."""
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp, "k.ptx")
        src.write_text(ptx)
        cmd = [get_ptxas(arch).path, "-lineinfo", "-v", f"--gpu-name={sm_arch_from_capability(arch)}"]
        res = subprocess.run(
            [*cmd, str(src), "-o", str(Path(tmp, "k.cubin"))], capture_output=True, text=True
        )
    log = res.stdout + res.stderr
    regs = re.search(r"Used (\d+) registers", log)
    spill_st = re.search(r"(\d+) bytes spill stores", log)
    spill_ld = re.search(r"(\d+) bytes spill loads", log)
    warnings = [
        re.sub(r"^ptxas\s*(?:/\S+\s*)?", "", line).strip()
        for line in log.splitlines()
        if "warning" in line.lower() or "Performance" in line
    ]
    return {
        "regs": int(regs.group(1)) if regs else None,
        "spill_stores": int(spill_st.group(1)) if spill_st else None,
        "spill_loads": int(spill_ld.group(1)) if spill_ld else None,
        "warnings": warnings,
    }


def sass_of(cubin: bytes) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "k.cubin")
        path.write_bytes(cubin)
        res = subprocess.run([_tool("cuobjdump"), "-sass", str(path)], capture_output=True, text=True)
    return res.stdout


_SASS_LINE = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")


def _branch_target(op: str, operands: str) -> int | None:
    """Target address of a SASS branch (``BRA 0x1960``, ``BRA P1, 0x3390``, ``BRA.U ...``)."""
    if op.split(".")[0] != "BRA":
        return None
    found = re.findall(r"0x[0-9a-f]+", operands)
    return int(found[-1], 16) if found else None


def sass_loops(sass: str) -> list[dict]:
    """Loops of the SASS (one per backward branch), with their static length, the length of their
    shortest path (regions jumped over by forward branches removed) and opcode classes: the cost of
    one iteration of each hot loop, after ptxas."""
    insts = [(int(m.group(1), 16), m.group(2), m.group(3)) for m in _SASS_LINE.finditer(sass)]
    loops = []
    for addr, op, rest in insts:
        target = _branch_target(op, rest)
        if target is None or not target < addr:
            continue
        lo = target
        body = [(a, o, r) for a, o, r in insts if lo <= a <= addr]
        # not loops: spin-waits (mbarrier try-wait retried in place) and out-of-line retry blocks placed
        # after EXIT that jump back into a loop
        if len(body) < 4 or any(o == "EXIT" for _, o, _ in body):
            continue
        # regions jumped over by forward branches inside the loop (if-bodies, else-arms): not on the
        # shortest path through one iteration
        skipped = set()
        for a, o, r in body:
            t = _branch_target(o, r)
            if t is not None and a < t <= addr:
                skipped.update(b for b, _, _ in body if a < b < t)
        row = {"start": f"{lo:#x}", "insts": len(body), "min_path": len(body) - len(skipped)}
        for name, names in SASS_LOOP_CLASSES.items():
            dotted = tuple(n for n in names if "." in n)  # e.g. MUFU.EX2: match the prefix
            row[name] = sum(1 for _, o, _ in body if o.split(".")[0] in names or o.startswith(dotted))
        loops.append(row)
    return loops


def count(patterns: dict, text: str) -> dict:
    return {k: len(re.findall(p, text)) for k, p in patterns.items()}


def mma_encodings(ttgir: str) -> list[str]:
    """The MMA layouts the dots use: `v3 [16, 64, 16]` is a wgmma of m64n64k16 per warpgroup,
    `v2` is mma.sync."""
    found = []
    for m in re.finditer(r"#ttg\.nvidia_mma<\{versionMajor = (\d+).*?instrShape = \[([\d, ]+)\]", ttgir):
        enc = f"v{m.group(1)} [{m.group(2)}]"
        if enc not in found:
            found.append(enc)
    return found


def ttgir_loops(ttgir: str) -> list[dict]:
    """Per scf.for loop of the TTGIR (in order, nested ones included, `depth` > 0), the op counts of its
    body: dots, async copies vs register loads, integer division, 2-D selects/compares (per-element
    masking), exp2, layout conversions."""
    lines = ttgir.splitlines()
    loops = []
    for i, line in enumerate(lines):
        if "scf.for" not in line or "{" not in line:
            continue
        depth_outer = sum(1 for lp in loops if lp["start"] < i <= lp["end"])
        bal, j = 0, i
        while j < len(lines):
            bal += lines[j].count("{") - lines[j].count("}")
            if bal <= 0 and j > i:
                break
            j += 1
        body = "\n".join(lines[i + 1 : j])
        iters = re.search(r"iter_args\((.*?)\)\s*->", line)
        n_iter = len(re.findall(r"%\w+ = ", iters.group(1))) if iters else 0
        loops.append(
            {"start": i, "end": j, "depth": depth_outer, "iter_args": n_iter, **count(LOOP_PATTERNS, body)}
        )
    return loops


@dataclass
class Report:
    label: str
    step: str
    name: str
    config: dict
    programs: int | None
    shared: int
    ptxas: dict
    ptx: dict
    sass: dict
    mma: list
    loops: list
    sass_loops: list = field(default_factory=list)
    ctas_per_sm: int | None = None
    error: str | None = None
    asm: dict = field(default_factory=dict, repr=False)


def ctas_per_sm(arch: int, regs: int | None, num_warps: int, shared: int) -> int | None:
    """Resident programs per SM from registers (per-warp allocation in units of 256), shared memory
    and threads; an estimate of the occupancy calculator."""
    if regs is None:
        return None
    _, _, _, smem_sm, regs_sm, threads_sm = ARCHS[arch]
    per_warp = math.ceil(regs * 32 / 256) * 256
    by_regs = regs_sm // (per_warp * num_warps)
    by_smem = smem_sm // (shared + 1024) if shared else 32  # 1 KB per block reserved by the driver
    return min(by_regs, by_smem, threads_sm // (32 * num_warps), 32)


def inspect(launch: Launch, arch: int) -> Report:
    try:
        kernel = compile_launch(launch, arch)
    except Exception as exc:  # the same error the launch would raise on a GPU: report it, go on
        msg = f"{type(exc).__name__}: {exc}".splitlines()[0]
        return Report(
            launch.label, launch.step, launch.name, launch.config(), 0, 0, {}, {}, {}, [], [], error=msg
        )
    asm = dict(kernel.asm)
    ptx = asm["ptx"]
    ttgir = asm["ttgir"]
    asm["sass"] = sass_of(asm["cubin"])
    pr = ptxas_report(ptx, arch)
    md = kernel.metadata
    cfg = launch.config()
    cfg.setdefault("num_warps", md.num_warps)
    cfg.setdefault("num_stages", md.num_stages)
    return Report(
        label=launch.label,
        step=launch.step,
        name=launch.name,
        config=cfg,
        programs=launch.programs(),
        shared=md.shared,
        ptxas=pr,
        ptx=count(PTX_PATTERNS, ptx),
        sass=count(SASS_PATTERNS, asm["sass"]),
        mma=mma_encodings(ttgir),
        loops=ttgir_loops(ttgir),
        sass_loops=sass_loops(asm["sass"]),
        ctas_per_sm=ctas_per_sm(arch, pr["regs"], md.num_warps, md.shared),
        asm=asm,
    )


# ----------------------------------------------------------------------------------------------------
# tile accounting of kernel A's band walk
# ----------------------------------------------------------------------------------------------------


def band_tile_accounting(seqlen: int, window: int, block_m: int, block_n: int) -> dict:
    """Key tiles kernel A computes per query tile vs the band entries it needs, following the
    tile runs of ``_common.band_tiles`` (no padding: the non-padded span is [0, N))."""
    w = min(window, seqlen)
    computed = needed = edge = interior = n_tiles = 0
    mid = None
    for t0 in range(0, seqlen, block_m):
        lo = max(t0 - w, 0) // block_n * block_n
        hi = min(t0 + block_m + w, seqlen)
        hi_r = max(-(-hi // block_n) * block_n, lo)
        int_lo = min(-(-max(t0 + block_m - 1 - w, lo) // block_n) * block_n, hi_r)
        int_hi = min(max(min(t0 + w + 1, seqlen) // block_n * block_n, int_lo), hi_r)
        tiles = (hi_r - lo) // block_n
        n_int = (int_hi - int_lo) // block_n
        n_tiles += tiles
        interior += n_int
        edge += tiles - n_int
        computed += tiles * block_m * block_n
        rows = range(t0, min(t0 + block_m, seqlen))
        needed += sum(min(i + w, seqlen - 1) - max(i - w, 0) + 1 for i in rows)
        if mid is None and t0 >= w + block_m:
            mid = (tiles, n_int, tiles - n_int)
    return {
        "query_tiles": -(-seqlen // block_m),
        "key_tiles": n_tiles,
        "edge_tiles": edge,
        "interior_tiles": interior,
        "wasted": 1 - needed / computed if computed else 0.0,
        "mid": mid,  # (tiles, interior, edge) of a query tile away from the sequence ends
    }


# ----------------------------------------------------------------------------------------------------
# output
# ----------------------------------------------------------------------------------------------------


def _cfg_str(cfg: dict) -> str:
    bm, bn = cfg.get("BLOCK_M", "-"), cfg.get("BLOCK_N", "-")
    regs = f" r{cfg['maxnreg']}" if cfg.get("maxnreg") else ""
    return f"{bm}x{bn} w{cfg.get('num_warps', '?')} s{cfg.get('num_stages', '?')}{regs}"


def _width(reports: list[Report], extra: int = 0) -> int:
    return max([30, *(len(r.label) + extra for r in reports)])


def print_table(reports: list[Report]) -> None:
    lw = _width(reports)
    head = (
        f"{'kernel':<{lw}} {'BMxBN warps stages':<18} {'progs':>6} {'regs':>4} {'spill':>7} {'smem KB':>7} "
        f"{'CTA/SM':>6} {'wgmma':>5} {'mma':>4} {'cp.async':>8} {'bulk':>4} {'ld128':>5} {'ex2':>4} "
        f"{'cvt16':>5} {'div':>3}  mma layout"
    )
    print(head)
    print("-" * len(head))
    for r in reports:
        if r.error:
            print(f"{r.label:<{lw}} {_cfg_str(r.config):<18} COMPILE/LAUNCH ERROR: {r.error}")
            continue
        sp = r.ptxas
        spill = "?" if sp["spill_stores"] is None else f"{sp['spill_stores']}/{sp['spill_loads']}"
        p = r.ptx
        progs = "?" if r.programs is None else r.programs
        ctas = "?" if r.ctas_per_sm is None else r.ctas_per_sm
        print(
            f"{r.label:<{lw}} {_cfg_str(r.config):<18} {progs:>6} {sp['regs'] or '?':>4} {spill:>7} "
            f"{r.shared / 1024:>7.1f} {ctas:>6} "
            f"{p['wgmma']:>5} {p['mma.sync']:>4} {p['cp.async']:>8} {p['cp.async.bulk']:>4} "
            f"{p['ld.global.128']:>5} {p['ex2']:>4} {p['cvt.f16']:>5} {p['div/rem']:>3}  {', '.join(r.mma)}"
        )
    warned = [r for r in reports if not r.error and r.ptxas["warnings"]]
    for r in warned:
        for w in r.ptxas["warnings"]:
            print(f"  ptxas [{r.label}]: {w}")


def print_sass(reports: list[Report]) -> None:
    keys = list(SASS_PATTERNS)
    lw = _width(reports)
    print(f"{'kernel (SASS, static counts)':<{lw}} " + " ".join(f"{k:>8}" for k in keys))
    for r in reports:
        if not r.error:
            print(f"{r.label:<{lw}} " + " ".join(f"{r.sass[k]:>8}" for k in keys))


def print_sass_loops(reports: list[Report]) -> None:
    keys = list(SASS_LOOP_CLASSES)
    lw = _width(reports, 9)
    print(f"{'kernel / SASS loop @start':<{lw}} {'insts':>5} {'min':>5} " + " ".join(f"{k:>7}" for k in keys))
    for r in reports:
        for lp in [] if r.error else r.sass_loops:
            name = f"{r.label} @{lp['start']}"
            print(
                f"{name:<{lw}} {lp['insts']:>5} {lp['min_path']:>5} " + " ".join(f"{lp[k]:>7}" for k in keys)
            )


def print_loops(reports: list[Report]) -> None:
    keys = list(LOOP_PATTERNS)
    lw = _width(reports, 10)
    print(f"{'kernel / scf.for @TTGIR line':<{lw}} {'args':>4} " + " ".join(f"{k:>10}" for k in keys))
    for r in reports:
        for lp in r.loops:
            name = f"{r.label} {'  ' * lp['depth']}@{lp['start'] + 1}"
            print(f"{name:<{lw}} {lp['iter_args']:>4} " + " ".join(f"{lp[k]:>10}" for k in keys))


def print_band_walk(reports: list[Report], seqlen: int, window: int) -> None:
    """Tile accounting of kernel A's band walks for the configs inspected."""
    print(f"kernel A band walk at N={seqlen}, w={window} (wasted = computed scores outside the band):")
    lw = _width(reports)
    seen = set()
    for r in reports:
        if r.error or r.name not in ("_band_fwd_kernel", "_band_dq_kernel", "_band_dkdv_kernel"):
            continue
        bm, bn = r.config["BLOCK_M"], r.config["BLOCK_N"]
        # dK/dV walks query tiles (BLOCK_M) per key tile (BLOCK_N): the same band, transposed
        own, other = (bn, bm) if r.name == "_band_dkdv_kernel" else (bm, bn)
        if (r.name, own, other) in seen:
            continue
        seen.add((r.name, own, other))
        acc = band_tile_accounting(seqlen, window, own, other)
        tiles, _, edge = acc["mid"] or (0, 0, 0)
        print(
            f"  {r.label:<{lw}} owner tile {own:>3}, walked tile {other:>3}: {acc['key_tiles']:>6} tiles "
            f"({acc['edge_tiles']} masked), {tiles} per interior owner tile ({edge} masked), "
            f"wasted {acc['wasted']:.1%}"
        )


def dump(reports: list[Report], out: Path, arch: int, meta: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    summary = []
    for r in reports:
        stem = re.sub(r"[^\w.-]+", "_", r.label).strip("_")
        for ext in ("ttir", "ttgir", "llir", "ptx", "sass"):
            if ext in r.asm:
                Path(out, f"{stem}.sm{arch}.{ext}").write_text(r.asm[ext])
        summary.append(
            {
                "label": r.label,
                "kernel": r.name,
                "config": r.config,
                "programs": r.programs,
                "shared_bytes": r.shared,
                "ctas_per_sm": r.ctas_per_sm,
                "error": r.error,
                "ptxas": r.ptxas,
                "ptx_counts": r.ptx,
                "sass_counts": r.sass,
                "mma_layouts": r.mma,
                "loops": r.loops,
                "sass_loops": r.sass_loops,
            }
        )
    Path(out, f"summary.sm{arch}.json").write_text(json.dumps({"meta": meta, "kernels": summary}, indent=1))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", type=int, default=90, choices=sorted(ARCHS), help="compute capability x10")
    ap.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPES))
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seqlen", type=int, default=16384)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--window", type=int, default=512, help="one-sided window w")
    ap.add_argument("--globals", type=int, default=1, help="number of global tokens G")
    ap.add_argument("--kernels", default="", help="comma-separated substrings: inspect only matching kernels")
    ap.add_argument("--autotune", action="store_true", help="also compile every autotune candidate")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KERNEL:KEY=VAL,...",
        help="also compile a variant with these launch keywords (e.g. band_fwd:BLOCK_N=128,num_warps=8)",
    )
    ap.add_argument("--loops", action="store_true", help="per-loop op counts from the TTGIR")
    ap.add_argument("--sass", action="store_true", help="SASS opcode counts")
    ap.add_argument("--out", type=Path, help="write TTIR/TTGIR/LLIR/PTX/SASS and summary JSON here")
    args = ap.parse_args(argv)

    dtype = DTYPES[args.dtype]
    shape = (args.batch, args.seqlen, args.heads, args.head_dim, args.window, args.globals)
    launches = capture_launches(args.arch, dtype, *shape)
    if args.autotune:
        launches = [x for launch in launches for x in [launch, *autotune_variants(launch, args.arch, dtype)]]
    if args.set:
        launches = override_variants(launches, args.set)
    if args.kernels:
        wanted = [s.strip() for s in args.kernels.split(",") if s.strip()]
        launches = [x for x in launches if any(s in x.label for s in wanted)]

    part = ARCHS[args.arch][0]
    print(
        f"sm_{args.arch} ({part}), {args.dtype}, B={args.batch} N={args.seqlen} H={args.heads} "
        f"D={args.head_dim} w={args.window} G={args.globals}; triton {triton.__version__}; "
        "fixed configs (LED_KERNELS_AUTOTUNE=0)" + (" + autotune candidates" if args.autotune else "")
    )
    reports = []
    for launch in launches:
        print(f"  compiling {launch.label} {_cfg_str(launch.config())} ...", flush=True)
        reports.append(inspect(launch, args.arch))
    print()
    print_table(reports)
    if args.sass:
        print()
        print_sass(reports)
        print()
        print_sass_loops(reports)
    if args.loops:
        print()
        print_loops(reports)

    print()
    print_band_walk(reports, args.seqlen, args.window)

    errors = [r for r in reports if r.error]
    if args.out:
        meta = {
            "arch": args.arch,
            "dtype": args.dtype,
            "shape": dict(zip("B N H D w G".split(), shape, strict=True)),
        }
        dump(reports, args.out, args.arch, meta)
        print(f"\nartifacts in {args.out}")
    if errors:
        raise SystemExit(
            f"{len(errors)} launch(es) would fail on a GPU: " + ", ".join(r.label for r in errors)
        )


if __name__ == "__main__":
    main()
