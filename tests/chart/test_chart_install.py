"""The chart on a real control plane (kube-apiserver, etcd, controller-manager, scheduler; kwok fakes the nodes,
so pods are Running but run no container): `helm install` from the directory (through the CRD symlink) and from
the packaged chart, the CRDs and pools accepted by the API server, the operator running as a process with the
token of the chart's ServiceAccount (nothing refused), `helm uninstall` and what stays.

Helm's migration hook really runs: HookPods runs the hook pod's command on this machine, as the pod would
(`civic-runner migrate` against a real PostgreSQL, with the URL from the pod's Secret), and reports the exit code as
the pod's status, which completes (or fails) the Job.

The cluster is this module's own (`civic-chart-<pid>`, deleted at the end), so the e2e tier's cluster is never
disturbed.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from civic_runner.migrate import LATEST, MAIN

from devenv.controlplane import LocalControlPlane
from devenv.pg import free_port
from tests.support.harness import wait_for

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "civic-workers"
HERE = Path(__file__).resolve().parent
OPERATOR_SA = "civic-civic-workers-operator"


class HookPods:
    """Runs the chart's hook pods (the migration Job's) in ns as local processes, in a thread."""

    COMPONENTS = ("migrations",)

    def __init__(self, cp: LocalControlPlane, ns: str) -> None:
        self.cp, self.ns = cp, ns
        self.done: dict[str, int] = {}  # pod name -> exit code
        self.outputs: dict[str, str] = {}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> HookPods:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)
        assert not self.errors, f"running hook pods failed: {self.errors}"

    def _loop(self) -> None:
        selector = f"app.kubernetes.io/component in ({','.join(self.COMPONENTS)})"
        while not self._stop.is_set():
            try:
                pods = kubectl_json(self.cp, "-n", self.ns, "get", "pods", "-l", selector)["items"]
                for pod in pods:
                    name = pod["metadata"]["name"]
                    if name in self.done or pod["status"].get("phase") != "Running":
                        continue
                    code, output = self._run(pod)
                    self.done[name], self.outputs[name] = code, output
                    self._report(pod, code)
            except BaseException as exc:  # noqa: BLE001 - pytest.fail in this thread: keep it for __exit__
                self.errors.append(repr(exc))
            self._stop.wait(0.3)

    def _secret(self, name: str, key: str) -> str:
        data = kubectl_json(self.cp, "-n", self.ns, "get", "secret", name)["data"]
        return base64.b64decode(data[key]).decode()

    def _env(self, container: dict[str, Any]) -> dict[str, str]:
        env = dict(os.environ)
        for e in container.get("env", []):
            if "value" in e:
                env[e["name"]] = e["value"]
            elif "secretKeyRef" in e.get("valueFrom", {}):
                ref = e["valueFrom"]["secretKeyRef"]
                env[e["name"]] = self._secret(ref["name"], ref["key"])
        return env

    def _run(self, pod: dict[str, Any]) -> tuple[int, str]:
        (container,) = pod["spec"]["containers"]
        env = self._env(container)
        cmd = [str(Path(sys.executable).parent / "civic-runner"), *container["args"]]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
        return proc.returncode, proc.stdout + proc.stderr

    def _report(self, pod: dict[str, Any], code: int) -> None:
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        container = pod["spec"]["containers"][0]
        terminated = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": now,
            "finishedAt": now,
        }
        status = {
            "phase": "Succeeded" if code == 0 else "Failed",
            "conditions": [{"type": "Ready", "status": "False", "reason": "PodCompleted"}],
            "containerStatuses": [
                {"name": container["name"], "ready": False, "restartCount": 0, "image": container["image"],
                 "imageID": "", "state": {"terminated": terminated}}
            ],
        }  # fmt: skip
        run(self.cp, "kubectl", "-n", self.ns, "patch", "pod", pod["metadata"]["name"], "--subresource=status",
            "--type=merge", "-p", json.dumps({"status": status}))  # fmt: skip

    def output(self, prefix: str) -> str:
        return "\n".join(v for k, v in self.outputs.items() if k.startswith(prefix))


@pytest.fixture(scope="module")
def cp() -> Iterator[LocalControlPlane]:
    # Per session: a concurrent run (another checkout, CI) deleting "its" cluster must not take ours.
    plane = LocalControlPlane(name=f"civic-chart-{os.getpid()}", nodes=1)
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
def namespace(cp: LocalControlPlane, db_url: str) -> Iterator[str]:
    ns = f"chart-{uuid.uuid4().hex[:6]}"
    for n in (ns, f"{ns}-b"):
        run(cp, "kubectl", "create", "namespace", n)
    run(
        cp, "kubectl", "-n", ns, "create", "secret", "generic", "civic-database",
        f"--from-literal=DATABASE_URL={db_url}",
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


def token_kubeconfig(cp: LocalControlPlane, ns: str, sa: str, path: Path) -> Path:
    """A kubeconfig with a token of ServiceAccount ns/sa: exactly that account's rights."""
    token = run(cp, "kubectl", "-n", ns, "create", "token", sa, "--duration", "1h").strip()
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


def can_i(cp: LocalControlPlane, sa: str, verb: str, resource: str, ns: str | None = None) -> str:
    where = ["-n", ns] if ns else []
    proc = subprocess.run(
        [str(cp.bin_dir / "kubectl"), "--kubeconfig", str(cp.kubeconfig), "auth", "can-i", verb, resource,
         "--as", sa, *where],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    return proc.stdout.strip()


def river_version(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT max(version) FROM metadata.river_migration WHERE line = 'main'").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def test_install_operate_uninstall(cp: LocalControlPlane, namespace: str, db_url: str, tmp_path: Path) -> None:
    ns = namespace
    with HookPods(cp, ns) as hooks:
        out = run(
            cp, "helm", "install", "civic", str(CHART), "-n", ns, *install_values(ns), "--wait", "--timeout", "180s"
        )
    assert "STATUS: deployed" in out
    # The pre-install hook migrated the database named by the Secret.
    assert river_version(db_url) == LATEST[MAIN], hooks.output("civic-civic-workers-migrate")

    crds = {c["metadata"]["name"] for c in kubectl_json(cp, "get", "crd")["items"]}
    assert {"civicworkerpools.workers.civic-os.org", "kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"} <= crds
    served = kubectl_json(cp, "get", "crd", "civicworkerpools.workers.civic-os.org")
    repo = yaml.safe_load((ROOT / "crds" / "civicworkerpool.yaml").read_text())
    assert served["spec"]["versions"][0]["schema"] == repo["spec"]["versions"][0]["schema"], "the CRD is not the repo's"
    pools = {p["metadata"]["name"]: p for p in kubectl_json(cp, "-n", ns, "get", "cwp")["items"]}
    assert set(pools) == {"s3-signer", "thumbnails"}
    peerings = {p["metadata"]["namespace"] for p in kubectl_json(cp, "get", "kopfpeerings", "-A")["items"]}
    assert {ns, f"{ns}-b"} <= peerings

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
            assert can_i(cp, sa, verb, resource, target_ns) == expected, f"{sa} {verb} {resource} in {target_ns}"
    for other in ("default", "kube-system"):
        assert can_i(cp, sa, "get", "secrets", other) == "no", f"{sa} may read secrets in {other}"
    assert can_i(cp, sa, "list", "namespaces") == "no"
    assert can_i(cp, sa, "list", "customresourcedefinitions.apiextensions.k8s.io") == "no"

    # The operator with exactly these rights: it serves the pools and nothing is refused.
    log = tmp_path / "operator.log"
    kubeconfig = token_kubeconfig(cp, ns, OPERATOR_SA, tmp_path / "operator.kubeconfig")
    proc = start_operator(kubeconfig, f"{ns},{ns}-b", log)
    try:

        def deployments() -> set[str]:
            return {d["metadata"]["name"] for d in kubectl_json(cp, "-n", ns, "get", "deploy")["items"]}

        wait_for(lambda: "s3-signer-runner" in deployments(), timeout=90, interval=0.5, what="the runner Deployment")

        def handled() -> bool:
            items = kubectl_json(cp, "-n", ns, "get", "cwp")["items"]
            return bool(items) and all((p.get("status") or {}).get("selector") for p in items)

        wait_for(handled, timeout=60, interval=0.5, what="pools handled")
        peering = kubectl_json(cp, "-n", ns, "get", "kopfpeering", "civic-operator")
        assert "chart-test" in (peering.get("status") or {}), peering
        assert "forbidden" not in log.read_text().lower(), log.read_text()[-5000:]

        # Pools carry no finalizer: they (and their runners) go with `helm uninstall`, operator or not.
        assert not any(p["metadata"].get("finalizers") for p in kubectl_json(cp, "-n", ns, "get", "cwp")["items"])
    finally:
        stop(proc)
    assert "forbidden" not in log.read_text().lower(), log.read_text()[-5000:]
    run(cp, "helm", "uninstall", "civic", "-n", ns, "--wait", "--timeout", "180s")

    def left() -> set[tuple[str, str]]:
        return {
            (o["kind"], o["metadata"]["name"]) for o in kubectl_json(cp, "-n", ns, "get", "all,sa,role,cwp")["items"]
        }

    assert not kubectl_json(cp, "-n", ns, "get", "cwp")["items"]
    assert ("Deployment", "civic-civic-workers-operator") not in left()
    # The runners go with their pool (garbage collection of owned objects, asynchronous).
    wait_for(lambda: ("Deployment", "s3-signer-runner") not in left(), timeout=60, interval=1, what="runners collected")
    assert ("ServiceAccount", OPERATOR_SA) not in left()
    # What stays: the CRDs (Helm never deletes crds/), and the data.
    crds = {c["metadata"]["name"] for c in kubectl_json(cp, "get", "crd")["items"]}
    assert "civicworkerpools.workers.civic-os.org" in crds
    assert river_version(db_url) == LATEST[MAIN]


def test_install_from_package_cluster_wide(cp: LocalControlPlane, namespace: str, db_url: str, tmp_path: Path) -> None:
    run(cp, "helm", "package", str(CHART), "-d", str(tmp_path))
    (tgz,) = tmp_path.glob("civic-workers-*.tgz")
    ns = namespace
    values = ["-f", str(HERE / "values-cluster-wide.yaml"), "--set", "database.secret.name=civic-database"]
    with HookPods(cp, ns):
        run(cp, "helm", "install", "civic-cw", str(tgz), "-n", ns, *values, "--wait", "--timeout", "180s")
    assert river_version(db_url) == LATEST[MAIN]
    names = {c["metadata"]["name"] for c in kubectl_json(cp, "get", "clusterkopfpeerings")["items"]}
    assert "civic-operator" in names
    deploy = kubectl_json(cp, "-n", ns, "get", "deploy", "civic-cw-civic-workers-operator")
    assert deploy["status"].get("readyReplicas") == 2
    sa = f"system:serviceaccount:{ns}:civic-cw-civic-workers-operator"
    assert can_i(cp, sa, "patch", "civicworkerpools.workers.civic-os.org", "default") == "yes"
    assert can_i(cp, sa, "watch", "customresourcedefinitions.apiextensions.k8s.io") == "yes"
    assert can_i(cp, sa, "list", "secrets", "default") == "no"
    run(cp, "helm", "uninstall", "civic-cw", "-n", ns, "--wait")
