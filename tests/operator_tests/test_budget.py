"""The connection budget's pure decisions (civic_operator.budget): grouping, connections per pod, the
budget from explicit values and the server's numbers, and fair, deterministic shares."""

from __future__ import annotations

from typing import Any

import pytest
from civic_operator.budget import (
    Budget,
    PoolDemand,
    ServerLimits,
    budget_of,
    connections_per_pod,
    fair_shares,
    grant,
    operator_connections,
    others_connections,
    pool_uid_of,
    runner_app_name,
    server_key,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("postgresql://u:secret@db.example:5433/civic", "db.example:5433"),
        ("postgresql://u@db.example/civic", "db.example:5432"),
        ("postgresql://other:pw@db.example/another_db?sslmode=require", "db.example:5432"),  # same server
        ("host=/var/run/postgresql dbname=civic", "/var/run/postgresql:5432"),
        ("postgresql:///civic", "localhost:5432"),
        ("postgresql://u@[::1]:6432/civic", "::1:6432"),
    ],
)
def test_pools_are_grouped_by_server_without_credentials(url: str, key: str) -> None:
    assert server_key(url) == key
    assert "secret" not in server_key(url)


@pytest.mark.parametrize(
    ("spec", "conns"),
    [
        ({}, 4 + 2),  # the CRD's defaults: dbMaxConns 4 and the file pipeline's 2
        ({"dbMaxConns": 8}, 10),
        ({"kindsModules": "tests.support.kinds"}, 4),  # no pipeline, no pipeline pool
        ({"kindsModules": "tests.support.kinds,civic_runner.pipeline"}, 6),
        ({"env": [{"name": "PIPELINE_DB_MAX_CONNS", "value": "5"}]}, 9),
        ({"dbMaxConns": 4, "env": [{"name": "DB_MAX_CONNS", "value": "12"}]}, 14),  # env wins in the pod too
        ({"env": [{"name": "CIVIC_KINDS_MODULES", "value": "mine"}]}, 4),
        ({"env": [{"name": "DB_MAX_CONNS", "valueFrom": {"configMapKeyRef": {"name": "x", "key": "y"}}}]}, 6),
        ({"env": [{"name": "DB_MAX_CONNS", "value": "not a number"}], "kindsModules": "k"}, 4),
    ],
)
def test_connections_per_pod(spec: dict[str, Any], conns: int) -> None:
    assert connections_per_pod(spec) == conns


def test_runner_application_name_keeps_the_uid_when_truncated() -> None:
    uid = "0c3f6b8e-9d51-4c1e-a9f1-3a6c0b2d4e5f"
    name = runner_app_name(uid, "a-very-long-namespace-name", "a-very-long-pool-name-too")
    assert len(name.encode()) <= 63
    assert pool_uid_of(name) == uid
    assert pool_uid_of(runner_app_name(uid, "ns", "p")) == uid
    assert pool_uid_of("psql") is None
    assert pool_uid_of("civic-runner") is None


def test_others_are_everyone_but_our_pools_and_the_operator() -> None:
    ours = runner_app_name("u1", "ns", "a")
    not_watched = runner_app_name("u9", "elsewhere", "b")  # a pool of another operator: not ours to count
    rows = [(ours, 12), (not_watched, 4), ("civic-operator", 3), ("PostgREST 12", 10), ("", 2), ("psql", 1)]
    assert others_connections(rows, {"u1"}) == 4 + 10 + 2 + 1
    assert others_connections(rows, set()) == 12 + 4 + 10 + 2 + 1


def test_operator_connections_count_a_stats_pool_per_url_and_a_listen_per_schema() -> None:
    urls = ["u1", "u1", "u2"]
    listens = [("u1", "metadata"), ("u1", "metadata"), ("u1", "other"), ("u2", "metadata")]
    assert operator_connections(urls, listens, per_url=2) == 2 * 2 + 3
    assert operator_connections([], [], per_url=2) == 0


LIMITS = ServerLimits(max_connections=100, superuser_reserved=3, reserved=0, others=12)


@pytest.mark.parametrize(
    ("explicit", "limits", "from_server", "expected", "source"),
    [
        (None, LIMITS, True, 100 - 3 - 10 - 12 - 5, "server"),
        (40, LIMITS, True, 40, "pool"),  # explicit below the server's: explicit
        (90, LIMITS, True, 70, "server"),  # explicit above what the server leaves: the server
        (90, LIMITS, False, 90, "pool"),  # the server not read
        (None, ServerLimits(100, 3, 5, 0), True, 100 - 3 - 5 - 10 - 5, "server"),  # PostgreSQL 16's reserved
        (None, ServerLimits(20, 3, 0, 30), True, 0, "server"),  # others took it all: 0, never negative
        (0, LIMITS, True, 0, "pool"),  # a budget of 0 stops every pool
        (None, None, True, None, "unknown"),  # unknown server max, nothing explicit: not capped
        (None, None, False, None, "unknown"),
        (25, None, True, 25, "pool"),  # unknown server max: the explicit value still holds
    ],
)
def test_budget_of(
    explicit: int | None, limits: ServerLimits | None, from_server: bool, expected: int | None, source: str
) -> None:
    b = budget_of(explicit, "pool", limits, from_server=from_server, reserve=10, operator_conns=5, limits_error="x")
    assert (b.connections, b.source) == (expected, source)
    if source == "server":
        assert "max_connections 100" in b.detail or "max_connections 20" in b.detail
    if expected is None:
        assert ("could not be read (x)" in b.detail) if from_server else ("no budget" in b.detail)


def d(pool: str, wanted: int, *, held: int = 0, minimum: int = 0, per_pod: int = 4, auto: bool = True) -> PoolDemand:
    return PoolDemand(pool, per_pod, minimum, wanted, held, autoscaled=auto)


@pytest.mark.parametrize(
    ("demands", "budget", "shares"),
    [
        # one pool: as many replicas as fit
        ([d("a", 10)], 24, {"a": 6}),
        ([d("a", 3)], 24, {"a": 3}),  # fits: what it wants
        ([d("a", 10)], 23, {"a": 5}),  # a replica never gets part of its connections
        # minimums first, then the rest in proportion to the demand beyond them
        ([d("a", 10, minimum=2), d("b", 4, minimum=2)], 32, {"a": 5, "b": 3}),
        ([d("a", 12), d("b", 4)], 32, {"a": 6, "b": 2}),
        ([d("a", 12), d("b", 2)], 40, {"a": 8, "b": 2}),  # b's whole demand fits; a gets the rest
        # budget below the sum of minimums: the minimums are shared, in proportion, never exceeded
        ([d("a", 4, minimum=4), d("b", 4, minimum=4)], 16, {"a": 2, "b": 2}),
        ([d("a", 6, minimum=6), d("b", 2, minimum=2)], 16, {"a": 3, "b": 1}),
        ([d("a", 4, minimum=4), d("b", 4, minimum=4)], 12, {"a": 2, "b": 1}),  # tie: by name
        # a replica that does not fit leaves room for a smaller pod of another pool
        ([d("a", 5, per_pod=10), d("b", 5, per_pod=2)], 14, {"a": 1, "b": 2}),
        # hand-set pools hold what they hold, first
        ([d("manual", 0, held=3, auto=False), d("a", 10)], 24, {"manual": 3, "a": 3}),
        ([d("manual", 0, held=9, auto=False), d("a", 10, minimum=1)], 24, {"manual": 9, "a": 0}),
        # nothing wanted, nothing given
        ([d("a", 0), d("b", 0, held=5)], 100, {"a": 0, "b": 0}),
        ([d("a", 5)], 0, {"a": 0}),
    ],
)
def test_fair_shares(demands: list[PoolDemand], budget: int, shares: dict[str, int]) -> None:
    got = fair_shares(demands, budget)
    assert got == shares
    assert sum(got[x.pool] * x.per_pod for x in demands) <= max(
        budget, sum(x.held * x.per_pod for x in demands if not x.autoscaled)
    )
    # deterministic: the order the pools come in changes nothing
    assert fair_shares(list(reversed(demands)), budget) == shares


def test_many_pools_share_evenly_and_stay_within_the_budget() -> None:
    """20 pools at 10 replicas x 6 connections (1,200) on PostgreSQL's default 100 connections."""
    demands = [d(f"pool-{i:02}", 10, minimum=1 if i < 5 else 0, per_pod=6) for i in range(20)]
    shares = fair_shares(demands, 84)
    assert sum(shares.values()) * 6 <= 84
    assert sum(shares.values()) == 14  # 84 // 6: nothing wasted
    assert all(shares[f"pool-{i:02}"] >= 1 for i in range(5))  # the minimums came first
    assert max(shares.values()) - min(shares.values()) <= 1  # equal demand, equal shares
    assert shares == fair_shares(sorted(demands, key=lambda x: x.per_pod), 84)


def test_large_fleet_is_fast() -> None:
    """200 pools at 20 replicas: the shares are computed in a round, not a second."""
    import time

    demands = [d(f"p{i:03}", 20, minimum=i % 2, per_pod=4 + i % 3) for i in range(200)]
    t0 = time.perf_counter()
    shares = fair_shares(demands, 5_000)
    assert time.perf_counter() - t0 < 0.5
    assert sum(shares[x.pool] * x.per_pod for x in demands) <= 5_000


B24 = Budget(24, "pool", "24 set by the pool")


@pytest.mark.parametrize(
    ("pool", "demands", "replicas", "limited", "over"),
    [
        ("a", [d("a", 10)], 6, True, ()),
        ("a", [d("a", 4)], 4, False, ()),
        # b holds the whole budget: a gets nothing now, whatever its share, and b is to be woken
        ("a", [d("a", 10), d("b", 10, held=6)], 0, True, ("b",)),
        # then b, at its round, gives back what it holds beyond its share
        ("b", [d("a", 10), d("b", 10, held=6)], 3, True, ()),
        # and a takes its share
        ("a", [d("a", 10), d("b", 10, held=3)], 3, True, ()),
        # scaling down is never held back by the budget
        ("a", [d("a", 1, held=5), d("b", 10, held=3)], 1, False, ()),
        # a pool above its share while the budget shrank is brought down to it
        ("a", [d("a", 10, held=6), d("b", 10, held=0)], 3, True, ()),
    ],
)
def test_grant(pool: str, demands: list[PoolDemand], replicas: int, limited: bool, over: tuple[str, ...]) -> None:
    g = grant(pool, demands, B24)
    assert (g.replicas, g.limited, g.over_share) == (replicas, limited, over)
    assert g.used_connections <= 24 or not limited
    if limited:
        assert "connection budget 24" in g.reason and f"at {replicas} of" in g.reason
        assert "x 4 connections" in g.reason


def test_grant_with_an_unknown_budget_caps_nothing_and_says_why() -> None:
    g = grant("a", [d("a", 50)], Budget(None, "unknown", "the server's limits could not be read (refused)"))
    assert (g.replicas, g.limited) == (50, False)
    assert "could not be read (refused)" in g.reason


def test_hand_set_pools_are_counted_but_never_capped() -> None:
    g = grant("m", [d("m", 0, held=10, auto=False), d("a", 5)], B24)
    assert (g.replicas, g.limited) == (10, False)
    assert g.used_connections == 40
    assert grant("a", [d("m", 0, held=10, auto=False), d("a", 5)], B24).replicas == 0


def test_the_sum_never_exceeds_the_budget_whatever_order_pools_are_evaluated_in() -> None:
    """Pools evaluated one after the other, each with the others' latest holdings, in every order, with
    changing demand: after every single step the pools hold at most the budget."""
    import itertools

    wanted = {"a": 8, "b": 5, "c": 2}
    for order in itertools.permutations("abc"):
        held = {"a": 0, "b": 0, "c": 0}
        for step in range(12):
            if step == 6:
                wanted = {"a": 1, "b": 9, "c": 4}
            p = order[step % 3]
            demands = [d(x, wanted[x], held=held[x]) for x in "abc"]
            held[p] = grant(p, demands, B24).replicas
            assert sum(held.values()) * 4 <= 24, (order, step, held)
        # once everyone had a round after the change, every pool is at its fair share
        assert held == fair_shares([d(x, wanted[x]) for x in "abc"], 24), order


def test_a_rate_limited_step_bounds_the_round_but_not_the_share() -> None:
    """Shares follow what the load asks (wanted); this round's rate-limited step only bounds the grant, so a
    pool's own scale-up limit never hands its share to the others."""
    a = PoolDemand("a", 4, 0, 10, 0, step=2)  # asks for 10, may reach 2 this round
    b = PoolDemand("b", 4, 0, 10, 0)
    assert fair_shares([a, b], 24) == {"a": 3, "b": 3}
    g = grant("a", [a, b], B24)
    assert (g.replicas, g.share, g.limited) == (2, 3, False)  # the rate limit held it, not the budget
    g = grant("b", [PoolDemand("a", 4, 0, 10, 2, step=2), b], B24)
    assert (g.replicas, g.share, g.limited) == (3, 3, True)


def test_shares_hold_their_promises_on_random_fleets() -> None:
    """Seeded random fleets: within the budget, minimums before extras, nobody above its demand, nothing
    left that another replica of a pool still asking would fit in, and the cache changes nothing."""
    import random

    from civic_operator.budget import _compute_shares

    rng = random.Random(11)
    for _ in range(300):
        demands = []
        for i in range(rng.randint(1, 12)):
            wanted = rng.randint(0, 20)
            demands.append(d(f"p{i}", wanted, minimum=rng.randint(0, wanted), per_pod=rng.randint(2, 8)))
        budget = rng.randint(0, 300)
        shares = fair_shares(demands, budget)
        assert shares == _compute_shares(demands, budget)
        used = sum(shares[x.pool] * x.per_pod for x in demands)
        assert used <= budget
        assert all(shares[x.pool] <= x.wanted for x in demands)
        left = budget - used
        assert not any(shares[x.pool] < x.wanted and x.per_pod <= left for x in demands), (demands, budget)
        # A pool short of its minimum: no pool got extras its replica would have fitted in instead.
        for short in (x for x in demands if shares[x.pool] < x.minimum):
            assert not any(shares[x.pool] > x.minimum and x.per_pod >= short.per_pod for x in demands), (
                demands,
                budget,
            )
