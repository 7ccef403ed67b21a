"""The public attention ops: validate, build the mask bookkeeping, choose a backend, run it.

Layout everywhere is (B, N, H, D), the view of a linear projection (FlashAttention's layout). Any
strides are accepted as long as the last dimension is contiguous; inputs are never copied.
"""

from __future__ import annotations

import torch

from led_kernels import _validation as V
from led_kernels.backends import choose_backend
from led_kernels.masks import gather_rows, global_indices, key_flags, scatter_rows, valid_global_slots


def _key_flags(impl, batch, n, device, key_padding_mask, global_idx) -> torch.Tensor:
    """The backend's own key-flag builder when it has one (one launch on a GPU), else the aten ops."""
    build = getattr(impl, "key_flags", key_flags)
    return build(batch, n, device, key_padding_mask, global_idx)


def banded_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window: int,
    *,
    key_padding_mask: torch.Tensor | None = None,
    global_idx: torch.Tensor | None = None,
    scale: float | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Sliding-window attention with global keys: the local part of a Longformer/LED layer.

    Every non-padded query ``i`` attends, under one softmax (float32), the keys
    ``{j : |i - j| <= window, j not padding, j not global}`` plus every non-padded global key
    (each once). Padding queries produce exactly 0; a row with nothing to attend produces 0.

    Args:
        q, k, v: (B, N, H, D) float16/bfloat16/float32 (float64 on the ``torch`` backend), last
            dimension contiguous, any other strides (e.g. views of a fused QKV projection).
        window: one-sided window ``w >= 0`` (Hugging Face's ``attention_window // 2``); ``w >= N`` is
            dense attention.
        key_padding_mask: (B, N) bool, True = padding.
        global_idx: (B, G) int32/int64 global positions from :func:`global_indices` (sorted, -1
            padded). Their keys are removed from the band and attended by every row instead.
        scale: score scale (a real number, numpy scalars too; ``>= 0`` on the ``triton`` backend),
            default ``1 / sqrt(D)``.
        backend: ``"auto"``, ``"torch"``, ``"triton"``, ``"cuda"`` or ``"cpu"``.

    Returns:
        (B, N, H, D) in the input dtype. Differentiable in q, k and v.

    Example::

        >>> q = k = v = torch.randn(1, 100, 2, 16)
        >>> out = banded_attention(q, k, v, window=8)   # each token sees 8 neighbours on each side
        >>> out.shape
        torch.Size([1, 100, 2, 16])
    """
    V.check_qkv({"q": q, "k": k, "v": v})
    V.check_same_shape(q, "q", k, "k")
    V.check_same_shape(q, "q", v, "v")
    b, n, _, d = q.shape
    window = min(V.check_window(window), n)  # w >= N is dense: one value for every backend
    if key_padding_mask is not None:
        V.check_mask(key_padding_mask, "key_padding_mask", b, n, q.device)
    if global_idx is not None:
        global_idx = V.check_global_idx(global_idx, b, n, q.device)
    scale = V.check_scale(scale, d)
    impl = choose_backend(backend, q.device, q.dtype, d)
    flags = _key_flags(impl, b, n, q.device, key_padding_mask, global_idx)
    return impl.banded_attention(q, k, v, window, flags, global_idx, scale)


def global_attention(
    q_global: torch.Tensor,
    k_global: torch.Tensor,
    v_global: torch.Tensor,
    global_idx: torch.Tensor,
    *,
    key_padding_mask: torch.Tensor | None = None,
    scale: float | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """Dense attention of the global rows: the other half of a Longformer/LED layer.

    Slot ``s`` of batch element ``b`` is the global token at position ``global_idx[b, s]``; it
    attends every non-padded key of ``k_global``/``v_global`` under one float32 softmax. Slots
    holding -1 (or a padded position) produce 0 rows.

    Args:
        q_global: (B, G, H, D) the global projections' queries of the global tokens, one row per
            slot of ``global_idx`` (``longformer_attention`` gathers them for you).
        k_global, v_global: (B, N, H, D) the global projections' keys and values of all tokens.
        global_idx: (B, G) int32/int64 from :func:`global_indices`.
        key_padding_mask: (B, N) bool, True = padding.
        scale: as in :func:`banded_attention`, default ``1 / sqrt(D)``.
        backend: as in :func:`banded_attention`.

    Returns:
        (B, G, H, D) in the input dtype. Differentiable in q_global, k_global and v_global.

    Example::

        >>> gi = global_indices(torch.tensor([[True] + [False] * 99]))     # first token global
        >>> kg = vg = torch.randn(1, 100, 2, 16)
        >>> global_attention(kg[:, :1], kg, vg, gi).shape
        torch.Size([1, 1, 2, 16])
    """
    V.check_qkv({"q_global": q_global, "k_global": k_global, "v_global": v_global})
    V.check_same_shape(k_global, "k_global", v_global, "v_global")
    b, n, h, d = k_global.shape
    global_idx = V.check_global_idx(global_idx, b, n, k_global.device)
    V.check_global_rows(q_global, "q_global", k_global, "k_global", global_idx)
    if key_padding_mask is not None:
        V.check_mask(key_padding_mask, "key_padding_mask", b, n, k_global.device)
    scale = V.check_scale(scale, d)
    impl = choose_backend(backend, k_global.device, k_global.dtype, d)
    flags = _key_flags(impl, b, n, k_global.device, key_padding_mask, global_idx)
    return impl.global_attention(q_global, k_global, v_global, global_idx, flags, scale)


def longformer_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    window: int,
    *,
    global_mask: torch.Tensor | None = None,
    key_padding_mask: torch.Tensor | None = None,
    q_global: torch.Tensor | None = None,
    k_global: torch.Tensor | None = None,
    v_global: torch.Tensor | None = None,
    scale: float | None = None,
    backend: str = "auto",
    global_idx: torch.Tensor | None = None,
    max_global: int | None = None,
    q_global_rows: torch.Tensor | None = None,
) -> torch.Tensor:
    """A whole Longformer/LED self-attention (exactly Hugging Face's ``LEDEncoderSelfAttention``).

    Every non-padded row gets :func:`banded_attention` (window plus global keys, local projections
    q, k, v); then every global row is overwritten by :func:`global_attention` with the global
    projections (all non-padded keys). Padding rows are 0.

    Args:
        q, k, v: (B, N, H, D) local projections (see :func:`banded_attention` for dtypes/strides).
        window: one-sided window ``w`` (Hugging Face: ``attention_window // 2``).
        global_mask: (B, N) bool, True = global token (a position that is also padding is padding).
        key_padding_mask: (B, N) bool, True = padding.
        q_global, k_global, v_global: (B, N, H, D) global projections of all tokens; each defaults
            to q, k, v (one shared projection).
        scale: as in :func:`banded_attention`, default ``1 / sqrt(D)``.
        backend: ``"auto"``, ``"torch"``, ``"triton"``, ``"cuda"`` or ``"cpu"``.
        global_idx: optional precomputed ``global_indices(global_mask)``; pass it to share one
            computation across layers and avoid a host sync (then ``global_mask`` may be omitted).
        max_global: slots for ``global_indices`` when ``global_idx`` is not given (no host sync); an
            int in ``[0, 2**31)``, which may exceed N.
        q_global_rows: (B, G, H, D) instead of ``q_global``: the global query projection of the global
            tokens only, row ``s`` for the token at ``global_idx[b, s]`` (as :func:`global_attention`
            takes it; rows of empty slots are ignored). Hugging Face projects ``query_global`` this way,
            G rows instead of N. G is ``global_idx.shape[1]``: pass ``global_idx`` (or ``global_mask``
            with ``max_global = G``).

    Returns:
        (B, N, H, D) in the input dtype, differentiable in all six projections (and
        ``q_global_rows``).

    Example::

        >>> q, k, v = torch.randn(3, 2, 300, 4, 32).unbind(0)
        >>> glob = torch.zeros(2, 300, dtype=torch.bool); glob[:, 0] = True   # <s> is global
        >>> out = longformer_attention(q, k, v, window=64, global_mask=glob)
        >>> out.shape
        torch.Size([2, 300, 4, 32])
    """
    projections = {"q_global": q_global, "k_global": k_global, "v_global": v_global}
    tensors = {"q": q, "k": k, "v": v, **{name: x for name, x in projections.items() if x is not None}}
    if q_global_rows is not None:
        if q_global is not None:
            raise ValueError("pass q_global (B, N, H, D) or q_global_rows (B, G, H, D), not both")
        tensors["q_global_rows"] = q_global_rows
    V.check_qkv(tensors)  # one pass over all of them: this runs on every layer's call
    for name, x in tensors.items():
        if x is not q and x is not q_global_rows:
            V.check_same_shape(q, "q", x, name)
    b, n, _, d = q.shape
    window = min(V.check_window(window), n)  # w >= N is dense: one value for every backend
    if key_padding_mask is not None:
        V.check_mask(key_padding_mask, "key_padding_mask", b, n, q.device)
    if global_idx is not None:
        global_idx = V.check_global_idx(global_idx, b, n, q.device)
    elif global_mask is not None:
        V.check_mask(global_mask, "global_mask", b, n, q.device)
        global_idx = global_indices(global_mask, max_global)
    if q_global_rows is not None:
        V.check_global_rows(q_global_rows, "q_global_rows", q, "q", global_idx)
    scale = V.check_scale(scale, d)
    impl = choose_backend(backend, q.device, q.dtype, d)
    # a backend that runs the layer as one op (one preprocessing, B's rows written into A's output)
    # takes an empty index without global tokens; its global projections are then unused
    one_op = hasattr(impl, "longformer_attention")
    no_globals = global_idx is None
    if one_op and no_globals:
        global_idx = torch.empty((b, 0), dtype=torch.int32, device=q.device)
    flags = _key_flags(impl, b, n, q.device, key_padding_mask, global_idx)  # once for both halves
    if one_op:
        rows = q_global_rows is not None  # (B, G, H, D) rows: the backend places them at their positions
        projections = (
            (None, None, None) if no_globals else (q_global_rows if rows else q_global, k_global, v_global)
        )
        return impl.longformer_attention(
            q, k, v, *projections, window, flags, global_idx, scale, q_global_rows=rows
        )
    out = impl.banded_attention(q, k, v, window, flags, global_idx, scale)
    if global_idx is None:
        return out
    if q_global_rows is None:
        q_global_rows = gather_rows(q if q_global is None else q_global, global_idx)
    kg = k if k_global is None else k_global
    vg = v if v_global is None else v_global
    gout = impl.global_attention(q_global_rows, kg, vg, global_idx, flags, scale)
    return scatter_rows(out, gout, global_idx, valid_global_slots(global_idx, flags))
