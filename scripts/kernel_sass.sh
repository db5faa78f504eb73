#!/usr/bin/env bash
# Static view of the tensor-core kernels without a GPU: compiles each (pass, dtype, head dim) for
# sm_90 from a copy of kernels/, prints ptxas' registers and spills, and the instruction counts of
# every kernel's main loop (scripts/sass_stats.py).
#
#   scripts/kernel_sass.sh [--full-path] [--out DIR] [PASS:DTYPE:D ...]
#
#   PASS fwd|bwd, DTYPE bf16|f16, D 64|128|256; default: fwd:bf16:128 bwd:bf16:128.
#   --full-path  compile a counting copy with the slow paths removed (the partial-tile mask, the
#                walks' tile classification, the forward's rescale for a moved max, the
#                ragged-tile loads), so that each main loop holds what one full tile executes. The copy is for counting only: it computes nothing
#                right. Fails if the source no longer has the lines it edits.
#   --out DIR    keep the .sass files there.
#
# Needs nvcc (CUDA_HOME, default /usr/local/cuda) and cuobjdump with nvdisasm: the toolkit's, else
# those of PyPI's nvidia-cuda-cuobjdump and nvidia-cuda-nvdisasm wheels, installed on first use
# under RINGATTN_TOOLS (default ~/.cache/ringattn-tools).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cuda_home=${CUDA_HOME:-/usr/local/cuda}
full=0
out=""
specs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --full-path) full=1 ;;
    --out) out=$2; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) specs+=("$1") ;;
  esac
  shift
done
[ ${#specs[@]} -gt 0 ] || specs=(fwd:bf16:128 bwd:bf16:128)

# cuobjdump calls nvdisasm, so both come from the same place.
tools=${RINGATTN_TOOLS:-$HOME/.cache/ringattn-tools}
cuobjdump=$(command -v cuobjdump || true)
[ -n "$cuobjdump" ] || [ ! -x "$cuda_home/bin/cuobjdump" ] || cuobjdump=$cuda_home/bin/cuobjdump
if [ -z "$cuobjdump" ]; then
  cuobjdump=$(find "$tools" -name cuobjdump -type f 2>/dev/null | head -1 || true)
  if [ -z "$cuobjdump" ]; then
    echo "kernel_sass: installing cuobjdump and nvdisasm (PyPI) under $tools" >&2
    python3 -m pip install --quiet --no-deps --target "$tools" nvidia-cuda-cuobjdump \
      nvidia-cuda-nvdisasm 2>&1 | grep -v "Running pip as the 'root' user" >&2 || true
    cuobjdump=$(find "$tools" -name cuobjdump -type f | head -1)
    [ -n "$cuobjdump" ] || { echo "kernel_sass: no cuobjdump" >&2; exit 1; }
    chmod +x "$(dirname "$cuobjdump")"/*
  fi
  export PATH=$(dirname "$cuobjdump"):$PATH
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$root/kernels" "$work/kernels"
if [ $full = 1 ]; then
  python3 - "$work/kernels" <<'EOF'
import sys
root = sys.argv[1]
def edit(path, old, new, count):
    p = root + "/" + path
    s = open(p).read()
    if s.count(old) != count:
        sys.exit("kernel_sass --full-path: %s no longer has %d x %r" % (path, count, old))
    open(p, "w").write(s.replace(old, new))
# The partial-tile mask (forward and both backward passes).
edit("cuda/flash_fwd.cuh", "if (cls == kTilePartial) {", "if (false && cls == kTilePartial) {", 1)
edit("cuda/flash_bwd.cuh", "if (cls == kTilePartial) {", "if (false && cls == kTilePartial) {", 2)
# The walks' classification: a full tile is taken before it.
edit("cuda/tiling.h", "const TileClass c = classify_key_tile(m, qr, kmap, sk, j * bn, bn);",
     "const TileClass c = kTilePartial;", 1)
edit("cuda/tiling.h", "TileClass c = kr.empty ? kTileHidden : classify_tile(m, qr, kr);",
     "TileClass c = kTilePartial;", 1)
# The rescale when a reference max moves (online_softmax.h: after the first tiles, rare).
# The vote stays (with a one-instruction body, so that the maxima it reads are still computed).
edit("cuda/flash_fwd.cuh", "if (__any_sync(0xffffffffu, grow)) {",
     "if (__any_sync(0xffffffffu, grow)) row_l[0][0] += 1.0f;\n    if (false) {", 1)
# The ragged-tile loads.
edit("cuda/device_utils.cuh", "if (valid >= kRows) {", "if (true) {", 1)
EOF
fi

for spec in "${specs[@]}"; do
  IFS=: read -r pass dtype d <<<"$spec"
  case "$dtype" in bf16) ctype=__nv_bfloat16 ;; f16) ctype=__half ;; *) echo "bad dtype $dtype" >&2; exit 2 ;; esac
  case "$pass" in fwd) params=FwdKernelParams ;; bwd) params=BwdKernelParams ;; *) echo "bad pass $pass" >&2; exit 2 ;; esac
  src=$work/${pass}_${dtype}_d$d.cu
  sed -e "s/@PASS@/$pass/g" -e "s/@CTYPE@/$ctype/g" -e "s/@HEADDIM@/$d/g" -e "s/@PARAMS@/$params/g" \
    "$work/kernels/cuda/instantiations/flash_instance.cu.in" >"$src"
  echo "== $pass $dtype D=$d$([ $full = 1 ] && echo ' (full-tile path)')"
  "$cuda_home/bin/nvcc" -std=c++17 -O3 -cubin -arch=sm_90 -Xptxas -v \
    -I"$work/kernels/cuda" -I"$work/kernels" -I"$work/kernels/common" \
    -o "$work/k.cubin" "$src" 2>&1 | grep -E "Compiling entry|registers|spill" |
    sed -E -e "s/.*Compiling entry function '_ZN8ringattn4cuda[0-9]+(flash_[a-z_]+)I[^L]*(L[^']*)'.*/  \1 \2/" \
      -e 's/^ptxas info *: */    /'
  "$cuobjdump" -sass "$work/k.cubin" >"$work/k.sass"
  python3 "$root/scripts/sass_stats.py" "$work/k.sass" | sed 's/^/  /'
  if [ -n "$out" ]; then
    mkdir -p "$out"
    cp "$work/k.sass" "$out/${pass}_${dtype}_d${d}$([ $full = 1 ] && echo _full).sass"
  fi
done
