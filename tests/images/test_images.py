"""Both images, built by scripts/docker/build-images.sh with a real Docker engine (started by
scripts/docker/ensure-docker.sh when none runs), then run as Kubernetes would run them: non-root,
read-only root filesystem with a tmpfs /tmp, all capabilities dropped.

The runner image migrates a PostgreSQL started by the tests, presigns uploads against a SeaweedFS S3
server (which checks signatures: the PUT to the URL must succeed) and thumbnails a JPEG (libvips), a
PDF (pdftoppm) and an HEVC HEIC (heif-convert).
The operator image serves its liveness endpoint and metrics.

These tests never skip: without a working Docker engine they fail and say why.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
import yaml
from civic_runner.migrate import LATEST, MAIN

from devenv import corpus
from devenv.pg import PostgresServer, free_port
from devenv.s3 import SeaweedS3
from tests.pipeline.conftest import create_file_record, file_row, request_upload, upload_request
from tests.support.harness import http_ok, wait_for

pytestmark = pytest.mark.images

ROOT = Path(__file__).resolve().parents[2]
TAG = os.environ.get("CIVIC_IMAGE_TAG", "dev")
RUNNER = f"civic-runner:{TAG}"
OPERATOR = f"civic-operator:{TAG}"
# How Kubernetes runs our pods (see the chart and civic_operator.manifests): the image's own user.
HARDENED = ["--read-only", "--tmpfs", "/tmp:rw,size=256m", "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]


def docker(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        pytest.fail(
            f"docker {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        )
    return proc


@pytest.fixture(scope="session")
def images() -> dict[str, dict[str, Any]]:
    """Engine up, base image present, both images built (cached steps make a rebuild take seconds)."""
    started = time.monotonic()
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "docker" / "build-images.sh")],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(
            "Could not build the images with Docker (scripts/docker/build-images.sh; it installs docker.io and "
            f"starts dockerd as root when needed):\n{proc.stderr[-5000:]}"
        )
    built = {}
    for line in proc.stdout.splitlines():
        name, size, secs = line.split()
        built[name] = {"size": int(size), "seconds": int(secs)}
    assert set(built) == {RUNNER, OPERATOR}, proc.stdout
    print(f"images built in {time.monotonic() - started:.0f}s: {built}")
    return built


def inspect(image: str) -> dict[str, Any]:
    result: list[dict[str, Any]] = json.loads(docker("image", "inspect", image).stdout)
    return result[0]


def sh(image: str, script: str) -> subprocess.CompletedProcess[str]:
    return docker("run", "--rm", "--network", "none", *HARDENED, "--entrypoint", "/bin/sh", image, "-c", script)


# --- what the images are -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "entrypoint", "ports"),
    [(RUNNER, ["civic-runner"], {"8090/tcp"}), (OPERATOR, ["civic-operator"], {"8080/tcp", "9090/tcp"})],
)
def test_image_config(images: dict[str, Any], image: str, entrypoint: list[str], ports: set[str]) -> None:
    config = inspect(image)["Config"]
    assert config["User"] == "10001:10001"
    assert config["Entrypoint"] == entrypoint
    assert set(config["ExposedPorts"]) == ports
    assert not config.get("Healthcheck"), "Kubernetes probes, not a Docker HEALTHCHECK"
    assert sh(image, "id -u; id -g").stdout.split() == ["10001", "10001"]
    # apt-get is in Debian's base; compilers and pip must not be in the final stage.
    tools = sh(image, "for t in gcc cc c++ make pip pip3; do command -v $t; done; true").stdout.split()
    assert tools == [], f"build tools in the final image: {tools}"
    # Nothing of the CA bundle passed to the build as a BuildKit secret is left in the image.
    assert sh(image, "ls /run/secrets 2>/dev/null | wc -l").stdout.strip() == "0"


def test_runner_image_has_libvips_poppler_and_heif(images: dict[str, Any]) -> None:
    out = sh(
        RUNNER,
        'command -v pdftoppm; command -v heif-convert; python3 -c "import pyvips; '
        "print(pyvips.API_mode, pyvips.version(0), pyvips.version(1)); "
        'print(pyvips.Image.black(4, 4).avg())"',
    ).stdout.splitlines()
    assert out[:2] == ["/usr/bin/pdftoppm", "/usr/bin/heif-convert"], out
    api_mode, major, minor = out[2].split()
    # pyvips[binary]'s bundled libvips (job-runner/pyproject.toml), not Debian's 8.14.
    assert api_mode == "True" and (int(major), int(minor)) >= (8, 15), out
    assert out[3] == "0.0"


def test_runner_image_has_no_kopf_and_operator_no_libvips(images: dict[str, Any]) -> None:
    sh(RUNNER, "! python3 -c 'import kopf' 2>/dev/null")
    sh(OPERATOR, "! python3 -c 'import pyvips' 2>/dev/null && ! ls /usr/lib/x86_64-linux-gnu/libvips.so.42 2>/dev/null")


# --- the runner image does real work -----------------------------------------------------------------


@pytest.fixture(scope="module")
def s3() -> Iterator[SeaweedS3]:
    server = SeaweedS3(buckets=("civic-os-files",)).start()
    try:
        yield server
    finally:
        server.destroy()


class Container:
    def __init__(self, image: str, *args: str, env: dict[str, str], name: str) -> None:
        self.name = name
        env_args = [a for k, v in env.items() for a in ("-e", f"{k}={v}")]
        docker("run", "-d", "--name", name, "--network", "host", *HARDENED, *env_args, image, *args)

    def logs(self) -> str:
        out = docker("logs", self.name, check=False)
        return out.stdout + out.stderr

    def running(self) -> bool:
        out = docker("inspect", "-f", "{{.State.Running}}", self.name, check=False)
        return out.stdout.strip() == "true"

    def stop(self, timeout: int = 30) -> int:
        docker("stop", "-t", str(timeout), self.name, timeout=timeout + 30, check=False)
        return int(docker("inspect", "-f", "{{.State.ExitCode}}", self.name).stdout.strip())

    def remove(self) -> None:
        docker("rm", "-f", self.name, check=False)


def settled(read: Callable[[], dict[str, Any]], column: str) -> Callable[[], dict[str, Any] | None]:
    """A wait_for predicate: the row once `column` is completed or failed."""

    def check() -> dict[str, Any] | None:
        row = read()
        return row if row[column] in ("completed", "failed") else None

    return check


def test_runner_image_migrates_presigns_and_thumbnails(
    images: dict[str, Any], pg_server: PostgresServer, db_url: str, s3: SeaweedS3
) -> None:
    env = {"DATABASE_URL": db_url, "RIVER_SCHEMA": "metadata"}
    # civic-runner migrate, in the image, as the chart's hook Job runs it.
    migrate = docker("run", "--rm", "--network", "host", *HARDENED, "-e", f"DATABASE_URL={db_url}", RUNNER, "migrate")
    applied = json.loads(migrate.stdout)
    latest = LATEST[MAIN]  # a fresh database: created at River's latest, + the 2 Civic OS file steps
    assert applied["main"] == latest and len(applied["applied"]) == latest + 2, applied
    status = json.loads(
        docker(
            "run", "--rm", "--network", "host", *HARDENED, "-e", f"DATABASE_URL={db_url}", RUNNER, "migrate", "--status"
        ).stdout
    )
    assert status["main"] == latest, status

    port = free_port()
    run_env = {
        **env,
        **s3.env,
        "CIVIC_KINDS_MODULES": "civic_runner.pipeline",
        "CIVIC_QUEUES": "s3_signer=4,thumbnails=2",
        "CIVIC_HTTP_PORT": str(port),
        "CIVIC_HTTP_HOST": "127.0.0.1",
    }
    runner = Container(RUNNER, "run", env=run_env, name=f"civic-runner-test-{uuid.uuid4().hex[:8]}")
    try:
        wait_for(
            lambda: http_ok(f"http://127.0.0.1:{port}/readyz") or not runner.running(),
            timeout=60,
            what="runner /readyz",
        )
        assert runner.running(), runner.logs()

        # Upload flow: a file_upload_requests row -> s3_presign -> a URL the S3 server accepts.
        uploaded: dict[str, str] = {}
        for name, ftype, data in (
            ("IMG_0001.JPG", "image/jpeg", corpus.jpeg(1600, 1200)),
            ("minutes.pdf", "application/pdf", corpus.pdf(2)),
            ("IMG_0002.HEIC", "image/heic", corpus.heic_hevc(1200, 900)),
        ):
            rid = request_upload(db_url, name, ftype, "issues", "9")
            row = wait_for(
                settled(functools.partial(upload_request, db_url, rid), "status"),
                timeout=30,
                interval=0.05,
                what=f"presigned URL for {name}",
            )
            assert row["status"] == "completed", f"{row['error_message']}\n{runner.logs()[-3000:]}"
            assert str(row["presigned_url"]).startswith(s3.endpoint)
            put = requests.put(
                str(row["presigned_url"]),
                data=data,
                headers={"Content-Type": ftype, "x-amz-acl": "public-read"},
                timeout=10,
            )
            assert put.status_code == 200, put.text
            create_file_record(
                db_url,
                file_id=row["file_id"],
                bucket="civic-os-files",
                key=str(row["s3_key"]),
                file_type=ftype,
                file_size=len(data),
                entity_type="issues",
                entity_id="9",
                file_name=name,
            )
            uploaded[name] = str(row["file_id"])

        # Thumbnails: libvips (JPEG), pdftoppm (PDF) and heif-convert (HEIC) inside the image.
        for name, file_id in uploaded.items():
            row = wait_for(
                settled(functools.partial(file_row, db_url, file_id), "thumbnail_status"),
                timeout=60,
                interval=0.1,
                what=f"thumbnails of {name}",
            )
            assert row["thumbnail_status"] == "completed", f"{name}: {row['thumbnail_error']}\n{runner.logs()[-3000:]}"
            for size in ("small", "medium", "large"):
                key = row[f"s3_thumbnail_{size}_key"]
                assert key and key.startswith(f"issues/9/{file_id}/thumb-{size}.")
                body = s3.client().get_object(Bucket="civic-os-files", Key=key)["Body"].read()
                assert len(body) > 100

        with psycopg.connect(db_url, autocommit=True) as conn:
            states = conn.execute(
                "SELECT kind, state::text, count(*) FROM metadata.river_job GROUP BY 1, 2 ORDER BY 1, 2"
            ).fetchall()
        assert states == [("s3_presign", "completed", 3), ("thumbnail_generate", "completed", 3)], states

        metrics = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        assert "civic_runner_jobs_total" in metrics
        # SIGTERM: graceful shutdown, exit 0 (as in a pod's termination).
        assert runner.stop() == 0, runner.logs()[-3000:]
    finally:
        runner.remove()


# --- the operator image ------------------------------------------------------------------------------


def nowhere_kubeconfig(tmp_path: Path, port: int) -> Path:
    """Credentials for an API server address where nothing listens (kopf needs credentials to start)."""
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "c", "cluster": {"server": f"https://127.0.0.1:{port}", "insecure-skip-tls-verify": True}}
                ],
                "users": [{"name": "u", "user": {"token": "test-token"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u", "namespace": "default"}}],
                "current-context": "c",
            }
        )
    )
    kubeconfig.chmod(0o644)
    tmp_path.chmod(0o755)
    return kubeconfig


def test_operator_image_serves_liveness_and_metrics(images: dict[str, Any], tmp_path: Path) -> None:
    """kopf's /healthz comes up once the operator has credentials, even before the API server answers;
    here the kubeconfig names an address where nothing listens (the cluster tier runs the operator
    against a real control plane)."""
    nowhere = free_port()
    kubeconfig = nowhere_kubeconfig(tmp_path, nowhere)
    live, metrics = free_port(), free_port()
    name = f"civic-operator-test-{uuid.uuid4().hex[:8]}"
    env = [
        "-e", f"LIVENESS_PORT={live}",
        "-e", f"METRICS_PORT={metrics}",
        "-e", "WATCH_NAMESPACES=civic",
        "-e", "KUBECONFIG=/etc/civic/kubeconfig",
    ]  # fmt: skip
    docker(
        "run", "-d", "--name", name, "--network", "host", *HARDENED, *env,
        "-v", f"{kubeconfig}:/etc/civic/kubeconfig:ro", OPERATOR, "--standalone",
    )  # fmt: skip
    try:
        wait_for(lambda: http_ok(f"http://127.0.0.1:{live}/healthz"), timeout=60, what="operator /healthz")
        body = requests.get(f"http://127.0.0.1:{metrics}/metrics", timeout=5).text
        assert "civic_operator" in body, body[:2000]
        logs = docker("logs", name).stdout + docker("logs", name).stderr
        assert "operator starting" in logs
        assert f"127.0.0.1:{nowhere}" in logs, "the operator did not use the mounted kubeconfig"
        docker("stop", "-t", "20", name, timeout=60)
        code = int(docker("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip())
        assert code == 0, logs[-3000:]
    finally:
        docker("rm", "-f", name, check=False)


def chart_test_pod(set_args: list[str]) -> dict[str, Any]:
    """The chart's `helm test` pod, rendered by helm (tests/chart/install-tools.sh provides it)."""
    tools = subprocess.run(
        ["bash", str(ROOT / "tests" / "chart" / "install-tools.sh")], capture_output=True, text=True, check=False
    )
    assert tools.returncode == 0, tools.stderr[-3000:]
    helm = next(ln.split("=", 1)[1] for ln in tools.stdout.splitlines() if ln.startswith("HELM="))
    out = subprocess.run(
        [helm, "template", "rel", str(ROOT / "charts" / "civic-workers"), "-n", "civic", "--kube-version", "1.35.4",
         "--set", "database.secret.name=db", *set_args],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    for doc in yaml.safe_load_all(out):
        if doc and doc["kind"] == "Pod" and doc["metadata"]["annotations"].get("helm.sh/hook") == "test":
            return dict(doc)
    raise AssertionError("no helm test pod rendered")


def test_helm_test_pod_runs_in_the_runner_image(
    images: dict[str, Any], pg_server: PostgresServer, db_url: str, tmp_path: Path
) -> None:
    """What `helm test` runs, in the image itself (the e2e tier runs the same script as a process on kwok):
    it passes on a migrated database with a live operator, and fails when the database is behind."""
    pod = chart_test_pod([])
    (container,) = pod["spec"]["containers"]
    assert container["image"] == RUNNER
    live = free_port()
    op = f"civic-operator-helmtest-{uuid.uuid4().hex[:8]}"
    docker(
        "run", "-d", "--name", op, "--network", "host", *HARDENED, "-e", f"LIVENESS_PORT={live}",
        "-e", "METRICS_PORT=0", "-e", "KUBECONFIG=/etc/civic/kubeconfig",
        "-v", f"{nowhere_kubeconfig(tmp_path, free_port())}:/etc/civic/kubeconfig:ro", OPERATOR, "--standalone",
    )  # fmt: skip
    try:
        wait_for(lambda: http_ok(f"http://127.0.0.1:{live}/healthz"), timeout=60, what="operator /healthz")

        def helm_test(want: str) -> subprocess.CompletedProcess[str]:
            env = {
                "OPERATOR_HEALTHZ": f"http://127.0.0.1:{live}/healthz",
                "DATABASE_URL": db_url,
                "RIVER_SCHEMA": "metadata",
                "WANT_MAIN": want,
            }
            env_args = [a for k, v in env.items() for a in ("-e", f"{k}={v}")]
            return docker(
                "run", "--rm", "--network", "host", *HARDENED, *env_args, "--entrypoint", container["command"][0],
                RUNNER, *container["command"][1:], *container["args"], check=False,
            )  # fmt: skip

        docker("run", "--rm", "--network", "host", *HARDENED, "-e", f"DATABASE_URL={db_url}", RUNNER,
               "migrate", "--target", "6")  # fmt: skip
        behind = helm_test("7")
        assert behind.returncode != 0 and "expected 7" in behind.stderr, behind.stdout + behind.stderr
        ok = helm_test("6")
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "answered 200" in ok.stdout and ok.stdout.strip().endswith("ok"), ok.stdout
    finally:
        docker("rm", "-f", op, check=False)


def test_image_sizes_recorded(images: dict[str, Any]) -> None:
    """docs/helm.md states the sizes; keep them within 10 % of what was built."""
    text = (ROOT / "docs" / "helm.md").read_text()
    for image, info in images.items():
        mb = inspect(image)["Size"] / 1e6
        line = next((ln for ln in text.splitlines() if f"`{image}`" in ln and " MB" in ln), None)
        assert line, f"docs/helm.md has no size line for {image} ({mb:.0f} MB)"
        documented = float(line.split(" MB")[0].split()[-1])
        assert abs(documented - mb) <= 0.1 * mb, f"{image}: documented {documented} MB, built {mb:.0f} MB"
        assert info["size"] > 0
