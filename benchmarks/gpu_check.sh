#!/usr/bin/env bash
# The GPU checks and benchmarks, in stages that each fit one ~10-minute command:
#
#   bash benchmarks/gpu_check.sh tests      # build + install, GPU tests, provider self-check
#   bash benchmarks/gpu_check.sh bench      # attention benchmarks: headline shape + sweeps, all modes
#   bash benchmarks/gpu_check.sh train      # LED-base training step at 4k/8k/16k (bf16)
#   bash benchmarks/gpu_check.sh sanitize   # compute-sanitizer memcheck + racecheck on small cases
#   bash benchmarks/gpu_check.sh all        # everything above, in that order
#
# Expects torch, triton, transformers, pybind11, scikit-build-core, cmake and ninja to be installed
# (it installs this package without dependencies). Results land in benchmarks/results/ (named after
# the GPU); with $OUT set (a folder that is copied back), the logs and results are also copied there.
set -uo pipefail
cd "$(dirname "$0")/.."
stage="${1:-all}"
OUT="${OUT:-}"
LOGDIR="${OUT:-benchmarks/results}"
mkdir -p "$LOGDIR"
status=0

run() {  # run "<name>" cmd...: tee the output into $LOGDIR/<name>.log, remember a failure
    local name="$1"
    shift
    echo "=== $name: $*"
    local start=$SECONDS
    "$@" 2>&1 | tee "$LOGDIR/$name.log"
    local rc=${PIPESTATUS[0]}
    echo "=== $name: exit $rc after $((SECONDS - start)) s"
    [ "$rc" -eq 0 ] || status=1
}

install() {
    python -c "import led_kernels._C" 2>/dev/null && return
    # one architecture keeps the build short; the GPU here is the one that will run it
    cap=$(python -c "import torch; print('%d%d' % torch.cuda.get_device_capability())")
    run install env LED_KERNELS_CUDA_ARCHS="$cap" pip install -q --no-build-isolation --no-deps -e .
}

stage_tests() {
    install
    nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,temperature.gpu --format=csv | tee "$LOGDIR/gpu-state.log"
    run pytest-gpu python -m pytest -q -m gpu -p no:cacheprovider --durations=15
    run selfcheck python -m benchmarks.selfcheck
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
    *) echo "unknown stage $stage (tests, bench, train, sanitize, all)" >&2; exit 2 ;;
esac
if [ -n "$OUT" ]; then
    mkdir -p "$OUT/results"
    cp -r benchmarks/results/. "$OUT/results/"
fi
exit $status
