"""The compiled extension led_kernels._C: build flags, runtime queries and the delta kernel.

Self-contained on purpose (no fixtures from conftest.py): it only needs torch and a built
extension, and checks ``attention_delta`` against the pure-torch formula.
"""

from __future__ import annotations

import os

import pytest
import torch

from led_kernels import _extension as ext

_REAL_EMPTY = torch.empty  # taken at import, before any test-wide monkeypatching

requires_ext = pytest.mark.skipif(not ext.is_built(), reason=f"extension not built: {ext.build_error()}")
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def reference_delta(out: torch.Tensor, grad_out: torch.Tensor) -> torch.Tensor:
    return (grad_out.float() * out.float()).sum(-1).transpose(1, 2)


# Inputs are widened exactly, so any dtype gets fp32 tolerances: only the summation order differs.
TOL = {"rtol": 1e-5, "atol": 1e-5}


@pytest.fixture
def nan_poison(monkeypatch):
    """torch.empty returns NaN-filled tensors, so an unwritten output element shows up as NaN."""

    def poisoned(*args, **kwargs):
        t = _REAL_EMPTY(*args, **kwargs)
        if t.is_floating_point():
            t.fill_(float("nan"))
        return t

    monkeypatch.setattr(torch, "empty", poisoned)


def delta(out, grad_out):
    from led_kernels.ops.delta import attention_delta

    return attention_delta(out, grad_out)


# --------------------------------------------------------------------------------------------
# The module itself
# --------------------------------------------------------------------------------------------


def test_extension_imports():
    assert ext.is_built(), (
        f"led_kernels._C did not import: {ext.build_error()}. "
        "Build it with `pip install --no-build-isolation -e .` (or `pip install .`)."
    )
    import led_kernels._C as C

    assert ext.C is C
    assert ext.build_error() is None
    assert isinstance(C.has_cuda(), bool)
    assert ext.cuda_compiled() == C.has_cuda()
    info = C.build_info()
    assert info["cuda"] == C.has_cuda()
    assert C.dtype_codes() == {"float32": 0, "float16": 1, "bfloat16": 2}
    assert ext.dtype_code(torch.bfloat16) == 2
    with pytest.raises(TypeError, match="not supported"):
        ext.dtype_code(torch.float64)


@requires_ext
def test_has_cuda_matches_build():
    """CUDA is compiled in iff the build asked for it (ON, or AUTO and nvcc found).

    Checked against what the build recorded; against this machine's nvcc only when the test run
    says how the extension was built (LED_KERNELS_EXPECT_CUDA=0/1), since a wheel may come from
    another machine.
    """
    import led_kernels._C as C

    info = C.build_info()
    mode = info["cuda_mode"].upper()
    assert mode in ("AUTO", "ON", "OFF", "TRUE", "FALSE", "1", "0", "YES", "NO"), mode
    if mode in ("OFF", "FALSE", "0", "NO"):
        assert not C.has_cuda()
    elif mode != "AUTO":
        assert C.has_cuda()
    assert bool(C.cuda_archs()) == C.has_cuda()
    assert bool(info["cuda_compiler_version"]) == C.has_cuda()
    if C.has_cuda():
        assert all(a.strip() for a in C.cuda_archs().split(";"))

    expected = os.environ.get("LED_KERNELS_EXPECT_CUDA")
    if expected is None:
        pytest.skip("set LED_KERNELS_EXPECT_CUDA=0/1 to also check the build against this machine")
    assert C.has_cuda() == (expected == "1")


@requires_ext
def test_cuda_device_count_never_raises():
    import led_kernels._C as C

    n = C.cuda_device_count()
    assert isinstance(n, int) and n >= 0
    assert isinstance(C.cuda_status(), str)
    if not torch.cuda.is_available():
        assert n == 0
        ok, why = ext.cuda_usable()
        assert not ok and why


@requires_ext
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error path")
def test_cuda_kernel_without_gpu_raises_clearly():
    import led_kernels._C as C

    if C.cuda_device_count() > 0:
        pytest.skip("the extension sees a GPU (torch does not): the bogus pointers below would be used")
    # Bogus pointers are fine: it must fail before touching them (no CUDA build, or no driver).
    with pytest.raises(RuntimeError, match="CUDA|cuda"):
        C.delta_cuda(16, 16, 16, 1, 1, 1, 1, (1, 1, 1), (1, 1, 1), 0, 0)


@requires_ext
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error path")
def test_cuda_set_device_without_gpu_raises_clearly():
    import led_kernels._C as C

    if C.cuda_device_count() > 0:
        pytest.skip("the extension sees a GPU (torch does not)")
    with pytest.raises(RuntimeError, match="cudaSetDevice|CUDA|cuda"):
        C.cuda_set_device(0)


@pytest.mark.gpu
@requires_ext
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_set_device_on_a_gpu():
    """The device the cuda backend names to the extension's runtime: a present one is accepted (also when
    already current), a missing one is refused with CUDA's message."""
    import led_kernels._C as C

    if not C.has_cuda():
        pytest.skip("built without CUDA")
    C.cuda_set_device(torch.cuda.current_device())
    C.cuda_set_device(torch.cuda.current_device())
    with pytest.raises(RuntimeError, match="cudaSetDevice"):
        C.cuda_set_device(C.cuda_device_count())
    C.cuda_set_device(torch.cuda.current_device())


def test_missing_extension_stub():
    stub = ext._MissingExtension("ImportError: no module named led_kernels._C")
    with pytest.raises(RuntimeError, match="pip install") as info:
        stub.delta_cpu  # noqa: B018
    assert "LED_KERNELS_BUILD_CUDA=OFF" in str(info.value)
    assert "no module named led_kernels._C" in str(info.value)
    assert not hasattr(stub, "__wrapped__")  # introspection still sees AttributeError


# --------------------------------------------------------------------------------------------
# attention_delta on CPU
# --------------------------------------------------------------------------------------------


@requires_ext
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(2, 37, 3, 24), (2, 37, 3, 1), (1, 5, 2, 64), (3, 1, 1, 129)], ids=str)
def test_delta_cpu_matches_formula(dtype, shape, nan_poison):
    o = torch.randn(shape).to(dtype)
    g = torch.randn(shape).to(dtype)
    d = delta(o, g)
    B, N, H, _ = shape
    assert d.shape == (B, H, N) and d.dtype == torch.float32 and d.is_contiguous()
    assert not d.isnan().any()
    torch.testing.assert_close(d, reference_delta(o, g), **TOL)


@requires_ext
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_delta_cpu_strided_views_read_in_place(dtype, nan_poison):
    B, N, H, D = 2, 37, 3, 24
    fused = torch.randn(B, N, 3, H, D).to(dtype)  # a fused qkv-style projection
    o = fused[:, :, 1]  # (B, N, H, D), strides (N*3*H*D, 3*H*D, D, 1)
    g = torch.randn(N, B, H, D).to(dtype).transpose(0, 1)  # transposed batch
    assert not o.is_contiguous() and not g.is_contiguous()
    d = delta(o, g)
    assert not d.isnan().any()
    torch.testing.assert_close(d, reference_delta(o, g), **TOL)


@requires_ext
def test_delta_cpu_special_values_fp16_bf16():
    # Exact widening of subnormals, signed zeros and extremes (fp16 max 65504, bf16 large values).
    vals16 = torch.tensor([6e-8, -6e-8, 1e-5, 0.0, -0.0, 65504.0, -2.0, 0.333], dtype=torch.float16)
    vals_bf = torch.tensor([1e-38, -3e38, 0.0, -0.0, 1.5, 7.0e-3, 123.0, -1.0], dtype=torch.bfloat16)
    for vals in (vals16, vals_bf):
        o = vals.view(1, 1, 1, -1).repeat(1, 3, 2, 1)
        g = torch.ones_like(o)
        torch.testing.assert_close(delta(o, g), reference_delta(o, g), rtol=1e-6, atol=0)
        # elementwise: one element per row isolates the conversion from the summation
        o1 = vals.view(1, -1, 1, 1)
        torch.testing.assert_close(delta(o1, torch.ones_like(o1)), o1.float().view(1, 1, -1), rtol=0, atol=0)


@requires_ext
def test_delta_cpu_nonfinite_propagates():
    o = torch.ones(1, 2, 1, 4, dtype=torch.float16)
    o[0, 0, 0, 1] = float("inf")
    o[0, 1, 0, 2] = float("nan")
    d = delta(o, torch.ones_like(o))
    assert d[0, 0, 0] == float("inf") and d[0, 0, 1].isnan()


@requires_ext
@pytest.mark.parametrize("shape", [(0, 4, 2, 8), (2, 0, 2, 8), (2, 4, 0, 8), (2, 4, 2, 0)], ids=str)
def test_delta_cpu_empty(shape, nan_poison):
    o = torch.randn(shape)
    d = delta(o, torch.randn(shape))
    B, N, H, _ = shape
    assert d.shape == (B, H, N)
    assert (d == 0).all()  # D == 0: empty sums are 0 (vacuous for the others)


@requires_ext
def test_delta_cpu_large_parallel_and_threads():
    # Large enough to take the OpenMP path; also with torch limited to one thread.
    o = torch.randn(2, 300, 4, 64, dtype=torch.bfloat16)
    g = torch.randn_like(o)
    ref = reference_delta(o, g)
    torch.testing.assert_close(delta(o, g), ref, rtol=1e-5, atol=1e-4)
    prev = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        torch.testing.assert_close(delta(o, g), ref, rtol=1e-5, atol=1e-4)
    finally:
        torch.set_num_threads(prev)


def _bad_input_cases():
    x = torch.randn(2, 5, 3, 8)
    return [
        ("not_tensor", lambda: (x.numpy(), x), TypeError, "out"),
        ("3d", lambda: (x[0], x[0]), ValueError, "4-D"),
        ("float64", lambda: (x.double(), x.double()), TypeError, "float32"),
        ("int", lambda: (x.int(), x.int()), TypeError, "out"),
        ("shape", lambda: (x, x[:, :4]), ValueError, "grad_out"),
        ("dtype", lambda: (x, x.half()), TypeError, "grad_out"),
        ("last_stride", lambda: (x, x.transpose(2, 3).contiguous().transpose(2, 3)), ValueError, "grad_out"),
        ("last_stride_out", lambda: (x[..., ::2], x[..., ::2].contiguous()), ValueError, "out"),
        ("meta_device", lambda: (x.to("meta"), x.to("meta")), ValueError, "device"),
    ]


@pytest.mark.parametrize("case", _bad_input_cases(), ids=lambda c: c[0])
def test_delta_bad_inputs(case):
    _, make, exc, msg = case
    o, g = make()
    with pytest.raises(exc, match=msg):
        delta(o, g)


@requires_ext
def test_delta_bindings_reject_bad_dtype_code():
    import led_kernels._C as C

    o = torch.randn(1, 1, 1, 4)
    d = torch.empty(1, 1, 1)
    with pytest.raises(ValueError, match="dtype code"):
        C.delta_cpu(o.data_ptr(), o.data_ptr(), d.data_ptr(), 1, 1, 1, 4, (4, 4, 4), (4, 4, 4), 7)
    with pytest.raises(ValueError, match="non-negative"):
        C.delta_cpu(o.data_ptr(), o.data_ptr(), d.data_ptr(), 1, -1, 1, 4, (4, 4, 4), (4, 4, 4), 0)


@requires_ext
def test_delta_registered_op_and_opcheck():
    o = torch.randn(2, 7, 3, 16)
    g = torch.randn(2, 7, 3, 16)
    torch.testing.assert_close(torch.ops.led_kernels.attention_delta(o, g), reference_delta(o, g))
    if hasattr(torch.library, "opcheck"):
        torch.library.opcheck(
            torch.ops.led_kernels.attention_delta.default,
            (o, g),
            test_utils=("test_schema", "test_faketensor"),
        )


@requires_ext
def test_delta_torch_compile_fullgraph_cpu(monkeypatch):
    if not hasattr(torch, "compile") or not torch._dynamo.is_dynamo_supported():
        pytest.skip("torch.compile unavailable")
    monkeypatch.setattr(torch, "empty", _REAL_EMPTY)  # trace with the real allocator
    from led_kernels.ops.delta import attention_delta

    def f(o, g):
        return attention_delta(o * 2.0, g) + 1.0

    # aot_eager keeps this fast (no Inductor codegen) while still tracing the op through Dynamo
    # with no graph break and through AOTAutograd with its fake implementation.
    torch._dynamo.reset()
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    o = torch.randn(2, 9, 3, 8, dtype=torch.bfloat16)
    g = torch.randn(2, 9, 3, 8, dtype=torch.bfloat16)
    torch.testing.assert_close(compiled(o, g), reference_delta(o * 2.0, g) + 1.0, rtol=1e-5, atol=1e-4)


# --------------------------------------------------------------------------------------------
# attention_delta on CUDA
# --------------------------------------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@requires_ext
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_delta_cuda_matches_formula(dtype, nan_poison):
    ok, why = ext.cuda_usable()
    if not ok:
        pytest.fail(f"a GPU is present but the extension's CUDA kernels cannot run: {why}")
    dev = torch.device("cuda")
    cases = []
    shapes = [
        (2, 37, 3, 24),
        (2, 37, 3, 1),
        (1, 129, 4, 64),
        (2, 1000, 12, 64),
        (1, 17, 2, 128),
        (1, 3, 1, 257),
    ]
    for shape in shapes:
        cases.append((torch.randn(shape, device=dev).to(dtype), torch.randn(shape, device=dev).to(dtype)))
    B, N, H, D = 2, 37, 3, 24
    fused = torch.randn(B, N, 3, H, D, device=dev).to(dtype)
    cases.append((fused[:, :, 1], torch.randn(N, B, H, D, device=dev).to(dtype).transpose(0, 1)))
    base = torch.randn(2 * 37 * 3 * 24 + 1, device=dev).to(dtype)  # misaligned: no vector loads
    cases.append((base[1:].view(2, 37, 3, 24), base[:-1].view(2, 37, 3, 24)))
    for o, g in cases:
        d = delta(o, g)
        assert d.device == o.device and d.shape == (o.shape[0], o.shape[2], o.shape[1])
        assert not d.isnan().any()
        torch.testing.assert_close(d, reference_delta(o, g), rtol=1e-5, atol=1e-4)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@requires_ext
def test_delta_cuda_non_default_stream_and_compile(monkeypatch):
    monkeypatch.setattr(torch, "empty", _REAL_EMPTY)  # Inductor must see the real allocator
    dev = torch.device("cuda")
    o = torch.randn(4, 512, 8, 64, device=dev, dtype=torch.bfloat16)
    g = torch.randn_like(o)
    ref = reference_delta(o, g)
    side = torch.cuda.Stream(device=dev)
    side.wait_stream(torch.cuda.current_stream(dev))
    with torch.cuda.stream(side):
        d = delta(o, g)
    torch.cuda.current_stream(dev).wait_stream(side)
    torch.cuda.synchronize(dev)
    torch.testing.assert_close(d, ref, rtol=1e-5, atol=1e-4)

    compiled = torch.compile(lambda a, b: delta(a, b) * 2.0, fullgraph=True)
    torch.testing.assert_close(compiled(o, g), ref * 2.0, rtol=1e-5, atol=1e-4)
