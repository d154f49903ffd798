"""The listener drops the insert watcher's own announcements only when the watcher already woke
this process's producers directly; anything another backend sent is always dispatched."""

from __future__ import annotations

import pytest
from civic_runner.notifier import is_own_announcement
from civic_runner.watcher import InsertWatcher


@pytest.mark.parametrize(
    ("sender", "own", "wakes_directly", "dropped"),
    [
        (101, 101, True, True),  # the watcher's own pg_notify coming back: its producers were woken
        (202, 101, True, False),  # an inserter's or another runner's watcher's notification
        (101, 101, False, False),  # a watcher that does not wake producers itself: the NOTIFY is the wake
        (202, 101, False, False),
    ],
)
def test_is_own_announcement(sender: int, own: int, wakes_directly: bool, dropped: bool) -> None:
    assert is_own_announcement(sender, own, wakes_directly) is dropped


def test_the_watcher_says_whether_it_wakes_its_producers() -> None:
    assert InsertWatcher("metadata", 0.002, on_announce=lambda queues: None).wakes_own_producers
    assert not InsertWatcher("metadata", 0.002).wakes_own_producers
