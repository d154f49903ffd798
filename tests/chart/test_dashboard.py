"""The chart's Grafana dashboard: a ConfigMap for Grafana's dashboard sidecar, off by default, whose data is
the repository's dashboards/civic-workers.json. (That its PromQL names only metrics a running runner and
operator expose is tests/docs/test_dashboard_metrics.py; lint and kubeconform of values-dashboard.yaml run
in test_chart.py with every values file.)"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.chart.test_chart import CHART, HERE, NAMESPACE, RELEASE, by_kind, docs, render, tools  # noqa: F401

pytestmark = pytest.mark.unit

DASHBOARD = CHART / "dashboards" / "civic-workers.json"


def dashboards(rendered: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        d
        for d in by_kind(rendered, "ConfigMap")
        if d["metadata"]["labels"].get("app.kubernetes.io/component") == "dashboard"
    ]


def test_off_by_default(tools: dict[str, str]) -> None:  # noqa: F811 - the fixture
    assert not dashboards(docs(render(tools, "-f", str(HERE / "values-defaults.yaml")).stdout))


def test_configmap_for_the_sidecar(tools: dict[str, str]) -> None:  # noqa: F811
    rendered = docs(
        render(tools, "-f", str(HERE / "values-defaults.yaml"), "--set", "grafana.dashboard.enabled=true").stdout
    )
    (cm,) = dashboards(rendered)
    meta = cm["metadata"]
    assert meta["name"] == f"{RELEASE}-civic-workers-dashboard"
    assert meta["namespace"] == NAMESPACE
    assert meta["labels"]["grafana_dashboard"] == "1", "the label Grafana's sidecar selects by default"
    assert "annotations" not in meta
    (key,) = cm["data"]
    assert key.endswith(".json"), "the sidecar writes each key as a file; Grafana loads *.json"
    assert json.loads(cm["data"][key]) == json.loads(DASHBOARD.read_text())
    assert len(cm["data"][key].encode()) < 1024 * 1024, "a ConfigMap holds at most 1 MiB"


def test_namespace_labels_and_annotations(tools: dict[str, str]) -> None:  # noqa: F811
    rendered = docs(render(tools, "-f", str(HERE / "values-dashboard.yaml")).stdout)
    (cm,) = dashboards(rendered)
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "Civic OS"}
    other = docs(
        render(
            tools,
            "-f",
            str(HERE / "values-dashboard.yaml"),
            "--set-json",
            'grafana.dashboard.labels={"dashboards":"civic","grafana_dashboard":null}',
        ).stdout
    )
    (cm,) = dashboards(other)
    assert cm["metadata"]["labels"]["dashboards"] == "civic"
    # Helm merges maps: a sidecar that selects on another label gets the default dropped with a null.
    assert "grafana_dashboard" not in cm["metadata"]["labels"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "grafana.dashboard.label=x"], "additional properties"),
        (["--set", "grafana.dashboard.namespace=Not_A_Namespace"], "namespace"),
        (["--set", "grafana.dashboard.enabled=yes"], "enabled"),
    ],
)
def test_values_schema_rejects(tools: dict[str, str], args: list[str], message: str) -> None:  # noqa: F811
    proc = render(tools, "-f", str(HERE / "values-defaults.yaml"), *args, check=False)
    assert proc.returncode != 0, f"accepted {args}"
    assert message in proc.stderr, proc.stderr


def test_dashboard_is_a_grafana_dashboard() -> None:
    """What Grafana needs to import it anywhere: a uid, the data source as a variable, unique panel ids,
    panels inside the 24-column grid."""
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "civic-workers" and dash["title"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dash["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
