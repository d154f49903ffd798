"""The file pipeline's statement deadlines (civic_runner.pipeline.watchdog): which watches are due, and the
watchdog thread ending a blocked read on a real socket pair. Through a real fault proxy and PostgreSQL:
tests/integration/test_pipeline_db_faults.py."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from civic_runner.pipeline.watchdog import StatementTimeout, Watchdog, due

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("deadlines", "now", "expired", "wait"),
    [
        ({}, 10.0, [], None),  # nothing watched: sleep until told
        ({1: 12.0}, 10.0, [], 2.0),
        ({1: 10.0}, 10.0, [1], None),  # the deadline itself is expiry
        ({1: 9.0, 2: 15.0, 3: 11.0}, 10.0, [1], 1.0),  # the next look is at the earliest of the rest
        ({3: 5.0, 1: 9.0, 2: 15.0}, 10.0, [1, 3], 5.0),
        ({1: 1.0, 2: 2.0}, 10.0, [1, 2], None),
    ],
)
def test_due(deadlines: dict[int, float], now: float, expired: list[int], wait: float | None) -> None:
    assert due(deadlines, now) == (expired, wait)


@pytest.fixture
def dog() -> Iterator[Watchdog]:
    w = Watchdog(name="test-watchdog")
    yield w
    w.close()


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


class FakeConn:
    """What Watchdog.call uses of a psycopg connection: its descriptor, and close()."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.closed = False

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.closed = True


def blocked_read(sock: socket.socket) -> bytes:
    """A statement waiting for a reply that never comes: psycopg reports end-of-file as OperationalError."""
    data = sock.recv(1)
    if not data:
        raise psycopg.OperationalError("server closed the connection unexpectedly")
    return data


def test_a_statement_past_its_deadline_ends_and_its_connection_is_closed(
    dog: Watchdog, pair: tuple[socket.socket, socket.socket]
) -> None:
    a, _ = pair
    conn: Any = FakeConn(a)
    started = time.monotonic()
    with pytest.raises(StatementTimeout, match=r"no answer from the database in 0.3s") as info:
        dog.call(conn, 0.3, lambda: blocked_read(a))
    took = time.monotonic() - started
    assert 0.25 <= took < 1.5, took
    assert isinstance(info.value, psycopg.OperationalError), "handled as a database failure (retried)"
    assert conn.closed, "the pool must discard it"
    assert a.fileno() >= 0, "the watchdog shut the socket down through a duplicate; the owner's fd is left open"


def test_a_statement_answered_in_time_is_left_alone(dog: Watchdog, pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    conn: Any = FakeConn(a)
    b.sendall(b"x")
    assert dog.call(conn, 0.2, lambda: blocked_read(a)) == b"x"
    time.sleep(0.4)  # past the deadline of the finished watch: nothing may fire
    b.sendall(b"y")
    assert a.recv(1) == b"y" and not conn.closed, "the socket works after the deadline of an ended watch"


def test_other_database_errors_pass_unchanged(dog: Watchdog, pair: tuple[socket.socket, socket.socket]) -> None:
    conn: Any = FakeConn(pair[0])

    def fails() -> None:
        raise psycopg.OperationalError("terminating connection due to administrator command")

    with pytest.raises(psycopg.OperationalError, match="administrator") as info:
        dog.call(conn, 5.0, fails)
    assert not isinstance(info.value, StatementTimeout) and not conn.closed


def test_a_reply_that_beats_the_shutdown_is_kept_and_the_connection_closed(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    fired: list[int] = []
    dog = Watchdog(name="test-watchdog", fire=fired.append)  # fires, but the statement still returns
    try:
        conn: Any = FakeConn(pair[0])

        def slow() -> str:
            time.sleep(0.4)
            return "row"

        assert dog.call(conn, 0.1, slow) == "row"
        assert fired == [pair[0].fileno()] and conn.closed, "its socket is dead: not to be reused"
    finally:
        dog.close()


def test_an_earlier_deadline_wakes_the_watchdog(dog: Watchdog) -> None:
    """A long watch first, then a short one from another thread: the short one still ends on time."""
    fired = threading.Event()
    dog._fire = lambda fd: fired.set()  # noqa: SLF001 - record instead of shutting down fd numbers we do not own
    long = dog.start(1000, 60.0)
    time.sleep(0.1)  # the thread is asleep until the long deadline
    started = time.monotonic()
    short = dog.start(1001, 0.2)
    assert fired.wait(2.0), "the short deadline was missed"
    assert time.monotonic() - started < 1.0
    assert dog.finish(short) and not dog.finish(long)


def test_concurrent_statements_each_end_at_their_own_deadline(dog: Watchdog) -> None:
    pairs = [socket.socketpair() for _ in range(4)]
    results: dict[int, tuple[str, float]] = {}

    def statement(i: int) -> None:
        a = pairs[i][0]
        started = time.monotonic()
        try:
            dog.call(FakeConn(a), 0.2 * (i + 1), lambda: blocked_read(a))  # type: ignore[arg-type]
            results[i] = ("answered", time.monotonic() - started)
        except StatementTimeout:
            results[i] = ("timeout", time.monotonic() - started)

    threads = [threading.Thread(target=statement, args=(i,)) for i in range(4)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(5)
        assert not any(t.is_alive() for t in threads), "a worker thread is stuck"
        for i, (outcome, took) in sorted(results.items()):
            assert outcome == "timeout" and 0.2 * (i + 1) - 0.05 <= took < 0.2 * (i + 1) + 1.0, (i, outcome, took)
    finally:
        for a, b in pairs:
            a.close()
            b.close()


def test_close_keeps_running_deadlines_and_the_watchdog_starts_again(dog: Watchdog) -> None:
    """Database.close() closes the watchdog while a statement may still run in a worker thread: its
    deadline still holds; after close, the next statement (the pool reopened on first use) is watched too."""
    fired: list[int] = []
    dog._fire = fired.append  # noqa: SLF001 - record instead of shutting down fd numbers we do not own
    running = dog.start(7, 0.3)
    dog.close()
    time.sleep(0.6)
    assert dog.finish(running) and fired == [7], "a statement running at close() kept its deadline"
    wait_for_thread_end(dog)
    again = dog.start(8, 0.1)
    time.sleep(0.4)
    assert dog.finish(again) and fired == [7, 8], "watched again after close()"


def wait_for_thread_end(dog: Watchdog) -> None:
    deadline = time.monotonic() + 2
    while dog._thread is not None:  # noqa: SLF001 - the thread ends once nothing is watched
        assert time.monotonic() < deadline, "the watchdog thread did not end after close()"
        time.sleep(0.01)
