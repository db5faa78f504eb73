#!/usr/bin/env bash
# The one-shot GPU check: build for sm_90, run the gpu tests (and compute-sanitizer on small
# cases), benchmark the CUDA forward/backward against torch SDPA (flash, cuDNN) and the cuBLAS
# baseline. Writes a log and JSON into OUTDIR; prints a short table last.
#
#   scripts/device_check.sh --pack-deps   (on the build machine) pack the host libraries the
#                                         build needs (Highway, libxsmm, OpenBLAS, CLI11,
#                                         nlohmann_json, GoogleTest sources) into .deps/
#   scripts/device_check.sh OUTDIR        (on the GPU machine, with .deps/ carried along)
#
# Environment: RINGATTN_CHECK_QUICK=1 benchmarks the target problems only;
#              RINGATTN_CHECK_JOBS (default 16) build jobs.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPS_TAR="$ROOT/.deps/ringattn-deps.tar.xz"

if [[ "${1:-}" == "--pack-deps" ]]; then
  set -e
  mkdir -p "$ROOT/.deps"
  list=$(mktemp)
  arch=x86_64-linux-gnu
  {
    for p in libhwy-dev libhwy1 libcli11-dev nlohmann-json3-dev googletest; do
      dpkg -L "$p" | grep -v '^/usr/share/doc' | grep -v '^/usr/share/man'
    done
    dpkg -L libxsmm-dev | grep '^/usr/include'
    echo /usr/lib/libxsmm.a
    for f in libopenblasp-r0.3.21.so libopenblas.so libopenblas.so.0; do
      echo "/usr/lib/$arch/openblas-openmp/$f"
    done
    for f in cblas.h f77blas.h openblas_config.h; do echo "/usr/include/$arch/openblas-openmp/$f"; done
    ls /usr/lib/$arch/libgfortran.so.5* /usr/lib/$arch/libquadmath.so.0*
  } | while read -r f; do [[ -f "$f" || -L "$f" ]] && echo "${f#/}"; done | sort -u >"$list"
  tar -C / -cJf "$DEPS_TAR" -T "$list"
  rm -f "$list"
  ls -la "$DEPS_TAR"
  exit 0
fi

OUT="${1:?usage: device_check.sh OUTDIR | --pack-deps}"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/device_check.log") 2>&1
T0=$(date +%s)
section() { echo; echo "=== [$(($(date +%s) - T0))s] $*"; }
JOBS="${RINGATTN_CHECK_JOBS:-16}"
# The device copy of the tree has no git metadata: the caller passes RINGATTN_COMMIT.
COMMIT="${RINGATTN_COMMIT:-}"
if [[ -z "$COMMIT" ]]; then
  COMMIT=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null) || COMMIT=uncommitted
  [[ -n "$(git -C "$ROOT" status --porcelain 2>/dev/null | head -1)" ]] && COMMIT="$COMMIT+uncommitted"
fi

section "machine"
date -u
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
nvcc --version | tail -2
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(), 'cudnn', torch.backends.cudnn.version())"
echo "commit $COMMIT"

section "dependencies"
DEPS=/tmp/ringattn-deps
mkdir -p "$DEPS"
tar -C "$DEPS" -xJf "$DEPS_TAR" || { echo "cannot unpack $DEPS_TAR"; exit 1; }
LIBDIR="$DEPS/usr/lib/x86_64-linux-gnu"
export LD_LIBRARY_PATH="$LIBDIR:$LIBDIR/openblas-openmp:${LD_LIBRARY_PATH:-}"

section "configure (sm_90, Release)"
BUILD="$ROOT/build-device"
cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DRINGATTN_ENABLE_CUDA=ON -DRINGATTN_ENABLE_MPI=OFF -DRINGATTN_ENABLE_NCCL=OFF \
  -DRINGATTN_CUDA_ARCHS=90 -DCMAKE_CUDA_ARCHITECTURES=90 -DRINGATTN_NATIVE=OFF \
  -DCMAKE_PREFIX_PATH="$DEPS/usr" \
  -Dhwy_DIR="$LIBDIR/cmake/hwy" \
  -DRINGATTN_GTEST_SOURCE_DIR="$DEPS/usr/src/googletest" \
  -DRINGATTN_XSMM_LIBRARY="$DEPS/usr/lib/libxsmm.a" -DRINGATTN_XSMM_INCLUDE_DIR="$DEPS/usr/include" \
  -DRINGATTN_OPENBLAS_LIBRARY="$LIBDIR/openblas-openmp/libopenblas.so" \
  -DRINGATTN_CBLAS_INCLUDE_DIR="$DEPS/usr/include/x86_64-linux-gnu/openblas-openmp" \
  >"$OUT/build.log" 2>&1
rc=$?
tail -3 "$OUT/build.log"
[[ $rc -eq 0 ]] || { echo "configure failed"; tail -40 "$OUT/build.log"; exit 1; }

section "build (ninja -j$JOBS)"
TARGETS="ringattn test_cuda_forward test_cuda_backward test_cuda_rowwise test_cuda_api test_cuda_tiling ringattn_gpu_bench"
cmake --build "$BUILD" -j "$JOBS" --target $TARGETS >>"$OUT/build.log" 2>&1
rc=$?
grep -E "warning|error" "$OUT/build.log" | head -20
[[ $rc -eq 0 ]] || { echo "build failed"; tail -40 "$OUT/build.log"; exit 1; }
echo "build ok"

section "gpu tests"
# One process per executable (not per case) keeps CUDA start-up out of the clock.
declare -A RESULT
for t in test_cuda_tiling test_cuda_rowwise test_cuda_api test_cuda_forward test_cuda_backward; do
  exe=$(find "$BUILD/tests" -name "$t" -type f | head -1)
  log=$(mktemp)
  ts=$(date +%s)
  timeout 150 "$exe" >"$log" 2>&1
  RESULT[$t]=$?
  cat "$log" >>"$OUT/gpu_tests.log"
  echo "$t: exit ${RESULT[$t]} in $(($(date +%s) - ts))s ($(grep -c '^\[       OK' "$log") ok," \
    "$(grep -c '^\[  FAILED  \] [A-Z]' "$log") failed, $(grep -c '^\[  SKIPPED \] [A-Z]' "$log") skipped)"
  grep -E "^\[  FAILED  \] [A-Z]|Failure|error:|exceeds|seed " "$log" | head -16
  rm -f "$log"
done

section "cuBLAS baseline vs fused (bf16, D=128)"
GB=$(find "$BUILD/examples" -name ringattn_gpu_bench -type f | head -1)
timeout 90 "$GB" -s 1024 4096 8192 --json "$OUT/cublas_baseline.json"
timeout 60 "$GB" -s 8192 --causal

section "benchmark vs torch SDPA"
QUICK=""
[[ "${RINGATTN_CHECK_QUICK:-0}" == 1 ]] && QUICK=--quick
PYTHONUNBUFFERED=1 timeout 200 python3 "$ROOT/scripts/bench_sdpa.py" --lib "$BUILD/src/libringattn.so" \
  --json "$OUT/bench_sdpa.json" --commit "$COMMIT" $QUICK >"$OUT/bench_rows.log" 2>&1
rc=$?
echo "bench exit $rc"
[[ $rc -ne 0 ]] && tail -20 "$OUT/bench_rows.log"

section "compute-sanitizer (small cases)"
if command -v compute-sanitizer >/dev/null; then
  F=$(find "$BUILD/tests" -name test_cuda_forward -type f | head -1)
  B=$(find "$BUILD/tests" -name test_cuda_backward -type f | head -1)
  timeout 40 compute-sanitizer --tool memcheck --error-exitcode 9 "$F" \
    --gtest_filter='CudaForward.RowsThatSeeNoKey*' --gtest_brief=1 2>&1 | tail -4
  echo "memcheck forward: exit ${PIPESTATUS[0]}"
  timeout 40 compute-sanitizer --tool racecheck --error-exitcode 9 "$F" \
    --gtest_filter='CudaForward.RowsThatSeeNoKey*' --gtest_brief=1 2>&1 | tail -4
  echo "racecheck forward: exit ${PIPESTATUS[0]}"
  timeout 40 compute-sanitizer --tool memcheck --error-exitcode 9 "$B" \
    --gtest_filter='CudaBackward.ShardedBlocks*' --gtest_brief=1 2>&1 | tail -4
  echo "memcheck backward: exit ${PIPESTATUS[0]}"
else
  echo "compute-sanitizer not found"
fi

section "summary"
for t in "${!RESULT[@]}"; do echo "$t exit ${RESULT[$t]}"; done
# The table (last lines of the bench output) comes last.
sed -n '/^dtype  D/,$p' "$OUT/bench_rows.log"
echo "total $(($(date +%s) - T0))s"
