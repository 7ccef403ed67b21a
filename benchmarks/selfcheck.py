"""Check that every provider computes the same layer as ``led_kernels`` (``torch`` backend).

``python -m benchmarks.selfcheck [--device cpu|cuda] [--dtype float32] [--providers ...]`` runs each
provider on a few small cases (odd lengths, N not a multiple of 2w so that ``hf`` pads, G = 0 / 1 /
several) and compares the forward output on the real tokens and the gradient of the fused
(B, N, 6, H, D) input with those of ``lk.longformer_attention(..., backend="torch")``. On the CPU,
``flex`` runs eagerly (``compile=False``) and ``sdpa`` on CPU tensors, so their masks are checked even
without a GPU. Run it before trusting a benchmark on new hardware. Exit status 1 on any mismatch.
"""

from __future__ import annotations

import argparse
import sys
import warnings

import torch

from benchmarks.cases import Case, make_inputs
from benchmarks.providers import (
    PROVIDERS,
    FlexProvider,
    LedKernelsProvider,
    Provider,
    SDPAProvider,
    get_provider,
)

#: max abs error accepted against the torch backend (forward output, fused-input gradient)
TOLERANCE = {"float32": 2e-5, "float16": 2e-2, "bfloat16": 6e-2}
CASES = (  # (N, w, G): N not a multiple of 2w where possible; windows wider than N; no globals
    (200, 16, 1),
    (257, 32, 3),
    (130, 8, 0),
    (64, 100, 2),
    (96, 16, 96),
)


def _provider(name: str, device: torch.device) -> Provider:
    if name == "flex":
        return FlexProvider(compile=device.type == "cuda", allow_cpu=True)
    if name == "sdpa":
        return SDPAProvider(allow_cpu=True)
    return get_provider(name)


def check_provider(name: str, case: Case, device: torch.device) -> tuple[float, float | None] | str:
    """(max |out - ref|, max |grad - ref grad|) on the real tokens, or the reason the provider is skipped.

    The gradient error is None where the provider has no backward here (FlexAttention on the CPU).
    """
    provider = _provider(name, device)
    reason = provider.skip_reason(case, device, caps=False)
    if reason:
        return reason
    ref_inputs = make_inputs(case, device, seed=1)
    ref = LedKernelsProvider("torch").prepare(ref_inputs)
    ref_out = ref.forward()
    (ref_grad,) = torch.autograd.grad(ref_out, ref.leaf, ref.dout)

    inputs = make_inputs(case, device, seed=1)
    n = case.seqlen
    if name == "flex" and device.type == "cpu":  # "FlexAttention does not support backward on CPU"
        inputs.fused.requires_grad_(False)
        prep = provider.prepare(inputs)
        out = prep.forward()
        return (prep.real_rows(out).float() - ref_out.float()).abs().max().item(), None
    prep = provider.prepare(inputs)
    out = prep.forward()
    (grad,) = torch.autograd.grad(out, prep.leaf, prep.dout)
    out_err = (prep.real_rows(out).float() - ref_out.float()).abs().max().item()
    grad_err = (grad[:, :n].float() - ref_grad.float()).abs().max().item()
    if grad.shape[1] > n:  # hf's padding rows: no real token attends them, so no gradient
        grad_err = max(grad_err, grad[:, n:].float().abs().max().item())
    return out_err, grad_err


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.selfcheck", description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=sorted(TOLERANCE))
    p.add_argument("--providers", nargs="+", default=[n for n in PROVIDERS if n != "torch"])
    a = p.parse_args(argv)
    device = torch.device(a.device)
    # the eager (uncompiled) FlexAttention used on the CPU warns that it is slow; that is expected here
    warnings.filterwarnings("ignore", module=r"torch\.nn\.attention\.flex_attention")
    tol = TOLERANCE[a.dtype]
    failed = False
    for n, w, g in CASES:
        case = Case(batch=2, seqlen=n, heads=3, head_dim=16 if a.device == "cpu" else 64, window=w, globals=g,
                    dtype=a.dtype)  # fmt: skip
        for name in a.providers:
            result = check_provider(name, case, device)
            if isinstance(result, str):
                print(f"{case.short():48s} {name:6s} skipped: {result}")
                continue
            out_err, grad_err = result
            ok = out_err <= tol and (grad_err is None or grad_err <= tol)
            failed |= not ok
            grad_text = "n/a (no backward here)" if grad_err is None else f"{grad_err:.2e}"
            print(
                f"{case.short():48s} {name:6s} out {out_err:.2e}  grad {grad_text}  "
                f"{'ok' if ok else f'MISMATCH (tolerance {tol:g})'}"
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
