"""The SQL blocks of docs/operations.md, run verbatim on a migrated database with jobs in every state a runbook
looks at: each one runs without error, and the dead-letter retry (```sql retry-discarded) gives the discarded
thumbnails back to a runner, which completes them."""

from __future__ import annotations

import re

import psycopg
import pytest

from tests.docs.markdown import FENCE, ROOT, fenced_block
from tests.support.harness import InProcessRunner, insert, migrate, query, wait_for
from tests.support.kinds import registry

pytestmark = pytest.mark.integration

PAGE = ROOT / "docs" / "operations.md"


def sql_blocks() -> list[str]:
    """Every ```sql block of the page, dedented (some sit in list items)."""
    blocks, body, indent = [], None, 0
    for line in PAGE.read_text().splitlines():
        m = FENCE.match(line.strip())
        if body is None and m and m.group(2).split()[:1] == ["sql"]:
            body, indent = [], len(line) - len(line.lstrip())
        elif body is not None and m:
            blocks.append("\n".join(body))
            body = None
        elif body is not None:
            body.append(line[indent:])
    return blocks


def test_runbook_queries_run(db_url: str) -> None:
    migrate(db_url)
    insert(db_url, "noop", count=3, queue="thumbnails", state="available")
    insert(db_url, "noop", queue="thumbnails", state="running", attempted_at=None)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE metadata.river_job SET attempted_at = now() - interval '1 hour', "
            "attempted_by = ARRAY['gone-pod_2026_01_01T00_00_00_000000'] WHERE state = 'running'"
        )
    blocks = sql_blocks()
    assert len(blocks) >= 5, blocks
    for sql in blocks:
        if sql.lstrip().upper().startswith("UPDATE"):  # the dead-letter retry: the next test
            continue
        with psycopg.connect(db_url, autocommit=True) as conn:
            for statement in filter(str.strip, sql.split(";")):
                conn.execute(statement.encode())
    stuck = next(b for b in blocks if "state = 'running'" in b)
    rows = query(db_url, stuck)
    assert [r[-1] for r in rows] == ["gone-pod_2026_01_01T00_00_00_000000"], rows


def test_dead_letter_retry_completes_the_jobs(db_url: str) -> None:
    migrate(db_url)
    ids = insert(db_url, "noop", count=2, queue="thumbnails")
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE metadata.river_job SET state = 'discarded', attempt = max_attempts, finalized_at = now(), "
            "attempted_at = now() WHERE id = ANY(%s)",
            (ids,),
        )
        other = insert(db_url, "noop", queue="default")
        conn.execute(
            "UPDATE metadata.river_job SET state = 'discarded', finalized_at = now() WHERE id = ANY(%s)", (other,)
        )
    retry = fenced_block(PAGE.read_text(), "retry-discarded")
    assert re.search(r"queue = 'thumbnails'", retry)
    with psycopg.connect(db_url, autocommit=True) as conn:
        assert conn.execute(retry.encode()).rowcount == 2
    with InProcessRunner(db_url, registry, queues="thumbnails=2"):
        wait_for(
            lambda: (
                query(
                    db_url, "SELECT count(*) FROM metadata.river_job WHERE id = ANY(%s) AND state = 'completed'", (ids,)
                )
                == [(2,)]
            ),
            20,
            what="the retried jobs completed",
        )
    assert query(db_url, "SELECT state::text FROM metadata.river_job WHERE id = ANY(%s)", (other,)) == [("discarded",)]
