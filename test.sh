#!/usr/bin/env bash
# The project's test command. Extra arguments are passed to go test, e.g.
# ./test.sh -run TestEndToEnd -v
set -euo pipefail
cd "$(dirname "$0")"
exec go test -race -count=1 -timeout 20m ./... "$@"
