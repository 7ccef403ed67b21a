"""Backends of the attention ops: one sub-module or package per backend.

Every backend exposes the same two functions on already-validated inputs::

    banded_attention(q, k, v, window, key_flags, global_idx, scale) -> (B, N, H, D)
    global_attention(q_global, k_global, v_global, global_idx, key_flags, scale) -> (B, G, H, D)

``key_flags`` is an int8 (B, N) tensor (0 local, 1 padding, 2 global; padding wins) and
``global_idx`` an int32 (B, G) tensor of sorted positions padded with -1 (see
``led_kernels.masks``). The public, validating entry points are in ``led_kernels.interface``.
"""
