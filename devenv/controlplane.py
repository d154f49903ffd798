"""A real local Kubernetes control plane for tests, without Docker.

etcd, kube-apiserver, kube-controller-manager and kube-scheduler run as plain
processes (built from Go modules by ``scripts/k8s/build-binaries.sh``, cached
under ``$CIVIC_CACHE``); kwok-controller fakes the nodes and makes scheduled
pods ``Running``. Everything is driven through ``scripts/k8s/cluster.sh``.

Usage::

    cp = LocalControlPlane()
    kubeconfig = cp.up()            # builds on first use (~11 min on 2 cores)
    cp.kubectl("get", "nodes")
    cp.restart_apiserver()          # clients see a real API server outage
    cp.down()
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

__all__ = ["ControlPlaneError", "LocalControlPlane"]

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
_SCRIPTS = REPO_ROOT / "scripts" / "k8s"


class ControlPlaneError(RuntimeError):
    """A cluster script or kubectl call failed."""


class LocalControlPlane:
    """One kwokctl-managed cluster (default name ``civic``).

    ``up()`` reuses a running cluster, so several test sessions may share it;
    ``down()`` deletes it together with its etcd data.
    """

    def __init__(
        self,
        name: str = "civic",
        *,
        nodes: int = 2,
        cache_dir: Path | None = None,
        build_timeout: float = 3600.0,
    ) -> None:
        self.name = name
        self.nodes = nodes
        self.cache_dir = cache_dir
        self.build_timeout = build_timeout
        self._bin_dir: Path | None = None
        self._kubeconfig: Path | None = None

    # -- paths ------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["CIVIC_CLUSTER_NAME"] = self.name
        env["CIVIC_K8S_NODES"] = str(self.nodes)
        if self.cache_dir is not None:
            env["CIVIC_CACHE"] = str(self.cache_dir)
        return env

    @property
    def kubeconfig(self) -> Path:
        """Path of the cluster's admin kubeconfig (exists once ``up()`` ran)."""
        if self._kubeconfig is None:
            out = self._run_script("cluster.sh", "kubeconfig", timeout=30)
            self._kubeconfig = Path(out.strip())
        return self._kubeconfig

    @property
    def bin_dir(self) -> Path:
        """Directory holding kubectl, kube-apiserver, etcd, kwokctl, helm, ..."""
        if self._bin_dir is None:
            out = self._run_script("build-binaries.sh", timeout=self.build_timeout)
            self._bin_dir = Path(out.strip().splitlines()[-1])
        return self._bin_dir

    def env(self) -> dict[str, str]:
        """Environment for subprocesses talking to the cluster (KUBECONFIG, PATH)."""
        env = self._env()
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        return env

    # -- lifecycle --------------------------------------------------------
    def up(self) -> Path:
        """Build binaries if needed, start (or reuse) the cluster; wait for
        Ready nodes. Returns the kubeconfig path."""
        out = self._run_script("cluster.sh", "up", timeout=self.build_timeout + 600)
        path = Path(out.strip().splitlines()[-1])
        self._kubeconfig = path
        log.info("control plane %s up, kubeconfig %s", self.name, path)
        return path

    def down(self) -> None:
        """Delete the cluster: stop its processes and remove its data."""
        self._run_script("cluster.sh", "down", timeout=300)
        log.info("control plane %s deleted", self.name)

    def restart_apiserver(self, *, restart_controllers: bool = True) -> None:
        """Kill kube-apiserver (SIGTERM, SIGKILL after 3 s) and start it again
        on the same port with the same etcd data; returns once /readyz is ok.

        Clients connected to the API server see their connections drop and
        must reconnect. With ``restart_controllers`` (default) the in-cluster
        controller-manager, scheduler and kwok-controller are restarted too,
        so that Deployments/Jobs/pods react within seconds afterwards; with
        False they recover on their own, but client-go's growing reconnect
        backoff makes them take up to 1-2 minutes after repeated restarts.
        """
        args = ["restart-apiserver"]
        if not restart_controllers:
            args.append("--apiserver-only")
        self._run_script("cluster.sh", *args, timeout=300)
        log.info("kube-apiserver of %s restarted", self.name)

    # -- kubectl ----------------------------------------------------------
    def kubectl(
        self,
        *args: str,
        input: str | None = None,  # noqa: A002 - mirrors subprocess.run
        timeout: float = 120.0,
        check: bool = True,
    ) -> str:
        """Run kubectl against the cluster and return its stdout.

        Raises ControlPlaneError on a non-zero exit unless ``check`` is False.
        """
        cmd = [str(self.bin_dir / "kubectl"), "--kubeconfig", str(self.kubeconfig), *args]
        return self._run(cmd, timeout=timeout, input=input, check=check)

    # -- helpers ----------------------------------------------------------
    def _run_script(self, script: str, *args: str, timeout: float) -> str:
        return self._run(["bash", str(_SCRIPTS / script), *args], timeout=timeout)

    def _run(
        self,
        cmd: list[str],
        *,
        timeout: float,
        input: str | None = None,  # noqa: A002
        check: bool = True,
    ) -> str:
        log.debug("running %s", " ".join(cmd))
        try:
            proc = subprocess.run(
                cmd,
                input=input,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=self._env(),
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise ControlPlaneError(f"timed out after {timeout}s: {' '.join(cmd)}") from exc
        if proc.stderr:
            log.debug("stderr of %s:\n%s", cmd[-1], proc.stderr.rstrip())
        if check and proc.returncode != 0:
            tail = "\n".join(proc.stderr.strip().splitlines()[-30:])
            raise ControlPlaneError(f"{' '.join(cmd)} exited with {proc.returncode}:\n{tail}")
        return proc.stdout
