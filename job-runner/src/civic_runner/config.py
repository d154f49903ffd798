"""Runner settings: environment variables first (12-factor), command-line flags override.

Each setting is declared once here with its env name, default and help; cli.py turns the table
into flags so `--help` documents every variable.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from civic_runner.pooling import check_mode
from civic_runner.reindexer import DEFAULT_INDEXES

QUEUE_NAME_RE = re.compile(r"^(?:[a-z0-9])+(?:[_|\-]?[a-z0-9]+)*$")
DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:55432/civic"  # `make run`'s local database


@dataclass(frozen=True)
class Setting:
    name: str  # attribute and flag (--name-with-dashes)
    env: tuple[str, ...]  # first one set wins
    default: Any
    help: str
    type: type = str


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "database_url",
        ("DATABASE_URL",),
        DEFAULT_DATABASE_URL,
        "PostgreSQL connection URL for claims, completions and maintenance; may go through PgBouncer",
    ),
    Setting(
        "database_listen_url",
        ("DATABASE_LISTEN_URL",),
        "",
        "direct PostgreSQL URL (no transaction pooler) for the one LISTEN connection and the insert watcher's "
        "session lock; empty: DATABASE_URL, unless that goes through a pooler (then: poll only)",
    ),
    Setting(
        "db_pooler",
        ("CIVIC_DB_POOLER",),
        "auto",
        "does DATABASE_URL go through a transaction pooler (PgBouncer pool_mode=transaction)? transaction: no "
        "prepared statements, no LISTEN or session lock on it; session: direct or a session pooler; auto: "
        "detected per connection (a pooler's cancel key is not the server's pid) and treated as transaction",
    ),
    Setting("schema", ("RIVER_SCHEMA", "CIVIC_SCHEMA"), "metadata", "schema holding River's tables"),
    Setting(
        "queues",
        ("CIVIC_QUEUES",),
        "s3_signer=20,thumbnails=3",
        "queues to work and their concurrency, e.g. 's3_signer=20,thumbnails=3'",
    ),
    Setting(
        "client_id",
        ("CIVIC_CLIENT_ID",),
        "",
        "client id for attempted_by and river_leader (default: host + start time, as River)",
    ),
    Setting("db_max_conns", ("DB_MAX_CONNS",), 4, "database connections per process, LISTEN included (min 2)", int),
    Setting(
        "poll_only",
        ("CIVIC_POLL_ONLY",),
        False,
        "never LISTEN, not even on DATABASE_LISTEN_URL: queues are only polled (no insert watcher)",
        bool,
    ),
    Setting("fetch_poll_interval", ("CIVIC_FETCH_POLL_INTERVAL",), 1.0, "seconds between polls when idle", float),
    Setting(
        "insert_watch_interval",
        ("CIVIC_INSERT_WATCH_INTERVAL",),
        0.002,
        "seconds between looks for jobs inserted without NOTIFY (Civic OS's triggers), by one process per "
        "schema, which then notifies; 0: off",
        float,
    ),
    Setting(
        "control_poll_interval",
        ("CIVIC_CONTROL_POLL_INTERVAL",),
        60.0,
        "seconds between each queue's looks for cancel requests on its running jobs and for its paused state, "
        "so those sent while the listener was down are not lost (River: about a minute; poll-only mode: at most "
        "2); <=0: notifications only",
        float,
    ),
    Setting(
        "queue_report_interval",
        ("CIVIC_QUEUE_REPORT_INTERVAL",),
        600.0,
        "seconds between refreshes of each served queue's river_queue.updated_at, which keeps River's queue "
        "cleaner (24 h) from deleting it (River: 600); <=0: written at start only",
        float,
    ),
    Setting(
        "fetch_cooldown",
        ("CIVIC_FETCH_COOLDOWN",),
        0.002,
        "minimum seconds between two claims on one queue (River: 0.1; lower for latency)",
        float,
    ),
    Setting("job_timeout", ("CIVIC_JOB_TIMEOUT",), 60.0, "seconds before a job is cancelled (<=0: none)", float),
    Setting("shutdown_grace", ("CIVIC_SHUTDOWN_GRACE",), 25.0, "seconds running jobs get to finish on SIGTERM", float),
    Setting("exit_when_idle", ("CIVIC_EXIT_WHEN_IDLE",), False, "drain the queues, then exit 0 (Job mode)", bool),
    Setting(
        "idle_exit_after",
        ("CIVIC_IDLE_EXIT_AFTER",),
        2.0,
        "seconds of empty queues before --exit-when-idle exits",
        float,
    ),
    Setting("http_port", ("CIVIC_HTTP_PORT",), 8090, "port of /healthz, /readyz, /metrics (0: off)", int),
    Setting("http_host", ("CIVIC_HTTP_HOST",), "0.0.0.0", "address the HTTP endpoints bind to"),
    Setting("log_level", ("LOG_LEVEL", "CIVIC_LOG_LEVEL"), "INFO", "log level"),
    Setting(
        "job_log_rate",
        ("CIVIC_JOB_LOG_RATE",),
        10.0,
        "'job completed' lines per second and process, at most (a burst of as many passes at once); completions "
        "beyond are counted in one 'jobs completed' summary line per CIVIC_JOB_LOG_SUMMARY_INTERVAL; <0: a line "
        "for every job; 0: summaries only. Failures, snoozes and interrupts are always logged one by one",
        float,
    ),
    Setting(
        "job_log_summary_interval",
        ("CIVIC_JOB_LOG_SUMMARY_INTERVAL",),
        10.0,
        "seconds between 'jobs completed' summary lines (written only when some completion had no line of its own)",
        float,
    ),
    Setting("maintenance", ("CIVIC_MAINTENANCE",), True, "take part in leader election and maintenance", bool),
    Setting("rescue_after", ("CIVIC_RESCUE_AFTER",), 3600.0, "seconds before a running job counts as stuck", float),
    Setting("rescuer_interval", ("CIVIC_RESCUER_INTERVAL",), 30.0, "seconds between rescuer runs", float),
    Setting("scheduler_interval", ("CIVIC_SCHEDULER_INTERVAL",), 5.0, "seconds between scheduler runs", float),
    Setting("cleaner_interval", ("CIVIC_CLEANER_INTERVAL",), 30.0, "seconds between cleaner runs", float),
    Setting(
        "completed_retention", ("CIVIC_COMPLETED_RETENTION",), 86400.0, "keep completed jobs (s; <0 forever)", float
    ),
    Setting(
        "cancelled_retention", ("CIVIC_CANCELLED_RETENTION",), 86400.0, "keep cancelled jobs (s; <0 forever)", float
    ),
    Setting(
        "discarded_retention", ("CIVIC_DISCARDED_RETENTION",), 604800.0, "keep discarded jobs (s; <0 forever)", float
    ),
    Setting("elect_interval", ("CIVIC_ELECT_INTERVAL",), 5.0, "seconds between leader (re)elections", float),
    Setting(
        "reindexer",
        ("CIVIC_REINDEXER",),
        True,
        "the leader rebuilds River's river_job indexes (REINDEX INDEX CONCURRENTLY, one at a time), as River's",
        bool,
    ),
    Setting(
        "reindex_interval",
        ("CIVIC_REINDEX_INTERVAL",),
        86400.0,
        "seconds between reindexer runs, at multiples of it since 1970-01-01 UTC (River: daily at 00:00 UTC)",
        float,
    ),
    Setting(
        "reindex_timeout",
        ("CIVIC_REINDEX_TIMEOUT",),
        60.0,
        "seconds each index's rebuild may take before it is cancelled (River: 60)",
        float,
    ),
    Setting(
        "reindex_indexes",
        ("CIVIC_REINDEX_INDEXES",),
        ",".join(DEFAULT_INDEXES),
        "comma-separated indexes (in the schema) the reindexer rebuilds (River's default list of seven)",
    ),
    Setting(
        "kinds_modules",
        ("CIVIC_KINDS_MODULES",),
        "civic_runner.pipeline",
        "comma-separated modules that register job kinds (default: the file pipeline's s3_presign, thumbnail_generate)",
    ),
)


def parse_bool(value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def convert(setting: Setting, raw: Any) -> Any:
    if not isinstance(raw, str):
        return raw
    if setting.type is bool:
        return parse_bool(raw)
    return setting.type(raw)


def from_env(env: dict[str, str] | None = None) -> dict[str, Any]:
    env = dict(os.environ) if env is None else env
    values: dict[str, Any] = {}
    if not env.get("CIVIC_QUEUES") and env.get("THUMBNAIL_MAX_WORKERS"):
        # Civic OS's Go worker sizes the thumbnails queue with THUMBNAIL_MAX_WORKERS (s3_signer: 20).
        env = {**env, "CIVIC_QUEUES": f"s3_signer=20,thumbnails={int(env['THUMBNAIL_MAX_WORKERS'])}"}
    for s in SETTINGS:
        raw: Any = s.default
        for name in s.env:
            if env.get(name):
                raw = env[name]
                break
        try:
            values[s.name] = convert(s, raw)
        except ValueError as e:
            raise ValueError(f"{s.env[0]}: {e}") from e
    return values


def parse_queues(spec: str) -> dict[str, int]:
    """'a=5,b' -> {'a': 5, 'b': 10}; names validated with River's rules."""
    queues: dict[str, int] = {}
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        name, _, n = part.partition("=")
        name = name.strip()
        if not QUEUE_NAME_RE.match(name) or len(name) > 64:
            raise ValueError(f"invalid queue name {name!r} (River: lowercase letters, digits, '_' or '-', <= 64)")
        workers = int(n) if n.strip() else 10
        if not 1 <= workers <= 10_000:
            raise ValueError(f"queue {name}: concurrency must be 1..10000, got {workers}")
        queues[name] = workers
    if not queues:
        raise ValueError("no queues configured")
    return queues


def default_client_id(host: str | None = None, now: datetime | None = None) -> str:
    """River's default: host with '.' -> '_' (<= 60 chars) + '_' + UTC time to the microsecond."""
    host = (host or socket.gethostname()).replace(".", "_")[:60]
    now = now or datetime.now(UTC)
    return f"{host}_{now.strftime('%Y_%m_%dT%H_%M_%S_%f')}"


@dataclass(frozen=True)
class RunnerConfig:
    database_url: str = DEFAULT_DATABASE_URL
    database_listen_url: str = ""
    db_pooler: str = "auto"
    schema: str = "metadata"
    queues: dict[str, int] = field(default_factory=lambda: {"s3_signer": 20, "thumbnails": 3})
    client_id: str = ""
    db_max_conns: int = 4
    poll_only: bool = False
    fetch_poll_interval: float = 1.0
    insert_watch_interval: float = 0.002
    control_poll_interval: float = 60.0
    queue_report_interval: float = 600.0
    fetch_cooldown: float = 0.002
    job_timeout: float = 60.0
    shutdown_grace: float = 25.0
    exit_when_idle: bool = False
    idle_exit_after: float = 2.0
    http_port: int = 8090
    http_host: str = "0.0.0.0"
    log_level: str = "INFO"
    job_log_rate: float = 10.0
    job_log_summary_interval: float = 10.0
    maintenance: bool = True
    rescue_after: float = 3600.0
    rescuer_interval: float = 30.0
    scheduler_interval: float = 5.0
    cleaner_interval: float = 30.0
    completed_retention: float = 86400.0
    cancelled_retention: float = 86400.0
    discarded_retention: float = 604800.0
    elect_interval: float = 5.0
    reindexer: bool = True
    reindex_interval: float = 86400.0
    reindex_timeout: float = 60.0
    reindex_indexes: str = ",".join(DEFAULT_INDEXES)
    kinds_modules: str = "civic_runner.pipeline"

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> RunnerConfig:
        v = dict(values)
        if isinstance(v.get("queues"), str):
            v["queues"] = parse_queues(v["queues"])
        if not v.get("client_id"):
            v["client_id"] = default_client_id()
        if int(v.get("db_max_conns", 4)) < 2:
            raise ValueError("DB_MAX_CONNS must be at least 2 (one LISTEN, one for work)")
        for name, env in (("reindex_interval", "CIVIC_REINDEX_INTERVAL"), ("reindex_timeout", "CIVIC_REINDEX_TIMEOUT")):
            if float(v.get(name, 1.0)) <= 0:
                raise ValueError(f"{env} must be more than 0 (CIVIC_REINDEXER=false turns the reindexer off)")
        if float(v.get("job_log_summary_interval", 10.0)) <= 0:
            raise ValueError("CIVIC_JOB_LOG_SUMMARY_INTERVAL must be more than 0")
        try:
            v["db_pooler"] = check_mode(str(v.get("db_pooler", "auto")))
        except ValueError as e:
            raise ValueError(f"CIVIC_DB_POOLER {e}") from e
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: val for k, val in v.items() if k in known})
