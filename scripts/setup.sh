#!/usr/bin/env bash
# Installs what ringattn needs from Debian's packages and builds it into ./build (or $BUILD_DIR).
# Usage: scripts/setup.sh [extra cmake -D options]
#        scripts/setup.sh --cudnn-frontend-only   (only unpack the cuDNN frontend's headers)
set -euo pipefail
cd "$(dirname "$0")/.."

# The cuDNN frontend's C++ headers (header-only, from the PyPI wheel nvidia-cudnn-frontend) for
# the CUDA backend's cuDNN path, unpacked into .deps/cudnn-frontend (ignored by git; carried to
# the GPU machine by scripts/device_check.sh). cuDNN itself comes with the CUDA toolkit.
CUDNN_FRONTEND_VERSION=1.32.0
fetch_cudnn_frontend() {
  local dst=.deps/cudnn-frontend tmp
  [[ -f "$dst/include/cudnn_frontend_version.h" ]] &&
    grep -q "MINOR_VERSION $(cut -d. -f2 <<<"$CUDNN_FRONTEND_VERSION")\$" \
      "$dst/include/cudnn_frontend_version.h" &&
    return 0
  tmp=$(mktemp -d)
  if /usr/bin/python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
    --implementation cp --platform manylinux_2_28_x86_64 -d "$tmp" \
    "nvidia-cudnn-frontend==$CUDNN_FRONTEND_VERSION" >/dev/null 2>&1; then
    rm -rf "$dst"
    mkdir -p "$dst"
    /usr/bin/python3 - "$tmp" "$dst" <<'PY'
import glob, os, sys, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith("include/") and not name.endswith("/"):
            z.extract(name, sys.argv[2])
PY
    echo "setup: cuDNN frontend $CUDNN_FRONTEND_VERSION headers in $dst"
  else
    echo "setup: could not download nvidia-cudnn-frontend; the cuDNN path is not built"
  fi
  rm -rf "$tmp"
}
if [[ "${1:-}" == --cudnn-frontend-only ]]; then
  fetch_cudnn_frontend
  exit 0
fi

PKGS=(build-essential cmake pkg-config libopenblas-openmp-dev libopenblas-dev libhwy-dev libxsmm-dev
      libopenmpi-dev openmpi-bin libgtest-dev nlohmann-json3-dev libcli11-dev
      python3-numpy iproute2
      # scripts/test.sh checks the C/C++ sources against .clang-format
      clang-format
      # scripts/scaling.py: sweeps, plots (matplotlib) and the performance model
      python3-matplotlib
      # pip: fetches the cuDNN frontend's headers (below) where the CUDA toolkit is
      python3-pip
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
if [[ -n "${CUDACXX:-}" ]] || command -v nvcc >/dev/null; then fetch_cudnn_frontend; fi

BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build "$BUILD_DIR" -j"$(nproc)"
echo "setup: built into $BUILD_DIR"
