"""`helm install` with the chart's DEFAULT migration values on an existing Civic OS v0.70 database
(the fixture): the hook Job's pod (a real container on the real node) runs `civic-runner migrate`
and leaves Civic OS's River at 6, `river_client` in place and Civic OS's own `sqitch verify` passing."""

from __future__ import annotations

from pathlib import Path

import yaml

from devenv import civic_os
from devenv.clusters import CHART, Cluster
from devenv.pg import PostgresServer
from tests.support.harness import query


def test_helm_install_with_defaults_leaves_a_civic_os_database_as_it_is(
    cluster: Cluster, namespace: str, e2e_pg: PostgresServer, tmp_path: Path
) -> None:
    url = e2e_pg.create_database(namespace.replace("-", "_") + "_civic_os")
    civic_os.install(url)
    tables_before = query(url, "SELECT relname FROM pg_class WHERE relnamespace = 'metadata'::regnamespace ORDER BY 1")
    cluster.create_secret(namespace, "civic-db", {"DATABASE_URL": cluster.database_url_for_pods(url)})
    # The database Secret and where pods run, nothing else: migrations.riverOnly false and
    # migrations.target null, the defaults.
    placement = cluster.real_pod_placement()
    values = {"database": {"secret": {"name": "civic-db"}}, "operator": placement, "migrations": placement,
              "tests": placement}  # fmt: skip
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    release = namespace
    cluster.helm(
        "install", release, str(CHART), "-n", namespace, "-f", str(tmp_path / "values.yaml"),
        "--wait", "--timeout", "180s",
    )  # fmt: skip
    logs = cluster.kubectl("logs", "-n", namespace, "job/" + f"{release}-civic-workers-migrate")
    assert '"applied": []' in logs and "left at 6" in logs, logs
    assert query(url, "SELECT max(version) FROM metadata.river_migration WHERE line = 'main'") == [(6,)]
    assert query(url, "SELECT to_regclass('metadata.river_client') IS NOT NULL") == [(True,)]
    assert query(url, "SELECT relname FROM pg_class WHERE relnamespace = 'metadata'::regnamespace ORDER BY 1") == (
        tables_before
    )
    civic_os.verify(url)
    cluster.helm("uninstall", release, "-n", namespace, "--wait", "--timeout", "120s")
