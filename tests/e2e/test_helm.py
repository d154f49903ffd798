"""`helm install` of the chart on the real API server: CRD, operator, RBAC, migration hook, pools."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.e2e.clusters import CHART, Cluster
from tests.support.harness import query
from tests.support.pg import PostgresServer


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
    # Upgrade (hook runs again: migrations are idempotent), then uninstall.
    helm_with_hook("upgrade", "--set", "operator.logLevel=DEBUG")
    cluster.helm("uninstall", release, "-n", namespace, "--wait", "--timeout", "120s")
    left = cluster.kubectl("get", "deploy,cwp", "-n", namespace, "-o", "name")
    assert "operator" not in left and "civicworkerpool" not in left, left
