"""Kubernetes objects built from a CivicWorkerPool: pure functions of the pool's body."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from civic_operator import POOL_LABEL
from civic_operator.budget import runner_app_name

RUNNER_PORT = 8090
RUNNER_UID = 10001
DEFAULT_KINDS_MODULES = "civic_runner.pipeline"


@dataclass(frozen=True)
class PoolRef:
    name: str
    namespace: str
    uid: str


def object_name(pool: str) -> str:
    return f"{pool}-runner"


def selector_labels(pool: str) -> dict[str, str]:
    return {POOL_LABEL: pool}


def selector_string(pool: str) -> str:
    """status.selector for the scale subresource: a serialized label selector."""
    return ",".join(f"{k}={v}" for k, v in selector_labels(pool).items())


def labels(pool: str, mode: str) -> dict[str, str]:
    return {
        **selector_labels(pool),
        "app.kubernetes.io/name": "civic-runner",
        "app.kubernetes.io/instance": pool,
        "app.kubernetes.io/component": "worker" if mode == "Deployment" else "job-worker",
        "app.kubernetes.io/managed-by": "civic-operator",
    }


def queues_env(spec: dict[str, Any]) -> str:
    concurrency = int(spec.get("concurrency", 10))
    return ",".join(f"{q}={concurrency}" for q in spec["queues"])


SECRET_ONLY = ("DATABASE_URL", "DATABASE_LISTEN_URL")


def listen_env(db: dict[str, Any]) -> list[dict[str, Any]]:
    """The direct URL for LISTEN (DATABASE_LISTEN_URL) and the pooler setting, when the pool gives them."""
    env: list[dict[str, Any]] = []
    ref = db.get("listenSecretRef") or {}
    if ref.get("name"):
        key = ref.get("key", "DATABASE_LISTEN_URL")
        env.append({"name": "DATABASE_LISTEN_URL", "valueFrom": {"secretKeyRef": {"name": ref["name"], "key": key}}})
    if db.get("pooler"):
        env.append({"name": "CIVIC_DB_POOLER", "value": str(db["pooler"])})
    return env


def container_env(spec: dict[str, Any], pool: PoolRef | None = None) -> list[dict[str, Any]]:
    db = spec.get("database") or {}
    ref = db.get("secretRef") or {}
    env: list[dict[str, Any]] = [
        {
            "name": "DATABASE_URL",
            "valueFrom": {"secretKeyRef": {"name": ref["name"], "key": ref.get("key", "DATABASE_URL")}},
        },
        *listen_env(db),
        {"name": "RIVER_SCHEMA", "value": str(db.get("schema", "metadata"))},
        {"name": "CIVIC_QUEUES", "value": queues_env(spec)},
        {"name": "CIVIC_KINDS_MODULES", "value": str(spec.get("kindsModules", DEFAULT_KINDS_MODULES))},
        {"name": "CIVIC_HTTP_PORT", "value": str(RUNNER_PORT)},
        {"name": "CIVIC_SHUTDOWN_GRACE", "value": str(spec.get("shutdownGraceSeconds", 25))},
        {"name": "CIVIC_CLIENT_ID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "DB_MAX_CONNS", "value": str(spec.get("dbMaxConns", 4))},
    ]
    if pool is not None:
        # libpq's application_name: the connection budget counts these as the pool's, not as others'.
        env.append({"name": "PGAPPNAME", "value": runner_app_name(pool.uid, pool.namespace, pool.name)})
    names = {e["name"] for e in env}
    # User env comes last and may override our defaults (except the database URLs: secrets only).
    for e in spec.get("env") or []:
        if e.get("name") in SECRET_ONLY:
            continue
        if e["name"] in names:
            env = [x for x in env if x["name"] != e["name"]]
        env.append(copy.deepcopy(e))
    return env


def pod_spec(spec: dict[str, Any], args: list[str], restart_policy: str, pool: PoolRef | None = None) -> dict[str, Any]:
    template = spec.get("template") or {}
    s3 = (spec.get("s3") or {}).get("secretRef") or {}
    container: dict[str, Any] = {
        "name": "runner",
        "image": spec["image"],
        "imagePullPolicy": spec.get("imagePullPolicy", "IfNotPresent"),
        "args": args,
        "env": container_env(spec, pool),
        "ports": [{"name": "http", "containerPort": RUNNER_PORT}],
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": RUNNER_UID,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if s3.get("name"):
        container["envFrom"] = [{"secretRef": {"name": s3["name"]}}]
    if template.get("resources"):
        container["resources"] = copy.deepcopy(template["resources"])
    if restart_policy == "Always":
        container["livenessProbe"] = {
            "httpGet": {"path": "/healthz", "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 3,
        }
        container["readinessProbe"] = {
            "httpGet": {"path": "/readyz", "port": "http"},
            "periodSeconds": 5,
            "failureThreshold": 2,
        }
    pod: dict[str, Any] = {
        "restartPolicy": restart_policy,
        "terminationGracePeriodSeconds": int(spec.get("terminationGracePeriodSeconds", 60)),
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUNNER_UID,
            "runAsGroup": RUNNER_UID,
            "fsGroup": RUNNER_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}}],
        "automountServiceAccountToken": False,
    }
    for key in ("nodeSelector", "tolerations", "affinity", "serviceAccountName", "priorityClassName"):
        if template.get(key):
            pod[key] = copy.deepcopy(template[key])
    return pod


def pod_metadata(name: str, spec: dict[str, Any], mode: str) -> dict[str, Any]:
    template = spec.get("template") or {}
    return {
        "labels": {**(template.get("labels") or {}), **labels(name, mode)},
        "annotations": {
            **(template.get("annotations") or {}),
            "prometheus.io/scrape": "true",
            "prometheus.io/port": str(RUNNER_PORT),
            "prometheus.io/path": "/metrics",
        },
    }


def owner_reference(pool: PoolRef) -> dict[str, Any]:
    return {
        "apiVersion": "workers.civic-os.org/v1alpha1",
        "kind": "CivicWorkerPool",
        "name": pool.name,
        "uid": pool.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def deployment(pool: PoolRef, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": object_name(pool.name),
            "namespace": pool.namespace,
            "labels": labels(pool.name, "Deployment"),
            "ownerReferences": [owner_reference(pool)],
        },
        "spec": {
            "replicas": int(spec.get("replicas") or 0),
            "selector": {"matchLabels": selector_labels(pool.name)},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": pod_metadata(pool.name, spec, "Deployment"),
                "spec": pod_spec(spec, ["run"], "Always", pool),
            },
        },
    }


def job(pool: PoolRef, spec: dict[str, Any]) -> dict[str, Any]:
    jobs = spec.get("jobs") or {}
    body: dict[str, Any] = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "generateName": f"{object_name(pool.name)}-",
            "namespace": pool.namespace,
            "labels": labels(pool.name, "Job"),
            "ownerReferences": [owner_reference(pool)],
        },
        "spec": {
            "backoffLimit": int(jobs.get("backoffLimit", 2)),
            "parallelism": 1,
            "completions": 1,
            "template": {
                "metadata": pod_metadata(pool.name, spec, "Job"),
                "spec": pod_spec(spec, ["run", "--exit-when-idle"], "Never", pool),
            },
        },
    }
    if jobs.get("activeDeadlineSeconds"):
        body["spec"]["activeDeadlineSeconds"] = int(jobs["activeDeadlineSeconds"])
    return body


@dataclass(frozen=True)
class JobView:
    name: str
    created: str  # RFC 3339, sortable
    finished: str | None  # "Complete" / "Failed" / None while active (pending pods included)


def jobs_to_create(desired: int, existing: list[JobView]) -> int:
    """Jobs to start now: each Job drains the queue and exits, so count every unfinished one
    (including those whose pod is still pending - KEDA's ScaledJob over-creation)."""
    active = sum(1 for j in existing if j.finished is None)
    return max(0, desired - active)


def jobs_to_delete(existing: list[JobView], keep_succeeded: int, keep_failed: int) -> list[str]:
    """Finished Jobs beyond the history limits, oldest first."""
    out: list[str] = []
    for state, keep in (("Complete", keep_succeeded), ("Failed", keep_failed)):
        done = sorted((j for j in existing if j.finished == state), key=lambda j: j.created)
        out += [j.name for j in done[: max(0, len(done) - keep)]]
    return out
