#!/usr/bin/env bash
# The GPU check, run in one go on a machine with a CUDA GPU and torch (no venv of ours needed):
#   1. the merge library's CUDA tests (a cuda merge equals the cpu merge, every method) and the
#      mergekit oracle tests, which also prove mergekit imports there;
#   2. bench/merge_bench.py with both merges timed on the CPU and on the GPU.
# Missing Python packages (mergekit and what it needs beyond torch/transformers) can come as
# wheels in .whl/: they are installed into /tmp/site first. The CPU TIES kernel needs a C
# compiler (cc); without one ours on the CPU runs the torch methods, and says so.
# Logs go to $OUT when it is set;
# BENCH_ARGS adds arguments to merge_bench.py (say "--keep --workdir /tmp/mb" to reuse its checkpoints).
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
LOGS=${OUT:-/tmp/gpu-check}
mkdir -p "$LOGS"
if compgen -G ".whl/*.whl" >/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi -L
python3 -c "import torch, transformers, safetensors; print('torch', torch.__version__, 'transformers', transformers.__version__, 'safetensors', safetensors.__version__)"
python3 -m pytest -q -p no:cacheprovider tests/merges/test_cuda.py tests/merges/test_vs_mergekit.py 2>&1 | tee "$LOGS/tests.log"
python3 bench/merge_bench.py --params "${PARAMS:-1e9}" --device cpu --device cuda ${BENCH_ARGS:-} 2>&1 \
    | grep -v "Executing graph\|Warmup loader" | tee "$LOGS/merge_bench.log"
