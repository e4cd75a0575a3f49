#!/usr/bin/env bash
# The CUDA runs recorded in docs/results.md, in one command sized for a short
# GPU lease: the tch backend's sanity checks, the notebook's run beside
# PyTorch's on the same GPU, then HVC until the time is used up.
#
# Needs a release `mnist` built with `--features tch` against the same PyTorch
# version the GPU machine has (docs/performance.md says how), and Python with
# that PyTorch. Everything the runs read sits in one folder:
#
#   DIR/mnist                 the binary
#   DIR/mnist-data/           MNIST's four .gz files
#   DIR/seed_reference.py     the notebook as a script (shared/reference)
#   DIR/*.safetensors         trained CPU models to re-evaluate on the GPU
#
# Usage: bench/gpu_runs.sh DIR OUT SECONDS [HVC training flags...]
# SECONDS is the whole script's budget; HVC gets what the rest leaves.
# DEVICE (default cuda:0) and EXTRA (flags for every run, e.g. a
# --train-limit) let the script be tried on a CPU first.
set -uo pipefail
dir=$1 out=$2 budget=$3
shift 3
device=${DEVICE:-cuda:0} extra=${EXTRA:-}
started=$SECONDS
left() { echo $((budget - (SECONDS - started))); }
step() { printf '\n=== %s (%s s left) ===\n' "$1" "$(left)"; }

torch_lib=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))') || exit 1
export LD_LIBRARY_PATH=$torch_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export MNIST_DATA_DIR=$dir/mnist-data
mnist=$dir/mnist
chmod +x "$mnist"
rm -rf /tmp/hvc /tmp/notebook /tmp/ensemble
# Peak memory where GNU time is installed.
timed() { if [ -x /usr/bin/time ]; then /usr/bin/time -v "$@"; else "$@"; fi; }

step "machine"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || echo "no GPU"
python3 -c 'import torch; print("python torch", torch.__version__, "cuda", torch.version.cuda)'
"$mnist" backends || exit 1

step "trained CPU models evaluated on the GPU"
models=("$dir"/*.safetensors)
for model in "${models[@]}"; do
    # The first failure here means the GPU path is broken: stop, keep the lease.
    timeout 60 "$mnist" eval --weights "$model" --backend tch --device "$device" --json \
        | python3 -c 'import json, sys; m = json.load(sys.stdin); print(sys.argv[1], m["test_accuracy"], m["eval_seconds"])' "$(basename "$model")" \
        || exit 1
done
if [ ${#models[@]} -gt 1 ]; then
    timeout 60 "$mnist" eval --weights "${models[@]}" --backend tch --device "$device" --out /tmp/ensemble | grep Accuracy
fi

step "the notebook on the GPU: mnist-rs (tch)"
timed timeout 120 "$mnist" train --backend tch --device "$device" --seed 0 --out /tmp/notebook $extra \
    2>"$out/notebook-time.txt" | grep -E "done:|Accuracy|Trained"
grep -E "Maximum resident|Elapsed" "$out/notebook-time.txt"

step "the notebook on the GPU: PyTorch"
torch_device=cpu
[[ $device == cuda* ]] && torch_device=cuda
sed -e "s/torch.device(\"cpu\")/torch.device(\"$torch_device\")/" -e 's/predicted.numpy()/predicted.cpu().numpy()/' \
    "$dir/seed_reference.py" >/tmp/seed_reference_cuda.py
timed timeout 120 python3 /tmp/seed_reference_cuda.py "$MNIST_DATA_DIR" --preload --seed 0 ${EXTRA:+--limit 2400} \
    2>"$out/torch-time.txt" | tail -4
grep -E "Maximum resident|Elapsed" "$out/torch-time.txt"

# HVC: the paper's recipe with its 300-epoch schedule compressed into the
# time left. The first epoch runs alone to time an epoch; the run then resumes
# with as many epochs as fit, under a cosine schedule (near its peak for the
# first epoch whatever the final count, unlike an exponential decay's rate).
step "HVC, first epoch"
hvc=(--recipe hvc --schedule cosine --backend tch --device "$device" --out /tmp/hvc)
"$mnist" train "${hvc[@]}" --epochs 1000 --time-limit 0 $extra "$@" 2>&1 | tee "$out/hvc.log" \
    | grep -E "^(Model|Training|Epoch .* done|Stopping)"
epoch_s=$(python3 -c 'import re, sys
m = re.search(r"Epoch 1/\d+ done:.*\(([\d.]+) s, lr [\d.e-]+, eval ([\d.]+) s\)", open(sys.argv[1]).read())
print(float(m[1]) + float(m[2]))' "$out/hvc.log") || exit 1
epochs=$(python3 -c "print(max(2, int(($(left) - 60) / $epoch_s)))")
minutes=$(python3 -c "print(max(0.0, ($(left) - 45) / 60))")
step "HVC, resumed to $epochs epochs of ${epoch_s} s, --time-limit $minutes min"
"$mnist" train --resume /tmp/hvc --epochs "$epochs" --time-limit "$minutes" 2>&1 \
    | tee -a "$out/hvc.log" | grep -vE "Step \["
for file in metrics.json model.safetensors confusion_matrix.png curves.png; do
    cp "/tmp/hvc/$file" "$out/hvc-$file" 2>/dev/null
done
# A run cut short still leaves its last checkpoint's averaged weights.
last=$(ls -d /tmp/hvc/checkpoints/epoch-* 2>/dev/null | tail -1)
if [ -n "$last" ] && [ ! -e "$out/hvc-model.safetensors" ]; then
    cp "$last/ema.safetensors" "$out/hvc-model.safetensors"
fi
step "done"
