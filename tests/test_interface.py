"""Public API contract: global_indices, input validation (clear errors naming the argument), backends."""

from __future__ import annotations

import pytest
import torch

import led_kernels as lk


def _qkv(b=1, n=10, h=2, d=8, dtype=torch.float32):
    return [torch.randn(b, n, h, d, dtype=dtype) for _ in range(3)]


# --- global_indices ---------------------------------------------------------------------------


def test_global_indices_sorted_and_padded():
    mask = torch.tensor([[False, True, False, True, True], [False, False, False, False, False]])
    gi = lk.global_indices(mask)
    assert gi.dtype == torch.int32
    assert gi.tolist() == [[1, 3, 4], [-1, -1, -1]]
    assert lk.global_indices(mask, max_global=5).tolist() == [[1, 3, 4, -1, -1], [-1, -1, -1, -1, -1]]


def test_global_indices_random_against_nonzero():
    mask = torch.rand(4, 97) < 0.2
    gi = lk.global_indices(mask)
    for b in range(4):
        expected = mask[b].nonzero().flatten().tolist()
        assert gi[b, : len(expected)].tolist() == expected
        assert (gi[b, len(expected) :] == -1).all()


def test_global_indices_no_globals_gives_zero_slots():
    gi = lk.global_indices(torch.zeros(3, 8, dtype=torch.bool))
    assert gi.shape == (3, 0)


def test_global_indices_errors():
    with pytest.raises(TypeError, match="global_mask"):
        lk.global_indices(torch.zeros(2, 5, dtype=torch.int64))
    with pytest.raises(ValueError, match="global_mask"):
        lk.global_indices(torch.zeros(5, dtype=torch.bool))
    with pytest.raises(ValueError, match="max_global"):
        lk.global_indices(torch.ones(1, 5, dtype=torch.bool), max_global=2)
    with pytest.raises(ValueError, match="max_global"):
        lk.global_indices(torch.ones(1, 5, dtype=torch.bool), max_global=-1)
    with pytest.raises(TypeError, match="max_global must be an int"):
        lk.global_indices(torch.ones(1, 5, dtype=torch.bool), max_global=True)
    # a meta mask has no count to read: max_global must say it
    meta = torch.ones(1, 5, dtype=torch.bool, device="meta")
    with pytest.raises(ValueError, match="meta global_mask needs max_global"):
        lk.global_indices(meta)
    assert lk.global_indices(meta, max_global=3).shape == (1, 3)


# --- validation -------------------------------------------------------------------------------


def test_bad_q_k_v():
    q, k, v = _qkv()
    with pytest.raises(TypeError, match="q must be a torch.Tensor"):
        lk.banded_attention(q.numpy(), k, v, 2)
    with pytest.raises(ValueError, match="k must be 4-D"):
        lk.banded_attention(q, k[0], v, 2)
    with pytest.raises(TypeError, match="v has dtype"):
        lk.banded_attention(q, k, v.double(), 2)
    with pytest.raises(TypeError, match="q must be float16"):
        lk.banded_attention(q.long(), k.long(), v.long(), 2)
    with pytest.raises(ValueError, match="k has shape"):
        lk.banded_attention(q, k[:, :5], v, 2)
    with pytest.raises(ValueError, match="contiguous last dimension"):
        lk.banded_attention(q, k.transpose(2, 3).contiguous().transpose(2, 3), v, 2)


@pytest.mark.parametrize(
    "window,exc", [(-1, ValueError), (1.5, TypeError), ("3", TypeError), (True, TypeError)]
)
def test_bad_window(window, exc):
    q, k, v = _qkv()
    with pytest.raises(exc, match="window"):
        lk.banded_attention(q, k, v, window)


def test_window_accepts_integer_like():
    q, k, v = _qkv()
    torch.testing.assert_close(lk.banded_attention(q, k, v, torch.tensor(2)), lk.banded_attention(q, k, v, 2))


def test_bad_masks():
    q, k, v = _qkv()
    with pytest.raises(TypeError, match="key_padding_mask must be a bool tensor"):
        lk.banded_attention(q, k, v, 2, key_padding_mask=torch.zeros(1, 10))
    with pytest.raises(ValueError, match="key_padding_mask must have shape"):
        lk.banded_attention(q, k, v, 2, key_padding_mask=torch.zeros(1, 9, dtype=torch.bool))
    with pytest.raises(TypeError, match="global_mask must be a bool tensor"):
        lk.longformer_attention(q, k, v, 2, global_mask=torch.zeros(1, 10, dtype=torch.int32))
    with pytest.raises(ValueError, match="global_mask must have shape"):
        lk.longformer_attention(q, k, v, 2, global_mask=torch.zeros(2, 10, dtype=torch.bool))


def test_bad_global_idx():
    q, k, v = _qkv()
    with pytest.raises(TypeError, match="global_idx must be int32 or int64"):
        lk.banded_attention(q, k, v, 2, global_idx=torch.zeros(1, 2))
    with pytest.raises(ValueError, match=r"global_idx values must be in \[-1, N\)"):
        lk.banded_attention(q, k, v, 2, global_idx=torch.tensor([[0, 10]]))
    with pytest.raises(ValueError, match="strictly increasing"):
        lk.banded_attention(q, k, v, 2, global_idx=torch.tensor([[3, 3]]))
    with pytest.raises(ValueError, match="pad with -1 at the end"):
        lk.banded_attention(q, k, v, 2, global_idx=torch.tensor([[-1, 3]]))
    with pytest.raises(ValueError, match="global_idx has 2 slots but q_global has 1"):
        lk.global_attention(q[:, :1], k, v, torch.tensor([[0, 1]]))


def test_bad_global_projection_and_scale():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="q_global has shape"):
        lk.longformer_attention(
            q, k, v, 2, global_mask=torch.ones(1, 10, dtype=torch.bool), q_global=q[:, :4]
        )
    with pytest.raises(TypeError, match="k_global has dtype"):
        lk.longformer_attention(q, k, v, 2, k_global=k.double())
    with pytest.raises(TypeError, match="scale"):
        lk.banded_attention(q, k, v, 2, scale="0.1")
    with pytest.raises(ValueError, match="scale"):
        lk.banded_attention(q, k, v, 2, scale=float("nan"))


def test_bad_backend():
    q, k, v = _qkv()
    with pytest.raises(ValueError, match="backend must be"):
        lk.banded_attention(q, k, v, 2, backend="flash")
    with pytest.raises(TypeError, match="backend must be a str"):
        lk.banded_attention(q, k, v, 2, backend=None)


def test_explicit_unavailable_backend_says_why():
    q, k, v = _qkv()
    status = lk.available_backends()
    for name, st in status.items():
        if st.available:
            continue
        with pytest.raises(RuntimeError, match=f"backend '{name}' is not available here"):
            lk.banded_attention(q, k, v, 2, backend=name)


def test_explicit_scale_is_used():
    q, k, v = _qkv(dtype=torch.float64)
    a = lk.banded_attention(q, k, v, 3, scale=0.5)
    b = lk.banded_attention(q * 0.5 * 8**0.5, k, v, 3)
    torch.testing.assert_close(a, b)


# --- backends ---------------------------------------------------------------------------------


def test_available_backends_lists_every_backend_with_a_reason():
    status = lk.available_backends()
    assert set(status) == {"torch", "triton", "cuda", "cpu"}
    assert status["torch"].available
    for st in status.values():
        assert isinstance(st.reason, str) and st.reason
        assert st.name in str(st)
    if not torch.cuda.is_available():
        assert not status["cuda"].available


def test_env_override_applies_to_auto(monkeypatch):
    q, k, v = _qkv()
    monkeypatch.setenv("LED_KERNELS_BACKEND", "nonsense")
    with pytest.raises(ValueError, match="backend must be"):
        lk.banded_attention(q, k, v, 2)  # auto reads the variable
    lk.banded_attention(q, k, v, 2, backend="torch")  # an explicit choice wins
    monkeypatch.setenv("LED_KERNELS_BACKEND", "torch")
    lk.banded_attention(q, k, v, 2)


def test_empty_batch_and_single_token():
    q, k, v = _qkv(b=0)
    assert lk.longformer_attention(q, k, v, 2).shape == q.shape
    q, k, v = _qkv(n=1)
    out = lk.longformer_attention(q, k, v, 0, global_mask=torch.ones(1, 1, dtype=torch.bool))
    torch.testing.assert_close(out, v)
