"""The LED encoder-decoder and its heads, module-for-module Hugging Face's layout (same state-dict keys).

- Encoder: token embedding (shared) + learned positions (no offset), ``layernorm_embedding``,
  post-LN layers (self-attention on ``led_kernels``, GELU FFN). Global token positions are computed
  once per forward and shared by all layers; nothing in a layer synchronises with the host.
- Decoder: BART (learned positions, post-LN, causal self-attention, cross-attention, KV cache).
- Heads: ``LEDForConditionalGeneration`` (tied ``lm_head`` + ``final_logits_bias``),
  ``LEDForQuestionAnswering``, ``LEDForSequenceClassification`` (transformers 4.x's, pooled at the
  last ``</s>`` of the decoder output; removed from transformers 5, kept here with 4.x's names).

Padding: Hugging Face pads the encoder input to a multiple of ``max(attention_window)``; our ops do not
need it, so by default nothing is padded. ``pad_to_window_size=True`` (config or forward) pads like
Hugging Face; real-token outputs are the same either way.
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from led.attention import (
    GlobalTokens,
    LEDDecoderAttention,
    LEDEncoderAttention,
    warn_encoder_attention_dropout,
)
from led.configuration import LEDConfig
from led.generation import GenerationMixin
from led.outputs import (
    LEDDecoderOutput,
    LEDEncoderBaseModelOutput,
    LEDSeq2SeqLMOutput,
    LEDSeq2SeqModelOutput,
    LEDSeq2SeqQuestionAnsweringModelOutput,
    LEDSeq2SeqSequenceClassifierOutput,
    PastKeyValues,
    encoder_output,
)

ACTIVATIONS = {
    "gelu": F.gelu,
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
}


def _activation(name: str):
    if name not in ACTIVATIONS:
        raise ValueError(f"activation_function {name!r} is not supported; use one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


def _parameter_dtype(dtype) -> torch.dtype | str | None:
    """``from_pretrained``'s ``dtype``: None, ``"auto"``, or a floating dtype given as a ``torch.dtype``
    or by name (``"float16"``, ``"torch.bfloat16"``, as ``transformers`` takes it)."""
    if dtype is None or dtype == "auto":
        return dtype
    if isinstance(dtype, str):
        named = getattr(torch, dtype.removeprefix("torch."), None)
        if not isinstance(named, torch.dtype):
            raise ValueError(
                f"dtype must name a torch floating dtype (e.g. 'bfloat16') or be 'auto', got {dtype!r}"
            )
        dtype = named
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype, its name, 'auto' or None, got {type(dtype).__name__}")
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype (the parameters' dtype), got {dtype}")
    return dtype


def shift_tokens_right(
    input_ids: torch.Tensor, pad_token_id: int | None, decoder_start_token_id: int
) -> torch.Tensor:
    """Shift ids one position right, start with ``decoder_start_token_id``, and turn -100 into padding.

    The decoder inputs for teacher forcing, as Hugging Face builds them from ``labels``.
    """
    if pad_token_id is None:
        raise ValueError("config.pad_token_id has to be defined to shift tokens")
    shifted = input_ids.new_zeros(input_ids.shape)
    shifted[:, 1:] = input_ids[:, :-1].clone()
    shifted[:, 0] = decoder_start_token_id
    return shifted.masked_fill(shifted == -100, pad_token_id)


def _check_token_inputs(
    input_ids,
    inputs_embeds,
    d_model: int,
    vocab_size: int,
    masks: dict[str, Any],
    ids_name: str = "input_ids",
) -> None:
    """(B, N) ids inside the vocabulary or (B, N, d_model) embeddings, and (B, N) masks on their device:
    a mask of another shape would broadcast (a (B, 1) global mask makes every token global) or index past
    the sequence. ``ids_name``: the ids' argument, as errors name it."""
    tokens = input_ids if input_ids is not None else inputs_embeds
    name = ids_name if input_ids is not None else "inputs_embeds"
    if not isinstance(tokens, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tokens).__name__}")
    if input_ids is not None and input_ids.dim() != 2:
        raise ValueError(f"{ids_name} must be (B, N), got shape {tuple(input_ids.shape)}")
    if input_ids is not None:
        _check_token_ids(input_ids, vocab_size, ids_name)
    if input_ids is None and (inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != d_model):
        raise ValueError(
            f"inputs_embeds must be (B, N, d_model={d_model}), got shape {tuple(inputs_embeds.shape)}"
        )
    shape = tuple(tokens.shape[:2])
    for mask_name, mask in masks.items():
        if mask is None:
            continue
        if not isinstance(mask, torch.Tensor):
            raise TypeError(f"{mask_name} must be a torch.Tensor, got {type(mask).__name__}")
        if tuple(mask.shape) != shape:
            raise ValueError(
                f"{mask_name} must have the shape (B, N) = {shape} of {name}, got {tuple(mask.shape)}"
            )
        if mask.device != tokens.device:
            raise ValueError(f"{mask_name} is on {mask.device} but {name} is on {tokens.device}")


class TokenIdError(ValueError, IndexError):
    """A token id outside the vocabulary: a ``ValueError`` naming the argument, and still the
    ``IndexError`` that the embedding raised for it before the ids were checked."""


def _check_token_ids(ids: torch.Tensor, vocab_size: int, name: str) -> None:
    """Integer ids inside the vocabulary. The values are checked on CPU tensors only: on a GPU the check
    would be a host synchronisation (an id past the vocabulary is then the embedding's device assert)."""
    if ids.dtype == torch.bool or ids.is_floating_point() or ids.is_complex():
        raise TypeError(f"{name} must hold integer token ids, got {ids.dtype}")
    tracing = torch.compiler.is_compiling() or torch.jit.is_tracing()
    if ids.numel() and ids.device.type == "cpu" and not tracing:
        low, high = ids.min().item(), ids.max().item()
        if low < 0 or high >= vocab_size:
            bad = low if low < 0 else high
            raise TokenIdError(f"{name} holds token id {bad}, outside the vocabulary [0, {vocab_size})")


def _vocab_size(embed_tokens: nn.Module, config) -> int:
    # the embedding's rows (set_input_embeddings may have given another table than the config's)
    return getattr(embed_tokens, "num_embeddings", config.vocab_size)


def _check_decoder_masks(
    attention_mask, encoder_attention_mask, b: int, t: int, s: int, encoder_states
) -> None:
    """The decoder's padding mask: (B, >= past + T), of which the first past + T columns are read, as
    transformers reads them (its length is checked only for T > 1: a one-token step reads no mask). The
    cross-attention mask: (B, S) or (1, S) of the encoder's states."""
    if attention_mask is not None:
        if not isinstance(attention_mask, torch.Tensor):
            raise TypeError(
                f"decoder_attention_mask must be a torch.Tensor, got {type(attention_mask).__name__}"
            )
        if (
            attention_mask.dim() != 2
            or attention_mask.shape[0] != b
            or (t > 1 and attention_mask.shape[1] < s)
        ):
            got = tuple(attention_mask.shape)
            raise ValueError(f"decoder_attention_mask must be (B, past + T) = ({b}, {s}), got {got}")
    if encoder_attention_mask is not None and encoder_states is not None:
        if not isinstance(encoder_attention_mask, torch.Tensor):
            kind = type(encoder_attention_mask).__name__
            raise TypeError(f"the encoder's attention_mask must be a torch.Tensor, got {kind}")
        batch, length = encoder_states.shape[:2]
        shape = tuple(encoder_attention_mask.shape)
        if len(shape) != 2 or shape[0] not in (batch, 1) or shape[1] != length:
            raise ValueError(
                f"the encoder's attention_mask must have the shape (B, S) = {(batch, length)} of its states "
                f"(or (1, S)), got {shape}"
            )


def _float_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # Hugging Face's additive mask: 0 where allowed, finfo.min elsewhere, made once (never summed twice)
    zero = torch.zeros((), dtype=dtype, device=allowed.device)
    return torch.where(allowed, zero, torch.finfo(dtype).min)


class LEDLearnedPositionalEmbedding(nn.Embedding):
    """Learned positions 0..num_embeddings-1 (no offset, unlike BART)."""

    def forward(self, length: int, past_length: int = 0) -> torch.Tensor:  # type: ignore[override]
        """(length, d) embeddings of positions ``past_length .. past_length + length - 1``."""
        if past_length + length > self.num_embeddings:
            raise ValueError(
                f"sequence of {past_length + length} positions is longer than the model's "
                f"{self.num_embeddings} position embeddings"
            )
        positions = torch.arange(
            past_length, past_length + length, dtype=torch.long, device=self.weight.device
        )
        return super().forward(positions)


class LEDEncoderLayer(nn.Module):
    """Post-LN encoder layer: Longformer self-attention, then the FFN."""

    def __init__(self, config: LEDConfig, layer_id: int) -> None:
        super().__init__()
        self.config = config
        self.embed_dim = config.d_model
        self.self_attn = LEDEncoderAttention(config, layer_id)
        self.self_attn_layer_norm = nn.LayerNorm(self.embed_dim)
        self.activation_fn = _activation(config.activation_function)
        self.fc1 = nn.Linear(self.embed_dim, config.encoder_ffn_dim)
        self.fc2 = nn.Linear(config.encoder_ffn_dim, self.embed_dim)
        self.final_layer_norm = nn.LayerNorm(self.embed_dim)

    def forward(
        self,
        hidden_states: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        glob: GlobalTokens | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(B, N, d) -> (B, N, d), plus the attention weights when asked."""
        cfg = self.config
        residual = hidden_states
        hidden_states, local_probs, global_probs = self.self_attn(
            hidden_states, key_padding_mask, glob, output_attentions
        )
        hidden_states = F.dropout(hidden_states, p=cfg.dropout, training=self.training)
        hidden_states = self.self_attn_layer_norm(residual + hidden_states)

        residual = hidden_states
        hidden_states = self.activation_fn(self.fc1(hidden_states))
        hidden_states = F.dropout(hidden_states, p=cfg.activation_dropout, training=self.training)
        hidden_states = F.dropout(self.fc2(hidden_states), p=cfg.dropout, training=self.training)
        hidden_states = self.final_layer_norm(residual + hidden_states)

        if hidden_states.dtype == torch.float16:
            # Hugging Face clamps fp16 outputs when any is inf/nan; torch.where keeps it free of host syncs
            clamp = torch.finfo(torch.float16).max - 1000
            hidden_states = torch.where(
                torch.isfinite(hidden_states).all(), hidden_states, hidden_states.clamp(-clamp, clamp)
            )
        return hidden_states, local_probs, global_probs


class LEDDecoderLayer(nn.Module):
    """Post-LN BART decoder layer: causal self-attention, cross-attention, FFN."""

    def __init__(self, config: LEDConfig) -> None:
        super().__init__()
        self.config = config
        self.embed_dim = config.d_model
        heads = config.decoder_attention_heads
        self.self_attn = LEDDecoderAttention(self.embed_dim, heads, dropout=config.attention_dropout)
        self.self_attn_layer_norm = nn.LayerNorm(self.embed_dim)
        self.encoder_attn = LEDDecoderAttention(self.embed_dim, heads, dropout=config.attention_dropout)
        self.encoder_attn_layer_norm = nn.LayerNorm(self.embed_dim)
        self.activation_fn = _activation(config.activation_function)
        self.fc1 = nn.Linear(self.embed_dim, config.decoder_ffn_dim)
        self.fc2 = nn.Linear(config.decoder_ffn_dim, self.embed_dim)
        self.final_layer_norm = nn.LayerNorm(self.embed_dim)

    def forward(
        self,
        hidden_states: torch.Tensor,
        self_mask: torch.Tensor | None,
        encoder_hidden_states: torch.Tensor | None,
        cross_mask: torch.Tensor | None,
        past_key_value: tuple[torch.Tensor, ...] | None = None,
        output_attentions: bool = False,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, tuple[torch.Tensor, ...]]:
        """Returns ``(hidden, self weights, cross weights, (self_k, self_v, cross_k, cross_v))``."""
        cfg = self.config
        residual = hidden_states
        self_past = past_key_value[:2] if past_key_value is not None else None
        hidden_states, self_weights, self_kv = self.self_attn(
            hidden_states,
            None,
            self_past,
            self_mask,
            is_causal=is_causal,
            output_attentions=output_attentions,
        )
        hidden_states = F.dropout(hidden_states, p=cfg.dropout, training=self.training)
        hidden_states = self.self_attn_layer_norm(residual + hidden_states)

        cross_weights, cross_kv = None, ()
        if encoder_hidden_states is not None:
            residual = hidden_states
            cross_past = (
                past_key_value[2:4] if past_key_value is not None and len(past_key_value) == 4 else None
            )
            hidden_states, cross_weights, cross_kv = self.encoder_attn(
                hidden_states,
                encoder_hidden_states,
                cross_past,
                cross_mask,
                output_attentions=output_attentions,
            )
            hidden_states = F.dropout(hidden_states, p=cfg.dropout, training=self.training)
            hidden_states = self.encoder_attn_layer_norm(residual + hidden_states)

        residual = hidden_states
        hidden_states = self.activation_fn(self.fc1(hidden_states))
        hidden_states = F.dropout(hidden_states, p=cfg.activation_dropout, training=self.training)
        hidden_states = F.dropout(self.fc2(hidden_states), p=cfg.dropout, training=self.training)
        hidden_states = self.final_layer_norm(residual + hidden_states)
        return hidden_states, self_weights, cross_weights, (*self_kv, *cross_kv)


def _layer_dropped(module: nn.Module, p: float) -> bool:
    # LayerDrop: a CPU random draw (no device sync), only in training
    return module.training and p > 0 and bool(torch.rand([]) < p)


class LEDEncoder(nn.Module):
    """The Longformer encoder. ``embed_tokens`` is the model's shared embedding."""

    def __init__(self, config: LEDConfig, embed_tokens: nn.Embedding | None = None) -> None:
        super().__init__()
        self.config = config
        if embed_tokens is None:
            embed_tokens = nn.Embedding(config.vocab_size, config.d_model, config.pad_token_id)
        self.embed_tokens = embed_tokens
        self.embed_positions = LEDLearnedPositionalEmbedding(
            config.max_encoder_position_embeddings, config.d_model
        )
        self.layers = nn.ModuleList([LEDEncoderLayer(config, i) for i in range(config.encoder_layers)])
        self.layernorm_embedding = nn.LayerNorm(config.d_model)
        self.gradient_checkpointing = False

    def _pad_to_window(self, inputs_embeds, attention_mask, global_attention_mask):
        window = max(self.config.attention_window)
        b, n = inputs_embeds.shape[:2]
        pad = (window - n % window) % window
        if pad == 0:
            return 0, inputs_embeds, attention_mask, global_attention_mask
        pad_ids = torch.full(
            (b, pad), self.config.pad_token_id, dtype=torch.long, device=inputs_embeds.device
        )
        inputs_embeds = torch.cat([inputs_embeds, self.embed_tokens(pad_ids).to(inputs_embeds.dtype)], dim=1)
        if attention_mask is None:
            attention_mask = torch.ones(b, n, dtype=torch.long, device=inputs_embeds.device)
        attention_mask = F.pad(attention_mask, (0, pad), value=0)
        if global_attention_mask is not None:
            global_attention_mask = F.pad(global_attention_mask, (0, pad), value=0)
        return pad, inputs_embeds, attention_mask, global_attention_mask

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        global_attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        *,
        max_global: int | None = None,
        pad_to_window_size: bool | None = None,
    ) -> LEDEncoderBaseModelOutput | tuple:
        """Encode (B, N) ids (or embeddings).

        Args:
            input_ids: (B, N) token ids, or ``inputs_embeds`` (B, N, d).
            attention_mask: (B, N), 1 = token, 0 = padding.
            global_attention_mask: (B, N), 1 = global attention (ignored where ``attention_mask`` is 0).
            output_attentions: also return the attention weights (slow exact path, see
                :mod:`led.attention`).
            output_hidden_states: also return the input of every layer and the output.
            return_dict: return :class:`LEDEncoderBaseModelOutput` (default) or a tuple.
            max_global: upper bound on the global tokens per sequence; avoids the one host
                synchronisation (for ``torch.compile`` / CUDA graphs).
            pad_to_window_size: pad like Hugging Face (default ``config.pad_to_window_size``).
        """
        cfg = self.config
        output_attentions = cfg.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = (
            cfg.output_hidden_states if output_hidden_states is None else output_hidden_states
        )
        return_dict = cfg.return_dict if return_dict is None else return_dict
        pad_to_window_size = cfg.pad_to_window_size if pad_to_window_size is None else pad_to_window_size
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids and inputs_embeds")
        masks = {"attention_mask": attention_mask, "global_attention_mask": global_attention_mask}
        _check_token_inputs(input_ids, inputs_embeds, cfg.d_model, _vocab_size(self.embed_tokens, cfg), masks)
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids)
        if self.training and cfg.attention_dropout > 0:
            warn_encoder_attention_dropout(cfg.attention_dropout)

        pad = 0
        if pad_to_window_size:
            pad, inputs_embeds, attention_mask, global_attention_mask = self._pad_to_window(
                inputs_embeds, attention_mask, global_attention_mask
            )
        n = inputs_embeds.shape[1]
        key_padding_mask = None if attention_mask is None else attention_mask == 0
        glob = None
        if global_attention_mask is not None:
            glob = GlobalTokens.build(global_attention_mask != 0, key_padding_mask, max_global)

        hidden_states = inputs_embeds + self.embed_positions(n)
        hidden_states = self.layernorm_embedding(hidden_states)
        hidden_states = F.dropout(hidden_states, p=cfg.dropout, training=self.training)

        all_states: tuple[torch.Tensor, ...] = ()
        all_local: tuple[torch.Tensor, ...] = ()
        all_global: tuple[torch.Tensor, ...] = ()
        for layer in self.layers:
            if output_hidden_states:
                all_states += (hidden_states,)
            if _layer_dropped(self, cfg.encoder_layerdrop):
                continue
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                hidden_states, local_probs, global_probs = checkpoint(
                    layer, hidden_states, key_padding_mask, glob, output_attentions, use_reentrant=False
                )
            else:
                hidden_states, local_probs, global_probs = layer(
                    hidden_states, key_padding_mask, glob, output_attentions
                )
            if output_attentions:
                all_local += (local_probs,)
                if global_probs is not None:
                    all_global += (global_probs,)
        if output_hidden_states:
            all_states += (hidden_states,)

        if pad > 0:  # back to the caller's length (Hugging Face keeps global_attentions padded; so do we)
            hidden_states = hidden_states[:, :-pad]
            all_states = tuple(s[:, :-pad] for s in all_states)
            all_local = tuple(a[:, :, :-pad] for a in all_local)

        out = LEDEncoderBaseModelOutput(
            last_hidden_state=hidden_states,
            hidden_states=all_states if output_hidden_states else None,
            attentions=all_local if output_attentions else None,
            global_attentions=all_global if output_attentions and glob is not None else None,
        )
        return out if return_dict else out.to_tuple()


class LEDDecoder(nn.Module):
    """The BART decoder. ``embed_tokens`` is the model's shared embedding."""

    def __init__(self, config: LEDConfig, embed_tokens: nn.Embedding | None = None) -> None:
        super().__init__()
        self.config = config
        if embed_tokens is None:
            embed_tokens = nn.Embedding(config.vocab_size, config.d_model, config.pad_token_id)
        self.embed_tokens = embed_tokens
        self.embed_positions = LEDLearnedPositionalEmbedding(
            config.max_decoder_position_embeddings, config.d_model
        )
        self.layers = nn.ModuleList([LEDDecoderLayer(config) for _ in range(config.decoder_layers)])
        self.layernorm_embedding = nn.LayerNorm(config.d_model)
        self.gradient_checkpointing = False

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
        encoder_attention_mask: torch.Tensor | None = None,
        past_key_values: PastKeyValues | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> LEDDecoderOutput | tuple:
        """Decode (B, T) ids given the encoder states.

        Args:
            input_ids: (B, T) decoder ids (only the new ones when ``past_key_values`` is given), or
                ``inputs_embeds`` (B, T, d).
            attention_mask: (B, past + T) decoder padding mask, 1 = token. As in Hugging Face it is
                ignored for single-token steps.
            encoder_hidden_states: (B, S, d); encoder_attention_mask: (B, S), 1 = token.
            past_key_values: the cache returned by a previous call (legacy tuple format, see
                :mod:`led.outputs`).
            use_cache: return the updated cache.
        """
        cfg = self.config
        output_attentions = cfg.output_attentions if output_attentions is None else output_attentions
        output_hidden_states = (
            cfg.output_hidden_states if output_hidden_states is None else output_hidden_states
        )
        use_cache = cfg.use_cache if use_cache is None else use_cache
        return_dict = cfg.return_dict if return_dict is None else return_dict
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of decoder_input_ids and decoder_inputs_embeds")
        if inputs_embeds is None:
            vocab_size = _vocab_size(self.embed_tokens, cfg)
            _check_token_inputs(input_ids, None, cfg.d_model, vocab_size, {}, ids_name="decoder_input_ids")
            inputs_embeds = self.embed_tokens(input_ids)
        if self.gradient_checkpointing and self.training and use_cache:
            use_cache = False  # the cache is incompatible with recomputation (as in Hugging Face)
        b, t = inputs_embeds.shape[:2]
        dtype, device = inputs_embeds.dtype, inputs_embeds.device
        past_length = past_key_values[0][0].shape[2] if past_key_values is not None else 0
        _check_decoder_masks(
            attention_mask, encoder_attention_mask, b, t, past_length + t, encoder_hidden_states
        )

        # masks, once per forward: causal (+ padding) for t > 1, none for single-token steps (as HF)
        self_mask, is_causal = None, False
        if t > 1:
            if attention_mask is None and past_length == 0:
                is_causal = True
            else:
                s = past_length + t
                allowed = torch.ones(t, s, dtype=torch.bool, device=device).tril(past_length)[None, None]
                if attention_mask is not None:
                    allowed = allowed & attention_mask[:, None, None, :s].bool()
                self_mask = _float_mask(allowed, dtype)
        cross_mask = None
        if encoder_hidden_states is not None and encoder_attention_mask is not None:
            cross_mask = _float_mask(encoder_attention_mask[:, None, None, :].bool(), dtype)

        hidden_states = inputs_embeds + self.embed_positions(t, past_length)
        hidden_states = self.layernorm_embedding(hidden_states)
        hidden_states = F.dropout(hidden_states, p=cfg.dropout, training=self.training)

        all_states: tuple[torch.Tensor, ...] = ()
        all_self: tuple[torch.Tensor, ...] = ()
        all_cross: tuple[torch.Tensor, ...] = ()
        cache: list[tuple[torch.Tensor, ...]] = []
        for i, layer in enumerate(self.layers):
            if output_hidden_states:
                all_states += (hidden_states,)
            if _layer_dropped(self, cfg.decoder_layerdrop):
                continue
            past = past_key_values[i] if past_key_values is not None else None
            args = (
                hidden_states,
                self_mask,
                encoder_hidden_states,
                cross_mask,
                past,
                output_attentions,
                is_causal,
            )
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                hidden_states, self_w, cross_w, kv = checkpoint(layer, *args, use_reentrant=False)
            else:
                hidden_states, self_w, cross_w, kv = layer(*args)
            if use_cache:
                cache.append(kv)
            if output_attentions:
                all_self += (self_w,)
                if cross_w is not None:
                    all_cross += (cross_w,)
        if output_hidden_states:
            all_states += (hidden_states,)

        out = LEDDecoderOutput(
            last_hidden_state=hidden_states,
            past_key_values=tuple(cache) if use_cache else None,
            hidden_states=all_states if output_hidden_states else None,
            attentions=all_self if output_attentions else None,
            cross_attentions=all_cross if output_attentions and encoder_hidden_states is not None else None,
        )
        return out if return_dict else out.to_tuple()


class LEDPreTrainedModel(nn.Module):
    """Shared plumbing: weight init, Hugging Face folders, gradient checkpointing."""

    config_class = LEDConfig
    base_model_prefix = "led"

    def __init__(self, config: LEDConfig) -> None:
        super().__init__()
        if not isinstance(config, LEDConfig):
            raise TypeError(f"config must be a led.LEDConfig, got {type(config).__name__}")
        self.config = config

    # ---- initialisation ------------------------------------------------------------------------
    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.init_std
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def post_init(self) -> None:
        """Initialise every weight like Hugging Face (normal(0, init_std), zero biases) and tie."""
        self.apply(self._init_weights)
        self.tie_weights()

    def tie_weights(self) -> None:
        """Tie the output embedding to the input one (no-op without an LM head)."""

    # ---- accessors ------------------------------------------------------------------------------
    @property
    def base_model(self) -> LEDModel:
        """The :class:`LEDModel` inside (``self`` for ``LEDModel``)."""
        return getattr(self, self.base_model_prefix, self)

    def get_input_embeddings(self) -> nn.Embedding:
        """The shared token embedding."""
        return self.base_model.shared

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        """Replace the shared embedding (encoder and decoder use it too)."""
        base = self.base_model
        base.shared = base.encoder.embed_tokens = base.decoder.embed_tokens = value
        self.tie_weights()

    def get_encoder(self) -> LEDEncoder:
        """The encoder."""
        return self.base_model.encoder

    def get_decoder(self) -> LEDDecoder:
        """The decoder."""
        return self.base_model.decoder

    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the parameters."""
        return next(p.dtype for p in self.parameters() if p.is_floating_point())

    def num_parameters(self) -> int:
        """Number of distinct parameters (tied ones counted once)."""
        return sum(p.numel() for p in self.parameters())

    def set_attn_backend(self, backend: str) -> None:
        """Switch the encoder attention backend (one of ``led.configuration.BACKEND_NAMES``)."""
        from led.configuration import BACKEND_NAMES

        if backend not in BACKEND_NAMES:
            raise ValueError(f"attn_backend must be one of {BACKEND_NAMES}, got {backend!r}")
        self.config.attn_backend = backend

    # ---- gradient checkpointing -----------------------------------------------------------------
    def gradient_checkpointing_enable(
        self, gradient_checkpointing_kwargs: dict[str, Any] | None = None
    ) -> None:
        """Recompute each encoder/decoder layer in the backward (training only), as Hugging Face does.

        ``gradient_checkpointing_kwargs`` is accepted for compatibility; layers always use
        non-reentrant checkpointing. The decoder cache is turned off while it is on in training.
        """
        for module in (self.get_encoder(), self.get_decoder()):
            module.gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        """Turn gradient checkpointing off."""
        for module in (self.get_encoder(), self.get_decoder()):
            module.gradient_checkpointing = False

    @property
    def is_gradient_checkpointing(self) -> bool:
        """Whether gradient checkpointing is on."""
        return self.get_encoder().gradient_checkpointing

    # ---- Hugging Face folders -------------------------------------------------------------------
    @classmethod
    def from_pretrained(
        cls,
        path: str | os.PathLike,
        attn_backend: str | None = None,
        *,
        config: LEDConfig | None = None,
        dtype: torch.dtype | str | None = None,
        device: torch.device | str | None = None,
        strict: bool = False,
        **config_overrides: Any,
    ):
        """Load a Hugging Face LED folder (``config.json`` + safetensors or ``pytorch_model.bin``).

        Args:
            path: the folder (as written by ``transformers``' or our ``save_pretrained``).
            attn_backend: encoder attention backend; default: the config's (``"auto"``).
            config: use this config instead of the folder's ``config.json``.
            dtype: parameter dtype: a floating ``torch.dtype`` or its name (``"bfloat16"``,
                ``"torch.float16"``); default float32; ``"auto"`` keeps the checkpoint's. Also taken
                under transformers' older name ``torch_dtype``.
            device: where to put the model.
            strict: raise on missing or unexpected weights instead of warning.
            **config_overrides: config fields to change (e.g. ``num_labels=3``, ``dropout=0.0``).

        Keys may come with or without the ``led.`` prefix; tied weights (``led.shared``, both
        ``embed_tokens``, ``lm_head``) are filled from whichever is present; a missing
        ``final_logits_bias`` is zero. Heads missing from the checkpoint keep their random
        initialisation (with a warning). The model is returned in ``eval()`` mode.
        """
        from led import checkpoint as ckpt

        if "torch_dtype" in config_overrides:  # transformers' older name, still accepted there
            torch_dtype = config_overrides.pop("torch_dtype")
            if dtype is not None:
                raise ValueError("pass dtype or its older name torch_dtype, not both")
            dtype = torch_dtype
        dtype = _parameter_dtype(dtype)
        if device is not None and not isinstance(device, torch.device):
            try:
                device = torch.device(device)
            except (RuntimeError, TypeError) as err:
                raise ValueError(
                    f"device must be a torch.device or a device string, got {device!r} ({err})"
                ) from err
        if attn_backend is not None:  # checked with the other fields
            config_overrides = {**config_overrides, "attn_backend": attn_backend}
        if config is None:
            config = LEDConfig.from_pretrained(path, **config_overrides)
        else:  # rebuilt, so that the overrides are converted and checked as the constructor does it
            config = LEDConfig.from_dict(config.to_dict(), **config_overrides)
        state_dict = ckpt.load_state_dict(path)
        if dtype == "auto":
            dtype = next((t.dtype for t in state_dict.values() if t.is_floating_point()), torch.float32)
        model = cls(config)
        ckpt.load_into(model, state_dict, strict=strict)
        del state_dict
        if dtype is not None:
            model = model.to(dtype)
        if device is not None:
            model = model.to(device)
        if isinstance(model, GenerationMixin):
            model.generation_config = ckpt.load_generation_config(path, config)
        return model.eval()

    def save_pretrained(self, path: str | os.PathLike, safe_serialization: bool = True) -> None:
        """Write a Hugging Face folder: ``config.json``, weights (tied copies dropped), and
        ``generation_config.json`` for generation models.

        Args:
            path: the folder (created if needed).
            safe_serialization: ``model.safetensors`` (default) or ``pytorch_model.bin``.
        """
        from led import checkpoint as ckpt

        ckpt.save_folder(self, path, safe_serialization=safe_serialization)


class LEDModel(LEDPreTrainedModel):
    """The bare LED encoder-decoder (Hugging Face's ``LEDModel``): returns the decoder's states.

    Example::

        >>> cfg = LEDConfig(vocab_size=100, d_model=32, encoder_layers=2, decoder_layers=2,
        ...                 encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
        ...                 decoder_ffn_dim=64, attention_window=8, max_encoder_position_embeddings=256,
        ...                 max_decoder_position_embeddings=64)
        >>> model = LEDModel(cfg).eval()
        >>> ids = torch.randint(3, 100, (2, 50))
        >>> glob = torch.zeros_like(ids); glob[:, 0] = 1
        >>> out = model(ids, global_attention_mask=glob, decoder_input_ids=ids[:, :7])
        >>> out.last_hidden_state.shape, out.encoder_last_hidden_state.shape
        (torch.Size([2, 7, 32]), torch.Size([2, 50, 32]))
    """

    def __init__(self, config: LEDConfig) -> None:
        super().__init__(config)
        self.shared = nn.Embedding(config.vocab_size, config.d_model, config.pad_token_id)
        # transformers 5 ties the encoder/decoder embeddings to `shared` only with tie_word_embeddings
        # (4.x always did; its untied checkpoints still load: missing copies are filled from `shared`)
        tied = self.shared if config.tie_word_embeddings else None
        self.encoder = LEDEncoder(config, tied)
        self.decoder = LEDDecoder(config, tied)
        self.post_init()

    @property
    def base_model(self) -> LEDModel:
        """``self``."""
        return self

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: LEDEncoderBaseModelOutput | tuple | None = None,
        global_attention_mask: torch.Tensor | None = None,
        past_key_values: PastKeyValues | None = None,
        inputs_embeds: torch.Tensor | None = None,
        decoder_inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        *,
        max_global: int | None = None,
        pad_to_window_size: bool | None = None,
    ) -> LEDSeq2SeqModelOutput | tuple:
        """Hugging Face's ``LEDModel.forward`` arguments; see :meth:`LEDEncoder.forward` for the
        encoder ones (``max_global``, ``pad_to_window_size`` are ours).

        Without ``decoder_input_ids``/``decoder_inputs_embeds`` the decoder gets ``input_ids``
        shifted right (BART's denoising setup; limited to the decoder's position count).
        """
        cfg = self.config
        return_dict = cfg.return_dict if return_dict is None else return_dict
        if decoder_input_ids is None and decoder_inputs_embeds is None:
            if input_ids is None:
                raise ValueError(
                    "pass decoder_input_ids (or input_ids, which are then shifted into the decoder)"
                )
            decoder_input_ids = shift_tokens_right(input_ids, cfg.pad_token_id, cfg.decoder_start_token_id)
        if encoder_outputs is None:
            encoder_outputs = self.encoder(
                input_ids=input_ids,
                attention_mask=attention_mask,
                global_attention_mask=global_attention_mask,
                inputs_embeds=inputs_embeds,
                output_attentions=output_attentions,
                output_hidden_states=output_hidden_states,
                return_dict=True,
                max_global=max_global,
                pad_to_window_size=pad_to_window_size,
            )
        else:
            encoder_outputs = encoder_output(encoder_outputs, cfg.d_model)
        memory = encoder_outputs.last_hidden_state
        decoder_in = decoder_input_ids if decoder_input_ids is not None else decoder_inputs_embeds
        if isinstance(decoder_in, torch.Tensor) and (
            decoder_in.dim() < 2 or decoder_in.shape[0] != memory.shape[0]
        ):
            raise ValueError(
                f"the decoder inputs must be (B, L...) with the encoder's batch B = {memory.shape[0]}, "
                f"got shape {tuple(decoder_in.shape)}"
            )
        decoder_outputs = self.decoder(
            input_ids=decoder_input_ids,
            attention_mask=decoder_attention_mask,
            encoder_hidden_states=encoder_outputs.last_hidden_state,
            encoder_attention_mask=attention_mask,
            past_key_values=past_key_values,
            inputs_embeds=decoder_inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        out = LEDSeq2SeqModelOutput(
            last_hidden_state=decoder_outputs.last_hidden_state,
            past_key_values=decoder_outputs.past_key_values,
            decoder_hidden_states=decoder_outputs.hidden_states,
            decoder_attentions=decoder_outputs.attentions,
            cross_attentions=decoder_outputs.cross_attentions,
            encoder_last_hidden_state=encoder_outputs.last_hidden_state,
            encoder_hidden_states=encoder_outputs.hidden_states,
            encoder_attentions=encoder_outputs.attentions,
            encoder_global_attentions=encoder_outputs.global_attentions,
        )
        return out if return_dict else out.to_tuple()


def _seq2seq_fields(outputs: LEDSeq2SeqModelOutput) -> dict[str, Any]:
    return {
        "past_key_values": outputs.past_key_values,
        "decoder_hidden_states": outputs.decoder_hidden_states,
        "decoder_attentions": outputs.decoder_attentions,
        "cross_attentions": outputs.cross_attentions,
        "encoder_last_hidden_state": outputs.encoder_last_hidden_state,
        "encoder_hidden_states": outputs.encoder_hidden_states,
        "encoder_attentions": outputs.encoder_attentions,
        "encoder_global_attentions": outputs.encoder_global_attentions,
    }


class LEDForConditionalGeneration(GenerationMixin, LEDPreTrainedModel):
    """LED with the language-modelling head (summarisation): ``lm_head`` tied to ``led.shared``, plus
    the ``final_logits_bias`` buffer. ``labels`` give the cross-entropy loss (decoder inputs are the
    labels shifted right). ``generate`` does greedy and beam search (:mod:`led.generation`).
    """

    def __init__(self, config: LEDConfig) -> None:
        super().__init__(config)
        self.led = LEDModel(config)
        self.register_buffer("final_logits_bias", torch.zeros(1, config.vocab_size))
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.post_init()

    def tie_weights(self) -> None:
        """``lm_head.weight`` is ``led.shared.weight`` when ``config.tie_word_embeddings``."""
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.led.shared.weight

    def get_output_embeddings(self) -> nn.Linear:
        """The LM head."""
        return self.lm_head

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: LEDEncoderBaseModelOutput | tuple | None = None,
        global_attention_mask: torch.Tensor | None = None,
        past_key_values: PastKeyValues | None = None,
        inputs_embeds: torch.Tensor | None = None,
        decoder_inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        *,
        max_global: int | None = None,
        pad_to_window_size: bool | None = None,
    ) -> LEDSeq2SeqLMOutput | tuple:
        """Hugging Face's arguments; ``labels`` (B, T) with -100 = ignored. See :meth:`LEDModel.forward`."""
        cfg = self.config
        return_dict = cfg.return_dict if return_dict is None else return_dict
        if labels is not None:
            use_cache = False
            if decoder_input_ids is None and decoder_inputs_embeds is None:
                decoder_input_ids = shift_tokens_right(labels, cfg.pad_token_id, cfg.decoder_start_token_id)
        outputs = self.led(
            input_ids,
            attention_mask=attention_mask,
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask,
            encoder_outputs=encoder_outputs,
            global_attention_mask=global_attention_mask,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            decoder_inputs_embeds=decoder_inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            max_global=max_global,
            pad_to_window_size=pad_to_window_size,
        )
        logits = self.lm_head(outputs.last_hidden_state) + self.final_logits_bias.to(
            outputs.last_hidden_state.dtype
        )
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.view(-1, logits.shape[-1]), labels.view(-1).to(logits.device))
        out = LEDSeq2SeqLMOutput(loss=loss, logits=logits, **_seq2seq_fields(outputs))
        return out if return_dict else out.to_tuple()

    def prepare_decoder_input_ids_from_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """``labels`` shifted right into decoder inputs."""
        return shift_tokens_right(labels, self.config.pad_token_id, self.config.decoder_start_token_id)

    def resize_token_embeddings(self, new_num_tokens: int) -> nn.Embedding:
        """Grow or shrink the vocabulary (new rows random, like Hugging Face's non-mean resize)."""
        old = self.led.shared
        new = nn.Embedding(
            new_num_tokens,
            old.embedding_dim,
            old.padding_idx,
            device=old.weight.device,
            dtype=old.weight.dtype,
        )
        self._init_weights(new)
        keep = min(new_num_tokens, old.num_embeddings)
        with torch.no_grad():
            new.weight[:keep] = old.weight[:keep]
            bias = self.final_logits_bias.new_zeros(1, new_num_tokens)
            bias[:, :keep] = self.final_logits_bias[:, :keep]
        self.final_logits_bias = bias
        if not self.config.tie_word_embeddings:
            head = nn.Linear(
                old.embedding_dim,
                new_num_tokens,
                bias=False,
                device=old.weight.device,
                dtype=old.weight.dtype,
            )
            self._init_weights(head)
            with torch.no_grad():
                head.weight[:keep] = self.lm_head.weight[:keep]
            self.lm_head = head
        else:
            self.lm_head = nn.Linear(old.embedding_dim, new_num_tokens, bias=False)
        self.config.vocab_size = new_num_tokens
        self.set_input_embeddings(new)
        return new


class LEDClassificationHead(nn.Module):
    """Sentence-level head (transformers 4.x's ``LEDClassificationHead``): dropout, dense, tanh, out."""

    def __init__(self, input_dim: int, inner_dim: int, num_classes: int, pooler_dropout: float) -> None:
        super().__init__()
        self.dense = nn.Linear(input_dim, inner_dim)
        self.dropout = nn.Dropout(p=pooler_dropout)
        self.out_proj = nn.Linear(inner_dim, num_classes)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(B, d) -> (B, num_classes)."""
        hidden_states = self.dropout(hidden_states)
        hidden_states = torch.tanh(self.dense(hidden_states))
        return self.out_proj(self.dropout(hidden_states))


def _classification_loss(config: LEDConfig, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    # transformers' problem_type rules (regression / single-label / multi-label)
    num_labels = config.num_labels
    if config.problem_type is None:
        if num_labels == 1:
            config.problem_type = "regression"
        elif labels.dtype in (torch.long, torch.int):
            config.problem_type = "single_label_classification"
        else:
            config.problem_type = "multi_label_classification"
    if config.problem_type == "regression":
        if num_labels == 1:
            return F.mse_loss(logits.squeeze(), labels.squeeze().to(logits.dtype))
        return F.mse_loss(logits, labels.to(logits.dtype))
    if config.problem_type == "single_label_classification":
        return F.cross_entropy(logits.view(-1, num_labels), labels.view(-1))
    return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))


class LEDForSequenceClassification(LEDPreTrainedModel):
    """transformers 4.x's ``LEDForSequenceClassification`` (removed in 5.x), same weights and behaviour.

    The decoder runs on ``input_ids`` shifted right; the representation is the decoder state at the
    last ``</s>`` (``eos_token_id``) of each sequence, fed to ``classification_head``
    (``dense`` -> tanh -> ``out_proj``). Every sequence must hold the same number of ``</s>``.
    """

    def __init__(self, config: LEDConfig) -> None:
        super().__init__(config)
        self.led = LEDModel(config)
        self.classification_head = LEDClassificationHead(
            config.d_model, config.d_model, config.num_labels, config.classifier_dropout
        )
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: LEDEncoderBaseModelOutput | tuple | None = None,
        global_attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        decoder_inputs_embeds: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        *,
        max_global: int | None = None,
        pad_to_window_size: bool | None = None,
    ) -> LEDSeq2SeqSequenceClassifierOutput | tuple:
        """Hugging Face 4.x's arguments; ``labels`` (B,) class ids (or floats for regression/multi-label)."""
        cfg = self.config
        return_dict = cfg.return_dict if return_dict is None else return_dict
        if labels is not None:
            use_cache = False
        if input_ids is None:
            raise NotImplementedError(
                f"{type(self).__name__} needs input_ids (it pools at their </s> tokens)"
            )
        outputs = self.led(
            input_ids,
            attention_mask=attention_mask,
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask,
            encoder_outputs=encoder_outputs,
            global_attention_mask=global_attention_mask,
            inputs_embeds=inputs_embeds,
            decoder_inputs_embeds=decoder_inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            max_global=max_global,
            pad_to_window_size=pad_to_window_size,
        )
        hidden = outputs.last_hidden_state
        eos_mask = input_ids.eq(cfg.eos_token_id).to(hidden.device)
        counts = eos_mask.sum(1)
        if len(torch.unique_consecutive(counts)) > 1:
            raise ValueError("All examples must have the same number of <eos> tokens.")
        if int(counts[0]) == 0:
            raise ValueError("input_ids hold no </s> (eos_token_id) token to pool at")
        pooled = hidden[eos_mask, :].view(hidden.shape[0], -1, hidden.shape[-1])[:, -1, :]
        logits = self.classification_head(pooled)
        loss = _classification_loss(cfg, logits, labels) if labels is not None else None
        out = LEDSeq2SeqSequenceClassifierOutput(loss=loss, logits=logits, **_seq2seq_fields(outputs))
        return out if return_dict else out.to_tuple()


class LEDForQuestionAnswering(LEDPreTrainedModel):
    """Span extraction on the decoder's states (Hugging Face's ``LEDForQuestionAnswering``):
    ``qa_outputs`` gives start and end logits; ``start_positions``/``end_positions`` give the loss.
    """

    def __init__(self, config: LEDConfig) -> None:
        super().__init__(config)
        config.num_labels = 2  # Hugging Face sets this on the config too
        self.led = LEDModel(config)
        self.qa_outputs = nn.Linear(config.d_model, 2)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
        decoder_attention_mask: torch.Tensor | None = None,
        encoder_outputs: LEDEncoderBaseModelOutput | tuple | None = None,
        global_attention_mask: torch.Tensor | None = None,
        start_positions: torch.Tensor | None = None,
        end_positions: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        decoder_inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        *,
        max_global: int | None = None,
        pad_to_window_size: bool | None = None,
    ) -> LEDSeq2SeqQuestionAnsweringModelOutput | tuple:
        """Hugging Face's arguments; positions outside the sequence are ignored in the loss."""
        cfg = self.config
        return_dict = cfg.return_dict if return_dict is None else return_dict
        if start_positions is not None and end_positions is not None:
            use_cache = False
        outputs = self.led(
            input_ids,
            attention_mask=attention_mask,
            decoder_input_ids=decoder_input_ids,
            decoder_attention_mask=decoder_attention_mask,
            encoder_outputs=encoder_outputs,
            global_attention_mask=global_attention_mask,
            inputs_embeds=inputs_embeds,
            decoder_inputs_embeds=decoder_inputs_embeds,
            use_cache=use_cache,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            max_global=max_global,
            pad_to_window_size=pad_to_window_size,
        )
        logits = self.qa_outputs(outputs.last_hidden_state)
        start_logits, end_logits = (x.squeeze(-1).contiguous() for x in logits.split(1, dim=-1))
        loss = None
        if start_positions is not None and end_positions is not None:
            # positions outside the sequence are clamped to an ignored index, as in Hugging Face
            ignored = start_logits.shape[1]
            start = (start_positions.squeeze(-1) if start_positions.dim() > 1 else start_positions).clamp(
                0, ignored
            )
            end = (end_positions.squeeze(-1) if end_positions.dim() > 1 else end_positions).clamp(0, ignored)
            loss = (
                F.cross_entropy(start_logits, start, ignore_index=ignored)
                + F.cross_entropy(end_logits, end, ignore_index=ignored)
            ) / 2
        out = LEDSeq2SeqQuestionAnsweringModelOutput(
            loss=loss, start_logits=start_logits, end_logits=end_logits, **_seq2seq_fields(outputs)
        )
        return out if return_dict else out.to_tuple()


__all__ = [
    "LEDClassificationHead",
    "LEDDecoder",
    "LEDEncoder",
    "LEDForConditionalGeneration",
    "LEDForQuestionAnswering",
    "LEDForSequenceClassification",
    "LEDModel",
    "LEDPreTrainedModel",
    "shift_tokens_right",
]
