"""The machine code of the compiled CUDA kernels, checked for the ptxas miscompile that the GPU tests met.

ptxas 13.0 (sm_90, sm_100, sm_120) computes the predicates of two neighbouring warp votes in one
two-output ``PLOP3`` instruction; when one vote's result is unused it drops an output, and it may keep
the wrong one: ``__any_sync(~0u, a || b)`` beside an unused ``__any_sync(~0u, !(a && b))`` became
``VOTE.ANY(a && b)``, and the dQ kernel skipped the rows of warps where only ``a`` held (head dim 16).
The emulated build (tests/cuda_emu) cannot see this: it runs the source, not the machine code. The
kernels now take such pairs from ballots (csrc/cuda/simt.cuh, ``ballot_sync``); this test keeps any
half-dropped two-output ``PLOP3`` out of every compiled kernel, for every architecture built.

Needs ``cuobjdump`` and ``nvdisasm``: from the CUDA toolkit on PATH, or the ``nvidia-cuda-cuobjdump`` and
``nvidia-cuda-nvdisasm`` wheels of the ``test`` extra.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from led_kernels import _extension as ext

# PLOP3.LUT Pu, Pv, Pa, Pb, Pc, table_u, table_v: Pv = PT discards the second output; its table then
# has no reason to be anything but 0x0. A non-zero one is a second predicate that ptxas computed and
# then half-dropped (the miscompile keeps the dead vote's table in the first output).
_HALF_DROPPED = re.compile(r"PLOP3\.LUT (P[0-6]), PT, [^;]*?, (0x[0-9a-f]+), (0x[0-9a-f]+) ;")


def half_dropped_plop3(sass: str) -> list[str]:
    """The two-output ``PLOP3`` instructions of ``sass`` (cuobjdump -sass text) whose second output is
    discarded while its truth table is not zero, each with the function it is in."""
    found, function = [], "?"
    for line in sass.splitlines():
        if "Function : " in line:
            function = line.split("Function : ", 1)[1].strip()
        m = _HALF_DROPPED.search(line)
        if m and int(m.group(3), 16) != 0:
            found.append(f"{function}: {m.group(0)}")
    return found


def _tool_dirs() -> list[str]:
    dirs = []
    try:  # the nvidia-cuda-cuobjdump / nvidia-cuda-nvdisasm wheels put both into nvidia/cu*/bin
        import nvidia

        for root in nvidia.__path__:
            dirs += [str(p) for p in sorted(Path(root).glob("cu*/bin"))]
    except ImportError:
        pass
    return dirs


def _cuobjdump() -> tuple[str | None, dict[str, str]]:
    env = dict(os.environ)
    extra = _tool_dirs()
    env["PATH"] = os.pathsep.join([*extra, env.get("PATH", "")])
    exe = shutil.which("cuobjdump", path=env["PATH"])
    if exe is None or shutil.which("nvdisasm", path=env["PATH"]) is None:
        return None, env
    return exe, env


def test_half_dropped_plop3_is_found():
    """The check flags the instruction of the miscompiled vote and passes the ordinary forms."""
    bad = "        /*00d0*/                   PLOP3.LUT P0, PT, P0, PT, P1, 0x80, 0xc8 ;  /* 0x0000 */"
    good = [
        "        /*3b70*/                   PLOP3.LUT P6, PT, P5, P4, PT, 0xa8, 0x0 ;",
        "        /*0010*/                   PLOP3.LUT P0, P1, P1, PT, P0, 0x80, 0xc8 ;",
        "        /*0020*/                   VOTE.ANY P0, P0 ;",
    ]
    sass = "\n".join(["\t\tFunction : kernel_a", bad, *good])
    assert half_dropped_plop3(sass) == ["kernel_a: PLOP3.LUT P0, PT, P0, PT, P1, 0x80, 0xc8 ;"]
    assert half_dropped_plop3("\n".join(good)) == []


@pytest.fixture(scope="module")
def extension_sass() -> str:
    """The built extension's disassembly (cuobjdump -sass), once for the module's tests."""
    if not ext.cuda_compiled():
        pytest.skip("the extension was built without its CUDA kernels")
    exe, env = _cuobjdump()
    if exe is None:
        pytest.fail(
            "cuobjdump and nvdisasm not found: install the test extra (nvidia-cuda-cuobjdump, "
            "nvidia-cuda-nvdisasm) or put the CUDA toolkit's bin on PATH"
        )
    import led_kernels._C as C

    return subprocess.run(
        [exe, "-sass", C.__file__], env=env, capture_output=True, text=True, check=True
    ).stdout


def test_compiled_kernels_have_no_half_dropped_predicate_pair(extension_sass):
    sass = extension_sass
    archs = sorted(set(re.findall(r"arch = (sm_\d+a?)", sass)))
    assert archs, "no SASS in the extension"
    assert sass.count("Function : ") > 50, "fewer kernels than expected in the disassembly"
    assert half_dropped_plop3(sass) == [], (
        f"half-dropped predicate pairs in {archs} (see this module's docstring)"
    )


def functions_by_arch(sass: str) -> dict[tuple[str, str], str]:
    """The disassembly of each (architecture, mangled function name) in ``sass`` (cuobjdump -sass)."""
    found: dict[tuple[str, str], list[str]] = {}
    arch, function = "?", None
    for line in sass.splitlines():
        m = re.search(r"arch = (sm_\d+a?)", line)
        if m:
            arch, function = m.group(1), None
        if "Function : " in line:
            function = line.split("Function : ", 1)[1].strip()
            found[(arch, function)] = []
        elif function is not None:
            found[(arch, function)].append(line)
    return {key: "\n".join(lines) for key, lines in found.items()}


# The kernels of the headline shape (head dim 64: kernel A's and B's forward, dQ, dK/dV), by their
# mangled names: each copies its tiles with cp.async (LDGSTS) and keeps everything in registers (no
# local-memory spill, LDL / STL), on every architecture built. The wgmma variants of kernel A, dQ and
# dK/dV (their tiles are SwizzledTile, SharedQTile, OverlapQTile or GroupedQTile: kernel A's
# two-warpgroup grouped_fwd_kernel) exist only in sm_90a code, where their products are warpgroup MMAs
# (HGMMA); for the other architectures they compile to a trap that is never launched.
# layer_fwd_kernel runs kernel A's blocks and kernel B's in one launch: B's blocks take mma.sync (HMMA)
# there too (layer_dq_kernel runs dq_kernel's code for both).
# (the head dim is the template argument after the dtype; tile layouts carry their own Li64E)
_HEADLINE_KERNELS = re.compile(
    r"(banded_fwd_kernel|grouped_fwd_kernel|global_fwd_kernel|layer_fwd_kernel|dq_kernel|layer_dq_kernel|dkdv_kernel)"
    r"I(13__nv_bfloat16|6__half)Li64E"
)


def test_headline_kernels_pipeline_their_copies_without_spilling(extension_sass):
    functions = functions_by_arch(extension_sass)
    kernels = {key: text for key, text in functions.items() if _HEADLINE_KERNELS.search(key[1])}
    archs = {arch for arch, _ in kernels}
    # per architecture: 2 dtypes x (7 kernel A variants + kernel B + 5 layer kernels (kernel A's variants
    # but wgmma16s and wgmma2g) + 3 dQ variants, each also as the layer's dQ + 3 dK/dV modes x 2)
    assert archs and all(sum(a == arch for a, _ in kernels) == 50 for arch in archs), sorted(kernels)
    for (arch, name), text in kernels.items():
        wgmma = any(tile in name for tile in ("SwizzledTile", "SharedQTile", "OverlapQTile", "GroupedQTile"))
        if wgmma and arch != "sm_90a":
            stub = "HGMMA" not in text and "LDGSTS" not in text and "TRAP" in text
            assert stub, f"{arch} {name}: not a stub"
            continue
        assert "LDGSTS" in text, f"{arch} {name}: no cp.async copy"
        spills = re.findall(r"\b(?:LDL|STL)\b[^;]*;", text)
        assert not spills, f"{arch} {name}: local-memory spills {spills[:3]}"
        if wgmma:
            wgmma_only = "HGMMA.64x64x16.F32" in text and ("HMMA" not in text or "layer_fwd_kernel" in name)
            assert wgmma_only, f"{arch} {name}: not all products are wgmma"
            # The kernels fence (WARPGROUP.ARRIVE) once per group of 4 to 8 products (its last one
            # marked gsb0, the commit) and wait (DEPBAR) once per group or per two groups started
            # together (the backward's dV product beside dP^T). ptxas adds fences where registers the
            # products read are written after the kernel's fence (C7519), and serializes the
            # products, a wait after each, where it cannot keep their registers apart (C7520).
            waits, fences = text.count("WARPGROUP.DEPBAR"), text.count("WARPGROUP.ARRIVE")
            products, groups = text.count("HGMMA"), len(re.findall(r"HGMMA[^;]*\bgsb0\b", text))
            assert 2 * waits < products, f"{arch} {name}: {products} wgmma, {waits} waits (serialized)"
            assert fences == groups, f"{arch} {name}: {fences} fences for {groups} groups (fences added)"
            assert waits <= groups, f"{arch} {name}: {waits} waits for {groups} groups"
