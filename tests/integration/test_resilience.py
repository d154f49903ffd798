"""Several runner processes, kill -9, PostgreSQL restarts, leader election: nothing lost, nothing twice."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from devenv.pg import PostgresServer
from tests.support.harness import RunnerProcess, insert, job, migrate, query, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def url(db_url: str) -> str:
    migrate(db_url)
    return db_url


def counts(url: str) -> dict[str, int]:
    return dict(query(url, "SELECT state::text, count(*) FROM metadata.river_job GROUP BY 1"))  # type: ignore[arg-type]


def test_several_processes_thousands_of_jobs_none_twice(url: str, tmp_path: Path) -> None:
    n = 3000
    insert(url, "record", {}, count=n)
    procs = [RunnerProcess(url, "--queues", "default=8", log_path=tmp_path / f"r{i}.log").start() for i in range(3)]
    try:
        wait_for(lambda: counts(url).get("completed", 0) == n, timeout=120, interval=0.2, what="all completed")
    finally:
        codes = [p.terminate() for p in procs]
    assert codes == [0, 0, 0]
    runs = query(url, "SELECT count(*), count(DISTINCT job_id), count(DISTINCT pid) FROM test_runs")[0]
    assert runs[0] == n and runs[1] == n, "a job ran twice or not at all"
    assert runs[2] == 3, "every process did some of the work"
    assert counts(url) == {"completed": n}


def test_kill_9_mid_job_is_rescued_and_completed(url: str, tmp_path: Path) -> None:
    [jid] = insert(url, "record", {"sleep": 30})
    victim = RunnerProcess(url, log_path=tmp_path / "victim.log").start()
    wait_for(lambda: job(url, jid)["state"] == "running", timeout=20, what="running")
    victim.kill()
    assert job(url, jid)["state"] == "running", "nobody completed it"
    # The rescuer treats running jobs older than --rescue-after as stuck.
    rescuer = RunnerProcess(
        url,
        "--rescue-after",
        "1",
        "--rescuer-interval",
        "0.5",
        "--elect-interval",
        "0.3",
        log_path=tmp_path / "rescuer.log",
    ).start()
    try:
        wait_for(lambda: job(url, jid)["state"] == "retryable", timeout=20, what="rescued")
        j = job(url, jid)
        assert j["errors"][-1]["error"] == "Stuck job rescued by JobRescuer"
        assert j["metadata"]["river:rescue_count"] == 1
        # Due at once for the test; the scheduler makes it available and it completes.
        query(url, "UPDATE metadata.river_job SET scheduled_at = now(), args = '{}' WHERE id = %s", (jid,))
        wait_for(lambda: job(url, jid)["state"] == "completed", timeout=20, what="completed")
    finally:
        assert rescuer.terminate() == 0
    assert job(url, jid)["attempt"] == 2


def test_postgres_restart_mid_run_loses_nothing(tmp_path: Path) -> None:
    server = PostgresServer()
    server.start()
    try:
        url = server.create_database("restart")
        migrate(url)
        n = 1500
        insert(url, "record", {"sleep": 0.01}, count=n)
        procs = [RunnerProcess(url, "--queues", "default=6", log_path=tmp_path / f"r{i}.log").start() for i in range(2)]
        wait_for(lambda: counts(url).get("completed", 0) > 200, timeout=60, what="some progress")
        server.restart(down_for=3)
        try:
            wait_for(lambda: counts(url).get("completed", 0) == n, timeout=120, interval=0.3, what="all completed")
        finally:
            codes = [p.terminate() for p in procs]
        assert codes == [0, 0]
        ran = query(url, "SELECT count(DISTINCT job_id) FROM test_runs")[0][0]
        assert ran == n
        logs = "".join((tmp_path / f"r{i}.log").read_text() for i in range(2))
        assert "claim failed; retrying" in logs and "claiming again" in logs
    finally:
        server.destroy()


def test_exactly_one_leader_among_python_runners(url: str, tmp_path: Path) -> None:
    procs = [
        RunnerProcess(url, "--elect-interval", "0.5", "--client-id", f"py-{i}", log_path=tmp_path / f"r{i}.log").start()
        for i in range(3)
    ]
    try:
        leader = wait_for(lambda: query(url, "SELECT leader_id FROM metadata.river_leader"), timeout=15)[0][0]
        for _ in range(10):
            time.sleep(0.3)
            assert query(url, "SELECT leader_id FROM metadata.river_leader") == [(leader,)]
        # The leader resigns on SIGTERM; a follower takes over quickly.
        idx = int(leader.split("-")[1])
        assert procs[idx].terminate() == 0
        new = wait_for(
            lambda: [r for r in query(url, "SELECT leader_id FROM metadata.river_leader") if r[0] != leader],
            timeout=5,
            what="new leader",
        )[0][0]
        assert new != leader
        time.sleep(0.5)
        logs = "".join(f.read_text() for f in tmp_path.glob("*.log"))
        assert logs.count("gained leadership") == 2, "one leader at a time: the first, then one successor"
    finally:
        for p in procs:
            if p.proc and p.proc.poll() is None:
                p.terminate()


def test_sigterm_during_a_database_outage_stops_within_the_grace_period(tmp_path: Path) -> None:
    """With PostgreSQL gone, a stop must not wait for pool connections (30 s each for the claim and the
    leader's resignation, ~59 s in all, measured on a real pod): the kubelet would SIGKILL past its grace."""
    server = PostgresServer()
    server.start()
    try:
        url = server.create_database("outage")
        migrate(url)
        proc = RunnerProcess(url, "--queues", "default=2", log_path=tmp_path / "r.log").start()
        wait_for(lambda: "runner started" in (tmp_path / "r.log").read_text(), 20, what="runner started")
        wait_for(lambda: query(url, "SELECT count(*) FROM metadata.river_leader")[0][0] == 1, 20, what="leader")
        server.stop("immediate")
        time.sleep(2)  # the producers are now waiting for connections that cannot come
        t0 = time.monotonic()
        assert proc.terminate(timeout=60) == 0
        took = time.monotonic() - t0
        assert took < 20, f"took {took:.1f} s to stop (grace period 25 s)"
    finally:
        server.destroy()
