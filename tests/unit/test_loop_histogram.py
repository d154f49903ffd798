"""The runner's lock-free histogram exposes exactly what prometheus_client's Histogram would."""

from __future__ import annotations

import threading

import pytest
from civic_runner.loophistogram import LoopHistogram
from prometheus_client import CollectorRegistry, Histogram, generate_latest

pytestmark = pytest.mark.unit

BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)


@pytest.mark.parametrize(
    "observations",
    [
        [],
        [0.0],
        [0.001],  # on a bound: counted in that bucket (le)
        [0.0010001, 0.005, 0.0049],
        [300.0, 301.0, 1e9],  # above the last bound: +Inf only
        [0.0002, 0.7, 0.7, 3.0, 12.5, 0.03, 0.09, 59.0],
    ],
)
def test_exposition_is_prometheus_clients(observations: list[float]) -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    a = LoopHistogram("civic_test_seconds", "a test", ["kind", "queue"], BUCKETS, ours)
    b = Histogram("civic_test_seconds", "a test", ["kind", "queue"], registry=theirs, buckets=BUCKETS)
    for i, value in enumerate(observations):
        labels = ("thumbnail" if i % 2 else "presign", "files")
        a.labels(*labels).observe(value)
        b.labels(*labels).observe(value)
    a.labels("noop", "default")  # a child without observations is exposed with zeros, as theirs
    b.labels("noop", "default")

    def lines(registry: CollectorRegistry) -> list[str]:
        # prometheus_client's Histogram also exposes a _created sample; ours has no creation time.
        text = generate_latest(registry).decode()
        return sorted(line for line in text.splitlines() if "_created" not in line)

    assert lines(ours) == lines(theirs)


def test_label_count_is_checked() -> None:
    h = LoopHistogram("civic_test2_seconds", "a test", ["queue"], BUCKETS, CollectorRegistry())
    with pytest.raises(ValueError, match="takes labels"):
        h.labels("a", "b")


def test_a_scrape_during_observations_sees_consistent_buckets() -> None:
    registry = CollectorRegistry()
    h = LoopHistogram("civic_test3_seconds", "a test", ["queue"], BUCKETS, registry)
    child = h.labels("q")
    stop = threading.Event()
    scrapes: list[bool] = []  # per scrape: buckets cumulative and the count equal to +Inf

    def scrape() -> None:
        while not stop.is_set():
            for metric in registry.collect():
                samples = {(s.name, s.labels.get("le")): s.value for s in metric.samples}
                bucket_values = [v for (name, le), v in samples.items() if name.endswith("_bucket")]
                count = samples[("civic_test3_seconds_count", None)]
                scrapes.append(bucket_values == sorted(bucket_values) and count == bucket_values[-1])

    thread = threading.Thread(target=scrape)
    thread.start()
    try:
        for i in range(200_000):
            child.observe((i % 1000) / 100)
    finally:
        stop.set()
        thread.join()
    assert sum(child.counts) == 200_000
    assert scrapes and all(scrapes), f"{scrapes.count(False)} of {len(scrapes)} scrapes inconsistent"
