"""Whether this operator replica may act, by kopf's peering rules.

kopf pauses its own handlers when a live peer has a higher priority (or the same one), but the
autoscaler tasks are ours, not kopf daemons (those would put a finalizer on every pool), so they
have to stand by on the same rule themselves: otherwise two replicas would both scale a pool during a
rolling update or with `operator.replicas > 1`.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

log = logging.getLogger("civic_operator.peering")


def own_identity() -> str:
    """kopf's identity convention: the pod's name when POD_ID is set, else user@host/pid."""
    pod = os.environ.get("POD_ID")
    if pod:
        return pod
    return f"{getpass.getuser()}@{socket.gethostname()}/{os.getpid()}"


@dataclass(frozen=True)
class Standing:
    active: bool
    reason: str


def _deadline(entry: Mapping[str, Any]) -> float | None:
    try:
        seen = datetime.fromisoformat(str(entry["lastseen"]).replace("Z", "+00:00")).timestamp()
        return seen + float(entry.get("lifetime", 60))
    except (KeyError, TypeError, ValueError):
        return None


def standing(peers: Mapping[str, Any], identity: str, priority: int, now: float) -> Standing:
    """`peers` is a peering object's status: {identity: {priority, lastseen, lifetime}}. A peer whose
    lastseen + lifetime has passed is dead and ignored, as kopf does; so is an entry that cannot be
    read, rather than guessed at."""
    higher, same = [], []
    for peer, entry in peers.items():
        if peer == identity or not isinstance(entry, Mapping):
            continue
        deadline = _deadline(entry)
        if deadline is None or deadline <= now:
            continue
        try:
            their = int(entry.get("priority", 0))
        except (TypeError, ValueError):
            continue
        if their > priority:
            higher.append(peer)
        elif their == priority:
            same.append(peer)
    if higher:
        return Standing(False, f"standing by for {', '.join(sorted(higher))} (higher priority)")
    if same:
        return Standing(False, f"standing by: {', '.join(sorted(same))} has the same priority {priority}")
    return Standing(True, "highest priority")


def combine(standings: Iterable[Standing]) -> Standing:
    """kopf pauses the whole operator when any of its peering objects says so."""
    for s in standings:
        if not s.active:
            return s
    return Standing(True, "highest priority")


class PeeringView:
    """Reads the peering object(s) at most once per `ttl` seconds; shared by every pool's autoscaler.

    `reader` returns each peering object's status (a missing object: no peers), so tests and the
    standalone mode need no API server.
    """

    def __init__(
        self,
        identity: str,
        priority: int,
        reader: Callable[[], Awaitable[list[dict[str, Any]]]] | None,  # None: standalone, always active
        ttl: float = 1.0,
    ) -> None:
        self.identity = identity
        self.priority = priority
        self._reader = reader
        self._ttl = ttl
        self._cached: tuple[float, Standing] | None = None
        self._lock = asyncio.Lock()
        self._last_reported: bool | None = None

    async def current(self) -> Standing:
        if self._reader is None:
            return Standing(True, "standalone")
        async with self._lock:
            if self._cached and time.monotonic() - self._cached[0] < self._ttl:
                return self._cached[1]
            try:
                statuses = await self._reader()
                result = combine(standing(s, self.identity, self.priority, time.time()) for s in statuses)
            except Exception as exc:  # noqa: BLE001 - unknown standing: don't act, say why
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                result = Standing(False, f"peering unreadable: {first}")
            self._cached = (time.monotonic(), result)
            if result.active != self._last_reported:
                log.info(
                    "autoscaling active" if result.active else "autoscaling standing by",
                    extra={"identity": self.identity, "priority": self.priority, "reason": result.reason},
                )
                self._last_reported = result.active
            return result
