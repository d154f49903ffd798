"""`helm install` of the chart on the real API server: CRD, operator, RBAC, migration hook, pools."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from tests.e2e.clusters import CHART, Cluster
from tests.e2e.conftest import OperatorProcess, wait_until
from tests.support.harness import http_ok, query
from tests.support.pg import PostgresServer, free_port


def test_helm_install_upgrade_uninstall(
    cluster: Cluster, namespace: str, e2e_pg: PostgresServer, tmp_path: Path
) -> None:
    url = e2e_pg.create_database(namespace.replace("-", "_") + "_helm")
    cluster.create_secret(namespace, "civic-db", {"DATABASE_URL": cluster.database_url_for_pods(url)})
    values = {
        "database": {"secret": {"name": "civic-db"}},
        "pools": {"s3Signer": {"enabled": True}, "thumbnails": {"enabled": True}},
    }
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    release = namespace  # cluster-scoped objects (ClusterRoles) are named after the release

    def helm_with_hook(verb: str, *extra: str) -> None:
        # The pre-install/pre-upgrade hook Job's pod runs `civic-runner migrate` for real (a process, on kwok).
        with cluster.pod_processes(namespace, "app.kubernetes.io/component=migrations", tmp_path):
            cluster.helm(
                verb,
                release,
                str(CHART),
                "-n",
                namespace,
                "-f",
                str(tmp_path / "values.yaml"),
                *extra,
                "--wait",
                "--timeout",
                "180s",
            )

    helm_with_hook("install")
    assert query(url, "SELECT max(version) FROM metadata.river_migration WHERE line = 'main'") == [(7,)]
    assert query(url, "SELECT max(version) FROM metadata.river_migration WHERE line = 'civic_files'") == [(2,)]
    deploys = json.loads(cluster.kubectl("get", "deploy", "-n", namespace, "-o", "json"))["items"]
    operator = next(d for d in deploys if d["metadata"]["name"].endswith("operator"))
    pod = operator["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    c = pod["containers"][0]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert operator["status"].get("readyReplicas") == 1
    pools = cluster.kubectl("get", "cwp", "-n", namespace)
    assert "s3-signer" in pools and "thumbnails" in pools and '["s3_signer"]' in pools, pools
    crd = yaml.safe_load(cluster.kubectl("get", "crd", "civicworkerpools.workers.civic-os.org", "-o", "yaml"))
    on_disk = yaml.safe_load((CHART.parent.parent / "crds" / "civicworkerpool.yaml").read_text())
    assert crd["spec"]["versions"][0]["schema"] == on_disk["spec"]["versions"][0]["schema"]

    # `helm test`: on kind its pod really runs and reaches the operator pod through the Service. On kwok
    # the pod's script runs as a process, and since the operator pod is fake too, an operator process
    # with the chart's ServiceAccount stands in for it, reached at its own address (the Service's DNS
    # name does not resolve off-cluster).
    stand_in: OperatorProcess | None = None
    overrides: dict[str, str] = {}
    if cluster.fake_pods:
        sa = operator["spec"]["template"]["spec"]["serviceAccountName"]
        port = free_port()
        stand_in = OperatorProcess(
            cluster,
            namespace,
            cluster.token_kubeconfig(namespace, sa, tmp_path / "operator.kubeconfig"),
            tmp_path / "operator.log",
            liveness_port=port,
        ).start()
        overrides["OPERATOR_HEALTHZ"] = f"http://127.0.0.1:{port}/healthz"

    def helm_test() -> tuple[bool, str]:
        """helm's verdict and its output: with --logs, helm reads the pod's log through the API server."""
        with cluster.pod_processes(namespace, "app.kubernetes.io/component=test", tmp_path, overrides):
            try:
                return True, cluster.helm("test", release, "-n", namespace, "--logs", "--timeout", "120s")
            except RuntimeError as exc:
                return False, str(exc)

    try:
        if stand_in:
            wait_until(lambda: http_ok(overrides["OPERATOR_HEALTHZ"]), 60, "operator liveness endpoint")
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
    finally:
        if stand_in:
            stand_in.stop()

    # Upgrade (hook runs again: migrations are idempotent, and bring the schema it created back to
    # the latest), then uninstall.
    helm_with_hook("upgrade", "--set", "operator.logLevel=DEBUG")
    assert query(url, "SELECT max(version) FROM metadata.river_migration WHERE line = 'main'") == [(7,)]
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
