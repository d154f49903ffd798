"""A mixed fleet on one schema: River v0.51.2 Go clients and civic-runner processes elect one leader in
river_leader; after `kill -9` of the leader (Go or Python) the other side takes over when the dead
leader's term expires, and that new leader rescues the jobs the dead one left running, as River's
JobRescuer does: a known kind is retried (and worked again by the other side), an unknown one
discarded."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.compat.conftest import GoRiver
from tests.support.harness import RunnerProcess, insert, job, migrate, query, wait_for

pytestmark = pytest.mark.compat

RESCUED = "Stuck job rescued by JobRescuer"
HANG_ONCE = '{"sleep": 600, "sleep_attempts": 1}'  # hangs on attempt 1, completes on attempt 2
# River's leader TTL is 15 s (elect every 5 s + 10 s); after kill -9 the row stays until it expires.
TAKEOVER_WITHIN = 15 + 5 + 1.5


def leader(url: str) -> str | None:
    rows = query(url, "SELECT leader_id FROM metadata.river_leader WHERE expires_at > now()")
    return str(rows[0][0]) if rows else None


def one_leader_for(url: str, who: str, seconds: float, renewed: bool = True) -> None:
    """`who` alone in river_leader for `seconds`; with `renewed`, it also re-elected meanwhile (its term's
    expiry moved on: a leader that cannot renew keeps its row only until the TTL)."""
    expiries = set()
    for _ in range(int(seconds / 0.25)):
        rows = query(url, "SELECT leader_id, expires_at FROM metadata.river_leader")
        assert [r[0] for r in rows] == [who], f"expected {who} to lead alone, found {rows}"
        expiries.add(rows[0][1])
        time.sleep(0.25)
    assert not renewed or len(expiries) > 1, f"{who} did not renew its term in {seconds} s"


def python_runner(url: str, client_id: str, tmp_path: Path, *args: str) -> RunnerProcess:
    return RunnerProcess(
        url, "--client-id", client_id, "--elect-interval", "0.5", *args, log_path=tmp_path / f"{client_id}.log"
    ).start()


def assert_rescued_by_a_leader(j: dict[str, Any], killed_at: datetime, state: str) -> None:
    """River's rescue entry: the rescue time in `at` (after the kill), the stuck attempt, no trace."""
    assert j["state"] == state, j
    entry = j["errors"][-1]
    assert entry["error"] == RESCUED and entry["attempt"] == 1 and entry["trace"] == "", entry
    assert datetime.fromisoformat(entry["at"]) >= killed_at, f"`at` is not the rescue time: {entry}"
    if state != "discarded":
        assert j["metadata"]["river:rescue_count"] == 1, j["metadata"]


def running_by(url: str, ids: list[int], client: str) -> bool:
    return all(job(url, i)["state"] == "running" and job(url, i)["attempted_by"] == [client] for i in ids)


def kill_all(procs: list[Any]) -> None:
    for p in procs:
        proc = p.proc if isinstance(p, RunnerProcess) else p
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_go_leader_killed_python_takes_over_and_rescues_its_jobs(db_url: str, go: GoRiver, tmp_path: Path) -> None:
    migrate(db_url)
    g = go.popen(
        "elect", "--id", "go-a", "--duration", "0", "--queue", "go_only", "--kinds", "record,go_only_kind",
        "--job-timeout", "10m", "--rescue-after", "11m", log=tmp_path / "go-a.log",
    )  # fmt: skip
    procs: list[Any] = [g]
    try:
        wait_for(lambda: leader(db_url) == "go-a", timeout=15, what="Go leads")
        known = go.insert("record", "--queue", "go_only", "--args", HANG_ONCE)[0]["id"]
        unknown = go.insert("go_only_kind", "--queue", "go_only", "--args", HANG_ONCE)[0]["id"]
        wait_for(lambda: running_by(db_url, [known, unknown], "go-a"), timeout=10, what="Go runs both")
        # Python runners know `record` but not `go_only_kind`; they rescue quickly once they lead.
        py = [
            python_runner(db_url, f"py-{i}", tmp_path, "--rescue-after", "3", "--rescuer-interval", "0.5",
                          "--scheduler-interval", "0.5")
            for i in range(2)
        ]  # fmt: skip
        procs += py
        time.sleep(1.5)  # they are up and bidding
        one_leader_for(db_url, "go-a", 6)  # River re-elects every 5 s

        g.kill()  # SIGKILL: no resignation, the row stays until its TTL
        g.wait(10)
        killed_at, t0 = datetime.now(UTC), time.monotonic()
        assert query(db_url, "SELECT leader_id FROM metadata.river_leader") == [("go-a",)]
        new = wait_for(lambda: (leader(db_url) or "go-a") != "go-a" and leader(db_url), TAKEOVER_WITHIN, 0.1, "Python")
        takeover = time.monotonic() - t0
        assert new in ("py-0", "py-1") and takeover <= TAKEOVER_WITHIN, (new, takeover)
        one_leader_for(db_url, new, 1.5)

        wait_for(lambda: job(db_url, unknown)["state"] == "discarded", timeout=10, what="unknown kind discarded")
        wait_for(lambda: job(db_url, known)["errors"], timeout=10, what="known kind rescued")
        assert_rescued_by_a_leader(job(db_url, unknown), killed_at, "discarded")
        rescued = job(db_url, known)
        assert_rescued_by_a_leader({**rescued, "state": "retryable"}, killed_at, "retryable")
        assert rescued["state"] in ("retryable", "available"), rescued  # the scheduler may have released it

        # A River worker reads our rescue and runs attempt 2 to completion.
        r = go.run("work", "--queue", "go_only", "--kinds", "record,go_only_kind", "--id", "go-b", "--timeout", "30s")
        assert r.returncode == 0, r.stdout + r.stderr
        done = job(db_url, known)
        assert done["state"] == "completed" and done["attempt"] == 2 and done["attempted_by"] == ["go-a", "go-b"]
        assert query(db_url, "SELECT job_id, worker, attempt FROM metadata.interop_worked") == [(known, "go-b", 2)]
        assert [p.terminate() for p in py] == [0, 0]
    finally:
        kill_all(procs)
    print(f"takeover after kill -9 of the Go leader: {takeover:.1f} s")


def test_python_leader_killed_go_takes_over_and_rescues_its_jobs(db_url: str, go: GoRiver, tmp_path: Path) -> None:
    migrate(db_url)
    victim = python_runner(db_url, "py-a", tmp_path)
    procs: list[Any] = [victim]
    try:
        wait_for(lambda: leader(db_url) == "py-a", timeout=15, what="Python leads")
        [known] = insert(db_url, "record", {"sleep": 600, "sleep_attempts": 1})
        [unknown] = insert(db_url, "sleep", {"seconds": 600})  # a kind the Go client does not register
        wait_for(lambda: running_by(db_url, [known, unknown], "py-a"), timeout=10, what="Python runs both")
        g = go.popen(
            "elect", "--id", "go-a", "--duration", "0", "--kinds", "record", "--job-timeout", "1s",
            "--rescue-after", "3s", log=tmp_path / "go-a.log",
        )  # fmt: skip
        procs.append(g)
        time.sleep(1.5)
        one_leader_for(db_url, "py-a", 3)

        victim.kill()
        killed_at, t0 = datetime.now(UTC), time.monotonic()
        assert query(db_url, "SELECT leader_id FROM metadata.river_leader") == [("py-a",)]
        wait_for(lambda: leader(db_url) == "go-a", TAKEOVER_WITHIN, 0.1, "Go takes over")
        takeover = time.monotonic() - t0

        wait_for(lambda: job(db_url, unknown)["state"] == "discarded", timeout=10, what="unknown kind discarded")
        wait_for(lambda: job(db_url, known)["errors"], timeout=10, what="known kind rescued")
        assert_rescued_by_a_leader(job(db_url, unknown), killed_at, "discarded")
        rescued = job(db_url, known)
        assert_rescued_by_a_leader({**rescued, "state": "retryable"}, killed_at, "retryable")

        # Our runner reads River's rescue and runs attempt 2 (River's scheduler releases it, every 5 s).
        py_b = python_runner(db_url, "py-b", tmp_path)
        procs.append(py_b)
        wait_for(lambda: job(db_url, known)["state"] == "completed", timeout=20, what="attempt 2 completed")
        done = job(db_url, known)
        assert done["attempt"] == 2 and done["attempted_by"] == ["py-a", "py-b"], done
        one_leader_for(db_url, "go-a", 1, renewed=False)

        g.terminate()  # a graceful stop resigns with a notification: the Python runner bids at once
        assert g.wait(20) == 0
        t1 = time.monotonic()
        wait_for(lambda: leader(db_url) == "py-b", timeout=5, interval=0.05, what="py-b after Go resigned")
        handover = time.monotonic() - t1
        assert py_b.terminate() == 0
    finally:
        kill_all(procs)
    print(f"takeover after kill -9 of the Python leader: {takeover:.1f} s; after Go resigned: {handover:.2f} s")
