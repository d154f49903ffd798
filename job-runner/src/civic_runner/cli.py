"""`civic-runner`: run, migrate, enqueue, jobs, stats."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg

from civic_runner import logs, pooling
from civic_runner.admin import Admin
from civic_runner.config import SETTINGS, RunnerConfig, Setting, from_env
from civic_runner.migrate import CIVIC, LATEST, MAIN, Migrator
from civic_runner.registry import default_registry
from civic_runner.runner import Runner

log = logging.getLogger("civic_runner.cli")

COMMON = ("database_url", "schema", "log_level")


def _flag(s: Setting) -> str:
    return "--" + s.name.replace("_", "-")


def _add_setting(p: argparse.ArgumentParser, s: Setting, env_values: dict[str, Any]) -> None:
    env = " / ".join(s.env)
    help_text = f"{s.help} [env {env}; default {s.default!r}]"
    if s.type is bool:
        p.add_argument(
            _flag(s), dest=s.name, action=argparse.BooleanOptionalAction, default=env_values[s.name], help=help_text
        )
    else:
        p.add_argument(_flag(s), dest=s.name, type=s.type, default=env_values[s.name], help=help_text)


def build_parser(env_values: dict[str, Any] | None = None) -> argparse.ArgumentParser:
    values = from_env() if env_values is None else env_values
    by_name = {s.name: s for s in SETTINGS}
    parser = argparse.ArgumentParser(
        prog="civic-runner",
        description="River-compatible job runner for the Civic OS file pipeline. "
        "Every option can also be set by the environment variable named in its help.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        for name in COMMON:
            _add_setting(p, by_name[name], values)

    run = sub.add_parser("run", help="work the configured queues until SIGTERM (or idle, with --exit-when-idle)")
    for s in SETTINGS:
        _add_setting(run, s, values)

    mig = sub.add_parser("migrate", help="apply River's schema and the Civic OS file tables")
    common(mig)
    _add_setting(mig, by_name["db_pooler"], values)
    mig.add_argument(
        "--target",
        type=int,
        default=None,
        help=f"River schema version to migrate to (latest {LATEST[MAIN]}; Civic OS runs 6, River 0.47's CLI knows "
        "up to 7). Default: the latest "
        "for a schema civic-runner creates or created, and no change to a River schema someone else created",
    )
    mig.add_argument(
        "--river-only", action="store_true", help="only River's tables; leave Civic OS's file tables and triggers alone"
    )
    mig.add_argument("--down", action="store_true", help="revert --line down to --target instead")
    mig.add_argument("--line", choices=[MAIN, CIVIC], default=MAIN, help="line to revert with --down")
    mig.add_argument("--status", action="store_true", help="print the current versions and exit")

    enq = sub.add_parser("enqueue", help="insert jobs (and notify their queue)")
    common(enq)
    enq.add_argument("kind")
    enq.add_argument("--args", default="{}", help="job args as JSON")
    enq.add_argument("--queue", default="default")
    enq.add_argument("--priority", type=int, default=1)
    enq.add_argument("--max-attempts", type=int, default=25)
    enq.add_argument("--count", type=int, default=1)
    enq.add_argument("--scheduled-in", type=float, default=0.0, help="seconds from now")
    enq.add_argument("--tag", action="append", default=[])

    jobs = sub.add_parser("jobs", help="inspect and manage jobs")
    jsub = jobs.add_subparsers(dest="jobs_command", required=True)
    jl = jsub.add_parser("list", help="newest jobs first")
    common(jl)
    jl.add_argument("--state")
    jl.add_argument("--queue")
    jl.add_argument("--kind")
    jl.add_argument("--limit", type=int, default=50)
    jl.add_argument("--json", action="store_true")
    for name, text in (
        ("show", "one job, whole"),
        ("retry", "make a job available again now"),
        ("cancel", "cancel a job (a running one through its runner)"),
    ):
        p = jsub.add_parser(name, help=text)
        common(p)
        p.add_argument("id", type=int)

    st = sub.add_parser("stats", help="depth by queue and state, latency percentiles, discarded jobs, table bloat")
    common(st)
    st.add_argument("--window", type=float, default=3600.0, help="seconds of completed jobs for latency")
    st.add_argument("--json", action="store_true")
    return parser


def _connect(args: argparse.Namespace) -> psycopg.Connection[Any]:
    # Short-lived: preparing saves nothing, and a transaction pooler (PgBouncer) cannot keep them.
    return psycopg.connect(args.database_url, autocommit=True, prepare_threshold=None)


def _dump(obj: Any) -> str:
    return json.dumps(obj, indent=2, default=str)


def cmd_run(args: argparse.Namespace) -> int:
    cfg = RunnerConfig.from_values(vars(args))
    # Kinds modules read their settings from the environment: give them the flags' values too.
    os.environ["DATABASE_URL"] = cfg.database_url
    os.environ["RIVER_SCHEMA"] = cfg.schema
    for module in filter(None, (m.strip() for m in cfg.kinds_modules.split(","))):
        importlib.import_module(module)
    if not default_registry.kinds():
        log.warning("no job kinds registered: every job claimed will fail as unknown (set CIVIC_KINDS_MODULES)")
    return asyncio.run(Runner(cfg, default_registry).run())


def cmd_migrate(args: argparse.Namespace) -> int:
    with _connect(args) as conn:
        mode = pooling.check_mode(args.db_pooler)
        if not args.status and (mode == "transaction" or (mode == "auto" and pooling.detect_sync(conn))):
            # Its advisory lock spans the steps' transactions: a transaction pooler would hand the lock and
            # the steps to different sessions (and leave the lock held in one of them).
            raise RuntimeError(
                "migrate needs a direct PostgreSQL connection, and DATABASE_URL goes through a connection pooler "
                "(PgBouncer, or CIVIC_DB_POOLER=transaction): give it the direct URL (DATABASE_LISTEN_URL's); "
                "CIVIC_DB_POOLER=session if the pooler keeps sessions"
            )
        m = Migrator(conn, args.schema)
        if args.status:
            print(_dump({"schema": args.schema, MAIN: m.current(MAIN), CIVIC: m.current(CIVIC)}))
            return 0
        report: dict[str, Any] = {"schema": args.schema}
        if args.down:
            if args.target is None:
                print("--down needs --target (the version to revert to)", file=sys.stderr)
                return 2
            done = m.down(args.line, args.target)
            report["reverted"] = [f"{x.line}/{x.version:03d}_{x.name}" for x in done]
        else:
            done = m.up(args.target, civic=not args.river_only)
            assert m.decision is not None and m.detected is not None
            report["detected"] = {MAIN: m.detected[0], "river_schema_origin": m.detected[1]}
            report["decided"] = m.decision.reason
            if m.civic_note:
                report["file_tables"] = m.civic_note
            report["applied"] = [f"{x.line}/{x.version:03d}_{x.name}" for x in done]
        report.update({MAIN: m.current(MAIN), CIVIC: m.current(CIVIC)})
        print(_dump(report))
    return 0


def cmd_enqueue(args: argparse.Namespace) -> int:
    try:
        job_args = json.loads(args.args)
    except json.JSONDecodeError as exc:
        print(f"--args is not valid JSON: {exc}", file=sys.stderr)
        return 2
    at = datetime.now(UTC) + timedelta(seconds=args.scheduled_in) if args.scheduled_in > 0 else None
    with _connect(args) as conn:
        ids = Admin(conn, args.schema).enqueue(
            args.kind,
            job_args,
            queue=args.queue,
            priority=args.priority,
            max_attempts=args.max_attempts,
            scheduled_at=at,
            tags=args.tag,
            count=args.count,
        )
    print(_dump({"inserted": len(ids), "ids": ids[:100]}))
    return 0


def cmd_jobs(args: argparse.Namespace) -> int:
    with _connect(args) as conn:
        admin = Admin(conn, args.schema)
        if args.jobs_command == "list":
            rows = admin.list(args.state, args.queue, args.kind, args.limit)
            if args.json:
                print(_dump(rows))
            else:
                print(f"{'ID':>10} {'STATE':<10} {'QUEUE':<16} {'KIND':<24} {'ATTEMPT':>7}  CREATED")
                for r in rows:
                    print(
                        f"{r['id']:>10} {r['state']:<10} {r['queue']:<16} {r['kind']:<24} "
                        f"{r['attempt']:>3}/{r['max_attempts']:<3}  {r['created_at']:%Y-%m-%d %H:%M:%S}"
                    )
            return 0
        fn = {"show": admin.show, "retry": admin.retry, "cancel": admin.cancel}[args.jobs_command]
        row = fn(args.id)
        if row is None:
            print(f"job {args.id} not found" + (" or running" if args.jobs_command == "retry" else ""), file=sys.stderr)
            return 1
        print(_dump(row))
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    with _connect(args) as conn:
        stats = Admin(conn, args.schema).stats(args.window)
    if args.json:
        print(_dump(stats))
        return 0
    print("Depth by queue and state")
    for queue, states in stats["depth"].items():
        print(f"  {queue:<20} " + "  ".join(f"{k}={v}" for k, v in sorted(states.items())))
    print(f"Latency of jobs completed in the last {args.window:.0f}s (seconds)")
    for queue, lat in stats["latency"].items():
        t, w = lat["insert_to_completed_s"], lat["queue_wait_s"]
        print(
            f"  {queue:<20} n={lat['completed']}  insert->completed p50={t['p50']:.4f} p95={t['p95']:.4f} "
            f"p99={t['p99']:.4f}  wait p50={w['p50']:.4f} p99={w['p99']:.4f}"
        )
    print("Recently discarded")
    for r in stats["discarded_recent"]:
        print(f"  {r['id']:>10} {r['queue']:<16} {r['kind']:<24} {r['last_error']}")
    t = stats["table"]
    if t:
        print(
            f"river_job: live={t['n_live_tup']} dead={t['n_dead_tup']} ({t['dead_pct']}% dead) "
            f"size={t['total_bytes'] / 1e6:.1f} MB last_autovacuum={t['last_autovacuum']}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except ValueError as exc:  # a malformed environment variable
        print(f"civic-runner: {exc}", file=sys.stderr)
        return 2
    logs.setup(args.log_level)
    handlers = {"run": cmd_run, "migrate": cmd_migrate, "enqueue": cmd_enqueue, "jobs": cmd_jobs, "stats": cmd_stats}
    try:
        return handlers[args.command](args)
    except psycopg.OperationalError as exc:
        print(f"civic-runner: cannot reach the database: {str(exc).strip()}", file=sys.stderr)
        return 3
    except (ValueError, RuntimeError) as exc:
        print(f"civic-runner: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
