"""torch.compile: the public ops and the ``led`` encoder trace into one graph, without host syncs,
with the same values and gradients as eager, and without recompiling for new sequence lengths.

How each property is shown:

- No graph break: every compile uses ``fullgraph=True`` (Dynamo raises on a break), and the whole
  encoder is also run through ``torch._dynamo.explain``.
- No host sync: the graphs AOTAutograd produces (forward and backward) are inspected for the ops
  that read a tensor's value on the host (``aten._local_scalar_dense`` is what ``.item()``,
  ``int(t)`` and ``bool(t)`` become) or make a shape depend on data (``nonzero``,
  ``masked_select``, ...). The kernels themselves are opaque custom ops that never synchronise.
- Same numbers: compiled outputs and gradients are compared with eager bitwise (the ``aot_eager``
  backend runs the same kernels); Inductor, which may fuse the reference's elementwise ops, is
  compared within float32 rounding.
- Dynamic lengths: the inputs' sequence dimension is marked with ``torch._dynamo.mark_dynamic``, and
  the compiles are counted by the backend (Dynamo calls it once per graph it compiles). The ``cpu``
  and ``triton`` backends compile once for every length. The ``torch`` backend walks the sequence in
  blocks of query rows in Python, so it compiles once per number of blocks, not per length.

The ``cuda`` backend runs its kernels through the emulator of tests/cuda_emu/ on host tensors, in
float16 (the dtypes it takes). The Triton backend runs through its interpreter on CPU
(tests/conftest.py); as documented in ``led_kernels.backends``, its first call happens in eager mode
(every test below runs eager first).
The encoder is compiled as used for training, without LayerDrop: with ``encoder_layerdrop > 0``
(training only) each call decides in Python whether a layer runs, a data-dependent branch by design.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from cases import fused_projections
from functorch.compile import make_boxed_func
from torch._dynamo.backends.common import aot_autograd

import led
import led_kernels as lk
from led.attention import GlobalTokens
from led.modeling import LEDEncoder, LEDEncoderLayer

pytestmark = [
    pytest.mark.no_nan_poison,  # trace with the real allocator
    pytest.mark.filterwarnings("ignore::UserWarning"),  # Dynamo's notes on lru_cache-wrapped helpers
]

BACKENDS = ("torch", "cpu", "triton", "cuda")
# aten ops that read device data on the host or give data-dependent shapes
SYNC_OPS = ("aten._local_scalar_dense", "aten.item", "aten.nonzero", "aten.masked_select", "aten.unique")


@pytest.fixture(params=BACKENDS)
def backend(request):
    if request.param == "cuda":
        request.getfixturevalue("emulated_cuda_interface")
        return "cuda"
    status = lk.available_backends()[request.param]
    if not status.available:
        pytest.skip(status.reason)
    return request.param


def _dtype(backend: str) -> torch.dtype:
    return torch.float16 if backend == "cuda" else torch.float32


class Recorder:
    """A torch.compile backend (AOTAutograd, then eager execution of the graphs) that counts the
    graphs Dynamo hands it and records every op of the forward and backward graphs."""

    def __init__(self) -> None:
        self.compiles = 0
        self.ops: set[str] = set()
        self._aot = aot_autograd(fw_compiler=self._record, bw_compiler=self._record)

    def _record(self, gm: torch.fx.GraphModule, example_inputs):
        self.ops.update(str(node.target) for node in gm.graph.nodes if node.op == "call_function")
        return make_boxed_func(gm.forward)

    def __call__(self, gm: torch.fx.GraphModule, example_inputs):
        self.compiles += 1
        return self._aot(gm, example_inputs)

    def assert_no_host_sync(self) -> None:
        assert self.ops, "nothing was recorded"
        synced = sorted(op for op in self.ops if op.startswith(SYNC_OPS))
        assert not synced, f"host-synchronising ops in the compiled graphs: {synced}"


def _mark_length_dynamic(first: torch.Tensor, *others: torch.Tensor) -> None:
    # The ops equate the other tensors' length with the first one's; mark_dynamic would reject that
    # (it promises a free symbol), maybe_mark_dynamic allows it.
    torch._dynamo.mark_dynamic(first, 1)
    for t in others:
        torch._dynamo.maybe_mark_dynamic(t, 1)


def _compile(fn, recorder: Recorder):
    torch._dynamo.reset()
    return torch.compile(fn, fullgraph=True, backend=recorder)


def _assert_same(actual, expected, exact: bool = True):
    for a, e in zip(actual, expected, strict=True):
        if exact:
            assert torch.equal(a, e)
        else:
            torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-6)


def _masks(b: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    gm = torch.zeros(b, n, dtype=torch.bool)
    gm[:, 0] = True
    gm[0, n // 2] = True
    gm[-1, n - 1] = True  # also padding below: a global token that is padding is padding
    pm = torch.zeros(b, n, dtype=torch.bool)
    pm[-1, n - n // 3 :] = True
    return gm, pm


MAX_GLOBAL = 4
WINDOW = 5


def _all_ops(backend: str):
    """Every public op in one function: global_indices (max_global), banded, global, longformer."""

    def fn(fused, qg_rows, gm, pm):
        q, k, v, qg, kg, vg = fused.unbind(2)  # strided views, read in place
        gi = lk.global_indices(gm, max_global=MAX_GLOBAL)
        band = lk.banded_attention(q, k, v, WINDOW, key_padding_mask=pm, global_idx=gi, backend=backend)
        rows = lk.global_attention(qg_rows, kg, vg, gi, key_padding_mask=pm, backend=backend)
        layer = lk.longformer_attention(
            q, k, v, WINDOW, global_mask=gm, key_padding_mask=pm, q_global=qg, k_global=kg, v_global=vg,
            max_global=MAX_GLOBAL, backend=backend,
        )  # fmt: skip
        return gi, band, rows, layer

    return fn


def _run_ops(fn, fused, qg_rows, gm, pm):
    gi, *outs = fn(fused, qg_rows, gm, pm)
    loss = sum((o * torch.linspace(-1, 1, o.numel()).view_as(o)).sum() for o in outs)
    grads = torch.autograd.grad(loss, (fused, qg_rows))
    return (gi, *outs, *grads)


def test_public_ops_compile_fullgraph(backend):
    """banded/global/longformer attention and global_indices(max_global): one graph, no host sync,
    bitwise the eager values and gradients (inputs are strided views of a fused projection)."""
    b, n, h, d = 2, 37, 2, 16
    fused, _ = fused_projections(b, n, h, d, dtype=_dtype(backend))
    qg_rows = torch.randn(b, MAX_GLOBAL, h, d, dtype=_dtype(backend), requires_grad=True)
    gm, pm = _masks(b, n)
    fn = _all_ops(backend)
    eager = _run_ops(fn, fused, qg_rows, gm, pm)
    rec = Recorder()
    compiled = _run_ops(_compile(fn, rec), fused, qg_rows, gm, pm)
    assert rec.compiles == 1
    rec.assert_no_host_sync()
    _assert_same(compiled, eager)
    assert eager[0].shape == (b, MAX_GLOBAL)


def test_dynamic_length_does_not_recompile(backend):
    """mark_dynamic on the sequence dimension: new lengths reuse the graph. The cpu, triton and cuda
    backends compile once; the torch backend once per number of 64-row query blocks (two here)."""
    h, d = 2, 16

    def fn(fused, gm, pm):
        q, k, v, qg, kg, vg = fused.unbind(2)
        return lk.longformer_attention(
            q, k, v, WINDOW, global_mask=gm, key_padding_mask=pm, q_global=qg, k_global=kg, v_global=vg,
            max_global=MAX_GLOBAL, backend=backend,
        )  # fmt: skip

    def run(f, fused, gm, pm):
        out = f(fused, gm, pm)
        return out, *torch.autograd.grad((out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum(), fused)

    rec = Recorder()
    compiled = _compile(fn, rec)
    lengths = (33, 50, 70, 100) if backend != "triton" else (33, 50, 70)  # 1 block of 64 rows, then 2
    for i, n in enumerate(lengths):
        torch.manual_seed(i)
        fused, _ = fused_projections(2, n, h, d, dtype=_dtype(backend))
        gm, pm = _masks(2, n)
        _mark_length_dynamic(fused, gm, pm)
        expected = run(fn, fused, gm, pm)  # eager first (see the module's docstring)
        _assert_same(run(compiled, fused, gm, pm), expected)
    assert rec.compiles == (2 if backend == "torch" else 1), rec.compiles
    rec.assert_no_host_sync()


def test_inductor_matches_eager():
    """The default CPU backend under Inductor (the ops stay opaque custom ops; the code around them is
    generated)."""
    status = lk.available_backends()["cpu"]
    if not status.available:
        pytest.skip(status.reason)
    b, n, h, d = 2, 37, 2, 16
    fused, _ = fused_projections(b, n, h, d)
    qg_rows = torch.randn(b, MAX_GLOBAL, h, d, requires_grad=True)
    gm, pm = _masks(b, n)
    fn = _all_ops("cpu")
    eager = _run_ops(fn, fused, qg_rows, gm, pm)
    torch._dynamo.reset()
    compiled = _run_ops(torch.compile(fn, fullgraph=True, backend="inductor"), fused, qg_rows, gm, pm)
    _assert_same(compiled, eager, exact=False)


# ----------------------------------------------------------------------------------------------------
# the led encoder
# ----------------------------------------------------------------------------------------------------


def _config(backend: str) -> led.LEDConfig:
    return led.LEDConfig(
        vocab_size=100, d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, attention_window=[8, 16],
        max_encoder_position_embeddings=256, max_decoder_position_embeddings=64, attn_backend=backend,
        dropout=0.0, activation_dropout=0.0,
    )  # fmt: skip


def _encoder_inputs(n: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 100, (2, n), generator=gen)
    attention_mask = torch.ones(2, n, dtype=torch.long)
    attention_mask[1, n - n // 3 :] = 0
    global_mask = torch.zeros(2, n, dtype=torch.long)
    global_mask[:, 0] = 1
    global_mask[0, 7] = 1
    global_mask[1, n - 1] = 1  # on a padded position: not a global token
    return ids, attention_mask, global_mask


def _params_and_grads(module, out, *inputs):
    params = [p for p in module.parameters() if p.requires_grad]
    weight = torch.linspace(-1, 1, out.numel()).view_as(out)
    return (out, *torch.autograd.grad((out * weight).sum(), [*params, *inputs]))


def test_encoder_layer_compiles_fullgraph(backend):
    """One encoder layer with global tokens (max_global) and padding: one graph, no host sync, eager's
    values and gradients (parameters and input) bitwise."""
    torch.manual_seed(0)
    layer = LEDEncoderLayer(_config(backend), 0).train().to(_dtype(backend))
    ids, attention_mask, global_mask = _encoder_inputs(29, seed=1)
    key_padding_mask = attention_mask == 0
    x = torch.randn(2, 29, 32, dtype=_dtype(backend), requires_grad=True)

    def fn(x, key_padding_mask, global_mask):
        glob = GlobalTokens.build(global_mask != 0, key_padding_mask, max_global=MAX_GLOBAL)
        return layer(x, key_padding_mask, glob)[0]

    def run(f):
        return _params_and_grads(layer, f(x, key_padding_mask, global_mask), x)

    eager = run(fn)
    rec = Recorder()
    compiled = run(_compile(fn, rec))
    assert rec.compiles == 1
    rec.assert_no_host_sync()
    _assert_same(compiled, eager)


@pytest.mark.parametrize("backend", ["torch", "cpu"])  # triton: the layer above and the ops suffice
def test_encoder_compiles_fullgraph_for_every_length(backend):
    """The whole encoder (ids, attention_mask, global_attention_mask, max_global): no graph break
    (explain), no host sync, eager's values and parameter gradients bitwise, one compile for lengths
    marked dynamic (see the module docstring for the torch backend)."""
    status = lk.available_backends()[backend]
    if not status.available:
        pytest.skip(status.reason)
    torch.manual_seed(0)
    encoder = LEDEncoder(_config(backend)).train()

    def fn(ids, attention_mask, global_mask):
        out = encoder(
            input_ids=ids,
            attention_mask=attention_mask,
            global_attention_mask=global_mask,
            max_global=MAX_GLOBAL,
        )
        return out.last_hidden_state

    rec = Recorder()
    compiled = _compile(fn, rec)
    for i, n in enumerate((40, 47, 61)):
        inputs = _encoder_inputs(n, seed=i)
        _mark_length_dynamic(*inputs)
        eager = _params_and_grads(encoder, fn(*inputs))
        _assert_same(_params_and_grads(encoder, compiled(*inputs)), eager)
    assert rec.compiles == 1
    rec.assert_no_host_sync()
    if backend == "cpu":  # the default backend on CPU; one explain is enough to show it
        torch._dynamo.reset()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            explanation = torch._dynamo.explain(fn)(*_encoder_inputs(40, seed=0))
        assert explanation.graph_break_count == 0
        assert explanation.graph_count == 1
