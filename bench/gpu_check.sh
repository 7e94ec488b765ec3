#!/usr/bin/env bash
# GPU acceptance check of the CUDA (CuPy) path: environment and versions, the cuda tests,
# an exact --resume with dropout and the checkpoint on the CPU and back, mpiexec -n 2 (one
# GPU per rank), the step benchmark on cuda (beside PyTorch's cuDNN) and cpu, launches and
# reads per step, a short char-LM and a sample; one report file. Under 8 minutes.
#
#   bash bench/gpu_check.sh [REPORT]
#
# REPORT defaults to $GPU_REPORT, else $OUT/gpu_report.txt when OUT is set, else
# ./gpu_report.txt. Without a GPU it says so in one line and exits 0; otherwise it exits
# 1 when any stage failed. GPU_CHECK_INSTALL=1 installs CuPy first when it is missing;
# PYTHON picks the interpreter. The stages and their timeouts live in gpu_check.py,
# where the tests can reach them.
set -u
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd) || exit 1
exec "${PYTHON:-python3}" "$here/gpu_check.py" "$@"
