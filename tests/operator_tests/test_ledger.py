"""The ledger of connection budgets (civic_operator.ledger) with a recorded server reader: claims,
wake-ups, pools whose URL is not known yet, the server's numbers and their cache; the cap applied to a
scaling decision (scaling.capped); runner pods tagged for counting (manifests); the operator's flags."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from civic_operator import budget, ledger, manifests
from civic_operator.budget import PoolDemand
from civic_operator.ledger import BudgetSettings, Ledger, RawLimits, parse_limits
from civic_operator.main import parse
from civic_operator.manifests import PoolRef
from civic_operator.policy import Policy
from civic_operator.scaling import History, QueueStats, capped, decide

pytestmark = pytest.mark.unit

URL = "postgresql://w:pw@db:5432/civic"
OTHER_DB = "postgresql://w:pw@db:5432/another"  # same server: same budget
OTHER_SERVER = "postgresql://w:pw@db2:5432/civic"


class Wakes:
    def __init__(self) -> None:
        self.woken: list[str] = []

    def of(self, name: str) -> Any:
        return lambda: self.woken.append(name)


def demand(pool: str, wanted: int, held: int = 0, per_pod: int = 4, minimum: int = 0) -> PoolDemand:
    return PoolDemand(pool, per_pod, minimum, wanted, held)


def claim(
    book: Ledger, wakes: Wakes, pool: str, wanted: int, held: int, url: str = URL, settle: bool = True, **kw: Any
) -> Any:
    """A claim and, as the autoscaler does once it has written spec.replicas, its settling."""
    result = book.claim(
        pool,
        demand(pool, wanted, held),
        wakes.of(pool),
        server=budget.server_key(url),
        url=url,
        schema="metadata",
        explicit=kw.pop("explicit", None),
        from_server=kw.pop("from_server", None),
        **kw,
    )
    if settle:
        book.settle(pool, result[0].replicas)
    return result


def test_two_pools_converge_to_their_shares_and_never_exceed_the_budget() -> None:
    book, wakes = Ledger(BudgetSettings(connections=24, from_server=False)), Wakes()
    a, _ = claim(book, wakes, "a", 10, 0)
    assert (a.replicas, a.limited) == (6, True)  # alone: the whole budget
    b, found = claim(book, wakes, "b", 10, 0, url=OTHER_DB)  # another database of the same server
    assert found.connections == 24 and found.source == "operator"
    assert b.replicas == 0 and b.limited  # a holds it all
    assert wakes.woken == ["a"]  # ... and is woken to give back its share
    a, _ = claim(book, wakes, "a", 10, 6)
    assert a.replicas == 3
    assert wakes.woken == ["a", "b"]  # a released connections: the limited pool is woken
    b, _ = claim(book, wakes, "b", 10, 0, url=OTHER_DB)
    assert b.replicas == 3 and b.used_connections == 24
    # steady state: nobody wakes anybody (no ping-pong)
    wakes.woken.clear()
    claim(book, wakes, "a", 10, 3)
    claim(book, wakes, "b", 10, 3, url=OTHER_DB)
    assert wakes.woken == []


def test_pools_on_another_server_have_their_own_budget() -> None:
    book, wakes = Ledger(BudgetSettings(connections=24, from_server=False)), Wakes()
    assert claim(book, wakes, "a", 6, 0)[0].replicas == 6
    assert claim(book, wakes, "b", 6, 0, url=OTHER_SERVER)[0].replicas == 6


def test_the_smallest_explicit_value_of_a_servers_pools_wins_over_the_operators() -> None:
    book, wakes = Ledger(BudgetSettings(connections=100, from_server=False)), Wakes()
    claim(book, wakes, "a", 1, 0, explicit=40)
    _, found = claim(book, wakes, "b", 1, 0, explicit=16)
    assert (found.connections, found.source) == (16, "pool")
    _, found = claim(book, wakes, "c", 1, 0)
    assert found.connections == 16  # c sets none: the server's value is its pools' smallest
    book.forget("b")
    _, found = claim(book, wakes, "c", 1, 0)
    assert found.connections == 40


def test_a_pool_whose_url_is_not_known_yet_counts_against_every_server() -> None:
    book, wakes = Ledger(BudgetSettings(connections=24, from_server=False)), Wakes()
    book.register("unread", demand("unread", 4, held=4), wakes.of("unread"))
    g, _ = claim(book, wakes, "a", 10, 0)
    assert g.replicas == 2  # 24 - 4 x 4 held by the pool not yet placed
    book.forget("unread")
    assert claim(book, wakes, "a", 10, 2)[0].replicas == 6


def test_stats_unavailable_keeps_the_replicas_and_still_counts_them() -> None:
    book, wakes = Ledger(BudgetSettings(connections=24, from_server=False)), Wakes()
    g, _ = claim(book, wakes, "a", 8, 8, cap=False)
    assert g.replicas == 8 and not g.limited
    assert claim(book, wakes, "b", 4, 0)[0].replicas == 0  # a's 32 connections are real


class Reader:
    def __init__(self, limits: RawLimits | Exception) -> None:
        self.limits = limits
        self.calls = 0

    async def __call__(self, url: str) -> RawLimits:
        self.calls += 1
        if isinstance(self.limits, Exception):
            raise self.limits
        return self.limits


def test_the_servers_numbers_count_everyone_else_and_the_operator() -> None:
    tag_a = budget.runner_app_name("a", "ns", "a")
    raw = RawLimits(100, 3, 0, ((tag_a, 8), ("civic-operator", 3), ("PostgREST", 20), ("psql", 1)))
    reader = Reader(raw)
    book, wakes = Ledger(BudgetSettings(reserve=10, stats_conns_per_url=2), reader), Wakes()
    asyncio.run(book.refresh("db:5432", URL))
    asyncio.run(book.refresh("db:5432", URL))  # cached
    assert reader.calls == 1
    g, found = claim(book, wakes, "a", 30, 2)
    # 100 - 3 superuser - 10 reserve - 21 others (a's own 8 and the operator's 3 are not others)
    # - 3 of the operator's (a stats pool of 2 and a LISTEN) = 63
    assert (found.connections, found.source) == (63, "server")
    assert "others 21" in found.detail and "operator 3" in found.detail
    assert g.replicas == 15
    _, found = claim(book, wakes, "b", 1, 0, url=OTHER_DB)  # a second URL: another stats pool and LISTEN
    assert found.connections == 63 - 3


def test_unknown_server_max_caps_nothing_unless_a_value_is_set() -> None:
    reader = Reader(OSError("connection refused"))
    book, wakes = Ledger(BudgetSettings(), reader), Wakes()
    asyncio.run(book.refresh("db:5432", URL))
    g, found = claim(book, wakes, "a", 30, 0)
    assert found.connections is None and "connection refused" in found.detail
    assert g.replicas == 30 and not g.limited
    g, found = claim(book, wakes, "a", 30, 0, explicit=20)
    assert (found.connections, g.replicas) == (20, 5)


def test_reading_the_server_is_skipped_when_every_pool_says_so() -> None:
    reader = Reader(RawLimits(100, 3, 0, ()))
    book, wakes = Ledger(BudgetSettings(), reader), Wakes()
    claim(book, wakes, "a", 1, 0, from_server=False, explicit=50)
    asyncio.run(book.refresh("db:5432", URL))
    assert reader.calls == 0
    claim(book, wakes, "b", 1, 0)  # unset: the operator's default (on), the safe side wins
    asyncio.run(book.refresh("db:5432", URL))
    assert reader.calls == 1


def test_parse_limits_reads_the_querys_row() -> None:
    row = (100, 3, 0, '[["civic-operator", 2], ["", 5]]')
    assert parse_limits(row) == RawLimits(100, 3, 0, (("civic-operator", 2), ("", 5)))


def test_a_capped_decision_records_the_move_it_made() -> None:
    policy = Policy.from_spec({"maxReplicas": 10, "targetPerReplica": 1})
    d = decide(QueueStats(available=8, running=0), policy, History(), 2, 100.0)
    assert d.replicas == 6  # 2 + 4 pods per period
    c = capped(d, 3, 2, 100.0, "connection budget 12 caps it")
    assert c.replicas == 3 and c.reason.endswith("connection budget 12 caps it")
    assert c.history.scale_events == ((100.0, 2, 3),)
    assert c.recommendation == d.recommendation  # the load's ask is kept: the pool grows back later
    same = capped(d, 2, 2, 100.0, "held")
    assert same.replicas == 2 and same.history.scale_events == ()
    assert capped(d, 9, 2, 100.0, "more") is d  # a cap above the decision changes nothing


def test_runner_pods_carry_the_pools_application_name() -> None:
    ref = PoolRef("thumbs", "civic", "0c3f6b8e-9d51-4c1e-a9f1-3a6c0b2d4e5f")
    spec = {"queues": ["thumbnails"], "image": "i", "database": {"secretRef": {"name": "db"}}}
    env = manifests.deployment(ref, spec)["spec"]["template"]["spec"]["containers"][0]["env"]
    app = next(e["value"] for e in env if e["name"] == "PGAPPNAME")
    assert budget.pool_uid_of(app) == ref.uid
    job_env = manifests.job(ref, spec)["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "PGAPPNAME", "value": app} in job_env
    own = manifests.deployment(ref, {**spec, "env": [{"name": "PGAPPNAME", "value": "mine"}]})
    assert [
        e["value"] for e in own["spec"]["template"]["spec"]["containers"][0]["env"] if e["name"] == "PGAPPNAME"
    ] == ["mine"]


def test_operator_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CONNECTION_BUDGET", "CONNECTION_RESERVE", "CONNECTION_BUDGET_FROM_SERVER"):
        monkeypatch.delenv(name, raising=False)
    args = parse([])
    assert (args.connection_budget, args.connection_reserve, args.connection_budget_from_server) == (0, 10, True)
    assert ledger.settings_from(0, 10, True) == BudgetSettings(None, 10, True)
    args = parse(["--connection-budget", "80", "--no-connection-budget-from-server"])
    assert ledger.settings_from(args.connection_budget, 10, args.connection_budget_from_server) == BudgetSettings(
        80, 10, False
    )
    monkeypatch.setenv("CONNECTION_BUDGET", "60")
    monkeypatch.setenv("CONNECTION_BUDGET_FROM_SERVER", "false")
    assert ledger.settings_from_env() == BudgetSettings(60, 10, False)
    assert parse([]).connection_budget_from_server is False


def test_a_budget_set_by_a_pool_not_placed_yet_holds_for_every_server() -> None:
    """At start-up the pool that sets the budget may be evaluated after the others: until its Secret is
    read, its value holds for every server, so the others never scale past it meanwhile."""
    book, wakes = Ledger(BudgetSettings(from_server=False)), Wakes()
    book.register("sets-it", demand("sets-it", 0), wakes.of("sets-it"), explicit=8)
    g, found = claim(book, wakes, "a", 10, 0)
    assert (found.connections, g.replicas) == (8, 2)
    claim(book, wakes, "sets-it", 0, 0, url=OTHER_SERVER, explicit=8)  # placed: on another server after all
    g, found = claim(book, wakes, "a", 10, 2)
    assert (found.connections, g.replicas) == (None, 10)


def test_connections_a_pool_gives_back_are_free_only_once_its_new_count_is_written() -> None:
    book, wakes = Ledger(BudgetSettings(connections=24, from_server=False)), Wakes()
    claim(book, wakes, "a", 6, 0)
    claim(book, wakes, "b", 6, 0)  # blocked: a holds all 24; a is woken
    g, _ = claim(book, wakes, "a", 6, 6, settle=False)  # a shrinks to its share, its patch not written yet
    assert g.replicas == 3
    assert claim(book, wakes, "b", 6, 0, settle=False)[0].replicas == 0  # a's 12 are not free yet
    wakes.woken.clear()
    book.settle("a", 3)
    assert wakes.woken == ["b"]  # now they are, and the pool waiting for them is woken
    assert claim(book, wakes, "b", 6, 0)[0].replicas == 3


def test_at_start_up_a_pool_not_evaluated_yet_keeps_its_share() -> None:
    """The first pool evaluated does not take the whole budget while the others have not asked yet."""
    book, wakes = Ledger(BudgetSettings(connections=24, from_server=False)), Wakes()
    book.register("later", demand("later", 10), wakes.of("later"))  # its maxReplicas: 10
    assert claim(book, wakes, "a", 10, 0)[0].replicas == 3
    book.unplaced_grace = 0  # a Secret that never reads: it then counts with what it holds only
    assert claim(book, wakes, "a", 10, 3)[0].replicas == 6


def test_raising_the_budget_wakes_the_capped_pools() -> None:
    book, wakes = Ledger(BudgetSettings(connections=8, from_server=False)), Wakes()
    claim(book, wakes, "a", 6, 0, explicit=8)
    claim(book, wakes, "b", 6, 0)
    claim(book, wakes, "a", 6, 2, explicit=8)
    assert claim(book, wakes, "b", 6, 0)[0].replicas == 1  # 1 each of 8 connections
    wakes.woken.clear()
    claim(book, wakes, "a", 6, 1, explicit=8)  # the same budget, nothing given back: nobody to wake
    assert wakes.woken == []
    claim(book, wakes, "a", 6, 1, explicit=40)
    assert wakes.woken == ["b"]
