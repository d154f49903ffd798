#!/usr/bin/env bash
# Run River's own Go benchmark (`river bench`) against a database holding River's
# v7 schema in schema $RIVER_SCHEMA (default: metadata).
#
#   scripts/river/bench.sh <database-url> [duration]           # continuous mode, default 20s
#   scripts/river/bench.sh <database-url> --num-total-jobs N   # burn-down: insert N jobs, work them all
#
# WARNING: river bench TRUNCATEs river_job, river_leader, river_queue and
# river_notification and runs VACUUM FULL river_job first. Throwaway databases only.
#
# Env: RIVER_SCHEMA (metadata), RIVER_BENCH_MIGRATE=1 to run `river migrate-up`
# first (creating the schema if needed), RIVER_STATEMENT_TIMEOUT (5m; the CLI's
# 10s default can be too short for the TRUNCATE/VACUUM FULL of a large table).
set -euo pipefail

if [[ $# -lt 1 || "$1" == -h || "$1" == --help ]]; then
  sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
DATABASE_URL="$1"; shift
SCHEMA="${RIVER_SCHEMA:-metadata}"

if [[ "${1:-}" == -n || "${1:-}" == --num-total-jobs ]]; then
  [[ $# -ge 2 ]] || { echo "bench.sh: $1 needs a job count" >&2; exit 2; }
  mode=(--num-total-jobs "$2")
else
  mode=(--duration "${1:-20s}")
fi

RIVER="$("$(dirname "$0")/install-cli.sh" | tail -n 1)"
common=(--database-url "$DATABASE_URL" --schema "$SCHEMA")

if [[ "${RIVER_BENCH_MIGRATE:-0}" == 1 ]]; then
  command -v psql >/dev/null || { echo "bench.sh: RIVER_BENCH_MIGRATE=1 needs psql" >&2; exit 1; }
  psql -X -q -v ON_ERROR_STOP=1 "$DATABASE_URL" -c "CREATE SCHEMA IF NOT EXISTS \"$SCHEMA\"" >&2
  "$RIVER" migrate-up "${common[@]}" >&2
fi
# Fails (listing pending migrations) unless the schema is at River's latest version.
"$RIVER" validate "${common[@]}" >&2

# River v0.47.0's bench runs an unqualified `VACUUM FULL river_job` (everything
# else honours --schema), so put the schema on the search_path of its connections.
bench_url="$DATABASE_URL"
if [[ "$bench_url" != *search_path=* ]]; then
  [[ "$bench_url" == *\?* ]] && sep='&' || sep='?'
  bench_url="${bench_url}${sep}search_path=${SCHEMA}"
fi

echo "bench.sh: $RIVER bench ${common[*]} ${mode[*]} ($(nproc) cores)" >&2
exec "$RIVER" --statement-timeout "${RIVER_STATEMENT_TIMEOUT:-5m}" bench \
  --database-url "$bench_url" --schema "$SCHEMA" "${mode[@]}"
