#!/usr/bin/env bash
# Parallel efficiency of the CPU ring against one process on the same cores, measured side by
# side: each round runs one process with P threads (--single), then the P-rank ring with a plan
# (--plan), then the P-rank ring with one-shot calls, and optionally the ring of another build
# (--baseline BENCH, with a plan), one after the other, so that all of them see the same machine.
# Efficiency of a round = single-process time / ring time.
#
#   scripts/ring_efficiency.sh [-r ROUNDS] [-p P] [-B BUILD_DIR] [--baseline BENCH] [--csv FILE]
#                              [-- BENCH_ARGS...]
#
# BENCH_ARGS default to the framework-API target (docs/performance.md, "Ring plans at
# S = 4096"): -b 4096 -e 4096 -H 8 -d 128 --dtype bf16 --causal --scheme zigzag --mode both
# -n 3 -w 1 -c 0. Prints one line per round (times in ms), then per ring variant the median of
# the rounds' efficiencies and the ratio of the best times (min single / min ring: interference
# from other tenants only adds time, so best-of-N is the most stable figure on a shared machine).
# Needs an MPI build (build/examples/ringattn_bench); runs as root with Open MPI's root flags set.
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=10 ranks=2 build=build baseline="" csv=""
while (($#)); do
  case $1 in
    -r) rounds=$2; shift 2 ;;
    -p) ranks=$2; shift 2 ;;
    -B) build=$2; shift 2 ;;
    --baseline) baseline=$2; shift 2 ;;
    --csv) csv=$2; shift 2 ;;
    --) shift; break ;;
    -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "ring_efficiency.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
if (($#)); then
  args=("$@")
else
  args=(-b 4096 -e 4096 -H 8 -d 128 --dtype bf16 --causal --scheme zigzag --mode both -n 3 -w 1
        -c 0)
fi
bench=$build/examples/ringattn_bench
[[ -x $bench ]] || { echo "ring_efficiency.sh: $bench not built (MPI build)" >&2; exit 2; }
[[ -z $baseline || -x $baseline ]] || { echo "ring_efficiency.sh: $baseline not found" >&2; exit 2; }
[[ $rounds =~ ^[1-9][0-9]*$ && $ranks =~ ^[1-9][0-9]*$ ]] ||
  { echo "ring_efficiency.sh: -r and -p take positive integers" >&2; exit 2; }

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1
out=$(mktemp)
trap 'rm -f "$out"' EXIT

# The bench's mean time per iteration (ms), from its JSON line.
time_of() {
  local t
  t=$("$@" 2>&1 | grep -o '"time_ms":[0-9.]*' | cut -d: -f2) || true
  [[ -n $t ]] || { echo "ring_efficiency.sh: no result from: $*" >&2; exit 1; }
  echo "$t"
}
single() { OMP_NUM_THREADS=$ranks time_of mpirun -np 1 --bind-to none -x OMP_NUM_THREADS "$@"; }
ring() { OMP_NUM_THREADS=1 time_of mpirun -np "$ranks" --bind-to core -x OMP_NUM_THREADS "$@"; }

echo "# round single_ms ring_plan_ms ring_oneshot_ms${baseline:+ baseline_plan_ms}"
for ((r = 1; r <= rounds; ++r)); do
  s=$(single "$bench" "${args[@]}" --single)
  p=$(ring "$bench" "${args[@]}" --plan)
  o=$(ring "$bench" "${args[@]}")
  line="$r $s $p $o"
  [[ -z $baseline ]] || line+=" $(ring "$baseline" "${args[@]}" --plan)"
  echo "$line" | tee -a "$out"
done
[[ -z $csv ]] || { echo "round,single_ms,ring_plan_ms,ring_oneshot_ms${baseline:+,baseline_plan_ms}";
                   tr ' ' ',' <"$out"; } >"$csv"

/usr/bin/python3 - "$out" <<'PY'
import statistics
import sys

rows = [[float(x) for x in line.split()[1:]] for line in open(sys.argv[1]) if line.strip()]
names = ["ring, plan", "ring, one-shot", "baseline, plan"]
single = [r[0] for r in rows]
print("single process: best %.2f ms, median %.2f ms" % (min(single), statistics.median(single)))
for j, name in enumerate(names, start=1):
    if j >= len(rows[0]):
        break
    eff = [r[0] / r[j] for r in rows]
    print("%-15s median efficiency %5.1f %% (rounds %5.1f-%5.1f %%), best times %5.1f %%"
          % (name, 100 * statistics.median(eff), 100 * min(eff), 100 * max(eff),
             100 * min(single) / min(r[j] for r in rows)))
PY
