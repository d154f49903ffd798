"""scripts/k8s/real-node.sh on this machine: up (twice), status, a real pod Ready, and a down that leaves
nothing behind (processes, mounts, bridge, veths, iptables chains, sysctls, cgroups)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from devenv.controlplane import LocalControlPlane

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "k8s" / "real-node.sh"
CACHE = Path(os.environ.get("CIVIC_CACHE", Path.home() / ".cache" / "civic-workers"))
NODE_DIR = CACHE / "realnode"
BRIDGE = "civicbr0"
# What the kubelet, the CNI bridge plugin and kube-proxy may write (real-node.sh saves and restores them).
SYSCTLS = (
    "vm.overcommit_memory",
    "vm.panic_on_oom",
    "kernel.panic",
    "kernel.panic_on_oops",
    "kernel.keys.root_maxkeys",
    "kernel.keys.root_maxbytes",
    "net.ipv4.ip_forward",
    "net.ipv4.conf.all.route_localnet",
    "net.netfilter.nf_conntrack_max",
)
POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "tiny"},
    "spec": {
        "nodeSelector": {"kubernetes.io/hostname": "civic-real"},
        "tolerations": [{"key": "civic-workers.dev/real-node", "operator": "Exists", "effect": "NoSchedule"}],
        "terminationGracePeriodSeconds": 5,
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001},
        "containers": [
            {
                "name": "main",
                "image": "civic-runner:dev",
                "imagePullPolicy": "Never",
                "command": ["python3", "-c"],
                "args": [
                    "import http.server as h, os, signal, sys\n"
                    "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
                    "os.chdir('/tmp'); open('ready', 'w').write('ok')\n"
                    "h.HTTPServer(('', 8080), h.SimpleHTTPRequestHandler).serve_forever()\n"
                ],
                "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}, "periodSeconds": 1},
                "securityContext": {"readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
            }
        ],
        "volumes": [{"name": "tmp", "emptyDir": {}}],
    },
}


def node(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=600)


def sysctls() -> dict[str, str]:
    return {k: Path("/proc/sys", *k.split(".")).read_text().strip() for k in SYSCTLS}


def our_processes() -> list[str]:
    """Live processes of the node (zombies waiting for PID 1 to reap them do not count): the node's
    binaries, and containerd, its shims and socat, which name the node's directory or address."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            argv = [a.decode(errors="replace") for a in (proc / "cmdline").read_bytes().split(b"\0")]
        except (OSError, IndexError):
            continue
        line = " ".join(argv)
        ours = os.path.basename(argv[0]) in ("kubelet", "kube-proxy", "coredns")
        ours = ours or str(NODE_DIR) in line or "bind=10.88.0.1" in line
        if ours and state not in ("Z", "X"):
            found.append(f"{proc.name}: {line[:200]}")
    return found


def chains() -> list[str]:
    out = []
    for save in ("iptables-save", "ip6tables-save"):
        text = subprocess.run([save], capture_output=True, text=True, check=True).stdout
        out += [f"{save}: {line}" for line in text.splitlines() if "KUBE-" in line or "CNI-" in line]
    return out


def veths() -> int:
    out = subprocess.run(["ip", "-o", "link", "show", "type", "veth"], capture_output=True, text=True).stdout
    return len(out.splitlines())


def test_real_node_up_status_pod_and_down_leaves_nothing() -> None:
    if os.geteuid() != 0:
        pytest.fail("the real node needs root (bridge, iptables, mounts, cgroups): run the cluster tier as root")
    cp = LocalControlPlane()
    cp.up()
    if node("status").returncode == 0:
        node("down")  # left by an interrupted session: the checks below need a clean start
    before, veths_before = sysctls(), veths()

    t0 = time.monotonic()
    up = node("up")
    up_s = time.monotonic() - t0
    assert up.returncode == 0, up.stderr
    assert up.stdout.strip() == "civic-real"
    again = node("up")
    assert again.returncode == 0 and "already up" in again.stderr, again.stderr
    status = node("status")
    assert status.returncode == 0 and "node civic-real: Ready" in status.stdout, status.stdout + status.stderr
    assert sysctls() == before, "the kubelet's kernel tunables were put back once it started"

    cp.kubectl("delete", "pod", "tiny", "--ignore-not-found", "--wait=true")
    t0 = time.monotonic()
    cp.kubectl("apply", "-f", "-", input=json.dumps(POD))
    cp.kubectl("wait", "--for=condition=Ready", "pod/tiny", "--timeout=60s")
    ready_s = time.monotonic() - t0
    pod = json.loads(cp.kubectl("get", "pod", "tiny", "-o", "json"))
    assert pod["spec"]["nodeName"] == "civic-real" and pod["status"]["podIP"].startswith("10.88.0."), pod["status"]
    assert cp.kubectl("exec", "tiny", "--", "id", "-u").strip() == "10001"  # API server -> kubelet -> CRI
    taints = json.loads(cp.kubectl("get", "node", "civic-real", "-o", "jsonpath={.spec.taints}"))
    assert {"key": "civic-workers.dev/real-node", "value": "true", "effect": "NoSchedule"} in taints
    assert any(str(NODE_DIR) in line for line in Path("/proc/self/mounts").read_text().splitlines())

    t0 = time.monotonic()
    down = node("down")
    down_s = time.monotonic() - t0
    assert down.returncode == 0, down.stderr
    assert our_processes() == []
    mounts = [line for line in Path("/proc/self/mounts").read_text().splitlines() if str(NODE_DIR) in line]
    assert mounts == []
    assert subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode != 0, "bridge left"
    assert veths() == veths_before
    assert chains() == []
    assert sysctls() == before
    assert not list(Path("/sys/fs/cgroup").glob("*/kubepods")), "the kubelet's cgroups left"
    assert "civic-real" not in cp.kubectl("get", "nodes", "-o", "name")
    assert node("status").returncode != 0
    print(f"real node: up {up_s:.1f}s, pod Ready {ready_s:.1f}s after apply, down {down_s:.1f}s")  # noqa: T201
