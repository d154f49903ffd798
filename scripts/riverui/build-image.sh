#!/usr/bin/env bash
# Build the image civic-riverui:<tag> (default dev) from River UI's binary, in the local Docker engine:
# scripts/riverui/install.sh builds the binary (cached by version), scripts/riverui/Dockerfile wraps it.
# Skipped when the image exists and was made from the same binary (its sha256 is a label).
#
# Usage: scripts/riverui/build-image.sh        (prints "<name:tag> <bytes> <seconds>", as build-images.sh)
# Env: CIVIC_IMAGE_TAG (default dev), RIVERUI_VERSION (default: install.sh's).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
IMAGE="civic-riverui:${CIVIC_IMAGE_TAG:-dev}"
log() { printf '[%s] riverui/build-image: %s\n' "$(date '+%H:%M:%S')" "$*" >&2; }

t0=$(date +%s)
BIN="$("${HERE}/install.sh" | tail -n 1)"
SUM="$(sha256sum "$BIN" | cut -d' ' -f1)"
if [[ "$(docker image inspect --format '{{ index .Config.Labels "org.civic-os.riverui.sha256" }}' "$IMAGE" 2>/dev/null)" == "$SUM" ]]; then
  log "$IMAGE already built from $BIN"
else
  ctx="$(mktemp -d)"
  trap 'rm -rf "$ctx"' EXIT
  mkdir -p "$ctx/rootfs/bin" "$ctx/rootfs/tmp" "$ctx/rootfs/etc/ssl/certs"
  chmod 1777 "$ctx/rootfs/tmp"
  cp "$BIN" "$ctx/rootfs/bin/riverui"
  chmod 755 "$ctx/rootfs/bin/riverui"
  if [[ -s /etc/ssl/certs/ca-certificates.crt ]]; then
    cp /etc/ssl/certs/ca-certificates.crt "$ctx/rootfs/etc/ssl/certs/"
  fi
  cp "${HERE}/Dockerfile" "$ctx/Dockerfile"
  # The classic builder: a scratch image with one COPY needs nothing of BuildKit.
  version="$(go version -m "$BIN" | awk '$1 == "mod" && $2 == "riverqueue.com/riverui" { print $3 }')"
  DOCKER_BUILDKIT=0 docker build -q --label "org.civic-os.riverui.sha256=${SUM}" \
    --label "org.opencontainers.image.title=civic-riverui" \
    --label "org.opencontainers.image.version=${version}" -t "$IMAGE" "$ctx" >/dev/null
  log "$IMAGE built from $BIN ($version)"
fi
echo "${IMAGE} $(docker image inspect --format '{{.Size}}' "$IMAGE") $(( $(date +%s) - t0 ))"
