"""Exceptions a worker raises to end a job other than by success or an ordinary (retried) error."""

from __future__ import annotations


class JobCancel(Exception):
    """Stop for good: the job ends `cancelled` (River's JobCancel)."""


class PermanentError(Exception):
    """Input that can never succeed: the job is discarded at once instead of retried 25 times."""


class JobSnooze(Exception):
    """Try again after `seconds` without spending an attempt (River's JobSnooze)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"snoozed for {seconds}s")
        self.seconds = seconds
