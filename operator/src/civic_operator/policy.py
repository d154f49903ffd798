"""A pool's autoscaling policy, read from its spec with the defaults the CRD also declares."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class StepLimit:
    """HPA-style rate limit: per `period_seconds`, at most max(pods, percent of current)."""

    stabilization_seconds: float
    pods: int
    percent: int
    period_seconds: float

    @classmethod
    def from_spec(cls, spec: dict[str, Any] | None, *, window: float, pods: int) -> StepLimit:
        s = spec or {}
        return cls(
            stabilization_seconds=float(s.get("stabilizationWindowSeconds", window)),
            pods=int(s.get("pods", pods)),
            percent=int(s.get("percent", 100)),
            period_seconds=float(s.get("periodSeconds", 15)),
        )


@dataclass(frozen=True)
class Policy:
    enabled: bool = True
    min_replicas: int = 0
    max_replicas: int = 10
    target_per_replica: float = 10.0
    activation_threshold: float = 0.0
    tolerance: float = 0.1
    cooldown_seconds: float = 300.0
    poll_seconds: float = 5.0
    include_running: bool = True
    include_scheduled_within: float = 0.0
    target_drain_seconds: float | None = None
    scale_up: StepLimit = field(default_factory=lambda: StepLimit(0.0, 4, 100, 15.0))
    scale_down: StepLimit = field(default_factory=lambda: StepLimit(300.0, 100, 100, 15.0))

    @classmethod
    def from_spec(cls, autoscaling: dict[str, Any] | None) -> Policy:
        a = autoscaling or {}
        depth = a.get("depth") or {}
        drain = a.get("targetDrainSeconds")
        return cls(
            enabled=bool(a.get("enabled", True)),
            min_replicas=int(a.get("minReplicas", 0)),
            max_replicas=int(a.get("maxReplicas", 10)),
            target_per_replica=float(a.get("targetPerReplica", 10)),
            activation_threshold=float(a.get("activationThreshold", 0)),
            tolerance=float(a.get("tolerance", 0.1)),
            cooldown_seconds=float(a.get("cooldownSeconds", 300)),
            poll_seconds=float(a.get("pollSeconds", 5)),
            include_running=bool(depth.get("includeRunning", True)),
            include_scheduled_within=float(depth.get("includeScheduledWithinSeconds", 0)),
            target_drain_seconds=float(drain) if drain else None,
            scale_up=StepLimit.from_spec(a.get("scaleUp"), window=0.0, pods=4),
            scale_down=StepLimit.from_spec(a.get("scaleDown"), window=300.0, pods=100),
        )
