#!/usr/bin/env bash
# Build River UI (River's web UI for river_job / river_queue) at the pinned version into the cache.
#
#   scripts/riverui/install.sh              # last stdout line = path of the binary
#   RIVERUI_VERSION=v0.22.0 scripts/riverui/install.sh
#
# River UI is one Go binary whose frontend is embedded in its module (no npm at build time):
# `go install riverqueue.com/riverui/cmd/riverui@<version>` through the Go module proxy. Built
# static (CGO_ENABLED=0) so that the test image (scripts/riverui/Dockerfile) needs no libc match.
#
# Idempotent: does nothing when the binary exists and was built from $RIVERUI_VERSION.
set -euo pipefail

RIVERUI_VERSION="${RIVERUI_VERSION:-v0.22.0}"
CACHE="${CIVIC_CACHE:-$HOME/.cache/civic-workers}"
BIN_DIR="$CACHE/riverui/$RIVERUI_VERSION/bin"
BIN="$BIN_DIR/riverui"
PKG="riverqueue.com/riverui/cmd/riverui"
MOD="riverqueue.com/riverui"

source "$(dirname "${BASH_SOURCE[0]}")/../lib/go-tools.sh"
built_version() { go_built_version "$1" "$MOD"; }

require_go riverui/install.sh

if [[ -x "$BIN" && "$(built_version "$BIN")" == "$RIVERUI_VERSION" ]]; then
  echo "$BIN"
  exit 0
fi

mkdir -p "$BIN_DIR"
echo "riverui/install.sh: installing $PKG@$RIVERUI_VERSION into $BIN_DIR" >&2
t0=$(date +%s)
# All go output goes to stderr so that the last stdout line stays the binary path.
CGO_ENABLED=0 GOBIN="$BIN_DIR" nice -n 10 go install -trimpath "$PKG@$RIVERUI_VERSION" >&2

[[ -x "$BIN" && "$(built_version "$BIN")" == "$RIVERUI_VERSION" ]] \
  || { echo "riverui/install.sh: $BIN missing or not built from $RIVERUI_VERSION" >&2; exit 1; }
echo "riverui/install.sh: built in $(( $(date +%s) - t0 ))s" >&2
echo "$BIN"
