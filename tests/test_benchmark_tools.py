"""The benchmark tools' own logic that runs without a GPU."""

from __future__ import annotations

from benchmarks.profile_layer import is_sync_warning


def test_sync_count_skips_the_debug_modes_prototype_notice():
    notice = (
        "Synchronization debug mode is a prototype feature and does not yet detect all synchronizing "
        "operations (Triggered internally at /pytorch/torch/csrc/cuda/Module.cpp:1)"
    )
    assert not is_sync_warning(notice)
    assert is_sync_warning("called a synchronizing CUDA operation (Triggered internally at ...)")
    assert not is_sync_warning("some other warning")
