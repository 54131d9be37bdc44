#!/usr/bin/env bash
# The prepared GPU-host measurement (issue 27), for a lent GPU machine of the device tool (docs/scaling.md § GPUs):
#   make bench-gpu-wheels        # here, once: the wheels the machine lacks, into .whl/ (simplejpeg among them)
#   device run: command "bash bench/gpu_host.sh", carry [".whl"], kind "nvidia-h200", timeout_s 560
# On the H200 it continues the committed bench/results/gpu_check.json (--resume: the fed-rate job, then the
# train rows still missing) within 290 s; on any other GPU it starts a fresh gpu_check JSON. Then the input
# pipeline bench with 0, 4 and 16 workers on the host's cores (one round, before/after). Everything lands in
# $OUT (the device tool brings it back): gpu_check.json, input_pipeline_gpu_host.json and both logs. About 8.5
# minutes of command time; copy the JSON files into bench/results/ and commit them.
set -o pipefail
OUT=${OUT:-/tmp/gpu_host_out}
mkdir -p "$OUT"
if ls .whl/*.whl > /dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site || exit 1
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
export PYTHONUNBUFFERED=1
GPU=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)
if [[ "$GPU" == *H200* ]]; then
  CHECK=(--resume --out bench/results/gpu_check.json)
else
  CHECK=(--out "$OUT/gpu_check.json")
fi
timeout 330 python3 bench/gpu_check.py --budget_s 290 "${CHECK[@]}" 2>&1 | grep -v cuda_timer | tee "$OUT/gpu_check.log"
[[ "$GPU" == *H200* ]] && cp bench/results/gpu_check.json "$OUT/"
timeout 170 python3 bench/input_pipeline.py --workers 0,4,16 --rounds 1 --fed_workers none \
  --out "$OUT/input_pipeline_gpu_host.json" > "$OUT/input_pipeline.log" 2>&1
tail -n 24 "$OUT/input_pipeline.log"
