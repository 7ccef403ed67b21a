"""The ``torch`` backend equals Hugging Face ``LEDEncoderSelfAttention`` with the same weights.

Hugging Face needs the sequence padded to a multiple of ``attention_window``; we feed it the padded
sequence (as its LEDEncoder does) and our op the unpadded one, and compare the real tokens. Masks
are passed to the Hugging Face module exactly as ``LEDEncoder.forward`` builds them.

The smallest window compared is w = 2: Hugging Face's chunked code fails for attention_window = 2
(w = 1) with a shape error in ``_sliding_chunks_query_key_matmul``; w = 0 and 1 are checked against the
dense oracle in tests/ops/test_reference.py instead.
"""

from __future__ import annotations

import itertools
import random

import pytest
import torch
from cases import GLOBAL_PATTERNS, global_mask, padding_mask

import led_kernels as lk

transformers = pytest.importorskip("transformers")
from transformers.models.led.configuration_led import LEDConfig  # noqa: E402
from transformers.models.led.modeling_led import (  # noqa: E402
    LEDEncoderSelfAttention,
    _prepare_4d_attention_mask_inverted,
)

PROJECTIONS = ("query", "key", "value", "query_global", "key_global", "value_global")


def _hf_attention(heads, head_dim, window):
    config = LEDConfig(
        d_model=heads * head_dim,
        encoder_attention_heads=heads,
        attention_window=[2 * window],
        attention_dropout=0.0,
    )
    module = LEDEncoderSelfAttention(config, layer_id=0).eval()
    with torch.no_grad():  # larger than nn.Linear's default init, so the softmax is not near-uniform
        for name in PROJECTIONS:
            getattr(module, name).weight.normal_(0, 1.0 / head_dim**0.5)
            getattr(module, name).bias.normal_(0, 0.1)
    return module


def _hf_forward(module, hidden, attention_mask, gmask):
    """Run Hugging Face on ``hidden`` padded to a multiple of attention_window, as LEDEncoder does."""
    b, n, e = hidden.shape
    attention_window = 2 * module.one_sided_attn_window_size
    pad = (attention_window - n % attention_window) % attention_window
    hidden_p = torch.cat([hidden, hidden.new_zeros(b, pad, e)], dim=1)
    mask = torch.cat([attention_mask, attention_mask.new_zeros(b, pad)], dim=1)
    glob = torch.cat([gmask, gmask.new_zeros(b, pad)], dim=1)
    merged = mask * (glob + 1)  # LEDEncoder._merge_to_attention_mask
    float_mask = _prepare_4d_attention_mask_inverted(merged, hidden.dtype)[:, 0, 0, :]
    is_index_masked = float_mask < 0
    is_index_global_attn = float_mask > 0
    out = module(
        hidden_p,
        attention_mask=float_mask,
        is_index_masked=is_index_masked,
        is_index_global_attn=is_index_global_attn,
        is_global_attn=bool(is_index_global_attn.any()),
    )[0]
    return out[:, :n]


def _ours(module, hidden, key_padding_mask, gmask, backend="torch"):
    b, n, _ = hidden.shape
    h, d = module.num_heads, module.head_dim
    proj = [getattr(module, name)(hidden).view(b, n, h, d) for name in PROJECTIONS]
    out = lk.longformer_attention(
        proj[0],
        proj[1],
        proj[2],
        module.one_sided_attn_window_size,
        global_mask=gmask,
        key_padding_mask=key_padding_mask,
        q_global=proj[3],
        k_global=proj[4],
        v_global=proj[5],
        backend=backend,
    )
    return out.reshape(b, n, h * d)


def _case_list():
    rng = random.Random(1234)
    cases = []
    for n, window, gpat, ppat in itertools.product(
        [1, 7, 37, 64, 129], [2, 3, 16, 200], GLOBAL_PATTERNS, ["none", "tail"]
    ):
        if rng.random() < 0.5 and not (n in (1, 129) or window in (2, 200)):
            continue  # a random half of the interior of the grid; every edge value is kept
        cases.append((n, window, gpat, ppat))
    return cases


def _compare(n, window, gpat, ppat, backend="torch", heads=3, head_dim=8, batch=2):
    module = _hf_attention(heads, head_dim, window)
    hidden = torch.randn(batch, n, heads * head_dim, requires_grad=True)
    gm = global_mask(batch, n, gpat)
    pm = padding_mask(batch, n, ppat)
    gm_int = torch.zeros(batch, n, dtype=torch.long) if gm is None else gm.long()
    am_int = torch.ones(batch, n, dtype=torch.long) if pm is None else (~pm).long()
    real = am_int.bool()

    ref = _hf_forward(module, hidden, am_int, gm_int)
    out = _ours(module, hidden, pm, gm, backend)
    torch.testing.assert_close(out[real], ref[real], atol=1e-5, rtol=0)
    assert (out[~real] == 0).all()

    grad_out = torch.randn_like(ref) * real[..., None]
    wrt = [hidden, *module.parameters()]
    hf_grads = torch.autograd.grad(ref, wrt, grad_out, allow_unused=True, materialize_grads=True)
    our_grads = torch.autograd.grad(out, wrt, grad_out, allow_unused=True, materialize_grads=True)
    # the weight gradients sum over every token and reach ~50 at N=129: fp32 rounding of either side's
    # summation order is ~1e-6 of that, so the bound is relative there (a wrong term is off by O(1))
    for name, a, b in zip(["hidden", *dict(module.named_parameters())], our_grads, hf_grads):
        msg = lambda m, name=name: f"grad of {name}: {m}"  # noqa: E731
        torch.testing.assert_close(a, b, atol=5e-5, rtol=1e-5, msg=msg)


@pytest.mark.parametrize("n,window,gpat,ppat", _case_list(), ids=lambda x: str(x))
def test_torch_backend_matches_transformers(n, window, gpat, ppat):
    _compare(n, window, gpat, ppat)


def test_fully_padded_batch_element_matches_transformers():
    module = _hf_attention(2, 8, 4)
    hidden = torch.randn(2, 20, 16)
    pm = padding_mask(2, 20, "full")
    gm = global_mask(2, 20, "first")
    ref = _hf_forward(module, hidden, (~pm).long(), gm.long())
    out = _ours(module, hidden, pm, gm)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
