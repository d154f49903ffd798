"""The insert watcher's watermark and the start-up diagnosis: pure decisions, table-tested."""

from __future__ import annotations

import pytest
from civic_runner.access import Facts, diagnose, river_needs
from civic_runner.watcher import (
    BUSY_FACTOR,
    HOLE_TTL,
    MAX_HOLES,
    PAGE,
    Page,
    Watermark,
    advance,
    gaps_between,
    is_burst,
    next_wait,
)

pytestmark = pytest.mark.unit


def rows(*spec: tuple[int, str]) -> list[tuple[int, str, str]]:
    return [(i, q, "available" if not q.startswith("later") else "scheduled") for i, q in spec]


def page(mark: Watermark, found: list[tuple[int, str, str]]) -> Page:
    """The Page a tick makes of the rows past the watermark (InsertWatcher.tick's SQL)."""
    fresh = sorted(r for r in found if r[0] > mark.seen)
    ids = [r[0] for r in fresh]
    return Page(
        max(ids, default=mark.seen),
        frozenset(q for _, q, st in fresh if st == "available"),
        gaps_between(mark.seen, ids),
        len(ids) >= PAGE,
    )


def tick(m: Watermark, found: list[tuple[int, str, str]], now: float) -> set[str]:
    holes = [r for r in found if r[0] <= m.seen]
    return advance(m, page(m, found), holes, now)


@pytest.mark.parametrize(
    ("seen", "ids", "gaps"),
    [
        (10, [], ()),
        (10, [11, 12, 13], ()),
        (10, [12], ((11, 11),)),
        (10, [11, 14, 15, 20], ((12, 13), (16, 19))),
        (0, [1_000_000], ((1, 999_999),)),
    ],
)
def test_gaps_between(seen: int, ids: list[int], gaps: tuple[tuple[int, int], ...]) -> None:
    assert gaps_between(seen, ids) == gaps


def test_new_rows_advance_and_announce_their_queues() -> None:
    m = Watermark(10)
    assert tick(m, rows((11, "s3_signer"), (12, "thumbnails"), (13, "s3_signer")), now=0) == {
        "s3_signer",
        "thumbnails",
    }
    assert m.seen == 13 and m.holes == {}


def test_only_available_rows_are_announced() -> None:
    m = Watermark(0)
    assert tick(m, rows((1, "later-q")), now=0) == set()
    assert m.seen == 1


def test_a_skipped_id_is_a_hole_until_it_shows_up() -> None:
    m = Watermark(10)
    tick(m, rows((11, "a"), (14, "a")), now=0)
    assert m.seen == 14 and set(m.holes) == {12, 13}
    # 12 commits later (a concurrent inserter): announced, and no longer a hole.
    assert tick(m, rows((12, "b")), now=0.5) == {"b"}
    assert set(m.holes) == {13} and m.seen == 14


def test_a_hole_expires_rolled_back_ids_are_not_looked_for_ever() -> None:
    m = Watermark(0)
    tick(m, rows((2, "a")), now=0)
    assert set(m.holes) == {1}
    tick(m, [], now=HOLE_TTL + 0.1)
    assert m.holes == {}


def test_holes_are_bounded() -> None:
    m = Watermark(0)
    tick(m, rows((10_000_000, "a")), now=0)  # a sequence jump: only the top of the gap is kept
    assert len(m.holes) == MAX_HOLES and max(m.holes) == 9_999_999
    m2 = Watermark(0)
    tick(m2, rows(*((i * 2, "a") for i in range(1, 2 * MAX_HOLES))), now=0)
    assert len(m2.holes) == MAX_HOLES and min(m2.holes) > MAX_HOLES  # the newest kept


def test_nothing_new_changes_nothing() -> None:
    m = Watermark(5, {3: 0.0})
    assert tick(m, [], now=0.1) == set()
    assert m.seen == 5 and m.holes == {3: 0.0}


@pytest.mark.parametrize(
    ("page_full", "busy", "wait"),
    [(False, False, 0.002), (True, False, 0.0), (True, True, 0.0), (False, True, 0.002 * BUSY_FACTOR)],
)
def test_next_wait(page_full: bool, busy: bool, wait: float) -> None:
    assert next_wait(0.002, page_full, busy) == pytest.approx(wait)


@pytest.mark.parametrize(
    ("seen", "top_now", "burst"),
    [
        (10, 10, False),  # nothing new
        (10, 10 + PAGE, False),  # a full page: read, as the page query reads it
        (10, 11 + PAGE, True),  # more than a page: jumped over, not read
        (0, 1_000_000, True),  # a huge gap in the ids is jumped over too
        (500, 20, False),  # ids went backwards (the sequence was reset): the resync's business
    ],
)
def test_is_burst(seen: int, top_now: int, burst: bool) -> None:
    assert is_burst(seen, top_now) is burst


def test_a_jumped_burst_moves_the_watermark_to_the_top_without_holes() -> None:
    """InsertWatcher.tick's Page for a burst: the table's top, the queues with available jobs, no gaps."""
    m = Watermark(10, holes={5: 0.0})
    assert advance(m, Page(50_000, frozenset({"default", "other"})), [], now=0.1) == {"default", "other"}
    assert m.seen == 50_000 and set(m.holes) == {5}  # earlier holes are still looked for


def facts(**kw: object) -> Facts:
    base: dict[str, object] = {
        "role": "civic_worker",
        "schema_exists": True,
        "schema_usage": True,
        "river_version": 6,
        "privileges": {(n.table, p): True for n in river_needs(True) for p in n.privileges},
    }
    base.update(kw)
    return Facts(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "says"),
    [
        ({}, None),
        ({"river_version": 7}, None),
        ({"schema_exists": False}, 'schema "metadata" does not exist'),
        ({"schema_usage": False}, 'permission denied for schema "metadata"'),
        ({"river_version": 0}, 'River\'s schema in "metadata" is missing'),
        ({"river_version": 5}, "is at version 5, the runner needs 6"),
        ({"privileges": {("river_job", "SELECT"): True, ("files", "UPDATE"): None}}, '"metadata"."files" do not exist'),
        (
            {"privileges": {("river_job", "SELECT"): True, ("files", "UPDATE"): False, ("files", "SELECT"): False}},
            'lacks SELECT, UPDATE on "metadata"."files": GRANT SELECT, UPDATE ON "metadata"."files" TO "civic_worker";',
        ),
    ],
)
def test_diagnose(kw: dict[str, object], says: str | None) -> None:
    problem = diagnose(facts(**kw), "metadata")
    if says is None:
        assert problem is None
    else:
        assert problem is not None and says in problem, problem


def test_needs_without_maintenance_are_fewer() -> None:
    with_m = {(n.table, p) for n in river_needs(True) for p in n.privileges}
    without = {(n.table, p) for n in river_needs(False) for p in n.privileges}
    assert without < with_m
    assert ("river_leader", "INSERT") in with_m - without and ("river_job", "DELETE") in with_m - without
