"""Pods on kwok nodes are fake: this harness gives each Running pod of the runner image a real process.

For every Running pod matching the selector it starts the container — `civic-runner` with the pod's
args, or the pod's own `python3`/`civic-runner` command (the chart's `helm test` pod) — with the pod's
environment (secrets and field references resolved), and stops it (SIGTERM, like the kubelet) when the
pod is deleted. When the process of a pod that does not restart (a Job's pod, a test hook) exits, the
pod's status is set to Succeeded or Failed, as a kubelet would, so the Job controller and `helm test`
see it finish. More replicas really drain faster.

Each process's stdout and stderr go to `<log_dir>/<pod>.log` in the kubelet's CRI log format, and a
kwok `Logs` object (enabled by scripts/k8s/cluster.sh) points the pod's container at that file, so
`kubectl logs` (and `-f`, `--tail`, `helm test --logs`) read it through the API server as on a real node.
"""

from __future__ import annotations

import base64
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import kubernetes
from kubernetes.client.rest import ApiException

ROOT = Path(__file__).resolve().parents[2]
log = logging.getLogger(__name__)


@dataclass
class Proc:
    pod: str
    popen: subprocess.Popen[bytes]
    is_job: bool
    reported: bool = False
    pumps: list[threading.Thread] = field(default_factory=list)
    sink: IO[str] | None = None


def cri_line(stream: str, text: str, at: datetime | None = None) -> str:
    """One line as the kubelet stores container logs (what kwok's log server parses)."""
    stamp = (at or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return f"{stamp} {stream} F {text}\n"


def _pump(source: IO[bytes], stream: str, sink: IO[str], lock: threading.Lock) -> None:
    for raw in iter(source.readline, b""):
        line = cri_line(stream, raw.rstrip(b"\n").decode(errors="replace"))
        with lock:
            sink.write(line)
            sink.flush()
    source.close()


class PodProcesses:
    def __init__(
        self,
        kubeconfig: Path,
        namespace: str,
        selector: str,
        log_dir: Path,
        env_overrides: dict[str, str] | None = None,  # e.g. a Service's address, which has no DNS here
        interval: float = 0.2,
        skip_nodes: set[str] | None = None,  # real nodes: their pods run as containers
    ) -> None:
        api = kubernetes.config.new_client_from_config(str(kubeconfig))
        self.core = kubernetes.client.CoreV1Api(api)
        self.custom = kubernetes.client.CustomObjectsApi(api)
        self.namespace = namespace
        self.selector = selector
        self.log_dir = log_dir
        self.env_overrides = env_overrides or {}
        self.interval = interval
        self.skip_nodes = skip_nodes or set()
        self.procs: dict[str, Proc] = {}
        self.started_total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="podprocs")

    def __enter__(self) -> PodProcesses:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(10)
        for p in list(self.procs.values()):
            self._terminate(p)
        for p in list(self.procs.values()):
            try:
                p.popen.wait(30)
            except subprocess.TimeoutExpired:
                p.popen.kill()
            for t in p.pumps:
                t.join(5)
            if p.sink:
                p.sink.close()

    @property
    def running(self) -> int:
        return sum(1 for p in self.procs.values() if p.popen.poll() is None)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._sync()
            except Exception:
                log.exception("pod sync failed")
            self._stop.wait(self.interval)

    def _sync(self) -> None:
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=self.selector).items
        seen = set()
        for pod in pods:
            uid = pod.metadata.uid  # not the name: a hook pod is deleted and re-created under the same one
            seen.add(uid)
            gone = pod.metadata.deletion_timestamp is not None or pod.status.phase in ("Succeeded", "Failed")
            if uid in self.procs:
                p = self.procs[uid]
                if gone and p.popen.poll() is None:
                    self._terminate(p)
                elif p.is_job and not p.reported and p.popen.poll() is not None:
                    self._report_exit(pod, p)
            elif (
                pod.status.phase == "Running"
                and not gone
                and pod.spec.node_name not in self.skip_nodes
                and self._runs_the_runner(pod)
            ):
                self.procs[uid] = self._start(pod)
        for uid in list(self.procs):
            if uid not in seen:
                self._terminate(self.procs[uid])
                if self.procs[uid].popen.poll() is not None:
                    del self.procs[uid]

    @staticmethod
    def _runs_the_runner(pod: Any) -> bool:
        """Pods of the runner image, with its entrypoint or a command the image has (python3 or
        civic-runner); others stay fake."""
        c = pod.spec.containers[0]
        return str(c.image).split(":")[0].endswith("civic-runner") and (
            not c.command or c.command[0] in ("python3", "civic-runner")
        )

    @staticmethod
    def _argv(container: Any) -> list[str]:
        command = list(container.command or [])
        if not command or command[0] == "civic-runner":
            return [sys.executable, "-m", "civic_runner.cli", *command[1:], *(container.args or ["run"])]
        return [sys.executable, *command[1:], *(container.args or [])]  # python3 -> this interpreter

    def _start(self, pod: Any) -> Proc:
        container = pod.spec.containers[0]
        env = {
            **os.environ,
            **self._env(pod, container),
            "CIVIC_HTTP_PORT": "0",
            "PYTHONPATH": str(ROOT),
            # the image's PATH has civic-runner; here it is beside this interpreter
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            **self.env_overrides,
        }
        path = self.log_dir / f"{pod.metadata.name}.log"
        sink = open(path, "a", encoding="utf-8")  # noqa: SIM115 - the pumps write it; closed in __exit__
        popen = subprocess.Popen(
            self._argv(container), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT
        )
        lock = threading.Lock()
        pumps = [
            threading.Thread(target=_pump, args=(src, name, sink, lock), daemon=True, name=f"log-{name}")
            for src, name in ((popen.stdout, "stdout"), (popen.stderr, "stderr"))
        ]
        for t in pumps:
            t.start()
        self._publish_logs(pod, container.name, path)
        self.started_total += 1
        is_job = pod.spec.restart_policy == "Never" or any(o.kind == "Job" for o in pod.metadata.owner_references or [])
        log.info("started runner for pod %s (pid %s)", pod.metadata.name, popen.pid)
        return Proc(pod.metadata.name, popen, is_job, pumps=pumps, sink=sink)

    def _publish_logs(self, pod: Any, container: str, path: Path) -> None:
        """kwok's Logs object for this pod (same name and namespace): its container's log is our file."""
        body = {
            "apiVersion": "kwok.x-k8s.io/v1alpha1",
            "kind": "Logs",
            "metadata": {"name": pod.metadata.name, "namespace": self.namespace},
            "spec": {"logs": [{"containers": [container], "logsFile": str(path.resolve()), "follow": True}]},
        }
        args = ("kwok.x-k8s.io", "v1alpha1", self.namespace, "logs")
        try:
            try:
                self.custom.create_namespaced_custom_object(*args, body)
            except ApiException as exc:
                if exc.status != 409:  # 409: a re-created pod of the same name (a hook pod)
                    raise
                self.custom.delete_namespaced_custom_object(*args, pod.metadata.name)
                self.custom.create_namespaced_custom_object(*args, body)
        except ApiException as exc:
            log.warning("kubectl logs will not show pod %s: %s", pod.metadata.name, exc.reason)

    def _terminate(self, p: Proc) -> None:
        if p.popen.poll() is None:
            p.popen.send_signal(signal.SIGTERM)

    def _report_exit(self, pod: Any, p: Proc) -> None:
        code = p.popen.returncode
        phase = "Succeeded" if code == 0 else "Failed"
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        status = {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": "False", "reason": "PodCompleted"}],
            "containerStatuses": [
                {
                    "name": pod.spec.containers[0].name,
                    "ready": False,
                    "restartCount": 0,
                    "image": pod.spec.containers[0].image,
                    "imageID": "",
                    "state": {
                        "terminated": {
                            "exitCode": code,
                            "reason": "Completed" if code == 0 else "Error",
                            "startedAt": now,
                            "finishedAt": now,
                        }
                    },
                }
            ],
        }
        self.core.patch_namespaced_pod_status(pod.metadata.name, self.namespace, {"status": status})
        p.reported = True

    def _secret(self, name: str) -> dict[str, str]:
        s = self.core.read_namespaced_secret(name, self.namespace)
        return {k: base64.b64decode(v).decode() for k, v in (s.data or {}).items()}

    def _env(self, pod: Any, container: Any) -> dict[str, str]:
        env: dict[str, str] = {}
        for src in container.env_from or []:
            if src.secret_ref:
                env.update(self._secret(src.secret_ref.name))
        for e in container.env or []:
            if e.value is not None:
                env[e.name] = e.value
            elif e.value_from and e.value_from.secret_key_ref:
                ref = e.value_from.secret_key_ref
                env[e.name] = self._secret(ref.name)[ref.key]
            elif e.value_from and e.value_from.field_ref:
                path = e.value_from.field_ref.field_path
                env[e.name] = {"metadata.name": pod.metadata.name, "metadata.namespace": self.namespace}.get(path, "")
        return env
