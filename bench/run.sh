#!/usr/bin/env bash
# Builds the relay and the benchmark, then runs the benchmark against the
# targets in README.md (Performance).
# Flags go to relaybench: bench/run.sh -h lists them, e.g.
#   bench/run.sh -only drain -n 50000
#   bench/run.sh -only latency -latency-duration 10s
# Needs what the test suite needs: Go and the PostgreSQL 15 server binaries
# (apt-get install postgresql), which also bring pg_recvlogical.
set -euo pipefail
cd "$(dirname "$0")/.."

mkdir -p bench/out
go build -o bench/out/relay ./cmd/relay
# Built rather than `go run`, so that Ctrl-C and SIGTERM reach relaybench
# itself, which then stops the relay and the servers it started.
go build -o bench/out/relaybench ./bench/cmd/relaybench
exec bench/out/relaybench -relay=bench/out/relay "$@"
