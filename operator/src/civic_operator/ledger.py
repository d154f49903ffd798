"""The operator's book of connection budgets: what every pool of each database server holds and wants,
the server's limits (read at most every LIMITS_TTL seconds), and the grant of budget.py for a pool.

A claim is synchronous: it computes the grant and records the pool's new replicas in one step, so two
pools evaluated at the same moment on the event loop can never both take the same free connections. A pool
that shrinks keeps its old count until `settle` says its new spec.replicas is written, so no other pool grows
into those connections before the shrink has even reached the API server.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from civic_operator import budget
from civic_operator.budget import Budget, Grant, PoolDemand, ServerLimits

log = logging.getLogger("civic_operator.ledger")

LIMITS_TTL = 10.0
# A pool seen but not yet evaluated (its Secret not read) asks, for this long, for its maxReplicas: at start-up
# the first pool evaluated does not take the whole budget only to give most of it back a moment later. After
# that (a Secret that cannot be read) it counts with what it holds only.
UNPLACED_GRACE = 10.0

LIMITS_SQL = """
SELECT current_setting('max_connections')::int,
       current_setting('superuser_reserved_connections')::int,
       coalesce(current_setting('reserved_connections', true), '0')::int,
       (SELECT coalesce(json_agg(json_build_array(app, n)), '[]')::text FROM (
          SELECT coalesce(application_name, '') AS app, count(*) AS n FROM pg_stat_activity
          WHERE coalesce(backend_type = 'client backend', usesysid IS NOT NULL) GROUP BY 1) a)
"""
# Without pg_read_all_stats, a role sees neither the backend_type nor the state of other roles' sessions:
# those with a user then count as clients, so the logical replication launcher (and other roles'
# parallel workers) count too. That errs on the safe side by a connection or two.


@dataclass(frozen=True)
class RawLimits:
    max_connections: int
    superuser_reserved: int
    reserved: int
    by_app: tuple[tuple[str, int], ...]  # client connections by application_name


def parse_limits(row: tuple[Any, ...]) -> RawLimits:
    by_app = tuple((str(a), int(n)) for a, n in json.loads(row[3]))
    return RawLimits(int(row[0]), int(row[1]), int(row[2]), by_app)


# Reads the limits of the server a URL names.
LimitsReader = Callable[[str], Awaitable[RawLimits]]


def _env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    return default if value is None else value.strip().lower() in ("1", "true", "yes")


@dataclass(frozen=True)
class BudgetSettings:
    connections: int | None = None  # every server's budget unless its pools set one
    reserve: int = 10
    from_server: bool = True
    stats_conns_per_url: int = 2  # the operator's stats pool per URL (StatsSource)


@dataclass
class Entry:
    pool: str  # namespace/name
    uid: str
    demand: PoolDemand
    wake: Callable[[], None]
    server: str | None = None  # None until the pool's Secret was read
    url: str = ""
    schema: str = ""
    explicit: int | None = None
    from_server: bool | None = None
    limited: bool = False
    registered: float = field(default_factory=time.monotonic)


@dataclass
class Ledger:
    settings: BudgetSettings
    reader: LimitsReader | None = None
    entries: dict[str, Entry] = field(default_factory=dict)
    unplaced_grace: float = UNPLACED_GRACE
    _limits: dict[str, tuple[float, RawLimits | None, str]] = field(default_factory=dict)
    _budgets: dict[str, int | None] = field(default_factory=dict)  # the last budget seen per server

    def register(self, uid: str, demand: PoolDemand, wake: Callable[[], None], explicit: int | None = None) -> None:
        """A pool seen before its URL is known: its replicas, and its budget if it sets one, count for every
        server meanwhile (it may be on any of them)."""
        if uid not in self.entries:
            self.entries[uid] = Entry(demand.pool, uid, demand, wake, explicit=explicit)

    def forget(self, uid: str) -> None:
        gone = self.entries.pop(uid, None)
        if gone is not None and gone.server is not None:
            self._wake_limited(gone.server, exclude=uid)

    def _group(self, server: str) -> list[Entry]:
        return [e for e in self.entries.values() if e.server == server or e.server is None]

    async def refresh(self, server: str, url: str) -> None:
        """Reads the server's limits when the cached ones are older than LIMITS_TTL."""
        if self.reader is None or not self._from_server(server, None):
            return
        cached = self._limits.get(server)
        if cached is not None and time.monotonic() - cached[0] < LIMITS_TTL:
            return
        try:
            raw: RawLimits | None = await self.reader(url)
            error = ""
        except Exception as exc:  # noqa: BLE001 - reported in the pool's status; an unknown budget caps nothing
            raw, error = None, str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            log.warning("server limits unavailable", extra={"server": server, "error": error})
        self._limits[server] = (time.monotonic(), raw, error)

    def _from_server(self, server: str, me: Entry | None) -> bool:
        """Read the server unless every pool on it turns it off, a pool that says nothing following the
        operator's setting: the safe side wins."""
        group = [e for e in self._group(server) if e.server == server and e is not me] + ([me] if me else [])
        said = [self.settings.from_server if e.from_server is None else e.from_server for e in group]
        return any(said) if said else self.settings.from_server

    def budget_for(self, server: str, me: Entry | None = None) -> Budget:
        group = [e for e in self._group(server) if e.server == server and e is not me] + ([me] if me else [])
        unplaced = [e.explicit for e in self._group(server) if e.server is None and e.explicit is not None]
        explicit = [e.explicit for e in group if e.explicit is not None] + unplaced
        value, source = (min(explicit), "pool") if explicit else (self.settings.connections, "operator")
        cached = self._limits.get(server)
        raw, error = (cached[1], cached[2]) if cached else (None, "")
        limits = None
        if raw is not None:
            uids = {e.uid for e in group}
            limits = ServerLimits(
                raw.max_connections, raw.superuser_reserved, raw.reserved, budget.others_connections(raw.by_app, uids)
            )
        op = budget.operator_connections(
            (e.url for e in group), ((e.url, e.schema) for e in group), self.settings.stats_conns_per_url
        )
        return budget.budget_of(
            value,
            source,
            limits,
            from_server=self._from_server(server, me),
            reserve=self.settings.reserve,
            operator_conns=op,
            limits_error=error,
        )

    def claim(
        self,
        uid: str,
        demand: PoolDemand,
        wake: Callable[[], None],
        *,
        server: str,
        url: str,
        schema: str,
        explicit: int | None,
        from_server: bool | None,
        cap: bool = True,
    ) -> tuple[Grant, Budget]:
        """The pool's grant, recorded at once as the replicas it holds. `cap=False` (stats unavailable:
        replicas are kept as they are) records the demand without capping it."""
        entry = self.entries.get(uid) or Entry(demand.pool, uid, demand, wake)
        old_held = entry.demand.held  # unplaced, it was counted on every server: on this one too
        entry.server, entry.url, entry.schema, entry.wake = server, url, schema, wake
        entry.explicit, entry.from_server, entry.demand = explicit, from_server, demand
        self.entries[uid] = entry
        group = self._group(server)
        # Pools whose Secret was not read yet may be on this server: count them, cap nothing.
        now = time.monotonic()
        demands = [
            e.demand if e.server == server or now - e.registered < self.unplaced_grace else _fixed(e.demand)
            for e in group
        ]
        found = self.budget_for(server, entry)
        before = self._budgets.get(server, found.connections)
        self._budgets[server] = found.connections
        if found.connections is None or (before is not None and found.connections > before):
            self._wake_limited(server, exclude=uid)  # a raised budget: the capped pools need not wait a poll
        result = budget.grant(demand.pool, demands, found if cap else Budget(None, "unknown", "stats unavailable"))
        held = result.replicas if cap else demand.held
        # Growing counts at once; shrinking once settled (the new count written).
        entry.demand = _held(demand, max(held, old_held))
        entry.limited = result.limited
        for other in group:
            if other.pool in result.over_share:
                other.wake()
        return result, found

    def settle(self, uid: str, replicas: int) -> None:
        """The pool's spec.replicas is now `replicas`: what it gave back is free for the others."""
        entry = self.entries.get(uid)
        if entry is None:
            return
        before = entry.demand.held
        entry.demand = _held(entry.demand, replicas)
        if replicas < before and entry.server is not None:
            self._wake_limited(entry.server, exclude=uid)

    def _wake_limited(self, server: str, exclude: str) -> None:
        for e in self.entries.values():
            if e.server == server and e.uid != exclude and e.limited:
                e.wake()

    def servers(self) -> dict[str, list[Entry]]:
        out: dict[str, list[Entry]] = {}
        for e in self.entries.values():
            if e.server is not None:
                out.setdefault(e.server, []).append(e)
        return out


def _held(d: PoolDemand, held: int) -> PoolDemand:
    return PoolDemand(d.pool, d.per_pod, d.minimum, d.wanted, held, d.autoscaled)


def _fixed(d: PoolDemand) -> PoolDemand:
    return PoolDemand(d.pool, d.per_pod, 0, d.held, d.held, autoscaled=False)


def settings_from(connections: int, reserve: int, from_server: bool) -> BudgetSettings:
    return BudgetSettings(
        connections=connections if connections > 0 else None, reserve=reserve, from_server=from_server
    )


def settings_from_env() -> BudgetSettings:
    """For `kopf run` without civic-operator's parser: the same variables and defaults."""
    return settings_from(
        int(os.environ.get("CONNECTION_BUDGET", "0") or 0),
        int(os.environ.get("CONNECTION_RESERVE", "10") or 10),
        _env_bool("CONNECTION_BUDGET_FROM_SERVER", True),
    )


def limits_reader(connection: Callable[[str], Any]) -> LimitsReader:
    """A reader over a connection factory (StatsSource.connection: the stats pool of that URL)."""

    async def read(url: str) -> RawLimits:
        async with connection(url) as conn:
            cur = await conn.execute(LIMITS_SQL)
            return parse_limits(await cur.fetchone())

    return read
