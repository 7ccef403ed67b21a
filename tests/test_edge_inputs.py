"""Bad and edge inputs on every backend that runs on CPU (torch, cpu, triton through its interpreter).

- Bad inputs: a clear ``ValueError``/``TypeError`` naming the argument (ranks, shapes, dtypes, devices
  including a ``meta`` tensor among CPU ones, non-bool masks, sparse or lazily negated tensors,
  windows that are negative, floats, bools or non-integer tensors, scales past float32 (negative ones
  on triton), global indices outside [-1, N)), unknown backends, and a ``RuntimeError`` naming an
  unavailable backend. Windows past N (past int64 too) are dense; numpy scalars are accepted.
  tests/test_interface.py checks the default backend; here every case runs with each backend named
  explicitly, plus the cases it lacks.
- Global indices outside [-1, N) are rejected where the check costs no host synchronisation (CPU
  tensors, eager). Inside a compiled graph the values are not read on the host; there every backend
  treats such an index as -1 (no out-of-bounds read, the same result), which is tested too.
- Edge values against the dense fp64 oracle, outputs and gradients, never NaN: fully padded batch
  elements, w = 0, w >= N, every token global, N = 1, float16 logits near 1e4, float16 products
  q.k past 65504 whose scaled scores fit, and scale = 0.
- NaN containment: a NaN row in q, k, v, q_global, k_global or v_global (a local, global or padded
  position, and row 0, which the gather of unused global slots reads) changes exactly the outputs
  that attend it (which come out NaN, never a silent 0) and the gradients that depend on those;
  everything else is bitwise what it is without the NaN. The upstream gradient is NaN on the NaN
  output rows, as a loss that saw them would make it.
- Determinism: reruns of the backward are bitwise equal on every backend (the cpu backend also across
  thread counts and in float16); tests/ops/test_cpu.py, test_reference.py and test_triton.py check
  float32 reruns of each backend's layer.
"""

from __future__ import annotations

import numpy as np
import oracle
import pytest
import torch
from cases import fused_projections, global_mask, padding_mask

import led_kernels as lk
from led_kernels import backends
from led_kernels.masks import GLOBAL, LOCAL, PADDING, gather_rows

BACKENDS = ("torch", "cpu", "triton")
SIX = ("q", "k", "v", "q_global", "k_global", "v_global")


@pytest.fixture(params=BACKENDS)
def backend(request):
    status = lk.available_backends()[request.param]
    if not status.available:
        pytest.skip(status.reason)
    return request.param


def _qkv(b=1, n=10, h=2, d=16, dtype=torch.float32):
    return [torch.randn(b, n, h, d, dtype=dtype) for _ in range(3)]


# ----------------------------------------------------------------------------------------------------
# bad inputs
# ----------------------------------------------------------------------------------------------------


def _bad_calls():
    """(id, exception, message regex, call(q, k, v, backend)); q, k, v are (1, 10, 2, 16) float32."""
    gm = torch.zeros(1, 10, dtype=torch.bool)
    gm[0, 0] = True

    def banded(q, k, v, be, window=2, **kw):
        return lk.banded_attention(q, k, v, window, backend=be, **kw)

    def layer(q, k, v, be, window=2, **kw):
        return lk.longformer_attention(q, k, v, window, backend=be, **kw)

    def glob(q, k, v, be, gi, **kw):
        return lk.global_attention(q[:, : gi.shape[1]], k, v, gi, backend=be, **kw)

    ok_gi = torch.tensor([[0, -1]], dtype=torch.int32)
    return [
        # ranks and shapes
        ("q-3d", ValueError, "q must be 4-D", lambda q, k, v, be: banded(q[0], k, v, be)),
        ("v-5d", ValueError, "v must be 4-D", lambda q, k, v, be: banded(q, k, v[None], be)),
        ("k-shorter", ValueError, "k has shape", lambda q, k, v, be: banded(q, k[:, :5], v, be)),
        ("v-heads", ValueError, "v has shape", lambda q, k, v, be: banded(q, k, v[:, :, :1], be)),
        (
            "head-dim-0",
            ValueError,
            "head_dim 0",
            lambda q, k, v, be: banded(q[..., :0], k[..., :0], v[..., :0], be),
        ),
        (
            "kg-shape",
            ValueError,
            "k_global has shape",
            lambda q, k, v, be: layer(q, k, v, be, k_global=k[:, :4]),
        ),
        (
            "qg-rows",
            ValueError,
            "global_idx has 2 slots",
            lambda q, k, v, be: glob(q[:, :1], k, v, be, ok_gi[:, :2]),
        ),
        (
            "gi-batch",
            ValueError,
            "global_idx must have shape",
            lambda q, k, v, be: banded(q, k, v, be, global_idx=ok_gi.expand(2, 2)),
        ),
        (
            "gi-rank",
            ValueError,
            "global_idx must be 2-D",
            lambda q, k, v, be: banded(q, k, v, be, global_idx=ok_gi[0]),
        ),
        # dtypes
        (
            "q-int",
            TypeError,
            "q must be float16",
            lambda q, k, v, be: banded(q.long(), k.long(), v.long(), be),
        ),
        ("v-dtype", TypeError, "v has dtype", lambda q, k, v, be: banded(q, k, v.half(), be)),
        (
            "vg-dtype",
            TypeError,
            "v_global has dtype",
            lambda q, k, v, be: layer(q, k, v, be, v_global=v.double()),
        ),
        ("q-numpy", TypeError, "q must be a torch.Tensor", lambda q, k, v, be: banded(q.numpy(), k, v, be)),
        (
            "gi-float",
            TypeError,
            "global_idx must be int32 or int64",
            lambda q, k, v, be: banded(q, k, v, be, global_idx=ok_gi.float()),
        ),
        # devices: a meta tensor among CPU ones
        ("k-meta", ValueError, "k is on meta", lambda q, k, v, be: banded(q, k.to("meta"), v, be)),
        (
            "qg-meta",
            ValueError,
            "q_global is on meta",
            lambda q, k, v, be: layer(q, k, v, be, global_mask=gm, q_global=q.to("meta")),
        ),
        (
            "mask-meta",
            ValueError,
            "key_padding_mask is on meta",
            lambda q, k, v, be: banded(q, k, v, be, key_padding_mask=gm.to("meta")),
        ),
        (
            "gi-meta",
            ValueError,
            "global_idx is on meta",
            lambda q, k, v, be: banded(q, k, v, be, global_idx=ok_gi.to("meta")),
        ),
        # layout
        (
            "k-strided-d",
            ValueError,
            "contiguous last dimension",
            lambda q, k, v, be: banded(q, k.transpose(2, 3).contiguous().transpose(2, 3), v, be),
        ),
        # masks
        (
            "pad-float",
            TypeError,
            "key_padding_mask must be a bool tensor",
            lambda q, k, v, be: banded(q, k, v, be, key_padding_mask=gm.float()),
        ),
        (
            "glob-int",
            TypeError,
            "global_mask must be a bool tensor",
            lambda q, k, v, be: layer(q, k, v, be, global_mask=gm.int()),
        ),
        (
            "pad-shape",
            ValueError,
            "key_padding_mask must have shape",
            lambda q, k, v, be: banded(q, k, v, be, key_padding_mask=gm[:, :9]),
        ),
        (
            "glob-3d",
            ValueError,
            "global_mask must be 2-D",
            lambda q, k, v, be: layer(q, k, v, be, global_mask=gm[None]),
        ),
        # windows
        ("w-negative", ValueError, "window must be >= 0", lambda q, k, v, be: banded(q, k, v, be, window=-1)),
        ("w-float", TypeError, "window must be an int", lambda q, k, v, be: banded(q, k, v, be, window=2.0)),
        ("w-bool", TypeError, "window must be an int", lambda q, k, v, be: banded(q, k, v, be, window=True)),
        ("w-str", TypeError, "window must be an int", lambda q, k, v, be: banded(q, k, v, be, window="2")),
        (
            "w-float-tensor",
            TypeError,
            "window must be an int",
            lambda q, k, v, be: banded(q, k, v, be, window=torch.tensor(2.5)),
        ),
        (
            "w-bool-tensor",
            TypeError,
            "window must be an int",
            lambda q, k, v, be: banded(q, k, v, be, window=torch.tensor(True)),
        ),
        (
            "w-vector",
            TypeError,
            "window must be an int",
            lambda q, k, v, be: banded(q, k, v, be, window=torch.tensor([1, 2])),
        ),
        (
            "w-negative-tensor",
            ValueError,
            "window must be >= 0",
            lambda q, k, v, be: layer(q, k, v, be, window=torch.tensor(-3)),
        ),
        ("w-none", TypeError, "window must be an int", lambda q, k, v, be: layer(q, k, v, be, window=None)),
        # global indices out of [-1, N), unsorted, -1 before a position
        (
            "gi-at-n",
            ValueError,
            r"values must be in \[-1, N\)",
            lambda q, k, v, be: banded(q, k, v, be, global_idx=torch.tensor([[0, 10]])),
        ),
        (
            "gi-below-minus-1",
            ValueError,
            r"values must be in \[-1, N\)",
            lambda q, k, v, be: layer(q, k, v, be, global_idx=torch.tensor([[-2]])),
        ),
        (
            "gi-global-op",
            ValueError,
            r"values must be in \[-1, N\)",
            lambda q, k, v, be: glob(q, k, v, be, torch.tensor([[3, 99]])),
        ),
        (
            "gi-unsorted",
            ValueError,
            "strictly increasing",
            lambda q, k, v, be: banded(q, k, v, be, global_idx=torch.tensor([[5, 2]])),
        ),
        (
            "gi-gap",
            ValueError,
            "pad with -1 at the end",
            lambda q, k, v, be: banded(q, k, v, be, global_idx=torch.tensor([[-1, 4]])),
        ),
        (
            "max-global-small",
            ValueError,
            "max_global",
            lambda q, k, v, be: layer(
                q, k, v, be, global_mask=torch.ones(1, 10, dtype=torch.bool), max_global=3
            ),
        ),
        (
            "max-global-float",
            TypeError,
            "max_global must be an int",
            lambda q, k, v, be: layer(q, k, v, be, global_mask=gm, max_global=2.0),
        ),
        (
            "max-global-beyond-int32",
            ValueError,
            r"max_global must be in \[0, 2147483647\]",
            lambda q, k, v, be: layer(q, k, v, be, global_mask=gm, max_global=2**62),
        ),
        # the global query rows of the layer (q_global_rows)
        (
            "rows-and-q-global",
            ValueError,
            r"q_global \(B, N, H, D\) or q_global_rows \(B, G, H, D\), not both",
            lambda q, k, v, be: layer(q, k, v, be, global_idx=ok_gi, q_global=q, q_global_rows=q[:, :2]),
        ),
        (
            "rows-without-idx",
            ValueError,
            "q_global_rows needs global_idx",
            lambda q, k, v, be: layer(q, k, v, be, q_global_rows=q[:, :2]),
        ),
        (
            "rows-slot-count",
            ValueError,
            "global_idx has 2 slots but q_global_rows has 3 rows",
            lambda q, k, v, be: layer(q, k, v, be, global_idx=ok_gi, q_global_rows=q[:, :3]),
        ),
        (
            "rows-heads",
            ValueError,
            r"q_global_rows must have shape \(B, G, H, D\) = \(1, G, 2, 16\)",
            lambda q, k, v, be: layer(q, k, v, be, global_idx=ok_gi, q_global_rows=q[:, :2, :1]),
        ),
        (
            "rows-3d",
            ValueError,
            "q_global_rows must be 4-D",
            lambda q, k, v, be: layer(q, k, v, be, global_idx=ok_gi, q_global_rows=q[0, :2]),
        ),
        (
            "rows-dtype",
            TypeError,
            "q_global_rows has dtype torch.float64",
            lambda q, k, v, be: layer(q, k, v, be, global_idx=ok_gi, q_global_rows=q[:, :2].double()),
        ),
        # scale
        (
            "scale-nan",
            ValueError,
            "scale must be finite",
            lambda q, k, v, be: banded(q, k, v, be, scale=float("nan")),
        ),
        (
            "scale-inf",
            ValueError,
            "scale must be finite",
            lambda q, k, v, be: layer(q, k, v, be, scale=float("inf")),
        ),
        (
            "scale-tensor",
            TypeError,
            "scale must be a float",
            lambda q, k, v, be: banded(q, k, v, be, scale=torch.tensor(0.1)),
        ),
        (
            "scale-beyond-float32",
            ValueError,
            "scale must be at most",
            lambda q, k, v, be: banded(q, k, v, be, scale=1e39),
        ),
        (
            "scale-int-beyond-float",
            ValueError,
            "scale must be finite",
            lambda q, k, v, be: banded(q, k, v, be, scale=10**400),
        ),
        # tensors the kernels cannot read as strided memory
        (
            "pad-sparse",
            TypeError,
            "key_padding_mask must be a dense",
            lambda q, k, v, be: banded(q, k, v, be, key_padding_mask=gm.to_sparse()),
        ),
        (
            "gi-sparse",
            TypeError,
            "global_idx must be a dense",
            lambda q, k, v, be: layer(q, k, v, be, global_idx=ok_gi.to_sparse()),
        ),
        (
            "k-negated-view",
            ValueError,
            "k is a lazily negated view",
            lambda q, k, v, be: banded(q, torch._neg_view(k), v, be),
        ),
    ]


BAD_CALLS = _bad_calls()


@pytest.mark.parametrize("case", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_input_raises_clear_error(backend, case):
    _, exc, message, call = case
    q, k, v = _qkv()
    with pytest.raises(exc, match=message):
        call(q, k, v, backend)


def test_float64_only_on_the_torch_backend(backend):
    q, k, v = _qkv(dtype=torch.float64)
    if backend == "torch":
        assert lk.banded_attention(q, k, v, 2, backend=backend).dtype == torch.float64
    else:
        with pytest.raises(TypeError, match=f"backend '{backend}' does not support float64"):
            lk.banded_attention(q, k, v, 2, backend=backend)


def test_triton_head_dims(backend):
    """Explicitly requested Triton kernels refuse head dims they have no tiles for, naming them."""
    q, k, v = _qkv(d=24)
    if backend == "triton":
        with pytest.raises(ValueError, match="backend 'triton' supports head_dim"):
            lk.banded_attention(q, k, v, 2, backend=backend)
    else:  # any head dim
        assert lk.banded_attention(q, k, v, 2, backend=backend).shape == q.shape


def test_integer_like_windows_are_accepted(backend):
    q, k, v = _qkv()
    ref = lk.banded_attention(q, k, v, 3, backend=backend)
    for window in (np.int64(3), torch.tensor(3), torch.tensor(3, dtype=torch.int32)):
        assert torch.equal(lk.banded_attention(q, k, v, window, backend=backend), ref)


def test_windows_past_the_sequence_are_dense(backend):
    """w >= N is dense attention however large w is (past int64 too): what w = N gives, bitwise."""
    q, k, v = _qkv()
    gm = torch.zeros(1, q.shape[1], dtype=torch.bool)
    gm[0, 3] = True
    n = q.shape[1]
    banded = lk.banded_attention(q, k, v, n, backend=backend)
    layer = lk.longformer_attention(q, k, v, n, global_mask=gm, backend=backend)
    for window in (n + 5, 2**31, 2**63, 10**30, np.uint64(2**64 - 1)):
        assert torch.equal(lk.banded_attention(q, k, v, window, backend=backend), banded), window
        assert torch.equal(lk.longformer_attention(q, k, v, window, global_mask=gm, backend=backend), layer)


def test_numpy_scalars_are_accepted(backend):
    """window, max_global and scale as numpy scalars (as configs read from arrays give them)."""
    q, k, v = _qkv()
    gm = torch.zeros(1, q.shape[1], dtype=torch.bool)
    gm[0, 0] = True
    want = lk.longformer_attention(q, k, v, 2, global_mask=gm, max_global=2, scale=0.25, backend=backend)
    for scale in (np.float32(0.25), np.float64(0.25)):
        out = lk.longformer_attention(
            q, k, v, np.int32(2), global_mask=gm, max_global=np.int64(2), scale=scale, backend=backend
        )
        assert torch.equal(out, want)


def test_unknown_and_unavailable_backends(monkeypatch):
    q, k, v = _qkv()
    for name in ("flash", "CPU", "", "auto "):
        with pytest.raises(ValueError, match="backend must be 'auto' or one of"):
            lk.banded_attention(q, k, v, 2, backend=name)
    with pytest.raises(TypeError, match="backend must be a str"):
        lk.longformer_attention(q, k, v, 2, backend=torch.device("cpu"))
    if not torch.cuda.is_available():
        # a CUDA request on a CPU-only machine: which backend, and why
        with pytest.raises(RuntimeError, match="backend 'cuda' is not available here"):
            lk.longformer_attention(q, k, v, 2, backend="cuda")
        monkeypatch.setenv("LED_KERNELS_BACKEND", "cuda")
        with pytest.raises(RuntimeError, match="backend 'cuda' is not available here"):
            lk.banded_attention(q, k, v, 2)  # auto, overridden by the environment
        monkeypatch.delenv("LED_KERNELS_BACKEND")
        # the Triton kernels need a GPU or the interpreter
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
        with pytest.raises(RuntimeError, match=r"backend 'triton' is not available here: no CUDA GPU"):
            lk.banded_attention(q, k, v, 2, backend="triton")


def test_cpu_backend_without_the_extension_says_why(monkeypatch):
    from led_kernels import _extension

    q, k, v = _qkv()
    backends._cached_status.cache_clear()
    monkeypatch.setattr(_extension, "is_built", lambda: False)
    monkeypatch.setattr(_extension, "build_error", lambda: "ImportError: no _C here")
    try:
        with pytest.raises(RuntimeError, match="backend 'cpu' is not available here: .*no _C here"):
            lk.banded_attention(q, k, v, 2, backend="cpu")
        # auto falls back to the reference
        assert lk.banded_attention(q, k, v, 2).shape == q.shape
    finally:
        backends._cached_status.cache_clear()


def test_meta_tensors_with_a_cpu_backend(backend):
    """All-meta inputs: the CPU kernels refuse them by name; the reference propagates shapes."""
    q, k, v = (t.to("meta") for t in _qkv())
    if backend == "torch":
        assert lk.banded_attention(q, k, v, 2, backend=backend).device.type == "meta"
    else:
        with pytest.raises(ValueError, match=f"backend '{backend}'"):
            lk.banded_attention(q, k, v, 2, backend=backend)


@pytest.mark.no_nan_poison
def test_out_of_range_global_idx_inside_a_compiled_graph(backend):
    """Where the index values are not checked (a compiled graph), indices outside [-1, N) act as -1:
    no out-of-bounds read, and the result of the same call with -1 there."""
    torch.manual_seed(0)
    b, n, h, d = 2, 20, 2, 16
    fused, views = fused_projections(b, n, h, d, requires_grad=False)
    q, k, v, qg, kg, vg = views
    good = torch.tensor([[0, 5, -1, -1], [3, -1, -1, -1]], dtype=torch.int32)
    bad = torch.tensor([[0, 5, 20, 1 << 30], [3, -2, -(1 << 30), 25]], dtype=torch.int32)

    def fn(gi):
        return lk.longformer_attention(
            q, k, v, 3, global_idx=gi, q_global=qg, k_global=kg, v_global=vg, backend=backend
        )

    expected = fn(good)
    torch._dynamo.reset()
    got = torch.compile(fn, fullgraph=True, backend="aot_eager")(bad)
    assert torch.equal(got, expected)


# ----------------------------------------------------------------------------------------------------
# edge values against the oracle
# ----------------------------------------------------------------------------------------------------


def _layer_vs_oracle(backend, shape, window, gm, pm, dtype=torch.float32, scale=None, data=None):
    """Whole layer on six views of one fused leaf; (out, grad) and the fp64 oracle's."""
    b, n, h, d = shape
    if data is None:
        fused, views = fused_projections(b, n, h, d, dtype=dtype)
    else:
        fused = data.to(dtype).requires_grad_()
        views = list(fused.unbind(2))
    q, k, v, qg, kg, vg = views
    out = lk.longformer_attention(
        q, k, v, window, global_mask=gm, key_padding_mask=pm, q_global=qg, k_global=kg, v_global=vg,
        scale=scale, backend=backend,
    )  # fmt: skip
    ref = oracle.dense_longformer_attention(q, k, v, window, pm, gm, qg, kg, vg, scale=scale)
    dout = torch.randn(ref.shape, dtype=torch.float64)
    (grad,) = torch.autograd.grad(out, fused, dout.to(dtype))
    (grad_ref,) = torch.autograd.grad(ref, fused, dout)
    return out, grad, ref, grad_ref


EDGE_CASES = {
    # id: (shape, window, global pattern, padding pattern)
    "all-padded-element": ((2, 23, 2, 16), 3, "scattered", "full"),
    "w0": ((2, 23, 2, 16), 0, "scattered", "tail"),
    "w0-no-globals": ((2, 23, 2, 16), 0, "none", "full"),
    "w-at-n": ((2, 23, 2, 16), 23, "first", "tail"),
    "w-beyond-n": ((1, 23, 2, 16), 1000, "none", "none"),
    "all-global": ((2, 23, 2, 16), 2, "all", "tail"),
    "all-global-all-padded": ((2, 9, 2, 16), 2, "all", "full"),
    "n1": ((2, 1, 2, 16), 0, "none", "none"),
    "n1-global": ((2, 1, 2, 16), 5, "all", "none"),
    "n2-padded": ((2, 2, 1, 16), 1, "first", "full"),
}


@pytest.mark.parametrize("case", EDGE_CASES, ids=list(EDGE_CASES))
def test_edge_values_match_oracle(backend, case):
    shape, window, gpat, ppat = EDGE_CASES[case]
    b, n = shape[:2]
    gm, pm = global_mask(b, n, gpat), padding_mask(b, n, ppat)
    out, grad, ref, grad_ref = _layer_vs_oracle(backend, shape, window, gm, pm)
    assert torch.isfinite(out).all() and torch.isfinite(grad).all()
    torch.testing.assert_close(out.double(), ref, atol=2e-6, rtol=0)
    torch.testing.assert_close(grad.double(), grad_ref.double(), atol=2e-5, rtol=0)
    if pm is not None:  # padding rows are exactly 0
        assert (out[pm] == 0).all()


def test_fp16_logits_near_1e4(backend):
    """float16 q, k with q.k up to ~1.6e4 (softmax arguments in the thousands): exactly representable
    scores, so every backend can give the oracle's answer; no inf/NaN in values or gradients."""
    torch.manual_seed(0)
    b, n, h, d = 2, 40, 2, 16
    ints = torch.randint(-4, 5, (b, n, 6, h, d)).double()
    # q, k (and their global twins): multiples of 8 up to 32, so every q.k is a multiple of 64 up to
    # 16384 (exact in float16); k = q makes each row's own score the large one
    ints[:, :, [0, 3]] *= 8.0
    ints[:, :, [1, 4]] = ints[:, :, [0, 3]]
    ints[:, :, [2, 5]] /= 4.0  # v: modest values
    gm, pm = global_mask(b, n, "scattered"), padding_mask(b, n, "tail")
    out, grad, ref, grad_ref = _layer_vs_oracle(backend, (b, n, h, d), 4, gm, pm, torch.float16, data=ints)
    assert (ints[:, :, 0] * ints[:, :, 1]).sum(-1).max() > 1e4  # the logits are as large as meant
    assert torch.isfinite(out).all() and torch.isfinite(grad).all()
    torch.testing.assert_close(out.double(), ref, atol=1e-3, rtol=0)
    scale = grad_ref.abs().max().item()
    torch.testing.assert_close(grad.double(), grad_ref.double(), atol=1e-3 * scale, rtol=0)


def _layer_backend(request, layer_backend: str) -> str:
    """The backend name to pass; "cuda-emulated" is the cuda backend on the CPU emulator (tests/cuda_emu)."""
    if layer_backend == "cuda-emulated":
        request.getfixturevalue("emulated_cuda_interface")
        return "cuda"
    status = lk.available_backends()[layer_backend]
    if not status.available:
        pytest.skip(status.reason)
    return layer_backend


@pytest.mark.parametrize("layer_backend", [*BACKENDS, "cuda-emulated"])
def test_fp16_products_beyond_65504_whose_scaled_scores_fit(request, layer_backend):
    """float16 q.k up to 65536 (past float16's largest value, 65504) at the default scale 1/4: the
    scaled scores fit, so every backend gives the oracle's answer, with no inf/NaN in values or
    gradients (the product may not be rounded to float16 before it is scaled; Hugging Face scales q
    first)."""
    torch.manual_seed(1)
    b, n, h, d = 2, 30, 2, 16
    data = torch.randn(b, n, 6, h, d, dtype=torch.float64)
    data[:, :, [0, 3]] = 64.0 * data[:, :, [0, 3]].sign()  # q, q_global: +-64
    data[:, :, [1, 4]] = data[:, :, [0, 3]]  # k = q: each row's own score is 64 * 64 * 16 = 65536
    gm, pm = global_mask(b, n, "scattered"), padding_mask(b, n, "tail")
    backend = _layer_backend(request, layer_backend)
    out, grad, ref, grad_ref = _layer_vs_oracle(backend, (b, n, h, d), 3, gm, pm, torch.float16, data=data)
    assert (data[:, :, 0] * data[:, :, 1]).sum(-1).max() > torch.finfo(torch.float16).max
    assert torch.isfinite(out).all() and torch.isfinite(grad).all()
    torch.testing.assert_close(out.double(), ref, atol=2e-3, rtol=0)
    scale = grad_ref.abs().max().item()
    torch.testing.assert_close(grad.double(), grad_ref.double(), atol=1e-3 * scale, rtol=0)


def test_negative_scale_matches_the_oracle_or_is_refused_by_triton(backend):
    """A negative scale (a soft-min): the oracle's answer, except on triton, whose kernels refuse it by
    name (the cuda kernels' own case is tests/ops/test_cuda_emulated.py::test_negative_and_zero_scales)."""
    b, n = 2, 23
    gm, pm = global_mask(b, n, "scattered"), padding_mask(b, n, "tail")
    if backend == "triton":
        with pytest.raises(ValueError, match="triton backend: scale must be a finite float >= 0"):
            _layer_vs_oracle(backend, (b, n, 2, 16), 3, gm, pm, scale=-0.25)
        return
    out, grad, ref, grad_ref = _layer_vs_oracle(backend, (b, n, 2, 16), 3, gm, pm, scale=-0.25)
    torch.testing.assert_close(out.double(), ref, atol=2e-6, rtol=0)
    torch.testing.assert_close(grad.double(), grad_ref.double(), atol=2e-5, rtol=0)


@pytest.mark.parametrize("layer_backend", [*BACKENDS, "cuda-emulated"])
def test_zero_scale_is_uniform_attention(request, layer_backend):
    """scale = 0: every attended key weighs the same. Outputs and all six gradients against the oracle
    (those of q, k and their global twins are exactly 0), never NaN; float16 on the cuda kernels."""
    backend = _layer_backend(request, layer_backend)
    dtype, tol = (torch.float16, 2e-3) if backend == "cuda" else (torch.float32, 2e-6)
    b, n = 2, 23
    gm, pm = global_mask(b, n, "scattered"), padding_mask(b, n, "tail")
    out, grad, ref, grad_ref = _layer_vs_oracle(backend, (b, n, 2, 16), 3, gm, pm, dtype, scale=0.0)
    assert torch.isfinite(out).all() and torch.isfinite(grad).all()
    torch.testing.assert_close(out.double(), ref, atol=tol, rtol=0)
    torch.testing.assert_close(grad.double(), grad_ref.double(), atol=10 * tol, rtol=0)
    assert (grad[:, :, [0, 1, 3, 4]] == 0).all()


# ----------------------------------------------------------------------------------------------------
# the layer with the global queries given as rows (q_global_rows)
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layer_backend", [*BACKENDS, "cuda-emulated"])
def test_global_query_rows_give_the_full_projections_result(request, layer_backend):
    """``q_global_rows`` (B, G, H, D) and the (B, N, H, D) ``q_global`` they are the rows of give the same
    output and gradients, bitwise. Slots that name no global token (-1, or a global token that is
    padding) are ignored: NaN there reaches nothing and gets gradient 0. The triton and cuda backends
    run the layer as one op (the rows placed at their positions); torch and cpu compose kernels A and B."""
    backend = _layer_backend(request, layer_backend)
    dtype = torch.float16 if backend == "cuda" else torch.float32
    torch.manual_seed(0)
    b, n, h, d, window = 3, 29, 2, 16, 4
    fused, views = fused_projections(b, n, h, d, dtype=dtype)
    q, k, v, qg, kg, vg = views
    gm = global_mask(b, n, "scattered")
    gm[1] = False
    gm[1, [0, 7]] = True  # element 1 has -1 slots, and its row 0 (which they would read) is global
    pm = padding_mask(b, n, "tail")
    gi = lk.global_indices(gm)  # padding is not removed: element 2's last global slots are padding
    valid = (gi >= 0) & ~torch.gather(pm, 1, gi.long().clamp(min=0))
    assert (~valid & (gi >= 0)).any() and (gi < 0).any()

    common = dict(global_idx=gi, key_padding_mask=pm, k_global=kg, v_global=vg, backend=backend)
    full = lk.longformer_attention(q, k, v, window, q_global=qg, **common)
    rows = gather_rows(qg.detach(), gi)
    rows[~valid] = float("nan")
    rows.requires_grad_()
    given = lk.longformer_attention(q, k, v, window, q_global_rows=rows, **common)
    assert torch.equal(given, full)

    dout = torch.randn_like(full)
    (grad_full,) = torch.autograd.grad(full, fused, dout)
    grad_given, grad_rows = torch.autograd.grad(given, (fused, rows), dout)
    q_global_slot = SIX.index("q_global")
    others = [i for i in range(6) if i != q_global_slot]
    assert torch.equal(grad_given[:, :, others], grad_full[:, :, others])
    assert (grad_given[:, :, q_global_slot] == 0).all()  # q_global itself is not used
    want = gather_rows(grad_full[:, :, q_global_slot], gi)
    assert torch.equal(grad_rows[valid], want[valid])
    assert (grad_rows[~valid] == 0).all()


# ----------------------------------------------------------------------------------------------------
# NaN containment
# ----------------------------------------------------------------------------------------------------

# (B, N, H, D, window) per backend: several tiles with masked edges, unmasked interiors, global and
# padded keys inside them (the cpu kernels' tiles are 64 rows, the interpreted Triton ones 16)
CONTAINMENT_SHAPES = {"torch": (2, 160, 2, 16, 70), "cpu": (2, 160, 2, 16, 70), "triton": (2, 64, 2, 16, 17)}


def _containment_masks(b, n):
    gm = torch.zeros(b, n, dtype=torch.bool)
    gm[0, 0] = gm[0, n // 2] = True
    gm[1, 5] = gm[1, n - 1] = True  # n - 1 is padding below: an invalid slot
    pm = torch.zeros(b, n, dtype=torch.bool)
    pm[0, n // 3 : n // 3 + 3] = True  # a hole
    pm[1, n - n // 4 :] = True
    return gm, pm


def _may_be_nan(flags, window, target, b0, j0):
    """(B, N) output rows, and per input (B, N) rows of its gradient, that a NaN at row j0 of batch
    element b0 of `target` may reach: rows that attend it, and the gradients that depend on those."""
    n = flags.shape[1]
    pos = torch.arange(n)
    band = ((pos[:, None] - pos[None, :]).abs() <= window)[None] & (flags == LOCAL)[:, None, :]
    band = (band | (flags == GLOBAL)[:, None, :]) & (flags != PADDING)[:, :, None]  # [B, query, key]
    global_row = flags == GLOBAL
    dense = global_row[:, :, None] & (flags != PADDING)[:, None, :]
    rows_banded = torch.zeros_like(global_row)  # rows of the banded op that see the NaN
    rows_global = torch.zeros_like(global_row)  # global rows that see it
    if target == "q":
        rows_banded[b0, j0] = bool(flags[b0, j0] != PADDING)
    elif target in ("k", "v"):
        rows_banded[b0] = band[b0, :, j0]
    elif target == "q_global":
        rows_global[b0, j0] = bool(global_row[b0, j0])
    else:
        rows_global[b0] = dense[b0, :, j0]
    out = (rows_banded & ~global_row) | rows_global  # the banded result of a global row is replaced
    keys_banded = (rows_banded[:, :, None] & band).any(1)
    keys_global = (rows_global[:, :, None] & dense).any(1)
    grads = dict(zip(SIX, (rows_banded, keys_banded, keys_banded, rows_global, keys_global, keys_global)))
    return out, grads


def _run_layer(views, window, gi, pm, backend, dout):
    q, k, v, qg, kg, vg = views
    out = lk.longformer_attention(
        q, k, v, window, key_padding_mask=pm, global_idx=gi, q_global=qg, k_global=kg, v_global=vg,
        backend=backend,
    )  # fmt: skip
    return out.detach(), torch.autograd.grad(out, views, dout)


# (target, batch element, position): local, global and padded positions, row 0 of a batch element
# whose unused global slots gather it, and a position the band reaches only through a global row
NAN_POSITIONS = {
    "local": lambda n: (0, 10),
    "global": lambda n: (0, n // 2),
    "padding-hole": lambda n: (0, n // 3 + 1),
    "row0": lambda n: (1, 0),
    "invalid-global": lambda n: (1, n - 1),
}
NAN_CASES = [
    ("q", "local"),
    ("q", "padding-hole"),
    ("q", "global"),
    ("k", "local"),
    ("k", "global"),
    ("k", "padding-hole"),
    ("v", "local"),
    ("v", "global"),
    ("v", "padding-hole"),
    ("v", "row0"),
    ("q_global", "row0"),
    ("q_global", "global"),
    ("q_global", "invalid-global"),
    ("k", "invalid-global"),  # a padded global token's rows: gathered as a global slot, attended by none
    ("v", "invalid-global"),
    ("k_global", "invalid-global"),
    ("v_global", "invalid-global"),
    ("k_global", "local"),
    ("v_global", "padding-hole"),
    ("v_global", "row0"),
]


@pytest.fixture(scope="module")
def clean_runs():
    """Per backend: the inputs and the NaN-free run every NaN case is compared with (computed once)."""
    cache = {}

    def get(backend):
        if backend not in cache:
            b, n, h, d, window = CONTAINMENT_SHAPES[backend]
            gen = torch.Generator().manual_seed(0)
            base = [torch.randn(b, n, h, d, generator=gen) for _ in SIX]
            dout = torch.randn(b, n, h, d, generator=gen)
            gm, pm = _containment_masks(b, n)
            gi = lk.global_indices(gm, max_global=4)  # spare -1 slots gather row 0
            flags = oracle.key_flags_from_masks(n, b, pm, gm, "cpu")
            clean = _run_layer([x.clone().requires_grad_() for x in base], window, gi, pm, backend, dout)
            cache[backend] = (base, dout, gi, pm, flags, window, clean)
        return cache[backend]

    return get


@pytest.mark.parametrize("target,where", NAN_CASES, ids=[f"{t}-{w}" for t, w in NAN_CASES])
def test_nan_stays_in_the_rows_that_attend_it(backend, clean_runs, target, where):
    base, dout, gi, pm, flags, window, clean = clean_runs(backend)
    n = base[0].shape[1]
    b0, j0 = NAN_POSITIONS[where](n)
    h0 = 1
    may_out, may_grad = _may_be_nan(flags, window, target, b0, j0)
    inputs = [x.clone() for x in base]
    inputs[SIX.index(target)][b0, j0, h0] = float("nan")
    dout = dout.clone()
    dout[:, :, h0][may_out] = float("nan")  # what a loss computed from the NaN rows hands back
    out, grads = _run_layer([x.requires_grad_() for x in inputs], window, gi, pm, backend, dout)

    def outside(rows):  # every element but head h0 of the given (B, N) rows
        mask = torch.ones(out.shape[:3], dtype=torch.bool)
        mask[:, :, h0] = ~rows
        return mask

    keep = outside(may_out)
    assert torch.equal(out[keep], clean[0][keep]), "outputs that do not attend the NaN changed"
    assert out[:, :, h0][may_out].isnan().all(), "an output that attends the NaN is not NaN"
    for name, g, g_clean in zip(SIX, grads, clean[1]):
        keep = outside(may_grad[name])
        assert torch.equal(g[keep], g_clean[keep]), f"d{name} changed outside the rows that attend the NaN"


# ----------------------------------------------------------------------------------------------------
# second derivatives
# ----------------------------------------------------------------------------------------------------


def _entry_call(entry, gm, pm):
    """call(q, k, v, backend) of one of the three public functions, q, k, v (B, N, H, D)."""
    gi = lk.global_indices(gm)
    if entry == "banded":
        return lambda q, k, v, be: lk.banded_attention(
            q, k, v, 3, key_padding_mask=pm, global_idx=gi, backend=be
        )
    if entry == "global":
        return lambda q, k, v, be: lk.global_attention(
            q[:, : gi.shape[1]], k, v, gi, key_padding_mask=pm, backend=be
        )
    return lambda q, k, v, be: lk.longformer_attention(
        q, k, v, 3, global_idx=gi, key_padding_mask=pm, backend=be
    )


@pytest.mark.parametrize("loss", ["linear", "square"])
@pytest.mark.parametrize("entry", ["banded", "global", "layer"])
def test_second_derivatives_are_exact_or_refused(backend, entry, loss):
    """create_graph=True: the torch backend's second derivatives pass gradgradcheck (float64); the
    kernel backends, whose backward is first-order only, refuse it with a RuntimeError instead of
    returning first derivatives without autograd history (a gradient penalty built on them would
    silently lose its own gradient). Both with an upstream gradient that carries history (a squared
    loss) and one that does not (a linear loss), where only the saved inputs do."""
    b, n, h = 1, 9, 1
    d = 4 if backend == "torch" else 16  # the kernels' smallest head dim; gradcheck's cost grows with d
    gm, pm = global_mask(b, n, "first"), padding_mask(b, n, "tail")
    call = _entry_call(entry, gm, pm)
    dtype = torch.float64 if backend == "torch" else torch.float32
    q, k, v = (x.to(dtype).requires_grad_() for x in _qkv(b, n, h, d))

    def first_derivatives(q, k, v):
        out = call(q, k, v, backend)
        total = out.sum() if loss == "linear" else out.square().sum()
        return torch.autograd.grad(total, (q, k, v), create_graph=True)

    if backend == "torch":
        assert torch.autograd.gradcheck(first_derivatives, (q, k, v))
        return
    with pytest.raises(RuntimeError, match="first-order only"):
        first_derivatives(q, k, v)
    # without create_graph the same backward runs
    out = call(q, k, v, backend)
    assert all(torch.isfinite(g).all() for g in torch.autograd.grad(out.square().sum(), (q, k, v)))


@pytest.mark.parametrize("entry", ["banded", "global", "layer"])
def test_activation_checkpointing_gives_the_same_gradients(backend, entry):
    """torch.utils.checkpoint (non-reentrant: a backward may unpack its saved tensors only once) gives
    the bits of the plain call, outputs and gradients."""
    from torch.utils.checkpoint import checkpoint

    b, n, h, d = 2, 23, 2, 16
    gm, pm = global_mask(b, n, "scattered"), padding_mask(b, n, "tail")
    call = _entry_call(entry, gm, pm)
    q, k, v = (x.requires_grad_() for x in _qkv(b, n, h, d))
    results = []
    for wrap in (False, True):
        out = checkpoint(call, q, k, v, backend, use_reentrant=False) if wrap else call(q, k, v, backend)
        dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(3))
        results.append((out, *torch.autograd.grad(out, (q, k, v), dout)))
    for x, y in zip(*results):
        assert torch.equal(x, y)


# ----------------------------------------------------------------------------------------------------
# determinism
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
def test_backward_reruns_are_bitwise_equal(backend, dtype):
    """The same call twice gives the same bits (the cpu backend also with 1 and 3 threads)."""
    b, n, h, d = 2, 70, 2, 16
    fused, views = fused_projections(b, n, h, d, dtype=dtype)
    gm, pm = global_mask(b, n, "scattered"), padding_mask(b, n, "tail")
    dout = torch.randn(b, n, h, d, dtype=dtype)
    q, k, v, qg, kg, vg = views
    threads = torch.get_num_threads()
    counts = (threads, threads, 1, 3) if backend == "cpu" else (threads, threads)
    results = []
    try:
        for count in counts:
            torch.set_num_threads(count)
            out = lk.longformer_attention(
                q, k, v, 9, global_mask=gm, key_padding_mask=pm, q_global=qg, k_global=kg, v_global=vg,
                backend=backend,
            )  # fmt: skip
            results.append((out, *torch.autograd.grad(out, fused, dout)))
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        for x, y in zip(other, results[0]):
            assert torch.equal(x, y)
