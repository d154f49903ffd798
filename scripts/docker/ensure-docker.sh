#!/usr/bin/env bash
# Make sure a Docker engine answers on this machine (Debian 12, as root).
#
#   - installs Debian's docker.io (dockerd, containerd, runc and the 20.10 CLI with its built-in
#     BuildKit client) and debootstrap (scripts/docker/base-image.sh) when missing;
#   - starts dockerd in the background when no engine answers, logging to
#     ${CIVIC_CACHE:-$HOME/.cache/civic-workers}/docker/dockerd.log, and waits for its socket.
#
# The engine we start has no bridge network and touches no iptables rules: containers and build
# steps use the host's network (`--network host`), so nothing listens on or talks to a private
# address range. An engine that is already running (systemd, Docker Desktop, CI) is used as is.
#
# Env: CIVIC_CACHE, CIVIC_DOCKER_WAIT (seconds to wait for the socket, default 90),
#      CIVIC_DOCKER_DATA_ROOT (default /var/lib/docker).
# Prints the Docker server version on success; exits non-zero with the reason otherwise.
set -euo pipefail

CACHE_ROOT="${CIVIC_CACHE:-$HOME/.cache/civic-workers}"
STATE="${CACHE_ROOT}/docker"
LOG="${STATE}/dockerd.log"
WAIT="${CIVIC_DOCKER_WAIT:-90}"
DATA_ROOT="${CIVIC_DOCKER_DATA_ROOT:-/var/lib/docker}"
SOCK=/var/run/docker.sock

log() { printf '[%s] ensure-docker: %s\n' "$(date '+%H:%M:%S')" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

engine_up() { docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

install_packages() {
  local need=() p
  for p in docker.io debootstrap; do have_pkg "$p" || need+=("$p"); done
  [[ ${#need[@]} -eq 0 ]] && return 0
  [[ "$(id -u)" -eq 0 ]] || die "need root to install ${need[*]} (or install them yourself)"
  local t0; t0=$(date +%s)
  log "installing ${need[*]} from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
  log "installed in $(( $(date +%s) - t0 ))s"
}

start_dockerd() {
  [[ "$(id -u)" -eq 0 ]] || die "no Docker engine answers and starting dockerd needs root"
  command -v dockerd >/dev/null || die "dockerd not found after installing docker.io"
  mkdir -p "$STATE"
  # A socket left by a dead engine makes dockerd refuse to start.
  if [[ -S "$SOCK" ]] && ! engine_up; then rm -f "$SOCK"; fi
  log "starting dockerd (log: $LOG)"
  # setsid: the engine outlives this script and the shell that ran it.
  setsid dockerd \
    --host "unix://${SOCK}" \
    --data-root "$DATA_ROOT" \
    --exec-root "${STATE}/exec" \
    --pidfile "${STATE}/dockerd.pid" \
    --bridge none \
    --iptables=false \
    --ip-masq=false \
    >>"$LOG" 2>&1 </dev/null &
  local pid=$! deadline=$(( $(date +%s) + WAIT ))
  until engine_up; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 40 "$LOG" >&2 || true
      die "dockerd exited (log: $LOG)"
    fi
    (( $(date +%s) < deadline )) || { tail -n 40 "$LOG" >&2 || true; die "dockerd did not answer in ${WAIT}s"; }
    sleep 0.5
  done
  log "dockerd running (pid $pid)"
}

install_packages
if engine_up; then
  log "a Docker engine is already running"
else
  start_dockerd
fi
docker version --format '{{.Server.Version}}'
