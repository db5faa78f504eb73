#!/usr/bin/env bash
# Runs one rank's command and records how it ended in $HOSTS_RECORD_DIR/rank.N (N = the MPI
# rank), and its stderr in rank.N.err: "exit CODE", or "terminated" when mpirun (or anyone)
# sent SIGTERM. The emulated hosts share this machine's files, so the record does not depend on
# mpirun forwarding output over a link that may be down.
set -u
dir=${HOSTS_RECORD_DIR:?}
rank=${OMPI_COMM_WORLD_RANK:?}
out="$dir/rank.$rank"
"$@" 2> >(tee "$out.err" >&2) &
child=$!
trap 'echo terminated >"$out"; kill -TERM "$child" 2>/dev/null; exit 143' TERM
wait "$child"
rc=$?
echo "exit $rc" >"$out"
exit "$rc"
