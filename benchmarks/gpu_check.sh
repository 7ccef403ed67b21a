#!/usr/bin/env bash
# The GPU checks and benchmarks, in stages that each fit one ~10-minute command:
#
#   bash benchmarks/gpu_check.sh tests      # build + install, GPU tests, provider self-check
#   bash benchmarks/gpu_check.sh bench      # attention benchmarks: headline shape + sweeps, all modes
#   bash benchmarks/gpu_check.sh train      # LED-base training step at 4k/8k/16k (bf16)
#   bash benchmarks/gpu_check.sh sanitize   # compute-sanitizer memcheck + racecheck on small cases
#   bash benchmarks/gpu_check.sh all        # everything above, in that order
#
# For a short lease (about 15 minutes of device time), two calls on the same warm machine:
#   bash benchmarks/gpu_check.sh core       # GPU tests of the triton backend, headline figures, profile
#   bash benchmarks/gpu_check.sh rest       # LED-base step at 16k, extension tests, scale tests
#
# After a change to the triton backend, with about 5 minutes of device time (no flex: its first
# torch.compile alone takes minutes on a fresh machine):
#   bash benchmarks/gpu_check.sh verify     # GPU tests of the triton backend, headline figures, profile
#   bash benchmarks/gpu_check.sh fused      # kernel B's forward inside kernel A's launch (the default)
#                                           # against two launches (LED_KERNELS_FUSED_FORWARD=0): tests,
#                                           # A/B in one run, profiles
#
# The cuda backend (compiled kernels; about 6 minutes, build included):
#   bash benchmarks/gpu_check.sh cuda       # build, GPU tests, compute-sanitizer, headline against triton,
#                                           # the forward's other main loops (rows16, wgmma, wgmma16)
#
# The backward folds against their separate sweeps (about 4 minutes, no build):
#   bash benchmarks/gpu_check.sh folds      # triton GPU tests, kernel profiles and timings, both ways
#
# Nsight Compute's full set of counters for the triton kernels at the headline shape (about 2 minutes):
#   bash benchmarks/gpu_check.sh ncu        # G=1: kernel A's forward (with B's chunks), dQ, dK/dV and
#                                           # B's dK/dV; G=0: A's forward; reports and their details pages
# The same for the cuda kernels (after `owed` or `cuda` on the same machine: no build; about 2 minutes):
#   bash benchmarks/gpu_check.sh cuda-ncu   # G=1: kernel A's forward, dQ and dK/dV passes, one call each
#
# What is owed after CPU-only sessions, in one call of about 7 minutes on a fresh H100 (build included):
#   bash benchmarks/gpu_check.sh owed       # build (foreground, all cores), cuda GPU tests + machine-code
#                                           # check with the default kernels (wgmma on an H100), the wgmma
#                                           # variants' and the mma.sync kernels' GPU tests, one run timing
#                                           # cuda, cuda-nolean, cuda-mma, cuda-wgmma16s, cuda-wgmma2g and
#                                           # triton at the headline shape (G=0 and 1), sanitizers, cuda
#                                           # profile (give the call a timeout of 540 s)
#
# Both of the above in one call of about 8 minutes on a fresh H100 (for a lease of 15 minutes, start up
# included; give the call a timeout of 570 s): the build in the background while the triton GPU tests
# run, the cuda GPU tests (default kernels and machine-code check, wgmma variants, mma.sync kernels),
# one run timing triton, triton-key64 and the cuda variants (cuda-two-launch among them) at the headline
# shape (G=0 and 1), one run of triton at 8k/16k and G=0/1/64 (the ratio bars), the profiles of both
# backends (triton also at G=0, cuda also with the wgmma16o forward), and both sanitizers on the default
# and wgmma kernels:
#   bash benchmarks/gpu_check.sh next
#
# The head-dim-128 fault of the triton backend (h100-sxm-next-session.log: an illegal memory access in
# test_dtypes_and_head_dims[128-torch.float16], reported at the backward's dK/dV launch): each dtype in
# a process of its own with blocking launches (the traceback then names the faulting launch), the same
# with the forward as two launches, with the dQ pass's global-key fold off, with the dQ pass and then all
# of kernel A's heavy kernels at 4 warps, memcheck (which names the kernel and the memory space), and the
# autotuned path at head dim 128 (about 5-6 minutes, no build):
#   bash benchmarks/gpu_check.sh fault
#
# On the lent GPU machines, first: export PATH=/opt/torch/.venv/bin:$PATH (the python that has torch;
# its venv has no plain `pip`, hence `python -m pip`).
# Expects torch, triton, transformers, pybind11, scikit-build-core, cmake and ninja to be installed
# (it installs this package without dependencies). Results land in benchmarks/results/ (named after
# the GPU); with $OUT set (a folder that is copied back), the logs and results are also copied there.
set -uo pipefail
cd "$(dirname "$0")/.."
stage="${1:-all}"
OUT="${OUT:-}"
# with $OUT (a folder that is copied back, which may return only a few files), the logs go to a scratch
# folder that ends up in one archive there, and each step's log is appended to one combined log there
# as soon as the step ends (so that a call stopped at its time limit still returns the finished steps)
LOGDIR="${OUT:+/tmp/gpu_check_logs}"
LOGDIR="${LOGDIR:-benchmarks/results}"
[ -n "$OUT" ] && rm -rf "$LOGDIR"  # (the scratch folder: no logs of an earlier call in this one's archive)
mkdir -p "$LOGDIR"
status=0
export PYTHONUNBUFFERED=1
touch /tmp/gpu_check_start

run() {  # run "<name>" cmd...: tee the output into $LOGDIR/<name>.log, remember a failure
    local name="$1"
    shift
    echo "=== $name: $*"
    local start=$SECONDS
    # LIMIT (seconds) bounds one step, so that a slow step cannot eat a short lease
    timeout -k 10 "${LIMIT:-100000}" "$@" 2>&1 | tee "$LOGDIR/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "=== $name: exit $rc after $((SECONDS - start)) s"
    [ "$rc" -eq 0 ] || status=1
    if [ -n "$OUT" ]; then
        { echo "===== $name: $* (exit $rc after $((SECONDS - start)) s)"; cat "$LOGDIR/$name.log"; } \
            >> "$OUT/gpu-check-$stage.log"
    fi
}

save_results() {  # the result files written so far, in one archive in $OUT (at most 8 files come back from
    # there), so that a call cut at its time limit still returns them
    [ -n "$OUT" ] || return 0
    find benchmarks/results -type f -newer /tmp/gpu_check_start -print0 |
        tar czf "$OUT/results-$stage-partial.tgz" --null -T -
}

install() {
    python -c "import led_kernels._C" 2>/dev/null && return
    # one architecture keeps the build short; the GPU here is the one that will run it (sm_90 as 90a:
    # the forward's wgmma variant exists only in sm_90a code)
    cap=$(python -c "import torch; c = '%d%d' % torch.cuda.get_device_capability(); print(c + 'a' * (c == '90'))")
    run install env LED_KERNELS_CUDA_ARCHS="$cap" python -m pip install -q --no-build-isolation --no-deps -e .
}

cuda_sanitizers() {  # memcheck and racecheck on a small case of every cuda kernel: the default ones (wgmma
    # on an H100), the mma.sync ones that sm_80 runs, and the named wgmma variants
    local mma="LED_KERNELS_CUDA_FWD=rows32 LED_KERNELS_CUDA_DQ=mma LED_KERNELS_CUDA_DKDV=mma"
    for tool in memcheck racecheck; do
        LIMIT=60 run "sanitizer-cuda-$tool" compute-sanitizer --tool "$tool" --error-exitcode 1 \
            python -m pytest -q -p no:cacheprovider -m gpu tests/ops/test_cuda.py -k "sanitizer_case and not wgmma"
        # shellcheck disable=SC2086  # (three assignments for env)
        LIMIT=60 run "sanitizer-cuda-$tool-mma" env $mma compute-sanitizer --tool "$tool" --error-exitcode 1 \
            python -m pytest -q -p no:cacheprovider -m gpu tests/ops/test_cuda.py -k "sanitizer_case and not wgmma"
        LIMIT=60 run "sanitizer-cuda-$tool-wgmma" compute-sanitizer --tool "$tool" --error-exitcode 1 \
            python -m pytest -q -p no:cacheprovider -m gpu tests/ops/test_cuda.py -k "sanitizer_case and wgmma"
    done
}

stage_tests() {
    install
    nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv | tee "$LOGDIR/gpu-state.log"
    run pytest-gpu python -m pytest -q -m gpu -p no:cacheprovider --durations=15
    run selfcheck python -m benchmarks.selfcheck
}

install_background() {  # build the extension while the GPU tests run (they do not need it)
    [ -n "${SKIP_INSTALL:-}" ] && return
    python -c "import led_kernels._C" 2>/dev/null && return
    cap=$(python -c "import torch; c = '%d%d' % torch.cuda.get_device_capability(); print(c + 'a' * (c == '90'))")
    LED_KERNELS_CUDA_ARCHS="$cap" CMAKE_BUILD_PARALLEL_LEVEL=4 nice -n 19 \
        python -m pip install -q --no-build-isolation --no-deps -e . >"$LOGDIR/install.log" 2>&1 &
}

stage_core() {
    install_background
    nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv | tee "$LOGDIR/gpu-state.log"
    LIMIT=150 run pytest-triton-gpu python -m pytest -q -p no:cacheprovider -n 8 tests/ops/test_triton_gpu.py
    # the bars compare providers within one run; flex's first torch.compile takes minutes on a fresh machine
    LIMIT=300 run bench-headline python -m benchmarks --providers triton flex sdpa hf --seqlens 16384 \
        --globals 1 --window 512 --head-dim 64 --check
    LIMIT=90 run bench-ratios python -m benchmarks --providers triton --seqlens 8192 16384 --globals 0 1 \
        --window 512 --head-dim 64 --tag ratios
    LIMIT=60 run profile-triton python -m benchmarks.profile_layer --provider triton
    wait  # the background build
}

stage_verify() {
    nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv | tee "$LOGDIR/gpu-state.log"
    LIMIT=110 run pytest-triton-gpu python -m pytest -q -p no:cacheprovider -n 8 tests/ops/test_triton_gpu.py \
        tests/ops/test_triton_prep.py
    # one process: one autotuning; the ratio bars (8k vs 16k, G=0 vs G=1) and hf in the same run
    LIMIT=90 run bench-headline python -m benchmarks --providers triton sdpa hf --seqlens 8192 16384 \
        --globals 0 1 --window 512 --head-dim 64 --check
    LIMIT=25 run profile-triton python -m benchmarks.profile_layer --provider triton --host
    # 64 global tokens: kernel A's slot tiles of 16 (banded.GLOBAL_KEY_TILE; wider ones serialised its
    # wgmmas), against the 0.375 ms forward of h100-sxm-attention-fused-ab.log
    LIMIT=45 run bench-g64 python -m benchmarks --providers triton --seqlens 16384 --globals 64 --window 512 \
        --head-dim 64 --modes fwd fwd_bwd --check --tag g64
    # (the forward at G=64 is tuned on its own since G_BUCKET joined the autotuner's key: its pick)
    LIMIT=25 run profile-triton-g64 python -m benchmarks.profile_layer --provider triton --globals 64
    # led: each encoder layer one longformer_attention call (the layer op); hf+patch: query_global over
    # the global tokens only (q_global_rows)
    LIMIT=80 run train-step-16k python -m benchmarks.train_step --seqlens 16384 --impls led hf+patch hf \
        --checkpointing off --timeout 40
}

stage_fused() {
    # the interpreter-checked layer tests on the GPU, both forward variants (they flip the switch)
    LIMIT=100 run pytest-fused-forward python -m pytest -q -p no:cacheprovider -n 8 tests/ops/test_triton.py \
        -k "layer or one_launch"
    LIMIT=90 run bench-fused-ab python -m benchmarks --providers triton triton-two-launch --seqlens 16384 \
        --globals 0 1 64 --window 512 --head-dim 64 --modes fwd fwd_bwd --check --tag fused-ab
    LIMIT=25 run profile-fused-forward python -m benchmarks.profile_layer --provider triton
    LIMIT=25 run profile-two-launch-forward env LED_KERNELS_FUSED_FORWARD=0 python -m benchmarks.profile_layer \
        --provider triton
}

stage_folds() {
    # kernel B's dQ from its dK/dV pass and the global keys' dK/dV from kernel A's dQ pass (the default
    # with a few global tokens) against their separate sweeps (the thresholds at 0): kernels, then timings
    LIMIT=150 run pytest-triton-gpu python -m pytest -q -p no:cacheprovider -n 8 tests/ops/test_triton_gpu.py
    local separate="LED_KERNELS_GKEY_IN_DQ_MAX_SLOTS=0 LED_KERNELS_DQ_IN_DKDV_MAX_SLOTS=0"
    LIMIT=40 run profile-folds python -m benchmarks.profile_layer --provider triton
    # shellcheck disable=SC2086  # (two assignments for env)
    LIMIT=40 run profile-separate-sweeps env $separate python -m benchmarks.profile_layer --provider triton
    LIMIT=60 run bench-folds python -m benchmarks --providers triton --seqlens 16384 --globals 0 1 4 \
        --window 512 --head-dim 64 --modes bwd fwd_bwd --tag folds
    # shellcheck disable=SC2086
    LIMIT=60 run bench-separate-sweeps env $separate python -m benchmarks --providers triton --seqlens 16384 \
        --globals 1 4 --window 512 --head-dim 64 --modes bwd fwd_bwd --tag separate-sweeps
}

stage_ncu() {
    # (--clock-control none: the clocks as they run, not locked; only the calls profile_layer --ncu marks)
    local ncu
    ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null)
    mkdir -p "$LOGDIR/ncu"
    LIMIT=150 run ncu-g1 "$ncu" --profile-from-start off --clock-control none --set full -f \
        -k 'regex:_band_|_layer_|_glob_dkdv' -o "$LOGDIR/ncu/g1" python -m benchmarks.profile_layer --ncu --globals 1
    LIMIT=90 run ncu-g0 "$ncu" --profile-from-start off --clock-control none --set full -f -k 'regex:_band_fwd' \
        -c 1 -o "$LOGDIR/ncu/g0" python -m benchmarks.profile_layer --ncu --globals 0
    for report in g1 g0; do
        LIMIT=30 run "ncu-$report-details" "$ncu" --import "$LOGDIR/ncu/$report.ncu-rep" --page details
    done
}

stage_cuda_ncu() {
    local ncu
    ncu=$(command -v ncu || ls /usr/local/cuda/bin/ncu 2>/dev/null)
    mkdir -p "$LOGDIR/ncu"
    # the marked forward's kernel A, then the forward + backward's (its forward again, its dQ and
    # dK/dV passes, kernel B's first), at the clocks as they run
    LIMIT=150 run ncu-cuda-g1 "$ncu" --profile-from-start off --clock-control none --set full -f \
        -k 'regex:banded_fwd_kernel|dq_kernel|dkdv_kernel' -c 6 -o "$LOGDIR/ncu/cuda-g1" \
        python -m benchmarks.profile_layer --provider cuda --ncu --globals 1
    LIMIT=30 run ncu-cuda-g1-details "$ncu" --import "$LOGDIR/ncu/cuda-g1.ncu-rep" --page details
}

stage_cuda() {
    install
    nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv | tee "$LOGDIR/gpu-state.log"
    LIMIT=150 run pytest-cuda-gpu python -m pytest -q -p no:cacheprovider -m gpu tests/ops/test_cuda.py \
        tests/test_extension.py -k "not wgmma" --durations=10
    LIMIT=120 run pytest-cuda-wgmma python -m pytest -q -p no:cacheprovider -m gpu tests/ops/test_cuda.py -k wgmma
    cuda_sanitizers
    LIMIT=90 run bench-cuda python -m benchmarks --providers cuda triton sdpa hf --seqlens 8192 16384 \
        --globals 0 1 --window 512 --head-dim 64 --check --tag cuda
    # the forward's other main loops (csrc/cuda/attention_fwd.cuh, FwdVariant)
    for variant in rows32 rows16 wgmma wgmma16s wgmma2g wgmma16o; do
        LIMIT=40 run "bench-cuda-fwd-$variant" env LED_KERNELS_CUDA_FWD=$variant python -m benchmarks \
            --providers cuda --seqlens 16384 --globals 0 1 --window 512 --head-dim 64 --modes fwd \
            --tag "cuda-fwd-$variant"
    done
    LIMIT=30 run profile-cuda python -m benchmarks.profile_layer --provider cuda
}

stage_owed() {
    LIMIT=20 run gpu-state nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv
    CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) install
    export PATH="$PATH:/usr/local/cuda/bin"  # cuobjdump and nvdisasm for the machine-code check
    # the default kernels (wgmma on an H100), the named wgmma variants, then the mma.sync kernels that
    # sm_80 runs, each set in a process of its own (a trap would end every later CUDA call of a process)
    LIMIT=150 run pytest-cuda-gpu python -m pytest -q -p no:cacheprovider tests/test_cuda_sass.py \
        tests/ops/test_cuda.py tests/test_extension.py -k "(gpu or sass) and not wgmma" --durations=10
    LIMIT=120 run pytest-cuda-wgmma python -m pytest -q -p no:cacheprovider tests/ops/test_cuda.py -k wgmma
    LIMIT=120 run pytest-cuda-mma env LED_KERNELS_CUDA_FWD=rows32 LED_KERNELS_CUDA_DQ=mma LED_KERNELS_CUDA_DKDV=mma \
        python -m pytest -q -p no:cacheprovider -m gpu tests/ops/test_cuda.py -k "not wgmma"
    # one run: the default kernels, the same without their lean runs, the mma.sync ones, the wgmma16s
    # forward with dQ's wgmmas (query rows read from shared memory), the two-warpgroup wgmma2g forward,
    # triton as the peer (the 128-row wgmma forward, slower than wgmma16 in every run so far, is in `cuda`)
    LIMIT=220 run bench-owed python -m benchmarks --providers cuda cuda-nolean cuda-mma cuda-wgmma16s cuda-wgmma2g \
        triton \
        --seqlens 16384 --globals 0 1 --window 512 --head-dim 64 --modes fwd fwd_bwd --check --tag owed
    cuda_sanitizers
    LIMIT=30 run profile-cuda python -m benchmarks.profile_layer --provider cuda
}

stage_next() {
    LIMIT=20 run gpu-state nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv
    export PATH="$PATH:/usr/local/cuda/bin"  # cuobjdump and nvdisasm for the machine-code check
    install_background
    LIMIT=110 run pytest-triton-gpu python -m pytest -q -p no:cacheprovider -n 8 tests/ops/test_triton_gpu.py \
        tests/ops/test_triton_prep.py
    wait  # the background build
    if ! python -c "import led_kernels._C" 2>/dev/null; then
        echo "=== the extension did not build:"; tail -40 "$LOGDIR/install.log"; status=1
    fi
    [ -n "$OUT" ] && { echo "===== install.log"; cat "$LOGDIR/install.log"; } >> "$OUT/gpu-check-$stage.log"
    LIMIT=120 run pytest-cuda-gpu python -m pytest -q -p no:cacheprovider tests/test_cuda_sass.py \
        tests/ops/test_cuda.py tests/test_extension.py -k "(gpu or sass) and not wgmma" --durations=5
    LIMIT=75 run pytest-cuda-wgmma python -m pytest -q -p no:cacheprovider tests/ops/test_cuda.py -k wgmma
    LIMIT=60 run pytest-cuda-mma env LED_KERNELS_CUDA_FWD=rows32 LED_KERNELS_CUDA_DQ=mma LED_KERNELS_CUDA_DKDV=mma \
        python -m pytest -q -p no:cacheprovider -m gpu tests/ops/test_cuda.py -k "not wgmma"
    # one run: triton with kernel B's 128-key tiles in the one-launch forward (the default) and with 64
    # (triton-key64), the cuda kernels with and without their lean runs, with the layer's forward and dQ
    # in one launch each (the default) and in two, and the three wgmma forwards
    LIMIT=190 run bench-next python -m benchmarks --providers triton triton-key64 cuda cuda-two-launch cuda-nolean \
        cuda-wgmma16s cuda-wgmma2g cuda-wgmma16o --seqlens 16384 --globals 0 1 --window 512 --head-dim 64 \
        --modes fwd fwd_bwd --check --tag next
    save_results
    # the ratio bars (8k against 16k, G=1 against G=0) and 64 global tokens, triton alone (G=64 compiles
    # its own forward candidates: a wider slot tile)
    LIMIT=140 run bench-ratios python -m benchmarks --providers triton --seqlens 8192 16384 --globals 0 1 64 \
        --window 512 --head-dim 64 --modes fwd fwd_bwd --tag ratios
    save_results
    LIMIT=25 run profile-triton python -m benchmarks.profile_layer --provider triton
    # G=0's forward kernel beside G=1's, in one call (with the autotuner's picks): the global keys' cost
    LIMIT=25 run profile-triton-g0 python -m benchmarks.profile_layer --provider triton --globals 0
    LIMIT=25 run profile-cuda python -m benchmarks.profile_layer --provider cuda
    LIMIT=25 run profile-cuda-wgmma16o env LED_KERNELS_CUDA_FWD=wgmma16o python -m benchmarks.profile_layer \
        --provider cuda
    for tool in memcheck racecheck; do
        LIMIT=40 run "sanitizer-cuda-$tool" compute-sanitizer --tool "$tool" --error-exitcode 1 \
            python -m pytest -q -p no:cacheprovider -m gpu tests/ops/test_cuda.py -k "sanitizer_case and not wgmma"
        LIMIT=40 run "sanitizer-cuda-$tool-wgmma" compute-sanitizer --tool "$tool" --error-exitcode 1 \
            python -m pytest -q -p no:cacheprovider -m gpu tests/ops/test_cuda.py -k "sanitizer_case and wgmma"
    done
}

stage_fault() {
    local case="tests/ops/test_triton_gpu.py::test_dtypes_and_head_dims"
    LIMIT=20 run gpu-state nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv
    for dt in float16 bfloat16 float32; do
        LIMIT=90 run "d128-$dt" env CUDA_LAUNCH_BLOCKING=1 python -m pytest -q -p no:cacheprovider "$case[128-torch.$dt]"
    done
    LIMIT=60 run d128-two-launch-forward env CUDA_LAUNCH_BLOCKING=1 LED_KERNELS_FUSED_FORWARD=0 \
        python -m pytest -q -p no:cacheprovider "$case[128-torch.float16]"
    LIMIT=60 run d128-no-dq-fold env CUDA_LAUNCH_BLOCKING=1 LED_KERNELS_GKEY_IN_DQ_MAX_SLOTS=0 \
        python -m pytest -q -p no:cacheprovider "$case[128-torch.float16]"
    # kernel A's dQ pass (the likely fault: see docs/kernels.md), then all three heavy kernels, with one
    # warpgroup (4 warps) instead of their fixed 8: Triton 3.6's wgmma wait synchronises only its own
    # warpgroup (triton-lang/triton#11047, fixed after 3.7.1)
    for kinds in band_dq "band_fwd band_dq band_dkdv"; do
        LIMIT=60 run "d128-4-warps-${kinds// /-}" env CUDA_LAUNCH_BLOCKING=1 LED_KERNELS_AUTOTUNE=0 KINDS="$kinds" \
            CASE="$case[128-torch.float16]" python - <<'PY'
import os
import sys

import pytest

from led_kernels.ops.triton import _common

fixed, kinds = _common.kernel_config, os.environ["KINDS"].split()


def four_warps(kind, *args, **kwargs):
    cfg = fixed(kind, *args, **kwargs)
    return {**cfg, "num_warps": 4} if kind in kinds else cfg


_common.kernel_config = four_warps
sys.exit(pytest.main(["-q", "-p", "no:cacheprovider", os.environ["CASE"]]))
PY
    done
    LIMIT=120 run d128-memcheck compute-sanitizer --tool memcheck --print-limit 8 --error-exitcode 1 \
        python -m pytest -q -p no:cacheprovider "$case[128-torch.float16]"
    save_results
    # the autotuned path (every candidate that fits runs once while tuning), with the error check
    LIMIT=120 run bench-d128 python -m benchmarks --providers triton --seqlens 16384 --globals 0 1 \
        --window 512 --head-dim 128 --modes fwd fwd_bwd --check --tag d128
}

stage_rest() {
    LIMIT=240 run train-step-16k python -m benchmarks.train_step --seqlens 16384 --timeout 100
    LIMIT=60 run pytest-extension-gpu python -m pytest -q -m gpu -p no:cacheprovider tests/test_extension.py
    LIMIT=150 run pytest-triton-gpu-scale python -m pytest -q -p no:cacheprovider tests/ops/test_triton_gpu_scale.py
}

stage_bench() {
    install
    # headline first, so that a timeout still leaves the figures the bars are about
    run bench-headline python -m benchmarks --seqlens 8192 16384 --globals 0 1 --window 512 --head-dim 64
    run bench-sweep python -m benchmarks
}

stage_train() {
    install
    run train-step python -m benchmarks.train_step --seqlens 4096 8192 16384
}

stage_sanitize() {
    install
    for tool in memcheck racecheck; do
        run "sanitizer-$tool" compute-sanitizer --tool "$tool" --error-exitcode 1 --target-processes all \
            python -m benchmarks.selfcheck --providers triton
    done
    # the compiled CUDA kernels (the backward's delta kernel) through their GPU tests
    run sanitizer-memcheck-extension compute-sanitizer --tool memcheck --error-exitcode 1 \
        python -m pytest -q -m gpu -p no:cacheprovider tests/test_extension.py
}

case "$stage" in
    tests) stage_tests ;;
    bench) stage_bench ;;
    train) stage_train ;;
    sanitize) stage_sanitize ;;
    all) stage_tests; stage_bench; stage_train; stage_sanitize ;;
    core) stage_core ;;
    verify) stage_verify ;;
    fused) stage_fused ;;
    rest) stage_rest ;;
    cuda) stage_cuda ;;
    owed) stage_owed ;;
    next) stage_next ;;
    folds) stage_folds ;;
    fault) stage_fault ;;
    ncu) stage_ncu ;;
    cuda-ncu) stage_cuda_ncu ;;
    *) echo "unknown stage $stage (tests, bench, train, sanitize, all, core, rest, verify, fused, cuda, owed, next, folds, fault, ncu, cuda-ncu)" >&2; exit 2 ;;
esac
if [ -n "$OUT" ]; then
    # one archive (the files written under benchmarks/results/ by this run, and the logs) and one log
    { find benchmarks/results -type f -newer /tmp/gpu_check_start -print0; find "$LOGDIR" -type f -print0; } |
        tar czf "$OUT/results-$stage.tgz" --null -T -
fi
exit $status
