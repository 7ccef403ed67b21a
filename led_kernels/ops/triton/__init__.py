"""Triton backend: fused Longformer/LED attention kernels (forward and backward).

``banded_attention`` (kernel A: band minus global/padded keys, plus the global keys, one softmax per
row) and ``global_attention`` (kernel B: rows of the global queries over every non-padded key), each a
``torch.autograd.Function`` over ops registered as ``led_kernels::triton_*`` with fake
implementations, so ``torch.compile(fullgraph=True)`` traces through them. ``longformer_attention``
runs both as one layer (``longformer.py``): what ``led_kernels.longformer_attention`` calls.

Set ``TRITON_INTERPRET=1`` before importing to run on CPU (tests); ``LED_KERNELS_AUTOTUNE=0`` pins
the fixed tile configs on a GPU; ``LED_KERNELS_FAST_LAUNCH=0`` takes Triton's generic launch path on
every call (``_launch.py``); ``LED_KERNELS_FUSED_FORWARD=0`` runs the layer's kernel B forward in a
launch of its own after kernel A's instead of inside it (``longformer.py``).
"""

from ._common import key_flags
from .banded import banded_attention
from .global_rows import global_attention
from .longformer import longformer_attention

__all__ = ["banded_attention", "global_attention", "key_flags", "longformer_attention"]
