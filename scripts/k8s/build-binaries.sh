#!/usr/bin/env bash
# Build a local Kubernetes control plane (no Docker) from Go modules.
#
# Produces, in ${CIVIC_CACHE:-$HOME/.cache/civic-workers}/k8s/<key>/bin/:
#   kube-apiserver kube-controller-manager kube-scheduler kubectl   (k8s.io/kubernetes)
#   kubelet kube-proxy                                              (the real node: scripts/k8s/real-node.sh)
#   etcd etcdctl                                                    (go.etcd.io/etcd)
#   kwok kwokctl                                                    (sigs.k8s.io/kwok)
#   helm                                                            (helm.sh/helm/v3)
#   coredns                                                         (github.com/coredns/coredns; the real
#                                                                    node's Service DNS)
# where <key> = <k8s version>-etcd<etcd version>-kwok<kwok version>.
#
# Idempotent: each component has a stamp file; a complete build is skipped.
# The first build takes a long time (tens of minutes on 2 cores).
# The last line printed on stdout is the bin dir.
#
# Env overrides: CIVIC_CACHE, K8S_VERSION, ETCD_VERSION, KWOK_VERSION,
# HELM_VERSION, COREDNS_VERSION, CIVIC_BUILD_JOBS (go build -p, default 2), CIVIC_BUILD_FORCE=1.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.35.4}"
ETCD_VERSION="${ETCD_VERSION:-v3.6.16}"
KWOK_VERSION="${KWOK_VERSION:-v0.8.0}"
HELM_VERSION="${HELM_VERSION:-v3.21.4}"
COREDNS_VERSION="${COREDNS_VERSION:-v1.15.0}"
JOBS="${CIVIC_BUILD_JOBS:-2}"

CACHE_ROOT="${CIVIC_CACHE:-$HOME/.cache/civic-workers}"
KEY="${K8S_VERSION}-etcd${ETCD_VERSION#v}-kwok${KWOK_VERSION#v}"
BASE="${CACHE_ROOT}/k8s/${KEY}"
BIN="${BASE}/bin"
SRC="${BASE}/src"
STAMPS="${BASE}/stamps"
LOG="${BASE}/build.log"
STAMP_ALL="${BASE}/.complete"
# Bumped when the build itself changes (flags), so caches built the old way are rebuilt.
STAMP_ALL_VALUE="helm=${HELM_VERSION};helm-kube-capabilities;kubelet;kube-proxy;coredns=${COREDNS_VERSION}"

START_TS=$(date +%s)

log() { printf '[%s] %s\n' "$(date '+%H:%M:%S')" "$*" >&2; }

die() {
  log "ERROR: $*"
  if [[ -f "$LOG" ]]; then
    log "last 60 lines of $LOG:"
    tail -n 60 "$LOG" >&2 || true
  fi
  exit 1
}

# run_step NAME CMD...: run CMD with output appended to $LOG, timed.
run_step() {
  local name="$1"; shift
  local t0 t1
  t0=$(date +%s)
  log "$name: started"
  {
    printf '\n===== [%s] %s: %s\n' "$(date '+%F %T')" "$name" "$*"
  } >>"$LOG"
  if ! "$@" >>"$LOG" 2>&1; then
    die "$name failed (command: $*)"
  fi
  t1=$(date +%s)
  log "$name: done in $((t1 - t0))s"
  printf '%s %ss\n' "$name" "$((t1 - t0))" >>"${BASE}/timings.txt"
}

in_dir() { local d="$1"; shift; (cd "$d" && exec "$@"); }

stamp_ok() { [[ -f "${STAMPS}/$1" && "$(cat "${STAMPS}/$1")" == "$2" ]] && [[ -x "${BIN}/$1" ]]; }
stamp_set() { printf '%s' "$2" >"${STAMPS}/$1"; }

if [[ -f "$STAMP_ALL" && "${CIVIC_BUILD_FORCE:-0}" != 1 ]] \
  && [[ "$(cat "$STAMP_ALL")" == "$STAMP_ALL_VALUE" ]]; then
  log "binaries already built in $BIN"
  echo "$BIN"
  exit 0
fi

command -v go >/dev/null || die "go is not installed"
mkdir -p "$BIN" "$SRC" "$STAMPS"
# One build at a time per cache key; a waiting caller re-checks the stamp.
exec 9>"${BASE}/.lock"
if ! flock -n 9; then
  log "another build is running in $BASE; waiting for it"
  flock 9
  if [[ -f "$STAMP_ALL" && "$(cat "$STAMP_ALL")" == "$STAMP_ALL_VALUE" ]]; then
    echo "$BIN"
    exit 0
  fi
fi
if [[ "${CIVIC_BUILD_FORCE:-0}" == 1 ]]; then rm -f "$STAMPS"/* "$STAMP_ALL"; fi

export GOFLAGS=-mod=mod
export CGO_ENABLED=0
export GOTOOLCHAIN=local
NICE=(nice -n 10)

log "build dir: $BASE (log: $LOG)"
log "versions: kubernetes=$K8S_VERSION etcd=$ETCD_VERSION kwok=$KWOK_VERSION helm=$HELM_VERSION coredns=$COREDNS_VERSION ($(go version))"

# --------------------------------------------------------------------------
# Kubernetes: wrapper module pinning the staging modules to their published
# versions (k8s.io/kubernetes replaces them with ./staging paths, which only
# work inside its own repository).
# --------------------------------------------------------------------------
# kubelet and kube-proxy share nearly all their packages with the others: built after them they add
# ~40 s (the Go build cache holds the rest).
K8S_BINS=(kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy)
need_k8s=0
for b in "${K8S_BINS[@]}"; do stamp_ok "$b" "$K8S_VERSION" || need_k8s=1; done

if [[ $need_k8s == 1 ]]; then
  K8S_SRC="${SRC}/kubernetes"
  mkdir -p "$K8S_SRC"
  staging_version="v0.${K8S_VERSION#v1.}"   # v1.35.4 -> v0.35.4

  run_step "download k8s.io/kubernetes@${K8S_VERSION}" \
    go mod download -json "k8s.io/kubernetes@${K8S_VERSION}"
  gomod=$(go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" \
    | sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p')
  [[ -f "$gomod" ]] || die "cannot locate go.mod of k8s.io/kubernetes@${K8S_VERSION}"

  mapfile -t staging < <(sed -n 's#^[[:space:]]*\(k8s\.io/[A-Za-z0-9._-]*\)[[:space:]]*=>[[:space:]]*\./staging/src/.*#\1#p' "$gomod" | sort -u)
  [[ ${#staging[@]} -gt 10 ]] || die "found only ${#staging[@]} staging replaces in $gomod"
  go_directive=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$gomod" | head -n1)
  godebug_line=$(grep -E '^godebug ' "$gomod" | head -n1 || true)
  log "kubernetes wrapper: ${#staging[@]} staging modules pinned to ${staging_version}"

  {
    echo "// Generated by scripts/k8s/build-binaries.sh; do not edit."
    echo "module civic.local/k8s-build"
    echo
    echo "go ${go_directive:-1.25.0}"
    [[ -n "$godebug_line" ]] && echo "$godebug_line"
    echo
    echo "require k8s.io/kubernetes ${K8S_VERSION}"
    echo
    echo "replace ("
    for m in "${staging[@]}"; do echo "	$m => $m $staging_version"; done
    echo ")"
  } >"${K8S_SRC}/go.mod.new"
  if ! cmp -s "${K8S_SRC}/go.mod.new" "${K8S_SRC}/go.mod.gen" 2>/dev/null; then
    cp "${K8S_SRC}/go.mod.new" "${K8S_SRC}/go.mod"
    cp "${K8S_SRC}/go.mod.new" "${K8S_SRC}/go.mod.gen"
    rm -f "${K8S_SRC}/go.sum"
  fi
  rm -f "${K8S_SRC}/go.mod.new"

  minor="${K8S_VERSION#v1.}"; minor="${minor%%.*}"
  build_date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X ${pkg}.gitVersion=${K8S_VERSION}"
    ldflags+=" -X ${pkg}.gitMajor=1 -X ${pkg}.gitMinor=${minor}"
    ldflags+=" -X ${pkg}.gitTreeState=clean -X ${pkg}.buildDate=${build_date}"
  done

  for b in "${K8S_BINS[@]}"; do
    stamp_ok "$b" "$K8S_VERSION" && { log "$b: up to date"; continue; }
    run_step "build $b" \
      in_dir "$K8S_SRC" \
      "${NICE[@]}" go build -p "$JOBS" -trimpath -ldflags "$ldflags" \
      -o "${BIN}/$b" "k8s.io/kubernetes/cmd/$b"
    "${BIN}/$b" --version >>"$LOG" 2>&1 || true
    stamp_set "$b" "$K8S_VERSION"
  done
  log "kube-apiserver --version: $("${BIN}/kube-apiserver" --version 2>&1)"
fi

# --------------------------------------------------------------------------
# etcd: server/v3 and etcdctl/v3 carry relative replaces, so `go install`
# refuses them; build them from a wrapper module instead.
# --------------------------------------------------------------------------
if ! stamp_ok etcd "$ETCD_VERSION" || ! stamp_ok etcdctl "$ETCD_VERSION"; then
  ETCD_SRC="${SRC}/etcd"
  mkdir -p "$ETCD_SRC"
  cat >"${ETCD_SRC}/go.mod.new" <<EOF
// Generated by scripts/k8s/build-binaries.sh; do not edit.
module civic.local/etcd-build

go 1.26.0

require (
	go.etcd.io/etcd/server/v3 ${ETCD_VERSION}
	go.etcd.io/etcd/etcdctl/v3 ${ETCD_VERSION}
)
EOF
  if ! cmp -s "${ETCD_SRC}/go.mod.new" "${ETCD_SRC}/go.mod.gen" 2>/dev/null; then
    cp "${ETCD_SRC}/go.mod.new" "${ETCD_SRC}/go.mod"
    cp "${ETCD_SRC}/go.mod.new" "${ETCD_SRC}/go.mod.gen"
    rm -f "${ETCD_SRC}/go.sum"
  fi
  rm -f "${ETCD_SRC}/go.mod.new"
  # The server module's root package is `package main` (calls etcdmain.Main).
  for pair in etcd:go.etcd.io/etcd/server/v3 etcdctl:go.etcd.io/etcd/etcdctl/v3; do
    b="${pair%%:*}"; pkg="${pair#*:}"
    stamp_ok "$b" "$ETCD_VERSION" && { log "$b: up to date"; continue; }
    run_step "build $b" \
      in_dir "$ETCD_SRC" \
      "${NICE[@]}" go build -p "$JOBS" -trimpath -ldflags "-s -w" -o "${BIN}/$b" "$pkg"
    stamp_set "$b" "$ETCD_VERSION"
  done
  log "etcd --version: $("${BIN}/etcd" --version 2>&1 | head -n1)"
fi

# --------------------------------------------------------------------------
# kwok, kwokctl, helm: plain `go install` into the bin dir.
# --------------------------------------------------------------------------
gobin_install() { # NAME VERSION PKG@VERSION [LDFLAGS]
  local b="$1" v="$2" target="$3" extra="${4:-}"
  stamp_ok "$b" "$v" && { log "$b: up to date"; return 0; }
  run_step "build $b" env GOBIN="$BIN" "${NICE[@]}" \
    go install -p "$JOBS" -trimpath -ldflags "-s -w $extra" "$target"
  stamp_set "$b" "$v"
}
kwok_ld="-X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v} -X sigs.k8s.io/kwok/pkg/consts.KubeVersion=${K8S_VERSION#v}"
gobin_install kwok "$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}" "$kwok_ld"
gobin_install kwokctl "$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwokctl@${KWOK_VERSION}" "$kwok_ld"
# helm's release Makefile stamps the Kubernetes version it was built against into its default
# capabilities (`helm template`/`lint` without --kube-version); a plain `go install` leaves v1.20, which
# a chart's kubeVersion constraint would refuse. Use the client-go minor of helm's own go.mod, as it does.
helm_gomod="$(go mod download -json "helm.sh/helm/v3@${HELM_VERSION}" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')"
helm_k8s_minor="$(sed -n 's#^\s*k8s.io/client-go v0\.\([0-9]*\)\..*#\1#p' "$helm_gomod" | head -n1)"
[[ -n "$helm_k8s_minor" ]] || die "cannot read the client-go version from helm's go.mod ($helm_gomod)"
helm_ld="-X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
  helm_ld+=" -X ${pkg}.k8sVersionMajor=1 -X ${pkg}.k8sVersionMinor=${helm_k8s_minor}"
done
gobin_install helm "${HELM_VERSION}+k8s1.${helm_k8s_minor}" "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}" "$helm_ld"

# CoreDNS for the real node's Service DNS (a host process on its bridge address). Its module has no
# replace directives, so a plain `go install` works; it pulls its own client-go and every plugin's
# SDK (~3.5 min the first time on 2 cores).
gobin_install coredns "$COREDNS_VERSION" "github.com/coredns/coredns@${COREDNS_VERSION}"

printf '%s' "$STAMP_ALL_VALUE" >"$STAMP_ALL"
log "all binaries built in $(( $(date +%s) - START_TS ))s"
echo "$BIN"
