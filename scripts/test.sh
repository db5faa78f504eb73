#!/usr/bin/env bash
# Sets up (apt packages, build) and runs the whole test suite: the sources' formatting
# (.clang-format), CPU unit and kernel tests, the
# install/find_package test, distributed tests under mpirun, emulated multi-host tests (as root,
# skipped elsewhere), GPU tests (skipped without a GPU), then the build without MPI and its
# tests, then the CPU tests again under
# AddressSanitizer + UndefinedBehaviorSanitizer, then the libFuzzer targets of tests/fuzz (clang,
# ASan + UBSan): each replays its committed corpus and fuzzes for RINGATTN_FUZZ_SECONDS (default
# 60) seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

# mpirun as root, and more ranks than cores, as the distributed tests need.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1

start=$(date +%s)
BUILD_DIR=build bash scripts/setup.sh
# The C/C++ sources are formatted by .clang-format (Google style, 100 columns).
git ls-files -z '*.c' '*.cpp' '*.h' '*.hpp' '*.cu' '*.cuh' | xargs -0 clang-format --dry-run -Werror
ctest --test-dir build --output-on-failure --timeout 900

# The MPI-free configuration: the ring executor, the NCCL transport and the CUDA path build
# without MPI (one head dim and one architecture keep the CUDA compile short); its tests (CPU,
# the install consumers, GPU tests as skips) run.
BUILD_DIR=build-nompi bash scripts/setup.sh -DRINGATTN_ENABLE_MPI=OFF -DRINGATTN_HEADDIMS=128 \
  -DRINGATTN_CUDA_ARCHS=90
ctest --test-dir build-nompi --output-on-failure --timeout 900

if [[ "${RINGATTN_SKIP_SANITIZERS:-0}" != 1 ]]; then
  BUILD_DIR=build-asan bash scripts/setup.sh -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DRINGATTN_SANITIZE=ON -DRINGATTN_ENABLE_CUDA=OFF -DRINGATTN_ENABLE_MPI=OFF \
    -DRINGATTN_BUILD_EXAMPLES=OFF
  # The install test links a plain consumer against the instrumented library: not meaningful here.
  # Every UBSan report fails its test (GCC's UBSan otherwise prints and goes on).
  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 ASAN_OPTIONS=detect_leaks=1 \
    ctest --test-dir build-asan -L cpu -E install_consumer \
    --output-on-failure --timeout 900
fi
if [[ "${RINGATTN_SKIP_FUZZ:-0}" != 1 ]]; then
  fuzz_start=$(date +%s)
  CC=clang CXX=clang++ BUILD_DIR=build-fuzz bash scripts/setup.sh \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DRINGATTN_FUZZ=ON -DRINGATTN_BUILD_TESTS=OFF \
    -DRINGATTN_BUILD_EXAMPLES=OFF -DRINGATTN_FUZZ_SECONDS="${RINGATTN_FUZZ_SECONDS:-60}"
  ctest --test-dir build-fuzz -L fuzz --output-on-failure -j "$(nproc)"
  echo "test.sh: fuzzing passed in $(( $(date +%s) - fuzz_start )) s"
fi
echo "test.sh: all tests passed in $(( $(date +%s) - start )) s"
