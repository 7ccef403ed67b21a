"""Builders shared by the ``led`` model tests: tiny random Hugging Face LED models and inputs.

The weights are drawn wider than Hugging Face's init (std 0.3 for matrices instead of 0.02) so
activations, attention and generation depend visibly on the input: with the default init a tiny
model's softmaxes are nearly uniform and greedy decoding stops at once, which would test little.
"""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

TINY = dict(
    vocab_size=100,
    d_model=32,
    encoder_layers=2,
    decoder_layers=2,
    encoder_attention_heads=2,
    decoder_attention_heads=2,
    encoder_ffn_dim=64,
    decoder_ffn_dim=64,
    attention_window=[8, 16],
    max_encoder_position_embeddings=256,
    max_decoder_position_embeddings=64,
)


def hf_config(**overrides) -> transformers.LEDConfig:
    """A tiny ``transformers.LEDConfig`` (2+2 layers, d_model 32, windows 8 and 16)."""
    return transformers.LEDConfig(**{**TINY, **overrides})


def randomize(model: torch.nn.Module, matrix_std: float = 0.3, seed: int = 0) -> torch.nn.Module:
    """Redraw every weight (LayerNorms left at 1/0); ``final_logits_bias`` gets small random values."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                continue
            std = 1.0 if "embed" in name or "shared" in name else matrix_std if p.dim() == 2 else 0.1
            p.copy_(torch.randn(p.shape, generator=gen) * std)
        if hasattr(model, "final_logits_bias"):
            model.final_logits_bias.copy_(torch.randn(model.final_logits_bias.shape, generator=gen) * 0.1)
    return model.eval()


def hf_model(cls_name: str = "LEDForConditionalGeneration", seed: int = 0, **config_overrides):
    """A randomized tiny ``transformers`` LED model of class ``cls_name``, in eval mode."""
    cls = getattr(transformers, cls_name)
    return randomize(cls(hf_config(**config_overrides)), seed=seed)


def inputs(batch: int = 2, n: int = 45, globals_: str = "first", padding: str = "tail", seed: int = 1):
    """(input_ids, attention_mask, global_attention_mask or None) as Hugging Face takes them (int64).

    globals_: ``none``, ``first`` (``<s>``), ``scattered`` (different counts per row, one on a padded
    position) or ``question`` (a block of leading tokens, as QA does). padding: ``none`` or ``tail``
    (the last row loses its last third).
    """
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 100, (batch, n), generator=gen)
    ids[:, 0] = 0  # <s>
    mask = torch.ones(batch, n, dtype=torch.long)
    if padding == "tail":
        mask[-1, n - n // 3 :] = 0
        ids[-1, n - n // 3 :] = 1  # <pad>
    glob = torch.zeros(batch, n, dtype=torch.long)
    if globals_ == "none":
        glob = None
    elif globals_ == "first":
        glob[:, 0] = 1
    elif globals_ == "scattered":
        for b in range(batch):
            glob[b, b :: 7 + 3 * b] = 1
        glob[-1, n - 1] = 1  # on padding when padded: must be ignored
    elif globals_ == "question":
        glob[:, : min(6, n)] = 1
    else:
        raise ValueError(globals_)
    return ids, mask, glob


def assert_close(actual: torch.Tensor, expected: torch.Tensor, tol: float = 1e-4, msg: str = "") -> None:
    """fp32 parity: |a - e| <= tol + tol * |e| everywhere."""
    torch.testing.assert_close(
        actual, expected, atol=tol, rtol=tol, msg=lambda m: f"{msg}: {m}" if msg else m
    )
