#!/usr/bin/env bash
# The GPU checks of issues 15 and 16, in one call on a machine with a CUDA GPU (its python3 holds torch):
#   bash benchmarks/gpu_scale_check.sh OUTDIR
# 1) the device-collate, batch-cap, device and pretrain tests with the GPU visible;
# 2) issue 15: the training loop against ready batches at batch 256 and 1,024, hidden 128, GRU and
#    Transformer, batches built on the device (in a thread on a side stream) and with numpy plus a copy (in
#    a background thread, packed in one buffer or a copy per field), and prediction rows/s
#    (benchmarks/bench_gpu.py at 100k patients, one process);
# 3) with PRETRAIN=1, issue 16: pretraining throughput on the GPU at 100k built-in patients
#    (benchmarks/bench_pretrain.py).
# Each step has its own time limit, so one that hangs or fails leaves the others' results.
# Packages the machine lacks (polars, lightgbm) are installed from wheels in .whl/ when that folder exists.
set -uo pipefail
source "$(dirname "$0")/gpu_setup.sh" "${1:-}"
timeout 120 python3 -m pytest -q -p no:cacheprovider -p no:warnings -x tests/test_device_collate.py \
  tests/test_batch_transfer.py tests/test_batch_cap.py tests/test_device.py 2>&1 | tail -8 | tee "$out/tests.log"
timeout 330 python3 benchmarks/bench_gpu.py --patients 100000 --precisions fp32 --batch-sizes 256,1024 \
  --device-collate "${COLLATES:-thread,off,fields}" --cpu-patients 0 \
  --out "$out/bench_gpu.jsonl" 2>&1 | tail -24 | tee "$out/bench_gpu.log"
for m in $([ "${PRETRAIN:-0}" = 1 ] && echo gru transformer); do
  timeout 100 python3 benchmarks/bench_pretrain.py --patients 100000 --threads 16 --epochs 2 --model $m \
    --device cuda 2>&1 | tail -3 | tee -a "$out/bench_pretrain.jsonl"
done
