#!/usr/bin/env bash
# Build both images with BuildKit from the repository root:
#   civic-runner:dev    (Dockerfile.runner)
#   civic-operator:dev  (Dockerfile.operator)
#
# Runs ensure-docker.sh (engine) and base-image.sh (debian:bookworm-slim) first.
# BuildKit front end: `docker buildx build --load` when the buildx plugin exists; otherwise a
# docker CLI older than 23 (Debian's docker.io 20.10 at /usr/bin/docker) whose `docker build`
# talks to the engine's built-in BuildKit with DOCKER_BUILDKIT=1 (newer CLIs need buildx for that).
# Build steps use the host's network (our engine has no bridge). The host's CA bundle is passed
# as the BuildKit secret `ca` (pip's PIP_CERT for one step; never stored in an image).
#
# Usage: scripts/docker/build-images.sh [runner|operator ...]   (default: both)
# Env: CIVIC_CACHE, CIVIC_IMAGE_TAG (default dev), CIVIC_CA_BUNDLE (default: the system bundle),
#      CIVIC_BUILD_PROGRESS (plain|auto|tty, default plain: what `docker build --progress` takes).
# Prints one line per image: "<name:tag> <bytes> <seconds>"; the log is in $CIVIC_CACHE/docker/.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="${ROOT}/scripts/docker"
CACHE_ROOT="${CIVIC_CACHE:-$HOME/.cache/civic-workers}"
STATE="${CACHE_ROOT}/docker"
TAG="${CIVIC_IMAGE_TAG:-dev}"
PROGRESS="${CIVIC_BUILD_PROGRESS:-plain}"

log() { printf '[%s] build-images: %s\n' "$(date '+%H:%M:%S')" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

"${HERE}/ensure-docker.sh" >/dev/null
"${HERE}/base-image.sh"
mkdir -p "$STATE"

cli_major() { "$1" version --format '{{.Client.Version}}' 2>/dev/null | sed -n 's/^\([0-9]*\)\..*/\1/p'; }

BUILD=()
if docker buildx version >/dev/null 2>&1; then
  BUILD=(docker buildx build --load)
else
  for cli in "$(command -v docker || true)" /usr/bin/docker; do
    [[ -n "$cli" && -x "$cli" ]] || continue
    major="$(cli_major "$cli")"
    if [[ -n "$major" && "$major" -lt 23 ]]; then
      BUILD=(env DOCKER_BUILDKIT=1 "$cli" build)
      break
    fi
  done
fi
[[ ${#BUILD[@]} -gt 0 ]] || die "no BuildKit front end: install the buildx plugin, or Debian's docker.io (its 20.10 CLI has BuildKit built in)"

CA="${CIVIC_CA_BUNDLE:-}"
if [[ -z "$CA" ]]; then
  for f in "${PIP_CERT:-}" "${SSL_CERT_FILE:-}" /etc/ssl/certs/ca-certificates.crt; do
    [[ -n "$f" && -s "$f" ]] && { CA="$f"; break; }
  done
fi
SECRET=()
[[ -n "$CA" ]] && SECRET=(--secret "id=ca,src=${CA}")

targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(runner operator)

for t in "${targets[@]}"; do
  case "$t" in runner|operator) ;; *) die "unknown image '$t' (runner|operator)";; esac
  image="civic-${t}:${TAG}"
  logfile="${STATE}/build-${t}.log"
  t0=$(date +%s)
  log "building ${image} with ${BUILD[*]:0:3} (log: ${logfile})"
  build_once() {
    nice -n 10 "${BUILD[@]}" --network host --progress "$PROGRESS" "${SECRET[@]}" \
      -f "${ROOT}/Dockerfile.${t}" -t "$image" "$ROOT" >"$logfile" 2>&1
  }
  if ! build_once; then
    # The 20.10 CLI's BuildKit session has been seen to drop once ("context canceled") with no
    # error in any step; a second run reuses the cached steps. Real build errors fail again.
    if grep -q "context canceled" "$logfile" && ! grep -q "ERROR:\|did not complete successfully\|executor failed" "$logfile"; then
      log "BuildKit session dropped; building ${image} once more"
      cp "$logfile" "${logfile}.1"
      build_once || { tail -n 40 "$logfile" >&2 || true; die "building ${image} failed (log: ${logfile})"; }
    else
      tail -n 40 "$logfile" >&2 || true
      die "building ${image} failed (log: ${logfile})"
    fi
  fi
  secs=$(( $(date +%s) - t0 ))
  size="$(docker image inspect --format '{{.Size}}' "$image")"
  log "${image}: $(( size / 1000000 )) MB in ${secs}s"
  echo "${image} ${size} ${secs}"
done
