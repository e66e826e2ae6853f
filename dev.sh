#!/usr/bin/env bash
# The README's first command: the relay end to end on a throwaway Postgres and
# an embedded Kafka broker. Extra arguments go to `relay dev` (e.g. --keep).
set -euo pipefail
cd "$(dirname "$0")"
.ci/ensure-postgres
exec go run -tags relaydev ./cmd/relay dev "$@"
