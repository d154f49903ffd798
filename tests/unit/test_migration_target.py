"""Which River version `migrate` moves to: never someone else's schema unless told."""

from __future__ import annotations

import pytest
from civic_runner.migrate import LATEST, MAIN, choose_target

pytestmark = pytest.mark.unit

CIVIC_OS = "Civic OS (its hand-vendored River: river_migration has an id column)"


def test_latest_is_river_0_48s_line() -> None:
    assert LATEST[MAIN] == 8  # 008 job_id_autoincrement, River 0.48..0.51.2


@pytest.mark.parametrize(
    ("current", "ours", "requested", "target", "says"),
    [
        # A fresh database: ours to create, at the latest.
        (0, True, None, 8, "no River schema here"),
        (0, True, 6, 6, "--target 6 given"),
        (0, True, 7, 7, "--target 7 given"),  # River 0.47's line (its CLI does not know 8)
        # A schema we created follows the latest.
        (6, True, None, 8, "created by civic-runner"),
        (7, True, None, 8, "created by civic-runner"),
        (8, True, None, 8, "created by civic-runner"),
        # Someone else's (Civic OS ships 6; River 0.47 users have 7, River 0.48+ users 8): left as it is.
        (6, False, None, 6, "left at 6; pass --target N"),
        (7, False, None, 7, "left at 7"),
        (8, False, None, 8, "left at 8"),
        (6, False, 7, 7, "--target 7 given"),
        (7, False, 8, 8, "--target 8 given"),
        (6, False, 6, 6, "--target 6 given"),
        # Too old for the runner: still not changed, but the reason says what to do.
        (4, False, None, 4, "needs 6 or later: pass --target 6 (or 8)"),
        # A target below the current is no down-migration.
        (7, False, 6, 7, "below the current 7"),
        (8, True, 7, 8, "`migrate --down` reverts"),
    ],
)
def test_choose_target(current: int, ours: bool, requested: int | None, target: int, says: str) -> None:
    d = choose_target(current, ours, requested, LATEST[MAIN], CIVIC_OS)
    assert d.target == target
    assert says in d.reason


def test_reason_names_who_created_the_schema() -> None:
    assert CIVIC_OS in choose_target(6, False, None, LATEST[MAIN], CIVIC_OS).reason
