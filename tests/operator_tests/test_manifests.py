"""The objects built from a pool, and Job-mode bookkeeping."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from civic_operator import manifests
from civic_operator.manifests import JobView, PoolRef
from civic_operator.policy import Policy

pytestmark = pytest.mark.unit

REF = PoolRef("thumbs", "civic", "uid-1")
SPEC: dict[str, Any] = {
    "queues": ["thumbnails"],
    "concurrency": 3,
    "image": "civic-runner:dev",
    "replicas": 2,
    "database": {"secretRef": {"name": "db"}, "schema": "metadata"},
    "s3": {"secretRef": {"name": "s3"}},
    "env": [{"name": "LOG_LEVEL", "value": "DEBUG"}, {"name": "CIVIC_QUEUES", "value": "other=1"}],
    "template": {"resources": {"limits": {"memory": "512Mi"}}, "nodeSelector": {"pool": "workers"}},
    "terminationGracePeriodSeconds": 60,
}


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_deployment() -> None:
    d = manifests.deployment(REF, SPEC)
    assert d["metadata"]["name"] == "thumbs-runner"
    assert d["metadata"]["ownerReferences"][0] == {
        "apiVersion": "workers.civic-os.org/v1alpha1",
        "kind": "CivicWorkerPool",
        "name": "thumbs",
        "uid": "uid-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert d["spec"]["replicas"] == 2
    assert d["spec"]["selector"]["matchLabels"] == {"workers.civic-os.org/pool": "thumbs"}
    pod = d["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    env = env_of(c)
    assert env["DATABASE_URL"] == {"secretKeyRef": {"name": "db", "key": "DATABASE_URL"}}
    assert env["CIVIC_QUEUES"] == "other=1"  # the user's env wins over ours
    assert env["LOG_LEVEL"] == "DEBUG" and env["RIVER_SCHEMA"] == "metadata"
    assert c["envFrom"] == [{"secretRef": {"name": "s3"}}]
    assert c["args"] == ["run"]
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] and sc["runAsNonRoot"] and sc["capabilities"] == {"drop": ["ALL"]}
    assert not sc["allowPrivilegeEscalation"]
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["terminationGracePeriodSeconds"] == 60 and pod["nodeSelector"] == {"pool": "workers"}
    assert c["resources"] == {"limits": {"memory": "512Mi"}}


def test_database_url_never_from_plain_env() -> None:
    spec = {**SPEC, "env": [{"name": "DATABASE_URL", "value": "postgresql://leak"}]}
    (c,) = manifests.deployment(REF, spec)["spec"]["template"]["spec"]["containers"]
    assert env_of(c)["DATABASE_URL"] == {"secretKeyRef": {"name": "db", "key": "DATABASE_URL"}}


def test_listen_url_and_pooler_from_the_pool() -> None:
    db = {**SPEC["database"], "listenSecretRef": {"name": "civic-db-direct"}, "pooler": "transaction"}
    env = {e["name"]: e for e in manifests.container_env({**SPEC, "database": db})}
    assert env["DATABASE_LISTEN_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": "civic-db-direct", "key": "DATABASE_LISTEN_URL"}
    }
    assert env["CIVIC_DB_POOLER"] == {"name": "CIVIC_DB_POOLER", "value": "transaction"}
    db["listenSecretRef"] = {"name": "s", "key": "url"}
    env = {e["name"]: e for e in manifests.container_env({**SPEC, "database": db})}
    assert env["DATABASE_LISTEN_URL"]["valueFrom"]["secretKeyRef"] == {"name": "s", "key": "url"}
    # Neither without the fields: the runner's defaults (listen on DATABASE_URL, detect a pooler).
    names = {e["name"] for e in manifests.container_env(SPEC)}
    assert not names & {"DATABASE_LISTEN_URL", "CIVIC_DB_POOLER"}
    # A listen URL is a credential too: never taken from plain env.
    leak = {**SPEC, "env": [{"name": "DATABASE_LISTEN_URL", "value": "postgresql://leak"}]}
    assert "postgresql://leak" not in str(manifests.container_env(leak))


def test_job_manifest_drains_and_exits() -> None:
    j = manifests.job(REF, SPEC)
    assert j["metadata"]["generateName"] == "thumbs-runner-"
    pod = j["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["containers"][0]["args"] == ["run", "--exit-when-idle"]
    assert "livenessProbe" not in pod["containers"][0]


def test_selector_string() -> None:
    assert manifests.selector_string("thumbs") == "workers.civic-os.org/pool=thumbs"


@pytest.mark.parametrize(
    ("desired", "states", "create"),
    [
        (3, [], 3),
        (3, [None, None], 1),  # running or still pending: both count
        (3, [None, "Complete", "Failed"], 2),
        (0, [None], 0),
        (1, [None, None, None], 0),  # more than needed: never delete running Jobs
    ],
)
def test_jobs_to_create(desired: int, states: list[str | None], create: int) -> None:
    existing = [JobView(f"j{i}", f"2026-01-01T00:00:0{i}Z", s) for i, s in enumerate(states)]
    assert manifests.jobs_to_create(desired, existing) == create


def test_jobs_to_delete_keeps_newest_history() -> None:
    existing = [JobView(f"ok{i}", f"2026-01-01T00:00:0{i}Z", "Complete") for i in range(5)]
    existing += [JobView("bad0", "2026-01-01T00:00:00Z", "Failed"), JobView("run", "2026-01-01T00:00:09Z", None)]
    assert manifests.jobs_to_delete(existing, keep_succeeded=3, keep_failed=1) == ["ok0", "ok1"]
    assert manifests.jobs_to_delete(existing, keep_succeeded=0, keep_failed=0) == [
        "ok0",
        "ok1",
        "ok2",
        "ok3",
        "ok4",
        "bad0",
    ]


def _crd_defaults(schema: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, prop in (schema.get("properties") or {}).items():
        if "default" in prop:
            out[key] = prop["default"]
            if prop.get("type") == "object":
                out[key] = {**_crd_defaults(prop), **prop["default"]}
    return out


def test_policy_defaults_match_the_crd() -> None:
    """Policy.from_spec({}) must agree with the defaults the API server fills in."""
    crd = yaml.safe_load((Path(__file__).parents[2] / "crds" / "civicworkerpool.yaml").read_text())
    spec_schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    autoscaling = _crd_defaults(spec_schema["properties"]["autoscaling"])
    assert Policy.from_spec(autoscaling) == Policy.from_spec({})
