"""The chart on a real control plane (kube-apiserver, etcd, controller-manager, scheduler; kwok fakes the nodes,
so pods are Running but run no container): `helm install` from the directory (through the CRD symlink) and from
the packaged chart, the CRDs and pools accepted by the API server, the operator running as a process with the
token of the chart's ServiceAccount (nothing refused), `helm uninstall` and what stays.

The cluster is this module's own (`civic-chart`), so the e2e tier's cluster is never disturbed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cluster.controlplane import LocalControlPlane
from tests.support.harness import wait_for
from tests.support.pg import free_port

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "civic-workers"
HERE = Path(__file__).resolve().parent
OPERATOR_SA = "civic-civic-workers-operator"


@pytest.fixture(scope="module")
def cp() -> Iterator[LocalControlPlane]:
    plane = LocalControlPlane(name="civic-chart", nodes=1)
    plane.up()
    try:
        yield plane
    finally:
        plane.down()


def run(cp: LocalControlPlane, tool: str, *args: str, input: str | None = None) -> str:  # noqa: A002
    proc = subprocess.run(
        [str(cp.bin_dir / tool), "--kubeconfig", str(cp.kubeconfig), *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"{tool} {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return proc.stdout


def kubectl_json(cp: LocalControlPlane, *args: str) -> Any:
    return json.loads(run(cp, "kubectl", *args, "-o", "json"))


@pytest.fixture
def namespace(cp: LocalControlPlane) -> Iterator[str]:
    ns = f"chart-{uuid.uuid4().hex[:6]}"
    for n in (ns, f"{ns}-b"):
        run(cp, "kubectl", "create", "namespace", n)
    run(
        cp, "kubectl", "-n", ns, "create", "secret", "generic", "civic-database",
        "--from-literal=DATABASE_URL=postgresql://civic@127.0.0.1:1/civic",
    )  # fmt: skip
    run(cp, "kubectl", "-n", ns, "create", "secret", "generic", "civic-s3", "--from-literal=S3_BUCKET=civic-os-files")
    yield ns
    for n in (ns, f"{ns}-b"):
        run(cp, "kubectl", "delete", "namespace", n, "--wait=false")


def install_values(ns: str) -> list[str]:
    return [
        "--set", "database.secret.name=civic-database",
        "--set", "s3.secret.name=civic-s3",
        "--set", f"operator.watchNamespaces={{{ns}-b}}",
        "--set", "pools.s3Signer.enabled=true",
        "--set", "pools.thumbnails.enabled=true",
        "--set", "pools.thumbnails.mode=Job",
    ]  # fmt: skip


def operator_kubeconfig(cp: LocalControlPlane, ns: str, path: Path) -> Path:
    token = run(cp, "kubectl", "-n", ns, "create", "token", OPERATOR_SA, "--duration", "1h").strip()
    admin = yaml.safe_load(cp.kubeconfig.read_text())
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": admin["clusters"][0]["cluster"]}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "sa", "namespace": ns}}],
        "current-context": "c",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def start_operator(kubeconfig: Path, namespaces: str, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "WATCH_NAMESPACES": namespaces,
        "LIVENESS_PORT": str(free_port()),
        "METRICS_PORT": "0",
        "PEERING_PRIORITY": "10",
        "POD_ID": "chart-test",
    }
    with open(log, "wb") as out:
        return subprocess.Popen(
            [str(Path(sys.executable).parent / "civic-operator")],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def cleanup_script(cp: LocalControlPlane, ns: str) -> str:
    """The pre-delete hook's script as rendered (kwok runs no container, so the test runs it)."""
    rendered = run(
        cp, "helm", "template", "civic", str(CHART), "-n", ns, *install_values(ns), "--kube-version", "1.35.4"
    )
    for d in yaml.safe_load_all(rendered):
        if d and d["kind"] == "Job" and d["metadata"]["annotations"].get("helm.sh/hook") == "pre-delete":
            script: str = d["spec"]["template"]["spec"]["containers"][0]["args"][0]
            return script.replace("config.load_incluster_config()", "config.load_kube_config()")
    raise AssertionError("no pre-delete hook Job rendered")


def run_cleanup(cp: LocalControlPlane, ns: str, wait: int) -> str:
    env = {
        **os.environ,
        "KUBECONFIG": str(cp.kubeconfig),
        "NAMESPACE": ns,
        "SELECTOR": "app.kubernetes.io/instance=civic,app.kubernetes.io/component=pool",
        "WAIT_SECONDS": str(wait),
    }
    proc = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", cleanup_script(cp, ns)],
        env=env,
        capture_output=True,
        text=True,
        timeout=wait + 60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_install_operate_uninstall(cp: LocalControlPlane, namespace: str, tmp_path: Path) -> None:
    ns = namespace
    out = run(cp, "helm", "install", "civic", str(CHART), "-n", ns, *install_values(ns), "--wait", "--timeout", "120s")
    assert "STATUS: deployed" in out

    crds = {c["metadata"]["name"] for c in kubectl_json(cp, "get", "crd")["items"]}
    assert {"civicworkerpools.workers.civic-os.org", "kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"} <= crds
    served = kubectl_json(cp, "get", "crd", "civicworkerpools.workers.civic-os.org")
    repo = yaml.safe_load((ROOT / "crds" / "civicworkerpool.yaml").read_text())
    assert served["spec"]["versions"][0]["schema"] == repo["spec"]["versions"][0]["schema"], "the CRD is not the repo's"
    pools = {p["metadata"]["name"]: p for p in kubectl_json(cp, "-n", ns, "get", "cwp")["items"]}
    assert set(pools) == {"s3-signer", "thumbnails"}
    assert {p["metadata"]["namespace"] for p in kubectl_json(cp, "get", "kopfpeerings", "-A")["items"]} >= {
        ns,
        f"{ns}-b",
    }
    job = kubectl_json(cp, "-n", ns, "get", "job", "civic-civic-workers-migrate")
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]

    # What the ServiceAccount may and may not do, as the API server's authorizer says.
    sa = f"system:serviceaccount:{ns}:{OPERATOR_SA}"
    for target_ns in (ns, f"{ns}-b"):
        for verb, resource, expected in (
            ("patch", "civicworkerpools.workers.civic-os.org", "yes"),
            ("patch", "civicworkerpools.workers.civic-os.org/status", "yes"),
            ("create", "deployments.apps", "yes"),
            ("create", "jobs.batch", "yes"),
            ("get", "secrets", "yes"),
            ("list", "secrets", "no"),
            ("create", "events", "yes"),
            ("patch", "kopfpeerings.kopf.dev", "yes"),
            ("delete", "civicworkerpools.workers.civic-os.org", "no"),
            ("create", "roles.rbac.authorization.k8s.io", "no"),
        ):
            got = subprocess.run(
                [str(cp.bin_dir / "kubectl"), "--kubeconfig", str(cp.kubeconfig), "auth", "can-i", verb, resource,
                 "--as", sa, "-n", target_ns],
                capture_output=True, text=True, check=False,
            ).stdout.strip()  # fmt: skip
            assert got == expected, f"{sa} {verb} {resource} in {target_ns}: {got}"
    for other in ("default", "kube-system"):
        got = subprocess.run(
            [str(cp.bin_dir / "kubectl"), "--kubeconfig", str(cp.kubeconfig), "auth", "can-i", "get", "secrets",
             "--as", sa, "-n", other],
            capture_output=True, text=True, check=False,
        ).stdout.strip()  # fmt: skip
        assert got == "no", f"{sa} may read secrets in {other}"

    # The operator with exactly these rights: it serves the pools and nothing is refused.
    log = tmp_path / "operator.log"
    proc = start_operator(operator_kubeconfig(cp, ns, tmp_path / "sa.kubeconfig"), f"{ns},{ns}-b", log)
    try:
        wait_for(
            lambda: (
                json.loads(run(cp, "kubectl", "-n", ns, "get", "deploy", "-o", "json"))["items"]
                and any(
                    d["metadata"]["name"] == "s3-signer-runner"
                    for d in json.loads(run(cp, "kubectl", "-n", ns, "get", "deploy", "-o", "json"))["items"]
                )
            ),
            timeout=60,
            interval=0.5,
            what="the operator's runner Deployment",
        )
        wait_for(
            lambda: all(
                "workers.civic-os.org/finalizer" in (p["metadata"].get("finalizers") or [])
                and p.get("status", {}).get("selector")
                for p in kubectl_json(cp, "-n", ns, "get", "cwp")["items"]
            ),
            timeout=30,
            interval=0.5,
            what="pools handled",
        )
        peering = kubectl_json(cp, "-n", ns, "get", "kopfpeering", "civic-operator")
        assert "chart-test" in (peering.get("status") or {}), peering
        text = log.read_text()
        assert "forbidden" not in text.lower(), text[-5000:]

        # helm uninstall: the pre-delete hook deletes the pools while the operator runs; it removes its finalizer.
        started = time.monotonic()
        assert "pools gone" in run_cleanup(cp, ns, wait=60)
        assert time.monotonic() - started < 30
        assert not kubectl_json(cp, "-n", ns, "get", "cwp")["items"]
    finally:
        stop(proc)
    assert "forbidden" not in log.read_text().lower()

    run(cp, "helm", "uninstall", "civic", "-n", ns, "--wait")

    def left() -> set[tuple[str, str]]:
        return {
            (o["kind"], o["metadata"]["name"]) for o in kubectl_json(cp, "-n", ns, "get", "all,sa,role,cwp")["items"]
        }

    assert ("Deployment", "civic-civic-workers-operator") not in left()
    # The runners go with their pool (garbage collection of owned objects, asynchronous).
    wait_for(lambda: ("Deployment", "s3-signer-runner") not in left(), timeout=60, interval=1, what="runners collected")
    assert ("ServiceAccount", OPERATOR_SA) not in left()
    # What stays: the CRDs (Helm never deletes crds/), and the data.
    crds = {c["metadata"]["name"] for c in kubectl_json(cp, "get", "crd")["items"]}
    assert "civicworkerpools.workers.civic-os.org" in crds


def test_cleanup_hook_without_operator(cp: LocalControlPlane, namespace: str) -> None:
    """Operator gone (scaled to zero): the hook still gets the pools deleted, removing the finalizer itself."""
    ns = namespace
    run(cp, "helm", "install", "civic", str(CHART), "-n", ns, *install_values(ns), "--set", "operator.replicas=0")
    for name in ("s3-signer", "thumbnails"):
        run(cp, "kubectl", "-n", ns, "patch", "cwp", name, "--type", "merge",
            "-p", '{"metadata":{"finalizers":["workers.civic-os.org/finalizer"]}}')  # fmt: skip
    out = run_cleanup(cp, ns, wait=3)
    assert "removing its finalizer" in out and "pools gone" in out, out
    wait_for(lambda: not kubectl_json(cp, "-n", ns, "get", "cwp")["items"], timeout=20, what="pools deleted")
    run(cp, "helm", "uninstall", "civic", "-n", ns, "--wait")


def test_install_from_package_cluster_wide(cp: LocalControlPlane, namespace: str, tmp_path: Path) -> None:
    run(cp, "helm", "package", str(CHART), "-d", str(tmp_path))
    (tgz,) = tmp_path.glob("civic-workers-*.tgz")
    ns = namespace
    run(cp, "helm", "install", "civic-cw", str(tgz), "-n", ns, "-f", str(HERE / "values-cluster-wide.yaml"), "--wait")
    names = {c["metadata"]["name"] for c in kubectl_json(cp, "get", "clusterkopfpeerings")["items"]}
    assert "civic-operator" in names
    deploy = kubectl_json(cp, "-n", ns, "get", "deploy", "civic-cw-civic-workers-operator")
    assert deploy["status"].get("readyReplicas") == 2
    sa = f"system:serviceaccount:{ns}:civic-cw-civic-workers-operator"
    got = subprocess.run(
        [str(cp.bin_dir / "kubectl"), "--kubeconfig", str(cp.kubeconfig), "auth", "can-i", "patch",
         "civicworkerpools.workers.civic-os.org", "--as", sa, "-n", "default"],
        capture_output=True, text=True, check=False,
    ).stdout.strip()  # fmt: skip
    assert got == "yes"
    run(cp, "helm", "uninstall", "civic-cw", "-n", ns, "--wait")
