#!/usr/bin/env bash
# Install River's Go CLI (`river`) at the pinned version into the civic-workers cache.
#
#   scripts/river/install-cli.sh            # last stdout line = path of the binary
#   RIVER_VERSION=v0.47.0 scripts/river/install-cli.sh
#
# Pin: v0.47.0 is the newest River release whose main migration line ends at
# version 7 (v0.48.0+ add migration 008: a no-op on Postgres, a river_job rebuild
# on SQLite), so `river migrate-get/validate --schema metadata` agrees with our
# v7 schema. The CLI is its own Go module: github.com/riverqueue/river/cmd/river.
#
# Idempotent: does nothing when the binary exists and was built from $RIVER_VERSION.
set -euo pipefail

RIVER_VERSION="${RIVER_VERSION:-v0.47.0}"
CACHE="${CIVIC_CACHE:-$HOME/.cache/civic-workers}"
BIN_DIR="$CACHE/river/$RIVER_VERSION/bin"
BIN="$BIN_DIR/river"
PKG="github.com/riverqueue/river/cmd/river"

source "$(dirname "${BASH_SOURCE[0]}")/../lib/go-tools.sh"
built_version() { go_built_version "$1" "$PKG"; }

require_go install-cli.sh

if [[ -x "$BIN" && "$(built_version "$BIN")" == "$RIVER_VERSION" ]]; then
  echo "$BIN"
  exit 0
fi

mkdir -p "$BIN_DIR"
echo "install-cli.sh: installing $PKG@$RIVER_VERSION into $BIN_DIR" >&2
# All go output goes to stderr so that the last stdout line stays the binary path.
if ! GOBIN="$BIN_DIR" nice -n 10 go install "$PKG@$RIVER_VERSION" >&2; then
  # `go install pkg@version` also looks up the module's deprecation via its
  # version list; the module proxy has no list for the cmd/river module, so Go
  # falls back to git, which fails without network access. Build the same thing
  # from a throwaway wrapper module instead (same MVS resolution as go install).
  echo "install-cli.sh: go install failed; building via a wrapper module" >&2
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  (
    cd "$tmp"
    go mod init civicworkers/rivercli >&2
    nice -n 10 go get "$PKG@$RIVER_VERSION" >&2
    nice -n 10 go build -trimpath -o "$BIN" "$PKG" >&2
  )
fi

[[ -x "$BIN" && "$(built_version "$BIN")" == "$RIVER_VERSION" ]] \
  || { echo "install-cli.sh: $BIN missing or not built from $RIVER_VERSION" >&2; exit 1; }
echo "$BIN"
