"""River UI from the chart as a real pod (ui.enabled): the image civic-riverui:dev (River UI v0.22.0's binary
from its Go module, scripts/riverui/build-image.sh; River's published image cannot be pulled here) on the real
node, in a namespace that enforces the restricted Pod Security Standard, connected as docs/helm.md's role
from an existing Secret, with basic auth from another. Its probes make it Ready; its health endpoint answers
without the login, its API only with it, and lists the jobs of the database."""

from __future__ import annotations

import base64
import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from devenv.clusters import CHART, RIVERUI_IMAGE, Cluster, build_riverui_image
from tests.docs.markdown import fenced_block
from tests.support.harness import insert, wait_for

ROOT = Path(__file__).resolve().parents[2]
RELEASE = "ui"
NAME = f"{RELEASE}-civic-workers-riverui"
LOGIN = ("admin", "e2e-river-ui")


@pytest.fixture(scope="module")
def riverui_image(cluster: Cluster) -> str:
    build_riverui_image()
    cluster.load_image(RIVERUI_IMAGE)
    return RIVERUI_IMAGE


def get(url: str, login: tuple[str, str] | None = None) -> tuple[int, Any]:
    headers = {}
    if login:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(login).encode()).decode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, None


@pytest.fixture
def release(cluster: Cluster, namespace: str, database: str, riverui_image: str, tmp_path: Path) -> Iterator[str]:
    role = f"civic_riverui_e2e_{os.getpid()}_{namespace.replace('-', '_')}"
    sql = fenced_block((ROOT / "docs" / "helm.md").read_text(), "riverui-role").replace("civic_riverui", role)
    with psycopg.connect(database, autocommit=True) as conn:
        conn.execute(sql)
    ui_url = cluster.database_url_for_pods(database).replace("postgresql://postgres@", f"postgresql://{role}@")
    cluster.create_secret(namespace, "riverui-db", {"DATABASE_URL": ui_url})
    cluster.create_secret(
        namespace, "riverui-login", {"RIVER_BASIC_AUTH_USER": LOGIN[0], "RIVER_BASIC_AUTH_PASS": LOGIN[1]}
    )
    # The API server's PodSecurity admission refuses any pod of this namespace that is not "restricted".
    cluster.kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    placement = cluster.real_pod_placement()
    values = {
        "operator": {"enabled": False},
        "migrations": {"enabled": False},
        "tests": {"enabled": False},
        "image": {"pullPolicy": "Never"},  # loaded into the node: nothing is pulled
        "ui": {
            "enabled": True,
            "image": {"repository": riverui_image.split(":")[0], "tag": riverui_image.split(":")[1]},
            "database": {"secret": {"name": "riverui-db"}},
            "basicAuth": {"secret": {"name": "riverui-login"}},
            **placement,
        },
    }
    path = tmp_path / "values.json"
    path.write_text(json.dumps(values))
    cluster.helm("install", RELEASE, str(CHART), "-n", namespace, "-f", str(path))
    try:
        yield namespace
    finally:
        cluster.helm("uninstall", RELEASE, "-n", namespace, "--wait", "--timeout", "60s")


def test_river_ui_pod_from_the_chart(cluster: Cluster, release: str, database: str) -> None:
    ns = release
    jobs = insert(database, "noop", {"from": "e2e"}, count=2, queue="e2e_ui")
    cluster.kubectl("rollout", "status", f"deploy/{NAME}", "-n", ns, "--timeout=120s")
    (pod,) = json.loads(cluster.kubectl("get", "pods", "-n", ns, "-l", "app.kubernetes.io/name=riverui", "-o", "json"))[
        "items"
    ]
    assert pod["spec"]["nodeName"] == (cluster.real_node or pod["spec"]["nodeName"]), "a real container"
    (status,) = pod["status"]["containerStatuses"]
    assert status["ready"] and status["restartCount"] == 0, status
    assert status["image"].endswith(RIVERUI_IMAGE)
    base = f"http://{pod['status']['podIP']}:8080"  # the pod's address on the node's bridge

    assert get(f"{base}/api/health-checks/minimal") == (200, {"status": "ok"}), "open, as its probes need"
    assert get(f"{base}/api/health-checks/complete") == (200, {"status": "ok"}), "it reaches the database"
    assert get(f"{base}/api/jobs?state=available")[0] == 401, "the API needs the login"
    code, body = get(f"{base}/api/jobs?state=available&limit=20", LOGIN)
    assert code == 200, code
    assert sorted(int(j["id"]) for j in body["data"]) == sorted(jobs)
    assert {j["queue"] for j in body["data"]} == {"e2e_ui"} and {j["kind"] for j in body["data"]} == {"noop"}
    code, version = get(f"{base}/api/version", LOGIN)
    assert code == 200 and version["version"] == "v0.22.0", version

    # The schema flag and the restricted context are what the pod really runs with.
    spec = pod["spec"]
    (c,) = spec["containers"]
    assert "-schema=metadata" in c["args"]
    assert spec["securityContext"]["runAsNonRoot"] is True and c["securityContext"]["readOnlyRootFilesystem"]
    wait_for(
        lambda: '"msg":"Starting server"' in cluster.kubectl("logs", "-n", ns, pod["metadata"]["name"]),
        10,
        what="River UI's JSON log",
    )
