#!/usr/bin/env bash
# Soak test, not run in CI: mixes faults at random (kill -9 and SIGTERM of the
# relay, Kafka broker restarts, Postgres restarts, walsender kills, produce
# errors) under a steady write load for DURATION, then checks every committed
# event reached Kafka with per-key order kept.
#
#   test/chaos.sh 10m
#   RELAY_KAFKA_DELIVERY=exactly_once test/chaos.sh 10m   # verdict at read_committed, duplicates fail it
#
# Prints the verdict as its last line:
#   events=N lost=N duplicates=N order_violations=N
# and exits non-zero if anything was lost or reordered (or the run broke).
set -euo pipefail

dur=${1:-}
if [[ -z "$dur" ]]; then
	echo "usage: $0 DURATION (e.g. 10m, 90s)" >&2
	exit 2
fi
cd "$(dirname "$0")/.."

# go test's own timeout must outlast the soak, the final delivery check and
# start-up.
if [[ ! "$dur" =~ ^([0-9]+h)?([0-9]+m)?([0-9]+s)?$ || "$dur" == "" ]]; then
	echo "bad DURATION '$dur': want e.g. 10m, 1h30m, 90s" >&2
	exit 2
fi
secs=0
rest=$dur
while [[ "$rest" =~ ^([0-9]+)([hms])(.*)$ ]]; do
	n=${BASH_REMATCH[1]}
	case ${BASH_REMATCH[2]} in
	h) secs=$((secs + n * 3600)) ;;
	m) secs=$((secs + n * 60)) ;;
	s) secs=$((secs + n)) ;;
	esac
	rest=${BASH_REMATCH[3]}
done
timeout=$((secs + 900))s

# Build first so a compile error is reported as such, not as a failed soak.
go build -o /dev/null ./cmd/relay
go vet ./test/

log=$(mktemp -t relay-chaos.XXXXXX.log)
echo "chaos: $dur of faults; full log in $log" >&2
set +e
RELAY_CHAOS="$dur" go test -count=1 -v -timeout "$timeout" -run '^TestChaos$' ./test/ 2>&1 | tee "$log" | grep --line-buffered -E 'restart_test.go|^(--- |FAIL|ok)' >&2
status=${PIPESTATUS[0]}
set -e

verdict=$(grep -E '^events=[0-9]+ lost=[0-9]+ duplicates=[0-9]+ order_violations=[0-9]+$' "$log" | tail -n 1 || true)
if [[ -z "$verdict" ]]; then
	echo "chaos: no verdict (go test exit $status); see $log" >&2
	echo "events=? lost=? duplicates=? order_violations=?"
	exit 1
fi
echo "$verdict"
lost=$(sed -E 's/.* lost=([0-9]+).*/\1/' <<<"$verdict")
order=$(sed -E 's/.* order_violations=([0-9]+).*/\1/' <<<"$verdict")
if ((lost > 0 || order > 0 || status != 0)); then
	exit 1
fi
