#!/usr/bin/env bash
# Tools of the chart tests, built from Go modules and cached (nothing is downloaded at test time
# but Go modules):
#
#   helm         the one scripts/k8s/build-binaries.sh built, if any; otherwise
#                `go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION`
#   kubeconform  `go install github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION`
#   schemas      Kubernetes JSON schemas for kubeconform, generated offline from the OpenAPI
#                document (api/openapi-spec/swagger.json) of the module k8s.io/kubernetes at
#                $K8S_VERSION (the version of our test control plane), plus schemas of the CRDs
#                the chart installs (CivicWorkerPool, KopfPeering, ClusterKopfPeering), by
#                tests/chart/schemas.py.
#
# Everything lands in ${CIVIC_CACHE:-$HOME/.cache/civic-workers}/tools/; stamp files make reruns
# instant. Prints `KEY=VALUE` lines: HELM, KUBECONFORM, SCHEMAS (the schema root),
# K8S_VERSION. Exits non-zero if anything cannot be provided (the tests then fail, never skip).
#
# Env: CIVIC_CACHE, HELM_VERSION (v3.21.4), KUBECONFORM_VERSION (v0.8.0), K8S_VERSION (v1.35.4),
#      HELM (use this helm binary).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "${HERE}/../.." && pwd)"
CACHE_ROOT="${CIVIC_CACHE:-$HOME/.cache/civic-workers}"
TOOLS="${CACHE_ROOT}/tools"
BIN="${TOOLS}/bin"
HELM_VERSION="${HELM_VERSION:-v3.21.4}"
KUBECONFORM_VERSION="${KUBECONFORM_VERSION:-v0.8.0}"
K8S_VERSION="${K8S_VERSION:-v1.35.4}"
PYTHON="${PYTHON:-${ROOT}/.venv/bin/python}"
[[ -x "$PYTHON" ]] || PYTHON=python3

log() { printf '[%s] chart-tools: %s\n' "$(date '+%H:%M:%S')" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

mkdir -p "$BIN"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}" CGO_ENABLED=0 GOFLAGS=-mod=mod

need_go() { command -v go >/dev/null || die "go is not installed (needed to build $1)"; }

go_install() { # NAME VERSION PKG@VERSION [LDFLAGS]
  local name="$1" version="$2" target="$3" ld="${4:-}" stamp="${TOOLS}/.${1}.version"
  if [[ -x "${BIN}/${name}" && -f "$stamp" && "$(cat "$stamp")" == "$version" ]]; then return 0; fi
  need_go "$name"
  local t0; t0=$(date +%s)
  log "building ${name} ${version} (go install ${target})"
  if ! GOBIN="$BIN" nice -n 10 go install -trimpath -ldflags "-s -w ${ld}" "$target" >"${TOOLS}/${name}-build.log" 2>&1; then
    tail -n 30 "${TOOLS}/${name}-build.log" >&2
    die "building ${name} failed"
  fi
  printf '%s' "$version" >"$stamp"
  log "${name} built in $(( $(date +%s) - t0 ))s"
}

# --- helm ------------------------------------------------------------------------------------
find_helm() {
  if [[ -n "${HELM:-}" && -x "${HELM}" ]]; then echo "$HELM"; return; fi
  local h
  for h in "${CACHE_ROOT}"/k8s/*/bin/helm; do
    [[ -x "$h" ]] && { echo "$h"; return; }
  done
  if [[ -x "${BIN}/helm" && "$(cat "${TOOLS}/.helm.version" 2>/dev/null)" == "${HELM_VERSION}+k8s1."* ]]; then
    echo "${BIN}/helm"; return
  fi
  if command -v helm >/dev/null && helm version --short 2>/dev/null | grep -q '^v3\.'; then
    command -v helm; return
  fi
  # As scripts/k8s/build-binaries.sh does: a plain `go install` would claim Kubernetes v1.20 to
  # `helm template` and `helm lint`, which the chart's kubeVersion constraint refuses.
  need_go helm
  local gomod minor ld pkg
  gomod="$(GOFLAGS= go mod download -json "helm.sh/helm/v3@${HELM_VERSION}" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')"
  minor="$(sed -n 's#^\s*k8s.io/client-go v0\.\([0-9]*\)\..*#\1#p' "$gomod" | head -n1)"
  [[ -n "$minor" ]] || die "cannot read the client-go version from helm's go.mod ($gomod)"
  ld="-X helm.sh/helm/v3/internal/version.version=${HELM_VERSION}"
  for pkg in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    ld+=" -X ${pkg}.k8sVersionMajor=1 -X ${pkg}.k8sVersionMinor=${minor}"
  done
  go_install helm "${HELM_VERSION}+k8s1.${minor}" "helm.sh/helm/v3/cmd/helm@${HELM_VERSION}" "$ld" >&2
  echo "${BIN}/helm"
}
HELM_BIN="$(find_helm)"
"$HELM_BIN" version --short >/dev/null 2>&1 || die "helm at ${HELM_BIN} does not run"

# --- kubeconform -----------------------------------------------------------------------------
go_install kubeconform "$KUBECONFORM_VERSION" "github.com/yannh/kubeconform/cmd/kubeconform@${KUBECONFORM_VERSION}"

# --- schemas ---------------------------------------------------------------------------------
SCHEMAS="${TOOLS}/schemas"
K8S_DIR="${SCHEMAS}/${K8S_VERSION}-standalone-strict"
stamp="${SCHEMAS}/.k8s.version"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$K8S_VERSION" || ! -s "${K8S_DIR}/deployment-apps-v1.json" ]]; then
  need_go "the Kubernetes schemas"
  t0=$(date +%s)
  log "downloading k8s.io/kubernetes@${K8S_VERSION} (Go module) for its OpenAPI document"
  dir="$(GOFLAGS= go mod download -json "k8s.io/kubernetes@${K8S_VERSION}" | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')"
  spec="${dir}/api/openapi-spec/swagger.json"
  [[ -s "$spec" ]] || die "no ${spec} in the module"
  rm -rf "$K8S_DIR"
  "$PYTHON" "${HERE}/schemas.py" openapi "$spec" "$K8S_DIR"
  printf '%s' "$K8S_VERSION" >"$stamp"
  log "Kubernetes ${K8S_VERSION} schemas generated in $(( $(date +%s) - t0 ))s"
fi

echo "HELM=${HELM_BIN}"
echo "KUBECONFORM=${BIN}/kubeconform"
echo "SCHEMAS=${SCHEMAS}"
echo "K8S_VERSION=${K8S_VERSION}"
