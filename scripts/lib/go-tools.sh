# Sourced by the scripts that build Go tools into the cache (river, riverui, toxiproxy).

# go_built_version BINARY MODULE: the version of MODULE the binary was built from ("mod <path> <ver>" after
# `go install`, "dep <path> <ver>" after a build from a wrapper module); empty when it is not one of those.
go_built_version() {
  go version -m "$1" 2>/dev/null | awk -v p="$2" '($1 == "mod" || $1 == "dep") && $2 == p { print $3 }'
}

# require_go NAME: stop with NAME's message when there is no Go toolchain.
require_go() {
  command -v go >/dev/null || { echo "$1: go not found in PATH" >&2; exit 1; }
}
