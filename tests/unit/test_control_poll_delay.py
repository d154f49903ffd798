"""The control poll's spread: never past its interval, so a lost pause or cancel notification (River UI's,
River's) takes effect within the interval (tests/compat/test_riverui_browser.py measures it)."""

from __future__ import annotations

import pytest
from civic_runner.producer import control_poll_delay

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("interval", "r", "delay"),
    [
        (60.0, 0.0, 48.0),
        (60.0, 0.5, 54.0),
        (60.0, 0.999999, 59.999988),
        (2.0, 0.0, 1.6),
        (2.0, 0.999999, 1.9999996),
    ],
)
def test_delay_is_spread_below_the_interval(interval: float, r: float, delay: float) -> None:
    assert control_poll_delay(interval, r) == pytest.approx(delay)
    assert 0.8 * interval <= control_poll_delay(interval, r) <= interval
