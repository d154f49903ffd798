"""A throwaway toxiproxy server (Shopify's TCP fault proxy) for tests and benchmarks.

The binaries come from scripts/toxiproxy/install.sh (`make prepare`; run here too when they are
missing, so a test never depends on a step someone forgot). The server listens on a free loopback
port; proxies and toxics are made through its HTTP API:

    with Toxiproxy() as tp:
        pg = tp.proxy("pg", upstream="127.0.0.1:5432")     # clients connect to pg.listen
        pg.add("lag", "latency", "downstream", latency=50)
        pg.blackhole()                                         # data dropped both ways, nothing closed
        pg.hold_replies(); pg.cut()                            # a statement committed, its reply lost
        pg.clear()                                             # every toxic removed
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from devenv import processes
from devenv.pg import free_port

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
INSTALL = ROOT / "scripts" / "toxiproxy" / "install.sh"


def bin_dir() -> Path:
    """Where toxiproxy-server and toxiproxy-cli are (built on first use, then cached by version)."""
    out = subprocess.run([str(INSTALL)], check=True, capture_output=True, text=True)
    return Path(out.stdout.strip().splitlines()[-1])


class Proxy:
    """One proxy of a running server: a loopback listen address forwarding to `upstream`."""

    def __init__(self, server: Toxiproxy, name: str, listen: str, upstream: str) -> None:
        self.server, self.name, self.listen, self.upstream = server, name, listen, upstream

    @property
    def host(self) -> str:
        return self.listen.rsplit(":", 1)[0]

    @property
    def port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    def url_for(self, db_url: str) -> str:
        """db_url (postgresql://user@127.0.0.1:PORT/db) with its host:port replaced by this proxy's."""
        head, _, tail = db_url.partition("://")
        creds, _, hostpath = tail.rpartition("@")
        _, _, path = hostpath.partition("/")
        return f"{head}://{creds + '@' if creds else ''}{self.listen}/{path}"

    def add(self, name: str, kind: str, stream: str = "downstream", toxicity: float = 1.0, **attributes: Any) -> None:
        """A toxic (kind: latency, timeout, reset_peer, bandwidth, slicer, limit_data, ...) on one direction
        (downstream: server to client; upstream: client to server)."""
        self.server.api(
            "POST",
            f"/proxies/{self.name}/toxics",
            {"name": name, "type": kind, "stream": stream, "toxicity": toxicity, "attributes": attributes},
        )

    def remove(self, name: str) -> None:
        self.server.api("DELETE", f"/proxies/{self.name}/toxics/{name}")

    def toxics(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.server.api("GET", f"/proxies/{self.name}/toxics")
        return result

    def clear(self) -> None:
        for t in self.toxics():
            self.remove(t["name"])

    def latency(self, ms: int, jitter: int = 0) -> None:
        """`ms` added each way."""
        for stream in ("upstream", "downstream"):
            self.add(f"latency_{stream}", "latency", stream, latency=ms, jitter=jitter)

    def blackhole(self) -> None:
        """A partition as a dead network looks to both ends: every byte dropped both ways, no connection
        closed, new connections accepted and then silent (toxiproxy's `timeout` toxic with timeout 0)."""
        for stream in ("upstream", "downstream"):
            self.add(f"blackhole_{stream}", "timeout", stream, timeout=0)

    def heal(self) -> None:
        for stream in ("upstream", "downstream"):
            self.remove(f"blackhole_{stream}")

    def cut(self, clear: bool = True) -> None:
        """Close every open connection through the proxy now (and, with clear, remove every toxic before
        new ones are let in). Data the proxy holds back (a `timeout` toxic, a latency) is never delivered,
        so a reply held this way is lost for sure: the deterministic way to cut mid-statement. (A
        `reset_peer` toxic added later does not catch data a latency toxic already holds.)"""
        self.set_enabled(False)
        if clear:
            self.clear()
        self.set_enabled(True)

    def hold_replies(self) -> None:
        """Every byte from the server dropped from now on (requests still reach it): a statement commits
        and its client never hears of it."""
        self.add("hold_replies", "timeout", "downstream", timeout=0)

    def set_enabled(self, enabled: bool) -> None:
        """Disabled: open connections closed, new ones refused (a clean outage, unlike blackhole())."""
        self.server.api(
            "POST", f"/proxies/{self.name}", {"enabled": enabled, "listen": self.listen, "upstream": self.upstream}
        )


class Toxiproxy:
    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path or Path(tempfile.mkdtemp(prefix="civic-toxiproxy-")) / "toxiproxy.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._session = requests.Session()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        r = self._session.request(method, self.api_url + path, json=body, timeout=10)
        if r.status_code >= 400:
            raise RuntimeError(f"toxiproxy {method} {path}: {r.status_code} {r.text.strip()}")
        return r.json() if r.content else None

    def start(self, timeout: float = 20.0) -> Toxiproxy:
        server = bin_dir() / "toxiproxy-server"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        env = {**os.environ, "LOG_LEVEL": os.environ.get("TOXIPROXY_LOG_LEVEL", "warn")}
        self.proc = subprocess.Popen(
            [str(server), "-host", "127.0.0.1", "-port", str(self.port)], stdout=out, stderr=out, env=env
        )
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"toxiproxy-server exited {self.proc.returncode}: {self.log_tail()}")
            try:
                self.api("GET", "/version")
                return self
            except (requests.RequestException, RuntimeError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"toxiproxy-server did not answer in {timeout}s: {self.log_tail()}") from None
                time.sleep(0.05)

    def proxy(self, name: str, upstream: str, listen_port: int | None = None) -> Proxy:
        listen = f"127.0.0.1:{listen_port or free_port()}"
        self.api("POST", "/proxies", {"name": name, "listen": listen, "upstream": upstream, "enabled": True})
        return Proxy(self, name, listen, upstream)

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def stop(self) -> None:
        processes.stop(self.proc)
        self._session.close()

    def __enter__(self) -> Toxiproxy:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
