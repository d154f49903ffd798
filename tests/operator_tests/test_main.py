"""The operator's command line: peering priorities."""

from __future__ import annotations

import random

import pytest
from civic_operator.main import parse, peering_priority

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("value", "expected"), [("0", 0), ("100", 100), ("-5", -5), (" 7 ", 7)])
def test_integer_priority(value: str, expected: int) -> None:
    assert peering_priority(value) == expected


def test_random_priorities_are_positive_and_distinct() -> None:
    drawn = {peering_priority("random") for _ in range(200)}
    assert len(drawn) == 200
    assert all(0 < p < 2**31 for p in drawn)
    assert peering_priority("RANDOM", random.Random(1)) == peering_priority("random", random.Random(1))


def test_bad_priority_is_a_clear_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse(["--priority", "high"])
    assert exit_info.value.code == 2
    assert "peering priority must be an integer or 'random', not 'high'" in capsys.readouterr().err


def test_priority_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PEERING_PRIORITY", "random")
    first, second = parse([]).priority, parse([]).priority
    assert isinstance(first, int) and first != second
    monkeypatch.setenv("PEERING_PRIORITY", "42")
    assert parse([]).priority == 42
