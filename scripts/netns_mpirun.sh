#!/usr/bin/env bash
# Runs an Open MPI job across N emulated hosts on this machine: one network namespace per host,
# joined through veth pairs to a bridge, so that ranks on different hosts really talk over TCP.
# Needs root. See docs/reliability.md, section "Emulated multi-host runs".
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: scripts/netns_mpirun.sh -N HOSTS [-s SLOTS] [--rate RATE] [--down HOST@SECONDS]
                              [--tcp-retries N] -- [MPIRUN OPTIONS] PROGRAM [ARGS...]

Runs `mpirun -np HOSTS*SLOTS [MPIRUN OPTIONS] PROGRAM [ARGS...]` across HOSTS network namespaces
(hosts host0..hostN-1) joined by a bridge; ranks are placed by slot (ranks 0..SLOTS-1 on host0,
...) and talk over TCP.

  -N HOSTS              number of emulated hosts (1..250)
  -s SLOTS              ranks per host (default 1); each host's ranks are pinned to SLOTS cores
  --rate RATE           shape every host's link to RATE each way (tc tbf syntax: 100mbit, 1gbit)
  --down HOST@SECONDS   take HOST's link down SECONDS after mpirun starts (repeatable)
  --tcp-retries N       net.ipv4.tcp_retries2 inside the hosts (default 4: a connection with
                        unacknowledged data to a dead host fails after about 6 s; Linux's 15
                        makes it about 15 min, and mpirun waits that long for a daemon that
                        it has sent a command to; keepalive covers idle connections only)
  -h, --help            this text

Open MPI settings are passed as OMPI_MCA_* environment variables, each only where the caller has
not set it: pml ob1, btl tcp,self, oob/btl interfaces = the emulated subnet, OOB TCP keepalive
5/1/3 s. Exit status: mpirun's; 2 for a usage error; 77 where namespaces cannot be created here
(not root, no CAP_SYS_ADMIN/CAP_NET_ADMIN, no veth/bridge support). Everything created is removed
on exit, also on Ctrl-C or SIGTERM; after a SIGKILL, by the next run.
EOF
}

die_usage() {
  echo "netns_mpirun: $*" >&2
  echo "netns_mpirun: see --help" >&2
  exit 2
}
refuse() {
  echo "netns_mpirun: cannot emulate hosts here: $*" >&2
  exit 77
}
log() { echo "netns_mpirun: $*" >&2; }
since() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'; }

# ---- options ----------------------------------------------------------------------------------
hosts=""
slots=1
rate=""
tcp_retries=4
downs=()
while (($#)); do
  case $1 in
    -N) (($# >= 2)) || die_usage "-N needs a value"; hosts=$2; shift 2 ;;
    -s) (($# >= 2)) || die_usage "-s needs a value"; slots=$2; shift 2 ;;
    --rate) (($# >= 2)) || die_usage "--rate needs a value"; rate=$2; shift 2 ;;
    --down) (($# >= 2)) || die_usage "--down needs a value"; downs+=("$2"); shift 2 ;;
    --tcp-retries)
      (($# >= 2)) || die_usage "--tcp-retries needs a value"
      tcp_retries=$2
      shift 2
      ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    *) die_usage "unknown option '$1' (the command follows --)" ;;
  esac
done
(($#)) || die_usage "no command given after --"
if ! [[ $hosts =~ ^[0-9]+$ ]] || ((hosts < 1 || hosts > 250)); then
  die_usage "-N must be 1..250"
fi
if ! [[ $slots =~ ^[0-9]+$ ]] || ((slots < 1)); then
  die_usage "-s must be a positive integer"
fi
if ! [[ $tcp_retries =~ ^[0-9]+$ ]] || ((tcp_retries < 1 || tcp_retries > 15)); then
  die_usage "--tcp-retries must be 1..15"
fi
if [[ -n $rate && ! $rate =~ ^[0-9]+(\.[0-9]+)?([kKmMgGtT]i?)?(bit|bps)$ ]]; then
  die_usage "--rate '$rate' is not a tc rate such as 100mbit or 1gbit"
fi
down_host=()
down_after=()
for d in ${downs[@]+"${downs[@]}"}; do
  [[ $d =~ ^([0-9]+)@([0-9]+(\.[0-9]+)?)$ ]] || die_usage "--down '$d' is not HOST@SECONDS"
  ((BASH_REMATCH[1] < hosts)) || die_usage "--down '$d': hosts are 0..$((hosts - 1))"
  down_host+=("${BASH_REMATCH[1]}")
  down_after+=("${BASH_REMATCH[2]}")
done

# ---- can we? ----------------------------------------------------------------------------------
((EUID == 0)) || refuse "network namespaces need root (running as uid $EUID)"
for tool in ip unshare taskset; do
  command -v "$tool" >/dev/null || refuse "'$tool' not found"
done
MPIRUN=${MPIRUN:-mpirun}
command -v "$MPIRUN" >/dev/null || die_usage "'$MPIRUN' not found (set MPIRUN)"
if [[ -n $rate ]]; then
  command -v tc >/dev/null || refuse "--rate needs 'tc' (iproute2)"
fi

# Names carry this script's pid, so concurrent runs never collide and a run killed with SIGKILL
# (which no trap sees) can be recognised and removed by the next one.
prefix="ringattn-$$"
sw_ns="$prefix-sw"
host_ns() { echo "$prefix-h$1"; }
subnet_base="10.213.0"  # private; exists only inside the namespaces
subnet="$subnet_base.0/24"
host_addr() { echo "$subnet_base.$(($1 + 1))"; }

# Kill what runs in a namespace (only the jobs this script started live there) and delete it.
remove_ns() {
  local ns=$1 pids
  pids=$(ip netns pids "$ns" 2>/dev/null || true)
  if [[ -n $pids ]]; then
    # shellcheck disable=SC2086  # one pid per word
    kill -KILL $pids 2>/dev/null || true
    for _ in $(seq 50); do
      [[ -z $(ip netns pids "$ns" 2>/dev/null || true) ]] && break
      sleep 0.1
    done
  fi
  ip netns del "$ns" 2>/dev/null || true
}

# Namespaces of earlier runs whose script no longer exists (killed with SIGKILL).
ours='^ringattn-[0-9]+-(sw|h[0-9]+)$'
for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "$ours" || true); do
  owner=${ns#ringattn-}
  owner=${owner%%-*}
  if ! kill -0 "$owner" 2>/dev/null; then
    log "removing $ns, left by run $owner that no longer exists"
    remove_ns "$ns"
    rm -rf "/tmp/netns_mpirun.$owner".*
  fi
done

tmp=""
mpirun_pid=""
timer_pids=()
cleaning=0
# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
  local rc=$?
  ((cleaning)) && return
  cleaning=1
  trap '' INT TERM HUP
  for p in ${timer_pids[@]+"${timer_pids[@]}"}; do
    kill "$p" 2>/dev/null || true
  done
  if [[ -n $mpirun_pid ]] && kill -0 "$mpirun_pid" 2>/dev/null; then
    log "stopping mpirun (pid $mpirun_pid)"
    kill -TERM "$mpirun_pid" 2>/dev/null || true
    for _ in $(seq 30); do
      kill -0 "$mpirun_pid" 2>/dev/null || break
      sleep 0.1
    done
  fi
  local i
  for ((i = 0; i < hosts; i++)); do
    remove_ns "$(host_ns "$i")"
  done
  remove_ns "$sw_ns"
  [[ -n $tmp ]] && rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# ---- the network ------------------------------------------------------------------------------
err=$(ip netns add "$sw_ns" 2>&1) || refuse "ip netns add failed: $err"
err=$(ip -n "$sw_ns" link add br0 type bridge 2>&1) || refuse "no bridge: $err"
ip -n "$sw_ns" link set br0 up
ip -n "$sw_ns" link set lo up
for ((i = 0; i < hosts; i++)); do
  ns=$(host_ns "$i")
  ip netns add "$ns"
  err=$(ip -n "$sw_ns" link add "h$i" type veth peer name net0 netns "$ns" 2>&1) ||
    refuse "no veth pair: $err"
  ip -n "$sw_ns" link set "h$i" master br0 up
  ip -n "$ns" link set lo up
  ip netns exec "$ns" sh -c "echo $tcp_retries >/proc/sys/net/ipv4/tcp_retries2"
  ip -n "$ns" addr add "$(host_addr "$i")/24" dev net0
  ip -n "$ns" link set net0 up
  if [[ -n $rate ]]; then
    # Both ends: the switch side shapes what reaches the host, the host side what it sends.
    # The burst holds a whole GSO packet (up to 64 KiB) so that tbf never drops one outright.
    for end in "$sw_ns h$i" "$ns net0"; do
      read -r n dev <<<"$end"
      err=$(ip netns exec "$n" tc qdisc add dev "$dev" root tbf rate "$rate" burst 128kb \
        latency 100ms 2>&1) || refuse "tc tbf on $dev failed: $err"
    done
  fi
done

# ---- cores: host i's ranks run on SLOTS cores of this machine, round robin -------------------
allowed=()
IFS=, read -r -a ranges <<<"$(awk '/^Cpus_allowed_list/ {print $2}' /proc/self/status)"
for r in "${ranges[@]}"; do
  if [[ $r == *-* ]]; then
    for ((c = ${r%-*}; c <= ${r#*-}; c++)); do allowed+=("$c"); done
  else
    allowed+=("$r")
  fi
done
host_cpus() {
  local i=$1 j list=""
  for ((j = 0; j < slots; j++)); do
    list+="${list:+,}${allowed[$(((i * slots + j) % ${#allowed[@]}))]}"
  done
  echo "$list"
}

# ---- launcher ---------------------------------------------------------------------------------
tmp=$(mktemp -d "/tmp/netns_mpirun.$$.XXXXXX")
hostfile="$tmp/hostfile"
table="$tmp/hosts"
for ((i = 0; i < hosts; i++)); do
  echo "$(host_addr "$i") slots=$slots" >>"$hostfile"
  echo "$(host_addr "$i") $(host_ns "$i") host$i $(host_cpus "$i")" >>"$table"
done
# mpirun starts each remote daemon as `AGENT HOST COMMAND...`, as it would with ssh; the agent
# runs COMMAND in HOST's namespace with its own hostname and cores. Ranks inherit the cores
# (mpirun gets --bind-to none: every emulated host would otherwise bind its ranks to core 0).
cat >"$tmp/agent" <<'EOF'
#!/usr/bin/env bash
while [[ $1 == -* ]]; do shift; done
table="$(dirname "$0")/hosts"
read -r _ ns name cpus < <(awk -v h="$1" '$1 == h' "$table")
[[ -n $ns ]] || { echo "netns_mpirun agent: unknown host $1" >&2; exit 1; }
shift
exec ip netns exec "$ns" unshare --uts -- bash -c \
  'hostname "$1" && exec taskset -c "$2" sh -c "$3"' _ "$name" "$cpus" "$*"
EOF
chmod +x "$tmp/agent"

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMPI_MCA_plm_rsh_agent="$tmp/agent"
export OMPI_MCA_plm_rsh_no_tree_spawn=1
export OMPI_MCA_pml=${OMPI_MCA_pml:-ob1}
export OMPI_MCA_btl=${OMPI_MCA_btl:-tcp,self}
export OMPI_MCA_oob_tcp_if_include=${OMPI_MCA_oob_tcp_if_include:-$subnet}
export OMPI_MCA_btl_tcp_if_include=${OMPI_MCA_btl_tcp_if_include:-$subnet}
# Without keepalive, mpirun waits forever for a daemon behind a dead idle link (and with data in
# flight, until TCP gives up: --tcp-retries).
export OMPI_MCA_oob_tcp_keepalive_time=${OMPI_MCA_oob_tcp_keepalive_time:-5}
export OMPI_MCA_oob_tcp_keepalive_intvl=${OMPI_MCA_oob_tcp_keepalive_intvl:-1}
export OMPI_MCA_oob_tcp_keepalive_probes=${OMPI_MCA_oob_tcp_keepalive_probes:-3}

log "$hosts hosts x $slots slots on $subnet${rate:+, links shaped to $rate};" \
  "namespaces $prefix-h0..h$((hosts - 1))"
# mpirun runs inside host0: started outside, it would advertise addresses the hosts cannot reach.
# In the background so that a signal to this script runs the trap at once.
started=$EPOCHREALTIME
# shellcheck disable=SC2016  # expanded by the inner bash
ip netns exec "$(host_ns 0)" unshare --uts -- bash -c \
  'hostname host0 && exec taskset -c "$1" "${@:2}"' _ "$(host_cpus 0)" \
  "$MPIRUN" -np $((hosts * slots)) --hostfile "$hostfile" --bind-to none "$@" &
mpirun_pid=$!

for k in "${!down_host[@]}"; do
  (
    trap 'kill "$nap" 2>/dev/null; exit 0' TERM
    sleep "${down_after[$k]}" &
    nap=$!
    wait "$nap"
    ip -n "$sw_ns" link set "h${down_host[$k]}" down
    log "host${down_host[$k]}'s link is down ($(since "$started") s after mpirun started)"
  ) &
  timer_pids+=("$!")
done

rc=0
wait "$mpirun_pid" || rc=$?
mpirun_pid=""
log "mpirun exited with status $rc after $(since "$started") s"

# Bytes each host put on and took off its link: proof that the job's traffic crossed the bridge.
for ((i = 0; i < hosts; i++)); do
  stats=$(ip netns exec "$sw_ns" cat "/sys/class/net/h$i/statistics/rx_bytes" \
    "/sys/class/net/h$i/statistics/tx_bytes" 2>/dev/null | tr '\n' ' ') || true
  read -r sent received <<<"$stats"
  log "host$i ($(host_addr "$i")) sent ${sent:-?} bytes, received ${received:-?} bytes"
done
exit "$rc"
