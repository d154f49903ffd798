"""The Civic OS flow on each PostgreSQL major version we support (Civic OS itself runs 17): the
v0.70 fixture installed, `migrate` leaving it as it is, and the frontend's whole upload flow (RPCs,
non-notifying triggers, RLS) through a real runner and S3."""

from __future__ import annotations

import subprocess
import sys

import pytest
from civic_runner.pipeline import Pipeline
from civic_runner.registry import Registry

from devenv import civic_os, corpus
from devenv.s3 import SeaweedS3
from tests.pipeline.conftest import make_config
from tests.pipeline.frontend import CivicOsV070
from tests.pipeline.test_end_to_end import CLAIMED_FAST, POLL, claim_lags, thumbnails_settled, upload_as_the_frontend
from tests.support.harness import InProcessRunner, query

pytestmark = pytest.mark.integration


def test_civic_os_flow(s3_server: SeaweedS3, pg_versioned_url: str, pg_version: str) -> None:
    url = pg_versioned_url
    assert query(url, "SHOW server_version_num")[0][0].startswith(pg_version)
    fe = CivicOsV070.install(url)
    subprocess.run([sys.executable, "-m", "civic_runner.cli", "migrate", "--database-url", url], check=True,
                   capture_output=True)  # fmt: skip
    civic_os.verify(url)
    assert query(url, "SELECT max(version) FROM metadata.river_migration") == [(6,)]
    p = Pipeline(make_config(url, s3_server))
    try:
        with InProcessRunner(url, p.register(Registry()), queues="s3_signer=2,thumbnails=1", fetch_poll_interval=POLL):
            # One at a time: with one thumbnails slot, a second job would wait for the first, and its claim
            # lag would measure that wait rather than the wake-up.
            for name, file_type, data in (
                ("IMG.JPG", "image/jpeg", corpus.jpeg(1600, 1200, orientation=6)),
                ("a.pdf", "application/pdf", corpus.pdf(1)),
            ):
                file_id, _ = upload_as_the_frontend(fe, name, file_type, data)
                row = thumbnails_settled(fe, file_id)
                assert row["thumbnail_status"] == "completed", row["thumbnail_error"]
            lags = claim_lags(url)
            assert len(lags) == 4 and max(lag for _, lag in lags) < CLAIMED_FAST, lags
    finally:
        p.close()
    assert query(url, "SELECT kind, state::text FROM metadata.river_job ORDER BY id") == [
        ("s3_presign", "completed"),
        ("thumbnail_generate", "completed"),
        ("s3_presign", "completed"),
        ("thumbnail_generate", "completed"),
    ]
