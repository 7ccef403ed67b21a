"""The triton backend's cached launch path (``ops/triton/_launch.py``) launches exactly what Triton's own
``kernel[grid](...)`` path launches: the same compiled kernel, grid and arguments, for every launch of
a layer's forward and backward over a sequence of calls that repeat and vary (input alignment, length,
batch, padding, global tokens, shared projections), each on fresh inputs (a stale address shows), and
for scalar arguments that Python equates but Triton specialises apart (1, True, 1.0).

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
import triton
import triton.language as tl
from benchmarks import fake_cuda_driver as fake
fake.install(arch=90)
import led_kernels as lk
from led_kernels.ops.triton import _launch

h, d, w = 2, 32, 12
torch.manual_seed(0)
keep = []  # every input buffer stays alive, so that a stale address cannot be reused by a new one


def layer(b, n, offset, shared, gi_rows, pad_rows):
    # six projections as views of one fresh fused buffer; offset 1 element = not 16-byte aligned
    store = torch.randn(b * n * 6 * h * d + 1, dtype=torch.float16)
    keep.append(store)
    fused = store[offset: offset + b * n * 6 * h * d].view(b, n, 6, h, d).detach().requires_grad_()
    mask = torch.zeros(b, n, dtype=torch.bool)
    mask[:, :gi_rows] = True
    padding = torch.zeros(b, n, dtype=torch.bool)
    padding[b - 1, n - pad_rows:] = True
    q, k, v, qg, kg, vg = fused.unbind(2)
    extra = {} if shared else dict(q_global=qg, k_global=kg, v_global=vg)
    gi = lk.global_indices(mask) if gi_rows else None
    out = lk.longformer_attention(q, k, v, w, global_idx=gi, key_padding_mask=padding,
                                  backend="triton", **extra)
    torch.autograd.grad(out, fused, torch.randn(b, n, h, d, dtype=torch.float16))
    return store


def describe(x, store):
    # an input by its place in this call's own buffer (a stale address from another call shows);
    # anything else by what the specialisation sees
    if isinstance(x, torch.Tensor):
        lo = store.data_ptr()
        if lo <= x.data_ptr() < lo + store.numel() * store.element_size():
            return ["input", x.data_ptr() - lo, list(x.shape), list(x.stride())]
        return ["tensor", str(x.dtype), list(x.shape), list(x.stride()), x.data_ptr() % 16]
    return [type(x).__name__, x if isinstance(x, (int, float, bool, str)) or x is None else repr(x)]


@triton.jit
def _probe(X, n, s, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    tl.store(X + offs, tl.load(X + offs) * s + n, mask=offs < n)


# (batch, length, offset, shared projections, global rows, padded rows): repeats (the cached path),
# unaligned inputs, another length (another specialisation and autotuning key), no global tokens
CALLS = [(2, 80, 0, False, 3, 7)] * 2 + [(2, 80, 1, False, 3, 7)] * 2 + [(1, 200, 0, True, 1, 0)] * 2
CALLS += [(2, 80, 0, False, 3, 7), (1, 200, 0, True, 0, 5), (1, 200, 0, True, 0, 5), (2, 80, 0, False, 3, 7)]
# same specialisation (lengths and strides divisible by 16), other grids: 96 rows, 3 batch elements
CALLS += [(2, 96, 0, False, 3, 7), (3, 80, 0, False, 3, 7), (2, 80, 0, False, 3, 7)]
runs = {}
for mode in ("triton", "cached"):
    _launch.ENABLED = mode == "cached"
    record = []
    for call in CALLS:
        fake.LAUNCHES.clear()
        store = layer(*call)
        record.append([[r.name, list(r.grid), r.function, [describe(a, store) for a in r.args]]
                       for r in fake.LAUNCHES])
    # True, 1 and 1.0 are equal Python keys but three specialisations for Triton
    x = torch.zeros(16)
    fake.LAUNCHES.clear()
    for n in (1, 1, 1, True, 1.0, 2, 2):
        _launch.launch(_probe, (1,), x, n, 0.5, BLOCK=16)
    record.append([[r.name, r.function, [describe(a, x) for a in r.args]] for r in fake.LAUNCHES])
    runs[mode] = record
print("RUNS " + json.dumps({"runs": runs, "unsupported": _launch._UNSUPPORTED,
                            "by_args": len(_launch._BY_ARGS), "tuned": len(_launch._TUNED)}))
"""


def test_cached_launches_equal_tritons_own(tmp_path):
    pytest.importorskip("triton")
    script = tmp_path / "launches.py"  # a file: @triton.jit reads its kernels' source
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["LED_KERNELS_AUTOTUNE"] = "1"  # the autotuned kernels' path too (candidates are not timed)
    env.pop("LED_KERNELS_FAST_LAUNCH", None)
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=REPO, timeout=900
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RUNS ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    result = json.loads(lines[-1][5:])
    assert result["unsupported"] == [], result["unsupported"]  # the cached path was taken ...
    assert result["by_args"] > 0 and result["tuned"] > 0  # ... past the binder, for autotuned kernels too
    own, cached = result["runs"]["triton"], result["runs"]["cached"]
    assert len(own) == len(cached)
    for call, (a, b) in enumerate(zip(own, cached, strict=True)):
        assert len(a) >= 4, a  # kernel A and B, forward and backward (the probe: 7 launches)
        for launch_a, launch_b in zip(a, b, strict=True):
            assert launch_a == launch_b, (call, launch_a[0])
    # the unaligned inputs ran other compiled kernels than the aligned ones, the two lengths other
    # tile configs, and the probe three kernels for 1 / True / 1.0 (so a cache keyed on less than
    # Triton's specialisation, or on the autotuner's key alone, would have been caught above)
    assert {(r[0], r[2]) for r in own[1]} != {(r[0], r[2]) for r in own[3]}
    same_kernels_other_grids = [{(r[0], r[2]) for r in own[i]} for i in (-4, -3, -2)]
    assert same_kernels_other_grids[0] == same_kernels_other_grids[2]
    assert [r[1] for r in own[-4]] != [r[1] for r in own[-2]]
    assert len({r[1] for r in own[-1][:5]}) == 3  # the probe's compiled kernels for 1, True, 1.0


TUNING_KEY_SCRIPT = r"""
import json
import torch
from benchmarks import inspect_kernels
from led_kernels.ops.triton import longformer

tuner = longformer._layer_fwd_kernel
buckets = {}
for g in (1, 16, 17, 64):
    launches = inspect_kernels.capture_launches(90, torch.bfloat16, 1, 4096, 2, 64, 256, g)
    (layer,) = [x for x in launches if x.name == "_layer_fwd_kernel"]
    buckets[g] = layer.args[tuner.arg_names.index("G_BUCKET")]
print("KEY " + json.dumps({"keys": list(tuner.keys), "buckets": buckets}))
"""


def test_layer_forward_is_tuned_per_bucket_of_global_slot_tiles(tmp_path):
    """The one-launch forward's autotuning key holds the number of global-key slot tiles (bucketed), so a
    layer with 64 global tokens is not run with the tile tuned for one (recorded launches, no compile)."""
    pytest.importorskip("triton")
    script = tmp_path / "tuning_key.py"
    script.write_text(TUNING_KEY_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["LED_KERNELS_AUTOTUNE"] = "1"  # the kernel as the autotuner wraps it on a GPU
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=REPO, timeout=600
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("KEY ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    result = json.loads(lines[-1][4:])
    assert result["keys"] == ["HEAD_DIM", "N_BUCKET", "W_BUCKET", "G_BUCKET"]
    # one slot tile (16 global tokens) or two, four: the launcher's bucket of cdiv(G, 16)
    assert result["buckets"] == {"1": 1, "16": 1, "17": 2, "64": 4}


def test_host_overhead_reports_the_time_until_the_attention_kernel(tmp_path):
    """``python -m benchmarks.host_overhead --triton-launch``: through the real launch path (sm_90
    kernels, cuLaunchKernel faked) a forward without global tokens is 3 launches (key flags, prep,
    kernel A) and with one is 4 (then the layer kernel and kernel B's combine); the host time until the
    attention kernel's launch is part of the call's."""
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["LED_KERNELS_AUTOTUNE"] = "0"  # fixed configs: fewer kernels to compile
    args = ["-m", "benchmarks.host_overhead", "--triton-launch", "--globals", "0", "1", "--reps", "5"]
    proc = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {}
    for line in proc.stdout.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[0].isdigit():
            rows[(int(fields[0]), fields[1])] = fields[2:]
    assert set(rows) == {(0, "fwd"), (0, "fwd_bwd"), (1, "fwd"), (1, "fwd_bwd")}, proc.stdout
    for g, launches in ((0, 3), (1, 4)):
        host, to_main, n_launches = (float(x) for x in rows[(g, "fwd")][:3])
        assert 0 < to_main <= host and n_launches == launches, rows[(g, "fwd")]
