"""The throwaway servers the tests start: a port found free but taken before the server binds it
(another process got there first) must not fail a test run."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import psycopg
import pytest

from devenv.pg import PostgresServer
from devenv.s3 import SeaweedS3

pytestmark = pytest.mark.integration


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield int(s.getsockname()[1])


def test_postgres_moves_off_a_taken_port(taken_port: int) -> None:
    server = PostgresServer()
    server.port = taken_port  # as if someone bound it between free_port() and the server's start
    try:
        server.start()
        assert server.port != taken_port
        with psycopg.connect(server.url()) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        server.restart()  # a restart keeps the port it ended up with
        with psycopg.connect(server.url()) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        server.destroy()


def test_seaweedfs_moves_off_a_taken_port(taken_port: int) -> None:
    server = SeaweedS3()
    server.ports["filer_grpc"] = taken_port
    try:
        server.start()
        assert taken_port not in server.ports.values()
        server.client().put_object(Bucket=server.buckets[0], Key="k", Body=b"v")
    finally:
        server.destroy()
