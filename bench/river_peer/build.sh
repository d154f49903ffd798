#!/usr/bin/env bash
# Build the throughput bench's River peer (River's Go client at the version pinned in go.mod, from
# the Go module proxy) into
#   ${CIVIC_CACHE:-$HOME/.cache/civic-workers}/river-peer/<sha256 of go.sum, 16 hex>/river-peer
# and print that path as the last stdout line. Keyed by go.sum (the exact module versions); within
# one key it rebuilds only when go.mod, go.sum or a .go file changed (hash stamped next to it).
# Called by bench/throughput.py, not by `make test`.
set -euo pipefail

cd "$(dirname "$0")"
command -v go >/dev/null || { echo "build.sh: go not found in PATH" >&2; exit 1; }

KEY="$(sha256sum go.sum | cut -c1-16)"
DIR="${CIVIC_CACHE:-$HOME/.cache/civic-workers}/river-peer/$KEY"
BIN="$DIR/river-peer"
STAMP="$BIN.sha256"
HASH="$(cat go.mod go.sum $(ls ./*.go | LC_ALL=C sort) | sha256sum | cut -d' ' -f1)"
if [[ -x "$BIN" && -f "$STAMP" && "$(cat "$STAMP")" == "$HASH" ]]; then
  echo "$BIN"
  exit 0
fi

mkdir -p "$DIR"
echo "build.sh: building river-peer ($(awk '$1 == "github.com/riverqueue/river" { print $2 }' go.mod)) into $BIN" >&2
# -mod=readonly: exactly the committed go.mod/go.sum.
nice -n 10 go build -mod=readonly -trimpath -o "$BIN.tmp" . >&2
mv -f "$BIN.tmp" "$BIN"
echo "$HASH" > "$STAMP"
echo "$BIN"
