#!/usr/bin/env bash
# Make sure the base image `debian:bookworm-slim` exists in the local Docker engine.
#
# No container registry is reachable here, so when the image cannot be pulled it is built locally:
# `debootstrap --variant=minbase bookworm` from the Debian mirror this machine's apt already uses
# (read from /etc/apt/sources.list*, nothing hard-coded), trimmed the way Debian's slim images are
# (no docs, man pages or locales; dpkg told to keep them out), then `docker import`ed.
#
# Cached twice: skipped when the image exists; the root filesystem tarball is kept in
# ${CIVIC_CACHE:-$HOME/.cache/civic-workers}/docker/ so a wiped engine re-imports it in seconds.
#
# Env: CIVIC_CACHE, CIVIC_BASE_IMAGE (default debian:bookworm-slim), CIVIC_BASE_PULL=1 (try
# `docker pull` first; off by default because it only waits for a timeout here),
# CIVIC_DEBIAN_MIRROR (override the mirror URL), CIVIC_BASE_REBUILD=1 (ignore both caches).
set -euo pipefail

IMAGE="${CIVIC_BASE_IMAGE:-debian:bookworm-slim}"
SUITE=bookworm
CACHE_ROOT="${CIVIC_CACHE:-$HOME/.cache/civic-workers}"
STATE="${CACHE_ROOT}/docker"
TARBALL="${STATE}/${SUITE}-slim-rootfs.tar"

log() { printf '[%s] base-image: %s\n' "$(date '+%H:%M:%S')" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

docker version >/dev/null 2>&1 || die "no Docker engine answers: run scripts/docker/ensure-docker.sh first"

if [[ "${CIVIC_BASE_REBUILD:-0}" != 1 ]]; then
  if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    log "$IMAGE already present"
    exit 0
  fi
  if [[ "${CIVIC_BASE_PULL:-0}" == 1 ]] && timeout 60 docker pull -q "$IMAGE" >/dev/null 2>&1; then
    log "$IMAGE pulled"
    exit 0
  fi
  if [[ -s "$TARBALL" ]]; then
    log "importing cached root filesystem $TARBALL"
    docker import --change 'CMD ["bash"]' --change 'ENV LANG=C.UTF-8' "$TARBALL" "$IMAGE" >/dev/null
    log "$IMAGE imported"
    exit 0
  fi
fi

[[ "$(id -u)" -eq 0 ]] || die "debootstrap needs root"
command -v debootstrap >/dev/null || die "debootstrap missing: run scripts/docker/ensure-docker.sh (installs it)"

# The mirrors this machine's apt uses: "URIs:" of deb822 .sources files and "deb URL suite" lines.
# Prints "<main mirror> <security mirror or empty>".
read_mirrors() {
  python3 - "$SUITE" <<'PY'
import glob, re, sys
suite = sys.argv[1]
files = ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")) \
    + sorted(glob.glob("/etc/apt/sources.list.d/*.sources"))
entries = []  # (uri, suites)
for path in files:
    try:
        text = open(path).read()
    except OSError:
        continue
    if path.endswith(".sources"):
        for stanza in re.split(r"\n\s*\n", text):
            fields = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line:
                    continue
                k, v = line.split(":", 1)
                fields[k.strip().lower()] = v.strip()
            if fields.get("enabled", "yes").lower() == "no" or "deb" not in fields.get("types", "").split():
                continue
            for uri in fields.get("uris", "").split():
                entries.append((uri, fields.get("suites", "").split()))
    else:
        for line in text.splitlines():
            parts = line.split("#", 1)[0].split()
            if len(parts) >= 3 and parts[0] == "deb":
                parts = [p for p in parts if not p.startswith("[")]
                entries.append((parts[1], [parts[2]]))
main = next((u for u, s in entries if suite in s and u.startswith("http")), "")
security = next((u for u, s in entries if f"{suite}-security" in s and u.startswith("http")), "")
print(main, security)
PY
}

read -r MIRROR SECURITY < <(read_mirrors)
MIRROR="${CIVIC_DEBIAN_MIRROR:-$MIRROR}"
[[ -n "$MIRROR" ]] || die "no Debian mirror for ${SUITE} in /etc/apt/sources.list*; set CIVIC_DEBIAN_MIRROR"

mkdir -p "$STATE"
ROOT="$(mktemp -d "${STATE}/rootfs.XXXXXX")"
cleanup() { rm -rf "$ROOT"; }
trap cleanup EXIT

t0=$(date +%s)
log "debootstrap --variant=minbase ${SUITE} from ${MIRROR} (log: ${STATE}/debootstrap.log)"
if ! nice -n 10 debootstrap --variant=minbase --components=main "$SUITE" "$ROOT" "$MIRROR" \
    >"${STATE}/debootstrap.log" 2>&1; then
  tail -n 30 "${STATE}/debootstrap.log" >&2 || true
  die "debootstrap failed"
fi
log "debootstrap done in $(( $(date +%s) - t0 ))s"

# apt sources of the image: the same mirrors as this machine.
rm -f "$ROOT/etc/apt/sources.list"
{
  printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\n' "$MIRROR" "$SUITE" "$SUITE"
  printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
  if [[ -n "$SECURITY" ]]; then
    printf '\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\n' "$SECURITY" "$SUITE"
    printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
  fi
} >"$ROOT/etc/apt/sources.list.d/debian.sources"

# Slim, as Debian's own -slim images: keep documentation and locales out of later installs too.
cat >"$ROOT/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
EOF
cat >"$ROOT/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
printf 'Acquire::GzipIndexes "true";\nAcquire::CompressionTypes::Order:: "gz";\n' >"$ROOT/etc/apt/apt.conf.d/docker-gzip-indexes"
printf 'APT::AutoRemove::SuggestsImportant "false";\n' >"$ROOT/etc/apt/apt.conf.d/docker-autoremove-suggests"
# Services never start inside an image build.
printf '#!/bin/sh\nexit 101\n' >"$ROOT/usr/sbin/policy-rc.d"
chmod 755 "$ROOT/usr/sbin/policy-rc.d"

find "$ROOT/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete 2>/dev/null || true
find "$ROOT/usr/share/doc" -mindepth 1 -type d -empty -delete 2>/dev/null || true
rm -rf "$ROOT"/usr/share/man/* "$ROOT"/usr/share/info/* "$ROOT"/usr/share/groff/* \
  "$ROOT"/usr/share/lintian/* "$ROOT"/usr/share/linda/*
find "$ROOT/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} + 2>/dev/null || true
rm -rf "$ROOT"/var/lib/apt/lists/* "$ROOT"/var/cache/apt/*.bin "$ROOT"/var/cache/apt/archives/*.deb \
  "$ROOT"/var/cache/debconf/*-old "$ROOT"/var/lib/dpkg/*-old "$ROOT"/var/log/* "$ROOT"/tmp/* "$ROOT"/root/.bash_history
: >"$ROOT/etc/machine-id"
: >"$ROOT/etc/resolv.conf"   # the engine provides it at run time
printf 'localhost\n' >"$ROOT/etc/hostname"

tar --numeric-owner --xattrs -C "$ROOT" -cf "${TARBALL}.tmp" .
mv "${TARBALL}.tmp" "$TARBALL"
docker import --change 'CMD ["bash"]' --change 'ENV LANG=C.UTF-8' "$TARBALL" "$IMAGE" >/dev/null
log "$IMAGE created in $(( $(date +%s) - t0 ))s ($(du -h "$TARBALL" | cut -f1) root filesystem)"
