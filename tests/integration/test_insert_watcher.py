"""Jobs inserted without NOTIFY (as Civic OS's triggers insert them) are claimed in milliseconds:
one runner per schema watches river_job and sends River's river_insert notification for them."""

from __future__ import annotations

import statistics
import time
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.support.harness import InProcessRunner, migrate, wait_for
from tests.support.kinds import registry

pytestmark = pytest.mark.integration


def insert_silently(url: str, count: int = 1, queue: str = "default") -> list[int]:
    """An insert that sends no notification (Civic OS's enqueue triggers do this)."""
    with psycopg.connect(url, autocommit=True) as conn:
        return [
            r[0]
            for r in conn.execute(
                "INSERT INTO metadata.river_job (kind, args, queue, max_attempts) "
                "SELECT 'noop', %s, %s, 25 FROM generate_series(1, %s) RETURNING id",
                (Jsonb({}), queue, count),
            ).fetchall()
        ]


def seconds_to_finalize(url: str, ids: list[int]) -> list[float]:
    def done() -> list[Any]:
        with psycopg.connect(url, autocommit=True) as conn:
            found = conn.execute(
                "SELECT extract(epoch FROM finalized_at - created_at) FROM metadata.river_job "
                "WHERE id = ANY(%s) AND state = 'completed'",
                (ids,),
            ).fetchall()
        return found if len(found) == len(ids) else []

    return [float(r[0]) for r in wait_for(done, 10, what="jobs completed")]


def test_silent_inserts_are_claimed_in_milliseconds(db_url: str) -> None:
    migrate(db_url)
    lat: list[float] = []
    # A fetch poll of 5 s: anything under it can only come from the watcher.
    with InProcessRunner(db_url, registry, fetch_poll_interval=5.0) as r:
        wait_for(lambda: r.runner.watcher is not None and r.runner.watcher.holding, 5, what="watcher elected")
        for _ in range(20):
            lat += seconds_to_finalize(db_url, insert_silently(db_url))
            time.sleep(0.03)
        assert r.runner.watcher is not None and r.runner.watcher.announced >= 20
    lat.sort()
    assert statistics.median(lat) < 0.05, lat
    assert lat[-1] < 0.5, lat


def test_without_the_watcher_silent_inserts_wait_for_the_poll(db_url: str) -> None:
    """The control: the same inserts with the watcher off take the poll interval."""
    migrate(db_url)
    with InProcessRunner(db_url, registry, fetch_poll_interval=1.5, insert_watch_interval=0) as r:
        assert r.runner.watcher is None
        time.sleep(0.2)
        (lat,) = seconds_to_finalize(db_url, insert_silently(db_url))
    assert lat > 0.2, lat


def test_one_watcher_per_schema_and_takeover(db_url: str) -> None:
    migrate(db_url)
    a = InProcessRunner(db_url, registry, fetch_poll_interval=5.0).start()
    b = InProcessRunner(db_url, registry, fetch_poll_interval=5.0).start()
    try:

        def holders() -> list[InProcessRunner]:
            return [x for x in (a, b) if x.runner.watcher is not None and x.runner.watcher.holding]

        wait_for(lambda: len(holders()) == 1, 5, what="one watcher")
        time.sleep(2.5)  # the other has retried the lock at least once meanwhile
        assert len(holders()) == 1
        first = holders()[0]
        other = b if first is a else a
        first.stop()
        wait_for(lambda: other.runner.watcher is not None and other.runner.watcher.holding, 5, what="takeover")
        (lat,) = seconds_to_finalize(db_url, insert_silently(db_url))
        assert lat < 0.5, lat
    finally:
        for x in (a, b):
            if x._thread.is_alive():
                x.stop()


def test_a_burst_and_concurrent_inserters_lose_nothing(db_url: str) -> None:
    """5,000 silent inserts from 4 connections at once (ids commit out of order): all are claimed
    well before the 5 s poll, by the watcher's announcements."""
    import threading

    migrate(db_url)
    with InProcessRunner(db_url, registry, fetch_poll_interval=5.0, queues="default=50") as r:
        wait_for(lambda: r.runner.watcher is not None and r.runner.watcher.holding, 5, what="watcher elected")
        ids: list[int] = []
        t0 = time.monotonic()

        def go() -> None:
            for _ in range(25):
                ids.extend(insert_silently(db_url, 50))

        threads = [threading.Thread(target=go) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds_to_finalize(db_url, ids)
        assert time.monotonic() - t0 < 5.0
    assert len(ids) == 5000


def test_a_burst_is_jumped_over_and_every_queue_in_it_announced(db_url: str) -> None:
    """A bulk insert of 5,000 rows without NOTIFY, with a second queue only at its end: the watcher does
    not read the burst page by page but jumps to its top, announcing both queues, and everything is
    claimed well before the 5 s poll."""
    migrate(db_url)
    with InProcessRunner(db_url, registry, fetch_poll_interval=5.0, queues="default=100,tail=5") as r:
        watcher = r.runner.watcher
        wait_for(lambda: watcher is not None and watcher.holding, 5, what="watcher elected")
        assert watcher is not None
        t0 = time.monotonic()
        with psycopg.connect(db_url, autocommit=True) as conn:
            ids = [
                row[0]
                for row in conn.execute(
                    "INSERT INTO metadata.river_job (kind, args, queue, max_attempts) "
                    "SELECT 'noop', '{}', CASE WHEN g > 4990 THEN 'tail' ELSE 'default' END, 25 "
                    "FROM generate_series(1, 5000) g RETURNING id"
                )
            ]
        seconds_to_finalize(db_url, ids)
        assert time.monotonic() - t0 < 4.0
        assert watcher.jumps >= 1
        assert watcher._mark.seen >= max(ids)


def test_a_lower_id_committed_after_a_higher_one_is_announced(db_url: str) -> None:
    """The watcher's page skips an id still uncommitted (a slow inserter); when that id commits later, in a
    queue nothing else woke, it is announced from the watcher's holes, well before the 5 s poll."""
    migrate(db_url)
    with InProcessRunner(db_url, registry, fetch_poll_interval=5.0, queues="default=5,late=5") as r:
        wait_for(lambda: r.runner.watcher is not None and r.runner.watcher.holding, 5, what="watcher elected")
        with psycopg.connect(db_url) as slow:  # a transaction held open: its id is lower, its commit later
            [low] = [
                row[0]
                for row in slow.execute(
                    "INSERT INTO metadata.river_job (kind, args, queue, max_attempts) "
                    "VALUES ('noop', '{}', 'late', 25) RETURNING id"
                )
            ]
            [high] = insert_silently(db_url, 1)
            assert high > low
            seconds_to_finalize(db_url, [high])
            watcher = r.runner.watcher
            assert watcher is not None
            wait_for(lambda: low in watcher._mark.holes, 2, what="the uncommitted id kept as a hole")
            slow.commit()
            t0 = time.monotonic()
        seconds_to_finalize(db_url, [low])
        assert time.monotonic() - t0 < 1.0
