"""A saturated queue's next claim waits for most of its slots to free (full batches under load), but only
for REFILL_GATHER: slots freed beside jobs that keep running are not left idle until those end."""

from __future__ import annotations

import pytest

from tests.support.harness import InProcessRunner, insert, migrate, query, wait_for
from tests.support.kinds import registry

pytestmark = pytest.mark.integration


def test_slots_beside_long_jobs_are_refilled(db_url: str) -> None:
    migrate(db_url)
    # Ten workers; two jobs hold two of them for 6 s, so at most eight slots are ever free, short of the
    # nine that refill_ready asks for: only the bounded wait lets the short jobs through meanwhile.
    long_ids = insert(db_url, "sleep", {"seconds": 6})
    long_ids += insert(db_url, "sleep", {"seconds": 6})
    short_ids = insert(db_url, "sleep", {"seconds": 0.05}, count=40)
    # No poll to refill the queue meanwhile: only a freed slot (or its bounded wait) triggers a claim.
    with InProcessRunner(db_url, registry, queues="default=10", fetch_poll_interval=30):

        def states(ids: list[int]) -> list[str]:
            return [
                r[0] for r in query(db_url, "SELECT state::text FROM metadata.river_job WHERE id = ANY(%s)", (ids,))
            ]

        wait_for(lambda: states(long_ids) == ["running", "running"], timeout=5, what="long jobs running")
        wait_for(lambda: set(states(short_ids)) == {"completed"}, timeout=4.5, what="short jobs done beside them")
        assert states(long_ids) == ["running", "running"]
