"""The connection budget: how many replicas each pool of one database server may have, so that their
runner pods together never hold more connections than the server can give them. Pure functions.

PostgreSQL's `max_connections` is a limit of the server (every database on it shares it), so pools are
grouped by the server their URL names (host and port), not by database or Secret. The budget is the
smallest of the values given for that server (a pool's `database.connectionBudget`, else the operator's
`CONNECTION_BUDGET`) and, unless turned off, what the server itself leaves: `max_connections` minus its
reserved slots, the operator's reserve, the connections of everyone else and the operator's own.

Replicas are shared fairly and deterministically: first every pool's `minReplicas`, then the rest in
proportion to what each pool asks beyond its minimum (ties go by namespace/name). A pool is also never
given connections another pool still holds: it gets at most what is free now, and the others are woken
to give back what they hold beyond their share.
"""

from __future__ import annotations

import functools
import heapq
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from psycopg.conninfo import conninfo_to_dict

OPERATOR_APP = "civic-operator"
RUNNER_APP = "civic-runner"
APP_NAME_MAX = 63  # PostgreSQL truncates application_name to NAMEDATALEN - 1 bytes
PIPELINE_MODULE = "civic_runner.pipeline"
PIPELINE_CONNS = 2  # PIPELINE_DB_MAX_CONNS's default (civic_runner.pipeline.config)


def server_key(url: str) -> str:
    """`host:port` of a connection URL or conninfo string, without user, password or database."""
    params = conninfo_to_dict(url)
    host = str(params.get("host") or params.get("hostaddr") or "localhost")
    port = str(params.get("port") or "5432")
    return f"{host}:{port}"


def runner_app_name(uid: str, namespace: str, name: str) -> str:
    """The application_name of a pool's runner connections: the uid first, so that truncation to 63
    bytes never loses what identifies the pool."""
    return f"{RUNNER_APP} {uid} {namespace}/{name}".encode()[:APP_NAME_MAX].decode(errors="ignore")


def pool_uid_of(application_name: str) -> str | None:
    parts = application_name.split(" ")
    return parts[1] if len(parts) >= 2 and parts[0] == RUNNER_APP else None


def _int_env(env: Mapping[str, str], name: str, default: int) -> int:
    try:
        return int(env[name])
    except (KeyError, ValueError):
        return default


def connections_per_pod(spec: Mapping[str, Any]) -> int:
    """Connections one runner pod may hold: DB_MAX_CONNS, plus the file pipeline's own pool when the
    pod loads it. The pool's `env` overrides our values in the pod (manifests.container_env), so here too."""
    env = {str(e.get("name")): str(e["value"]) for e in spec.get("env") or [] if "value" in e}
    conns = _int_env(env, "DB_MAX_CONNS", int(spec.get("dbMaxConns", 4)))
    modules = str(env.get("CIVIC_KINDS_MODULES", spec.get("kindsModules", PIPELINE_MODULE)))
    if any(m.strip().startswith(PIPELINE_MODULE) for m in modules.split(",")):
        conns += _int_env(env, "PIPELINE_DB_MAX_CONNS", PIPELINE_CONNS)
    return max(conns, 1)


def others_connections(by_app: Iterable[tuple[str, int]], our_pools: set[str]) -> int:
    """Client connections that are neither the operator's nor a runner of one of `our_pools` (uids)."""
    total = 0
    for app, count in by_app:
        if app == OPERATOR_APP or pool_uid_of(app) in our_pools:
            continue
        total += count
    return total


def operator_connections(urls: Iterable[str], listens: Iterable[tuple[str, str]], per_url: int) -> int:
    """The most the operator itself holds on one server: a stats pool per URL, a LISTEN per (URL, schema)."""
    return len(set(urls)) * per_url + len(set(listens))


@dataclass(frozen=True)
class ServerLimits:
    max_connections: int
    superuser_reserved: int
    reserved: int  # reserved_connections (PostgreSQL 16+; 0 before)
    others: int  # client connections of everyone but our pools and the operator


@dataclass(frozen=True)
class Budget:
    connections: int | None  # None: unknown, nothing is capped
    source: str  # "pool", "operator", "server" or "unknown"
    detail: str


def budget_of(
    explicit: int | None,
    explicit_source: str,
    limits: ServerLimits | None,
    *,
    from_server: bool,
    reserve: int,
    operator_conns: int,
    limits_error: str = "",
) -> Budget:
    """The smallest of the explicit value and what the server leaves for our pools."""
    candidates: list[Budget] = []
    if explicit is not None:
        candidates.append(Budget(explicit, explicit_source, f"{explicit} set by the {explicit_source}"))
    if from_server and limits is not None:
        left = (
            limits.max_connections
            - limits.superuser_reserved
            - limits.reserved
            - reserve
            - limits.others
            - operator_conns
        )
        candidates.append(
            Budget(
                max(left, 0),
                "server",
                f"max_connections {limits.max_connections} - superuser_reserved {limits.superuser_reserved}"
                f" - reserved {limits.reserved} - reserve {reserve} - others {limits.others}"
                f" - operator {operator_conns} = {left}",
            )
        )
    if candidates:
        return min(candidates, key=lambda b: (b.connections or 0, b.source != "server"))
    if from_server:
        why = f"the server's limits could not be read ({limits_error or 'not yet read'})"
    else:
        why = "no budget is set and reading it from the server is off"
    return Budget(None, "unknown", why)


@dataclass(frozen=True)
class PoolDemand:
    pool: str  # "namespace/name": also the tie-breaker, so shares are deterministic
    per_pod: int  # connections one replica holds
    minimum: int
    wanted: int  # replicas the load asks for (the decision's recommendation, or more while a window holds)
    held: int  # replicas the pool has now
    autoscaled: bool = True  # False: replicas are set by hand; counted, never capped
    # The most this round may reach (the decision after its rate limits); None: `wanted`. Shares follow
    # `wanted`, so that a pool's rate limit does not shrink its share of the budget from round to round.
    step: int | None = None

    @property
    def upper(self) -> int:
        return self.wanted if self.step is None else min(self.step, self.wanted)


def _fill(
    granted: dict[str, int], targets: dict[str, int], base: dict[str, int], per_pod: dict[str, int], left: int
) -> int:
    """Give replicas one at a time to the pool furthest (proportionally) from its target; between equals,
    to the one with fewer replicas, then by name."""

    # A float ratio is exact enough: ratios of different small integers never round to the same double,
    # and equal ones always do, so the order stays deterministic (and ~4x cheaper than Fraction).
    def key(p: str) -> tuple[float, int, str]:
        return (granted[p] - base[p]) / (targets[p] - base[p]), granted[p], p

    heap = [key(p) for p, t in targets.items() if t > granted[p]]
    heapq.heapify(heap)
    while heap:
        p = heapq.heappop(heap)[2]
        if per_pod[p] > left:
            continue  # it does not fit; a smaller pod of another pool still may
        granted[p] += 1
        left -= per_pod[p]
        if granted[p] < targets[p]:
            heapq.heappush(heap, key(p))
    return left


def fair_shares(demands: Sequence[PoolDemand], budget: int) -> dict[str, int]:
    """Replicas per pool within `budget` connections: hand-set pools as they are, then every pool's
    minimum, then the rest in proportion to what each asks beyond its minimum."""
    # Every pool of a server asks for this each round, mostly with the same demands: computed once.
    key = tuple(
        sorted((d.pool, d.per_pod, d.minimum, d.wanted, d.autoscaled, 0 if d.autoscaled else d.held) for d in demands)
    )
    return dict(_shares(key, budget))


@functools.lru_cache(maxsize=1024)
def _shares(key: tuple[tuple[str, int, int, int, bool, int], ...], budget: int) -> tuple[tuple[str, int], ...]:
    demands = [PoolDemand(p, per_pod, minimum, wanted, held, auto) for p, per_pod, minimum, wanted, auto, held in key]
    return tuple(sorted(_compute_shares(demands, budget).items()))


def _compute_shares(demands: Sequence[PoolDemand], budget: int) -> dict[str, int]:
    if sum((d.wanted if d.autoscaled else d.held) * d.per_pod for d in demands) <= budget:
        return {d.pool: d.wanted if d.autoscaled else d.held for d in demands}  # it all fits
    shares = {d.pool: d.held for d in demands if not d.autoscaled}
    auto = sorted((d for d in demands if d.autoscaled), key=lambda d: d.pool)
    left = budget - sum(d.held * d.per_pod for d in demands if not d.autoscaled)
    granted = {d.pool: 0 for d in auto}
    per_pod = {d.pool: d.per_pod for d in auto}
    zero = dict.fromkeys(granted, 0)
    left = _fill(granted, {d.pool: min(d.minimum, d.wanted) for d in auto}, zero, per_pod, max(left, 0))
    floor = dict(granted)
    _fill(granted, {d.pool: d.wanted for d in auto}, floor, per_pod, left)
    return {**shares, **granted}


@dataclass(frozen=True)
class Grant:
    replicas: int  # what the pool may have now
    wanted: int
    share: int  # its fair share
    free: int  # replicas that fit in what the other pools leave free now
    budget: int | None
    per_pod: int
    pools: int  # pools on the server
    wanted_connections: int  # every pool's wanted replicas x connections
    used_connections: int  # every pool's replicas x connections, this one's grant included
    limited: bool
    reason: str
    # Pools holding more than their share while this one waits: to be woken, so they give it back.
    over_share: tuple[str, ...] = ()


def grant(pool: str, demands: Sequence[PoolDemand], budget: Budget) -> Grant:
    me = next(d for d in demands if d.pool == pool)
    wanted_conns = sum((d.wanted if d.autoscaled else d.held) * d.per_pod for d in demands)
    others_held = sum(d.held * d.per_pod for d in demands if d.pool != pool)
    if budget.connections is None or not me.autoscaled:
        replicas = me.upper if me.autoscaled else me.held
        return Grant(
            replicas,
            me.wanted,
            replicas,
            replicas,
            budget.connections,
            me.per_pod,
            len(demands),
            wanted_conns,
            others_held + replicas * me.per_pod,
            False,
            f"connection budget unknown: {budget.detail}; not capped"
            if budget.connections is None
            else "replicas set by hand: counted in the budget, not capped",
        )
    shares = fair_shares(demands, budget.connections)
    share = shares[pool]
    free = max(budget.connections - others_held, 0) // me.per_pod
    replicas = min(me.upper, share, free)
    limited = replicas < me.upper
    over = tuple(sorted(d.pool for d in demands if d.pool != pool and d.held > shares[d.pool]))
    reason = ""
    if limited:
        reason = (
            f"connection budget {budget.connections} ({budget.source}: {budget.detail}) caps {pool} at "
            f"{replicas} of {me.wanted} replicas x {me.per_pod} connections; {len(demands)} pool(s) on this "
            f"server want {wanted_conns}"
        )
        if free < min(me.upper, share):
            reason += f"; {others_held} held by other pools, waiting for {', '.join(over) or 'them'} to scale down"
    return Grant(
        replicas,
        me.wanted,
        share,
        free,
        budget.connections,
        me.per_pod,
        len(demands),
        wanted_conns,
        others_held + replicas * me.per_pod,
        limited,
        reason,
        over if free < min(me.upper, share) else (),
    )
