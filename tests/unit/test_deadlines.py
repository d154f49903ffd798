"""Decisions behind the network-fault handling: readiness on a stalled round trip, bounded connects,
and recognising our own outcome after a lost reply (the I/O is in tests/integration/test_network_faults.py)."""

from __future__ import annotations

import asyncio

import pytest
from civic_runner.completer import earlier_try_landed
from civic_runner.deadlines import CANCEL_GRACE, READY_STALL, DatabaseTimeout, bounded, connect_kwargs, stalled

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("started", "now", "limit", "expected"),
    [
        (None, 100.0, READY_STALL, False),  # nothing in flight
        (100.0, 100.0, READY_STALL, False),  # just sent
        (100.0, 104.9, 5.0, False),
        (100.0, 105.0, 5.0, True),  # unanswered for the limit: not ready
        (100.0, 160.0, 5.0, True),
        (100.0, 101.0, 1.0, True),
    ],
)
def test_stalled(started: float | None, now: float, limit: float, expected: bool) -> None:
    assert stalled(started, now, limit) is expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u@h:5432/db", {"connect_timeout": 10}),
        ("postgresql://u@h:5432/db?connect_timeout=3", {}),  # the user's own value wins
        ("host=h port=5432 dbname=db", {"connect_timeout": 10}),
        ("host=h dbname=db connect_timeout=0", {}),  # even "wait for ever", if asked for
    ],
)
def test_connect_kwargs(url: str, expected: dict[str, int]) -> None:
    assert connect_kwargs(url) == expected


@pytest.mark.parametrize(
    ("retried", "state_now", "wrote", "expected"),
    [
        (True, "completed", "completed", True),  # our first try committed, its reply was lost
        (True, "available", "available", True),
        (False, "completed", "completed", False),  # no earlier try: someone else finished it
        (True, "running", "completed", False),  # another attempt runs (ours was rescued)
        (True, "cancelled", "completed", False),  # cancelled by someone else meanwhile
        (True, "missing", "completed", False),
    ],
)
def test_earlier_try_landed(retried: bool, state_now: str, wrote: str, expected: bool) -> None:
    assert earlier_try_landed(retried, state_now, wrote) is expected


def test_bounded_names_what_timed_out() -> None:
    async def never() -> None:
        await asyncio.sleep(10)

    with pytest.raises(DatabaseTimeout, match=r"claim: no answer from the database in 0.05s"):
        asyncio.run(bounded(never(), 0.05, "claim"))


def test_bounded_passes_the_result_and_errors_through() -> None:
    async def value() -> int:
        return 7

    async def fails() -> None:
        raise ValueError("boom")

    assert asyncio.run(bounded(value(), 1, "x")) == 7
    with pytest.raises(ValueError, match="boom"):
        asyncio.run(bounded(fails(), 1, "x"))


def test_bounded_does_not_wait_for_a_slow_cancellation() -> None:
    """Like psycopg on a dead path: the first cancel starts a cancel request that hangs; the second ends it."""
    cancels = 0

    async def stubborn() -> None:
        nonlocal cancels
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancels += 1
            try:
                await asyncio.sleep(10)  # psycopg's cancel request, unanswered
            except asyncio.CancelledError:
                cancels += 1
                raise

    async def timed() -> float:
        t0 = asyncio.get_running_loop().time()
        with pytest.raises(DatabaseTimeout):
            await bounded(stubborn(), 0.05, "claim")
        return asyncio.get_running_loop().time() - t0

    took = asyncio.run(timed())
    assert cancels == 2
    assert took < 0.05 + CANCEL_GRACE + 0.5
