"""Table tests of the scaling decision: HPA formula and tolerance, windows, rate limits, activation,
scale to zero, errors, and flapping inputs."""

from __future__ import annotations

import pytest
from civic_operator.policy import Policy, StepLimit
from civic_operator.scaling import History, QueueStats, decide

pytestmark = pytest.mark.unit

P = Policy(
    min_replicas=0,
    max_replicas=20,
    target_per_replica=100,
    cooldown_seconds=60,
    scale_up=StepLimit(0, 4, 100, 15),
    scale_down=StepLimit(300, 100, 100, 15),
)


def stats(available: int = 0, running: int = 0, soon: int = 0) -> QueueStats:
    return QueueStats(available=available, running=running, scheduled_soon=soon)


@pytest.mark.parametrize(
    ("available", "running", "current", "expected", "why"),
    [
        (460, 0, 4, 5, "depth 460 over 4 replicas x 100 → 5"),
        (420, 0, 4, 4, "within 10%"),  # HPA tolerance: 1.05 is close enough
        (0, 0, 0, 0, "depth 0"),
        (1, 0, 0, 1, "→ 1"),  # activation: any job wakes a pool at zero
        (250, 150, 4, 4, "within 10%"),  # 400 over 4 x 100: ratio 1.0
        (405, 0, 4, 4, "within 10%"),  # ratio 1.0125
        (100_000, 0, 0, 4, "scale-up limited"),  # from zero: +4 per period
        (100_000, 0, 16, 20, "depth 100000"),  # +100 % allowed, clamped to max 20
    ],
)
def test_basic_table(available: int, running: int, current: int, expected: int, why: str) -> None:
    d = decide(stats(available, running), P, History(last_active=0.0), current, now=1000.0)
    assert d.replicas == expected
    assert why in d.reason


def test_running_jobs_count_by_default_and_can_be_excluded() -> None:
    s = stats(available=0, running=350)
    assert decide(s, P, History(), 4, 1000.0).replicas == 4
    p = Policy(**{**P.__dict__, "include_running": False})
    d = decide(s, p, History(last_active=999.0), 4, 1000.0)
    assert d.depth == 0 and d.replicas == 1  # inactive, cooldown not over: keep one


def test_scheduled_soon_counts() -> None:
    d = decide(stats(available=0, soon=300), P, History(), 0, 1000.0)
    assert d.depth == 300 and d.replicas == 3


def test_stats_error_keeps_replicas_and_degrades() -> None:
    for current in (0, 3, 20):
        d = decide(None, P, History(), current, 1000.0, error="connection refused")
        assert d.replicas == current and d.degraded
        assert "connection refused" in d.reason


def test_scale_down_waits_for_the_window_then_follows() -> None:
    h = History()
    d = decide(stats(800), P, h, 8, 0.0)  # steady at 8
    assert d.replicas == 8
    h = d.history
    d = decide(stats(200), P, h, 8, 10.0)  # load drops: the 300 s window holds 8
    assert d.replicas == 8 and "scale-down window" in d.reason
    h = d.history
    d = decide(stats(200), P, h, 8, 301.0)  # the 800-recommendation has aged out
    assert d.replicas == 2


def test_first_sight_scales_up_at_once_but_never_down_suddenly() -> None:
    """After an operator (re)start the pool's replicas as found hold scale-down for the window, and do
    not read as a low recommendation that would delay the first scale-up by a round."""
    seeded = History(seeded=(1000.0, 2), last_active=1000.0)  # as the autoscaler seeds a pool it finds at 2
    up = decide(stats(800), P, seeded, 2, 1000.0)  # a backlog found at start: up in this round
    assert up.replicas == 6 and "scale-up limited to 6" in up.reason, up.reason  # 8 asked, 4 pods per 15 s
    down = decide(stats(0), P, seeded, 2, 1000.0)  # an empty queue found at start: held at 2
    assert down.replicas == 2 and "scale-down window" in down.reason
    later = decide(stats(0), P, down.history, 2, 1000.0 + P.scale_down.stabilization_seconds + 1)
    assert later.replicas == 0, later.reason
    assert later.history.seeded is None  # aged out with the window


def test_flapping_input_does_not_flap_replicas() -> None:
    h, current, seen = History(), 5, []
    for i, depth in enumerate([500, 100, 500, 90, 520, 80, 510, 100] * 3):
        d = decide(stats(depth), P, h, current, float(i * 5))
        h, current = d.history, d.replicas
        seen.append(current)
    assert min(seen) >= 5, seen  # downs are held by the window; ups within tolerance
    assert len(set(seen)) <= 2


def test_scale_up_rate_limit_accumulates_within_period() -> None:
    p = Policy(**{**P.__dict__, "max_replicas": 100})
    d1 = decide(stats(10_000), p, History(), 2, 0.0)
    assert d1.replicas == 6  # max(4 pods, 100 % of 2) = +4
    d2 = decide(stats(10_000), p, d1.history, 6, 5.0)  # same period: base 2, already +4
    assert d2.replicas == 6
    d3 = decide(stats(10_000), p, d2.history, 6, 16.0)  # new period: +100 % of 6
    assert d3.replicas == 12


def test_scale_down_rate_limit() -> None:
    p = Policy(**{**P.__dict__, "scale_down": StepLimit(0, 1, 10, 15)})
    d = decide(stats(100), p, History(), 10, 0.0)
    assert d.replicas == 9  # max(1 pod, 10 % of 10)


def test_scale_to_zero_after_cooldown_only() -> None:
    h = decide(stats(50), P, History(), 1, 0.0).history  # active at t=0
    d = decide(stats(0), P, h, 1, 30.0)
    assert d.replicas == 1 and "cooldown" in d.reason
    d = decide(stats(0), P, d.history, 1, 61.0)
    assert d.replicas == 0


def test_activation_threshold_wins_over_target() -> None:
    p = Policy(**{**P.__dict__, "target_per_replica": 10, "activation_threshold": 50})
    assert decide(stats(40), p, History(), 0, 0.0).replicas == 0
    assert decide(stats(51), p, History(), 0, 0.0).replicas == 4  # ceil(51/10)=6, +4 from zero


def test_min_replicas_ignores_activation_and_never_goes_to_zero() -> None:
    p = Policy(**{**P.__dict__, "min_replicas": 2, "activation_threshold": 1000})
    d = decide(stats(0), p, History(), 2, 0.0)
    assert d.replicas == 2


def test_target_drain_seconds_uses_measured_rate() -> None:
    p = Policy(**{**P.__dict__, "target_drain_seconds": 60, "target_per_replica": 1000, "max_replicas": 50})
    s = QueueStats(available=6000, running=20, completed_per_second=20.0)  # 2 replicas → 10 jobs/s each
    d = decide(s, p, History(), 2, 0.0)
    # 6000 / (10 x 60) = 10 replicas wanted; +100 % rate limit from 2 gives max(4, 2) → 6
    assert d.recommendation == 10 and d.replicas == 6
    assert "drains in 60s" in d.reason


def test_max_clamps() -> None:
    d = decide(stats(10**9), P, History(), 20, 0.0)
    assert d.replicas == 20
