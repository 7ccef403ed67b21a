"""The triton backend's cached launch path (``ops/triton/_launch.py``) launches exactly what Triton's own
``kernel[grid](...)`` path launches: the same compiled kernel, grid and arguments, for every launch of
a layer's forward and backward, also when an input's alignment changes between calls (Triton then
specialises a different kernel, and the cache must not hand back the old one).

Checked without a GPU: ``benchmarks.fake_cuda_driver`` runs Triton's real binder, autotuner and sm_90
compilation on CPU tensors and records what would reach cuLaunchKernel. In a subprocess, because
this test session sets ``TRITON_INTERPRET=1`` before the kernels are defined.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = r"""
import json
import torch
from benchmarks import fake_cuda_driver as fake
fake.install(arch=90)
import led_kernels as lk
from led_kernels.ops.triton import _launch

b, n, h, d, w = 2, 80, 2, 32, 12
torch.manual_seed(0)
store = torch.randn(b * n * 6 * h * d + 1, dtype=torch.float16)
dout = torch.randn(b, n, h, d, dtype=torch.float16)
mask = torch.zeros(b, n, dtype=torch.bool)
mask[:, :3] = True
mask[1, 40] = True
padding = torch.zeros(b, n, dtype=torch.bool)
padding[1, -7:] = True
global_idx = lk.global_indices(mask)

def layer(offset, shared):
    # six projections as views of one fused buffer; offset 1 element = inputs not 16-byte aligned
    fused = store[offset: offset + b * n * 6 * h * d].view(b, n, 6, h, d).detach().requires_grad_()
    q, k, v, qg, kg, vg = fused.unbind(2)
    extra = {} if shared else dict(q_global=qg, k_global=kg, v_global=vg)
    out = lk.longformer_attention(q, k, v, w, global_idx=global_idx, key_padding_mask=padding,
                                  backend="triton", **extra)
    torch.autograd.grad(out, fused, dout)

def describe(x):
    if isinstance(x, torch.Tensor):
        return ["tensor", str(x.dtype), list(x.shape), list(x.stride()), x.data_ptr() % 16]
    return [type(x).__name__, x if isinstance(x, (int, float, bool, str)) or x is None else repr(x)]

runs = {}
for mode in ("triton", "cached"):
    _launch.ENABLED = mode == "cached"
    record = []
    for offset, shared in [(0, False), (0, False), (1, False), (1, False), (0, True), (0, True), (0, False)]:
        fake.LAUNCHES.clear()
        layer(offset, shared)
        record.append([[r.name, list(r.grid), r.function, [describe(a) for a in r.args]]
                       for r in fake.LAUNCHES])
    runs[mode] = record
print("RUNS " + json.dumps({"runs": runs, "unsupported": _launch._UNSUPPORTED,
                            "compiled": len(_launch._COMPILED), "tuned": len(_launch._TUNED)}))
"""


def test_cached_launches_equal_tritons_own():
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["LED_KERNELS_AUTOTUNE"] = "1"  # the autotuned kernels' path too (candidates are not timed)
    env.pop("LED_KERNELS_FAST_LAUNCH", None)
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, cwd=REPO, timeout=900
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RUNS ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    result = json.loads(lines[-1][5:])
    assert result["unsupported"] == [], result["unsupported"]  # the cached path was taken ...
    assert result["compiled"] > 0 and result["tuned"] > 0  # ... for plain and autotuned kernels
    own, cached = result["runs"]["triton"], result["runs"]["cached"]
    assert len(own) == len(cached)
    for call, (a, b) in enumerate(zip(own, cached, strict=True)):
        assert len(a) > 4, a  # kernel A and B, forward and backward
        for launch_a, launch_b in zip(a, b, strict=True):
            assert launch_a == launch_b, (call, launch_a[0])
    # the unaligned inputs ran other compiled kernels than the aligned ones (so a cache keyed on less
    # than Triton's specialisation would have been caught above)
    aligned = {(r[0], r[2]) for r in own[1]}
    unaligned = {(r[0], r[2]) for r in own[3]}
    assert aligned != unaligned
