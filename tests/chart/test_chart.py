"""The Helm chart without a cluster: lint, render with every values file, validate the rendered objects
against the Kubernetes OpenAPI schemas (kubeconform; schemas generated offline from k8s.io/kubernetes'
OpenAPI document and from our CRDs), package, and check what the values promise (RBAC, no drift of the CRD).

The tools come from tests/chart/install-tools.sh (built from Go modules, cached). If they cannot be
provided the tests fail: they never skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart import schemas

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "civic-workers"
HERE = Path(__file__).resolve().parent
VALUES_FILES = sorted(HERE.glob("values-*.yaml"))
VALUES_DEFAULTS = HERE / "values-defaults.yaml"
NAMESPACE = "civic"
RELEASE = "rel"


@pytest.fixture(scope="session")
def tools() -> dict[str, str]:
    proc = subprocess.run(
        ["bash", str(HERE / "install-tools.sh")], capture_output=True, text=True, timeout=1800, check=False
    )
    if proc.returncode != 0:
        pytest.fail(f"tests/chart/install-tools.sh failed (helm/kubeconform/schemas):\n{proc.stderr[-4000:]}")
    found = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    for key in ("HELM", "KUBECONFORM", "SCHEMAS", "K8S_VERSION"):
        assert found.get(key), f"install-tools.sh did not report {key}"
    return found


def helm(tools: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HELM_CACHE_HOME": "/tmp/civic-helm/cache", "HELM_CONFIG_HOME": "/tmp/civic-helm/config"}
    proc = subprocess.run([tools["HELM"], *args], capture_output=True, text=True, env=env, timeout=120, check=False)
    if check and proc.returncode != 0:
        pytest.fail(f"helm {' '.join(args)} failed:\n{proc.stderr}")
    return proc


def render(
    tools: dict[str, str], *args: str, crds: bool = False, check: bool = True
) -> subprocess.CompletedProcess[str]:
    extra = ["--include-crds"] if crds else []
    version = tools["K8S_VERSION"].lstrip("v")
    return helm(
        tools, "template", RELEASE, str(CHART), "-n", NAMESPACE, "--kube-version", version, *extra, *args, check=check
    )


def docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


@pytest.fixture(scope="session")
def crd_schema_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("crd-schemas")
    assert schemas.from_crds(out, sorted((CHART / "crds").glob("*.yaml"))) == 3
    return out


def kubeconform(tools: dict[str, str], crd_dir: Path, manifests: str) -> dict[str, Any]:
    version = tools["K8S_VERSION"].lstrip("v")
    k8s_location = tools["SCHEMAS"] + "/{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}/"
    proc = subprocess.run(
        [
            tools["KUBECONFORM"],
            "-strict",
            "-summary",
            "-output",
            "json",
            "-kubernetes-version",
            version,
            "-schema-location",
            k8s_location + "{{ .ResourceKind }}{{ .KindSuffix }}.json",
            "-schema-location",
            str(crd_dir) + "/{{ .ResourceKind }}{{ .KindSuffix }}.json",
            # Prometheus Operator's kinds: no schema offline; checked by hand in test_monitoring_objects.
            "-skip",
            "ServiceMonitor,PodMonitor",
            "-",
        ],
        input=manifests,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    result: dict[str, Any] = json.loads(proc.stdout)
    result["returncode"] = proc.returncode
    return result


# --- the CRD is the repository's file ----------------------------------------------------------


def test_crd_in_chart_is_the_repository_file() -> None:
    link = CHART / "crds" / "civicworkerpool.yaml"
    assert link.is_symlink(), "the chart's CRD must be a symlink to crds/civicworkerpool.yaml, not a copy"
    assert not os.path.isabs(os.readlink(link)), "the symlink must be relative (the repository moves)"
    assert link.resolve() == (ROOT / "crds" / "civicworkerpool.yaml").resolve()


def test_package_contains_the_crd_contents(tools: dict[str, str], tmp_path: Path) -> None:
    helm(tools, "package", str(CHART), "-d", str(tmp_path))
    (tgz,) = tmp_path.glob("civic-workers-*.tgz")
    with tarfile.open(tgz) as tar:
        member = tar.getmember("civic-workers/crds/civicworkerpool.yaml")
        assert member.isfile(), "helm package must store the CRD's contents, not a link"
        packaged = tar.extractfile(member)
        assert packaged is not None
        assert packaged.read() == (ROOT / "crds" / "civicworkerpool.yaml").read_bytes()
        names = tar.getnames()
    assert "civic-workers/crds/kopf-peerings.yaml" in names
    assert "civic-workers/values.schema.json" in names


def test_template_includes_the_crd_contents(tools: dict[str, str]) -> None:
    rendered = docs(render(tools, "-f", str(HERE / "values-defaults.yaml"), crds=True).stdout)
    crds = {d["metadata"]["name"]: d for d in rendered if d["kind"] == "CustomResourceDefinition"}
    assert set(crds) == {
        "civicworkerpools.workers.civic-os.org",
        "kopfpeerings.kopf.dev",
        "clusterkopfpeerings.kopf.dev",
    }
    assert crds["civicworkerpools.workers.civic-os.org"] == yaml.safe_load(
        (ROOT / "crds/civicworkerpool.yaml").read_text()
    )


# --- lint, render, validate ---------------------------------------------------------------------


@pytest.mark.parametrize("values", VALUES_FILES, ids=lambda p: p.stem)
def test_lint(tools: dict[str, str], values: Path) -> None:
    proc = helm(tools, "lint", "--strict", str(CHART), "-f", str(values), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


def test_lint_defaults(tools: dict[str, str]) -> None:
    proc = helm(tools, "lint", str(CHART), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_kube_version_constraint(tools: dict[str, str]) -> None:
    """Kubernetes older than 1.28 is refused with helm's own message (the CRD's CEL rules use fieldPath)."""
    old = helm(
        tools, "template", RELEASE, str(CHART), "-f", str(VALUES_DEFAULTS), "--kube-version", "1.27.9", check=False
    )
    assert old.returncode != 0
    assert "chart requires kubeVersion: >=1.28.0-0" in old.stderr


def test_helm_defaults_to_a_current_kubernetes(tools: dict[str, str]) -> None:
    """Our helm build carries its Kubernetes version as release builds do, so `helm template` without
    --kube-version passes the chart's constraint (a plain `go install` would claim v1.20)."""
    proc = helm(tools, "template", RELEASE, str(CHART), "-f", str(VALUES_DEFAULTS), check=False)
    assert proc.returncode == 0, proc.stderr
    assert "kind: Deployment" in proc.stdout


@pytest.mark.parametrize("values", VALUES_FILES, ids=lambda p: p.stem)
def test_rendered_objects_are_valid(tools: dict[str, str], crd_schema_dir: Path, values: Path) -> None:
    manifests = render(tools, "-f", str(values), crds=True).stdout
    result = kubeconform(tools, crd_schema_dir, manifests)
    problems = [r for r in result.get("resources", []) if r["status"] not in ("statusValid", "statusSkipped")]
    assert result["returncode"] == 0 and not problems, json.dumps(problems, indent=1)
    summary = result["summary"]
    assert summary["valid"] >= 10, summary
    skipped = [r["kind"] for r in result.get("resources", []) if r["status"] == "statusSkipped"]
    assert set(skipped) <= {"ServiceMonitor", "PodMonitor"}, skipped


def test_validator_rejects_what_it_should(tools: dict[str, str], crd_schema_dir: Path) -> None:
    """The validation above means something: unknown fields, wrong types and bad pools fail."""
    base = docs(render(tools, "-f", str(HERE / "values-pools.yaml")).stdout)
    deployment = next(d for d in base if d["kind"] == "Deployment")
    pool = next(d for d in base if d["kind"] == "CivicWorkerPool")
    bad: list[dict[str, Any]] = []
    d1 = json.loads(json.dumps(deployment))
    d1["spec"]["template"]["spec"]["containers"][0]["imagePullPolcy"] = "Always"  # typo
    bad.append(d1)
    d2 = json.loads(json.dumps(deployment))
    d2["spec"]["replicas"] = "two"
    bad.append(d2)
    p1 = json.loads(json.dumps(pool))
    p1["spec"]["mode"] = "DaemonSet"
    bad.append(p1)
    p2 = json.loads(json.dumps(pool))
    p2["spec"]["autoscaling"]["maxReplica"] = 3  # typo
    bad.append(p2)
    for doc in bad:
        result = kubeconform(tools, crd_schema_dir, yaml.safe_dump(doc))
        assert result["returncode"] != 0, f"accepted an invalid {doc['kind']}"


EXAMPLES = sorted((ROOT / "examples").glob("pool-*.yaml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_example_pools_are_valid(tools: dict[str, str], crd_schema_dir: Path, example: Path) -> None:
    """What the docs tell users to `kubectl apply -f` passes the CRD's schema (CEL runs in the e2e tier)."""
    result = kubeconform(tools, crd_schema_dir, example.read_text())
    assert result["returncode"] == 0 and result["summary"]["valid"] == 1, result


def test_documented_pool_is_the_example_file() -> None:
    page = (ROOT / "docs" / "getting-started.md").read_text()
    example = (ROOT / "examples" / "pool-thumbnails.yaml").read_text()
    assert example in page, "the pool in docs/getting-started.md differs from examples/pool-thumbnails.yaml"


# --- what the values promise ----------------------------------------------------------------------


def by_kind(rendered: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in rendered if d["kind"] == kind]


def operator_container(rendered: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = by_kind(rendered, "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


# Every API call of civic_operator (kube.py) and of kopf (watching, patching, peering, events).
OPERATOR_NEEDS = [
    ("workers.civic-os.org", "civicworkerpools", "list"),
    ("workers.civic-os.org", "civicworkerpools", "watch"),
    ("workers.civic-os.org", "civicworkerpools", "patch"),
    ("workers.civic-os.org", "civicworkerpools/status", "patch"),
    ("apps", "deployments", "create"),  # server-side apply of a new Deployment
    ("apps", "deployments", "patch"),
    ("apps", "deployments", "delete"),
    ("apps", "deployments/status", "get"),
    ("apps", "deployments/scale", "patch"),
    ("batch", "jobs", "list"),
    ("batch", "jobs", "create"),
    ("batch", "jobs", "delete"),
    ("", "secrets", "get"),
    ("", "events", "create"),
]


def grants(rules: list[dict[str, Any]], group: str, resource: str, verb: str) -> bool:
    return any(group in r["apiGroups"] and resource in r["resources"] and verb in r["verbs"] for r in rules)


def assert_least_privilege(rules: list[dict[str, Any]]) -> None:
    for r in rules:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in r[field], f"wildcard in {r}"
        if "secrets" in r["resources"]:
            assert r["verbs"] == ["get"], f"secrets must be get only: {r}"


def test_namespaced_rbac_by_default(tools: dict[str, str]) -> None:
    rendered = docs(render(tools, "-f", str(HERE / "values-pools.yaml")).stdout)
    roles = {r["metadata"]["namespace"]: r for r in by_kind(rendered, "Role")}
    assert set(roles) == {NAMESPACE, "civic-tenant-a", "civic-tenant-b"}
    bindings = {b["metadata"]["namespace"]: b for b in by_kind(rendered, "RoleBinding")}
    assert set(bindings) == set(roles)
    (sa,) = by_kind(rendered, "ServiceAccount")
    for b in bindings.values():
        assert b["subjects"] == [{"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NAMESPACE}]
    for role in roles.values():
        assert_least_privilege(role["rules"])
        for need in OPERATOR_NEEDS:
            assert grants(role["rules"], *need), f"Role lacks {need}"
        assert grants(role["rules"], "kopf.dev", "kopfpeerings", "patch")
        assert not grants(role["rules"], "", "pods", "list")
    # Nothing at cluster scope.
    assert not by_kind(rendered, "ClusterRole") and not by_kind(rendered, "ClusterRoleBinding")
    peerings = {p["metadata"]["namespace"] for p in by_kind(rendered, "KopfPeering")}
    assert peerings == set(roles)
    env = env_of(operator_container(rendered))
    assert env["WATCH_NAMESPACES"] == "civic,civic-tenant-a,civic-tenant-b"
    assert env["PEERING_PRIORITY"] == "100"
    assert env["PEERING_LIFETIME"] == "20"
    assert env["STANDALONE"] == "false"


def test_cluster_wide_rbac(tools: dict[str, str]) -> None:
    rendered = docs(render(tools, "-f", str(HERE / "values-cluster-wide.yaml")).stdout)
    assert not by_kind(rendered, "Role") and not by_kind(rendered, "KopfPeering")
    roles = {r["metadata"]["name"]: r for r in by_kind(rendered, "ClusterRole")}
    main = roles[f"{RELEASE}-civic-workers-operator"]
    assert_least_privilege(main["rules"])
    for need in OPERATOR_NEEDS:
        assert grants(main["rules"], *need), f"ClusterRole lacks {need}"
    assert grants(main["rules"], "kopf.dev", "clusterkopfpeerings", "patch")
    assert grants(main["rules"], "apiextensions.k8s.io", "customresourcedefinitions", "watch")
    assert set(roles) == {main["metadata"]["name"]}
    assert grants(main["rules"], "", "pods", "watch")
    (peering,) = by_kind(rendered, "ClusterKopfPeering")
    assert peering["metadata"]["name"] == "civic-operator"
    container = operator_container(rendered)
    assert env_of(container)["WATCH_NAMESPACES"] == ""
    assert env_of(container)["PEERING_PRIORITY"] == "random", "replicas need distinct priorities"
    assert env_of(container)["PEERING_LIFETIME"] == "60"
    assert "command" not in container, "the image's entrypoint runs the operator"
    (pdb,) = by_kind(rendered, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1


def test_operator_pod_is_restricted(tools: dict[str, str]) -> None:
    rendered = docs(render(tools, "-f", str(HERE / "values-defaults.yaml")).stdout)
    (deployment,) = by_kind(rendered, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    c = operator_container(rendered)
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"health": 8080, "metrics": 9090}
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    assert c["image"] == "civic-operator:dev" and c["imagePullPolicy"] == "IfNotPresent"
    env = env_of(c)
    assert env["LIVENESS_PORT"] == "8080" and env["METRICS_PORT"] == "9090"
    assert env["WATCH_NAMESPACES"] == NAMESPACE
    # the connection budget: none set, read from the server with a reserve of 10
    assert (env["CONNECTION_BUDGET"], env["CONNECTION_RESERVE"], env["CONNECTION_BUDGET_FROM_SERVER"]) == (
        "0",
        "10",
        "true",
    )


def test_connection_budget_values(tools: dict[str, str]) -> None:
    args = ["--set", "operator.connectionBudget.connections=80", "--set", "operator.connectionBudget.reserve=5"]
    rendered = docs(render(tools, "-f", str(HERE / "values-defaults.yaml"), *args).stdout)
    env = env_of(operator_container(rendered))
    assert (env["CONNECTION_BUDGET"], env["CONNECTION_RESERVE"]) == ("80", "5")
    args = ["--set", "operator.connectionBudget.fromServer=false"]
    env = env_of(operator_container(docs(render(tools, "-f", str(HERE / "values-defaults.yaml"), *args).stdout)))
    assert env["CONNECTION_BUDGET_FROM_SERVER"] == "false"


def test_migration_hook(tools: dict[str, str]) -> None:
    rendered = docs(render(tools, "-f", str(HERE / "values-civic-os-existing-db.yaml")).stdout)
    (job,) = by_kind(rendered, "Job")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "pre-install,pre-upgrade"
    pod = job["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False
    (c,) = pod["containers"]
    assert c["image"] == "civic-runner:dev"
    assert c["args"] == ["migrate", "--river-only", "--target", "6"]
    env = {e["name"]: e for e in c["env"]}
    assert env["DATABASE_URL"]["valueFrom"] == {"secretKeyRef": {"name": "civic-os-worker-db", "key": "url"}}
    assert "value" not in env["DATABASE_URL"]
    default = docs(render(tools, "-f", str(HERE / "values-defaults.yaml")).stdout)
    (job,) = by_kind(default, "Job")
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]
    # River 0.48+'s line (008) is accepted as a target, and the helm test pod then expects it.
    at8 = docs(render(tools, "-f", str(HERE / "values-defaults.yaml"), "--set", "migrations.target=8").stdout)
    (job,) = by_kind(at8, "Job")
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate", "--target", "8"]
    (pod,) = by_kind(at8, "Pod")
    assert env_of(pod["spec"]["containers"][0])["WANT_MAIN"] == "8"


def test_pgbouncer_urls_from_secrets(tools: dict[str, str]) -> None:
    rendered = docs(render(tools, "-f", str(HERE / "values-pgbouncer.yaml")).stdout)
    direct = {"secretKeyRef": {"name": "civic-db-direct", "key": "DATABASE_LISTEN_URL"}}
    # The pools: the pooled URL for work, the direct one for LISTEN, and the pooler said.
    for pool in by_kind(rendered, "CivicWorkerPool"):
        assert pool["spec"]["database"] == {
            "secretRef": {"name": "civic-db-pgbouncer", "key": "DATABASE_URL"},
            "listenSecretRef": {"name": "civic-db-direct", "key": "DATABASE_LISTEN_URL"},
            "pooler": "transaction",
            "schema": "metadata",
        }
    # The migration hook and the helm test need a session (migrate's advisory lock): the direct URL.
    (job,) = by_kind(rendered, "Job")
    (pod,) = by_kind(rendered, "Pod")
    for c in (job["spec"]["template"]["spec"]["containers"][0], pod["spec"]["containers"][0]):
        assert env_of(c)["DATABASE_URL"] == direct
        assert "CIVIC_DB_POOLER" not in env_of(c)
    # Without a direct URL, a declared transaction pooler cannot migrate: refused when rendering.
    proc = render(tools, "-f", str(HERE / "values-pgbouncer.yaml"), "--set", "database.listenSecret.name=", check=False)
    assert proc.returncode != 0 and "need a direct URL in database.listenSecret" in proc.stderr
    ok = render(
        tools,
        "-f",
        str(HERE / "values-pgbouncer.yaml"),
        "--set",
        "database.listenSecret.name=",
        "--set",
        "migrations.enabled=false",
        "--set",
        "tests.enabled=false",
    )
    for pool in by_kind(docs(ok.stdout), "CivicWorkerPool"):
        assert "listenSecretRef" not in pool["spec"]["database"]  # the runners then poll
    # A session pooler: migrations may go through it, and are told so (no detection refusal).
    session = docs(
        render(
            tools,
            "-f",
            str(HERE / "values-pgbouncer.yaml"),
            "--set",
            "database.listenSecret.name=",
            "--set",
            "database.pooler=session",
        ).stdout
    )
    (job,) = by_kind(session, "Job")
    env = env_of(job["spec"]["template"]["spec"]["containers"][0])
    assert env["DATABASE_URL"]["secretKeyRef"]["name"] == "civic-db-pgbouncer" and env["CIVIC_DB_POOLER"] == "session"
    # The defaults keep today's objects: no listen URL, no pooler field.
    default = docs(render(tools, "-f", str(HERE / "values-civic-os-existing-db.yaml")).stdout)
    for pool in by_kind(default, "CivicWorkerPool"):
        assert set(pool["spec"]["database"]) == {"secretRef", "schema"}


def test_secret_names_restrict_get(tools: dict[str, str]) -> None:
    rendered = docs(render(tools, "-f", str(HERE / "values-civic-os-existing-db.yaml")).stdout)
    (role,) = by_kind(rendered, "Role")
    (rule,) = [r for r in role["rules"] if "secrets" in r["resources"]]
    assert rule["resourceNames"] == ["civic-os-worker-db", "civic-os-s3"]


def test_default_pools(tools: dict[str, str]) -> None:
    assert not by_kind(docs(render(tools, "-f", str(HERE / "values-defaults.yaml")).stdout), "CivicWorkerPool")
    rendered = docs(render(tools, "-f", str(HERE / "values-civic-os-existing-db.yaml")).stdout)
    pools = {p["metadata"]["name"]: p["spec"] for p in by_kind(rendered, "CivicWorkerPool")}
    assert pools["s3-signer"]["queues"] == ["s3_signer"]
    assert pools["thumbnails"]["queues"] == ["thumbnails"]
    for spec in pools.values():
        assert spec["image"] == "civic-runner:dev"
        assert spec["database"] == {"secretRef": {"name": "civic-os-worker-db", "key": "url"}, "schema": "metadata"}
        assert spec["s3"] == {"secretRef": {"name": "civic-os-s3"}}
        assert spec["terminationGracePeriodSeconds"] >= spec["shutdownGraceSeconds"] + 5
    jobs = {
        p["metadata"]["name"]: p["spec"]
        for p in by_kind(docs(render(tools, "-f", str(HERE / "values-pools.yaml")).stdout), "CivicWorkerPool")
    }
    assert jobs["thumbnails"]["mode"] == "Job"
    assert jobs["thumbnails"]["template"]["labels"] == {"team": "files"}
    assert jobs["thumbnails"]["autoscaling"]["scaleDown"] == {"stabilizationWindowSeconds": 120}


def test_monitoring_objects(tools: dict[str, str]) -> None:
    off = docs(render(tools, "-f", str(HERE / "values-defaults.yaml")).stdout)
    assert not by_kind(off, "ServiceMonitor") and not by_kind(off, "PodMonitor")
    rendered = docs(render(tools, "-f", str(HERE / "values-monitoring.yaml")).stdout)
    (sm,) = by_kind(rendered, "ServiceMonitor")
    (pm,) = by_kind(rendered, "PodMonitor")
    (svc,) = by_kind(rendered, "Service")
    assert sm["apiVersion"] == pm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["labels"]["release"] == "prometheus"
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["spec"]["selector"].items()
    assert sm["spec"]["endpoints"] == [
        {"port": "metrics", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s"}
    ]
    assert "metrics" in {p["name"] for p in svc["spec"]["ports"]}
    # Labels and port name that civic_operator.manifests puts on runner pods.
    assert pm["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "civic-runner",
        "app.kubernetes.io/managed-by": "civic-operator",
    }
    assert pm["spec"]["podMetricsEndpoints"][0]["port"] == "http"
    assert pm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    env = env_of(operator_container(rendered))
    assert env["STANDALONE"] == "true"
    assert not any(d["kind"] == "Pod" for d in rendered), "tests.enabled false must drop the test pod"


def test_helm_test_pod(tools: dict[str, str]) -> None:
    rendered = docs(render(tools, "-f", str(HERE / "values-civic-os-existing-db.yaml")).stdout)
    (pod,) = by_kind(rendered, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    env = env_of(pod["spec"]["containers"][0])
    assert env["OPERATOR_HEALTHZ"] == f"http://{RELEASE}-civic-workers-operator.{NAMESPACE}.svc:8080/healthz"
    assert env["WANT_MAIN"] == "6"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "database.url=postgres://x"], "additional properties"),  # never inline credentials
        (["--set", "operator.peering.enabled=false", "--set", "operator.replicas=2"], "replicas"),
        (["--set", "migrations.target=9"], "target"),  # River's latest is 8
        (["--set", "image.pullPolicy=Sometimes"], "pullPolicy"),
        (["--set", "pools.thumbnails.autoscaling.maxReplica=3"], "additional properties"),
        (["--set", "pools.thumbnails.mode=DaemonSet"], "mode"),
        (["--set", "operator.logLevel=LOUD"], "logLevel"),
        (["--set", "operator.peering.lifetime=2"], "lifetime"),
        (["--set", "operator.connectionBudget.connections=0"], "connections"),  # 0 would read as "none"
        (["--set", "operator.connectionBudget.reserve=-1"], "reserve"),
        (["--set", "database.pooler=statement"], "pooler"),  # PgBouncer's statement mode: not supported
        (["--set", "database.listenUrl=postgres://x"], "additional properties"),  # a Secret, never inline
    ],
)
def test_values_schema_rejects(tools: dict[str, str], args: list[str], message: str) -> None:
    proc = render(tools, "-f", str(HERE / "values-defaults.yaml"), *args, check=False)
    assert proc.returncode != 0, f"accepted {args}"
    assert message in proc.stderr, proc.stderr


def test_operator_elsewhere(tools: dict[str, str]) -> None:
    """operator.enabled false: the rights and peering for an operator run outside the chart, nothing else."""
    out = render(tools, "--set", "operator.enabled=false", "--set", "migrations.enabled=false").stdout
    kinds = sorted(d["kind"] for d in docs(out))
    assert kinds == ["KopfPeering", "Role", "RoleBinding", "ServiceAccount"]


def test_database_secret_is_required(tools: dict[str, str]) -> None:
    proc = render(tools, check=False)
    assert proc.returncode != 0
    assert "database.secret.name is required" in proc.stderr
    # Without migrations, pools and tests the operator alone needs no database.
    ok = render(tools, "--set", "migrations.enabled=false", "--set", "tests.enabled=false")
    assert by_kind(docs(ok.stdout), "Deployment")


# --- values.schema.json, values.yaml and the CRD agree ----------------------------------------------
# (docs/configuration.md against values.schema.json and values.yaml: tests/docs/test_configuration.py)


def test_values_schema_is_strict_and_complete() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(value: Any, sub: dict[str, Any], path: str) -> None:
        if not isinstance(value, dict) or not value or "properties" not in sub:
            return  # a scalar, or a map (labels, resources.requests): its values' schema is checked by helm
        assert sub.get("additionalProperties") is False, f"{path or 'values'}: schema must be closed"
        for key, v in value.items():
            assert key in sub["properties"], f"{path}.{key} is in values.yaml but not in values.schema.json"
            walk(v, sub["properties"][key], f"{path}.{key}" if path else key)

    walk(values, schema, "")


def test_pool_values_follow_the_crd() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    crd = yaml.safe_load((ROOT / "crds" / "civicworkerpool.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
    for pool in ("s3Signer", "thumbnails"):
        props = schema["properties"]["pools"]["properties"][pool]["properties"]
        for field in ("autoscaling", "jobs"):
            assert set(props[field]["properties"]) == set(spec[field]["properties"]), f"pools.{pool}.{field}"
        assert props["mode"]["enum"] == spec["mode"]["enum"]
