"""The providers: every way a user could compute one Longformer/LED encoder self-attention layer.

Each provider turns the shared :class:`~benchmarks.cases.Inputs` (six (B, N, H, D) views of one fused
(B, N, 6, H, D) leaf, the first G tokens global, no padding) into a :class:`Prepared`: a forward callable
that computes the whole layer (banded rows + global rows with the separate global projections) from
those views, the leaf to differentiate and the upstream gradient. Everything that a model would compute
once per forward for all its layers (global indices, FlexAttention block masks, dense SDPA masks, Hugging
Face's float mask) is built in :meth:`Provider.prepare`, outside the timed region.

Providers:

- ``torch``, ``triton``, ``cuda``, ``cpu``: ``led_kernels.longformer_attention(..., backend=name)``.
- ``hf``: transformers' eager ``LEDEncoderSelfAttention`` (chunked ``sliding_chunks`` attention).
- ``flex``: ``torch.nn.attention.flex_attention`` under ``torch.compile`` with the exact mask (GPU).
- ``sdpa``: ``scaled_dot_product_attention`` with dense boolean masks (GPU).

Size caps (:data:`SEQLEN_CAPS`) keep slow providers out of sizes they cannot finish in reasonable time.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from benchmarks.cases import Case, Inputs

LOCAL, PADDING, GLOBAL = 0, 1, 2  # per-key flags, as in led_kernels.masks

#: Largest sequence length each provider is run at, per device type (None = no cap). Estimates for
#: the default shapes (B=1, H=12, D=64): on the 2-core CPU the ``torch`` reference and ``hf`` need about
#: 1 s per forward + backward at N=4096, growing linearly, so 8192 keeps a default run within minutes;
#: dense ``sdpa`` is O(N^2) in time and its (B, 1, N, N) mask in memory (1 GiB at N=32768).
SEQLEN_CAPS: dict[tuple[str, str], int | None] = {
    ("cpu", "torch"): 8192,
    ("cpu", "hf"): 8192,
    ("cpu", "cpu"): 65536,
    ("cuda", "torch"): 32768,
    ("cuda", "hf"): 32768,
    ("cuda", "sdpa"): 32768,
    ("cuda", "flex"): None,
    ("cuda", "triton"): None,
    ("cuda", "cuda"): None,
}


@dataclass
class Prepared:
    """A provider bound to one case's inputs.

    ``forward()`` runs one layer forward with autograd recording (as in training) and returns its output;
    ``torch.autograd.grad(out, leaf, dout)`` is its backward. ``real_rows(out)`` maps the output to
    (B, N, H, D) on the real tokens (Hugging Face's output is (B, N_padded, H*D)), for correctness checks.
    """

    forward: Callable[[], torch.Tensor]
    leaf: torch.Tensor
    dout: torch.Tensor
    real_rows: Callable[[torch.Tensor], torch.Tensor]
    keepalive: tuple = ()  # objects the forward needs (masks, modules), kept with it


class Provider:
    """Base class: a name, a reason why it cannot run a case here (or None), and :meth:`prepare`."""

    name: str = ""

    def skip_reason(self, case: Case, device: torch.device, *, caps: bool = True) -> str | None:
        """Why this provider does not run ``case`` on ``device`` (None: it runs)."""
        if caps:
            cap = SEQLEN_CAPS.get((device.type, self.name))
            if cap is not None and case.seqlen > cap:
                return f"seqlen {case.seqlen} above the cap {cap} for {self.name} on {device.type} (too slow)"
        return None

    def prepare(self, inputs: Inputs) -> Prepared:
        raise NotImplementedError


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


# ---------------------------------------------------------------------------------- led_kernels


def wgmma_runs(device: torch.device) -> bool:
    """The cuda backend's wgmma kernels run on ``device``: sm_90, and sm_90a code in the extension."""
    if device.type != "cuda":
        return False
    import led_kernels._C as C

    archs = C.build_info()["cuda_archs"].split(";")
    return torch.cuda.get_device_capability(device) == (9, 0) and "90a" in archs


class _EnvScope:
    """Sets environment variables and puts the previous values back (a variable that was unset is unset)."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values = values
        self.previous: dict[str, str | None] | None = None

    def enter(self) -> None:
        if self.previous is None:
            self.previous = {name: os.environ.get(name) for name in self.values}
            os.environ.update(self.values)

    def exit(self) -> None:
        if self.previous is None:
            return
        for name, value in self.previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self.previous = None


class LedKernelsProvider(Provider):
    """``led_kernels.longformer_attention`` on one backend (``torch``, ``triton``, ``cuda`` or ``cpu``).

    ``global_idx`` is computed once by ``lk.global_indices`` outside the timed region and passed in
    (what a model does: once per forward, shared by its layers). With G = 0 no global index is passed.

    ``triton_forward`` (``triton`` only) sets attributes of ``led_kernels.ops.triton.longformer`` for
    this provider's forward calls, so that one run times variants side by side: ``FUSED_FORWARD=False``
    turns off the layer's one-launch forward (kernel B's forward inside kernel A's launch, the default;
    provider ``triton-two-launch``), ``LAYER_KEY_TILE=64`` gives B's key chunks in that launch 64-key
    tiles at A's pipeline depth instead of 128 keys two deep (provider ``triton-key64``).
    ``cuda_forward`` (``cuda`` only) likewise sets ``LED_KERNELS_CUDA_FWD`` (the forward's main-loop
    variant, ``csrc/cuda/attention_fwd.cuh``) for this provider's forward calls (provider
    ``cuda-wgmma``), and ``cuda_backward`` sets ``LED_KERNELS_CUDA_DQ`` and
    ``LED_KERNELS_CUDA_DKDV`` (``csrc/cuda/attention_bwd.cuh``; one value for both, or ``"dq/dkdv"``)
    while its backward runs: from the moment the output's gradient arrives until the inputs' gradients
    are out (provider ``cuda-mma``: the mma.sync kernels that sm_80 runs, on a GPU whose default is the
    wgmma kernels; ``cuda-wgmma16s``: the forward's wgmma16s and dQ's wgmmas, which read their query
    rows from shared memory; ``cuda-wgmma2g``: the forward's two-warpgroup wgmma2g; ``cuda-wgmma16o``: the
    forward's wgmma16o, whose lean tiles overlap the softmax with the products). ``env`` holds
    further variables set around both (provider ``cuda-nolean``: ``LED_KERNELS_CUDA_LEAN=0``, the
    kernels without their lean runs, ``csrc/cuda/attention_common.cuh``; ``cuda-two-launch``:
    ``LED_KERNELS_FUSED_FORWARD=0`` and ``LED_KERNELS_FUSED_BACKWARD=0``, the layer's kernel B forward and
    dQ in launches of their own after kernel A's instead of as extra blocks of A's,
    ``csrc/cuda/attention_{fwd,bwd}.cuh``).
    """

    def __init__(
        self,
        backend: str,
        cuda_forward: str | None = None,
        cuda_backward: str | None = None,
        name: str | None = None,
        *,
        triton_forward: dict[str, object] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.backend = backend
        self.triton_forward = dict(triton_forward or {})
        self.env = dict(env or {})
        self.cuda_forward = cuda_forward
        self.cuda_backward = cuda_backward
        self.name = backend
        if cuda_forward is not None:
            self.name = f"{backend}-{cuda_forward}"
        if name is not None:
            self.name = name

    def skip_reason(self, case: Case, device: torch.device, *, caps: bool = True) -> str | None:
        import led_kernels as lk

        backend = self.backend
        status = lk.available_backends().get(backend)
        if status is None:
            return f"led_kernels has no backend {backend!r}"
        if not status.available:
            return f"backend unavailable: {status.reason}"
        interpreted = backend == "triton" and os.environ.get("TRITON_INTERPRET") == "1"  # for checks only
        if backend in ("triton", "cuda") and device.type != "cuda" and not interpreted:
            return f"backend {backend!r} needs a CUDA GPU"
        if backend == "cpu" and device.type != "cpu":
            return "backend 'cpu' runs on CPU tensors only"
        if backend == "cuda" and case.dtype not in ("float16", "bfloat16"):
            return f"backend 'cuda' takes float16 and bfloat16, not {case.dtype}"
        wgmma = "wgmma" in (self.cuda_forward or "") or "wgmma" in (self.cuda_backward or "")  # (any variant)
        if wgmma and not wgmma_runs(device):
            return "the wgmma kernels need an sm_90 GPU and an extension built for 90a"
        return super().skip_reason(case, device, caps=caps)

    def prepare(self, inputs: Inputs) -> Prepared:
        import led_kernels as lk

        case, backend = inputs.case, self.backend
        global_idx = inputs.global_idx if case.globals > 0 else None
        forward_variant = {"LED_KERNELS_CUDA_FWD": self.cuda_forward} if self.cuda_forward else {}
        forward_env = _EnvScope(self.env | forward_variant)
        backward_env = dict(self.env)
        if self.cuda_backward:
            dq, _, dkdv = self.cuda_backward.partition("/")
            backward_env |= {"LED_KERNELS_CUDA_DQ": dq, "LED_KERNELS_CUDA_DKDV": dkdv or dq}

        def layer() -> torch.Tensor:
            views = inputs.views()
            q, k, v, qg, kg, vg = views
            forward_env.enter()
            try:
                out = lk.longformer_attention(
                    q,
                    k,
                    v,
                    case.window,
                    q_global=qg,
                    k_global=kg,
                    v_global=vg,
                    global_idx=global_idx,
                    backend=backend,
                )
            finally:
                forward_env.exit()
            if backward_env and out.requires_grad:
                # the output's gradient arrives first and the views' gradients come out of the layer's
                # backward: the scope spans exactly that backward
                scope = _EnvScope(backward_env)
                out.register_hook(lambda grad: (scope.enter(), grad)[1])
                for view in views:
                    view.register_hook(lambda grad: (scope.exit(), grad)[1])
            return out

        if not self.triton_forward:
            return Prepared(layer, inputs.fused, inputs.dout, _identity)
        from led_kernels.ops.triton import longformer as triton_layer

        def forward() -> torch.Tensor:
            previous = {name: getattr(triton_layer, name) for name in self.triton_forward}
            for name, value in self.triton_forward.items():
                setattr(triton_layer, name, value)
            try:
                return layer()
            finally:
                for name, value in previous.items():
                    setattr(triton_layer, name, value)

        return Prepared(forward, inputs.fused, inputs.dout, _identity)


# ---------------------------------------------------------------------------------- Hugging Face


class _Projection(torch.nn.Module):
    """Stands in for one of HF's ``nn.Linear`` projections: returns a precomputed tensor."""

    def __init__(self, produce: Callable[[], torch.Tensor]) -> None:
        super().__init__()
        self.produce = produce

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.produce()


class HFProvider(Provider):
    """transformers' eager ``LEDEncoderSelfAttention`` with its projections replaced by our inputs.

    The module is built from ``LEDConfig(d_model=H*D, encoder_attention_heads=H,
    attention_window=[2*w], attention_dropout=0.0)`` and put in eval mode (no dropout) with autograd on.
    Its six ``nn.Linear`` projections are replaced by modules returning our q, k, v, q_global, k_global,
    v_global as (N, B, H*D) (the layout HF has after its internal transpose); the query is returned as a
    ``.clone()`` because HF divides it in place, the global query as the gathered rows of the global
    tokens (HF projects only those); the others are views, like the other providers get.

    HF needs N to be a multiple of 2w: as ``LEDEncoder`` does once per forward, the inputs are padded
    with padding tokens outside the timed region (a padded copy of the fused leaf, real rows equal to the
    shared inputs; the upstream gradient is 0 on padding rows), and the masks are passed in HF's form:
    ``attention_mask`` per token (0 local, finfo.min padding, -finfo.min global, built with HF's own
    ``_prepare_4d_attention_mask_inverted``), ``is_index_masked``, ``is_index_global_attn`` and the Python
    bool ``is_global_attn``. The timed call is the whole module call, i.e. its chunked attention.
    """

    name = "hf"

    def skip_reason(self, case: Case, device: torch.device, *, caps: bool = True) -> str | None:
        import importlib.util

        if importlib.util.find_spec("transformers") is None:  # (importing it takes seconds: not here)
            return "transformers is not installed"
        if case.window < 1:
            return "Hugging Face needs attention_window = 2w > 0"
        return super().skip_reason(case, device, caps=caps)

    def prepare(self, inputs: Inputs) -> Prepared:
        from transformers.models.led.configuration_led import LEDConfig
        from transformers.models.led.modeling_led import (
            LEDEncoderSelfAttention,
            _prepare_4d_attention_mask_inverted,
        )

        case, device = inputs.case, inputs.device
        b, n, h, d, w = case.batch, case.seqlen, case.heads, case.head_dim, case.window
        dtype = case.torch_dtype
        c = h * d
        n_pad = math.ceil(n / (2 * w)) * 2 * w
        if n_pad == n:
            leaf, dout = inputs.fused, inputs.dout.reshape(b, n, c)
        else:
            with torch.no_grad():
                leaf = torch.zeros(b, n_pad, 6, h, d, device=device, dtype=dtype)
                leaf[:, :n] = inputs.fused
                dout = torch.zeros(b, n_pad, c, device=device, dtype=dtype)
                dout[:, :n] = inputs.dout.reshape(b, n, c)
            leaf.requires_grad_(True)

        # HF's token mask: 1 local, 2 global, 0 padding (LEDEncoder._merge_to_attention_mask), then inverted
        token_mask = torch.zeros(b, n_pad, dtype=torch.long, device=device)
        token_mask[:, :n] = 1 + inputs.global_mask.long()
        # tgt_len=1: the same (B, N) vector without materializing HF's (B, 1, N, N) expansion
        attention_mask = _prepare_4d_attention_mask_inverted(token_mask, dtype, tgt_len=1)[:, 0, 0, :]
        is_index_masked = attention_mask < 0
        is_index_global_attn = attention_mask > 0
        is_global_attn = bool(is_index_global_attn.flatten().any().item())
        # positions of the global tokens per batch element, as HF's global query rows (B, Gmax)
        gather_idx = inputs.global_idx.long().clamp(min=0)[:, :, None].expand(-1, -1, c)

        config = LEDConfig(
            d_model=c, encoder_attention_heads=h, attention_window=[2 * w], attention_dropout=0.0
        )
        module = LEDEncoderSelfAttention(config, layer_id=0).eval()

        def nbc(i: int) -> Callable[[], torch.Tensor]:
            return lambda: leaf[:, :, i].reshape(b, n_pad, c).transpose(0, 1)  # (N, B, C) view, no copy

        module.query = _Projection(lambda: nbc(0)().clone())  # HF divides the query in place
        module.key, module.value = _Projection(nbc(1)), _Projection(nbc(2))
        module.query_global = _Projection(  # (G, B, C): the global tokens' rows only, as HF projects them
            lambda: torch.gather(leaf[:, :, 3].reshape(b, n_pad, c), 1, gather_idx).transpose(0, 1)
        )
        module.key_global, module.value_global = _Projection(nbc(4)), _Projection(nbc(5))
        module.to(device=device, dtype=dtype)  # no parameters are left; kept for any buffers
        hidden_states = torch.zeros((), device=device, dtype=dtype).expand(b, n_pad, c)  # only shapes used

        def forward() -> torch.Tensor:
            return module(
                hidden_states,
                attention_mask=attention_mask,
                is_index_masked=is_index_masked,
                is_index_global_attn=is_index_global_attn,
                is_global_attn=is_global_attn,
            )[0]

        def real_rows(out: torch.Tensor) -> torch.Tensor:
            return out[:, :n].reshape(b, n, h, d)

        return Prepared(forward, leaf, dout, real_rows, keepalive=(module,))


# ---------------------------------------------------------------------------------- helpers


def key_flags(inputs: Inputs, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B, N) int8: LOCAL 0 / PADDING 1 / GLOBAL 2 (padding wins), from the inputs' global mask."""
    flags = torch.where(inputs.global_mask, GLOBAL, LOCAL).to(torch.int8)
    if key_padding_mask is not None:
        flags = flags.masked_fill(key_padding_mask, PADDING)
    return flags


def _gather_rows(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """x (B, N, H, D), idx (B, G) -> (B, G, H, D) (slot -1 reads row 0; such rows are masked later)."""
    b, _, h, d = x.shape
    return torch.gather(x, 1, idx.long().clamp(min=0)[:, :, None, None].expand(b, idx.shape[1], h, d))


def _scatter_rows(
    out: torch.Tensor, rows: torch.Tensor, idx: torch.Tensor, valid: torch.Tensor
) -> torch.Tensor:
    """Copy of out (B, N, H, D) with rows (B, G, H, D) written at the valid positions idx (B, G)."""
    b, n, h, d = out.shape
    target = torch.where(valid, idx.long(), torch.full_like(idx, n, dtype=torch.long))
    extended = torch.cat([out, out.new_zeros(b, 1, h, d)], dim=1)  # invalid slots land in row n
    extended = extended.scatter(1, target[:, :, None, None].expand_as(rows), rows)
    return extended[:, :n]


def _valid_slots(idx: torch.Tensor, flags: torch.Tensor) -> torch.Tensor:
    """(B, G) bool: slot names a position that is global (and not padding)."""
    return (idx >= 0) & (torch.gather(flags, 1, idx.long().clamp(min=0)) == GLOBAL)


def _bhnd(x: torch.Tensor) -> torch.Tensor:
    return x.transpose(1, 2)  # (B, N, H, D) view -> (B, H, N, D) view, no copy


# ---------------------------------------------------------------------------------- FlexAttention

_COMPILED_FLEX: Callable | None = None


def compiled_flex_attention() -> Callable:
    """``torch.compile(flex_attention, dynamic=False)``, created once per process.

    Every (shape, mask) combination compiles once (in the warmup, never timed); the recompile limit is
    raised so that a sweep over many shapes does not fall back to the slow eager path.
    """
    global _COMPILED_FLEX
    if _COMPILED_FLEX is None:
        import torch._dynamo
        from torch.nn.attention.flex_attention import flex_attention

        cfg = torch._dynamo.config
        for knob in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit"):
            if hasattr(cfg, knob):
                setattr(cfg, knob, max(getattr(cfg, knob), 1024))
        _COMPILED_FLEX = torch.compile(flex_attention, dynamic=False)
    return _COMPILED_FLEX


class FlexProvider(Provider):
    """FlexAttention with the exact Longformer/LED mask, two calls plus a scatter.

    Call 1 (all rows, local projections): ``mask_mod(b, h, q, kv) = ((|q - kv| <= w and kv is local) or
    kv is global) and kv is not padding and q is not padding``. Call 2 (global rows, global projections):
    the gathered global queries (B, G) against all non-padded keys. Call 2's rows are scattered over call
    1's. Inputs are passed as (B, H, N, D) transposed views of our (B, N, H, D) views (no copy).

    The two ``BlockMask``s are built once per case outside the timed region (``create_block_mask``,
    compiled on GPU). They capture the global positions: users must rebuild them whenever the global
    positions (or padding) change, e.g. for every batch; that cost is not in the timings. GPU only by
    default (``allow_cpu=True`` runs it on CPU tensors, for :mod:`benchmarks.selfcheck`); ``compile=False``
    uses the eager (dense, slow) flex_attention, for checks only.
    """

    name = "flex"

    def __init__(self, *, compile: bool = True, allow_cpu: bool = False) -> None:
        self.compile = compile
        self.allow_cpu = allow_cpu

    def skip_reason(self, case: Case, device: torch.device, *, caps: bool = True) -> str | None:
        if device.type != "cuda" and not self.allow_cpu:
            return "FlexAttention is benchmarked on GPU only"
        try:
            from torch.nn.attention.flex_attention import flex_attention  # noqa: F401
        except ImportError as exc:
            return f"torch {torch.__version__} has no FlexAttention ({exc})"
        return super().skip_reason(case, device, caps=caps)

    def prepare(self, inputs: Inputs) -> Prepared:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention

        case, device = inputs.case, inputs.device
        b, n, w, g = case.batch, case.seqlen, case.window, case.globals
        flags = key_flags(inputs)
        idx = inputs.global_idx
        valid = _valid_slots(idx, flags)
        attend = compiled_flex_attention() if self.compile else flex_attention
        compile_mask = device.type == "cuda"

        def band_mask(bi, hi, q_idx, kv_idx):
            kf, qf = flags[bi, kv_idx], flags[bi, q_idx]
            near = (q_idx - kv_idx).abs() <= w
            return (qf != PADDING) & (((kf == LOCAL) & near) | (kf == GLOBAL))

        def global_mask(bi, hi, q_idx, kv_idx):
            return valid[bi, q_idx] & (flags[bi, kv_idx] != PADDING)

        band_block_mask = create_block_mask(band_mask, b, None, n, n, device=device, _compile=compile_mask)
        glob_block_mask = (
            create_block_mask(global_mask, b, None, g, n, device=device, _compile=compile_mask) if g else None
        )

        def forward() -> torch.Tensor:
            q, k, v, qg, kg, vg = inputs.views()
            out = attend(_bhnd(q), _bhnd(k), _bhnd(v), block_mask=band_block_mask)
            out = _bhnd(out)
            if g:
                gout = attend(_bhnd(_gather_rows(qg, idx)), _bhnd(kg), _bhnd(vg), block_mask=glob_block_mask)
                out = _scatter_rows(out, _bhnd(gout), idx, valid)
            return out

        return Prepared(forward, inputs.fused, inputs.dout, _identity, (band_block_mask, glob_block_mask))


# ---------------------------------------------------------------------------------- SDPA


class SDPAProvider(Provider):
    """``torch.nn.functional.scaled_dot_product_attention`` with dense boolean masks, two calls + scatter.

    Call 1: all rows with a (B, 1, N, N) mask ``(|q - kv| <= w and kv local) or kv global``; call 2: the
    gathered global rows with the global projections and a (B, 1, G, N) mask; scatter. PyTorch picks the
    SDPA kernel (with a mask on an H100 that is the memory-efficient kernel; FlashAttention takes no
    mask). The masks are built once per case outside the timed region. Rows that attend nothing
    (padding queries, unused global slots; none in these benchmarks) attend everything and are zeroed
    afterwards, so no NaN appears. GPU only by default (``allow_cpu=True`` for checks).
    """

    name = "sdpa"

    def __init__(self, *, allow_cpu: bool = False) -> None:
        self.allow_cpu = allow_cpu

    def skip_reason(self, case: Case, device: torch.device, *, caps: bool = True) -> str | None:
        if device.type != "cuda" and not self.allow_cpu:
            return "dense SDPA is benchmarked on GPU only"
        return super().skip_reason(case, device, caps=caps)

    def prepare(self, inputs: Inputs) -> Prepared:
        import torch.nn.functional as F

        case, device = inputs.case, inputs.device
        n, w, g = case.seqlen, case.window, case.globals
        flags = key_flags(inputs)
        idx = inputs.global_idx
        valid = _valid_slots(idx, flags)
        pad_q = flags == PADDING  # (B, N)
        band = torch.ones(n, n, dtype=torch.bool, device=device).tril(w).triu(-w)  # |q - kv| <= w
        mask = (band[None] & (flags == LOCAL)[:, None, :]) | (flags == GLOBAL)[:, None, :]
        mask |= pad_q[:, :, None]  # padding queries attend everything, zeroed below
        mask = mask[:, None]  # (B, 1, N, N)
        del band
        gmask = ((flags != PADDING)[:, None, :] | ~valid[:, :, None])[:, None]  # (B, 1, G, N)
        any_pad = bool(pad_q.any())
        any_invalid = bool((~valid).any())

        def forward() -> torch.Tensor:
            q, k, v, qg, kg, vg = inputs.views()
            out = _bhnd(F.scaled_dot_product_attention(_bhnd(q), _bhnd(k), _bhnd(v), attn_mask=mask))
            if any_pad:
                out = out.masked_fill(pad_q[:, :, None, None], 0)
            if g:
                gq = _bhnd(_gather_rows(qg, idx))
                gout = _bhnd(F.scaled_dot_product_attention(gq, _bhnd(kg), _bhnd(vg), attn_mask=gmask))
                if any_invalid:
                    gout = gout.masked_fill(~valid[:, :, None, None], 0)
                out = _scatter_rows(out, gout, idx, valid)
            return out

        return Prepared(forward, inputs.fused, inputs.dout, _identity, (mask, gmask))


# ---------------------------------------------------------------------------------- registry

PROVIDERS: dict[str, Callable[[], Provider]] = {
    "torch": lambda: LedKernelsProvider("torch"),
    "triton": lambda: LedKernelsProvider("triton"),
    "triton-two-launch": lambda: LedKernelsProvider(
        "triton", name="triton-two-launch", triton_forward={"FUSED_FORWARD": False}
    ),
    "triton-key64": lambda: LedKernelsProvider(
        "triton", name="triton-key64", triton_forward={"LAYER_KEY_TILE": 64}
    ),
    "cuda": lambda: LedKernelsProvider("cuda"),
    "cuda-wgmma": lambda: LedKernelsProvider("cuda", cuda_forward="wgmma"),
    "cuda-wgmma16": lambda: LedKernelsProvider("cuda", cuda_forward="wgmma16"),
    "cuda-wgmma16s": lambda: LedKernelsProvider("cuda", "wgmma16s", "wgmmas/wgmma"),
    "cuda-wgmma2g": lambda: LedKernelsProvider("cuda", cuda_forward="wgmma2g"),
    "cuda-wgmma16o": lambda: LedKernelsProvider("cuda", cuda_forward="wgmma16o"),
    "cuda-nolean": lambda: LedKernelsProvider("cuda", name="cuda-nolean", env={"LED_KERNELS_CUDA_LEAN": "0"}),
    "cuda-two-launch": lambda: LedKernelsProvider(
        "cuda",
        name="cuda-two-launch",
        env={"LED_KERNELS_FUSED_FORWARD": "0", "LED_KERNELS_FUSED_BACKWARD": "0"},
    ),
    "cuda-mma": lambda: LedKernelsProvider("cuda", "rows32", "mma", "cuda-mma"),
    "cpu": lambda: LedKernelsProvider("cpu"),
    "hf": HFProvider,
    "flex": FlexProvider,
    "sdpa": SDPAProvider,
}


def get_provider(name: str) -> Provider:
    """A fresh provider object by name (see :data:`PROVIDERS`)."""
    try:
        return PROVIDERS[name]()
    except KeyError:
        raise ValueError(f"unknown provider {name!r}; choose from {sorted(PROVIDERS)}") from None
