"""`helm install` of the chart on the real API server: CRD, operator, RBAC, migration hook, pools."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml
from civic_runner.migrate import LATEST, MAIN

from devenv.clusters import CHART, Cluster
from devenv.pg import PostgresServer
from tests.e2e.conftest import wait_until
from tests.support.harness import query


def test_helm_install_upgrade_uninstall(
    cluster: Cluster, namespace: str, e2e_pg: PostgresServer, tmp_path: Path
) -> None:
    """The chart's own pods really run (the real node locally, any node on kind): the operator Deployment
    with its ServiceAccount and in-cluster config, the migration hook Job, the `helm test` pod reaching
    the operator through its Service's DNS name."""
    url = e2e_pg.create_database(namespace.replace("-", "_") + "_helm")
    cluster.create_secret(namespace, "civic-db", {"DATABASE_URL": cluster.database_url_for_pods(url)})
    placement = cluster.real_pod_placement()
    values = {
        "database": {"secret": {"name": "civic-db"}},
        "operator": placement,
        "migrations": placement,
        "tests": placement,
        "pools": {"s3Signer": {"enabled": True, **placement}, "thumbnails": {"enabled": True, **placement}},
    }
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    release = namespace  # cluster-scoped objects (ClusterRoles) are named after the release

    def helm(verb: str, *extra: str) -> None:
        cluster.helm(
            verb, release, str(CHART), "-n", namespace, "-f", str(tmp_path / "values.yaml"), *extra,
            "--wait", "--timeout", "180s",
        )  # fmt: skip

    helm("install")
    assert query(url, "SELECT max(version) FROM metadata.river_migration WHERE line = 'main'") == [(LATEST[MAIN],)]
    assert query(url, "SELECT max(version) FROM metadata.river_migration WHERE line = 'civic_files'") == [(2,)]
    deploys = json.loads(cluster.kubectl("get", "deploy", "-n", namespace, "-o", "json"))["items"]
    operator = next(d for d in deploys if d["metadata"]["name"].endswith("operator"))
    pod = operator["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    c = pod["containers"][0]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert operator["status"].get("readyReplicas") == 1  # its probes passed, in a container
    op_pod = json.loads(
        cluster.kubectl("get", "pods", "-n", namespace, "-l", "app.kubernetes.io/component=operator", "-o", "json")
    )["items"][0]
    assert op_pod["spec"]["serviceAccountName"] == pod["serviceAccountName"]
    if cluster.real_node:
        assert op_pod["spec"]["nodeName"] == cluster.real_node
    # The operator in its pod talks to the API server with its ServiceAccount's token (in-cluster config):
    # it has made the chart's pools' Deployments and reported their status.
    wait_until(
        lambda: "s3-signer-runner" in cluster.kubectl("get", "deploy", "-n", namespace, "-o", "name"),
        60,
        "the operator pod reconciles the chart's pools",
    )
    pools = cluster.kubectl("get", "cwp", "-n", namespace)
    assert "s3-signer" in pools and "thumbnails" in pools and '["s3_signer"]' in pools, pools
    crd = yaml.safe_load(cluster.kubectl("get", "crd", "civicworkerpools.workers.civic-os.org", "-o", "yaml"))
    on_disk = yaml.safe_load((CHART.parent.parent / "crds" / "civicworkerpool.yaml").read_text())
    assert crd["spec"]["versions"][0]["schema"] == on_disk["spec"]["versions"][0]["schema"]
    hook_logs = cluster.kubectl("logs", "-n", namespace, f"job/{release}-civic-workers-migrate")
    assert '"applied"' in hook_logs, hook_logs  # the hook's container ran migrate and exited 0

    def helm_test() -> tuple[bool, str]:
        """helm's verdict and its output: with --logs, helm reads the pod's log through the API server."""
        try:
            return True, cluster.helm("test", release, "-n", namespace, "--logs", "--timeout", "120s")
        except RuntimeError as exc:
            return False, str(exc)

    ok, out = helm_test()
    assert ok, out
    assert "Phase:          Succeeded" in out or "Phase: Succeeded" in out.replace("  ", " "), out
    assert "answered 200" in out and "database: {" in out, out
    assert out.rstrip().endswith("ok"), out
    # The database behind the release's version: the test fails and says why.
    run_migrate_down(url, target=5)
    ok, out = helm_test()
    assert not ok
    assert "civic-workers-test failed" in out, out
    logs = cluster.kubectl("logs", f"{release}-civic-workers-test", "-n", namespace)  # the pod stays
    assert "River's schema is at 5, expected 6" in logs, logs

    # Upgrade (hook runs again: migrations are idempotent, and bring the schema it created back to
    # the latest; the operator's pod is replaced), then uninstall.
    helm("upgrade", "--set", "operator.logLevel=DEBUG")
    assert query(url, "SELECT max(version) FROM metadata.river_migration WHERE line = 'main'") == [(LATEST[MAIN],)]
    cluster.helm("uninstall", release, "-n", namespace, "--wait", "--timeout", "120s")
    left = cluster.kubectl("get", "deploy,cwp", "-n", namespace, "-o", "name")
    assert "operator" not in left and "civicworkerpool" not in left, left


def run_migrate_down(url: str, target: int) -> None:
    subprocess.run(
        [sys.executable, "-m", "civic_runner.cli", "migrate", "--database-url", url, "--down", "--target", str(target)],
        check=True,
        capture_output=True,
        timeout=120,
    )
