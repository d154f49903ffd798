"""Network faults between runner processes and PostgreSQL, through a real toxiproxy started here.

The runners reach PostgreSQL only through the proxy; the tests (and the jobs' side-effect table,
`test_runs`, one row per execution) use a direct connection, so what they see is the truth and not
what the faulty path lets through. Each test asserts: nothing lost, no job executed twice, no attempt
spent on a fault, and the same runner process working again afterwards (no restart).
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from devenv.pg import free_port
from devenv.toxiproxy import Proxy
from tests.support.harness import RunnerProcess, insert, job, migrate, query, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def url(db_url: str) -> str:
    migrate(db_url)
    return db_url


def runner(url: str, proxy: Proxy, log: Path, *args: str, http_port: int = 0) -> RunnerProcess:
    """A runner whose every connection goes through the proxy; its jobs record on the direct URL."""
    return RunnerProcess(
        proxy.url_for(url),
        "--client-id",
        log.stem,
        *args,
        env={"TEST_RECORD_URL": url, "CIVIC_HTTP_PORT": str(http_port)},
        log_path=log,
    ).start()


def warm_up(url: str) -> list[int]:
    """One job through the runner before a fault: its start-up statements are all answered by then."""
    ids = insert(url, "record", {})
    wait_for(lambda: completed(url, ids) == 1, timeout=20, interval=0.05, what="warm-up job completed")
    time.sleep(0.3)
    return ids


def readyz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except OSError:
        return 0


def assert_each_once(url: str, ids: list[int]) -> None:
    """Every job completed, on its first attempt, with no error, executed exactly once."""
    rows = query(
        url,
        "SELECT id, state::text, attempt, coalesce(array_length(errors, 1), 0) FROM metadata.river_job "
        "WHERE id = ANY(%s) ORDER BY id",
        (ids,),
    )
    bad = [r for r in rows if r[1:] != ("completed", 1, 0)]
    assert len(rows) == len(ids) and not bad, f"not completed once without error: {bad[:5]}"
    runs = dict(query(url, "SELECT job_id, count(*) FROM test_runs WHERE job_id = ANY(%s) GROUP BY 1", (ids,)))
    twice = {k: v for k, v in runs.items() if v != 1}
    assert len(runs) == len(ids) and not twice, f"executed {len(runs)} of {len(ids)}; more than once: {twice}"


def completed(url: str, ids: list[int]) -> int:
    return int(
        query(url, "SELECT count(*) FROM metadata.river_job WHERE id = ANY(%s) AND state = 'completed'", (ids,))[0][0]
    )


def test_latency_each_way_every_job_done_once(url: str, proxy: Proxy, tmp_path: Path) -> None:
    proxy.latency(50)
    ids = insert(url, "record", {}, count=300)
    procs = [runner(url, proxy, tmp_path / f"lat{i}.log") for i in range(2)]
    try:
        wait_for(lambda: completed(url, ids) == len(ids), timeout=60, interval=0.2, what="all completed")
    finally:
        assert [p.terminate() for p in procs] == [0, 0]
    assert_each_once(url, ids)
    assert len(set(query(url, "SELECT pid FROM test_runs"))) == 2, "both runners worked"


def test_reset_mid_claim_gives_the_claimed_jobs_back(url: str, proxy: Proxy, tmp_path: Path) -> None:
    """The claim commits, its reply is held back by the proxy, and the connection is reset before the
    reply arrives: the runner never learns which jobs it claimed. Those rows are `running` under its
    client id with nobody working them; they must be worked once, on their first attempt, and not wait
    for the rescuer (an hour by default)."""
    log = tmp_path / "claimer.log"
    # A row the previous process of the same name (a restarted container keeps its pod name) was working
    # when it died: the rescuer's, not to be given back as a lost claim.
    [dead] = insert(
        url,
        "record",
        {},
        state="running",
        attempt=1,
        attempted_by=["claimer"],
        attempted_at=datetime.now(UTC) - timedelta(minutes=1),
    )
    p = runner(url, proxy, log, "--queues", "default=3", "--no-maintenance")
    try:
        warm = warm_up(url)
        proxy.hold_replies()
        ids = insert(url, "record", {}, count=3)
        wait_for(lambda: job(url, ids[0])["state"] == "running", timeout=10, what="claim committed")
        proxy.cut()
        wait_for(lambda: "claim failed; retrying" in log.read_text(), timeout=10, what="the claim's reply lost")
        wait_for(lambda: completed(url, ids) == len(ids), timeout=20, interval=0.1, what="claimed jobs completed")
        more = insert(url, "record", {}, count=20)
        wait_for(lambda: completed(url, more) == len(more), timeout=20, interval=0.1, what="new jobs completed")
    finally:
        assert p.terminate() == 0
    assert_each_once(url, warm + ids + more)
    assert "gave back jobs whose claim reply was lost" in log.read_text()
    assert (job(url, dead)["state"], job(url, dead)["attempt"]) == ("running", 1), "the predecessor's row was kept"


def test_reset_mid_completion_writes_each_outcome_once(url: str, proxy: Proxy, tmp_path: Path) -> None:
    """The jobs' outcomes are committed and the reply is cut on the way back: the completer retries a
    write that already happened, which must neither fail the jobs nor run them again."""
    log = tmp_path / "completer.log"
    gate = tmp_path / "gate"
    p = runner(url, proxy, log, "--queues", "default=10", "--no-maintenance")
    try:
        warm = warm_up(url)
        ids = insert(url, "gate", {"gate": str(gate)}, count=5)
        wait_for(lambda: query(url, "SELECT count(*) FROM test_runs")[0][0] == 6, timeout=20, what="all 5 running")
        # Replies delayed rather than dropped: the write may need a new connection first, whose set-up
        # must get through; the outcome's own reply is then cut while the proxy holds it.
        proxy.add("slow_replies", "latency", "downstream", latency=2000)
        gate.touch()
        wait_for(lambda: completed(url, ids) == len(ids), timeout=30, interval=0.05, what="outcomes committed")
        proxy.cut()
        wait_for(lambda: "could not write job outcomes" in log.read_text(), timeout=10, what="the write's reply lost")
        more = insert(url, "record", {}, count=20)
        wait_for(lambda: completed(url, more) == len(more), timeout=20, interval=0.1, what="new jobs completed")
    finally:
        assert p.terminate() == 0
    assert_each_once(url, warm + ids + more)
    text = log.read_text()
    assert "outcome had been written by a try whose reply was lost" in text
    assert "job was no longer running" not in text, "our own retried write was reported as someone else's"


def test_partition_30s_readyz_and_recovery(url: str, proxy: Proxy, tmp_path: Path) -> None:
    """30 s during which every byte between runner and PostgreSQL is dropped and nothing is closed."""
    port = free_port()
    log = tmp_path / "partitioned.log"
    first = insert(url, "record", {"sleep": 0.1}, count=200)
    p = runner(url, proxy, log, "--queues", "default=4", http_port=port)
    try:
        wait_for(lambda: readyz(port) == 200, timeout=20, what="ready")
        wait_for(lambda: completed(url, first) >= 20, timeout=30, what="some progress")
        proxy.blackhole()
        cut = time.monotonic()
        wait_for(lambda: readyz(port) == 503, timeout=25, interval=0.1, what="/readyz 503 during the partition")
        not_ready_after = time.monotonic() - cut
        during = insert(url, "record", {}, count=50)
        time.sleep(max(30 - (time.monotonic() - cut), 0))
        assert readyz(port) == 503, "still not ready at the end of the partition"
        proxy.heal()
        healed = time.monotonic()
        wait_for(lambda: readyz(port) == 200, timeout=30, interval=0.1, what="/readyz 200 after the partition")
        ready_after = time.monotonic() - healed
        ids = first + during
        wait_for(lambda: completed(url, ids) == len(ids), timeout=60, interval=0.2, what="everything completed")
        done_after = time.monotonic() - healed
    finally:
        assert p.terminate() == 0
    assert_each_once(url, ids)
    print(f"partition: 503 after {not_ready_after:.1f}s, 200 {ready_after:.1f}s after heal, all done {done_after:.1f}s")
    assert not_ready_after < 10 and ready_after < 10


def test_sigterm_during_a_partition_exits_within_the_grace_period(url: str, proxy: Proxy, tmp_path: Path) -> None:
    """A pod deleted while its database is unreachable must still exit before the kubelet's SIGKILL (the
    chart's runner pods: 60 s), its running jobs stopped and the rest left for the rescuer."""
    log = tmp_path / "stopped.log"
    p = runner(url, proxy, log, "--queues", "default=4", "--shutdown-grace", "5")
    warm = warm_up(url)
    ids = insert(url, "record", {"sleep": 0.2}, count=40)
    wait_for(lambda: completed(url, ids) >= 4, timeout=20, what="some progress")
    proxy.blackhole()
    time.sleep(1)
    t0 = time.monotonic()
    assert p.terminate(timeout=60) == 0
    took = time.monotonic() - t0
    print(f"SIGTERM during a partition: exited 0 after {took:.1f}s")
    assert took < 45, f"took {took:.0f}s: too close to a 60 s grace period"
    proxy.heal()
    # What it could not write is neither lost nor run twice: a new runner (after the rescuer for rows
    # left running) finishes the rest.
    q = runner(url, proxy, tmp_path / "after.log", "--rescue-after", "1", "--rescuer-interval", "0.5")
    try:
        wait_for(lambda: completed(url, ids) == len(ids), timeout=60, interval=0.2, what="the rest completed")
    finally:
        assert q.terminate() == 0
    runs = dict(query(url, "SELECT job_id, count(*) FROM test_runs WHERE job_id = ANY(%s) GROUP BY 1", (ids,)))
    assert set(runs) == set(ids), "every job executed"
    assert completed(url, warm) == 1
