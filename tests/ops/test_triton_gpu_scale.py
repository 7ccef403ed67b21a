"""The ``triton`` backend at the edges of size, and a soak over random cases (marker ``gpu``).

- Soak: 1,000 random small layers (B, N, H, D, w, global and padding patterns, dtype drawn from a
  seeded generator) against the dense fp64 oracle, outputs and all six gradients; fp32 within a
  fixed bound, fp16/bf16 within FlashAttention's rule (at most 2x the ``torch`` backend's own error in
  that dtype, plus slack). One failing case is reported with its parameters.
- Size: B*N*H*D above 2**31 elements (every pointer offset past the int32 range) and N = 131072.
  Heads are independent, so the full-size layer is computed once and a few heads (the first and the
  last, whose offsets are the largest) are checked against the ``torch`` backend on those heads alone.
"""

from __future__ import annotations

import random

import pytest
import torch
from cases import GLOBAL_PATTERNS, global_mask, padding_mask
from oracle import dense_longformer_attention

import led_kernels as lk

pytestmark = pytest.mark.gpu

SOAK_CASES = 1000
PADDING_PATTERNS = ("none", "tail", "full")


def _random_case(rng: random.Random) -> dict:
    n = rng.choice([1, 2, 7, 63, 64, 65, 127, 200, 257, 511, 600])
    return dict(
        b=rng.randint(1, 3),
        n=n,
        h=rng.randint(1, 4),
        d=rng.choice([16, 32, 64, 128]),
        window=rng.choice([0, 1, 3, 16, 64, 100, 1000]),
        gpat=rng.choice(GLOBAL_PATTERNS),
        ppat=rng.choice(PADDING_PATTERNS),
        dtype=rng.choice([torch.float32, torch.float16, torch.bfloat16]),
        seed=rng.randrange(2**31),
    )


def _layer(views, case, gm, pm, backend):
    q, k, v, qg, kg, vg = views
    return lk.longformer_attention(
        q, k, v, case["window"], global_mask=gm, key_padding_mask=pm,
        q_global=qg, k_global=kg, v_global=vg, backend=backend,
    )  # fmt: skip


def _case_errors(case: dict, device: str = "cuda") -> dict[str, tuple[float, float]]:
    """Max abs error of output and fused-input gradient against the fp64 oracle, per backend."""
    gen = torch.Generator(device=device).manual_seed(case["seed"])
    b, n, h, d = case["b"], case["n"], case["h"], case["d"]
    fused64 = torch.randn(b, n, 6, h, d, generator=gen, device=device, dtype=torch.float64)
    fused64.requires_grad_()
    gm = global_mask(b, n, case["gpat"], device)
    pm = padding_mask(b, n, case["ppat"], device)
    views = list(fused64.unbind(2))
    ref = dense_longformer_attention(
        *views[:3], case["window"], key_padding_mask=pm, global_mask=gm,
        q_global=views[3], k_global=views[4], v_global=views[5],
    )  # fmt: skip
    dout = torch.randn(ref.shape, generator=gen, device=device, dtype=torch.float64)
    (ref_grad,) = torch.autograd.grad(ref, fused64, dout)
    errors = {}
    backends = ("triton",) if case["dtype"] == torch.float32 else ("triton", "torch")
    for backend in backends:
        fused = fused64.detach().to(case["dtype"]).requires_grad_()
        out = _layer(list(fused.unbind(2)), case, gm, pm, backend)
        (grad,) = torch.autograd.grad(out, fused, dout.to(case["dtype"]))
        if not (torch.isfinite(out).all() and torch.isfinite(grad).all()):
            errors[backend] = (float("nan"), float("nan"))
            continue
        errors[backend] = (
            (out.double() - ref).abs().max().item(),
            (grad.double() - ref_grad).abs().max().item(),
        )
    return errors


def _case_ok(case: dict, errors: dict[str, tuple[float, float]]) -> bool:
    out_t, grad_t = errors["triton"]
    if case["dtype"] == torch.float32:
        # fp32 dots are IEEE unless torch.backends.cuda.matmul.allow_tf32 is set (off by default)
        return out_t <= 2e-5 and grad_t <= 2e-4
    out_r, grad_r = errors["torch"]
    return out_t <= 2 * out_r + 2e-3 and grad_t <= 2 * grad_r + 2e-3


def test_soak_random_cases_against_the_oracle():
    rng = random.Random(20261125)
    failures = []
    for i in range(SOAK_CASES):
        case = _random_case(rng)
        errors = _case_errors(case)
        if not _case_ok(case, errors):
            failures.append((i, case, errors))
    assert not failures, f"{len(failures)} of {SOAK_CASES} cases failed; first: {failures[:3]}"


def _check_heads(q, k, v, gm, window, out, grads, dout, heads):
    """out/grads of the full layer on ``heads`` vs the torch backend run on those heads only (fp32),
    with the bf16 torch backend's error as the yardstick."""
    for head in heads:
        sl = slice(head, head + 1)
        refs = {}
        for name, dtype in (("fp32", torch.float32), ("torch", q.dtype)):
            leaves = [x[:, :, sl].detach().to(dtype).requires_grad_() for x in (q, k, v)]
            o = lk.longformer_attention(*leaves, window, global_mask=gm, backend="torch")
            g = torch.autograd.grad(o, leaves, dout[:, :, sl].to(dtype))
            refs[name] = (o.float(), [x.float() for x in g])
        ref_out, ref_grads = refs["fp32"]
        low_out, low_grads = refs["torch"]
        err = (out[:, :, sl].float() - ref_out).abs().max().item()
        bound = 2 * (low_out - ref_out).abs().max().item() + 2e-3
        assert err <= bound, (head, "out", err, bound)
        for name, g, rg, lg in zip("qkv", grads, ref_grads, low_grads):
            err = (g[:, :, sl].float() - rg).abs().max().item()
            bound = 2 * (lg - rg).abs().max().item() + 2e-3
            assert err <= bound, (head, f"d{name}", err, bound)


def _full_size_layer(b, n, h, d, window, n_global, device="cuda", dtype=torch.bfloat16):
    torch.manual_seed(0)
    q, k, v = (torch.randn(b, n, h, d, device=device, dtype=dtype).requires_grad_() for _ in range(3))
    gm = torch.zeros(b, n, dtype=torch.bool, device=device)
    gm[:, torch.linspace(0, n - 1, n_global, device=device).long()] = True  # includes the last position
    out = lk.longformer_attention(q, k, v, window, global_mask=gm, backend="triton")
    dout = torch.randn_like(out)
    grads = torch.autograd.grad(out, (q, k, v), dout)
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(g).all() for g in grads)
    return q, k, v, gm, out, grads, dout


@pytest.mark.parametrize(
    "b,n,h,d",
    [(2, 65536, 132, 128), (1, 131072, 4, 64)],
    ids=["over-2**31-elements", "n-131072"],
)
def test_large_layers(b, n, h, d):
    need = 14 * b * n * h * d * 2  # q, k, v, out, dout, three gradients, kernel workspace (bf16)
    free, _ = torch.cuda.mem_get_info()
    if need > free:
        pytest.skip(f"needs about {need / 2**30:.0f} GiB of GPU memory, {free / 2**30:.0f} GiB free")
    q, k, v, gm, out, grads, dout = _full_size_layer(b, n, h, d, 256, 3)
    _check_heads(q, k, v, gm, 256, out, grads, dout, heads=sorted({0, h - 1}))
