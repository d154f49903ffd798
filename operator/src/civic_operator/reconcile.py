"""Make the owned objects follow the pool: a Deployment, or a set of Jobs."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from civic_operator import kube, manifests
from civic_operator.manifests import JobView, PoolRef

log = logging.getLogger("civic_operator.reconcile")


def job_view(job: Any) -> JobView:
    finished = None
    for c in job.status.conditions or []:
        if c.status == "True" and c.type in ("Complete", "Failed"):
            finished = c.type
    created = job.metadata.creation_timestamp.isoformat() if job.metadata.creation_timestamp else ""
    return JobView(name=job.metadata.name, created=created, finished=finished)


# Only a pool's autoscaler applies it, a round at a time; the lock keeps that so should another caller
# appear: in Job mode two concurrent applies would each count the same Jobs and create them twice.
_locks: dict[str, asyncio.Lock] = {}


async def reconcile(ref: PoolRef, spec: dict[str, Any]) -> dict[str, int]:
    """Apply the pool's spec; returns {"replicas": ..., "readyReplicas": ...} of what runs now."""
    async with _locks.setdefault(ref.uid, asyncio.Lock()):
        return await _reconcile(ref, spec)


async def _reconcile(ref: PoolRef, spec: dict[str, Any]) -> dict[str, int]:
    if spec.get("mode", "Deployment") == "Job":
        await kube.delete_deployment(ref.namespace, manifests.object_name(ref.name))
        return await reconcile_jobs(ref, spec)
    return await kube.apply_deployment(manifests.deployment(ref, spec))


async def reconcile_jobs(ref: PoolRef, spec: dict[str, Any]) -> dict[str, int]:
    jobs_spec = spec.get("jobs") or {}
    existing = [job_view(j) for j in await kube.list_jobs(ref.namespace, manifests.selector_string(ref.name))]
    for _ in range(manifests.jobs_to_create(int(spec.get("replicas") or 0), existing)):
        name = await kube.create_job(manifests.job(ref, spec))
        log.info("created job", extra={"pool": ref.name, "namespace": ref.namespace, "job": name})
    for name in manifests.jobs_to_delete(
        existing, int(jobs_spec.get("successfulJobsHistoryLimit", 3)), int(jobs_spec.get("failedJobsHistoryLimit", 3))
    ):
        await kube.delete_job(ref.namespace, name)
    active = sum(1 for j in existing if j.finished is None)
    return {"replicas": active, "readyReplicas": active}
