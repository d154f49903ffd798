#!/usr/bin/env bash
# Build toxiproxy's server and CLI (the fault proxy of tests/integration/test_network_faults.py and
# bench/fault_soak.py) from the Go module proxy into the civic-workers cache, keyed by version.
#
#   scripts/toxiproxy/install.sh              # last stdout line = the bin directory
#   TOXIPROXY_VERSION=v2.12.0 scripts/toxiproxy/install.sh
#
# Pin: v2.12.0, the newest release the module proxy serves (its version list shows only v2.3.0 and
# v2.5.0, but v2.12.0 resolves by name). Idempotent: nothing to do when both binaries exist and were
# built from $TOXIPROXY_VERSION.
set -euo pipefail

TOXIPROXY_VERSION="${TOXIPROXY_VERSION:-v2.12.0}"
CACHE="${CIVIC_CACHE:-$HOME/.cache/civic-workers}"
BIN_DIR="$CACHE/toxiproxy/$TOXIPROXY_VERSION/bin"
MOD="github.com/Shopify/toxiproxy/v2"

source "$(dirname "${BASH_SOURCE[0]}")/../lib/go-tools.sh"
built_version() { go_built_version "$1" "$MOD"; }

require_go toxiproxy/install.sh

ok=1
for b in toxiproxy-server toxiproxy-cli; do
  [[ -x "$BIN_DIR/$b" && "$(built_version "$BIN_DIR/$b")" == "$TOXIPROXY_VERSION" ]] || ok=0
done
if [[ $ok == 1 ]]; then
  echo "$BIN_DIR"
  exit 0
fi

mkdir -p "$BIN_DIR"
echo "toxiproxy/install.sh: installing $MOD@$TOXIPROXY_VERSION into $BIN_DIR" >&2
# go output to stderr so that the last stdout line stays the directory.
GOBIN="$BIN_DIR" nice -n 10 go install "$MOD/cmd/server@$TOXIPROXY_VERSION" "$MOD/cmd/cli@$TOXIPROXY_VERSION" >&2
# `go install` names binaries after their package directories (server, cli); toxiproxy's own names are clearer.
mv -f "$BIN_DIR/server" "$BIN_DIR/toxiproxy-server"
mv -f "$BIN_DIR/cli" "$BIN_DIR/toxiproxy-cli"

for b in toxiproxy-server toxiproxy-cli; do
  [[ -x "$BIN_DIR/$b" && "$(built_version "$BIN_DIR/$b")" == "$TOXIPROXY_VERSION" ]] \
    || { echo "toxiproxy/install.sh: $BIN_DIR/$b missing or not built from $TOXIPROXY_VERSION" >&2; exit 1; }
done
echo "$BIN_DIR"
