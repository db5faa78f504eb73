#!/usr/bin/env bash
# Installs what ringattn needs from Debian's packages and builds it into ./build (or $BUILD_DIR).
# Usage: scripts/setup.sh [extra cmake -D options]
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(build-essential cmake pkg-config libopenblas-openmp-dev libopenblas-dev libhwy-dev libxsmm-dev
      libopenmpi-dev openmpi-bin libgtest-dev nlohmann-json3-dev libcli11-dev
      python3-numpy iproute2
      # scripts/test.sh checks the C/C++ sources against .clang-format
      clang-format
      # scripts/scaling.py: sweeps, plots (matplotlib) and the performance model
      python3-matplotlib
      # the Python package (python/ringattn) and its tests: pybind11 for the compiled core,
      # Debian's torch 1.13 (CPU) and mpi4py for ringattn.torch and its pytest under mpirun
      python3-dev pybind11-dev python3-torch python3-mpi4py python3-pytest)
# The fuzz build (-DRINGATTN_FUZZ=ON, tests/fuzz) needs clang with its libFuzzer and sanitizer
# runtimes, and LLVM's OpenMP runtime for the kernels.
for arg in "$@"; do
  if [[ "$arg" == -DRINGATTN_FUZZ=ON ]]; then PKGS+=(clang libclang-rt-dev libomp-dev); fi
done
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The CUDA toolkit is not a Debian package here; use it where it is installed.
if [[ -z "${CUDACXX:-}" && -x /usr/local/cuda/bin/nvcc ]] && ! command -v nvcc >/dev/null; then
  export CUDACXX=/usr/local/cuda/bin/nvcc
fi

BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)"
echo "setup: built into $BUILD_DIR"
