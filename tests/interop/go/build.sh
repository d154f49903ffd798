#!/usr/bin/env bash
# Build the river-interop helper (River's Go client, pinned in go.mod) into
#   ${CIVIC_CACHE:-$HOME/.cache/civic-workers}/river/<version>/bin/river-interop
# and print that path as the last stdout line. Idempotent: rebuilds only when
# go.mod, go.sum or a .go file changed (hash stamped next to the binary).
set -euo pipefail

cd "$(dirname "$0")"
command -v go >/dev/null || { echo "build.sh: go not found in PATH" >&2; exit 1; }

VERSION="$(awk '$1 == "github.com/riverqueue/river" { print $2 }' go.mod)"
[[ -n "$VERSION" ]] || { echo "build.sh: river version not found in go.mod" >&2; exit 1; }
BIN_DIR="${CIVIC_CACHE:-$HOME/.cache/civic-workers}/river/$VERSION/bin"
BIN="$BIN_DIR/river-interop"
STAMP="$BIN.sha256"

HASH="$(cat go.mod go.sum $(ls ./*.go | LC_ALL=C sort) | sha256sum | cut -d' ' -f1)"
if [[ -x "$BIN" && -f "$STAMP" && "$(cat "$STAMP")" == "$HASH" ]]; then
  echo "$BIN"
  exit 0
fi

mkdir -p "$BIN_DIR"
echo "build.sh: building river-interop ($VERSION) into $BIN" >&2
# -mod=readonly: use exactly the committed go.mod/go.sum.
nice -n 10 go build -mod=readonly -trimpath -o "$BIN.tmp" . >&2
mv -f "$BIN.tmp" "$BIN"
echo "$HASH" > "$STAMP"
echo "$BIN"
