"""Which finished jobs get a log line of their own.

A JSON line per completed job is what a user reading `kubectl logs` at Civic OS's rates (a few uploads a
second) wants, and at thousands of jobs a second it was a third of the runner's CPU (bench/RESULTS.md,
profile). River writes nothing per job; zap and slog sample. The runner does what zap's sampler does: up
to `rate` `job completed` lines per second (a token bucket, so a burst of `rate` lines passes at once);
completions beyond that are counted and reported in one `jobs completed` summary line per interval, so
the log never hides how much work was done. Failures, snoozes and interrupts are logged one by one
always: they are rare, and each is worth reading.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class JobLogSampler:
    rate: float  # lines per second; < 0: every job; 0: none (summaries only)
    tokens: float = 0.0
    last: float | None = None  # monotonic time of the last admit
    # (kind, queue) -> completions without a line of their own, since the last summary
    unlogged: dict[tuple[str, str], int] = field(default_factory=dict)
    logged: int = 0

    def admit(self, now: float, kind: str, queue: str) -> bool:
        """May this completion, at monotonic time `now`, have a line of its own? If not, it is counted."""
        if self.rate < 0:
            return True
        if self.rate == 0:
            self.count_unlogged(kind, queue)
            return False
        burst = max(self.rate, 1.0)  # under one line a second the bucket still holds one
        if self.last is None:
            self.tokens = burst
        else:
            self.tokens = min(burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            self.logged += 1
            return True
        self.count_unlogged(kind, queue)
        return False

    def count_unlogged(self, kind: str, queue: str) -> None:
        key = (kind, queue)
        self.unlogged[key] = self.unlogged.get(key, 0) + 1

    def take_summary(self, interval: float) -> dict[str, Any] | None:
        """The summary line's fields for the completions since the last call that had no line of their own
        (None: there were none, every one was logged), and start counting afresh."""
        logged, self.logged = self.logged, 0
        if not self.unlogged:
            return None
        counts, self.unlogged = self.unlogged, {}
        unlogged = sum(counts.values())
        by_kind: dict[str, int] = {}
        for (kind, _), n in counts.items():
            by_kind[kind] = by_kind.get(kind, 0) + n
        return {
            "jobs": unlogged + logged,
            "logged_each": logged,
            "not_logged_each": unlogged,
            "kinds": dict(sorted(by_kind.items())),
            "queues": sorted({q for _, q in counts}),
            "interval_s": round(interval, 3),
            "per_second": round((unlogged + logged) / interval, 1) if interval > 0 else None,
        }
