#!/usr/bin/env bash
# The ring across emulated hosts (scripts/netns_mpirun.sh): network namespaces on this machine,
# ranks talking over TCP through a bridge. One case per call:
#
#   hosts_test.sh correctness  SCRIPT GTEST_EXE  zigzag causal and packed cases, 4 hosts,
#                                                against the float64 reference
#   hosts_test.sh shaped       SCRIPT BENCH      100 Mbit/s links: communication is exposed
#   hosts_test.sh link-down    SCRIPT BENCH      a host's link goes down mid-run: no hang
#   hosts_test.sh stopped-rank SCRIPT BENCH|RUN  SIGSTOP on a rank: TIMEOUT naming the peer
#   hosts_test.sh killed-rank  SCRIPT BENCH      SIGKILL on a rank: mpirun ends at once
#
# Exit 0 pass, 1 fail, 77 skip (not root, or no network namespaces here).
set -euo pipefail

case_name=${1:?case}
script=${2:?netns_mpirun.sh}
exe=${3:?executable}

fail() {
  echo "FAIL ($case_name): $*" >&2
  exit 1
}
skip() {
  echo "SKIP ($case_name): $*" >&2
  exit 77
}
now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
# less_than A B: A < B for decimal numbers
less_than() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a < b) }'; }

((EUID == 0)) || skip "emulated hosts need root (network namespaces); run as root, as CI does"
[[ -x $exe ]] || fail "$exe not built"
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d /tmp/ringattn_hosts.XXXXXX)
trap 'rm -rf "$work"' EXIT

pre_rc=0
"$script" -N 1 -- true >"$work/pre.log" 2>&1 || pre_rc=$?
if ((pre_rc == 77)); then
  skip "$(grep 'cannot emulate' "$work/pre.log" || cat "$work/pre.log")"
fi
((pre_rc == 0)) || { cat "$work/pre.log" >&2; fail "a 1-host run of $script failed ($pre_rc)"; }

export OMP_NUM_THREADS=1
# Debian's python3 has NumPy (scripts/setup.sh installs python3-numpy); another python3 may not.
py=/usr/bin/python3
[[ -x $py ]] || py=python3

# run_hosts LOG ARGS...: the script with a hard bound, so that a hang fails instead of blocking.
# Sets rc and secs.
run_hosts() {
  local log=$1 t0
  shift
  t0=$(now)
  rc=0
  timeout -s TERM "${HOSTS_HARD_LIMIT:-120}" "$script" "$@" >"$log" 2>&1 || rc=$?
  secs=$(elapsed "$t0" "$(now)")
  echo "--- $script $* -> status $rc after $secs s; output:"
  cat "$log"
  echo "---"
  ((rc != 124)) || fail "no result within ${HOSTS_HARD_LIMIT:-120} s: a hang"
}

# Every host put at least $2 bytes on its link ($1 = the log): the ring's traffic crossed it.
check_link_traffic() {
  local log=$1 least=$2 n=0 host sent
  while read -r host sent; do
    ((sent >= least)) || fail "$host sent only $sent bytes over its link (expected >= $least)"
    n=$((n + 1))
  done < <(sed -n 's/^netns_mpirun: \(host[0-9]*\) ([0-9.]*) sent \([0-9]*\) bytes.*/\1 \2/p' \
    "$log")
  ((n > 0)) || fail "the script reported no link counters"
}

# start_hosts LOG ARGS...: the script in the background; sets job (its pid) and prefix (the
# namespaces' name prefix, from its first line).
start_hosts() {
  local log=$1
  shift
  timeout -s TERM "${HOSTS_HARD_LIMIT:-120}" "$script" "$@" >"$log" 2>&1 &
  job=$!
  prefix=""
  for _ in $(seq 100); do
    prefix=$(sed -n 's/.*namespaces \(ringattn-[0-9]*\)-h0\.\..*/\1/p' "$log")
    [[ -n $prefix ]] && return
    sleep 0.1
  done
  cat "$log" >&2
  fail "the script did not start"
}

# rank_pid HOST NAME: the pid of process NAME in host HOST's namespace.
rank_pid() {
  local p
  for p in $(ip netns pids "$prefix-h$1" 2>/dev/null); do
    [[ $(cat "/proc/$p/comm" 2>/dev/null) == "$2" ]] && { echo "$p"; return; }
  done
  return 1
}

bench_args=(-H 4 -K 2 -d 64 --dtype bf16 --causal --scheme zigzag)

case $case_name in
  correctness)
    # The suite's zigzag causal and packed cases (the long sequences left out for time).
    filter=$("$exe" --gtest_list_tests | awk '
      /^[^ ]/ { suite = $1 }
      /GetParam/ && /: zigzag / && (/ causal / || / packed /) && !/long uneven/ {
        print suite $1
      }' |
      paste -sd:)
    [[ -n $filter ]] || fail "no zigzag causal or packed case in $exe --gtest_list_tests"
    n=$(tr : '\n' <<<"$filter" | wc -l)
    RINGATTN_TIMEOUT_MS=60000 run_hosts "$work/log" -N 4 -- "$exe" --gtest_filter="$filter" \
      --gtest_color=no
    ((rc == 0)) || fail "exit status $rc"
    grep -q "^\[  PASSED  \] $n tests\.$" "$work/log" || fail "expected '[  PASSED  ] $n tests.'"
    check_link_traffic "$work/log" 100000
    echo "PASS: $n cases across 4 emulated hosts match the float64 reference"
    ;;

  shaped)
    # Forward only, 1 MiB of K/V per ring step (S = 4096, Hkv = 4, bf16): 0.25 s per call on
    # 100 Mbit/s links, against about 0.05 s of compute per rank.
    args=(-b 4096 -e 4096 -H 4 -K 4 -d 64 --dtype bf16 --causal --scheme zigzag --mode fwd
          -n 2 -w 1 -c 0)
    run_hosts "$work/log" -N 4 -- "$exe" "${args[@]}" --json "$work/free.json"
    ((rc == 0)) || fail "unshaped run: exit status $rc"
    run_hosts "$work/log" -N 4 --rate 100mbit -- "$exe" "${args[@]}" --json "$work/shaped.json"
    ((rc == 0)) || fail "shaped run: exit status $rc"
    check_link_traffic "$work/log" 1000000
    read -r free_ov shaped_ov shaped_gbps shaped_wait < <("$py" - "$work" <<'EOF'
import json, sys
free = json.load(open(sys.argv[1] + "/free.json"))[0]
shaped = json.load(open(sys.argv[1] + "/shaped.json"))[0]
print("%.1f %.1f %.4f %.0f" % (free["overlap_pct"], shaped["overlap_pct"], shaped["comm_gbps"],
                              shaped["comm_wait_ms_max_rank"]))
EOF
    )
    echo "overlap: unshaped $free_ov %, 100 Mbit/s $shaped_ov %; shaped: $shaped_gbps GB/s sent" \
      "per rank, slowest rank waited $shaped_wait ms"
    # 100 Mbit/s = 0.0125 GB/s: no rank can send faster than its link.
    less_than "$shaped_gbps" 0.0138 ||
      fail "a rank sent $shaped_gbps GB/s through a 100 Mbit/s link"
    less_than "$shaped_ov" 50 ||
      fail "overlap $shaped_ov % at 100 Mbit/s: communication not exposed"
    less_than "$((${shaped_ov%.*} + 20))" "$free_ov" ||
      fail "overlap $shaped_ov % at 100 Mbit/s is not well below the unshaped $free_ov %"
    echo "PASS: the shaped links expose the communication"
    ;;

  link-down)
    # host2's link goes down 3 s in. Every surviving rank must end (its own timeout message, or
    # killed by mpirun once another rank failed), and mpirun with it, within the timeout plus
    # the time TCP takes to give up on host2's daemon (keepalive 5 + 3 x 1 s on an idle
    # connection, about 6 s of retransmissions with tcp_retries2 = 4 on a busy one).
    timeout_ms=4000
    down_at=3
    bound=$((down_at + timeout_ms / 1000 + 8 + 6))
    mkdir "$work/ranks"
    HOSTS_RECORD_DIR="$work/ranks" RINGATTN_TIMEOUT_MS=$timeout_ms run_hosts "$work/log" \
      -N 4 --down "2@$down_at" -- "$here/rank_record.sh" "$exe" -b 4096 -e 4096 \
      "${bench_args[@]}" --mode fwd -n 100000 -w 0 -c 0
    ((rc != 0)) || fail "mpirun exited 0 although host2's link went down"
    grep -q "host2's link is down" "$work/log" || fail "the link did not go down (run too short?)"
    mpirun_secs=$(sed -n \
      's/^netns_mpirun: mpirun exited with status [0-9]* after \([0-9.]*\) s$/\1/p' "$work/log")
    [[ -n $mpirun_secs ]] || fail "mpirun's end not reported"
    less_than "$mpirun_secs" "$bound" || fail "mpirun took $mpirun_secs s (bound $bound s)"
    own_exits=0
    for r in 0 1 3; do
      [[ -f $work/ranks/rank.$r ]] || fail "rank $r never ended (killed only by the teardown)"
      how=$(cat "$work/ranks/rank.$r")
      echo "rank $r: $how"
      case $how in
        "exit 0") fail "rank $r exited 0" ;;
        exit*)
          # The library's TIMEOUT, or the tool's own bounded collective when the rank's ring
          # call had finished before its peers stalled.
          grep -q "within $timeout_ms ms" "$work/ranks/rank.$r.err" ||
            fail "rank $r exited ($how) without a timeout message"
          grep "within $timeout_ms ms" "$work/ranks/rank.$r.err"
          own_exits=$((own_exits + 1))
          ;;
        terminated) ;;
        *) fail "rank $r: unexpected record '$how'" ;;
      esac
    done
    # The first rank to fail ends on its own; mpirun may terminate the others after it.
    ((own_exits > 0)) || fail "no surviving rank ended on its own with a timeout message"
    echo "PASS: host2's link down: mpirun status $rc after $mpirun_secs s (bound $bound s)"
    ;;

  stopped-rank | killed-rank)
    signal=STOP
    [[ $case_name == killed-rank ]] && signal=KILL
    tool=$(basename "$exe")
    # A timeout that mpirun's own reaction to a killed rank must beat by far.
    timeout_ms=5000
    [[ $signal == KILL ]] && timeout_ms=60000
    if [[ $tool == ringattn_run ]]; then
      # Forward and backward, 2 MiB K/V blocks: a few seconds of ring on 2 cores.
      "$py" "$here/../../scripts/npy_reference.py" gen "$work/in" --s 8192 --hq 4 --hkv 2 \
        --d 64 >/dev/null
      cmd=("$exe" --q "$work/in/q.npy" --k "$work/in/k.npy" --v "$work/in/v.npy"
           --do "$work/in/do.npy" --out "$work/out")
    else
      # 2 MiB K/V blocks, about 0.3 s per ring step here.
      cmd=("$exe" -b 16384 -e 16384 "${bench_args[@]}" --mode fwd -n 100 -w 0 -c 0)
    fi
    RINGATTN_TIMEOUT_MS=$timeout_ms start_hosts "$work/log" -N 4 -- "${cmd[@]}"
    # Signal rank 2 while it sends its first K/V block: its peers need it for the steps that
    # follow, so they wait for it inside a ring exchange. (Stopped in the last step of a call,
    # whose transfers are done, the peers would wait in the bench's own reduction instead.)
    ring_bytes=1000000
    pid=""
    for _ in $(seq 1200); do
      sent=$(ip netns exec "$prefix-sw" cat /sys/class/net/h2/statistics/rx_bytes 2>/dev/null ||
        echo 0)
      if ((sent >= ring_bytes)); then
        pid=$(rank_pid 2 "$tool") || pid=""
        break
      fi
      kill -0 "$job" 2>/dev/null || break
      sleep 0.05
    done
    if [[ -z $pid ]]; then
      wait "$job" || true
      cat "$work/log" >&2
      fail "rank 2 ($tool) never got going on host2"
    fi
    kill -"$signal" "$pid"
    t_signal=$(now)
    echo "SIG$signal to rank 2 ($tool, pid $pid) after it sent $sent bytes"
    rc=0
    wait "$job" || rc=$?
    secs=$(elapsed "$t_signal" "$(now)")
    cat "$work/log"
    echo "--- status $rc, $secs s after SIG$signal"
    ((rc != 124)) || fail "no result within ${HOSTS_HARD_LIMIT:-120} s: a hang"
    ((rc != 0)) || fail "exit status 0 after SIG$signal on a rank"
    if [[ $signal == STOP ]]; then
      bound=$((timeout_ms / 1000 + 10))
      less_than "$secs" "$bound" || fail "took $secs s after SIGSTOP (bound $bound s)"
      # The library's message from a neighbour, naming rank 2 as the peer it waited for; or,
      # when the stop landed between two ring exchanges (a loaded machine can let rank 2 finish
      # its part of a call first), a bounded collective saying so: the tool's own, or the
      # agreement that starts the next one-shot call (an allgather: it cannot name the rank).
      if ! grep -E "did not finish within $timeout_ms ms" "$work/log" |
          grep -qE "(from|to) rank 2[,)]"; then
        bounded="did not join .* within $timeout_ms ms"
        bounded+="|agreement .* did not finish within $timeout_ms ms"
        grep -qE "$bounded" "$work/log" ||
          fail "no message naming rank 2, nor a bounded collective, within $timeout_ms ms"
      fi
    else
      less_than "$secs" 10 || fail "mpirun took $secs s to end after a rank was killed"
    fi
    echo "PASS: SIG$signal on rank 2: status $rc after $secs s"
    ;;

  *) fail "unknown case" ;;
esac
