"""kopf's peering rule, as the autoscaler tasks apply it: act only without a live peer of higher or
equal priority."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest
from civic_operator.peering import PeeringView, Standing, combine, standing

pytestmark = pytest.mark.unit

NOW = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC).timestamp()


def seen(seconds_ago: float, priority: Any = 5, lifetime: Any = 60) -> dict[str, Any]:
    at = datetime.fromtimestamp(NOW - seconds_ago, UTC).isoformat()
    return {"priority": priority, "lastseen": at, "lifetime": lifetime}


@pytest.mark.parametrize(
    ("peers", "active", "why"),
    [
        ({}, True, "alone"),
        ({"me": seen(0, priority=1)}, True, "only our own entry"),
        ({"b": seen(10, priority=4)}, True, "lower priority peer"),
        ({"b": seen(10, priority=6)}, False, "higher priority peer, alive"),
        ({"b": seen(61, priority=6)}, True, "higher priority peer, dead (lastseen + lifetime passed)"),
        ({"b": seen(9, priority=6, lifetime=10)}, False, "short lifetime, still alive"),
        ({"b": seen(11, priority=6, lifetime=10)}, True, "short lifetime, dead"),
        ({"b": seen(0, priority=6, lifetime=0)}, True, "a peer that left says lifetime 0"),
        ({"b": seen(1, priority=5)}, False, "same priority: kopf pauses everyone"),
        ({"b": seen(1, priority="6")}, False, "priority as a string"),
        ({"b": {"priority": 9}}, True, "no lastseen: unreadable, ignored"),
        ({"b": seen(1, priority="high")}, True, "unreadable priority, ignored"),
        ({"b": "garbage"}, True, "not an object, ignored"),
        ({"b": seen(1, priority=4), "c": seen(1, priority=7)}, False, "one of several is higher"),
    ],
)
def test_standing(peers: dict[str, Any], active: bool, why: str) -> None:
    assert standing(peers, "me", 5, NOW).active is active, why


def test_reasons_name_the_peer() -> None:
    assert "c (higher priority)" in standing({"c": seen(1, priority=7)}, "me", 5, NOW).reason
    assert "same priority 5" in standing({"c": seen(1, priority=5)}, "me", 5, NOW).reason


def test_any_paused_namespace_pauses_all() -> None:
    assert combine([Standing(True, "x"), Standing(True, "y")]).active
    assert not combine([Standing(True, "x"), Standing(False, "standing by")]).active
    assert combine([]).active


def test_view_standalone_and_errors() -> None:
    async def failing() -> list[dict[str, Any]]:
        raise RuntimeError("forbidden: kopfpeerings")

    async def check() -> None:
        assert (await PeeringView("me", 1, None).current()).active
        bad = await PeeringView("me", 1, failing).current()
        assert not bad.active and "peering unreadable: forbidden" in bad.reason

    asyncio.run(check())


def test_view_caches_reads() -> None:
    reads = 0

    async def reader() -> list[dict[str, Any]]:
        nonlocal reads
        reads += 1
        return [{}]

    async def check() -> None:
        view = PeeringView("me", 1, reader, ttl=60)
        for _ in range(5):
            assert (await view.current()).active
        assert reads == 1

    asyncio.run(check())
