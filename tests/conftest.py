"""Shared fixtures. Servers the tests need are started here, never assumed to be running."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devenv.pg import PG_VERSIONS, PostgresServer, pg_bindir  # noqa: E402

REFERENCE = Path(os.environ.get("CIVIC_REFERENCE_DIR", ROOT / "tests" / "reference"))


@pytest.fixture(autouse=True)
def no_ambient_kubeconfig(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside the cluster suites no test may reach a cluster found in the environment.

    A developer's ~/.kube/config (or one left by an e2e run) would otherwise let an operator call that a
    test forgot to stand in for pass here and fail on a fresh machine, as CI once did.
    """
    if {"e2e", "cluster"} & set(Path(str(request.node.path)).relative_to(ROOT / "tests").parts[:1]):
        return
    monkeypatch.setenv("KUBECONFIG", str(ROOT / "tests" / "no-such-kubeconfig"))


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    # Not under pytest's tmp dir: that is private to root, and the server runs as `postgres`.
    server = PostgresServer()
    server.start()
    yield server
    server.destroy()


_db_counter = iter(range(10_000))


@pytest.fixture
def db_url(pg_server: PostgresServer) -> str:
    """A fresh, empty database per test."""
    return pg_server.create_database(f"t{next(_db_counter)}_{os.getpid()}")


class PgServers:
    """One throwaway server per PostgreSQL major version, each started on first use.

    A version whose binaries are the default ones (Debian's 15 here) is the `pg_server` fixture's server,
    asked for only then: a session that uses only 17 starts only 17.
    """

    def __init__(self, request: pytest.FixtureRequest) -> None:
        self._request = request
        self._servers: dict[str, PostgresServer] = {}
        self._owned: list[PostgresServer] = []

    def get(self, version: str) -> PostgresServer:
        if version not in self._servers:
            if pg_bindir(version) == pg_bindir():
                server: PostgresServer = self._request.getfixturevalue("pg_server")
            else:
                server = PostgresServer(version=version)
                self._owned.append(server)
                server.start()
            self._servers[version] = server
        return self._servers[version]

    def destroy(self) -> None:
        for server in self._owned:
            server.destroy()


@pytest.fixture(scope="session")
def pg_servers(request: pytest.FixtureRequest) -> Iterator[PgServers]:
    servers = PgServers(request)
    yield servers
    servers.destroy()


@pytest.fixture(params=PG_VERSIONS, ids=lambda v: f"pg{v}")
def pg_versioned_url(request: pytest.FixtureRequest, pg_servers: PgServers) -> str:
    """A fresh, empty database per test on each PostgreSQL major version of PG_VERSIONS."""
    server = pg_servers.get(request.param)
    return server.create_database(f"t{next(_db_counter)}_{os.getpid()}")


@pytest.fixture
def pg_version(request: pytest.FixtureRequest) -> str:
    """The major version of the current `pg_versioned_url` parameter."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is None or "pg_versioned_url" not in callspec.params:
        raise pytest.UsageError("the pg_version fixture needs the test to use pg_versioned_url too")
    return str(callspec.params["pg_versioned_url"])


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--cluster",
        default=os.environ.get("CIVIC_E2E_CLUSTER", "local"),
        choices=["local", "kind"],
        help="cluster for the e2e tier: local (kwokctl binary runtime, default) or kind (needs Docker)",
    )
