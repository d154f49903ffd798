"""The clusters the e2e tests run on, behind one interface, so the test bodies are shared:

- `local` (default, what CI runs): a real kube-apiserver/etcd/controller-manager/scheduler started by
  kwokctl's binary runtime (devenv/controlplane.py), fake kwok nodes for what needs many pods
  (or none running: they run no containers), and one REAL node (scripts/k8s/real-node.sh: kubelet +
  containerd) where pods that ask for it (`real_pod_placement`) run as containers of the built images.
- `kind` (opt-in, `--cluster=kind`, needs Docker and kind): pytest-kind(-ng) creates the cluster, both
  images are built and loaded, and runner pods really run; nothing to emulate.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import yaml

from devenv.controlplane import LocalControlPlane

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "civic-workers"
REAL_NODE_SCRIPT = ROOT / "scripts" / "k8s" / "real-node.sh"
REAL_NODE = "civic-real"
REAL_NODE_IP = "10.88.0.1"  # the real node's bridge: pods reach the host's servers there
# The runner image plus the tests' job kinds (tests/support/kinds.py), for pools whose pods really run.
TEST_IMAGE = "civic-runner-e2e:dev"
# River UI's binary in an image (scripts/riverui/build-image.sh), standing in for River's published one.
RIVERUI_IMAGE = "civic-riverui:dev"
RIVERUI_BUILD_SCRIPT = ROOT / "scripts" / "riverui" / "build-image.sh"


def build_riverui_image() -> None:
    """civic-riverui:dev from River UI's binary (built from its Go module, cached by version)."""
    r = subprocess.run(["bash", str(RIVERUI_BUILD_SCRIPT)], capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise RuntimeError(f"building {RIVERUI_IMAGE} failed:\n{r.stderr[-2000:]}")


def build_test_image() -> None:
    """civic-runner:dev with tests.support.kinds on its path: a layer of two files, no network."""
    with tempfile.TemporaryDirectory() as ctx:
        support = Path(ctx, "tests", "support")
        support.mkdir(parents=True)
        for name in ("__init__.py", "kinds.py"):
            shutil.copy(ROOT / "tests" / "support" / name, support / name)
        Path(ctx, "Dockerfile").write_text(
            "FROM civic-runner:dev\nCOPY tests/ /opt/e2e/tests/\nENV PYTHONPATH=/opt/e2e\n"
        )
        # BuildKit's front end as scripts/docker/build-images.sh picks it: buildx if there is one, else
        # Debian's 20.10 CLI, which has BuildKit built in (newer CLIs need buildx for it).
        has_buildx = subprocess.run(["docker", "buildx", "version"], capture_output=True).returncode == 0
        build = ["docker", "buildx", "build", "--load"] if has_buildx else ["/usr/bin/docker", "build"]
        r = subprocess.run(
            [*build, "-q", "-t", TEST_IMAGE, ctx],
            capture_output=True,
            text=True,
            env={**os.environ, "DOCKER_BUILDKIT": "1"},
            timeout=300,
        )
        if r.returncode != 0:
            raise RuntimeError(f"building {TEST_IMAGE} failed (is civic-runner:dev built?):\n{r.stderr[-2000:]}")


@dataclass(frozen=True)
class ContainerEvent:
    """One event of the nodes' containerd (`ctr events`): its own clock, nanoseconds."""

    at: float  # Unix time
    topic: str  # /containers/create, /tasks/start, ...
    payload: dict[str, Any]

    @property
    def container_id(self) -> str:
        return str(self.payload.get("container_id") or self.payload.get("id") or "")


def parse_ctr_event(line: str) -> ContainerEvent | None:
    """`2026-12-01 21:00:00.123456789 +0000 UTC k8s.io /tasks/start {"container_id":"...","pid":1}`"""
    parts = line.split(" ", 6)
    if len(parts) < 6 or not parts[5].startswith("/"):
        return None
    day, clock, offset = parts[0], parts[1], parts[2]
    whole, _, frac = clock.partition(".")
    at = datetime.strptime(f"{day} {whole} {offset}", "%Y-%m-%d %H:%M:%S %z").timestamp() + float(f"0.{frac or 0}")
    try:
        payload = json.loads(parts[6]) if len(parts) > 6 else {}
    except json.JSONDecodeError:
        payload = {}
    return ContainerEvent(at, parts[5], payload if isinstance(payload, dict) else {})


@contextlib.contextmanager
def _recording(command: list[str]) -> Iterator[list[ContainerEvent]]:
    events: list[ContainerEvent] = []
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            event = parse_ctr_event(line.strip())
            if event:
                events.append(event)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(0.2)  # subscribed before the caller acts
    try:
        yield events
    finally:
        time.sleep(0.2)
        proc.terminate()
        proc.wait(10)
        reader.join(5)


class Cluster(Protocol):
    name: str
    real_node: str | None  # the one node that runs containers beside fake ones (None: every node does)

    def up(self) -> None: ...
    def teardown(self) -> None: ...
    def real_pod_placement(self) -> dict[str, Any]: ...
    def kill_container(self, container_id: str) -> None: ...
    def container_events(self) -> contextlib.AbstractContextManager[list[ContainerEvent]]: ...
    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str: ...  # noqa: A002
    @property
    def kubeconfig(self) -> Path: ...
    def helm(self, *args: str) -> str: ...
    def create_secret(self, namespace: str, name: str, data: dict[str, str]) -> None: ...
    def database_url_for_pods(self, url: str) -> str: ...
    def address_for_pods(self) -> str: ...
    def operator_kubeconfig(self, namespace: str, tmp: Path) -> Path: ...
    def token_kubeconfig(self, namespace: str, service_account: str, path: Path) -> Path: ...
    def restart_apiserver(self) -> None: ...
    def load_image(self, image: str) -> None: ...


class _Common:
    name = "cluster"

    def teardown(self) -> None:
        pass

    def real_pod_placement(self) -> dict[str, Any]:
        """Pod spec fields that put a pod where it runs as a container (every node of kind)."""
        return {}

    @property
    def kubeconfig(self) -> Path:
        raise NotImplementedError

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:  # noqa: A002
        raise NotImplementedError

    def helm_binary(self) -> str:
        raise NotImplementedError

    def helm(self, *args: str) -> str:
        r = subprocess.run(
            [self.helm_binary(), "--kubeconfig", str(self.kubeconfig), *args],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if r.returncode != 0:
            raise RuntimeError(f"helm {' '.join(args)} failed:\n{r.stderr[-3000:]}")
        return r.stdout

    def create_secret(self, namespace: str, name: str, data: dict[str, str]) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        }
        self.kubectl("apply", "-f", "-", input=json.dumps(body))

    def operator_rbac(self, namespace: str) -> str:
        """The chart's ServiceAccount, Role and RoleBinding for the operator, rendered for this namespace."""
        out = self.helm(
            "template",
            namespace,
            str(CHART),
            "--namespace",
            namespace,
            "--set",
            "operator.enabled=false",
            "--set",
            "migrations.enabled=false",
        )
        docs = [
            d
            for d in yaml.safe_load_all(out)
            if d and d.get("kind") in ("ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding")
        ]
        return "\n---\n".join(yaml.safe_dump(d) for d in docs)

    def operator_kubeconfig(self, namespace: str, tmp: Path) -> Path:
        self.kubectl("apply", "-n", namespace, "-f", "-", input=self.operator_rbac(namespace))
        accounts = json.loads(self.kubectl("get", "serviceaccounts", "-n", namespace, "-o", "json"))["items"]
        sa = next(a["metadata"]["name"] for a in accounts if "operator" in a["metadata"]["name"])
        return self.token_kubeconfig(namespace, sa, tmp / "operator.kubeconfig")

    def token_kubeconfig(self, namespace: str, service_account: str, path: Path) -> Path:
        """A kubeconfig that authenticates as the ServiceAccount (a bound token), not as the admin."""
        token = self.kubectl("create", "token", service_account, "-n", namespace, "--duration", "8h").strip()
        admin = yaml.safe_load(self.kubeconfig.read_text())
        cluster_entry = admin["clusters"][0]
        user = f"system:serviceaccount:{namespace}:{service_account}"
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "cluster", "cluster": cluster_entry["cluster"]}],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": "sa", "context": {"cluster": "cluster", "user": user, "namespace": namespace}}],
            "current-context": "sa",
        }
        path.write_text(yaml.safe_dump(config))
        return path


class LocalCluster(_Common):
    name = "local"
    real_node: str | None = REAL_NODE  # the other (kwok) nodes' pods run no containers

    def __init__(self) -> None:
        self.cp = LocalControlPlane()

    def up(self, test_image: bool = True) -> None:
        """The control plane and the real node (with civic-runner:dev and civic-operator:dev loaded);
        test_image: also build and load the runner image with the tests' kinds."""
        self.cp.up()
        self.real_node_script("up")
        if test_image:
            build_test_image()
            self.real_node_script("load", TEST_IMAGE)

    def teardown(self) -> None:
        # CIVIC_E2E_KEEP_NODE=1: leave the real node up for others who share this machine's cluster.
        if os.environ.get("CIVIC_E2E_KEEP_NODE") != "1":
            self.real_node_script("down")

    def load_image(self, image: str) -> None:
        """A Docker image into the real node's containerd (skipped when unchanged)."""
        self.real_node_script("load", image)

    def real_node_script(self, *args: str) -> None:
        r = subprocess.run(["bash", str(REAL_NODE_SCRIPT), *args], capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            raise RuntimeError(f"real-node.sh {' '.join(args)} failed:\n{r.stderr[-3000:]}")

    def ctr(self) -> list[str]:
        """ctr on the real node's containerd (its own socket), in Kubernetes' namespace."""
        sock = Path(
            os.environ.get("CIVIC_CACHE", Path.home() / ".cache" / "civic-workers"), "realnode/run/containerd.sock"
        )
        return ["ctr", "-a", str(sock), "-n", "k8s.io"]

    def kill_container(self, container_id: str) -> None:
        """SIGKILL from outside, through the node's containerd (kill -9 inside the container cannot
        touch its PID 1)."""
        cid = container_id.removeprefix("containerd://")
        subprocess.run([*self.ctr(), "tasks", "kill", "-s", "SIGKILL", cid], check=True)

    def container_events(self) -> contextlib.AbstractContextManager[list[ContainerEvent]]:
        """The real node's containerd events while the block runs (sandbox and container starts)."""
        return _recording([*self.ctr(), "events"])

    def real_pod_placement(self) -> dict[str, Any]:
        # The real node is tainted so that kwok's fake nodes keep every pod that does not ask for it.
        return {
            "nodeSelector": {"kubernetes.io/hostname": REAL_NODE},
            "tolerations": [{"key": "civic-workers.dev/real-node", "operator": "Exists", "effect": "NoSchedule"}],
        }

    @property
    def kubeconfig(self) -> Path:
        return self.cp.kubeconfig

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:  # noqa: A002
        return self.cp.kubectl(*args, input=input, check=check)

    def helm_binary(self) -> str:
        return str(self.cp.bin_dir / "helm")

    def address_for_pods(self) -> str:
        """The host's address as real pods reach it: the real node's bridge (a local address, so the
        host's own clients and the processes standing in for fake pods reach it too)."""
        return REAL_NODE_IP

    def database_url_for_pods(self, url: str) -> str:
        # PostgreSQL listens on the bridge address too, see e2e_pg.
        return url.replace("127.0.0.1", self.address_for_pods())

    def restart_apiserver(self) -> None:
        self.cp.restart_apiserver()


class KindCluster(_Common):
    """pytest-kind-ng's KindCluster; images built by scripts/docker/build-images.sh and loaded."""

    name = "kind"
    real_node = None

    def __init__(self) -> None:
        from pytest_kind import KindCluster as _Kind  # type: ignore[import-not-found]  # opt-in dependency

        self.kind = _Kind("civic-e2e")

    def up(self) -> None:
        self.kind.create()
        subprocess.run([str(ROOT / "scripts" / "docker" / "build-images.sh")], check=True)
        build_test_image()
        for image in ("civic-runner:dev", "civic-operator:dev", TEST_IMAGE):
            self.kind.load_docker_image(image)

    def load_image(self, image: str) -> None:
        self.kind.load_docker_image(image)

    @property
    def kubeconfig(self) -> Path:
        return Path(self.kind.kubeconfig_path)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:  # noqa: A002
        r = subprocess.run(
            [str(self.kind.kubectl_path), "--kubeconfig", str(self.kubeconfig), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check and r.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed:\n{r.stderr}")
        return r.stdout

    def helm_binary(self) -> str:
        return shutil.which("helm") or "helm"

    def address_for_pods(self) -> str:
        """Pods reach the host through the kind network's gateway (a local address of the host)."""
        return subprocess.run(
            ["docker", "network", "inspect", "kind", "-f", "{{(index .IPAM.Config 0).Gateway}}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    def database_url_for_pods(self, url: str) -> str:
        return url.replace("127.0.0.1", self.address_for_pods())

    def kill_container(self, container_id: str) -> None:
        cid = container_id.removeprefix("containerd://")
        node = f"{self.kind.name}-control-plane"
        subprocess.run(
            ["docker", "exec", node, "ctr", "-n", "k8s.io", "tasks", "kill", "-s", "SIGKILL", cid], check=True
        )

    def container_events(self) -> contextlib.AbstractContextManager[list[ContainerEvent]]:
        node = f"{self.kind.name}-control-plane"
        return _recording(["docker", "exec", node, "ctr", "-n", "k8s.io", "events"])

    def restart_apiserver(self) -> None:
        subprocess.run(["docker", "restart", f"{self.kind.name}-control-plane"], check=True)
        self.kubectl("wait", "--for=condition=Ready", "node", "--all", "--timeout=120s")


def make_cluster(kind: str) -> Cluster:
    if kind == "local":
        return LocalCluster()
    if kind == "kind":
        return KindCluster()
    raise ValueError(f"unknown --cluster {kind!r} (local or kind)")
