"""Which URL the operator LISTENs on for a pool: its database.listenSecretRef (direct) when set, else its
database URL; a pool declaring a session pooler lets the listener skip its pooler check."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from civic_operator import autoscaler
from civic_operator.autoscaler import PoolAutoscaler
from civic_operator.manifests import PoolRef
from civic_operator.scaling import QueueStats

pytestmark = pytest.mark.unit

SECRETS = {("db", "DATABASE_URL"): "postgresql://pgbouncer:6432/civic", ("direct", "url"): "postgresql://db:5432/civic"}


class Subscriptions:
    def __init__(self) -> None:
        self.calls: list[tuple[str, bool]] = []

    def subscribe(self, url: str, schema: str, key: str, callback: Any, check_pooler: bool = True) -> None:
        self.calls.append((url, check_pooler))

    def unsubscribe(self, key: str) -> None:
        pass


class Stats:
    async def fetch(self, url: str, *args: Any, **kwargs: Any) -> tuple[QueueStats, float]:
        assert url == SECRETS[("db", "DATABASE_URL")], "stats go to the pool's database URL (PgBouncer)"
        return QueueStats(available=0, running=0), 0.001


@pytest.mark.parametrize(
    ("database", "want"),
    [
        ({"secretRef": {"name": "db"}}, ("postgresql://pgbouncer:6432/civic", True)),
        (
            {"secretRef": {"name": "db"}, "listenSecretRef": {"name": "direct", "key": "url"}},
            ("postgresql://db:5432/civic", True),
        ),
        ({"secretRef": {"name": "db"}, "pooler": "session"}, ("postgresql://pgbouncer:6432/civic", False)),
    ],
)
def test_listen_url(monkeypatch: pytest.MonkeyPatch, database: dict[str, Any], want: tuple[str, bool]) -> None:
    async def secret_value(namespace: str, name: str, key: str) -> str:
        return SECRETS[(name, key)]

    monkeypatch.setattr(autoscaler.kube, "secret_value", secret_value)
    listener = Subscriptions()
    scaler = PoolAutoscaler(PoolRef("files", "ns", "u1"), Stats(), listener)  # type: ignore[arg-type]
    spec = {"queues": ["q"], "database": database}
    policy = autoscaler.Policy.from_spec(None)
    stats, error = asyncio.run(scaler._measure(spec, policy))
    assert error == "" and stats is not None
    assert listener.calls == [want]
