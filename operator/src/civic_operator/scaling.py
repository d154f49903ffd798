"""The scaling decision: a pure function of (queue stats, policy, recent history, current replicas, now).

Semantics follow the HPA and KEDA (docs/architecture.md): `ceil(depth / targetPerReplica)` with a ±tolerance band,
scale-up and scale-down rate limits per period, a scale-down stabilization window (the highest
recommendation inside it wins), min/max, and KEDA's activation threshold with a cooldown before
scaling to zero. On a stats error the current replica count is kept: an unreachable database never
scales a pool to zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from civic_operator.policy import Policy


@dataclass(frozen=True)
class QueueStats:
    available: int
    running: int
    scheduled_soon: int = 0
    oldest_available_seconds: float | None = None
    completed_per_second: float | None = None  # all replicas, over the measuring window


@dataclass(frozen=True)
class History:
    recommendations: tuple[tuple[float, int], ...] = ()  # (time, recommendation), oldest first
    scale_events: tuple[tuple[float, int, int], ...] = ()  # (time, from, to)
    last_active: float | None = None
    # (time, replicas) as found at first sight (operator start): counts in the scale-down window, so a
    # restart causes no sudden scale-down, but not in the scale-up window, where it would read as a
    # low recommendation and delay the first scale-up by a round.
    seeded: tuple[float, int] | None = None


@dataclass(frozen=True)
class Decision:
    replicas: int
    recommendation: int
    depth: int | None
    active: bool
    reason: str
    degraded: bool = False
    history: History = field(default_factory=History)


def depth_of(stats: QueueStats, policy: Policy) -> int:
    depth = stats.available + stats.scheduled_soon
    if policy.include_running:
        depth += stats.running
    return depth


def raw_recommendation(stats: QueueStats, policy: Policy, current: int) -> tuple[int, str]:
    """Replicas the load asks for, before activation, bounds, windows and rate limits."""
    depth = depth_of(stats, policy)
    target = policy.target_per_replica
    rec = math.ceil(depth / target) if depth > 0 else 0
    why = f"depth {depth} over {current} replicas x {target:g} → {rec}"
    if policy.target_drain_seconds and stats.completed_per_second and current > 0:
        per_replica = stats.completed_per_second / current
        backlog = stats.available + stats.scheduled_soon
        drain = math.ceil(backlog / (per_replica * policy.target_drain_seconds))
        if drain > rec:
            rec = drain
            why = (
                f"backlog {backlog} at {per_replica:.1f} jobs/s per replica drains in "
                f"{policy.target_drain_seconds:g}s with {drain}"
            )
    if current > 0 and rec > 0:
        ratio = depth / (target * current)
        if abs(ratio - 1.0) <= policy.tolerance:
            return current, f"depth {depth} within {policy.tolerance:.0%} of {current} replicas x {target:g}"
    return rec, why


def _prune(history: History, policy: Policy, now: float) -> History:
    keep_recs = max(policy.scale_up.stabilization_seconds, policy.scale_down.stabilization_seconds)
    keep_events = max(policy.scale_up.period_seconds, policy.scale_down.period_seconds)
    return replace(
        history,
        recommendations=tuple(r for r in history.recommendations if now - r[0] <= keep_recs),
        scale_events=tuple(e for e in history.scale_events if now - e[0] < keep_events),
        seeded=history.seeded
        if history.seeded and now - history.seeded[0] <= policy.scale_down.stabilization_seconds
        else None,
    )


def decide(
    stats: QueueStats | None,
    policy: Policy,
    history: History,
    current: int,
    now: float,
    error: str = "",
) -> Decision:
    if stats is None:
        return Decision(
            current,
            current,
            None,
            False,
            f"queue stats unavailable ({error or 'unknown error'}); keeping {current} replicas",
            degraded=True,
            history=history,
        )
    history = _prune(history, policy, now)
    depth = depth_of(stats, policy)
    active = depth > policy.activation_threshold
    last_active = now if active else history.last_active
    rec, why = raw_recommendation(stats, policy, current)

    to_zero = False
    if policy.min_replicas == 0:
        if active:
            rec = max(rec, 1)
        else:
            cooling = last_active is not None and now - last_active < policy.cooldown_seconds
            if current > 0 and cooling:
                rec = max(min(rec, current), 1) if rec > 0 else 1
                why = (
                    f"depth {depth} ≤ activation {policy.activation_threshold:g}; keeping at least 1 "
                    f"until the {policy.cooldown_seconds:g}s cooldown ends"
                )
            else:
                rec, to_zero = 0, True
                why = f"depth {depth} ≤ activation {policy.activation_threshold:g} → 0"
    bounded = min(max(rec, policy.min_replicas), policy.max_replicas)
    if bounded != rec:
        why += f" (bounded to {bounded} by {'min' if bounded > rec else 'max'}Replicas)"
        rec = bounded

    recommendations = (*history.recommendations, (now, rec))
    desired = rec
    note = ""
    if to_zero:
        desired = 0
    elif rec < current:
        window = policy.scale_down.stabilization_seconds
        seeded = (history.seeded,) if history.seeded else ()
        held = max(r for t, r in (*seeded, *recommendations) if now - t <= window)
        desired = min(max(held, rec), current)
        if desired > rec:
            note = f" (held at {desired} by the {window:g}s scale-down window)"
    elif rec > current:
        window = policy.scale_up.stabilization_seconds
        desired = max(min(r for t, r in recommendations if now - t <= window), current)

    desired, limited = _rate_limit(desired, current, history, policy, now)
    if limited:
        note += limited
    if desired != current and not note and desired != rec:
        note = f" (→ {desired})"

    events = history.scale_events
    if desired != current:
        events = (*events, (now, current, desired))
    new_history = History(
        recommendations=recommendations, scale_events=events, last_active=last_active, seeded=history.seeded
    )
    return Decision(desired, rec, depth, active, why + note, history=new_history)


def _rate_limit(desired: int, current: int, history: History, policy: Policy, now: float) -> tuple[int, str]:
    if desired > current:
        lim = policy.scale_up
        moved = sum(to - frm for t, frm, to in history.scale_events if now - t < lim.period_seconds and to > frm)
        base = current - moved
        ceiling = base + max(lim.pods, math.ceil(base * lim.percent / 100))
        if desired > ceiling:
            top = max(ceiling, current)
            return top, f" (scale-up limited to {top} within {lim.period_seconds:g}s)"
    elif 0 < desired < current:
        lim = policy.scale_down
        moved = sum(frm - to for t, frm, to in history.scale_events if now - t < lim.period_seconds and to < frm)
        base = current + moved
        floor = base - max(lim.pods, math.ceil(base * lim.percent / 100))
        if desired < floor:
            bottom = min(floor, current)
            return bottom, f" (scale-down limited to {bottom} within {lim.period_seconds:g}s)"
    return desired, ""


def capped(decision: Decision, replicas: int, current: int, now: float, why: str) -> Decision:
    """The decision lowered to `replicas` (by the connection budget). Its scale event is rewritten, so the
    rate limits count the move that was made, not the one the load asked for; the recommendations stay
    as the load asked, so the pool grows back once the budget allows."""
    if replicas >= decision.replicas:
        return decision
    events = tuple(e for e in decision.history.scale_events if not (e[0] == now and e[1] == current))
    if replicas != current:
        events = (*events, (now, current, replicas))
    return replace(
        decision,
        replicas=replicas,
        reason=f"{decision.reason}; {why}",
        history=replace(decision.history, scale_events=events),
    )
