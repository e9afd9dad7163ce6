#!/usr/bin/env bash
# Everything minigpt claims about the GPU, in one run of under 5 minutes:
#   1. the CuPy tests (forward/backward and a few training steps equal NumPy's),
#   2. the GPU benchmark against PyTorch eager (strict float32, then TF32),
#   3. a short training run of the shakespeare_char model on shakespeare.txt.
# Run from the repository root on a machine with CuPy and a CUDA GPU:
#   bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
status=0
log=${OUT:-/tmp}/gpu_check
mkdir -p "$log"

echo "== 1. CuPy tests"
$PY -m pytest -q tests/test_backend.py 2>&1 | tee "$log/tests.txt" | tail -5 || status=1

echo "== 2. GPU benchmark (strict float32, then TF32)"
$PY benchmarks/bench_gpu.py --rounds 5 --steps 10 2>&1 | tee "$log/bench_fp32.txt" || status=1
$PY benchmarks/bench_gpu.py --rounds 3 --steps 10 --tf32 2>&1 | tee "$log/bench_tf32.txt" || status=1

echo "== 3. Training the shakespeare_char model (90 s of training)"
$PY -m minigpt.train shakespeare.txt --device cuda --out-dir "$log/run" --overwrite \
    --n-layer 6 --n-head 6 --n-embd 384 --block-size 256 --batch-size 64 --dropout 0.2 \
    --lr 1e-3 --min-lr 1e-4 --warmup-iters 100 --lr-decay-iters 5000 --max-iters 5000 --beta2 0.99 \
    --max-time 2.0 --eval-interval 250 --eval-iters 100 --log-interval 100 --sample-tokens 200 \
    2>&1 | tee "$log/train.txt" | grep -E "^(iter|step|eval|best|val)|val|best" | tail -25 || status=1

echo "== summary"
grep -E "passed|failed" "$log/tests.txt" | tail -1
grep -E "tokens/s|minigpt |pytorch |ratio" "$log/bench_fp32.txt" "$log/bench_tf32.txt"
grep -iE "best val" "$log/train.txt" | tail -1
exit $status
