#!/usr/bin/env bash
# Everything minigpt claims about the GPU, in one run of under 5 minutes:
#   1. the CuPy tests (forward/backward, a few training steps and each fused
#      kernel equal NumPy's; --tf32 reaches the GPU),
#   2. the GPU benchmark against PyTorch eager: strict float32, then TF32, then
#      minigpt alone without its fused kernels (what they save),
#   3. a short training run of the shakespeare_char model on shakespeare.txt.
# Run from the repository root on a machine with CuPy and a CUDA GPU:
#   bash benchmarks/gpu_check.sh            (logs in $OUT/gpu_check, or /tmp/gpu_check)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
status=0
log=${OUT:-/tmp}/gpu_check
mkdir -p "$log"

# Without a GPU every step below would fail on its own; say why once, up front.
$PY -c "
import sys
from minigpt.backend import DeviceError, resolve_device
try:
    resolve_device('cuda')
except DeviceError as e:
    sys.exit(f'gpu_check: no GPU to check: {e}')
" || exit 2

echo "== 1. CuPy tests"
$PY -m pytest -q -rs tests/test_backend.py \
    tests/test_train.py::test_tf32_on_a_gpu_turns_tf32_on_and_trains \
    tests/test_sample.py::test_cli_tf32_on_a_gpu_turns_tf32_on_and_samples \
    2>&1 | tee "$log/tests.txt" | tail -15 || status=1
if grep -qE "[0-9]+ skipped" "$log/tests.txt"; then
    echo "gpu_check: CuPy tests were skipped on a GPU machine (see above)"; status=1
fi

echo "== 2. GPU benchmark (strict float32, TF32, then minigpt without fused kernels)"
$PY benchmarks/bench_gpu.py --rounds 5 --steps 10 2>&1 | tee "$log/bench_fp32.txt" || status=1
$PY benchmarks/bench_gpu.py --rounds 3 --steps 10 --tf32 2>&1 | tee "$log/bench_tf32.txt" || status=1
$PY benchmarks/bench_gpu.py --rounds 3 --steps 10 --no-fused --no-torch 2>&1 \
    | tee "$log/bench_unfused.txt" || status=1

echo "== 3. Training the shakespeare_char model (2 minutes)"
$PY -m minigpt.train shakespeare.txt --device cuda --out-dir "$log/run" --overwrite \
    --n-layer 6 --n-head 6 --n-embd 384 --block-size 256 --batch-size 64 --dropout 0.2 \
    --lr 1e-3 --min-lr 1e-4 --warmup-iters 100 --lr-decay-iters 5000 --max-iters 5000 --beta2 0.99 \
    --max-time 2.0 --eval-interval 250 --eval-iters 100 --log-interval 100 --sample-tokens 200 \
    2>&1 | tee "$log/train.txt" | grep -E "^(iter|step|eval|best|val)|val|best" | tail -25 || status=1

# A benchmark's rate, or "-": rate FILE NAME (NAME is minigpt or pytorch)
rate() { awk -v n="$2" '$1 == n { print $2; found = 1 } END { if (!found) print "-" }' "$1"; }

echo "== summary"
grep -E "passed|failed" "$log/tests.txt" | tail -1
printf "%-34s %12s %12s\n" "training step, tokens/s" minigpt pytorch
printf "%-34s %12s %12s\n" "strict float32" "$(rate "$log/bench_fp32.txt" minigpt)" \
    "$(rate "$log/bench_fp32.txt" pytorch)"
printf "%-34s %12s %12s\n" "TF32 (--tf32)" "$(rate "$log/bench_tf32.txt" minigpt)" \
    "$(rate "$log/bench_tf32.txt" pytorch)"
printf "%-34s %12s %12s\n" "strict float32, no fused kernels" "$(rate "$log/bench_unfused.txt" minigpt)" "-"
grep -iE "best val" "$log/train.txt" | tail -1
exit $status
