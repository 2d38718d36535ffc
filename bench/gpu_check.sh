#!/usr/bin/env bash
# The one command for a lent GPU host (issue 7): which GPU, do the CUDA paths run and match the
# CPU, and how fast is the full per-frame pipeline vs batch with torch CUDA ± CUDA graphs.
#
#   here (has the venv, the face models):  bash bench/gpu_check.sh --prepare
#        → artifacts/engines/{renderer.onnx,renderer.json,bank-default.npz} (~14 MB)
#   there (device tool):  run(command="bash bench/gpu_check.sh", carry=["artifacts/engines"])
#        → $OUT/{gpu.txt,cuda_tests.txt,pipeline.json,pipeline.txt} (or bench/results/gpu-check-*)
#
# The GPU host has its own python3 with torch (CUDA), numpy, onnx and onnxruntime, but no venv,
# no face models and no network: everything the checks need beyond that is carried. Each step
# runs even if an earlier one failed; the exit status is the first failure's.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 PYTHONPATH=. OMP_NUM_THREADS=1

if [ "${1:-}" = "--prepare" ]; then
  PY=${PYTHON:-.venv/bin/python}
  exec "$PY" -c "
from bench.pipeline import RENDERER_MANIFEST, default_bank
from vivify.export.engine_export import export_renderer
export_renderer(RENDERER_MANIFEST.parent)  # always fresh: the torch twin is today's code
default_bank()
print('ready for the GPU host:', RENDERER_MANIFEST.parent)"
fi

PY=${PYTHON:-python3}
RUNTIME=${GPU_CHECK_RUNTIME:-torch-cuda}  # torch-cpu runs the same script here, as a dry run
OUT=${OUT:-bench/results/gpu-check-$(date -u +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
status=0
step() { echo "== $1"; shift; "$@" || { rc=$?; echo "!! failed ($rc): $*"; [ $status = 0 ] && status=$rc; }; }

{
  nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
      'device', torch.cuda.get_device_name(0), torch.cuda.get_device_capability(0))"
} > "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"
step "CUDA tests (graphs per bucket, re-pin, uint8, generator twin)" \
  bash -c "set -o pipefail; '$PY' -m pytest -q -p no:cacheprovider tests/test_torch_runner.py 2>&1 | tee '$OUT/cuda_tests.txt'"
step "pipeline vs batch, $RUNTIME with and without CUDA graphs" \
  bash -c "set -o pipefail; '$PY' -m bench.pipeline --runtime $RUNTIME --cuda-graphs both \
           --batches ${GPU_CHECK_BATCHES:-1,8,32,64} \
           --out '$OUT/pipeline.json' 2>&1 | tee '$OUT/pipeline.txt'"
exit $status
