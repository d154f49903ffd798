"""Prometheus metrics of the runner (one registry per process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from civic_runner.loophistogram import LoopHistogram

REGISTRY = CollectorRegistry(auto_describe=True)

JOBS = Counter(
    "civic_runner_jobs_total",
    "Jobs finished, by kind, queue and outcome",
    ["kind", "queue", "outcome"],
    registry=REGISTRY,
)
# Observed once per job, on the event loop's thread: without prometheus_client's lock (loophistogram.py).
DURATION = LoopHistogram(
    "civic_runner_job_duration_seconds",
    "Time spent in the worker, by kind",
    ["kind", "queue"],
    registry=REGISTRY,
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
)
CLAIM_LAG = LoopHistogram(
    "civic_runner_claim_lag_seconds",
    "From scheduled_at (when the job became due) to its start",
    ["queue"],
    registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60),
)
IN_FLIGHT = Gauge("civic_runner_jobs_in_flight", "Jobs running now", ["queue"], registry=REGISTRY)
CLAIMS = Counter("civic_runner_claims_total", "Claim statements run", ["queue"], registry=REGISTRY)
CLAIMED = Counter("civic_runner_claimed_jobs_total", "Jobs claimed", ["queue"], registry=REGISTRY)
COMPLETER_BATCH = Histogram(
    "civic_runner_completer_batch_size",
    "Jobs per completion statement",
    registry=REGISTRY,
    buckets=(1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 5000),
)
COMPLETER_BACKLOG = Gauge("civic_runner_completer_backlog", "Outcomes waiting to be written", registry=REGISTRY)
DB_ERRORS = Counter("civic_runner_db_errors_total", "Database errors, by component", ["component"], registry=REGISTRY)
IS_LEADER = Gauge("civic_runner_is_leader", "1 while this process is the elected leader", registry=REGISTRY)
MAINTENANCE = Counter(
    "civic_runner_maintenance_jobs_total", "Jobs touched by maintenance", ["service", "action"], registry=REGISTRY
)
CONTROL_POLL_ACTIONS = Counter(
    "civic_runner_control_poll_actions_total",
    "Cancels, pauses and resumes the producers' poll found before any notification did (one lost or never sent)",
    ["queue", "action"],
    registry=REGISTRY,
)
REINDEX = Counter(
    "civic_runner_reindex_total",
    "Indexes the reindexer handled, by index and result (ok, missing, timeout, failed, denied)",
    ["index", "result"],
    registry=REGISTRY,
)
REINDEX_SECONDS = Histogram(
    "civic_runner_reindex_duration_seconds",
    "Time of each successful REINDEX INDEX CONCURRENTLY",
    ["index"],
    registry=REGISTRY,
    buckets=(0.01, 0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600),
)
REINDEX_LEFTOVERS = Counter(
    "civic_runner_reindex_leftovers_dropped_total",
    "Leftovers of failed concurrent reindexes (<index>_ccnew/_ccold) the reindexer dropped",
    ["index"],
    registry=REGISTRY,
)
REINDEX_LAST_RUN = Gauge(
    "civic_runner_reindex_last_run_timestamp_seconds",
    "When this process's reindexer last ran (Unix time; 0: never)",
    registry=REGISTRY,
)
LOST_CLAIMS = Counter(
    "civic_runner_lost_claims_total",
    "Jobs given back because the reply of the claim that took them was lost (a connection cut mid-claim)",
    ["queue"],
    registry=REGISTRY,
)
