"""River's official Python client (insert-only, from PyPI) feeding our runner."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import riverqueue
import sqlalchemy
from riverqueue.driver import riversqlalchemy

from tests.support.harness import InProcessRunner, migrate, query, wait_for
from tests.support.kinds import registry

pytestmark = pytest.mark.compat


@dataclass
class EchoArgs:
    value: str
    kind: str = "echo"

    def to_json(self) -> str:
        return json.dumps({"value": self.value})


def client(url: str) -> riverqueue.Client:
    # riverqueue has no schema option: River's tables are found through search_path.
    engine = sqlalchemy.create_engine(
        url.replace("postgresql://", "postgresql+psycopg2://"),
        connect_args={"options": "-c search_path=metadata"},
    )
    return riverqueue.Client(riversqlalchemy.Driver(engine))


def test_riverqueue_python_inserts_are_completed(db_url: str) -> None:
    migrate(db_url)
    c = client(db_url)
    single = c.insert(
        EchoArgs("one"), insert_opts=riverqueue.InsertOpts(queue="default", priority=2, tags=["from-python"])
    )
    many = c.insert_many([EchoArgs(str(i)) for i in range(20)])
    assert single.job.id and many == 20  # riverqueue 0.7 returns the count
    # riverqueue sends no NOTIFY: our runner finds these by polling.
    with InProcessRunner(db_url, registry, fetch_poll_interval=0.2):
        wait_for(
            lambda: query(db_url, "SELECT count(*) FROM metadata.river_job WHERE state='completed'")[0][0] == 21,
            timeout=20,
            what="21 completed",
        )
    row = query(
        db_url, "SELECT priority, tags, metadata->'output' FROM metadata.river_job WHERE id=%s", (single.job.id,)
    )[0]
    assert row == (2, ["from-python"], "one")
