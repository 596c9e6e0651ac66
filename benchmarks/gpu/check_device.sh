#!/usr/bin/env bash
# On a machine with a real CUDA GPU: check every GPU kernel and every layer's GPU path
# against its CPU twin on the device (the same tests the simulator runs, with the
# simulator off), then time the GPU benchmarks. Results go to $OUT (or ./gpu-results).
#
#   bash benchmarks/gpu/check_device.sh
#
# Needs the project's dependencies importable (numba, numba-cuda, numpy, scipy, protobuf,
# h5py, pytest, hypothesis) and the project itself on the path (pip install -e . or
# PYTHONPATH plus an editable install).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-gpu-results}"
mkdir -p "$OUT"
export NUMBA_ENABLE_CUDASIM=0           # tests/conftest.py only sets it when unset
PY="${PYTHON:-python3}"

"$PY" -m jitnet device_query | tee "$OUT/device_query.txt"
"$PY" -m pytest -q -p no:cacheprovider tests/test_kernels.py tests/test_layers.py tests/test_gpu_mode.py \
    tests/test_conv_algorithms.py tests/test_recurrent.py -k "gpu" \
    --junitxml="$OUT/gpu_parity.xml" 2>&1 | tee "$OUT/gpu_parity.txt"
parity=${PIPESTATUS[0]}
"$PY" benchmarks/bench.py --gpu --repeat 50 --json "$OUT/bench_gpu.json" 2>&1 | tee "$OUT/bench_gpu.txt"
exit "$parity"
