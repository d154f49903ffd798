"""Which completions get a `job completed` line, and the summary of the rest (civic_runner.joblog)."""

from __future__ import annotations

import json
import re

import pytest
from civic_runner.joblog import JobLogSampler

from tests.docs.markdown import ROOT

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("rate", "times", "expected"),
    [
        # the first `rate` pass at once (the bucket starts full), then one per 1/rate seconds
        (10.0, [0.0] * 12, [True] * 10 + [False] * 2),
        (10.0, [0.0] * 10 + [0.05, 0.1, 0.15], [True] * 10 + [False, True, False]),
        (2.0, [0.0, 0.0, 0.0, 10.0, 10.0, 10.0], [True, True, False, True, True, False]),  # refills to `rate`, no more
        (0.5, [0.0, 0.0, 1.0, 2.0], [True, False, False, True]),  # under 1/s: a line per 2 s
        (0.0, [0.0, 1.0, 100.0], [False, False, False]),  # summaries only
        (-1.0, [0.0] * 50, [True] * 50),  # every job
    ],
)
def test_admit(rate: float, times: list[float], expected: list[bool]) -> None:
    s = JobLogSampler(rate)
    assert [s.admit(t, "k", "q") for t in times] == expected


def test_summary_counts_every_completion_and_starts_afresh() -> None:
    s = JobLogSampler(3.0)
    for i in range(10):
        s.admit(0.0, "thumbnail_generate" if i % 2 else "s3_presign", "q1" if i < 8 else "q2")
    summary = s.take_summary(2.0)
    assert summary == {
        "jobs": 10,
        "logged_each": 3,
        "not_logged_each": 7,
        "kinds": {"s3_presign": 3, "thumbnail_generate": 4},
        "queues": ["q1", "q2"],
        "interval_s": 2.0,
        "per_second": 5.0,
    }
    assert s.take_summary(2.0) is None  # nothing since
    assert s.admit(100.0, "k", "q")
    assert s.take_summary(1.0) is None  # every completion had its line: no summary


def test_the_operations_page_shows_the_summary_as_the_runner_writes_it() -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    [block] = [b for b in re.findall(r"```json\n(.*?)```", text, re.S) if '"jobs completed"' in b]
    shown = json.loads(block)
    s = JobLogSampler(0.0)
    s.count_unlogged("k", "q")
    fields = s.take_summary(1.0)
    assert fields is not None
    assert set(shown) == {"level", "logger", "event", *fields}, "docs/operations.md: the summary line's fields"
    assert shown["jobs"] == shown["logged_each"] + shown["not_logged_each"] == sum(shown["kinds"].values())
