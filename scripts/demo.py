"""`make demo`: the whole system on this machine, watched live.

Brings up PostgreSQL, an S3 server (SeaweedFS, checks SigV4), the local Kubernetes control plane
(kwokctl binary runtime; the first run builds it: ~11 min on 2 cores), installs the Helm chart with
Civic OS's two pools, runs the operator with its ServiceAccount's token and a real runner process for
every Running runner pod, then plays a burst of uploads the way Civic OS's frontend does them (request
an upload URL, PUT the bytes, record the file) and shows queue depth, replicas and thumbnails done.
Ctrl-C stops everything it started (the cluster and the database stay for the next run).

    python scripts/demo.py [--uploads 60] [--keep-running]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psycopg
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from civic_runner.migrate import Migrator  # noqa: E402

from scripts.localdb import server as local_postgres  # noqa: E402
from tests.e2e.clusters import CHART, LocalCluster  # noqa: E402
from tests.e2e.podprocs import PodProcesses  # noqa: E402
from tests.pipeline import corpus  # noqa: E402
from tests.support.s3 import SeaweedS3  # noqa: E402

NAMESPACE = "civic-demo"
RELEASE = "civic"
CACHE = Path(os.environ.get("CIVIC_CACHE", Path.home() / ".cache" / "civic-workers"))


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)  # noqa: T201 - a console program


def database() -> str:
    pg = local_postgres()
    try:
        psycopg.connect(pg.url(), connect_timeout=2).close()
    except psycopg.OperationalError:
        pg.start()
    url = pg.create_database("civic_demo")
    with psycopg.connect(url, autocommit=True) as conn:
        Migrator(conn, "metadata").up()
    return url


def upload(db: str, s3: SeaweedS3, i: int, kind: str) -> str:
    """What Civic OS's frontend does for one file."""
    if kind == "pdf":
        name, mime, data = f"report-{i}.pdf", "application/pdf", corpus.pdf(pages=2)
    elif kind == "png":
        name, mime, data = f"screen-{i}.png", "image/png", corpus.screenshot_png(1920, 1080)
    else:
        name, mime, data = f"photo-{i}.jpg", "image/jpeg", corpus.jpeg(2400, 1800, seed=i)
    with psycopg.connect(db, autocommit=True) as conn:
        (req,) = conn.execute(
            """INSERT INTO metadata.file_upload_requests (entity_type, entity_id, file_name, file_type)
               VALUES ('issues', %s, %s, %s) RETURNING id""",
            (str(i % 7), name, mime),
        ).fetchone() or (None,)
        deadline = time.monotonic() + 10  # the frontend gives up after 10 s
        while True:
            row = conn.execute(
                "SELECT status, presigned_url, file_id, error_message FROM metadata.file_upload_requests WHERE id = %s",
                (req,),
            ).fetchone()
            assert row is not None
            if row[0] in ("completed", "failed") or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if row[0] != "completed":
            return f"presign {row[0]}: {row[3]}"
        r = requests.put(row[1], data=data, headers={"Content-Type": mime, "x-amz-acl": "public-read"}, timeout=30)
        if r.status_code != 200:
            return f"PUT {r.status_code}"
        path = row[1].split("?")[0].split("/", 3)[3]  # http://host/bucket/key -> bucket/key
        bucket, key = path.split("/", 1)
        conn.execute(
            """INSERT INTO metadata.files (id, entity_type, entity_id, file_name, file_type, file_size,
                                           s3_bucket, s3_original_key, thumbnail_status)
               VALUES (%s, 'issues', %s, %s, %s, %s, %s, %s, 'pending')""",
            (row[2], str(i % 7), name, mime, len(data), bucket, key),
        )
    return "ok"


def progress(cluster: LocalCluster, db: str) -> str:
    with psycopg.connect(db, autocommit=True) as conn:
        depth = dict(
            conn.execute(
                "SELECT queue, count(*) FROM metadata.river_job WHERE state IN ('available', 'running') GROUP BY 1"
            ).fetchall()
        )
        thumbs = dict(conn.execute("SELECT thumbnail_status, count(*) FROM metadata.files GROUP BY 1").fetchall())
        presigned = conn.execute(
            "SELECT count(*) FROM metadata.file_upload_requests WHERE status = 'completed'"
        ).fetchone()
    pools = json.loads(cluster.kubectl("get", "cwp", "-n", NAMESPACE, "-o", "json"))["items"]
    parts = [
        f"{p['metadata']['name']}: depth {depth.get(p['spec']['queues'][0], 0)} "
        f"desired {p['spec'].get('replicas', 0)} ready {p.get('status', {}).get('readyReplicas', 0)}"
        for p in pools
    ]
    done = thumbs.get("completed", 0)
    return (
        " | ".join(parts) + f" | presigned {presigned[0] if presigned else 0}, thumbnails done {done}, "
        f"failed {thumbs.get('failed', 0)}, waiting {thumbs.get('pending', 0) + thumbs.get('processing', 0)}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--uploads", type=int, default=60)
    ap.add_argument("--keep-running", action="store_true", help="stay up after the burst until Ctrl-C")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="civic-demo-"))
    started: list[Any] = []
    operator: subprocess.Popen[bytes] | None = None
    try:
        say("PostgreSQL (local, persistent) ...")
        db = database()
        say("S3 server (SeaweedFS) ...")
        (work / "s3").mkdir()
        s3 = SeaweedS3(root=work / "s3").start()
        started.append(s3)
        say("Kubernetes control plane (first run builds it from Go modules: ~11 min, cached after) ...")
        cluster = LocalCluster()
        cluster.up()
        crd = str(ROOT / "crds" / "civicworkerpool.yaml")
        cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", crd)
        cluster.kubectl("create", "namespace", NAMESPACE, check=False)
        cluster.create_secret(NAMESPACE, "civic-db", {"DATABASE_URL": db})
        cluster.create_secret(NAMESPACE, "civic-s3", s3.env)
        pods = PodProcesses(cluster.kubeconfig, NAMESPACE, "", work)  # every runner-image pod gets a process
        pods.__enter__()
        started.append(pods)
        say("helm upgrade --install (CRD, operator, RBAC, migration hook, pools s3-signer and thumbnails) ...")
        cluster.helm(
            "upgrade",
            "--install",
            RELEASE,
            str(CHART),
            "-n",
            NAMESPACE,
            "--wait",
            "--timeout",
            "180s",
            "--set",
            "database.secret.name=civic-db",
            "--set",
            "s3.secret.name=civic-s3",
            "--set",
            "pools.s3Signer.enabled=true",
            "--set",
            "pools.thumbnails.enabled=true",
            "--set",
            "pools.thumbnails.autoscaling.cooldownSeconds=30",
            "--set",
            "pools.s3Signer.autoscaling.cooldownSeconds=30",
        )
        sa = f"{RELEASE}-civic-workers-operator"
        kubeconfig = cluster.token_kubeconfig(NAMESPACE, sa, work / "operator.kubeconfig")
        say(f"operator (as ServiceAccount {sa}) ...")
        log = open(work / "operator.log", "ab")  # noqa: SIM115 - the child owns it
        operator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "civic_operator.main",
                "--standalone",
                "--namespace",
                NAMESPACE,
                "--liveness-port",
                "0",
                "--metrics-port",
                "0",
            ],
            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
            stdout=log,
            stderr=log,
            cwd=ROOT,
        )
        time.sleep(3)
        say(f"burst: {args.uploads} uploads (photos, screenshots, PDFs) from 8 concurrent users ...")
        kinds = ["jpg", "jpg", "png", "pdf"]
        with concurrent.futures.ThreadPoolExecutor(8) as users:
            futures = [users.submit(upload, db, s3, i, kinds[i % len(kinds)]) for i in range(args.uploads)]
            while not all(f.done() for f in futures):
                say(progress(cluster, db))
                time.sleep(1)
        problems = [f.result() for f in futures if f.result() != "ok"]
        say(f"uploads finished ({len(problems)} problems{': ' + '; '.join(problems[:3]) if problems else ''})")
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            line = progress(cluster, db)
            say(line)
            if "waiting 0" in line:
                break
            time.sleep(1)
        env = f"KUBECONFIG={cluster.kubeconfig}"
        say("done. Look around:")
        for cmd in (
            "kubectl get cwp -n civic-demo",
            "kubectl describe cwp thumbnails -n civic-demo",
            "kubectl get events -n civic-demo --field-selector reason=Scaled",
            "kubectl get deploy,pods -n civic-demo",
            "kubectl logs -n civic-demo -l workers.civic-os.org/pool=thumbnails --tail=3 --prefix",
        ):
            print(f"    {env} {cluster.cp.bin_dir}/{cmd}")  # noqa: T201
        print(  # noqa: T201
            f"    operator log: {work}/operator.log   (the operator runs as a process with its ServiceAccount's "
            "token; runner pods' logs are their processes', served to kubectl logs by kwok)"
        )
        print(f"    DATABASE_URL={db} .venv/bin/civic-runner stats")  # noqa: T201
        if args.keep_running:
            say("running until Ctrl-C ...")
            while True:
                time.sleep(5)
                say(progress(cluster, db))
    except KeyboardInterrupt:
        say("Ctrl-C: cleaning up")
    finally:
        if operator and operator.poll() is None:
            operator.terminate()
            operator.wait(20)
        for thing in reversed(started):
            if isinstance(thing, PodProcesses):
                thing.__exit__(None, None, None)
            else:
                thing.destroy()
        say(
            "stopped the operator, runner processes and S3 server; the cluster and PostgreSQL stay up "
            "(scripts/k8s/cluster.sh down, python scripts/localdb.py stop)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
