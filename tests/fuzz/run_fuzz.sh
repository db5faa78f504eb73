#!/usr/bin/env bash
# Runs one libFuzzer target of tests/fuzz (built with -DRINGATTN_FUZZ=ON).
#
#   run_fuzz.sh FUZZER CORPUS_DIR SECONDS [libFuzzer flags...]
#
# SECONDS = 0 replays every input of CORPUS_DIR once and stops: any crash, sanitizer report or
# oracle failure fails. SECONDS > 0 fuzzes that long starting from CORPUS_DIR (which it never
# writes): new inputs go to $FUZZ_WORK_DIR/corpus, and an input that fails is saved as
# $FUZZ_WORK_DIR/crash-<sha1> (or leak-, timeout-, oom-), the path printed at the end, to be
# fixed and then committed into CORPUS_DIR. A libFuzzer dictionary is used when $FUZZ_DICT names
# one, else tests/fuzz/<target without fuzz_>.dict where it exists (npy.dict for fuzz_npy).
set -euo pipefail
if (($# < 3)); then
  echo "usage: $0 FUZZER CORPUS_DIR SECONDS [libFuzzer flags...]" >&2
  exit 2
fi
fuzzer=$1 corpus=$2 seconds=$3
shift 3
work=${FUZZ_WORK_DIR:-$(dirname "$fuzzer")/work/$(basename "$fuzzer")}
mkdir -p "$work/corpus"

# Every UBSan report is fatal (the build also says -fno-sanitize-recover=all); the kernels run on
# one thread so that each input is quick and its run reproducible.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

# -error_exitcode: any failure found is a non-zero exit; -timeout: one input running 25 s is a
# failure too (inputs take milliseconds); -rss_limit_mb / -malloc_limit_mb: an input that makes
# the code under test allocate more than 2 GiB is a failure (a reader allocating what a header
# declares, say).
flags=(-error_exitcode=77 -timeout=25 -rss_limit_mb=2048 -malloc_limit_mb=2048
       -artifact_prefix="$work/" -print_final_stats=1)
name=$(basename "$fuzzer")
dict=${FUZZ_DICT:-$(dirname "$0")/${name#fuzz_}.dict}
if [[ -f "$dict" ]]; then flags+=(-dict="$dict"); fi

if [[ "$seconds" == 0 ]]; then
  n=$(find "$corpus" -type f | wc -l)
  echo "run_fuzz: replaying $n inputs of $corpus"
  exec "$fuzzer" "${flags[@]}" -runs=0 "$@" "$corpus"
fi
echo "run_fuzz: fuzzing for $seconds s from $corpus (new inputs in $work/corpus)"
exec "$fuzzer" "${flags[@]}" -max_total_time="$seconds" "$@" "$work/corpus" "$corpus"
