"""The benchmark tools' own logic that runs without a GPU."""

from __future__ import annotations

import pytest
import torch

from benchmarks.harness import parse_args
from benchmarks.profile_layer import is_sync_warning


def test_sync_count_skips_the_debug_modes_prototype_notice():
    notice = (
        "Synchronization debug mode is a prototype feature and does not yet detect all synchronizing "
        "operations (Triggered internally at /pytorch/torch/csrc/cuda/Module.cpp:1)"
    )
    assert not is_sync_warning(notice)
    assert is_sync_warning("called a synchronizing CUDA operation (Triggered internally at ...)")
    assert not is_sync_warning("some other warning")


def _triton_variant_beside_plain(monkeypatch, name, probe, state):
    """Run provider ``name``, then ``triton``, on one small layer with global tokens, the one-launch
    forward on (the default, whatever the environment says). ``probe()`` is recorded at each call of
    that forward's launcher and ``state()`` read right after the variant's call. Returns the records
    after the variant, that state, the records after both, both outputs and the device."""
    import torch

    from benchmarks.cases import Case, make_inputs
    from benchmarks.providers import get_provider
    from led_kernels.ops.triton import longformer

    seen = []
    real = longformer.launch_layer_fwd
    monkeypatch.setattr(longformer, "launch_layer_fwd", lambda *a, **k: seen.append(probe()) or real(*a, **k))
    monkeypatch.setattr(longformer, "FUSED_FORWARD", True)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    case = Case(batch=1, seqlen=96, heads=2, head_dim=16, window=9, globals=3, dtype="float32")
    inputs = make_inputs(case, device)
    variant, plain = get_provider(name), get_provider("triton")
    assert variant.name == name and variant.skip_reason(case, torch.device(device)) is None
    out_variant = variant.prepare(inputs).forward()
    after_variant, state_after_variant = list(seen), state()
    out_plain = plain.prepare(inputs).forward()
    return after_variant, state_after_variant, seen, out_variant, out_plain, device


def test_two_launch_provider_times_the_two_launch_forward_and_restores_the_switch(monkeypatch):
    """``triton-two-launch`` runs the layer with kernel B's forward in a launch of its own (the switch
    cleared for its calls only), so one run can time it beside ``triton`` (the one-launch forward, the
    default); same bits under the interpreter."""
    import torch

    from led_kernels.ops.triton import _common, longformer

    monkeypatch.setattr(_common, "target_programs", lambda device: 16)  # several key chunks
    calls, fused_after, calls_after_both, out_two, out_plain, device = _triton_variant_beside_plain(
        monkeypatch, "triton-two-launch", lambda: 1, lambda: longformer.FUSED_FORWARD
    )
    assert calls == [] and fused_after is True
    assert calls_after_both == [1]  # the plain provider keeps the default one-launch forward
    if device == "cpu":
        assert torch.equal(out_two, out_plain)
    else:
        torch.testing.assert_close(out_two, out_plain, rtol=1e-5, atol=1e-6)


def test_key64_provider_sets_the_layer_key_tile_for_its_forward_only(monkeypatch):
    """``triton-key64`` runs the one-launch forward with kernel B's 64-key tiles (the module switch set
    for its calls only, then restored): the launch sees 64 inside, the default 128 after."""
    import torch

    from led_kernels.ops.triton import longformer

    monkeypatch.setattr(longformer, "LAYER_KEY_TILE", 128)
    tile = lambda: longformer.LAYER_KEY_TILE  # noqa: E731
    seen, tile_after, seen_after_both, out64, out, _ = _triton_variant_beside_plain(
        monkeypatch, "triton-key64", tile, tile
    )
    assert seen == [64] and tile_after == 128
    assert seen_after_both == [64, 128]
    torch.testing.assert_close(out64, out, rtol=1e-5, atol=1e-6)


def test_cuda_variant_provider_scopes_its_switches_to_its_own_forward_and_backward(monkeypatch):
    """``cuda-mma`` and the like set ``LED_KERNELS_CUDA_FWD`` while their forward runs and
    ``LED_KERNELS_CUDA_DQ`` / ``LED_KERNELS_CUDA_DKDV`` while the layer's backward runs (the compiled
    kernels read them at launch), and put the previous values back afterwards; seen here through the
    torch backend, with a probe around the layer that records the environment in its forward and
    backward."""
    import os

    import torch

    import led_kernels as lk
    from benchmarks.cases import Case, make_inputs
    from benchmarks.providers import LedKernelsProvider

    names = ("LED_KERNELS_CUDA_FWD", "LED_KERNELS_CUDA_DQ", "LED_KERNELS_CUDA_DKDV")
    seen: dict[str, tuple] = {}

    class Probe(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            seen["forward"] = tuple(os.environ.get(n) for n in names)
            return x.clone()

        @staticmethod
        def backward(ctx, grad):
            seen["backward"] = tuple(os.environ.get(n) for n in names)
            return grad

    real = lk.longformer_attention
    monkeypatch.setattr(lk, "longformer_attention", lambda q, *a, **k: real(Probe.apply(q), *a, **k))
    monkeypatch.delenv("LED_KERNELS_CUDA_FWD", raising=False)
    monkeypatch.delenv("LED_KERNELS_CUDA_DQ", raising=False)
    monkeypatch.setenv("LED_KERNELS_CUDA_DKDV", "mma")
    case = Case(batch=1, seqlen=40, heads=1, head_dim=16, window=4, globals=1, dtype="float32")
    inputs = make_inputs(case, "cpu")
    provider = LedKernelsProvider("torch", cuda_forward="wgmma", cuda_backward="wgmmas/wgmma", name="probe")
    assert provider.name == "probe"
    prep = provider.prepare(inputs)
    out = prep.forward()
    assert seen["forward"] == ("wgmma", None, "mma")
    assert tuple(os.environ.get(n) for n in names) == (None, None, "mma")
    (grad,) = torch.autograd.grad(out, prep.leaf, prep.dout)
    assert seen["backward"] == (None, "wgmmas", "wgmma")
    assert tuple(os.environ.get(n) for n in names) == (None, None, "mma")
    reference = real(
        *inputs.views()[:3],
        case.window,
        q_global=inputs.views()[3],
        k_global=inputs.views()[4],
        v_global=inputs.views()[5],
        global_idx=inputs.global_idx,
        backend="torch",
    )
    torch.testing.assert_close(out, reference)


def test_host_profile_reports_forward_backward_on_the_calling_thread(monkeypatch):
    """``profile_layer --host`` profiles forward + backward too: its host time as queued, again with
    autograd's backward on the calling thread (which cProfile sees), and that profile (GPU calls
    stubbed: it runs a CPU provider here)."""
    import torch

    from benchmarks import profile_layer
    from benchmarks.cases import Case, make_inputs
    from benchmarks.providers import get_provider

    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
    monkeypatch.setattr(torch.cuda, "set_sync_debug_mode", lambda *a: None)
    case = Case(batch=1, seqlen=40, heads=1, head_dim=16, window=4, globals=1, dtype="float32")
    prep = get_provider("torch").prepare(make_inputs(case, "cpu"))
    report = profile_layer.host_profile(prep, "fwd_bwd", reps=3, top=5)
    assert report.startswith("fwd_bwd host: ")
    assert "host with the backward on the calling thread" in report
    assert "function calls" in report and "host-device syncs in one call: 0" in report
    assert torch.autograd.is_multithreading_enabled()


def test_host_overhead_of_the_cuda_backend_runs_its_layer_op(monkeypatch, capsys):
    """``python -m benchmarks.host_overhead --backend cuda``: the cuda backend's Python side with its
    extension calls replaced by no-ops. The layer's forward is one call (kernels A and B) after the key
    flags, and so is its backward."""
    import torch

    from benchmarks import host_overhead
    from led_kernels import _validation, backends
    from led_kernels.ops import cuda

    # (main installs its stand-ins process-wide: restored after the test)
    monkeypatch.setattr(cuda, "_kernels", cuda._kernels)
    monkeypatch.setitem(backends._STATUS, "cuda", backends._STATUS["cuda"])
    monkeypatch.setattr(backends, "_device_ok", backends._device_ok)
    monkeypatch.setattr(_validation, "_should_check_values", _validation._should_check_values)
    threads = torch.get_num_threads()
    try:
        assert host_overhead.main(["--backend", "cuda", "--globals", "0", "1", "--reps", "3"]) == 0
    finally:
        backends._cached_status.cache_clear()
        torch.set_num_threads(threads)
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    calls = {(int(r[0]), r[1]): int(r[3]) for r in rows}
    assert calls == {(0, "fwd"): 2, (0, "fwd_bwd"): 3, (1, "fwd"): 2, (1, "fwd_bwd"): 3}


def test_commit_is_dirty_for_changed_sources_but_not_for_the_runs_own_results(tmp_path):
    """Results rows and logs name the commit they were measured at: a run writes its log under
    benchmarks/results/ before it asks, which must not mark it dirty; a changed source must."""
    import subprocess

    from benchmarks.cases import git_commit

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "benchmarks" / "results" / "cpu-attention.log").write_text("old run\n")
    (tmp_path / "kernel.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    sha = git_commit(tmp_path)
    assert len(sha) >= 7 and not sha.endswith("-dirty")
    (tmp_path / "benchmarks" / "results" / "cpu-attention.log").write_text("old run\nnew run\n")
    (tmp_path / "untracked.py").write_text("y = 2\n")
    assert git_commit(tmp_path) == sha
    (tmp_path / "kernel.py").write_text("x = 2\n")
    assert git_commit(tmp_path) == sha + "-dirty"


def test_harness_refuses_bad_sizes_before_running(capsys):
    """Sizes that no case can take are a usage error (exit 2) that names the option, not a traceback
    from the first case (or a run that writes results)."""
    for argv, message in (
        (["--seqlens", "1024", "0"], "--seqlens must be >= 1, got 0"),
        (["--window", "-1"], "--window must be >= 0, got -1"),
        (["--globals", "1", "-2"], "--globals must be >= 0, got -2"),
        (["--head-dim", "0"], "--head-dim must be >= 1, got 0"),
        (["--job-timeout", "nan"], "--job-timeout must be > 0 seconds"),
        (["--time-budget", "inf"], "--time-budget must be >= 0 seconds"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            parse_args(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err, argv
    args = parse_args(["--seqlens", "1", "--window", "0", "--globals", "0", "--time-budget", "0"])
    assert (args.seqlens, args.window, args.globals, args.time_budget) == ([1], [0], [0], 0.0)


def test_train_step_refuses_bad_options(capsys):
    """Lengths, counts and the timeout that no run can take, and an unknown device or backend: a usage
    error naming the option, not a failed row per job (or a run that never reports)."""
    from benchmarks import train_step

    for argv, message in (
        (["--seqlens", "4096", "0"], "--seqlens must be >= 1, got 0"),
        (["--reps", "0"], "--reps must be >= 1, got 0"),
        (["--warmup", "-1"], "--warmup must be >= 0, got -1"),
        (["--timeout", "0"], "--timeout must be a finite number of seconds > 0"),
        (["--device", "gpu"], "--device must be auto, cpu or cuda"),
        (["--device", "xpu"], "--device must be auto, cpu or cuda"),
        (["--backend", "bogus"], "--backend must be one of"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            train_step.parse_args(argv)
        assert exit_info.value.code == 2
        assert message in capsys.readouterr().err, argv
    assert train_step.parse_args(["--seqlens", "1", "--threads", "0", "--backend", "cpu"]).seqlens == [1]
    assert train_step.parse_args(["--device", "cpu"]).device == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            train_step.parse_args(["--device", "cuda:1"])
        assert "--device cuda:1: no CUDA GPU" in capsys.readouterr().err
    else:
        assert train_step.parse_args(["--device", "cuda:0"]).device == "cuda:0"
