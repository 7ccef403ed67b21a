"""Swap led-kernels into Hugging Face ``transformers`` LED and Longformer models, in place.

Nothing here imports ``transformers``: modules are recognised by class name, so importing
``led_kernels`` stays cheap and works without it.
"""

from __future__ import annotations

import types
import warnings
import weakref

import torch
from torch.utils.weak import WeakIdKeyDictionary

#: Class names of the Hugging Face self-attention modules that are patched (same forward signature).
PATCHABLE = ("LEDEncoderSelfAttention", "LongformerSelfAttention")
_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, UserWarning, stacklevel=3)


# Hugging Face's encoder builds is_index_global_attn / is_index_masked once per forward and hands the
# same tensor objects to every layer (and again to a checkpointed layer's recomputation), so the
# global indices are computed once per forward, not once per layer: keyed by the identity of those
# tensors, dropped with them, and invalidated if either is modified in place.
_global_idx_cache: WeakIdKeyDictionary = WeakIdKeyDictionary()


def _shared_global_indices(is_index_global_attn: torch.Tensor, is_index_masked: torch.Tensor | None):
    from led_kernels.masks import global_indices

    versions = (is_index_global_attn._version, None if is_index_masked is None else is_index_masked._version)
    cached = _global_idx_cache.get(is_index_global_attn)
    if cached is not None:
        masked_ref, cached_versions, index = cached
        if masked_ref() is is_index_masked and cached_versions == versions:
            return index
    global_mask = is_index_global_attn
    if is_index_masked is not None:
        global_mask = global_mask & ~is_index_masked  # padding wins, as in Hugging Face
    index = global_indices(global_mask)
    masked_ref = (lambda: None) if is_index_masked is None else weakref.ref(is_index_masked)
    _global_idx_cache[is_index_global_attn] = (masked_ref, versions, index)
    return index


def _is_patchable(module: torch.nn.Module) -> bool:
    return any(
        cls.__name__ in PATCHABLE and cls.__module__.startswith("transformers.")
        for cls in type(module).__mro__
    )


def _lk_forward(
    self,
    hidden_states,
    attention_mask=None,
    is_index_masked=None,
    is_index_global_attn=None,
    is_global_attn=None,
    output_attentions=False,
):
    """Hugging Face's ``LEDEncoderSelfAttention.forward`` / ``LongformerSelfAttention.forward``
    computed with :func:`led_kernels.longformer_attention` (same signature, same return tuple)."""
    original = type(self).forward
    if output_attentions:
        _warn_once(
            "output_attentions",
            "led_kernels.patch_hf_model: output_attentions=True needs the attention weights, which the "
            "fused kernels do not materialise; falling back to the original transformers forward.",
        )
        return original(
            self,
            hidden_states,
            attention_mask,
            is_index_masked,
            is_index_global_attn,
            is_global_attn,
            output_attentions,
        )
    if self.training and self.dropout > 0:
        _warn_once(
            "dropout",
            f"led_kernels.patch_hf_model: attention dropout ({self.dropout}) is not supported by the "
            "fused kernels; falling back to the original transformers forward while training "
            "(set attention_dropout=0 to use the kernels).",
        )
        return original(
            self,
            hidden_states,
            attention_mask,
            is_index_masked,
            is_index_global_attn,
            is_global_attn,
            output_attentions,
        )

    from led_kernels.interface import longformer_attention
    from led_kernels.masks import gather_rows

    if is_index_masked is None and attention_mask is not None:
        is_index_masked = attention_mask < 0
    if is_index_global_attn is None and attention_mask is not None:
        is_index_global_attn = attention_mask > 0
    global_idx = None
    # is_global_attn is only a hint: a Python False lets us skip the global part (and its host sync).
    if is_index_global_attn is not None and is_global_attn is not False:
        global_idx = _shared_global_indices(is_index_global_attn, is_index_masked)
        if global_idx.shape[1] == 0:
            global_idx = None

    b, n, e = hidden_states.shape
    h, d = self.num_heads, self.head_dim

    # Unscaled projections + the kernels' default scale 1/sqrt(D) == Hugging Face's q / sqrt(D).
    def project(name):
        return getattr(self, name)(hidden_states).view(b, n, h, d)

    q, k, v = project("query"), project("key"), project("value")
    qg_rows = kg = vg = None
    if global_idx is not None:  # the global projections are only needed (and only trained) then
        # query_global of the G global tokens only, as Hugging Face does (not of all N)
        global_states = gather_rows(hidden_states.unsqueeze(2), global_idx).squeeze(2)  # (B, G, E)
        qg_rows = self.query_global(global_states).view(b, global_idx.shape[1], h, d)
        kg, vg = project("key_global"), project("value_global")
    out = longformer_attention(
        q,
        k,
        v,
        self.one_sided_attn_window_size,
        key_padding_mask=is_index_masked,
        global_idx=global_idx,
        q_global_rows=qg_rows,
        k_global=kg,
        v_global=vg,
        backend=self._lk_backend,
    )
    return (out.reshape(b, n, e),)


def _check_module(model) -> None:
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module (a transformers model), got {type(model).__name__}")


def patch_hf_model(model: torch.nn.Module, backend: str = "auto") -> torch.nn.Module:
    """Run the encoder self-attention of a ``transformers`` LED or Longformer model on led-kernels.

    Every ``LEDEncoderSelfAttention`` and ``LongformerSelfAttention`` inside ``model`` gets, in place,
    a forward that computes the same function through :func:`led_kernels.longformer_attention`,
    using the module's own ``query/key/value/query_global/key_global/value_global`` layers: no
    parameter is copied or replaced, so the state dict, the optimizer's parameter groups and
    checkpoints are unchanged. Forward signature and return tuple are Hugging Face's, so the rest of
    the model (and ``gradient_checkpointing_enable()``, autocast) works as before.

    Two cases fall back to the original Hugging Face forward, each with a one-time warning:

    - ``output_attentions=True``: the fused kernels never materialise attention weights;
    - training with attention dropout > 0 (``config.attention_dropout`` for LED,
      ``config.attention_probs_dropout_prob`` for Longformer): the kernels have no dropout.

    Patching again only changes the backend. Decoder and cross attention are not touched.

    Args:
        model: any ``torch.nn.Module`` containing the Hugging Face modules (e.g.
            ``LEDForConditionalGeneration``, ``LongformerForMaskedLM``).
        backend: ``"auto"``, ``"torch"``, ``"triton"``, ``"cuda"`` or ``"cpu"`` (see
            :func:`led_kernels.available_backends`); checked when a forward runs.

    Returns:
        ``model`` itself.

    Raises:
        TypeError: if ``model`` is not a ``torch.nn.Module``.
        ValueError: if ``model`` contains no patchable module.

    Example::

        >>> from transformers import LEDConfig, LEDForConditionalGeneration
        >>> import led_kernels as lk
        >>> config = LEDConfig(vocab_size=100, d_model=32, encoder_layers=2, decoder_layers=2,
        ...                    encoder_attention_heads=4, decoder_attention_heads=4,
        ...                    encoder_ffn_dim=64, decoder_ffn_dim=64, attention_window=[8, 8],
        ...                    attention_dropout=0.0)
        >>> model = lk.patch_hf_model(LEDForConditionalGeneration(config))
        >>> ids = torch.randint(3, 100, (2, 21))
        >>> glob = torch.zeros_like(ids); glob[:, 0] = 1
        >>> loss = model(input_ids=ids, global_attention_mask=glob, labels=ids).loss
        >>> loss.backward()
    """
    from led_kernels._validation import check_backend_name

    _check_module(model)
    backend = check_backend_name(backend)
    patched = 0
    for module in model.modules():
        if _is_patchable(module):
            module._lk_backend = backend
            module.forward = types.MethodType(_lk_forward, module)
            patched += 1
    if patched == 0:
        raise ValueError(
            "patch_hf_model found no LEDEncoderSelfAttention or LongformerSelfAttention module in "
            f"{type(model).__name__}; only transformers' LED and Longformer models are supported"
        )
    return model


def unpatch_hf_model(model: torch.nn.Module) -> torch.nn.Module:
    """Undo :func:`patch_hf_model`: restore the original Hugging Face forwards (in place)."""
    _check_module(model)
    for module in model.modules():
        if "_lk_backend" in module.__dict__:
            del module.__dict__["_lk_backend"]
            module.__dict__.pop("forward", None)
    return model
