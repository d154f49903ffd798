"""The connection budget's server numbers, read from a real PostgreSQL (15, 17, 18) the way the operator
reads them: through its stats pool, as a role without privileges, its own connections named by PGAPPNAME."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from civic_operator import budget, ledger
from civic_operator.stats import StatsSource

pytestmark = pytest.mark.integration

UID = "6f1c2a9e-0b7d-4e3a-9c51-2d8f4a6b7c10"


def as_role(url: str, role: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port}"))


def test_server_limits_as_the_operator_reads_them(pg_versioned_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    url = pg_versioned_url
    role = f"budget_{urlsplit(url).path.strip('/')}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'CREATE ROLE "{role}" LOGIN')
        background = admin.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type <> 'client backend' AND usesysid IS NOT NULL"
        ).fetchone()
    runners = [psycopg.connect(url, application_name=budget.runner_app_name(UID, "ns", "pool")) for _ in range(3)]
    strangers = [psycopg.connect(url, application_name="PostgREST") for _ in range(2)]
    monkeypatch.setenv("PGAPPNAME", budget.OPERATOR_APP)  # what handlers.configure sets

    async def read(as_url: str) -> ledger.RawLimits:
        src = StatsSource()
        try:
            return await ledger.limits_reader(src.connection)(as_url)
        finally:
            await src.close()

    try:
        privileged = asyncio.run(read(url))
        unprivileged = asyncio.run(read(as_role(url, role)))
    finally:
        for c in runners + strangers:
            c.close()
    assert background is not None
    for raw in (privileged, unprivileged):
        assert (raw.max_connections, raw.superuser_reserved, raw.reserved) == (200, 3, 0)
        apps = dict(raw.by_app)
        assert apps[budget.runner_app_name(UID, "ns", "pool")] == 3
        assert apps["PostgREST"] == 2
        assert apps[budget.OPERATOR_APP] >= 1  # the reading connection itself, named by PGAPPNAME
    # Those 5 and the operator's are told apart exactly when the role may see backend types ...
    assert budget.others_connections(privileged.by_app, {UID}) == 2
    # ... and without pg_read_all_stats other roles' background workers count as clients: on the safe side.
    assert budget.others_connections(unprivileged.by_app, {UID}) == 2 + int(background[0])
    limits = budget.ServerLimits(
        privileged.max_connections,
        privileged.superuser_reserved,
        privileged.reserved,
        budget.others_connections(privileged.by_app, {UID}),
    )
    found = budget.budget_of(None, "operator", limits, from_server=True, reserve=10, operator_conns=3)
    assert found.connections == 200 - 3 - 0 - 10 - 2 - 3
