"""README's small example, as a user follows it: `make run` in one terminal, then, once it logs `runner started`,
the README's ```sh make-run-example block in another. The five jobs it enqueues must end `completed`, and the
block's `jobs list` and `stats` must say so.

`make run` runs its own recipe for real (scripts/localdb.py start, `civic-runner migrate`, `civic-runner run`),
with two things changed from a user's machine: `CIVIC_LOCALDB_PORT` points scripts/localdb.py at the tests'
throwaway PostgreSQL (it finds a server answering there and starts none of its own, so the persistent local
database is not touched), and `CIVIC_HTTP_PORT=0` keeps the runner off port 8090. Its prerequisites `deps` and
`venv` are taken as made (`make -o deps -o venv`): the tiers' own make targets made them. The block's lines run
verbatim in bash, from the repository's root.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from devenv.pg import PostgresServer
from devenv.s3 import SeaweedS3
from tests.docs.markdown import ROOT, fenced_block, shell_commands
from tests.support.harness import wait_for

pytestmark = pytest.mark.integration

LOCALDB_NAME = "civic"  # the database scripts/localdb.py creates and names in its URL


JOB_ROW = re.compile(r"^\s*(\d+)\s+([a-z]+)\s+(\S+)\s+(\S+)\s+\d+/\d+\s")


def listed(output: str) -> dict[int, tuple[str, str, str]]:
    """`civic-runner jobs list`'s rows: id -> (state, queue, kind)."""
    return {int(m[1]): (m[2], m[3], m[4]) for m in map(JOB_ROW.match, output.splitlines()) if m}


def block() -> str:
    return fenced_block((ROOT / "README.md").read_text(), "make-run-example")


def test_block_is_the_documented_commands() -> None:
    lines = [ln for ln in block().splitlines() if ln.strip()]
    assert lines[0] == "export DATABASE_URL=$(.venv/bin/python scripts/localdb.py url)"
    assert """.venv/bin/civic-runner enqueue benchmark --args '{"num": 1}' --count 5""" in lines
    assert any(ln.startswith(".venv/bin/civic-runner jobs list") for ln in lines)
    assert ".venv/bin/civic-runner stats" in lines


@contextlib.contextmanager
def make_run(command: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`make run` as a user starts it in a terminal, until it logs `runner started`; Ctrl-C at the end,
    which must stop the runner gracefully."""
    with open(log, "wb") as out:
        make = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: Ctrl-C reaches make and the runner, as in a terminal
        )
    try:
        wait_for(
            lambda: make.poll() is not None or "runner started" in log.read_text(),
            60,
            what="`make run` to log `runner started`",
        )
        assert make.poll() is None, f"make run exited {make.returncode}:\n{log.read_text()[-3000:]}"
        yield make
    finally:
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGINT)
        try:
            make.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(make.pid, signal.SIGKILL)
            make.wait(10)
    assert "runner stopped" in log.read_text(), "Ctrl-C did not stop the runner gracefully:\n" + log.read_text()[-3000:]


def user_env(pg_server: PostgresServer) -> dict[str, str]:
    env = {
        **os.environ,
        "CIVIC_LOCALDB_PORT": str(pg_server.port),
        "CIVIC_HTTP_PORT": "0",
    }
    for name in ("DATABASE_URL", "CIVIC_QUEUES", "CIVIC_KINDS_MODULES", "RIVER_SCHEMA", "CIVIC_SCHEMA"):
        env.pop(name, None)  # a user's shell has none of these set
    return env


MAKE = ["make", "--no-print-directory", "-o", "deps", "-o", "venv"]


def useful_commands() -> list[str]:
    """The inline `civic-runner …` commands of getting-started's "Useful commands against it" sentence."""
    text = (ROOT / "docs" / "getting-started.md").read_text()
    sentence = text[text.index("Useful commands against it") :].split("\n\n")[0]
    commands = re.findall(r"`(civic-runner [^`]+)`", sentence)
    assert len(commands) == 6, sentence
    return commands


def test_make_run_then_the_readme_commands(pg_server: PostgresServer, tmp_path: Path) -> None:
    pg_server.create_database(LOCALDB_NAME)
    url = pg_server.url(LOCALDB_NAME)
    env = user_env(pg_server)
    with make_run([*MAKE, "run"], env, tmp_path / "make-run.log"):
        script = tmp_path / "example.sh"
        script.write_text("set -euo pipefail\n" + block())
        first = subprocess.run(
            ["bash", str(script)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert first.returncode == 0, first.stdout + first.stderr
        inserted = json.loads(first.stdout[: first.stdout.index("}") + 1])
        assert inserted["inserted"] == 5
        ids = inserted["ids"]

        def states() -> list[str]:
            with psycopg.connect(url) as conn:
                rows = conn.execute("SELECT state::text FROM metadata.river_job WHERE id = ANY(%s)", (ids,)).fetchall()
            return [r[0] for r in rows]

        wait_for(lambda: states() == ["completed"] * 5, 10, what="the five jobs completed")

        assert set(listed(first.stdout)) == set(ids), (
            f"`jobs list --limit 5` does not list the five jobs:\n{first.stdout}"
        )

        # The block's `jobs list` and `stats` again, without its enqueue, now that the jobs are done.
        looks = tmp_path / "look.sh"
        looks.write_text("".join(ln + "\n" for ln in script.read_text().splitlines() if " enqueue " not in ln))
        again = subprocess.run(
            ["bash", str(looks)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=False
        )
        assert again.returncode == 0, again.stdout + again.stderr
        assert listed(again.stdout) == {i: ("completed", "default", "benchmark") for i in ids}, again.stdout
        depth = next(ln for ln in again.stdout.splitlines() if ln.strip().startswith("default "))
        assert depth.split()[1:] == ["completed=5"], again.stdout

        # getting-started's "Useful commands against it", in the order given, on the first of the five jobs.
        for command in useful_commands():
            line = command.replace(" ID", f" {ids[0]}")
            r = subprocess.run(
                ["bash", "-c", f"{block().splitlines()[0]}\n.venv/bin/{line}"],
                cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert r.returncode == 0, f"{line}: {r.stdout}{r.stderr}"
            if " show " in line or " retry " in line:
                assert f'"id": {ids[0]}' in r.stdout, (line, r.stdout)
            if "--json" in line:
                assert json.loads(r.stdout)
            if " retry " in line:  # the completed job is available again: the runner works it once more
                wait_for(lambda: states() == ["completed"] * 5, 10, what="the retried job completed again")


def test_make_run_with_the_file_pipeline(pg_server: PostgresServer, tmp_path: Path) -> None:
    """getting-started's ```sh make-run-pipeline, with the S3 variables it asks for set (a SeaweedFS of the
    test's): the runner serves Civic OS's two queues, and an upload request gets its presigned URL."""
    (command,) = shell_commands(fenced_block((ROOT / "docs" / "getting-started.md").read_text(), "make-run-pipeline"))
    assignments, make_words = command.split(" make ")[0].split(), ["make", *command.split(" make ")[1].split()]
    assert make_words == ["make", "run"], command
    pg_server.create_database(LOCALDB_NAME)
    url = pg_server.url(LOCALDB_NAME)
    with SeaweedS3() as s3:
        env = {**user_env(pg_server), **s3.env, **dict(a.split("=", 1) for a in assignments)}
        log = tmp_path / "make-run.log"
        with make_run([*MAKE, "run"], env, log):
            started = next(json.loads(ln) for ln in log.read_text().splitlines() if '"runner started"' in ln)
            assert {"s3_signer", "thumbnails"} <= set(json.dumps(started).replace('"', " ").split()), started
            with psycopg.connect(url, autocommit=True) as conn:
                (request,) = conn.execute(
                    """INSERT INTO metadata.file_upload_requests (entity_type, entity_id, file_name, file_type)
                       VALUES ('issues', '1', 'photo.jpg', 'image/jpeg') RETURNING id"""
                ).fetchone() or (None,)

                def presigned() -> tuple[str, str] | None:
                    row = conn.execute(
                        "SELECT status, presigned_url FROM metadata.file_upload_requests WHERE id = %s", (request,)
                    ).fetchone()
                    return (row[0], row[1]) if row and row[0] != "pending" else None

                status, presigned_url = wait_for(presigned, 20, what="the upload request presigned")
            assert status == "completed" and presigned_url.startswith(s3.endpoint), (status, presigned_url)
