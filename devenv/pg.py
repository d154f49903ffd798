"""A throwaway PostgreSQL server for tests and benchmarks.

Without a version it starts from Debian's binaries (`make deps`). A major version ("15", "17", "18")
takes Debian's /usr/lib/postgresql/<major>/bin if installed, otherwise the server binaries that
scripts/pg/fetch_binaries.py (`make pg-binaries`) unpacked into pg_cache_dir()/<exact version>/.

initdb refuses to run as root, so as root the server runs as the `postgres` user.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

log = logging.getLogger(__name__)

# The major versions the version-parametrized tests run on (tests/integration/test_pg_versions.py).
PG_VERSIONS = ("15", "17", "18")

# Written last into a cache entry by scripts/pg/fetch_binaries.py: an entry without it is not used.
STAMP = ".civic-fetched"


def pg_cache_dir() -> Path:
    """Where fetched PostgreSQL binaries live, one directory per exact version.

    As root the servers run as `postgres`, which cannot enter /root (mode 700), so $CIVIC_CACHE's
    default under $HOME would not do: root keeps them in /var/cache/civic-workers/postgresql, whose
    parents are world-traversable, instead of loosening /root. Other users run the servers as
    themselves, so $CIVIC_CACHE/postgresql is fine. $CIVIC_PG_CACHE overrides both.
    """
    env = os.environ.get("CIVIC_PG_CACHE")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/cache/civic-workers/postgresql")
    cache = os.environ.get("CIVIC_CACHE") or str(Path.home() / ".cache" / "civic-workers")
    return Path(cache) / "postgresql"


def _version_key(name: str) -> tuple[int, ...]:
    return tuple(int(x) for x in name.split("."))


def cached_bindir(major: str) -> Path | None:
    """The bin dir of the newest complete cache entry of a major version, if any."""
    root = pg_cache_dir()
    if not root.is_dir():
        return None
    entries = [
        d
        for d in root.iterdir()
        if re.fullmatch(rf"{re.escape(major)}(\.\d+)+", d.name)
        and (d / STAMP).is_file()
        and (d / "bin" / "initdb").exists()
    ]
    if not entries:
        return None
    return max(entries, key=lambda d: _version_key(d.name)) / "bin"


def pg_bindir(version: str | None = None) -> Path:
    """Server binaries: the default (Debian's) without a version, else those of that major version."""
    if version is not None:
        debian = Path(f"/usr/lib/postgresql/{version}/bin")
        if (debian / "initdb").exists():
            return debian
        cached = cached_bindir(version)
        if cached:
            return cached
        raise RuntimeError(
            f"PostgreSQL {version} server binaries not found (neither {debian} nor a complete entry in "
            f"{pg_cache_dir()}): run `make pg-binaries` (or `scripts/pg/fetch_binaries.py {version}`)"
        )
    env = os.environ.get("PG_BINDIR")
    if env:
        return Path(env)
    for major in ("17", "16", "15"):
        p = Path(f"/usr/lib/postgresql/{major}/bin")
        if (p / "initdb").exists():
            return p
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    raise RuntimeError("PostgreSQL server binaries not found: run `make deps` (installs Debian's postgresql)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    def __init__(
        self,
        root: Path | None = None,
        port: int | None = None,
        settings: dict[str, str] | None = None,
        version: str | None = None,
    ):
        """version: a major version ("17"), see pg_bindir(); None keeps the default (Debian's) binaries."""
        self.root = Path(root or tempfile.mkdtemp(prefix="civic-pg-"))
        self.data = self.root / "data"
        self.sock = self.root / "sock"
        self.port = port or free_port()
        self._port_chosen_here = port is None
        self._started = False
        self.version = version
        self.bindir = pg_bindir(version)
        self.settings = {
            "max_connections": "200",
            "shared_buffers": "256MB",
            "listen_addresses": "'127.0.0.1'",
            **(settings or {}),
        }
        self._as_postgres = os.geteuid() == 0

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = list(args)
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, check=check, capture_output=True, text=True)

    def init(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.sock.mkdir(exist_ok=True)
        if self._as_postgres:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.sock, "postgres", "postgres")
        if not (self.data / "PG_VERSION").exists():
            initdb = [str(self.bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust"]
            r = self._run(*initdb, "-E", "UTF8", "--no-sync", check=False)
            if r.returncode != 0:
                raise RuntimeError(f"initdb failed in {self.data}: {r.stderr.strip() or r.stdout.strip()}")
            with open(self.data / "postgresql.conf", "a") as f:
                for k, v in self.settings.items():
                    f.write(f"{k} = {v}\n")
                f.write(f"port = {self.port}\nunix_socket_directories = '{self.sock}'\n")

    def start(self) -> None:
        # A port found free can be taken by someone else before the server binds it: on a first start
        # with a port of our choosing, take another one (a restart keeps its port: URLs are out).
        for _ in range(3):
            try:
                self._start_once()
                self._started = True
                return
            except RuntimeError as exc:
                if self._started or not self._port_chosen_here or "Address already in use" not in str(exc):
                    raise
                self.port = free_port()
                with open(self.data / "postgresql.conf", "a") as f:
                    f.write(f"port = {self.port}\n")  # the last setting wins
        self._start_once()
        self._started = True

    def _start_once(self) -> None:
        self.init()
        r = self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
            check=False,
        )
        if r.returncode != 0:
            log_text = (self.root / "server.log").read_text()[-2000:] if (self.root / "server.log").exists() else ""
            raise RuntimeError(f"PostgreSQL did not start: {r.stderr}\n{log_text}")

    def stop(self, mode: str = "fast") -> None:
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self, down_for: float = 0.0) -> None:
        self.stop("fast")
        if down_for:
            time.sleep(down_for)
        self.start()

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)
