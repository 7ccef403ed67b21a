"""Property-based checks (hypothesis): every CPU-runnable backend equals the dense oracle, outputs and
gradients, over drawn shapes, windows, global and padding patterns, projections and dtypes.

Drawn: batch 1-3; length 1-48 (1 and odd lengths included); heads 1-3; head dims 1-20, odd ones
included (the ``triton`` backend takes the head dims it has tiles for, 16 and 32); windows 0, 1,
small, and at or past the length (dense); per token global and padded flags (none, some, all, whole
padded batch elements, global tokens that are also padding); shared or separate global projections;
``max_global`` slots beyond the count (unused -1 slots); the scale; float32, and float64 on ``torch``.
Each example checks one of the three public ops (``longformer_attention``, ``banded_attention``,
``global_attention``) against its oracle: values, the gradient of every input, no NaN, padding rows
exactly 0.

CI runs a fixed, small number of examples per backend (``derandomize``: the same examples on every
run, no example database). ``pytest -m slow tests/test_properties.py`` runs the long sweep, larger
shapes included.
"""

from __future__ import annotations

import oracle
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import led_kernels as lk
from led_kernels.masks import gather_rows, key_flags

BACKENDS = ("torch", "cpu", "triton")
TRITON_HEAD_DIMS = (16, 32)
# examples per backend in CI; the interpreted Triton kernels are ~100x slower than the others
CI_EXAMPLES = {"torch": 300, "cpu": 500, "triton": 20}
SWEEP_EXAMPLES = {"torch": 400, "cpu": 1500, "triton": 150}


def _settings(examples: int):
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@st.composite
def cases(draw, backend: str, max_n: int = 48):
    b = draw(st.integers(1, 3))
    n = draw(st.one_of(st.sampled_from([1, 2, 3, 17]), st.integers(1, max_n)))
    h = draw(st.integers(1, 3))
    if backend == "triton":
        d = draw(st.sampled_from(TRITON_HEAD_DIMS))
    else:
        d = draw(st.one_of(st.sampled_from([1, 3, 16]), st.integers(1, 20)))
    window = draw(st.one_of(st.sampled_from([0, 1]), st.integers(0, 8), st.integers(n, n + 40)))
    # flags per token: each batch element draws how likely global and padding are (0 and 1 included)
    density = st.sampled_from([0.0, 0.0, 0.1, 0.3, 1.0])
    global_p = [draw(density) for _ in range(b)]
    padding_p = [draw(density) for _ in range(b)]
    tail = [draw(st.integers(0, n)) for _ in range(b)]  # a padded tail, the usual shape of padding
    op = draw(st.sampled_from(["longformer", "longformer", "banded", "global"]))
    return dict(
        b=b, n=n, h=h, d=d, window=window, global_p=global_p, padding_p=padding_p, tail=tail, op=op,
        extra_slots=draw(st.integers(0, 3)),
        shared=draw(st.booleans()),
        padding=draw(st.booleans()),
        scale=draw(st.one_of(st.none(), st.floats(0.05, 1.5))),
        dtype=draw(st.sampled_from([torch.float32, torch.float64])) if backend == "torch" else torch.float32,
        seed=draw(st.integers(0, 2**16)),
    )  # fmt: skip


def _masks(c, gen):
    b, n = c["b"], c["n"]
    gm = torch.rand(b, n, generator=gen) < torch.tensor(c["global_p"])[:, None]
    pm = torch.rand(b, n, generator=gen) < torch.tensor(c["padding_p"])[:, None]
    for i, t in enumerate(c["tail"]):
        pm[i, n - t :] = pm[i, n - t :] | (t > 0)
    return gm, (pm if c["padding"] else None)


def _tolerance(ref: torch.Tensor, dtype: torch.dtype) -> float:
    base = 1e-10 if dtype == torch.float64 else 2e-5
    return base * max(1.0, ref.abs().max().item())


def _check(backend: str, c: dict) -> None:
    b, n, h, d, dtype = c["b"], c["n"], c["h"], c["d"], c["dtype"]
    gen = torch.Generator().manual_seed(c["seed"])
    fused = torch.randn(b, n, 6, h, d, generator=gen, dtype=torch.float64).to(dtype).requires_grad_()
    q, k, v, qg, kg, vg = fused.unbind(2)
    if c["shared"]:
        qg, kg, vg = q, k, v
    gm, pm = _masks(c, gen)
    count = int(gm.sum(1).max()) if n else 0
    gi = lk.global_indices(gm, max_global=count + c["extra_slots"])
    scale = c["scale"]
    window = c["window"]
    op = c["op"] if gi.shape[1] > 0 or c["op"] != "global" else "banded"
    flags = key_flags(b, n, fused.device, pm, gi)

    if op == "longformer":
        out = lk.longformer_attention(
            q, k, v, window, global_mask=gm, key_padding_mask=pm, q_global=qg, k_global=kg, v_global=vg,
            scale=scale, backend=backend, max_global=gi.shape[1],
        )  # fmt: skip
        ref = oracle.dense_longformer_attention(q, k, v, window, pm, gm, qg, kg, vg, scale=scale)
        dead = pm
    elif op == "banded":
        out = lk.banded_attention(
            q, k, v, window, key_padding_mask=pm, global_idx=gi, scale=scale, backend=backend
        )
        ref = oracle.dense_banded_attention(q, k, v, window, flags, scale=scale)
        dead = pm
    else:
        rows = gather_rows(qg, gi)
        out = lk.global_attention(rows, kg, vg, gi, key_padding_mask=pm, scale=scale, backend=backend)
        ref = oracle.dense_global_attention(rows, kg, vg, gi, flags, scale=scale)
        dead = gi < 0
    assert out.shape == ref.shape and out.dtype == dtype
    assert torch.isfinite(out).all()
    if dead is not None:
        assert (out[dead] == 0).all()
    torch.testing.assert_close(out.double(), ref, atol=_tolerance(ref, dtype), rtol=0)

    dout = torch.randn(ref.shape, generator=gen, dtype=torch.float64)
    # the two graphs may share a prefix (the global op's gathered rows)
    (grad,) = torch.autograd.grad(out, fused, dout.to(dtype), retain_graph=True)
    (grad_ref,) = torch.autograd.grad(ref, fused, dout)
    assert torch.isfinite(grad).all()
    tol = 5 * _tolerance(grad_ref, dtype)
    torch.testing.assert_close(grad.double(), grad_ref.double(), atol=tol, rtol=0)


def _property_test(examples: dict[str, int], max_n: int):
    def test(backend):
        status = lk.available_backends()[backend]
        if not status.available:
            pytest.skip(status.reason)

        @_settings(examples[backend])
        @given(c=cases(backend, max_n))
        def run(c):
            _check(backend, c)

        run()

    return test


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_matches_the_oracle(backend):
    """A fixed sample of examples per backend (CI)."""
    _property_test(CI_EXAMPLES, max_n=48)(backend)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_matches_the_oracle_sweep(backend):
    """The long sweep: many more examples, sequences up to 200 tokens (several kernel tiles)."""
    _property_test(SWEEP_EXAMPLES, max_n=200)(backend)
