"""Network faults between the file pipeline's own pool (civic_runner.pipeline.db, sync, used from worker
threads) and PostgreSQL, through a real toxiproxy started here.

Only the pipeline's connections go through the proxy; the runner's own pool and the tests' checks use the
direct URL, so the fault is the pipeline's alone and what the tests read is the truth. Each test asserts
that a call on a dead path ends within its deadline (the thread that made it is free again) and that the
same Database works again on a new connection once the path heals. The deadline's decisions and the
watchdog on a socket pair: tests/unit/test_statement_watchdog.py.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from civic_runner.pipeline import Pipeline
from civic_runner.pipeline.db import Database, check_idle
from civic_runner.pipeline.watchdog import StatementTimeout
from civic_runner.registry import Registry
from psycopg_pool import PoolTimeout

from devenv.toxiproxy import Proxy
from tests.pipeline.conftest import SCHEMA, make_config, request_upload, upload_request
from tests.support.harness import InProcessRunner, migrate, query, wait_for

pytestmark = pytest.mark.integration

STATEMENT_TIMEOUT = 1.0
CONNECT_TIMEOUT = 2  # in the proxied URL (connect_kwargs leaves a URL's own value alone); libpq's minimum
POOL_TIMEOUT = 3.0
GRACE = 1.0  # thread scheduling on a loaded 2-core machine


@pytest.fixture
def url(db_url: str) -> str:
    migrate(db_url, SCHEMA, civic=True)
    return db_url


@pytest.fixture
def proxied(url: str, proxy: Proxy) -> str:
    return f"{proxy.url_for(url)}?connect_timeout={CONNECT_TIMEOUT}"


@pytest.fixture
def db(proxied: str) -> Iterator[Database]:
    d = Database(proxied, SCHEMA, max_size=2, statement_timeout=STATEMENT_TIMEOUT, pool_timeout=POOL_TIMEOUT)
    yield d
    d.close()


@pytest.fixture
def threads() -> Iterator[ThreadPoolExecutor]:
    """The calls run in worker threads, as the runner runs the pipeline's jobs."""
    with ThreadPoolExecutor(4, thread_name_prefix="test-worker") as pool:
        yield pool


def timed_error(threads: ThreadPoolExecutor, fn: object, timeout: float) -> tuple[BaseException | None, float]:
    started = time.monotonic()
    future = threads.submit(fn)  # type: ignore[arg-type]
    error = future.exception(timeout=timeout)  # TimeoutError here: the worker thread is stuck
    return error, time.monotonic() - started


def test_a_statement_on_a_dead_path_ends_at_its_deadline_and_the_pool_recovers(
    db: Database, proxy: Proxy, threads: ThreadPoolExecutor
) -> None:
    missing = uuid.uuid4()
    assert threads.submit(db.request_status, missing).result(10) is None, "through the healthy proxy"
    proxy.blackhole()
    error, took = timed_error(threads, lambda: db.request_status(missing), STATEMENT_TIMEOUT + GRACE)
    assert isinstance(error, StatementTimeout), repr(error)
    assert STATEMENT_TIMEOUT - 0.1 <= took < STATEMENT_TIMEOUT + GRACE, took
    stats = db.pool().get_stats()
    assert stats.get("returns_bad") == 1, f"the timed-out connection must be discarded: {stats}"

    # Still dead: the pool's other connection (if it opened one) times out the same way, and a replacement
    # cannot connect, so the call waits for a connection and gives up after pool_timeout (PoolTimeout).
    # Either is a database failure the jobs retry.
    error, _ = timed_error(threads, lambda: db.request_status(missing), POOL_TIMEOUT + GRACE)
    assert isinstance(error, (StatementTimeout, PoolTimeout)), repr(error)

    proxy.heal()
    healed = time.monotonic()
    assert threads.submit(db.request_status, missing).result(POOL_TIMEOUT + GRACE) is None
    recovered = time.monotonic() - healed
    print(f"statement ended after {took:.2f}s (deadline {STATEMENT_TIMEOUT}s); recovered {recovered:.2f}s after heal")


def test_concurrent_statements_on_a_dead_path_all_end(db: Database, proxy: Proxy, threads: ThreadPoolExecutor) -> None:
    """Both of the pool's connections in use when the path dies: each statement ends at its own deadline
    and neither thread waits for the other."""
    pool = db.pool()
    pool.wait(10)  # min_size 1; the second connection comes when two calls overlap
    with pool.connection(), pool.connection():
        pass  # both exist now
    proxy.blackhole()
    started = time.monotonic()
    futures = [threads.submit(db.request_status, uuid.uuid4()) for _ in range(2)]
    errors = [f.exception(timeout=STATEMENT_TIMEOUT + GRACE) for f in futures]
    took = time.monotonic() - started
    assert all(isinstance(e, StatementTimeout) for e in errors), errors
    assert took < STATEMENT_TIMEOUT + GRACE, took
    assert db.pool().get_stats().get("returns_bad") == 2
    proxy.heal()
    assert threads.submit(db.request_status, uuid.uuid4()).result(POOL_TIMEOUT + GRACE) is None


def test_connecting_through_a_dead_path_ends_at_the_connect_timeout(
    db: Database, proxy: Proxy, threads: ThreadPoolExecutor, caplog: pytest.LogCaptureFixture
) -> None:
    """The pool's first connection through a dead path: each attempt ends after connect_timeout (without
    it, the pool's one connecting thread would wait for ever and the pool never recover)."""
    proxy.blackhole()
    caplog.set_level(logging.WARNING, logger="psycopg.pool")
    started_wall = time.time()
    # The start-up check of row-level security waits for a connection first, then the statement does.
    error, took = timed_error(threads, lambda: db.request_status(uuid.uuid4()), 2 * POOL_TIMEOUT + GRACE)
    assert isinstance(error, PoolTimeout), repr(error)
    attempts = [r for r in caplog.records if "error connecting" in r.getMessage()]
    assert attempts and "timeout expired" in attempts[0].getMessage(), [r.getMessage() for r in attempts]
    first = attempts[0].created - started_wall
    assert CONNECT_TIMEOUT - 0.1 <= first < CONNECT_TIMEOUT + GRACE, first
    proxy.heal()
    assert threads.submit(db.request_status, uuid.uuid4()).result(POOL_TIMEOUT + GRACE) is None
    print(f"first connect attempt ended after {first:.2f}s; first call gave up after {took:.2f}s")


def job_state(url: str, job_id: int) -> tuple[str, int, list[str]]:
    """(state, attempt, the errors' messages) of a job, read directly."""
    row = query(
        url,
        f"SELECT state::text, attempt, array(SELECT e->>'error' FROM unnest(errors) e) FROM {SCHEMA}.river_job "
        "WHERE id = %s",
        (job_id,),
    )[0]
    return str(row[0]), int(row[1]), list(row[2])


def test_presign_during_a_partition_completes_after_healing(url: str, proxied: str, proxy: Proxy) -> None:
    """A runner (its own pool direct) whose pipeline pool goes through the proxy. An upload request arrives
    while the pipeline's path is dead: the attempt ends at the statement deadline with a database error,
    River retries it (1 s later), and by then the path is back: the request is completed with its URL and
    file id on the second attempt. The pool's idle connections, which the proxy closed when the path came
    back, are discarded when handed out rather than costing another attempt (16 s of River's backoff)."""
    cfg = make_config(
        proxied,
        None,
        S3_ENDPOINT="http://127.0.0.1:9",  # presigning is local: no S3 server is reached
        S3_ACCESS_KEY_ID="key",
        S3_SECRET_ACCESS_KEY="secret",
        PIPELINE_DB_STATEMENT_TIMEOUT=str(STATEMENT_TIMEOUT),
    )
    p = Pipeline(cfg)
    registry = p.register(Registry())
    runner = InProcessRunner(url, registry, queues="s3_signer=2", scheduler_interval=0.2, fetch_poll_interval=0.2)
    try:
        runner.start()
        warm = request_upload(url, "warm.jpg", "image/jpeg")
        wait_for(lambda: upload_request(url, warm)["status"] == "completed", timeout=10, what="warm-up presign")
        proxy.blackhole()
        cut = time.monotonic()
        time.sleep(1.0)  # the pool's idle connections sit on the dead path too
        inserted = time.monotonic()
        rid = request_upload(url, "photo.jpg", "image/jpeg")
        job_id = int(query(url, f"SELECT id FROM {SCHEMA}.river_job WHERE args->>'request_id' = %s", (rid,))[0][0])
        wait_for(lambda: job_state(url, job_id)[2], timeout=STATEMENT_TIMEOUT + 5, interval=0.02, what="attempt 1")
        failed_after = time.monotonic() - inserted
        proxy.heal()
        partition = time.monotonic() - cut
        healed = time.monotonic()
        wait_for(lambda: job_state(url, job_id)[0] == "completed", timeout=15, interval=0.05, what="job completed")
        done_after = time.monotonic() - healed
    finally:
        runner.stop()
        p.close()
    row = upload_request(url, rid)
    assert row["status"] == "completed" and row["error_message"] is None, row
    assert row["presigned_url"] and str(row["s3_key"]).startswith(f"issues/42/{row['file_id']}/original"), row
    state, attempt, errors = job_state(url, job_id)
    assert (state, attempt, len(errors)) == ("completed", 2, 1), (state, attempt, errors)
    assert errors[0].startswith("StatementTimeout: no answer from the database in 1s"), errors
    # Claimed within a poll (the runner's own path is healthy), then the deadline: the worker thread was freed.
    assert failed_after < STATEMENT_TIMEOUT + 0.5 + GRACE, failed_after
    print(
        f"presign: attempt 1 failed {failed_after:.2f}s after the insert, partition {partition:.2f}s, "
        f"completed {done_after:.2f}s after heal"
    )


def test_a_connection_closed_while_idle_fails_the_pools_check(url: str) -> None:
    """check_idle, the pool's check on checkout, on a real connection: a live idle one passes without a round
    trip; one whose server end was closed while it sat idle is refused and closed (the pool takes another)."""
    with psycopg.connect(url, autocommit=True) as live, psycopg.connect(url, autocommit=True) as doomed:
        check_idle(live)
        query(url, "SELECT pg_terminate_backend(%s)", (doomed.info.backend_pid,))
        wait_for(lambda: not query(url, "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (doomed.info.backend_pid,)))
        with pytest.raises(psycopg.OperationalError):
            check_idle(doomed)
        assert doomed.closed
        check_idle(live)
        assert live.execute("SELECT 1").fetchone() == (1,)
