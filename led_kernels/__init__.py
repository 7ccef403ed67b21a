"""led-kernels: fused Longformer/LED attention (sliding window + global tokens) for PyTorch.

Public ops (layout (B, N, H, D))::

    gi = lk.global_indices(global_mask)                       # (B, N) bool -> (B, G) int32
    out = lk.banded_attention(q, k, v, window, key_padding_mask=..., global_idx=gi)
    gout = lk.global_attention(q_global, k_global, v_global, gi, key_padding_mask=...)
    out = lk.longformer_attention(q, k, v, window, global_mask=..., key_padding_mask=...)

Hugging Face: ``lk.patch_hf_model(model)`` swaps these into a ``transformers`` LED/Longformer model.

Backends: ``torch`` (reference), ``triton``, ``cuda``, ``cpu``; see :func:`available_backends`.
"""

from led_kernels.backends import BackendStatus, available_backends
from led_kernels.integrations.hf import patch_hf_model
from led_kernels.interface import banded_attention, global_attention, longformer_attention
from led_kernels.masks import global_indices

__version__ = "0.1.0"

__all__ = [
    "BackendStatus",
    "available_backends",
    "banded_attention",
    "global_attention",
    "global_indices",
    "longformer_attention",
    "patch_hf_model",
]
