"""``torch.library.opcheck`` for every op registered under the ``led_kernels`` namespace.

opcheck runs each op against its schema (no undeclared mutation or aliasing), its fake (meta)
implementation (shapes, dtypes and strides of the real outputs), its autograd registration, and
AOTAutograd with dynamic shapes, forward and backward: what torch.compile relies on. Inputs include
the layouts the ops must read in place: q/k/v as views of a fused (B, N, 3, H, D) projection, a
(B, H, N, D) tensor seen as (B, N, H, D), and a transposed upstream gradient, besides contiguous
tensors, a batch without global slots, a window past the sequence and one-token sequences.

Every op of the namespace must appear in ``CASES``: a new op fails ``test_every_registered_op_is_checked``
until it gets cases here. ``attention_delta`` has a CPU kernel, so it is checked here like the others. The
``cuda`` backend's ops run their emulated kernels on host tensors here (tests/cuda_emu/).
"""

from __future__ import annotations

import pytest
import torch

import led_kernels as lk
from led_kernels import _extension as ext
from led_kernels.masks import PADDING, gather_rows, key_flags

OPS = torch.ops.led_kernels
NAMESPACE = "led_kernels::"


def _backend_ready(name: str) -> bool:
    return lk.available_backends()[name].available


def _registers(backend: str) -> bool:
    """Whether this backend's ops are registered in this process (the cuda module imports anywhere)."""
    return backend == "cuda" or (ext.is_built() if backend == "cpu" else _backend_ready(backend))


def _import_registrations() -> None:
    # every module that registers ops: the CPU kernels and delta (compiled extension), Triton, CUDA
    if ext.is_built():
        import led_kernels.ops.cpu  # noqa: F401
        import led_kernels.ops.delta  # noqa: F401
    if _backend_ready("triton"):
        import led_kernels.ops.triton  # noqa: F401
    import led_kernels.ops.cuda  # noqa: F401


_import_registrations()


def _layouts(b, n, h, d, dtype, seed):
    """q, k, v in three layouts: contiguous, views of a fused QKV projection, and (B, H, N, D) memory."""
    gen = torch.Generator().manual_seed(seed)
    contiguous = [torch.randn(b, n, h, d, generator=gen).to(dtype) for _ in range(3)]
    fused = torch.randn(b, n, 3, h, d, generator=gen).to(dtype)
    views = [fused[:, :, i] for i in range(3)]
    bhnd = [torch.randn(b, h, n, d, generator=gen).to(dtype).transpose(1, 2) for _ in range(3)]
    assert n == 1 or not (views[0].is_contiguous() or bhnd[0].is_contiguous())
    return {"contiguous": contiguous, "fused": views, "bhnd": bhnd}


def _masks(b, n, globals_: bool):
    pm = torch.zeros(b, n, dtype=torch.bool)
    pm[-1, n - n // 3 :] = True
    gm = torch.zeros(b, n, dtype=torch.bool)
    if globals_:
        gm[:, 0] = True
        gm[0, n // 2] = True
        gm[-1, n - 1] = True  # padding wins: an invalid slot
    gi = lk.global_indices(gm, max_global=4) if globals_ else None
    return key_flags(b, n, torch.device("cpu"), pm, gi), gi


def _grad(ts):
    return [t.detach().requires_grad_() if t.is_floating_point() else t for t in ts]


def _nograd(*ts):
    # the backward ops have no derivative of their own (no double backward): plain inputs
    return tuple(t.detach() if isinstance(t, torch.Tensor) else t for t in ts)


def _dout(shape, dtype, seed):
    # transposed in memory (stride(-1) != 1) and then made row-contiguous, as the autograd functions do
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(*shape[:-2], shape[-1], shape[-2], generator=gen).to(dtype).transpose(-1, -2)


# shape (B, N, H, D), window, dtype, globals, layout
VARIANTS = [
    ((2, 21, 2, 16), 5, torch.float32, True, "fused"),
    ((2, 21, 2, 16), 5, torch.float32, True, "bhnd"),
    ((2, 21, 2, 16), 50, torch.float32, False, "contiguous"),
    ((1, 1, 1, 16), 0, torch.float32, True, "fused"),
    ((2, 20, 3, 16), 3, torch.float16, True, "fused"),
]
VARIANT_IDS = ["fused-w5", "bhnd-w5", "noglobal-dense", "one-token", "fp16"]


def _cpu_cases(shape, window, dtype, globals_, layout, seed=0):
    b, n, h, d = shape
    q, k, v = _grad(_layouts(b, n, h, d, dtype, seed)[layout])
    flags, gi = _masks(b, n, globals_)
    scale = d**-0.5
    out, lse = OPS.cpu_banded_fwd(q, k, v, flags, gi, window, scale)
    cases = [
        (OPS.cpu_banded_fwd.default, (q, k, v, flags, gi, window, scale)),
        (
            OPS.cpu_banded_bwd.default,
            _nograd(_dout(out.shape, dtype, seed).contiguous(), q, k, v, lse, flags, gi, window, scale),
        ),
        (OPS.attention_delta.default, (out.detach(), _dout(out.shape, dtype, seed + 1).contiguous())),
    ]
    if gi is not None:
        qg = gather_rows(q.detach(), gi).requires_grad_()
        gout, glse = OPS.cpu_global_fwd(qg, k, v, gi, flags, scale)
        cases += [
            (OPS.cpu_global_fwd.default, (qg, k, v, gi, flags, scale)),
            (
                OPS.cpu_global_bwd.default,
                _nograd(_dout(gout.shape, dtype, seed).contiguous(), qg, k, v, glse, gi, flags, scale),
            ),
        ]
    return cases


def _triton_cases(shape, window, dtype, globals_, layout, seed=0):
    # The Triton ops' derivatives live in autograd.Functions around them (BandedAttentionFunction,
    # GlobalAttentionFunction; traced in tests/test_compile.py), not on the ops: plain inputs here.
    b, n, h, d = shape
    q, k, v = _layouts(b, n, h, d, dtype, seed)[layout]
    flags, gi = _masks(b, n, globals_)
    if gi is None:
        gi = torch.full((b, 0), -1, dtype=torch.int32)
    scale = d**-0.5
    cum_excl, cum_pad, bounds = OPS.triton_prep(flags, gi)
    out, lse = OPS.triton_banded_fwd(q, k, v, flags, gi, cum_excl, bounds, window, scale)
    qg = gather_rows(q, gi)
    gout, glse = OPS.triton_global_fwd(qg, k, v, gi, flags, cum_pad, bounds, scale)
    dout, gdout = _dout(out.shape, dtype, seed).contiguous(), _dout(gout.shape, dtype, seed).contiguous()
    # the whole layer, with separate global projections and with the shared one
    qkv_g = _layouts(b, n, h, d, dtype, seed + 7)[layout]
    layer = []
    for projections, shared in ((qkv_g, False), ((q, k, v), True)):
        fwd_args = (q, k, v, *projections, flags, gi, window, scale)
        lout, llse, lglse, *prep = OPS.triton_longformer_fwd(*fwd_args)
        bwd_args = (dout, q, k, v, *projections, lout, llse, lglse, flags, gi, *prep, window, scale, shared)
        layer += [
            (OPS.triton_longformer_fwd.default, fwd_args),
            (OPS.triton_longformer_bwd.default, _nograd(*bwd_args)),
        ]
    padding = flags == PADDING
    return layer + [
        (OPS.triton_key_flags.default, (gi, None, n)),
        (OPS.triton_key_flags.default, (gi, padding, n)),
        (OPS.triton_prep.default, (flags, gi)),
        (OPS.triton_banded_fwd.default, (q, k, v, flags, gi, cum_excl, bounds, window, scale)),
        (
            OPS.triton_banded_bwd.default,
            _nograd(dout, q, k, v, out, lse, flags, gi, cum_excl, bounds, window, scale),
        ),
        (OPS.triton_global_fwd.default, (qg, k, v, gi, flags, cum_pad, bounds, scale)),
        (
            OPS.triton_global_bwd.default,
            _nograd(gdout, qg, k, v, gout, glse, gi, flags, cum_pad, bounds, scale),
        ),
    ]


def _cuda_cases(shape, window, dtype, globals_, layout, seed=0):
    # float16/bfloat16 only: float32 variants run in float16
    dtype = torch.float16 if dtype == torch.float32 else dtype
    b, n, h, d = shape
    q, k, v = _grad(_layouts(b, n, h, d, dtype, seed)[layout])
    flags, gi = _masks(b, n, globals_)
    scale = d**-0.5
    out, lse = OPS.cuda_banded_fwd(q, k, v, flags, gi, window, scale)
    dout = _dout(out.shape, dtype, seed).contiguous()
    gi32 = torch.empty(b, 0, dtype=torch.int32) if gi is None else gi
    cases = [
        (OPS.cuda_key_flags.default, (gi32, None, n)),
        (OPS.cuda_key_flags.default, (gi32, flags == PADDING, n)),
        (OPS.cuda_banded_fwd.default, (q, k, v, flags, gi, window, scale)),
        (OPS.cuda_banded_bwd.default, _nograd(dout, q, k, v, out, lse, flags, gi, window, scale)),
    ]
    # the whole layer (its derivative lives in an autograd.Function: plain inputs), with separate
    # global projections and with the shared one
    qkv_g = _layouts(b, n, h, d, dtype, seed + 7)[layout]
    plain = _nograd(q, k, v)
    for projections, shared in ((qkv_g, False), (plain, True)):
        fwd_args = (*plain, *projections, flags, gi32, window, scale)
        lout, llse, lglse = OPS.cuda_longformer_fwd(*fwd_args)
        bwd_args = (dout, *plain, *projections, lout, llse, lglse, flags, gi32, window, scale, shared)
        cases += [
            (OPS.cuda_longformer_fwd.default, fwd_args),
            (OPS.cuda_longformer_bwd.default, _nograd(*bwd_args)),
        ]
    if gi is not None:
        qg = gather_rows(q.detach(), gi).requires_grad_()
        gout, glse = OPS.cuda_global_fwd(qg, k, v, gi, flags, scale)
        gdout = _dout(gout.shape, dtype, seed).contiguous()
        cases += [
            (OPS.cuda_global_fwd.default, (qg, k, v, gi, flags, scale)),
            (OPS.cuda_global_bwd.default, _nograd(gdout, qg, k, v, gout, glse, gi, flags, scale)),
        ]
    return cases


CASES = {
    "cpu_banded_fwd": "cpu",
    "cpu_banded_bwd": "cpu",
    "cpu_global_fwd": "cpu",
    "cpu_global_bwd": "cpu",
    "attention_delta": "cpu",
    "triton_key_flags": "triton",
    "triton_prep": "triton",
    "triton_banded_fwd": "triton",
    "triton_banded_bwd": "triton",
    "triton_global_fwd": "triton",
    "triton_global_bwd": "triton",
    "triton_longformer_fwd": "triton",
    "triton_longformer_bwd": "triton",
    "cuda_key_flags": "cuda",
    "cuda_banded_fwd": "cuda",
    "cuda_banded_bwd": "cuda",
    "cuda_global_fwd": "cuda",
    "cuda_global_bwd": "cuda",
    "cuda_longformer_fwd": "cuda",
    "cuda_longformer_bwd": "cuda",
}


def _registered_ops() -> set[str]:
    return {
        name[len(NAMESPACE) :] for name in torch._C._dispatch_get_all_op_names() if name.startswith(NAMESPACE)
    }


def test_every_registered_op_is_checked():
    """The namespace holds exactly the ops this file checks (none unchecked, none stale)."""
    registered = _registered_ops()
    expected = {op for op, backend in CASES.items() if _registers(backend)}
    assert expected, "no backend with registered ops is available"
    assert registered == expected, (registered - expected, expected - registered)


def _check(op, args):
    result = torch.library.opcheck(op, args)
    assert all(status == "SUCCESS" for status in result.values()), (op, result)


def _check_all(cases, seen: set[str]):
    for op, args in cases:
        _check(op, args)
        seen.add(op.name().removeprefix(NAMESPACE).split(".")[0])


@pytest.mark.skipif(not ext.is_built(), reason=f"extension not built: {ext.build_error()}")
@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_cpu_ops(variant):
    seen: set[str] = set()
    _check_all(_cpu_cases(*variant), seen)
    assert seen >= {"cpu_banded_fwd", "cpu_banded_bwd", "attention_delta"}


@pytest.mark.skipif(not _backend_ready("triton"), reason="triton backend unavailable")
@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_triton_ops(variant):
    seen: set[str] = set()
    _check_all(_triton_cases(*variant), seen)
    assert seen == {op for op, backend in CASES.items() if backend == "triton"}


@pytest.mark.parametrize("variant", VARIANTS, ids=VARIANT_IDS)
def test_cuda_ops_emulated(emulated_cuda_backend, variant):
    seen: set[str] = set()
    _check_all(_cuda_cases(*variant), seen)
    expected = {op for op, backend in CASES.items() if backend == "cuda"}
    without_globals = {op for op in expected if not op.startswith("cuda_global_")}
    assert seen == (expected if variant[3] else without_globals)
