"""Table tests of the pure decisions behind River v0.48 to v0.51.2 parity: the completer's skipped rows, the
decoder, what `trace` holds, and the producers' control poll."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from civic_runner.completer import skip_note
from civic_runner.config import RunnerConfig, from_env
from civic_runner.errors import JobCancel, JobSnooze, PermanentError
from civic_runner.executor import outcome_for_exception, worker_traceback
from civic_runner.job import Job, decode_problem, pg_micros
from civic_runner.producer import control_actions, control_poll_interval

pytestmark = pytest.mark.unit

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("state", "level", "says"),
    [
        ("running", logging.INFO, "running another attempt"),
        ("pending", logging.INFO, "moved to pending"),
        ("missing", logging.WARNING, "no longer exists"),
        ("completed", logging.WARNING, "no longer running"),
        ("cancelled", logging.WARNING, "no longer running"),
        ("available", logging.WARNING, "no longer running"),
    ],
)
def test_skip_note(state: str, level: int, says: str) -> None:
    got_level, note = skip_note(state)
    assert got_level == level and says in note


def make_job(args_json: str = "{}", metadata_json: str = "{}") -> Job:
    return Job(1, "k", "q", args_json, 1, 25, 1, metadata_json, 0, *[pg_micros(NOW)] * 3)


@pytest.mark.parametrize(
    ("args_json", "metadata_json", "problem"),
    [
        ("{}", "{}", None),
        ('["a list is decodable"]', '"so is a string"', None),
        ("null", "{}", None),
        ('{"n": ' + "9" * 5000 + "}", "{}", "cannot decode the job's args: ValueError: Exceeds the limit"),
        ("{}", "[" * 3000 + "]" * 3000, "cannot decode the job's metadata: RecursionError"),
        ("not json", "{}", "cannot decode the job's args: JSONDecodeError"),
    ],
)
def test_decode_problem(args_json: str, metadata_json: str, problem: str | None) -> None:
    job = make_job(args_json, metadata_json)
    got = decode_problem(job)
    if problem is None:
        assert got is None
        assert job.args is job.args and job.metadata is job.metadata, "decoded once, kept for the worker"
    else:
        assert got is not None and got.startswith(problem), got


def _raise_in_worker() -> BaseException:
    def worker() -> None:
        raise ValueError("boom")

    try:
        worker()
    except ValueError as exc:
        return exc
    raise AssertionError("unreachable")


def test_an_ordinary_exception_records_the_workers_traceback() -> None:
    out = outcome_for_exception(_raise_in_worker())
    assert out.message == "ValueError: boom"
    assert out.trace.startswith("Traceback (most recent call last):\n")
    assert ", in worker\n" in out.trace and out.trace.endswith("ValueError: boom\n")


def test_trace_keeps_the_end_of_a_long_traceback() -> None:
    exc = _raise_in_worker()
    assert worker_traceback(exc, limit=30) == worker_traceback(exc)[-30:]
    assert worker_traceback(exc, limit=30).endswith("ValueError: boom\n")


@pytest.mark.parametrize("exc", [JobCancel("stop"), PermanentError("bad input"), JobSnooze(5)])
def test_the_workers_own_signals_have_no_trace(exc: BaseException) -> None:
    assert outcome_for_exception(exc).trace == ""


@pytest.mark.parametrize(
    ("paused", "queue_paused", "requested", "cancellable", "expected"),
    [
        (False, False, [], [1, 2], (None, [])),
        (False, True, [], [], (True, [])),  # paused while the listener was down
        (True, False, [], [], (False, [])),  # resumed meanwhile
        (True, True, [], [], (None, [])),
        (False, None, [], [], (None, [])),  # no river_queue row: nothing to go by
        (True, None, [], [], (None, [])),
        (False, False, [2, 3], [1, 2], (None, [2])),  # 3 is not (or no longer) ours to cancel
        (False, True, [2, 1, 2], [1, 2], (True, [1, 2])),
    ],
)
def test_control_actions(
    paused: bool,
    queue_paused: bool | None,
    requested: list[int],
    cancellable: list[int],
    expected: tuple[bool | None, list[int]],
) -> None:
    assert control_actions(paused, queue_paused, requested, cancellable) == expected


@pytest.mark.parametrize(
    ("settings", "interval"),
    [
        ({}, 60.0),  # River: about once a minute beside LISTEN
        ({"control_poll_interval": 5}, 5.0),
        ({"poll_only": True}, 2.0),  # the poll is all a poll-only runner has
        ({"poll_only": True, "control_poll_interval": 0.5}, 0.5),
        ({"control_poll_interval": 0}, 0.0),
        ({"poll_only": True, "control_poll_interval": -1}, 0.0),
    ],
)
def test_control_poll_interval(settings: dict[str, Any], interval: float) -> None:
    assert control_poll_interval(RunnerConfig.from_values(settings)) == interval


def test_queue_upkeep_defaults_are_rivers() -> None:
    values = from_env({})
    assert values["control_poll_interval"] == 60.0 and values["queue_report_interval"] == 600.0
    assert from_env({"CIVIC_QUEUE_REPORT_INTERVAL": "30"})["queue_report_interval"] == 30.0
