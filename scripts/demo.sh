#!/usr/bin/env bash
# The main job: sets up (apt packages, build), then
#   1. runs ringattn_run on 4 CPU ranks (zigzag, causal, forward + backward) over global .npy
#      inputs and checks o, lse, dq, dk, dv against a float64 numpy reference;
#   2. prints the benchmark table of a 4-rank ring, checked against the float64 reference (#wrong).
set -euo pipefail
cd "$(dirname "$0")/.."

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

BUILD_DIR=build bash scripts/setup.sh
if ! /usr/bin/python3 -c "import numpy" 2>/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-numpy >/dev/null
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "== ringattn_run: 4 ranks, zigzag, causal, S=1000, Hq=4, Hkv=2, D=64, float32 =="
/usr/bin/python3 scripts/npy_reference.py gen "$work/in" --s 1000 --hq 4 --hkv 2 --d 64
mpirun -np 4 build/examples/ringattn_run --q "$work/in/q.npy" --k "$work/in/k.npy" \
  --v "$work/in/v.npy" --do "$work/in/do.npy" --causal --scheme zigzag --out "$work/out"
/usr/bin/python3 scripts/npy_reference.py check "$work/in" "$work/out" --causal

echo
echo "== ringattn_bench: 4 ranks, zigzag, causal, bf16, forward + backward, checked =="
mpirun -np 4 build/examples/ringattn_bench -b 2048 -e 8192 -f 2 -H 8 -d 128 --dtype bf16 \
  --causal --scheme zigzag --mode both -n 3 -w 1 -c 1
