#!/usr/bin/env bash
# The GPU checks of issue 6, in one call on a machine with a CUDA GPU (its python3 holds torch):
#   bash benchmarks/gpu_check.sh OUTDIR
# 1) the GPU benchmark at 100k patients (benchmarks/bench_gpu.py); 2) torchrun with the NCCL
# backend training on the GPU end to end; 3) the device and distributed tests with the GPU visible.
# Packages the machine lacks (polars) are installed from wheels in .whl/ when that folder exists.
set -uo pipefail
source "$(dirname "$0")/gpu_setup.sh" "${1:-}"
python3 benchmarks/bench_gpu.py --patients 100000 --out "$out/bench_gpu.jsonl" 2>&1 | tee "$out/bench_gpu.log"
python3 -m ehrdx synth --out /tmp/ehrdx_c --format meds --patients 3000 > /dev/null
torchrun --standalone --nproc_per_node=1 -m ehrdx train --meds /tmp/ehrdx_c/meds \
  --labels map:/tmp/ehrdx_c/label_map.csv --out /tmp/ehrdx_m --epochs 3 --device cuda 2>&1 | tee "$out/torchrun_nccl.log" | tail -4
python3 -c "import json; h=json.load(open('/tmp/ehrdx_m/metrics.json'))['history']; print('torchrun nccl history', {k: h[k] for k in ('processes', 'device', 'precision', 'epochs_run', 'samples_per_second')})" | tee -a "$out/torchrun_nccl.log"
python3 -m pytest -q -p no:cacheprovider -p no:warnings tests/test_device.py tests/test_distributed.py 2>&1 | tail -5 | tee "$out/tests.log"
