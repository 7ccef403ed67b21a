"""The interpreter's bounds check (``triton_bounds``, installed by the conftest) finds what it is there
to find: a load past the end of a view, inside its storage (the next rows of a fused projection), and a
store past its tensor; and it passes masked-off lanes and every address inside the arguments."""

from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("the bounds check runs under Triton's interpreter", allow_module_level=True)
triton = pytest.importorskip("triton")
tl = triton.language

import triton_bounds  # noqa: E402


@triton.jit
def _copy_kernel(src, dst, n_read, n_write, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    x = tl.load(src + offs, mask=offs < n_read, other=0.0)
    tl.store(dst + offs, x, mask=offs < n_write)


@pytest.fixture
def found():
    """What the check finds inside the test body, taken out of the list the conftest fails a test on."""
    assert triton_bounds.install()
    triton_bounds.VIOLATIONS.clear()
    taken: list = []
    yield taken
    triton_bounds.VIOLATIONS.clear()


def _run(src, dst, n_read, n_write, found):
    _copy_kernel[(1,)](src, dst, n_read, n_write, BLOCK=32)
    found.extend(triton_bounds.VIOLATIONS)
    triton_bounds.VIOLATIONS.clear()


def test_accesses_inside_the_arguments_pass(found):
    storage = torch.randn(64)
    dst = torch.empty(32)
    _run(storage[:20], dst, 20, 32, found)  # masked-off lanes point past the view: not accesses
    assert torch.equal(dst[:20], storage[:20])
    # the kernel reads 20 contiguous elements of a stride-2 view: inside its extent (39 elements)
    _run(storage[::2][:20], dst, 20, 20, found)
    assert found == []


def test_a_load_past_the_view_inside_its_storage_is_found(found):
    storage = torch.randn(64)
    _run(storage[:20], torch.empty(32), 23, 20, found)
    assert len(found) == 1
    name, kind, program, count, first = found[0]
    assert (name, kind, program, count) == ("_copy_kernel", "load", (0, 0, 0), 3)
    assert first == storage[20:].data_ptr()
    assert "_copy_kernel: load of 3 address(es)" in triton_bounds.describe(found)


def test_a_store_past_the_tensor_is_found(found):
    _run(torch.randn(32), torch.empty(16), 32, 17, found)
    assert [(kind, count) for _, kind, _, count, _ in found] == [("store", 1)]


def test_a_reinterpreted_tensor_counts_as_an_argument(found):
    bits = torch.randn(32).to(torch.float16).view(torch.int16)
    dst = torch.empty(32, dtype=torch.float16)
    _run(triton.reinterpret(bits, tl.float16), dst, 32, 32, found)  # arrives wrapped, not as a tensor
    assert found == []
    assert torch.equal(dst.view(torch.int16), bits)
