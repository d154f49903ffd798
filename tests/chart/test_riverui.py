"""River UI in the chart (ui.*): off by default; River's published image; the database URL and the login
from existing Secrets; -schema; probes on /api/health-checks/minimal; the restricted security context; a
Service; an optional Ingress. (Lint and kubeconform of values-ui.yaml run in test_chart.py with every
values file; the image running as a pod on the real node is tests/e2e/test_riverui.py.)"""

from __future__ import annotations

from typing import Any

import pytest

from tests.chart.test_chart import HERE, NAMESPACE, RELEASE, by_kind, docs, env_of, render, tools  # noqa: F401

pytestmark = pytest.mark.unit

NAME = f"{RELEASE}-civic-workers-riverui"
LOGIN = ["--set", "ui.enabled=true", "--set", "ui.basicAuth.secret.name=ui-login"]


def ui_objects(rendered: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in rendered if d["metadata"].get("labels", {}).get("app.kubernetes.io/name") == "riverui"]


def ui_deployment(rendered: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = [d for d in ui_objects(rendered) if d["kind"] == "Deployment"]
    return deployment


def test_off_by_default(tools: dict[str, str]) -> None:  # noqa: F811 - the fixture
    assert not ui_objects(docs(render(tools, "-f", str(HERE / "values-defaults.yaml")).stdout))


def test_defaults_when_enabled(tools: dict[str, str]) -> None:  # noqa: F811
    rendered = docs(render(tools, "-f", str(HERE / "values-defaults.yaml"), *LOGIN).stdout)
    assert sorted(d["kind"] for d in ui_objects(rendered)) == ["Deployment", "Service"], "no Ingress by default"
    deployment = ui_deployment(rendered)
    assert deployment["metadata"]["name"] == NAME and deployment["metadata"]["namespace"] == NAMESPACE
    pod = deployment["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["image"] == "ghcr.io/riverqueue/riverui:0.22.0", "River's published image by default"
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert c["command"] == ["/bin/riverui"]
    assert c["args"] == ["-prefix=/", "-schema=metadata", "-silent-healthchecks"], "-schema from database.schema"
    env = env_of(c)
    # The runners' Secret unless the UI has its own; the login from its Secret, never inline.
    assert env["DATABASE_URL"] == {"secretKeyRef": {"name": "civic-database", "key": "DATABASE_URL"}}
    assert env["RIVER_BASIC_AUTH_USER"] == {"secretKeyRef": {"name": "ui-login", "key": "RIVER_BASIC_AUTH_USER"}}
    assert env["RIVER_BASIC_AUTH_PASS"] == {"secretKeyRef": {"name": "ui-login", "key": "RIVER_BASIC_AUTH_PASS"}}
    assert env["PORT"] == "8080" and env["RIVER_LOG_FORMAT"] == "json" and env["RIVER_LOG_LEVEL"] == "info"
    assert env["RIVER_JOB_LIST_HIDE_ARGS_BY_DEFAULT"] == "false"
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/api/health-checks/minimal", "port": "http"}, probe
    assert c["ports"] == [{"name": "http", "containerPort": 8080}]
    assert c["resources"]["limits"]["memory"]
    # Pod Security Standards, restricted profile: non-root, no escalation, no capabilities, RuntimeDefault.
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True
    assert sc["runAsNonRoot"] is True and sc["capabilities"] == {"drop": ["ALL"]}
    assert pod["automountServiceAccountToken"] is False, "River UI never calls the Kubernetes API"
    (svc,) = [d for d in ui_objects(rendered) if d["kind"] == "Service"]
    assert svc["metadata"]["name"] == NAME
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http"}]
    assert svc["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert deployment["spec"]["selector"]["matchLabels"] == svc["spec"]["selector"]


def test_own_role_prefix_and_ingress(tools: dict[str, str]) -> None:  # noqa: F811
    rendered = docs(render(tools, "-f", str(HERE / "values-ui.yaml")).stdout)
    deployment = ui_deployment(rendered)
    pod = deployment["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    env = env_of(c)
    assert env["DATABASE_URL"] == {"secretKeyRef": {"name": "civic-riverui-db", "key": "url"}}
    assert env["RIVER_BASIC_AUTH_USER"]["secretKeyRef"]["name"] == "civic-riverui-login"
    assert c["args"][0] == "-prefix=/riverui"
    assert c["livenessProbe"]["httpGet"]["path"] == "/riverui/api/health-checks/minimal"
    assert pod["nodeSelector"] == {"kubernetes.io/os": "linux"}
    (svc,) = [d for d in ui_objects(rendered) if d["kind"] == "Service"]
    assert svc["metadata"]["annotations"] == {"example.org/owner": "files"}
    (ing,) = [d for d in ui_objects(rendered) if d["kind"] == "Ingress"]
    assert ing["spec"]["ingressClassName"] == "nginx"
    assert ing["spec"]["tls"] == [{"secretName": "civic-example-tls", "hosts": ["civic.example.org"]}]
    (rule,) = ing["spec"]["rules"]
    assert rule["host"] == "civic.example.org"
    (path,) = rule["http"]["paths"]
    assert path == {
        "path": "/riverui",  # kept as River UI serves it (-prefix), not rewritten
        "pathType": "Prefix",
        "backend": {"service": {"name": NAME, "port": {"name": "http"}}},
    }


def test_schema_and_image_overrides(tools: dict[str, str]) -> None:  # noqa: F811
    rendered = docs(
        render(
            tools, "-f", str(HERE / "values-defaults.yaml"), *LOGIN,
            "--set", "ui.schema=river", "--set", "ui.image.repository=civic-riverui", "--set", "ui.image.tag=dev",
            "--set", "ui.hideArgsByDefault=true", "--set", "ui.port=9000",
        ).stdout
    )  # fmt: skip
    (c,) = ui_deployment(rendered)["spec"]["template"]["spec"]["containers"]
    assert c["image"] == "civic-riverui:dev"
    assert "-schema=river" in c["args"]
    assert env_of(c)["RIVER_JOB_LIST_HIDE_ARGS_BY_DEFAULT"] == "true"
    assert c["ports"] == [{"name": "http", "containerPort": 9000}] and env_of(c)["PORT"] == "9000"


def test_basic_auth_off_only_when_asked(tools: dict[str, str]) -> None:  # noqa: F811
    proc = render(tools, "-f", str(HERE / "values-defaults.yaml"), "--set", "ui.enabled=true", check=False)
    assert proc.returncode != 0
    assert "ui.basicAuth.secret.name is required" in proc.stderr
    rendered = docs(
        render(
            tools, "-f", str(HERE / "values-defaults.yaml"), "--set", "ui.enabled=true",
            "--set", "ui.basicAuth.enabled=false",
        ).stdout
    )  # fmt: skip
    (c,) = ui_deployment(rendered)["spec"]["template"]["spec"]["containers"]
    assert not {"RIVER_BASIC_AUTH_USER", "RIVER_BASIC_AUTH_PASS"} & set(env_of(c))


def test_database_secret_is_required(tools: dict[str, str]) -> None:  # noqa: F811
    proc = render(tools, "--set", "migrations.enabled=false", "--set", "tests.enabled=false", *LOGIN, check=False)
    assert proc.returncode != 0
    assert "ui.database.secret.name or database.secret.name is required" in proc.stderr
    rendered = docs(
        render(
            tools, "--set", "migrations.enabled=false", "--set", "tests.enabled=false", *LOGIN,
            "--set", "ui.database.secret.name=ui-db",
        ).stdout
    )  # fmt: skip
    (c,) = ui_deployment(rendered)["spec"]["template"]["spec"]["containers"]
    assert env_of(c)["DATABASE_URL"] == {"secretKeyRef": {"name": "ui-db", "key": "DATABASE_URL"}}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "ui.prefix=riverui"], "prefix"),  # River UI refuses a prefix without its leading "/"
        (["--set", "ui.schema=metadata;drop"], "schema"),
        (["--set", "ui.logLevel=LOUD"], "logLevel"),
        (["--set", "ui.service.type=ExternalName"], "type"),
        (["--set", "ui.basicAuth.password=inline"], "additional properties"),  # never inline credentials
        (["--set", "ui.image.tag="], "tag"),
    ],
)
def test_values_schema_rejects(tools: dict[str, str], args: list[str], message: str) -> None:  # noqa: F811
    proc = render(tools, "-f", str(HERE / "values-defaults.yaml"), *LOGIN, *args, check=False)
    assert proc.returncode != 0, f"accepted {args}"
    assert message in proc.stderr, proc.stderr
