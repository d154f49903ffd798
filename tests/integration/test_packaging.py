"""civic-job-runner as a user gets it: a wheel and an sdist built from a copy of `job-runner/` outside
the checkout, installed into a fresh virtualenv, then `migrate` and `run` from there.

The migrations are package data (`civic_runner/sql/`); the repository's top-level `sql/` is only a
symlink into the package, so nothing the package needs lives outside it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 600) -> str:
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r.stdout


def test_wheel_and_sdist_carry_the_sql_and_work_installed_elsewhere(tmp_path: Path, db_url: str) -> None:
    src = tmp_path / "job-runner"
    shutil.copytree(ROOT / "job-runner", src, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    links = [p for p in src.rglob("*") if p.is_symlink()]
    assert not links, f"the package must not point outside itself: {links}"

    dist = tmp_path / "dist"
    # build's default: the sdist first, then the wheel built from the unpacked sdist, so the wheel
    # proves the sdist is complete.
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(src)], cwd=tmp_path)
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")
    wanted = {
        "river/001_create_river_migration.up.sql",
        "river/006_bulk_unique.up.sql",
        "civic/002_enqueue_triggers.up.sql",
    }
    in_wheel = {
        n.split("civic_runner/sql/", 1)[1] for n in zipfile.ZipFile(wheel).namelist() if "civic_runner/sql/" in n
    }
    with tarfile.open(sdist) as t:
        in_sdist = {n.split("civic_runner/sql/", 1)[1] for n in t.getnames() if "civic_runner/sql/" in n}
    assert wanted <= in_wheel, f"wheel lacks {wanted - in_wheel}"
    assert wanted <= in_sdist, f"sdist lacks {wanted - in_sdist}"

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    _run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(wheel)], cwd=tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(DATABASE_URL=db_url, RIVER_SCHEMA="metadata", LOG_LEVEL="WARNING")
    runner = str(venv / "bin" / "civic-runner")
    where = _run(
        [str(venv / "bin" / "python"), "-c", "import civic_runner; print(civic_runner.__file__)"], tmp_path, env
    )
    assert where.startswith(str(venv)), f"imported from {where}, not the fresh virtualenv"

    _run([runner, "migrate"], cwd=tmp_path, env=env)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO metadata.file_upload_requests (entity_type, entity_id, file_name, file_type) "
            "VALUES ('issues', '7', 'a.jpg', 'image/jpeg')"
        )
    env.update(
        S3_ACCESS_KEY_ID="test",
        S3_SECRET_ACCESS_KEY="test-secret",
        S3_ENDPOINT="http://127.0.0.1:9",  # presigning signs locally; nothing is sent
        CIVIC_QUEUES="s3_signer=2",
        CIVIC_HTTP_PORT="0",
    )
    _run([runner, "run", "--exit-when-idle", "--idle-exit-after", "0.5"], cwd=tmp_path, env=env, timeout=120)
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute("SELECT status, presigned_url FROM metadata.file_upload_requests").fetchone()
    assert row is not None and row[0] == "completed", row
    assert str(row[1]).startswith("http://127.0.0.1:9/civic-os-files/issues/7/"), row
