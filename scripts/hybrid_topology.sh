#!/usr/bin/env bash
# The hybrid layout (ulysses_degree U) measured side by side in one run (docs/ring.md, "Ulysses
# and hybrid"), on the CPU:
#   1. local: P = 4 ranks on this machine, U = 1, 2, 4, the same problem;
#   2. topology: 2 emulated hosts x 2 ranks (scripts/netns_mpirun.sh, root), each host's link
#      shaped to RATE, U = 1 (pure ring) and U = 2 (all-to-all inside the hosts, placement auto)
#      alternated ROUNDS times, with the bytes each host sent over its link.
# Usage: scripts/hybrid_topology.sh OUT_DIR [RATE (25mbit)] [ROUNDS (3)]
# Needs a build in build/ (BUILD_DIR to change it). Writes OUT_DIR/local_U*.json,
# OUT_DIR/hosts_U*_r*.{json,log} and OUT_DIR/summary.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: scripts/hybrid_topology.sh OUT_DIR [RATE] [ROUNDS]}
rate=${2:-25mbit}
rounds=${3:-3}
build=${BUILD_DIR:-build}
bench="$build/examples/ringattn_bench"
mkdir -p "$out"
summary="$out/summary.txt"
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
[[ -n "$(git status --porcelain 2>/dev/null | head -1)" ]] && commit="$commit+uncommitted"
{
  echo "# hybrid_topology.sh $(date -u +%FT%TZ) commit $commit"
  echo "# $(nproc --all) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)"
} >"$summary"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_rmaps_base_oversubscribe=1 OMP_NUM_THREADS=1

# 1. Local: one machine, P = 4, causal zigzag bf16, H = 8, D = 64, S = 4096.
local_args=(-b 4096 -e 4096 -H 8 -d 64 --causal -n 3 -w 1 -c 1)
echo "## local: mpirun -np 4 $bench ${local_args[*]} --ulysses-degree U" >>"$summary"
for u in 1 2 4; do
  mpirun -np 4 "$bench" "${local_args[@]}" --ulysses-degree "$u" --json "$out/local_U$u.json" \
    | grep -E '^ +[0-9]' | sed "s/^/U=$u /" | tee -a "$summary"
done

# 2. Two emulated hosts x 2 ranks, shaped link, U = 1 and U = 2 alternated.
host_args=(-b 2048 -e 2048 -H 8 -d 64 --causal -n 2 -w 1 -c 0 --placement auto)
echo "## hosts: scripts/netns_mpirun.sh -N 2 -s 2 --rate $rate -- -x OMP_NUM_THREADS=1" \
  "$bench ${host_args[*]} --ulysses-degree U" >>"$summary"
for r in $(seq 1 "$rounds"); do
  for u in 1 2; do
    log="$out/hosts_U${u}_r$r.log"
    set +e
    bash scripts/netns_mpirun.sh -N 2 -s 2 --rate "$rate" -- -x OMP_NUM_THREADS=1 "$bench" \
      "${host_args[@]}" --ulysses-degree "$u" --json "$out/hosts_U${u}_r$r.json" >"$log" 2>&1
    rc=$?
    set -e
    if [[ $rc == 77 ]]; then
      echo "hosts: cannot emulate hosts here (needs root and network namespaces)" | tee -a "$summary"
      exit 0
    fi
    [[ $rc == 0 ]] || { cat "$log"; exit "$rc"; }
    echo "U=$u round $r $(grep -E '^ +[0-9]' "$log") | $(grep 'host0 (' "$log" | sed 's/netns_mpirun: //')" \
      | tee -a "$summary"
  done
done
/usr/bin/python3 - "$out" "$rounds" <<'PY' | tee -a "$summary"
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
t = {u: [json.load(open(f"{out}/hosts_U{u}_r{r}.json"))[0]["time_ms"] for r in range(1, rounds + 1)]
     for u in (1, 2)}
ratios = [a / b for a, b in zip(t[1], t[2])]
print("hosts: U=1/U=2 time ratio per round:", " ".join(f"{x:.2f}" for x in ratios),
      f"median {statistics.median(ratios):.2f}")
PY
