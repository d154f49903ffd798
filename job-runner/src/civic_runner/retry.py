"""River's default retry policy: (errors so far + 1)^4 seconds, with ±10 % jitter."""

from __future__ import annotations

import random
from datetime import datetime, timedelta

# timedelta cannot hold Go's max Duration (~292 years); this is the same order of magnitude and
# far beyond any real max_attempts.
_MAX_BACKOFF_SECONDS = 290 * 365 * 24 * 3600.0


def backoff_seconds(error_count: int, rand: random.Random | None = None) -> float:
    """Delay before the next attempt, given the number of errors recorded before this failure."""
    base = float((error_count + 1) ** 4)
    if base >= _MAX_BACKOFF_SECONDS:
        return _MAX_BACKOFF_SECONDS
    r = rand.uniform(-0.1, 0.1) if rand is not None else random.uniform(-0.1, 0.1)
    return base + base * r


def next_retry_at(now: datetime, error_count: int, rand: random.Random | None = None) -> datetime:
    return now + timedelta(seconds=backoff_seconds(error_count, rand))
