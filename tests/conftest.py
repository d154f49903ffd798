"""Shared fixtures. Servers the tests need are started here, never assumed to be running."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.pg import PostgresServer  # noqa: E402

REFERENCE = Path(os.environ.get("CIVIC_REFERENCE_DIR", ROOT / "tests" / "reference"))


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


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--cluster",
        default=os.environ.get("CIVIC_E2E_CLUSTER", "local"),
        choices=["local", "kind"],
        help="cluster for the e2e tier: local (kwokctl binary runtime, default) or kind (needs Docker)",
    )
