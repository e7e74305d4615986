#!/usr/bin/env bash
# Runs `make test` RUNS times in a row (default 10, each with -count=1, as
# make test always is) while another `go test` of the repository runs
# beside it, again and again, on the same cores: a test that passes only on
# an idle machine fails here. Prints each run's result and wall time and a
# summary, keeps every log in LOGDIR, and exits 1 when a run failed.
#
#   scripts/test-under-load.sh                  # 10 runs beside go test -race ./...
#   RUNS=3 LOAD='go test -count=1 ./...' scripts/test-under-load.sh
set -euo pipefail
cd "$(dirname "$0")/.."

RUNS=${RUNS:-10}
LOAD=${LOAD:-go test -race -count=1 ./...}
LOGDIR=${LOGDIR:-$(mktemp -d -t test-under-load.XXXXXX)}
mkdir -p "$LOGDIR"

# The load runs in a process group of its own, so that it ends with its
# go test and every test binary and server that go test started.
setsid bash -c "i=0; while :; do i=\$((i+1)); echo \"== load run \$i\"; $LOAD || echo \"== load run \$i failed\"; done" \
	>"$LOGDIR/load.log" 2>&1 &
load=$!
stop_load() {
	kill -TERM -- "-$load" 2>/dev/null || true
	wait "$load" 2>/dev/null || true
}
trap stop_load EXIT

echo "make test x$RUNS beside: $LOAD (logs in $LOGDIR)"
passes=0
failures=0
times=()
for run in $(seq 1 "$RUNS"); do
	start=$(date +%s)
	if make test >"$LOGDIR/run-$run.log" 2>&1; then
		result=PASS
		passes=$((passes + 1))
	else
		result=FAIL
		failures=$((failures + 1))
	fi
	took=$(($(date +%s) - start))
	times+=("$took")
	echo "run $run: $result in ${took}s$([[ $result == FAIL ]] && printf ': %s' "$(grep -E '^(--- FAIL|FAIL|panic:)' "$LOGDIR/run-$run.log" | tr '\n' ' ')")"
done
stop_load
trap - EXIT

sorted=$(printf '%s\n' "${times[@]}" | sort -n)
median=$(echo "$sorted" | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : int((a[NR/2]+a[NR/2+1])/2))}')
load_runs=$(grep -c '^== load run [0-9]*$' "$LOGDIR/load.log" || true)
load_failed=$(grep -c '^== load run [0-9]* failed$' "$LOGDIR/load.log" || true)
echo "make test: $passes passed, $failures failed of $RUNS; wall time min $(echo "$sorted" | head -1)s, median ${median}s, max $(echo "$sorted" | tail -1)s"
echo "load beside it: $load_runs runs started, $load_failed failed (the last one cut short)"
[[ $failures -eq 0 ]]
