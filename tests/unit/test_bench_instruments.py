"""The throughput bench's instruments: CPU accounting from /proc, the round summary, the runner's
shipped-defaults environment, and the profile's attribution of samples to parts of the runner."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from bench import burst, cpu, latency, profile_runner, throughput, wake

pytestmark = pytest.mark.unit


def stat_line(pid: int, comm: str, ppid: int, utime: int, stime: int, cutime: int, cstime: int) -> str:
    # Fields 3.. of /proc/<pid>/stat: state ppid pgrp session tty tpgid flags minflt cminflt majflt
    # cmajflt utime stime cutime cstime priority ...
    rest = ["S", str(ppid), "1", "1", "0", "-1", "0", "0", "0", "0", "0", str(utime), str(stime)]
    rest += [str(cutime), str(cstime), "20", "0", "1"]
    return f"{pid} ({comm}) " + " ".join(rest)


@pytest.mark.parametrize(
    ("comm", "expected"),
    [
        ("postgres", cpu.ProcTimes(7, 1, 30, 9)),
        ("a b) (c", cpu.ProcTimes(7, 1, 30, 9)),  # a name with spaces and parentheses
    ],
)
def test_parse_stat_counts_fields_from_the_last_parenthesis(comm: str, expected: cpu.ProcTimes) -> None:
    assert cpu.parse_stat(stat_line(7, comm, 1, 10, 20, 4, 5)) == expected


def test_parse_stat_reads_this_process() -> None:
    me = cpu.parse_stat(Path(f"/proc/{os.getpid()}/stat").read_text())
    assert (me.pid, me.ppid) == (os.getpid(), os.getppid())


TREE = {
    1: cpu.ProcTimes(1, 0, 1000, 0),  # not ours
    10: cpu.ProcTimes(10, 1, 100, 40),  # root; 40 ticks of reaped children
    11: cpu.ProcTimes(11, 10, 20, 0),
    12: cpu.ProcTimes(12, 11, 5, 1),  # a grandchild
    20: cpu.ProcTimes(20, 1, 7, 0),  # another root
}


@pytest.mark.parametrize(
    ("procs", "root", "ticks"),
    [
        (TREE, 10, 100 + 40 + 20 + 5 + 1),
        (TREE, 11, 26),
        (TREE, 20, 7),
        (TREE, 99, 0),  # gone
        ({5: cpu.ProcTimes(5, 5, 3, 0)}, 5, 3),  # its own parent (pid 0's children look like that): no loop
    ],
)
def test_tree_ticks(procs: dict[int, cpu.ProcTimes], root: int, ticks: int) -> None:
    assert cpu.tree_ticks(procs, root) == ticks


def test_a_child_reaped_between_snapshots_is_still_counted() -> None:
    before = {10: cpu.ProcTimes(10, 1, 100, 0), 11: cpu.ProcTimes(11, 10, 30, 0)}
    after = {10: cpu.ProcTimes(10, 1, 110, 50)}  # 11 ran 20 more ticks, exited, was waited for
    assert cpu.trees_seconds(after, [10]) - cpu.trees_seconds(before, [10]) == pytest.approx(30 * cpu.TICK)


def test_parse_machine_leaves_out_idle_and_iowait() -> None:
    busy, total = cpu.parse_machine("cpu  100 5 20 800 50 3 2 0 0 0\ncpu0 1 2 3\n")
    assert (busy, total) == (pytest.approx(130 * cpu.TICK), pytest.approx(980 * cpu.TICK))


def test_summarize_medians_spread_and_ratio_per_round() -> None:
    runs = {
        "ours": [{"jobs_per_s": 12.0, "logs": "/x"}, {"jobs_per_s": 10.0}, {"jobs_per_s": 30.0}],
        "river-go": [{"jobs_per_s": 10.0}, {"jobs_per_s": 20.0}, {"jobs_per_s": 20.0}],
    }
    s = throughput.summarize(runs)
    assert s["ours"]["jobs_per_s"] == {"median": 12.0, "min": 10.0, "max": 30.0}
    assert "logs" not in s["ours"]
    assert s["ratio_ours_river_go"]["rounds"] == [1.2, 0.5, 1.5]
    assert s["ratio_ours_river_go"]["median"] == 1.2
    assert s["ratio_ours_river_go"]["min"] == 0.5


def test_summarize_without_the_peer_has_no_ratio() -> None:
    assert "ratio_ours_river_go" not in throughput.summarize({"ours": [{"jobs_per_s": 1.0}]})


def test_our_runner_runs_at_shipped_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOG_LEVEL", "WARNING")
    monkeypatch.setenv("CIVIC_FETCH_COOLDOWN", "0.5")
    monkeypatch.setenv("DB_MAX_CONNS", "9")
    env = burst.ours_env("postgresql://db", 1000, None)
    assert "LOG_LEVEL" not in env and "DB_MAX_CONNS" not in env
    assert {k for k in env if k.startswith("CIVIC_")} == {"CIVIC_KINDS_MODULES", "CIVIC_QUEUES"}
    assert env["CIVIC_QUEUES"] == "default=1000"
    assert burst.ours_env("postgresql://db", 10, "warning")["LOG_LEVEL"] == "warning"


RUNNER = "/x/job-runner/src/civic_runner"


@pytest.mark.parametrize(
    ("frames", "part"),
    [
        ([f"_work ({RUNNER}/producer.py:300)", "info (/usr/lib/python3.11/logging/__init__.py:1489)"], "logging"),
        ([f"_work ({RUNNER}/producer.py:300)", f"format ({RUNNER}/logs.py:20)"], "logging"),
        ([f"_work ({RUNNER}/producer.py:290)", "observe (/v/site-packages/prometheus_client/metrics.py:1)"], "metrics"),
        ([f"_fetch_loop ({RUNNER}/producer.py:250)", f"claim ({RUNNER}/driver.py:80)"], "claim statement"),
        (
            [f"claim ({RUNNER}/driver.py:80)", "execute (/v/site-packages/psycopg/cursor_async.py:1)"],
            "claim statement",
        ),
        ([f"run ({RUNNER}/completer.py:80)", f"_complete_plain ({RUNNER}/driver.py:140)"], "completion statement"),
        ([f"run ({RUNNER}/completer.py:100)"], "completer bookkeeping"),
        ([f"execute ({RUNNER}/executor.py:95)", f"decode_problem ({RUNNER}/job.py:50)"], "job decoding"),
        ([f"_work ({RUNNER}/producer.py:290)", f"plan_completion ({RUNNER}/outcome.py:60)"], "outcome planning"),
        ([f"_work ({RUNNER}/producer.py:290)", "benchmark (/x/bench/kinds.py:9)"], "worker + executor"),
        ([f"_start ({RUNNER}/producer.py:285)"], "producer: job start (coroutine + Task creation)"),
        ([f"_work ({RUNNER}/producer.py:280)"], "producer: job run wrapper"),
        ([f"run ({RUNNER}/watcher.py:90)"], "insert watcher"),
        (["_run_once (/usr/lib/python3.11/asyncio/base_events.py:1900)"], "event loop"),
        (
            [
                f"main ({RUNNER}/cli.py:250)",
                "run (/usr/lib/python3.11/asyncio/runners.py:190)",
                "_run_once (/a/b.py:1)",
            ],
            "event loop",
        ),
        (
            [f"main ({RUNNER}/cli.py:250)", f"Elector.run ({RUNNER}/elector.py:54)"],
            "runner: elector, maintenance, other",
        ),
        ([f"claim ({RUNNER}/driver.py:80)", "Connection.execute (/v/site-packages/psycopg/x.py:1)"], "claim statement"),
        (["getconn (/v/site-packages/psycopg_pool/pool_async.py:1)"], "psycopg, pool (other statements)"),
        (["_run_once (/a/asyncio/base_events.py:1)", "select (/a/selectors.py:468)"], profile_runner.WAITING),
        (["<module> (x.py:1)"], "other"),
    ],
)
def test_attribution(frames: list[str], part: str) -> None:
    assert profile_runner.attribute(frames) == part


def test_parse_collapsed_and_breakdown() -> None:
    text = (
        f"_run_once (/a/asyncio/base_events.py:1);_work ({RUNNER}/producer.py:300);info (/a/logging/__init__.py:1) 30\n"
        f"_run_once (/a/asyncio/base_events.py:1);_work ({RUNNER}/producer.py:280) 10\n"
        "\n"
        "select (/a/selectors.py:1) 60\n"
    )
    stacks = profile_runner.parse_collapsed(text)
    assert sum(n for _, n in stacks) == 100
    parts = profile_runner.breakdown(stacks)
    assert parts == {profile_runner.WAITING: 60, "logging": 30, "producer: job run wrapper": 10}


def test_render_has_a_row_per_round_the_medians_and_the_ratios() -> None:
    runs = {
        "ours": [{"jobs_per_s": 12.0, "cpu_s_per_1k": 0.05}, {"jobs_per_s": 10.0, "cpu_s_per_1k": 0.07}],
        "river-go": [{"jobs_per_s": 10.0}, {"jobs_per_s": 20.0}],
    }
    text = throughput.render(runs, throughput.summarize(runs))
    assert "| ours | 2 | 10 | 0.07 |" in text
    assert "| ours | median [min-max] | 11 [10-12] | 0.06 [0.05-0.07] |" in text
    assert text.endswith("ours / river-go per round: 1.20 / 0.50; median 0.85, min 0.50")


def test_round_trips_per_job_from_the_runners_metrics() -> None:
    a = {
        'civic_runner_claims_total{queue="default"}': 10.0,
        'civic_runner_claimed_jobs_total{queue="default"}': 8000.0,
        "civic_runner_completer_batch_size_count": 4.0,
        "civic_runner_completer_batch_size_sum": 6000.0,
    }
    b = {
        **a,
        'civic_runner_claims_total{queue="default"}': 2.0,
        'civic_runner_claimed_jobs_total{queue="default"}': 2000.0,
    }
    rt = profile_runner.per_job([a, b], 10_000)
    assert rt == {
        "claims_per_1k_jobs": 1.2,
        "jobs_per_claim": 10000 / 12,
        "completion_statements_per_1k_jobs": 0.8,
        "jobs_per_completion_statement": 1500.0,
    }


@pytest.mark.parametrize("variant", ["shipped", "locked"])
def test_the_ceiling_drives_the_runners_own_statements(variant: str) -> None:
    """bench/ceiling's pgbench script is the driver's claim and completion text, placeholders turned into
    pgbench variables, each statement on one line."""
    from civic_runner.driver import Driver

    from bench import ceiling

    script = ceiling.script(variant)
    claim, gset, complete = script.strip().split("\n")
    assert gset == "\\gset"
    assert "%(" not in script and "%s" not in script
    assert {":queue", ":limit", ":client_id", ":max_by"} <= set(re.findall(r":\w+", claim))
    assert {":ids", ":attempts"} <= set(re.findall(r":\w+", complete))
    assert ceiling.pgbench_sql(Driver("metadata").claim_sql) in claim
    if variant == "shipped":
        assert complete.rstrip(";") == ceiling.pgbench_sql(Driver("metadata").complete_plain_sql)


def test_parse_cpu_lines_splits_steal_and_idle_per_core() -> None:
    text = "cpu  100 5 20 800 50 3 2 40 0 0\ncpu0 60 0 10 300 10 0 0 30\ncpu1 40 5 10 500 40 3 2 10\nintr 1 2\n"
    stat = cpu.parse_cpu_lines(text)
    assert set(stat) == {"cpu", "cpu0", "cpu1"}
    assert stat["cpu"].steal == pytest.approx(40 * cpu.TICK)
    assert stat["cpu"].busy == pytest.approx(170 * cpu.TICK)  # steal counts as busy: the VM could not use it
    assert stat["cpu1"].idle == pytest.approx(540 * cpu.TICK)
    assert stat["cpu0"].total == pytest.approx(410 * cpu.TICK)


def test_wake_percentiles_in_microseconds() -> None:
    samples = [i / 1e6 for i in range(1, 101)]  # 1..100 µs
    p = wake.percentiles_us(samples)
    assert p["p50_us"] == pytest.approx(50.5)
    assert p["p99_us"] == pytest.approx(99.01)
    assert p["max_us"] == pytest.approx(100)


def test_latency_summary_is_per_runner_in_round_order() -> None:
    rounds = [
        {"code": "tree", "p50_ms": 4.0, "p99_ms": 10.0},
        {"code": "abc123", "p50_ms": 6.0, "p99_ms": 30.0},
        {"code": "abc123", "p50_ms": 5.0, "p99_ms": 20.0},
        {"code": "tree", "p50_ms": 3.0, "p99_ms": 12.0},
        {"code": "tree", "p50_ms": 9.0, "p99_ms": 40.0},
    ]
    s = latency.summarize(rounds)
    assert list(s) == ["tree", "abc123"]
    assert s["tree"] == {"rounds": 3, "median_p50_ms": 4.0, "median_p99_ms": 12.0}
    assert s["abc123"] == {"rounds": 2, "median_p50_ms": 5.5, "median_p99_ms": 25.0}


def test_latency_baseline_is_the_commits_runner_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(latency, "BASELINES", tmp_path)
    src = latency.baseline_source("HEAD")
    assert (src / "civic_runner" / "runner.py").is_file()
    assert src.parent.parent.parent == tmp_path  # <cache>/<full commit id>/job-runner/src
    assert re.fullmatch(r"[0-9a-f]{40}", src.parent.parent.name)
    with pytest.raises(subprocess.CalledProcessError):
        latency.baseline_source("no-such-revision-here")
