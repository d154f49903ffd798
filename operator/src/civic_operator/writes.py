"""Which Kubernetes writes a round needs: pure decisions, so an idle fleet does not write every poll.

Every write is an etcd write on the API server. Measured with bench/fleet_scale.py at 100 pools on the
2-core machine, a Deployment apply and a status patch per pool every 5 s (40 writes/s, ~190 ms each at
the API server) saturated it, and scale decisions queued behind them for seconds. So a round applies the
Deployment only when its manifest changed, when its observed state is unknown, or once per resync
period (which also restores hand edits), and writes the status only when something other than the
evaluation time, the backlog's age or the completion rate changed, or once per refresh period.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

RESYNC_SECONDS = 60.0  # a hand-edited Deployment is restored within this
STATUS_REFRESH_SECONDS = 60.0  # the volatile fields below are at most this old while the operator runs
# Fields that move every round while a backlog waits (its age, the completion rate) or always (the time):
# alone they do not make a write; they ride along with one, or with the refresh. The metrics carry them live.
VOLATILE_STATUS = frozenset({"lastEvaluationTime", "oldestAvailableSeconds", "completedPerSecond"})


@dataclass(frozen=True)
class Written:
    """What was last written, and when (monotonic seconds)."""

    content: str
    at: float


def fingerprint(document: dict[str, Any], ignore: frozenset[str] = frozenset()) -> str:
    kept = {k: v for k, v in document.items() if k not in ignore}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()


def should_apply(
    *, mode: str, manifest: str, last: Written | None, observed: bool, now: float, resync: float = RESYNC_SECONDS
) -> bool:
    """Job mode applies every round (it lists the Jobs to start the next ones as earlier ones finish)."""
    if mode == "Job" or last is None or not observed:
        return True
    return last.content != manifest or now - last.at >= resync


def deployment_write(
    *,
    mode: str,
    template: str,
    replicas: int,
    last: Written | None,
    last_replicas: int | None,
    observed: bool,
    now: float,
    resync: float = RESYNC_SECONDS,
) -> str | None:
    """How a round brings the Deployment to the pool: "apply" (the whole manifest, server-side apply),
    "scale" (only spec.replicas moved: a merge patch of the Deployment's scale subresource) or None.

    `template` is the fingerprint of everything the manifest is made of but the replicas. A scale decision
    is the write a burst makes by the hundred, and a server-side apply of the whole Deployment costs the
    API server a decode, a field-ownership merge and a diff of the pod template each time; the subresource
    carries one number. Anything else, or the once-per-resync apply, goes through apply.
    """
    if should_apply(mode=mode, manifest=template, last=last, observed=observed, now=now, resync=resync):
        return "apply"
    if last_replicas is None:
        return "apply"
    return "scale" if replicas != last_replicas else None


def should_write_status(
    *, status: str, last: Written | None, now: float, refresh: float = STATUS_REFRESH_SECONDS
) -> bool:
    """`status` is the fingerprint of the patch without VOLATILE_STATUS."""
    return last is None or last.content != status or now - last.at >= refresh


def spec_news(before: dict[str, Any] | None, after: dict[str, Any], ours: int | None) -> bool:
    """Whether a watched pool body brings a spec change the autoscaler did not make itself.

    metadata.generation moves on every spec change and only then (the CRD has a status subresource), so it
    tells a spec edit from the status writes and annotation changes that make most watch events. `ours` is
    the generation the autoscaler's own spec.replicas patch produced: the round that wrote it has already
    applied it, and waking for it would only run a redundant round per decision. Without generations (a
    body from a test or a partial event) the specs themselves are compared.
    """
    if before is None:
        return True
    old = (before.get("metadata") or {}).get("generation")
    new = (after.get("metadata") or {}).get("generation")
    if isinstance(old, int) and isinstance(new, int):
        return new != old and new != ours
    return before.get("spec") != after.get("spec")
