"""A throwaway PgBouncer (Debian's `pgbouncer` package, `make deps`) in front of a test PostgreSQL.

Its own configuration, log and pid live in a temporary directory; it listens on loopback only and
forwards every database name to one PostgreSQL server. Authentication is `trust`, as the test servers
trust loopback (devenv/pg.py); PgBouncer still wants each user in its auth file, so the users are listed.

PgBouncer refuses to run as root: as root it runs as the `postgres` user, like the test servers.
`restart()` kills it (SIGTERM: immediate shutdown, every client and server connection dropped, as a
crash or a pod replacement would) and starts it again on the same port.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from devenv.pg import free_port

PGBOUNCER = "/usr/sbin/pgbouncer"


def pgbouncer_binary() -> str:
    found = os.environ.get("PGBOUNCER") or (PGBOUNCER if Path(PGBOUNCER).exists() else shutil.which("pgbouncer"))
    if not found:
        raise RuntimeError("pgbouncer not found: run `make deps` (installs Debian's pgbouncer)")
    return found


def version() -> str:
    r = subprocess.run([pgbouncer_binary(), "--version"], capture_output=True, text=True, check=True)
    return r.stdout.splitlines()[0].strip()


class PgBouncer:
    def __init__(
        self,
        server_port: int,
        *,
        pool_mode: str = "transaction",
        users: tuple[str, ...] = ("postgres",),
        pool_size: int = 20,
        port: int | None = None,
        root: Path | None = None,
        settings: dict[str, str] | None = None,
    ) -> None:
        self.root = Path(root or tempfile.mkdtemp(prefix="civic-pgbouncer-"))
        self.port = port or free_port()
        self.server_port = server_port
        self.pool_mode = pool_mode
        self.users = users
        self.pool_size = pool_size
        self.settings = settings or {}
        self._proc: subprocess.Popen[bytes] | None = None
        self._as_postgres = os.geteuid() == 0

    @property
    def conf(self) -> Path:
        return self.root / "pgbouncer.ini"

    @property
    def logfile(self) -> Path:
        return self.root / "pgbouncer.log"

    def _write_config(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "userlist.txt").write_text("".join(f'"{u}" ""\n' for u in self.users))
        settings = {
            "listen_addr": "127.0.0.1",
            "listen_port": str(self.port),
            "unix_socket_dir": "",
            "auth_type": "trust",
            "auth_file": str(self.root / "userlist.txt"),
            "pool_mode": self.pool_mode,
            "max_client_conn": "1000",
            "default_pool_size": str(self.pool_size),
            "logfile": str(self.logfile),
            "pidfile": str(self.root / "pgbouncer.pid"),
            "admin_users": "postgres",
            "stats_users": "postgres",
            **self.settings,
        }
        lines = ["[databases]", f"* = host=127.0.0.1 port={self.server_port}", "", "[pgbouncer]"]
        lines += [f"{k} = {v}" for k, v in settings.items()]
        self.conf.write_text("\n".join(lines) + "\n")
        if self._as_postgres:
            for p in (self.root, *self.root.iterdir()):
                shutil.chown(p, "postgres", "postgres")

    def start(self, timeout: float = 10.0) -> None:
        self._write_config()
        kwargs: dict[str, str] = {"user": "postgres", "group": "postgres"} if self._as_postgres else {}
        self._proc = subprocess.Popen(
            [pgbouncer_binary(), str(self.conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            **kwargs,  # type: ignore[call-overload]
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"pgbouncer exited with {self._proc.returncode}:\n{self.log_tail()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"pgbouncer did not listen on {self.port} within {timeout}s:\n{self.log_tail()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """SIGTERM: immediate shutdown (connections dropped); SIGKILL: a crash."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def restart(self, down_for: float = 0.0, sig: int = signal.SIGTERM) -> None:
        self.stop(sig)
        if down_for:
            time.sleep(down_for)
        self.start()

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, dbname: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"

    def log_tail(self, chars: int = 3000) -> str:
        return self.logfile.read_text(errors="replace")[-chars:] if self.logfile.exists() else ""

    def log_text(self) -> str:
        return self.logfile.read_text(errors="replace") if self.logfile.exists() else ""
