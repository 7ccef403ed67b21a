"""The attention modules of LED: the encoder's Longformer self-attention (on ``led_kernels``) and the
decoder's BART attention (self and cross, with a KV cache).

Encoder self-attention
----------------------
The parameters are Hugging Face's ``LEDEncoderSelfAttention`` (``query``, ``key``, ``value``,
``query_global``, ``key_global``, ``value_global``) so checkpoints load unchanged, but the attention
itself is one ``led_kernels.longformer_attention`` call on (B, N, H, D) views of the projections:
kernel A for every row (window plus the global keys, local projections), kernel B for the global rows
(global projections), whose result replaces those rows. On the ``triton`` and ``cuda`` backends that
is the fused layer op (one preprocessing, B's rows written straight into A's output).

``query_global`` is applied only to the global tokens' hidden states (Hugging Face does the same),
not to all N tokens (``q_global_rows``). The global token positions are computed once per encoder forward
(:class:`GlobalTokens`) and shared by every layer, so the layers do no host synchronisation.

Two deliberate choices:

- **DDP and batches without global tokens.** Hugging Face skips the global projections then, so they
  get no gradient and ``DistributedDataParallel(find_unused_parameters=False)`` fails with "unused
  parameters". Here, when gradients are being recorded and a batch has no global token, the layer
  adds ``0 * sum(global projection parameters)`` to its output: the parameters take part in the graph
  and receive exact zero gradients, at the cost of one reduction over their weights (no N-sized work).
- **output_attentions.** The kernels never materialise attention weights. When
  ``output_attentions=True`` the layer additionally computes them with a slow exact path
  (:func:`exact_attention_probs`, O(N * (2w + 1 + G)) memory like Hugging Face) in Hugging Face's
  layout; the hidden states still come from the kernels, so they do not change.

Attention dropout on the encoder's probabilities is not available in the fused kernels; the public
LED checkpoints use ``attention_dropout = 0``. With ``attention_dropout > 0`` the encoder warns once in
training and runs without it (the decoder applies it normally).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

import led_kernels as lk
from led.configuration import LEDConfig


@dataclass
class GlobalTokens:
    """Global-token bookkeeping of one encoder forward, shared by every layer.

    Attributes:
        index: (B, G) int32 sorted positions of the global tokens, -1 padded (``lk.global_indices``);
            positions that are padding are not in it.
        gather_index: (B, G) int64, ``index`` with -1 replaced by 0 (for gathers).
        scatter_index: (B, G) int64, ``index`` with -1 replaced by N (a spill row cut off afterwards).
        valid: (B, G) bool, the slot holds a global token.
    """

    index: torch.Tensor
    gather_index: torch.Tensor
    scatter_index: torch.Tensor
    valid: torch.Tensor

    @classmethod
    def build(
        cls,
        global_mask: torch.Tensor,
        key_padding_mask: torch.Tensor | None,
        max_global: int | None = None,
    ) -> GlobalTokens | None:
        """From (B, N) bool masks; ``None`` when no slot is needed (no global token in the batch).

        Without ``max_global`` this reads the batch's largest global count once (the forward's one
        host synchronisation); with it, nothing is synchronised.
        """
        if key_padding_mask is not None:
            global_mask = global_mask & ~key_padding_mask  # padding wins, as in Hugging Face
        index = lk.global_indices(global_mask, max_global)
        if index.shape[1] == 0:
            return None
        n = global_mask.shape[1]
        valid = index >= 0
        index_long = index.long()
        return cls(
            index=index,
            gather_index=torch.where(valid, index_long, torch.zeros_like(index_long)),
            scatter_index=torch.where(valid, index_long, torch.full_like(index_long, n)),
            valid=valid,
        )

    @property
    def count(self) -> int:
        """G, the number of slots."""
        return self.index.shape[1]

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, N, ...) -> (B, G, ...): the rows of the global tokens (slot -1 reads row 0)."""
        index = self.gather_index.view(*self.gather_index.shape, *([1] * (x.dim() - 2)))
        return torch.gather(x, 1, index.expand(-1, -1, *x.shape[2:]))


def _safe_softmax(scores: torch.Tensor) -> torch.Tensor:
    # -inf masking where a row may be all -inf: such rows give 0, not NaN
    row_max = scores.amax(dim=-1, keepdim=True)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    e = torch.exp(scores - row_max)
    denom = e.sum(dim=-1, keepdim=True)
    return e / torch.where(denom > 0, denom, torch.ones_like(denom))


def exact_attention_probs(
    q: torch.Tensor,
    k: torch.Tensor,
    q_global_rows: torch.Tensor | None,
    k_global: torch.Tensor | None,
    window: int,
    key_padding_mask: torch.Tensor | None,
    glob: GlobalTokens | None,
    scale: float,
    block: int = 256,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The attention weights of one encoder layer in Hugging Face's layout (slow path, for inspection).

    Args:
        q, k: (B, N, H, D) local projections.
        q_global_rows: (B, G, H, D) ``query_global`` of the global tokens; k_global: (B, N, H, D).
        window: one-sided window w.
        key_padding_mask: (B, N) bool, True = padding.
        glob: the global tokens, or None.
        scale: score scale.
        block: query rows per block (bounds the temporary score matrix).

    Returns:
        ``(local, global)``: local (B, H, N, G + 2w + 1) and global (B, H, N, G) (None without
        global tokens), in q's dtype. See :class:`led.outputs.LEDEncoderBaseModelOutput`.
    """
    b, n, h, _ = q.shape
    acc = torch.promote_types(q.dtype, torch.float32)
    padding = key_padding_mask if key_padding_mask is not None else torch.zeros(b, n, dtype=torch.bool)
    padding = padding.to(q.device)
    is_global = torch.zeros(b, n + 1, dtype=torch.bool, device=q.device)
    if glob is not None:
        is_global.scatter_(1, glob.scatter_index, True)
    is_global = is_global[:, :n]
    band_key_ok = F.pad(~padding & ~is_global, (window, window), value=False)  # (B, N + 2w)
    k_pad = F.pad(k, (0, 0, 0, 0, window, window))  # (B, N + 2w, H, D)
    k_glob = glob.gather(k).to(acc) if glob is not None else None
    width = 2 * window + 1

    rows = []
    for start in range(0, n, block):
        end = min(n, start + block)
        m = end - start
        offsets = torch.arange(m, device=q.device)[:, None] + torch.arange(width, device=q.device)[None]
        q_blk = q[:, start:end].to(acc)
        dense = torch.einsum("bmhd,bkhd->bhmk", q_blk, k_pad[:, start : end + 2 * window].to(acc)) * scale
        band = dense.gather(-1, offsets.expand(b, h, m, width))  # (B, H, M, 2w+1), key i - w + t
        ok = band_key_ok[:, start : end + 2 * window][:, offsets]  # (B, M, 2w+1)
        band = band.masked_fill(~ok[:, None], float("-inf"))
        if k_glob is not None:
            scores_g = torch.einsum("bmhd,bghd->bhmg", q_blk, k_glob) * scale
            scores_g = scores_g.masked_fill(~glob.valid[:, None, None, :], float("-inf"))
            band = torch.cat([scores_g, band], dim=-1)
        probs = _safe_softmax(band)
        # Hugging Face zeroes the local rows of padding tokens and of global tokens
        zero_row = padding[:, start:end] | is_global[:, start:end]
        rows.append(probs.masked_fill(zero_row[:, None, :, None], 0.0))
    local = torch.cat(rows, dim=2).to(q.dtype)

    if glob is None or q_global_rows is None or k_global is None:
        return local, None
    scores = torch.einsum("bghd,bnhd->bhgn", q_global_rows.to(acc), k_global.to(acc)) * scale
    allowed = glob.valid[:, None, :, None] & ~padding[:, None, None, :]
    probs = _safe_softmax(scores.masked_fill(~allowed, float("-inf")))
    return local, probs.transpose(2, 3).to(q.dtype)


class LEDEncoderSelfAttention(nn.Module):
    """Longformer self-attention of one encoder layer; Hugging Face's parameters, ``led_kernels`` compute.

    Args:
        config: the model config (``attn_backend`` is read at every forward, so it can be changed).
        layer_id: index of the layer (selects ``config.attention_window[layer_id]``).
    """

    def __init__(self, config: LEDConfig, layer_id: int) -> None:
        super().__init__()
        self.config = config
        self.num_heads = config.encoder_attention_heads
        self.head_dim = config.d_model // self.num_heads
        self.embed_dim = config.d_model
        self.layer_id = layer_id
        self.one_sided_attn_window_size = config.attention_window[layer_id] // 2
        self.query = nn.Linear(self.embed_dim, self.embed_dim)
        self.key = nn.Linear(self.embed_dim, self.embed_dim)
        self.value = nn.Linear(self.embed_dim, self.embed_dim)
        self.query_global = nn.Linear(self.embed_dim, self.embed_dim)
        self.key_global = nn.Linear(self.embed_dim, self.embed_dim)
        self.value_global = nn.Linear(self.embed_dim, self.embed_dim)

    def _global_params_zero(self) -> torch.Tensor:
        # 0 * (sum of the global projections' parameters): keeps them in the graph (see module doc)
        total = sum(
            p.sum() for m in (self.query_global, self.key_global, self.value_global) for p in m.parameters()
        )
        return total * 0.0

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        glob: GlobalTokens | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Self-attention over (B, N, d_model) hidden states.

        Args:
            hidden_states: (B, N, d_model).
            key_padding_mask: (B, N) bool, True = padding (its rows come out 0 before ``output``).
            glob: global tokens of this forward (:meth:`GlobalTokens.build`), or None.
            output_attentions: also return the attention weights (slow exact path).

        Returns:
            ``(out (B, N, d_model), local weights or None, global weights or None)``.
        """
        b, n, _ = hidden_states.shape
        h, d = self.num_heads, self.head_dim
        backend = self.config.attn_backend
        q = self.query(hidden_states).view(b, n, h, d)
        k = self.key(hidden_states).view(b, n, h, d)
        v = self.value(hidden_states).view(b, n, h, d)
        window = self.one_sided_attn_window_size
        qg = kg = vg = None
        if glob is not None:
            qg = self.query_global(glob.gather(hidden_states)).view(b, glob.count, h, d)
            kg = self.key_global(hidden_states).view(b, n, h, d)
            vg = self.value_global(hidden_states).view(b, n, h, d)
        out = lk.longformer_attention(
            q,
            k,
            v,
            window,
            key_padding_mask=key_padding_mask,
            global_idx=None if glob is None else glob.index,
            q_global_rows=qg,
            k_global=kg,
            v_global=vg,
            backend=backend,
        )
        if glob is None and torch.is_grad_enabled() and self.query_global.weight.requires_grad:
            out = out + self._global_params_zero()
        out = out.reshape(b, n, h * d)

        local_probs = global_probs = None
        if output_attentions:
            local_probs, global_probs = exact_attention_probs(
                q, k, qg, kg, window, key_padding_mask, glob, 1.0 / math.sqrt(d)
            )
        return out, local_probs, global_probs


class LEDEncoderAttention(nn.Module):
    """Hugging Face's wrapper: ``longformer_self_attn`` followed by the ``output`` projection."""

    def __init__(self, config: LEDConfig, layer_id: int) -> None:
        super().__init__()
        self.longformer_self_attn = LEDEncoderSelfAttention(config, layer_id)
        self.output = nn.Linear(config.d_model, config.d_model)

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        glob: GlobalTokens | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """See :meth:`LEDEncoderSelfAttention.forward`; the output is projected by ``output``."""
        out, local_probs, global_probs = self.longformer_self_attn(
            hidden_states, key_padding_mask, glob, output_attentions
        )
        return self.output(out), local_probs, global_probs


_warned_attention_dropout = False


def warn_encoder_attention_dropout(p: float) -> None:
    """Warn once that the fused encoder attention ignores ``attention_dropout``."""
    global _warned_attention_dropout
    if not _warned_attention_dropout:
        _warned_attention_dropout = True
        warnings.warn(
            f"config.attention_dropout={p} is not applied to the encoder's self-attention: the fused "
            "led_kernels attention has no dropout (the decoder still applies it).",
            stacklevel=3,
        )


class LEDDecoderAttention(nn.Module):
    """BART multi-head attention (decoder self-attention or cross-attention) with a KV cache.

    Without ``output_attentions`` it runs ``scaled_dot_product_attention``; with it, an explicit
    softmax (not upcast, like Hugging Face's eager path) so the weights can be returned. Masks are
    additive float masks ``0 / finfo(dtype).min`` built once per forward (Hugging Face's convention,
    which also fixes what a fully masked row does: it spreads uniformly instead of producing NaN).
    """

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        self.scaling = self.head_dim**-0.5
        self.k_proj = nn.Linear(embed_dim, embed_dim)
        self.v_proj = nn.Linear(embed_dim, embed_dim)
        self.q_proj = nn.Linear(embed_dim, embed_dim)
        self.out_proj = nn.Linear(embed_dim, embed_dim)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_value_states: torch.Tensor | None = None,
        past_key_value: tuple[torch.Tensor, torch.Tensor] | None = None,
        attention_mask: torch.Tensor | None = None,
        is_causal: bool = False,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, tuple[torch.Tensor, torch.Tensor]]:
        """Attention of (B, T, d) queries.

        Args:
            hidden_states: (B, T, d) queries (and keys/values for self-attention).
            key_value_states: (B, S, d) encoder states for cross-attention, else None.
            past_key_value: cached (key, value), each (B, H, S_past, D). For cross-attention a cached
                pair is reused as is; for self-attention the new keys/values are appended.
            attention_mask: additive float mask broadcastable to (B, H, T, S), or None.
            is_causal: plain causal masking (used only when ``attention_mask`` is None).
            output_attentions: return the (B, H, T, S) weights.

        Returns:
            ``(out (B, T, d), weights or None, (key, value) to cache)``.
        """
        b, t, _ = hidden_states.shape
        # Hugging Face scales q before the product; doing the same keeps the rounding identical
        q = self._heads(self.q_proj(hidden_states) * self.scaling)
        if key_value_states is not None and past_key_value is not None:
            k, v = past_key_value
        else:
            source = hidden_states if key_value_states is None else key_value_states
            k, v = self._heads(self.k_proj(source)), self._heads(self.v_proj(source))
            if past_key_value is not None:
                k = torch.cat([past_key_value[0], k], dim=2)
                v = torch.cat([past_key_value[1], v], dim=2)
        dropout = self.dropout if self.training else 0.0
        causal_sdpa = (
            is_causal and attention_mask is None and t > 1 and t == k.shape[2] and not output_attentions
        )
        if is_causal and attention_mask is None and t > 1 and not causal_sdpa:
            s = k.shape[2]
            causal = torch.ones(t, s, dtype=torch.bool, device=q.device).tril(s - t)
            attention_mask = torch.zeros(t, s, dtype=q.dtype, device=q.device).masked_fill(
                ~causal, torch.finfo(q.dtype).min
            )
        weights = None
        if output_attentions:
            scores = torch.matmul(q, k.transpose(-1, -2))
            if attention_mask is not None:
                scores = scores + attention_mask
            weights = torch.softmax(scores, dim=-1)
            out = torch.matmul(F.dropout(weights, p=dropout, training=self.training), v)
        else:
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=attention_mask, dropout_p=dropout, is_causal=causal_sdpa, scale=1.0
            )
        out = out.transpose(1, 2).reshape(b, t, self.embed_dim)
        return self.out_proj(out), weights, (k, v)
