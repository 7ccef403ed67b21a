"""The ``cuda`` backend (led_kernels.ops.cuda): its ops, autograd and argument handling.

On the CPU the backend's Python layer runs the emulated kernels (tests/cuda_emu/, the same kernel source
as the GPU build) on host tensors: argument marshalling (pointers, strides, workspace sizes, dtype codes),
the registered ops and their autograd formulas are checked against the fp64 oracle, with the inputs as
views of a fused projection. On a GPU (marker ``gpu``) the compiled kernels are checked the same way and at
long sequences, against the fp64 ``torch`` backend.

Low precision follows FlashAttention's rule: the error against fp64 is at most twice the ``torch``
backend's own error in the same dtype, never NaN.
"""

from __future__ import annotations

import oracle
import pytest
import torch
from cases import (
    GLOBAL_PATTERNS,
    fused_projections,
    global_mask,
    layer_errors_vs_fp64,
    longformer_layer,
    padding_mask,
    spread_masks,
)

import led_kernels as lk
from led_kernels import backends
from led_kernels.masks import gather_rows, key_flags, scatter_rows, valid_global_slots
from led_kernels.ops import _compiled, cuda

LOW = (torch.float16, torch.bfloat16)
SIX = ("q", "k", "v", "q_global", "k_global", "v_global")


def _layer_via_module(views, window, gm, pm):
    """The whole layer from the backend module's two ops, composed as ``longformer_attention`` does for a
    backend without a layer op (a global projection that is None is the local one)."""
    q, k, v, qg, kg, vg = views
    b, n, _, d = q.shape
    gi = None if gm is None else lk.global_indices(gm)
    flags = cuda.key_flags(b, n, q.device, pm, gi)
    out = cuda.banded_attention(q, k, v, window, flags, gi, d**-0.5)
    if gi is None:
        return out
    qg, kg, vg = (x if g is None else g for x, g in zip((q, k, v), (qg, kg, vg)))
    gout = cuda.global_attention(gather_rows(qg, gi), kg, vg, gi, flags, d**-0.5)
    return scatter_rows(out, gout, gi, valid_global_slots(gi, flags))


def _layer_one_op(views, window, gm, pm):
    """The whole layer through the backend's layer op, called as ``longformer_attention`` calls it."""
    q, k, v, qg, kg, vg = views
    b, n, _, d = q.shape
    gi = torch.empty(b, 0, dtype=torch.int32) if gm is None else lk.global_indices(gm)
    flags = cuda.key_flags(b, n, q.device, pm, gi)
    return cuda.longformer_attention(q, k, v, qg, kg, vg, window, flags, gi, d**-0.5)


def _run_layers(shape, window, gpat, ppat, dtype, shared=False, seed=0):
    """The fp64 oracle's output and gradient (w.r.t. the fused six projections), and the same from the
    cuda module's composed ops ("ops"), its layer op ("layer") and the torch backend ("torch").
    ``shared``: one projection (the global ones are None)."""
    b, n, h, d = shape
    torch.manual_seed(seed)
    fused64, views64 = fused_projections(b, n, h, d, dtype=torch.float64)
    gm, pm = global_mask(b, n, gpat), padding_mask(b, n, ppat)

    def six(views):
        return [*views[:3], None, None, None] if shared else views

    ref = oracle.dense_longformer_attention(*views64[:3], window, pm, gm, *six(views64)[3:])
    dout = torch.randn(ref.shape, dtype=torch.float64)
    (grad_ref,) = torch.autograd.grad(ref, fused64, dout)
    results = {"oracle": (ref, grad_ref)}
    for name, run in (
        ("ops", lambda views: _layer_via_module(six(views), window, gm, pm)),
        ("layer", lambda views: _layer_one_op(six(views), window, gm, pm)),
        ("torch", lambda views: longformer_layer(six(views), window, gm, pm, "torch")),
    ):
        fused = fused64.detach().to(dtype).requires_grad_()
        out = run(list(fused.unbind(2)))
        (grad,) = torch.autograd.grad(out, fused, dout.to(dtype))
        assert torch.isfinite(out).all() and torch.isfinite(grad).all(), name
        results[name] = (out, grad)
    return results


def _errors_vs_oracle(results):
    """(output error, per-projection gradient errors) of each run against the oracle's."""
    ref, grad_ref = results["oracle"]
    errors = {}
    for name, (out, grad) in results.items():
        errors[name] = (
            (out.double() - ref).abs().max().item(),
            [(grad[:, :, i].double() - grad_ref[:, :, i]).abs().max().item() for i in range(6)],
        )
    return errors


def _assert_within_twice_torch(errors, name):
    (out_err, grad_errs), (out_err_t, grad_errs_t) = errors[name], errors["torch"]
    assert out_err <= 2 * out_err_t + 1e-6, f"{name}: output error {out_err:.3g} > 2 x {out_err_t:.3g}"
    for proj, err, err_t in zip(SIX, grad_errs, grad_errs_t):
        assert err <= 2 * err_t + 1e-6, f"{name} d{proj}: error {err:.3g} > 2 x torch backend's {err_t:.3g}"


# ----------------------------------------------------------------------------------------------------
# the Python layer on the CPU, through the emulated kernels
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize("gpat", GLOBAL_PATTERNS)
@pytest.mark.parametrize("shape,window", [((2, 37, 2, 16), 5), ((1, 130, 2, 32), 40)], ids=["n37", "n130"])
def test_layer_matches_oracle_emulated(emulated_cuda_backend, shape, window, gpat, dtype):
    results = _run_layers(shape, window, gpat, "tail", dtype)
    errors = _errors_vs_oracle(results)
    _assert_within_twice_torch(errors, "ops")
    _assert_within_twice_torch(errors, "layer")
    # each path runs kernel A's and (with globals) kernel B's forward and backward once; the layer op
    # runs both forwards in one call (attention_layer_fwd_cuda), and both backwards
    kernels = 1 if gpat == "none" else 2
    calls = emulated_cuda_backend.calls
    for mode in ("fwd", "bwd"):
        assert calls.count(mode) == kernels + (1 if gpat == "none" else 0)
        assert calls.count(f"layer_{mode}") == (0 if gpat == "none" else 1)


@pytest.mark.parametrize("shared", [False, True], ids=["separate", "shared"])
@pytest.mark.parametrize("ppat", ["none", "tail", "full"])
@pytest.mark.parametrize("gpat", GLOBAL_PATTERNS)
def test_layer_op_gives_the_composed_ops_bits_emulated(emulated_cuda_backend, gpat, ppat, shared):
    """The layer op (kernel B reading and writing A's tensors at the global rows, A's backward treating them
    as dead, B's dK / dV added to A's in the kernel) gives the output and gradients of the two ops composed
    with a gather and a scatter, bit for bit; except the shared projection's dK and dV, which it rounds once
    (A's 16-bit value plus B's fp32 sum) where autograd adds two rounded halves."""
    results = _run_layers((2, 45, 2, 16), 7, gpat, ppat, torch.bfloat16, shared)
    (out_ops, grad_ops), (out_layer, grad_layer) = results["ops"], results["layer"]
    assert torch.equal(out_layer, out_ops)
    for i, proj in enumerate(SIX):
        if shared and proj in ("k", "v") and gpat != "none":
            torch.testing.assert_close(grad_layer[:, :, i], grad_ops[:, :, i], atol=2e-2, rtol=1e-2)
        else:
            assert torch.equal(grad_layer[:, :, i], grad_ops[:, :, i]), f"d{proj}"
    _assert_within_twice_torch(_errors_vs_oracle(results), "layer")


@pytest.mark.parametrize("shared", [False, True], ids=["separate", "shared"])
@pytest.mark.parametrize("gpat", GLOBAL_PATTERNS)
def test_public_function_runs_the_layer_op_emulated(emulated_cuda_interface, gpat, shared):
    """``lk.longformer_attention(backend="cuda")`` (validation, global indices, key flags, the choice of
    the layer op, G = 0 without global projections) gives the layer op's bits."""
    b, n, h, d = 2, 45, 2, 16
    torch.manual_seed(1)
    base = torch.randn(b, n, 6, h, d).half()
    gm, pm = global_mask(b, n, gpat), padding_mask(b, n, "tail")
    dout = torch.randn(b, n, h, d).half()
    results = []
    for run in (_layer_one_op, lambda views, *args: longformer_layer(views, *args, "cuda")):
        fused = base.clone().requires_grad_()
        views = list(fused.unbind(2))
        if shared:
            views[3:] = [None, None, None]
        out = run(views, 6, gm, pm)
        assert out.grad_fn._forward_cls is cuda.LongformerAttentionFunction  # the layer op, not two ops
        results.append((out, *torch.autograd.grad(out, fused, dout)))
    calls = emulated_cuda_interface.calls
    assert (calls.count("fwd"), calls.count("layer_fwd")) == ((2, 0) if gpat == "none" else (0, 2))
    for x, y in zip(*results):
        assert torch.equal(x, y)


def test_layer_op_contains_nonfinite_rows_emulated(emulated_cuda_backend):
    """A NaN in one key row of the local projection and an inf in one query row of the global one reach only
    the rows that attend them and the gradients that depend on those, through the layer op as through the
    composed ops."""
    b, n, h, d, window = 1, 70, 1, 16, 4
    torch.manual_seed(3)
    base = [torch.randn(b, n, h, d).half() for _ in range(6)]
    base[1][0, 40] = float("nan")  # k row 40 (local): only the band rows 36..44 attend it
    base[3][0, 10] = float("inf")  # q_global row 10: global row 10's query
    gm = torch.zeros(b, n, dtype=torch.bool)
    gm[0, [10, 60]] = True
    dout = torch.randn(b, n, h, d).half()
    results = []
    for run in (_layer_via_module, _layer_one_op):
        views = [x.clone().requires_grad_() for x in base]
        out = run(views, window, gm, None)
        results.append((out, *torch.autograd.grad(out, views, dout)))
    out_layer = results[1][0]
    assert out_layer.isnan().any(-1).any(-1)[0].nonzero().flatten().tolist() == [10, *range(36, 45)]
    for name, x_ops, x_layer in zip(("out", *SIX), *results):
        assert torch.equal(x_layer.isnan(), x_ops.isnan()), name
        assert torch.equal(x_layer.nan_to_num(0.0), x_ops.nan_to_num(0.0)), name


@pytest.mark.parametrize("gpat", GLOBAL_PATTERNS)
@pytest.mark.parametrize("ppat", ["none", "tail", "full"])
def test_key_flags_match_the_aten_version_emulated(emulated_cuda_backend, gpat, ppat):
    """One launch gives masks.key_flags' values: spare -1 slots, an out-of-range slot, padding that
    wins over global, a padding mask that is a strided view."""
    b, n = 3, 70
    gm, pm = global_mask(b, n, gpat), padding_mask(b, n, ppat)
    gi = None if gm is None else lk.global_indices(gm, max_global=n + 2)
    if gi is not None:
        gi[0, -1] = n + 5  # out of range: names nothing
    if pm is not None:
        pm = torch.stack([pm, ~pm], -1)[..., 0]  # a (B, N) view with stride 2
        assert not pm.is_contiguous()
    flags = cuda.key_flags(b, n, torch.device("cpu"), pm, gi)
    assert flags.dtype == torch.int8 and torch.equal(flags, key_flags(b, n, torch.device("cpu"), pm, gi))
    assert "key_flags" in emulated_cuda_backend.calls


def test_strided_layouts_are_read_in_place_emulated(emulated_cuda_backend):
    """A (B, H, N, D) tensor seen as (B, N, H, D) and a transposed upstream gradient give the bits of
    contiguous copies."""
    b, n, h, d, window = 2, 50, 2, 16, 6
    base = torch.randn(3, b, h, n, d).half()
    flags = torch.zeros(b, n, dtype=torch.int8)
    results = []
    for tensors in ([t.transpose(1, 2) for t in base], [t.transpose(1, 2).contiguous() for t in base]):
        q, k, v = (t.detach().requires_grad_() for t in tensors)
        out = cuda.banded_attention(q, k, v, window, flags, None, 0.25)
        dout = torch.randn(b, d, n, h, generator=torch.Generator().manual_seed(1)).half().permute(0, 2, 3, 1)
        grads = torch.autograd.grad(out, (q, k, v), dout)
        results.append((out, *grads))
    for x, y in zip(*results):
        assert torch.equal(x, y)


@pytest.mark.parametrize("entry", ["ops", "layer"])
def test_second_derivatives_are_refused_emulated(emulated_cuda_backend, entry):
    """create_graph=True through the registered ops' autograd and through the layer's Function raises
    (the backward kernels are first-order only) rather than returning gradients without history."""
    b, n, h, d, window = 1, 20, 1, 16, 3
    fused, views = fused_projections(b, n, h, d, dtype=torch.float16)
    gm, pm = global_mask(b, n, "first"), padding_mask(b, n, "tail")
    layer = _layer_via_module if entry == "ops" else _layer_one_op
    out = layer(views, window, gm, pm)
    with pytest.raises(RuntimeError, match="first-order only"):
        torch.autograd.grad(out.float().square().sum(), fused, create_graph=True)


@pytest.mark.parametrize("entry", ["ops", "layer"])
def test_activation_checkpointing_gives_the_same_gradients_emulated(emulated_cuda_backend, entry):
    """Non-reentrant torch.utils.checkpoint (saved tensors unpack once) gives the plain call's bits."""
    from torch.utils.checkpoint import checkpoint

    b, n, h, d, window = 2, 30, 1, 16, 4
    fused, views = fused_projections(b, n, h, d, dtype=torch.float16)
    gm, pm = global_mask(b, n, "scattered"), padding_mask(b, n, "tail")
    layer = _layer_via_module if entry == "ops" else _layer_one_op
    results = []
    for wrap in (False, True):
        out = (
            checkpoint(layer, views, window, gm, pm, use_reentrant=False)
            if wrap
            else layer(views, window, gm, pm)
        )
        dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(3)).half()
        results.append((out, *torch.autograd.grad(out, fused, dout)))
    for x, y in zip(*results):
        assert torch.equal(x, y)


def test_no_global_slots_emulated(emulated_cuda_backend):
    """G = 0: global_attention returns (B, 0, H, D) and zero key gradients."""
    b, n, h, d = 2, 20, 1, 16
    _, (q, k, v, *_) = fused_projections(b, n, h, d, dtype=torch.float16)
    gi = torch.empty(b, 0, dtype=torch.int32)
    flags = key_flags(b, n, q.device, None, gi)
    out = cuda.global_attention(q[:, :0], k, v, gi, flags, 0.25)
    assert out.shape == (b, 0, h, d)
    banded = cuda.banded_attention(q, k, v, 3, flags, gi, 0.25)
    torch.testing.assert_close(
        banded.double(), oracle.dense_banded_attention(q, k, v, 3, flags, scale=0.25), atol=2e-3, rtol=0
    )


@pytest.mark.parametrize(
    "make,error,match",
    [
        (lambda: torch.randn(1, 8, 1, 16), TypeError, "float16 and bfloat16"),
        (lambda: torch.randn(1, 8, 1, 24).half(), ValueError, "head_dim"),
    ],
    ids=["float32", "head-dim-24"],
)
def test_unsupported_inputs_are_refused(make, error, match):
    x = make()
    flags = torch.zeros(1, 8, dtype=torch.int8)
    with pytest.raises(error, match=match):
        cuda.banded_attention(x, x, x, 2, flags, None, 0.25)


def test_host_tensors_are_refused_by_the_compiled_kernels():
    """Without the emulator, host tensors never reach the CUDA kernels."""
    x = torch.randn(1, 8, 1, 16).half()
    with pytest.raises(ValueError, match="needs CUDA tensors, got q on cpu"):
        cuda.banded_attention(x, x, x, 2, torch.zeros(1, 8, dtype=torch.int8), None, 0.25)


def test_auto_prefers_triton_and_refuses_float32_for_cuda():
    assert backends.AUTO_ORDER["cuda"][:2] == ("triton", "cuda")
    ok, why = backends._dtype_ok("cuda", torch.float32)
    assert not ok and "triton" in why
    assert backends._dtype_ok("cuda", torch.bfloat16)[0]


# ----------------------------------------------------------------------------------------------------
# on a GPU: the compiled kernels
# ----------------------------------------------------------------------------------------------------

needs_cuda_backend = pytest.mark.skipif(
    not lk.available_backends()["cuda"].available, reason=lk.available_backends()["cuda"].reason
)


@pytest.mark.gpu
@needs_cuda_backend
@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize("d", cuda.SUPPORTED_HEAD_DIMS)
def test_gpu_every_head_dim(dtype, d):
    errors = layer_errors_vs_fp64("cuda", 2, 1000, 2, d, 100, 3, dtype)
    (out_err, grad_err), (out_t, grad_t) = errors["cuda"], errors["torch"]
    assert out_err <= 2 * out_t + 1e-5 and grad_err <= 2 * grad_t + 1e-5, errors


@pytest.mark.gpu
@needs_cuda_backend
@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize(
    "n,window,n_global", [(16384, 512, 1), (8192, 256, 64), (4097, 0, 0), (3000, 4000, 5)]
)
def test_gpu_long_sequences(n, window, n_global, dtype):
    errors = layer_errors_vs_fp64("cuda", 1, n, 2, 64, window, n_global, dtype)
    (out_err, grad_err), (out_t, grad_t) = errors["cuda"], errors["torch"]
    assert out_err <= 2 * out_t + 1e-5 and grad_err <= 2 * grad_t + 1e-5, errors


@pytest.mark.gpu
@needs_cuda_backend
def test_gpu_unaligned_views_give_the_bits_of_contiguous_inputs():
    """Rows that do not start 16-byte aligned are read from an aligned copy (the kernels refuse them)."""
    b, n, h, d, window = 2, 700, 2, 64, 100
    fused = torch.randn(b, n, 3, h, d + 1, device="cuda", dtype=torch.bfloat16)
    q, k, v = fused[..., 1:].unbind(2)
    dense = [t.contiguous().requires_grad_(True) for t in (q, k, v)]
    views = [t.detach().requires_grad_(True) for t in (q, k, v)]
    outs = [lk.banded_attention(*x, window, backend="cuda") for x in (views, dense)]
    dout = torch.randn_like(outs[0])
    grads = [torch.autograd.grad(o, x, dout) for o, x in zip(outs, (views, dense))]
    assert torch.equal(outs[0], outs[1])
    for g_view, g_dense in zip(*grads):
        assert torch.equal(g_view, g_dense)


@pytest.mark.gpu
@needs_cuda_backend
def test_gpu_backward_is_deterministic():
    b, n, h, d = 1, 4096, 4, 64
    fused, views = fused_projections(b, n, h, d, dtype=torch.bfloat16, device="cuda")
    gm = torch.zeros(b, n, dtype=torch.bool, device="cuda")
    gm[:, :3] = True
    grads = []
    for _ in range(2):
        out = longformer_layer(views, 256, gm, None, "cuda")
        grads.append(torch.autograd.grad(out, fused, torch.ones_like(out))[0])
    assert torch.equal(grads[0], grads[1])


@pytest.mark.gpu
@needs_cuda_backend
@pytest.mark.parametrize("shared", [False, True], ids=["separate", "shared"])
def test_gpu_layer_op_gives_the_composed_ops_bits(shared):
    """On the GPU too, the layer op gives the bits of the two ops composed with a gather and a scatter
    (the shared projection's dK / dV within one rounding)."""
    b, n, h, d = 2, 3000, 2, 64
    torch.manual_seed(0)
    base = torch.randn(b, n, 6, h, d, device="cuda", dtype=torch.bfloat16)
    gm, pm = spread_masks(b, n, 9, "cuda")
    dout = torch.randn(b, n, h, d, device="cuda", dtype=torch.bfloat16)
    results = []
    for run in (_layer_via_module, _layer_one_op):
        fused = base.clone().requires_grad_()
        views = list(fused.unbind(2))
        if shared:
            views[3:] = [None, None, None]
        out = run(views, 200, gm, pm)
        results.append((out, torch.autograd.grad(out, fused, dout)[0]))
    (out_ops, grad_ops), (out_layer, grad_layer) = results
    assert torch.equal(out_layer, out_ops)
    exact = [0, 3, 4, 5] if shared else list(range(6))
    assert torch.equal(grad_layer[:, :, exact], grad_ops[:, :, exact])
    torch.testing.assert_close(grad_layer, grad_ops, atol=2e-2, rtol=1e-2)


@pytest.mark.gpu
@needs_cuda_backend
def test_gpu_layer_names_the_device_to_the_extension(monkeypatch):
    """The multi-GPU path of the launches (the device made current in the extension's own runtime too)
    gives the same bits as the single-GPU one."""
    _, views = fused_projections(1, 500, 2, 64, dtype=torch.float16, device="cuda")
    gm, pm = spread_masks(1, 500, 3, "cuda")
    single = longformer_layer(views, 40, gm, pm, "cuda")
    monkeypatch.setattr(_compiled, "several_gpus", lambda: True)
    assert torch.equal(longformer_layer(views, 40, gm, pm, "cuda"), single)


@pytest.mark.gpu
@needs_cuda_backend
def test_gpu_float32_points_to_triton():
    x = torch.randn(1, 64, 1, 64, device="cuda")
    with pytest.raises(TypeError, match="triton"):
        lk.banded_attention(x, x, x, 4, backend="cuda")


@pytest.mark.gpu
@needs_cuda_backend
@pytest.mark.parametrize("d", cuda.SUPPORTED_HEAD_DIMS)
def test_gpu_sanitizer_case(d):
    """Every kernel (both forwards, in the layer's one launch, the split combine, delta, dQ, the three dK/dV
    sweeps, both reductions) on a small case, for compute-sanitizer (benchmarks/gpu_check.sh cuda): 600 keys
    split kernel B's sweep."""
    b, n, h = 1, 600, 1
    fused, views = fused_projections(b, n, h, d, dtype=torch.float16, device="cuda")
    gm = torch.zeros(b, n, dtype=torch.bool, device="cuda")
    gm[:, [0, 300, n - 1]] = True
    pm = torch.zeros(b, n, dtype=torch.bool, device="cuda")
    pm[:, n - 20 :] = True
    out = longformer_layer(views, 70, gm, pm, "cuda")
    (grad,) = torch.autograd.grad(out, fused, torch.randn_like(out))
    torch.cuda.synchronize()
    assert torch.isfinite(out).all() and torch.isfinite(grad).all()


@pytest.mark.gpu
@needs_cuda_backend
@pytest.mark.parametrize("shared", [False, True], ids=["separate", "shared"])
@pytest.mark.parametrize("g", [1, 64])
@pytest.mark.parametrize("d", [64, 128])
def test_gpu_layer_in_one_launch_gives_the_two_launches_bits(monkeypatch, d, g, shared):
    """The layer with kernel B's forward key chunks inside kernel A's launch and B's dQ chunks inside A's
    dQ launch (the defaults) gives the output and gradients of B in launches of its own
    (LED_KERNELS_FUSED_FORWARD=0, LED_KERNELS_FUSED_BACKWARD=0), bit for bit, with NaN-poisoned memory."""
    b, n, h = 1, 4099, 4
    fused, views = fused_projections(b, n, h, d, dtype=torch.bfloat16, device="cuda")
    if shared:
        views[3:] = [None, None, None]
    gm = torch.zeros(b, n, dtype=torch.bool, device="cuda")
    gm[:, torch.randperm(n, device="cuda")[:g]] = True
    pm = torch.zeros(b, n, dtype=torch.bool, device="cuda")
    pm[:, n - 7 :] = True
    dout = torch.randn(b, n, h, d, dtype=torch.bfloat16, device="cuda")
    results = []
    for on in ("1", "0"):
        monkeypatch.setenv("LED_KERNELS_FUSED_FORWARD", on)
        monkeypatch.setenv("LED_KERNELS_FUSED_BACKWARD", on)
        torch.cuda.empty_cache()
        # (freed at once: the next allocations reuse its NaN bytes)
        torch.empty(8 * b * n * h * d, device="cuda").fill_(float("nan"))
        out = longformer_layer(views, 257, gm, pm, "cuda")
        (grad,) = torch.autograd.grad(out, fused, dout)
        results.append((out, grad))
    assert torch.isfinite(results[0][0]).all() and torch.isfinite(results[0][1]).all()  # (padded rows: 0)
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])


def _wgmma_runs() -> bool:
    """The wgmma kernels run here: an sm_90 GPU and sm_90a code in the extension."""
    from benchmarks.providers import wgmma_runs

    available = torch.cuda.is_available() and lk.available_backends()["cuda"].available
    return available and wgmma_runs(torch.device("cuda"))


needs_wgmma = pytest.mark.skipif(not _wgmma_runs(), reason="needs an sm_90 GPU and sm_90a code")


@pytest.mark.gpu
@needs_wgmma
@pytest.mark.parametrize("variant", ["wgmma", "wgmma16", "wgmma16s", "wgmma2g", "wgmma16o"])
@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize(
    "n,d,window,n_global",
    [(1000, 64, 100, 3), (1000, 128, 100, 3), (16384, 64, 512, 1), (3000, 128, 4000, 5)],
)
def test_gpu_wgmma_forward(monkeypatch, n, d, window, n_global, dtype, variant):
    """Kernel A's wgmma variants (LED_KERNELS_CUDA_FWD=wgmma, wgmma16, wgmma16s, wgmma2g, wgmma16o) against
    the fp64 oracle, and within a few roundings of the mma.sync one (the same softmax; only the products'
    accumulation order differs). wgmma16 is the default here: the unset variable gives its bits."""
    monkeypatch.setenv("LED_KERNELS_CUDA_FWD", variant)
    errors = layer_errors_vs_fp64("cuda", 1, n, 2, d, window, n_global, dtype)
    (out_err, grad_err), (out_t, grad_t) = errors["cuda"], errors["torch"]
    assert out_err <= 2 * out_t + 1e-5 and grad_err <= 2 * grad_t + 1e-5, errors
    _, views = fused_projections(1, n, 2, d, dtype=dtype, device="cuda")
    gm, pm = spread_masks(1, n, n_global, "cuda")
    wgmma = longformer_layer(views, window, gm, pm, "cuda")
    monkeypatch.setenv("LED_KERNELS_CUDA_FWD", "rows16")
    torch.testing.assert_close(wgmma, longformer_layer(views, window, gm, pm, "cuda"), atol=2e-2, rtol=2e-2)
    if variant == "wgmma16":
        monkeypatch.delenv("LED_KERNELS_CUDA_FWD")
        assert torch.equal(longformer_layer(views, window, gm, pm, "cuda"), wgmma)


@pytest.mark.gpu
@pytest.mark.parametrize("forward", [None, "wgmma2g", "wgmma16o"], ids=["default", "wgmma2g", "wgmma16o"])
@pytest.mark.parametrize("dtype", LOW, ids=str)
def test_gpu_lean_runs_change_no_bit(monkeypatch, dtype, forward):
    """The kernels' lean runs (the band's interior without positions, checks or mask) give bitwise the
    outputs and gradients of the checked walk (LED_KERNELS_CUDA_LEAN=0), with global tokens and a
    padded tail; with the default kernels of the GPU (or those the environment names), wgmma2g and
    wgmma16o (whose lean tiles overlap the softmax with the products)."""
    if forward is not None:
        if not _wgmma_runs():
            pytest.skip("needs an sm_90 GPU and sm_90a code")
        monkeypatch.setenv("LED_KERNELS_CUDA_FWD", forward)
    fused, views = fused_projections(2, 4100, 2, 64, dtype=dtype, device="cuda")
    gm, pm = spread_masks(2, 4100, 3, "cuda")
    dout = torch.randn(2, 4100, 2, 64, dtype=dtype, device="cuda")
    runs = []
    for lean in ("1", "0"):
        monkeypatch.setenv("LED_KERNELS_CUDA_LEAN", lean)
        out = longformer_layer(views, 512, gm, pm, "cuda")
        (grad,) = torch.autograd.grad(out, fused, dout)
        runs.append((out, grad))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


WGMMA_BWD_CASES = [
    (kernels, *shape)
    for kernels in ("DQ", "DKDV", "DQ DKDV", "DQ=wgmmas")
    for shape in ((1000, 64, 100, 3), (3000, 128, 4000, 5))
] + [("DQ DKDV", 16384, 64, 512, 1), ("DQ=wgmmas DKDV", 16384, 64, 512, 1)]


@pytest.mark.gpu
@needs_wgmma
@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize("kernels,n,d,window,n_global", WGMMA_BWD_CASES)
def test_gpu_wgmma_backward(monkeypatch, kernels, n, d, window, n_global, dtype):
    """The backward kernels' wgmma variants (LED_KERNELS_CUDA_DQ / LED_KERNELS_CUDA_DKDV=wgmma, or
    DQ=wgmmas; kernel A's and kernel B's) against the fp64 oracle; the other kernels are mma's."""
    monkeypatch.setenv("LED_KERNELS_CUDA_DQ", "mma")
    monkeypatch.setenv("LED_KERNELS_CUDA_DKDV", "mma")
    for setting in kernels.split():
        name, _, value = setting.partition("=")
        monkeypatch.setenv(f"LED_KERNELS_CUDA_{name}", value or "wgmma")
    errors = layer_errors_vs_fp64("cuda", 1, n, 2, d, window, n_global, dtype)
    (out_err, grad_err), (out_t, grad_t) = errors["cuda"], errors["torch"]
    assert out_err <= 2 * out_t + 1e-5 and grad_err <= 2 * grad_t + 1e-5, errors


@pytest.mark.gpu
@needs_wgmma
@pytest.mark.parametrize(
    "forward,dq", [("wgmma", "wgmma"), ("wgmma16s", "wgmmas"), ("wgmma2g", "wgmma"), ("wgmma16o", "wgmma")]
)
@pytest.mark.parametrize("d", [64, 128])
def test_gpu_sanitizer_case_wgmma(monkeypatch, d, forward, dq):
    """test_gpu_sanitizer_case with the wgmma forward, dQ and dK/dV kernels (for compute-sanitizer)."""
    monkeypatch.setenv("LED_KERNELS_CUDA_FWD", forward)
    monkeypatch.setenv("LED_KERNELS_CUDA_DQ", dq)
    monkeypatch.setenv("LED_KERNELS_CUDA_DKDV", "wgmma")
    test_gpu_sanitizer_case(d)


def test_benchmark_provider_skips_float32(monkeypatch):
    """The benchmark harness skips float32 cases for the cuda provider instead of failing on them."""
    from benchmarks.cases import Case
    from benchmarks.providers import get_provider
    from led_kernels.backends import BackendStatus

    monkeypatch.setattr(lk, "available_backends", lambda: {"cuda": BackendStatus("cuda", True, "pretend")})
    provider = get_provider("cuda")
    case = dict(batch=1, seqlen=64, heads=1, head_dim=64, window=8, globals=1)
    assert "float16 and bfloat16" in provider.skip_reason(Case(**case, dtype="float32"), torch.device("cuda"))
    assert provider.skip_reason(Case(**case, dtype="bfloat16"), torch.device("cuda")) is None
