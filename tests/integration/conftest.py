"""Fixtures of the integration tier's fault tests: one real toxiproxy for the session, and a proxy per test
in front of the test's own database (the module's `url` fixture)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devenv.toxiproxy import Proxy, Toxiproxy


@pytest.fixture(scope="session")
def toxiproxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Toxiproxy]:
    with Toxiproxy(log_path=tmp_path_factory.mktemp("toxiproxy") / "toxiproxy.log") as tp:
        yield tp


@pytest.fixture
def proxy(toxiproxy: Toxiproxy, url: str, request: pytest.FixtureRequest) -> Iterator[Proxy]:
    """A proxy to the PostgreSQL server of `url`, removed after the test (its toxics with it)."""
    port = url.rsplit(":", 1)[1].split("/", 1)[0]
    p = toxiproxy.proxy(f"pg_{request.node.name[:40]}", upstream=f"127.0.0.1:{port}")
    yield p
    toxiproxy.api("DELETE", f"/proxies/{p.name}")
