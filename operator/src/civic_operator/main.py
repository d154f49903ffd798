"""`civic-operator`: runs the kopf operator with production settings, liveness and metrics endpoints."""

from __future__ import annotations

import argparse
import logging
import os
import random
import sys

import kopf
from prometheus_client import start_http_server

from civic_operator import kube, ledger, logs
from civic_operator.metrics import REGISTRY
from civic_operator.peering import PeeringView, own_identity


def peering_priority(value: str, rng: random.Random | None = None) -> int:
    """An integer, or "random": kopf pauses every replica when two share the highest priority, so each
    replica of a Deployment needs its own."""
    if value.strip().lower() == "random":
        return (rng or random.SystemRandom()).randrange(1, 2**31)
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"peering priority must be an integer or 'random', not {value!r}") from None


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(prog="civic-operator", description=__doc__)
    p.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[n for n in env("WATCH_NAMESPACES", "").split(",") if n],
        help="namespace to watch (repeatable) [env WATCH_NAMESPACES, comma-separated]; default: all",
    )
    p.add_argument(
        "--liveness-port",
        type=int,
        default=int(env("LIVENESS_PORT", "8080")),
        help="port of /healthz (0: off) [env LIVENESS_PORT]",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=int(env("METRICS_PORT", "9090")),
        help="port of /metrics (0: off) [env METRICS_PORT]",
    )
    p.add_argument(
        "--peering",
        default=env("PEERING_NAME", "civic-operator"),
        help="kopf peering object: with several replicas only the highest priority one acts [env PEERING_NAME]",
    )
    p.add_argument(
        "--standalone",
        action="store_true",
        default=env("STANDALONE", "") in ("1", "true"),
        help="no peering (a single replica) [env STANDALONE]",
    )
    p.add_argument(
        "--priority",
        type=peering_priority,
        default=env("PEERING_PRIORITY", "0"),
        help="peering priority: an integer or 'random' [env PEERING_PRIORITY; the chart uses 'random']",
    )
    p.add_argument(
        "--peering-lifetime",
        type=int,
        default=int(env("PEERING_LIFETIME", "60")),
        help="seconds a replica's keep-alive stays valid: how long a killed leader blocks the others "
        "[env PEERING_LIFETIME]",
    )
    p.add_argument(
        "--connection-budget",
        type=int,
        default=int(env("CONNECTION_BUDGET", "0") or 0),
        help="connections the runner pods of one database server may hold together, unless its pools set "
        "database.connectionBudget (0: none) [env CONNECTION_BUDGET]",
    )
    p.add_argument(
        "--connection-reserve",
        type=int,
        default=int(env("CONNECTION_RESERVE", "10") or 10),
        help="connections left free on each server, beyond its reserved ones, when the budget is read from "
        "the server [env CONNECTION_RESERVE]",
    )
    p.add_argument(
        "--connection-budget-from-server",
        action=argparse.BooleanOptionalAction,
        default=env("CONNECTION_BUDGET_FROM_SERVER", "true").strip().lower() in ("1", "true", "yes"),
        help="also cap each server's pools at max_connections minus the server's reserved connections, the "
        "reserve and everyone else's connections [env CONNECTION_BUDGET_FROM_SERVER]",
    )
    p.add_argument("--log-level", default=env("LOG_LEVEL", "INFO"), help="[env LOG_LEVEL]")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logs.setup(args.log_level)
    import civic_operator.handlers  # noqa: F401 - registers the handlers

    if args.metrics_port:
        start_http_server(args.metrics_port, registry=REGISTRY)
    peering = None if args.standalone else args.peering
    logging.getLogger("civic_operator").info(
        "operator starting", extra={"namespaces": args.namespace or "all", "peering": peering}
    )
    settings = kopf.OperatorSettings()
    # Watching named namespaces needs no cluster-wide rights: don't list namespaces and CRDs.
    settings.scanning.disabled = bool(args.namespace)
    settings.peering.lifetime = args.peering_lifetime
    identity = own_identity()
    namespaces = list(args.namespace)

    async def read_peering() -> list[dict[str, object]]:
        return await kube.peering_statuses(namespaces, str(peering))

    view = PeeringView(identity, args.priority, None if peering is None else read_peering)
    kopf.run(
        settings=settings,
        clusterwide=not args.namespace,
        namespaces=args.namespace or (),
        # Port 0 is "off", not "any": aiohttp would otherwise fall back to port 80.
        liveness_endpoint=f"http://0.0.0.0:{args.liveness_port}/healthz" if args.liveness_port else None,
        standalone=args.standalone,
        peering_name=peering,
        priority=args.priority,
        identity=identity,  # type: ignore[arg-type]  # kopf's Identity: a NewType of str, not exported
        memo=kopf.Memo(
            peering=view,
            namespaces=namespaces,  # the Deployment watch (deployments.py) watches the same ones
            budget_settings=ledger.settings_from(
                args.connection_budget, args.connection_reserve, args.connection_budget_from_server
            ),
        ),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
