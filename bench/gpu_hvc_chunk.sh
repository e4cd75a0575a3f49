#!/usr/bin/env bash
# One lease's share of HVC's full-length run: the paper's recipe as
# `--recipe hvc` has it (300 epochs, lr ×0.98 per epoch), on a CUDA GPU,
# trained for as long as SECONDS allows and continued by the next lease.
#
# DIR is laid out as for bench/gpu_runs.sh (the tch binary, mnist-data/);
# DIR/hvc-run/ holds the run so far and is created by the first lease.
# OUT gets what the next lease needs: the newest checkpoint's four files and
# its name, plus the log and the metrics of the epochs so far. Put them
# back before the next lease with
#
#   bench/gpu_hvc_chunk.sh --restore OUT DIR
#
# Usage: bench/gpu_hvc_chunk.sh DIR OUT SECONDS
# Sizes: the binary 23 MB, MNIST 11 MB and one HVC checkpoint 24 MB, so DIR
# fits the device tool's 64 MiB carry limit with nothing else in it.
# AUGMENT picks the first lease's augmentation policy: hvc-paper (default,
# the authors' own pipeline, as the paper trained) or ranges (the recipe's
# uniform ranges, as the compressed 99.50% runs used). Later leases resume
# with the run's own settings. DEVICE (default cuda:0) and EXTRA (e.g. a
# --train-limit) let it be tried on a CPU first (with BENCH=0: the step
# benchmarks take minutes there). Run it from the repository root, where
# `mnist bench --python` finds bench/torch_bench.py.
set -uo pipefail
files=(model.safetensors ema.safetensors optimizer.bpk state.json)

if [ "${1:-}" = --restore ]; then
    out=$2 dir=$3
    name=$(cat "$out/checkpoint.txt") || exit 1
    mkdir -p "$dir/hvc-run/checkpoints/$name" || exit 1
    for file in "${files[@]}"; do
        cp "$out/$file" "$dir/hvc-run/checkpoints/$name/" || exit 1
    done
    echo "restored $dir/hvc-run/checkpoints/$name"
    exit 0
fi

dir=$1 out=$2 budget=$3
device=${DEVICE:-cuda:0} extra=${EXTRA:-} augment=${AUGMENT:-hvc-paper}
started=$SECONDS
if [[ $device == cuda* ]]; then
    torch_lib=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))') || exit 1
    export LD_LIBRARY_PATH=$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
    nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
fi
export MNIST_DATA_DIR=$dir/mnist-data
mnist=$dir/mnist
chmod +x "$mnist"
run=$dir/hvc-run

# Training-step times of mnist-rs (tch) and PyTorch on this GPU, measured in
# the same minute: about a minute for the three recipes. BENCH=0 skips them.
if [ "${BENCH:-1}" = 1 ]; then
    for recipe in hvc seed-plus notebook; do
        timeout 120 "$mnist" bench --recipe "$recipe" --backend tch --device "$device" \
            --python python3 2>&1 | tee -a "$out/bench.txt"
    done
fi

# Train until a minute before the budget ends: the report and copies follow.
minutes=$(python3 -c "print(max(0.0, ($budget - ($SECONDS - $started) - 60) / 60))")
if [ -d "$run/checkpoints" ]; then
    "$mnist" train --resume "$run" --time-limit "$minutes"
else
    "$mnist" train --recipe hvc --augment "$augment" --backend tch --device "$device" \
        --out "$run" --time-limit "$minutes" $extra
fi 2>&1 | grep -vE "Step \[" | tee "$out/hvc.log"

last=$(ls -d "$run"/checkpoints/epoch-* 2>/dev/null | tail -1)
[ -n "$last" ] || { echo "no checkpoint was written"; exit 1; }
basename "$last" >"$out/checkpoint.txt"
for file in "${files[@]}"; do
    cp "$last/$file" "$out/"
done
cp "$run/metrics.json" "$out/" 2>/dev/null
echo "newest checkpoint: $(basename "$last"); restore it with: bench/gpu_hvc_chunk.sh --restore OUT DIR"
