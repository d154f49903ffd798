"""Prometheus metrics of the operator."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

DECISIONS = Counter(
    "civic_operator_scale_decisions_total",
    "Scale decisions that changed replicas",
    ["namespace", "pool", "direction"],
    registry=REGISTRY,
)
DESIRED = Gauge("civic_operator_desired_replicas", "spec.replicas", ["namespace", "pool"], registry=REGISTRY)
READY = Gauge("civic_operator_ready_replicas", "Ready runner pods", ["namespace", "pool"], registry=REGISTRY)
DEPTH = Gauge("civic_operator_queue_depth", "Depth counted for scaling", ["namespace", "pool"], registry=REGISTRY)
OLDEST_AVAILABLE = Gauge(
    "civic_operator_oldest_available_seconds",
    "Age of the oldest available job on the pool's queues (0: none available)",
    ["namespace", "pool"],
    registry=REGISTRY,
)
STATS_LATENCY = Histogram(
    "civic_operator_stats_query_seconds",
    "Queue stats query time",
    ["namespace", "pool"],
    registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
STATS_ERRORS = Counter(
    "civic_operator_stats_errors_total", "Failed queue stats queries", ["namespace", "pool"], registry=REGISTRY
)
CONNECTION_BUDGET = Gauge(
    "civic_operator_connection_budget",
    "Connections the pools of a database server may hold together (-1: unknown, not capped)",
    ["server"],
    registry=REGISTRY,
)
CONNECTIONS_USED = Gauge(
    "civic_operator_budget_connections_used",
    "Connections the pools of a database server hold at most (replicas x connections per pod)",
    ["server"],
    registry=REGISTRY,
)
CONNECTIONS_WANTED = Gauge(
    "civic_operator_budget_connections_wanted",
    "Connections the pools of a database server would hold at the replicas their load asks for",
    ["server"],
    registry=REGISTRY,
)
BUDGET_CAPPED = Gauge(
    "civic_operator_budget_capped_replicas",
    "Replicas the connection budget withholds from a pool (wanted - granted)",
    ["namespace", "pool"],
    registry=REGISTRY,
)
