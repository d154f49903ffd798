"""The cluster tier: a real control plane (local kwokctl binary runtime by default, kind with
`--cluster=kind`), PostgreSQL, the operator as a process, and real runner processes for pods."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from devenv import processes
from devenv.clusters import REAL_NODE_IP, TEST_IMAGE, Cluster, make_cluster
from devenv.pg import PostgresServer
from devenv.s3 import SeaweedS3
from tests.support.harness import migrate

ROOT = Path(__file__).resolve().parents[2]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.cluster)


@pytest.fixture(scope="session")
def cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    c = make_cluster(request.config.getoption("--cluster"))
    c.up()
    c.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "crds" / "civicworkerpool.yaml"))
    c.kubectl(
        "apply", "--server-side", "--force-conflicts", "-f", str(ROOT / "charts/civic-workers/crds/kopf-peerings.yaml")
    )
    c.kubectl(
        "wait",
        "--for=condition=Established",
        "crd/civicworkerpools.workers.civic-os.org",
        "crd/kopfpeerings.kopf.dev",
        "crd/clusterkopfpeerings.kopf.dev",
        "--timeout=60s",
    )
    yield c
    c.teardown()


@pytest.fixture(scope="session")
def e2e_pg(request: pytest.FixtureRequest, cluster: Cluster) -> Iterator[PostgresServer]:
    if request.config.getoption("--cluster") == "kind":
        # Real pods connect from the kind network: listen beyond loopback and trust that network only.
        server = PostgresServer(settings={"listen_addresses": "'*'"})
        server.init()
        with open(server.data / "pg_hba.conf", "a") as f:
            f.write("host all all 172.16.0.0/12 trust\n")
    else:
        # Pods of the real node connect from its bridge (which `cluster` made): listen on loopback and the
        # bridge address only, and trust the bridge's subnet only.
        server = PostgresServer(settings={"listen_addresses": f"'127.0.0.1,{REAL_NODE_IP}'"})
        server.init()
        with open(server.data / "pg_hba.conf", "a") as f:
            f.write(f"host all all {REAL_NODE_IP}/24 trust\n")
    server.start()
    yield server
    # A runner stops at once on SIGTERM while its database answers; with the database gone it waits out
    # its pool's connection timeouts first (~60 s, measured), which the real node's `down` would wait
    # for: let the tests' namespaces, deleted without waiting, take their pods with them first.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and any(
        n.startswith("namespace/e2e-") for n in cluster.kubectl("get", "namespaces", "-o", "name").split()
    ):
        time.sleep(0.5)
    server.destroy()


@pytest.fixture(scope="session")
def e2e_s3(cluster: Cluster) -> Iterator[SeaweedS3]:
    """SeaweedFS for the pipeline's pods: its S3 API listens on loopback and on the address pods reach
    the host at (the real node's bridge), nothing else; the tests' own clients use that address too."""
    server = SeaweedS3(s3_ip=cluster.address_for_pods()).start()
    yield server
    server.destroy()


@pytest.fixture
def s3_secret(e2e_s3: SeaweedS3, cluster: Cluster, namespace: str) -> SeaweedS3:
    """The Secret `s3` a pool's `s3.secretRef` names: the pipeline's S3 settings under Civic OS's names."""
    cluster.create_secret(namespace, "s3", e2e_s3.env)
    return e2e_s3


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    ns = f"e2e-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", ns)
    yield ns
    cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


@pytest.fixture
def database(e2e_pg: PostgresServer, cluster: Cluster, namespace: str) -> str:
    """A migrated database for this test and the Secret pools reference (`db`)."""
    url = e2e_pg.create_database(namespace.replace("-", "_"))
    migrate(url, civic=True)
    cluster.create_secret(namespace, "db", {"DATABASE_URL": cluster.database_url_for_pods(url)})
    return url


class OperatorProcess:
    def __init__(
        self,
        cluster: Cluster,
        namespace: str,
        kubeconfig: Path,
        log_path: Path,
        *,
        peering: bool = False,
        env: dict[str, str] | None = None,
        liveness_port: int = 0,
    ) -> None:
        self.args = [
            sys.executable,
            "-m",
            "civic_operator.main",
            *([] if peering else ["--standalone"]),
            "--namespace",
            namespace,
            "--liveness-port",
            str(liveness_port),
            "--metrics-port",
            "0",
        ]
        self.env = {
            **os.environ,
            "KUBECONFIG": str(kubeconfig),
            "PYTHONPATH": str(ROOT),
            "LOG_LEVEL": "INFO",
            **(env or {}),
        }
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProcess:
        out = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=out, stderr=out, cwd=ROOT)
        return self

    def kill(self) -> None:
        assert self.proc
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        processes.stop(self.proc, grace=20)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def operator(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    """civic-operator with the rights of a ServiceAccount bound to the chart's Role, not the admin's."""
    kubeconfig = cluster.operator_kubeconfig(namespace, tmp_path)
    op = OperatorProcess(cluster, namespace, kubeconfig, tmp_path / "operator.log").start()
    yield op
    op.stop()


def real_pods(cluster: Cluster, **spec: Any) -> dict[str, Any]:
    """A pool spec whose pods run as containers (on the real node, or anywhere on kind) of the runner
    image with the tests' job kinds."""
    template = {**spec.pop("template", {}), **cluster.real_pod_placement()}
    return {"image": TEST_IMAGE, "template": template, **spec}


def pool_manifest(name: str, namespace: str, **spec: Any) -> str:
    body = {
        "apiVersion": "workers.civic-os.org/v1alpha1",
        "kind": "CivicWorkerPool",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "queues": ["e2e"],
            "image": "civic-runner:dev",
            "database": {"secretRef": {"name": "db"}},
            "kindsModules": "tests.support.kinds",
            **spec,
        },
    }
    return json.dumps(body)


def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"{what}: not true after {timeout}s (last value {last!r})")
