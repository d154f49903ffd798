"""`make demo`: the whole system on this machine, watched live, on real pods.

Builds both images from this tree (scripts/docker/build-images.sh: the Docker engine and the base image
first), brings up the local Kubernetes control plane (kwokctl binary runtime; the first run builds it:
~11 min on 2 cores) and its real node (scripts/k8s/real-node.sh: kubelet + containerd on the host-only
bridge 10.88.0.1/24, the images loaded into it), PostgreSQL (local, persistent, listening on loopback and
the bridge) and an S3 server (SeaweedFS, checks SigV4; its S3 API on loopback and the bridge). Then it
installs the Helm chart with Civic OS's two pools: the operator Deployment, the migration hook Job and
every runner pod run as containers on the real node, so every column of `kubectl get cwp` (readiness
from the runners' own /readyz) and every `kubectl logs` line is theirs. It plays a burst of uploads the
way Civic OS's frontend does them (request an upload URL, PUT the bytes, record the file), shows queue
depth, desired/ready replicas and thumbnails done every second, then runs and prints the commands a user
looks with (`look_commands`: `kubectl get cwp`, pods, the Scaled events, `kubectl logs`). River UI (the
chart's `ui`) runs beside the pools: its URL and login are printed. At the end (or on Ctrl-C) it uninstalls
the release (the kubelet stops the pods with SIGTERM) and stops S3; the cluster,
the real node and PostgreSQL stay for the next run.

    python scripts/demo.py [--uploads 60] [--keep-running]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devenv import corpus  # noqa: E402
from devenv.clusters import (  # noqa: E402
    CHART,
    REAL_NODE,
    REAL_NODE_IP,
    RIVERUI_IMAGE,
    LocalCluster,
    build_riverui_image,
)
from devenv.pg import PostgresServer  # noqa: E402
from devenv.s3 import SeaweedS3  # noqa: E402
from scripts.localdb import server as local_postgres  # noqa: E402

NAMESPACE = "civic-demo"
RELEASE = "civic"
OPERATOR = f"{RELEASE}-civic-workers-operator"
POOL_LABEL = "workers.civic-os.org/pool"
RIVERUI_USER = "admin"
T0 = time.monotonic()


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')} +{time.monotonic() - T0:5.1f}s] {msg}", flush=True)  # noqa: T201


def show(title: str, text: str) -> None:
    say(title)
    for line in text.rstrip().splitlines() or ["(nothing)"]:
        print(f"      {line}", flush=True)  # noqa: T201


def build_images() -> None:
    r = subprocess.run([str(ROOT / "scripts" / "docker" / "build-images.sh")], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"building the images failed:\n{r.stderr[-3000:]}")
    for line in r.stdout.split("\n"):
        if line.strip():
            name, size, seconds = line.split()
            say(f"  {name}: {int(size) / 1e6:.0f} MB, built in {seconds} s")


def reachable_from_pods(pg: PostgresServer) -> None:
    """The persistent server listens on loopback and the bridge, and trusts the bridge's subnet only
    (a server made by an earlier version, or by `make run`, gets that once, with one restart)."""
    hba = pg.data / "pg_hba.conf"
    line = f"host all all {REAL_NODE_IP}/24 trust"
    if line not in hba.read_text():
        with open(hba, "a") as f:
            f.write(f"# scripts/demo.py: runner pods of the real node (scripts/k8s/real-node.sh)\n{line}\n")
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        listening = str(conn.execute("SHOW listen_addresses").fetchone()[0])  # type: ignore[index]
        if REAL_NODE_IP in listening:
            conn.execute("SELECT pg_reload_conf()")
            return
        # Loopback keeps working without the bridge: PostgreSQL only warns about an address it cannot bind.
        conn.execute(f"ALTER SYSTEM SET listen_addresses = '127.0.0.1,{REAL_NODE_IP}'")
    pg.stop()
    pg.start()


def database() -> tuple[str, str]:
    """(URL for this host, URL for the pods) of a fresh database; the chart's hook Job migrates it."""
    pg = local_postgres()
    try:
        psycopg.connect(pg.url(), connect_timeout=2).close()
    except psycopg.OperationalError:
        pg.start()
    reachable_from_pods(pg)
    url = pg.create_database("civic_demo")
    return url, url.replace("127.0.0.1", REAL_NODE_IP)


def upload(db: str, i: int, kind: str) -> str:
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


def chart_values(work: Path) -> Path:
    """The chart with Civic OS's two pools; every pod of the release on the real node."""
    placement = {
        "nodeSelector": {"kubernetes.io/hostname": REAL_NODE},
        "tolerations": [{"key": "civic-workers.dev/real-node", "operator": "Exists", "effect": "NoSchedule"}],
    }
    values = {
        "database": {"secret": {"name": "civic-db"}},
        "s3": {"secret": {"name": "civic-s3"}},
        "operator": placement,
        "migrations": placement,
        "tests": placement,
        # River UI beside the pools (the image of its binary: River's published one cannot be pulled here).
        "ui": {
            "enabled": True,
            "image": dict(zip(("repository", "tag"), RIVERUI_IMAGE.split(":"), strict=True)),
            "basicAuth": {"secret": {"name": "civic-riverui-login"}},
            **placement,
        },
        "pools": {
            "s3Signer": {"enabled": True, "autoscaling": {"cooldownSeconds": 30}, **placement},
            "thumbnails": {
                "enabled": True,
                # 4 pods x the chart's 500m would not fit the 2 cores of this one node: 250m each.
                "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}},
                "autoscaling": {"cooldownSeconds": 30, "maxReplicas": 4},
                **placement,
            },
        },
    }
    path = work / "values.yaml"
    path.write_text(json.dumps(values))  # YAML is a superset of JSON
    return path


def look_commands(namespace: str = NAMESPACE, release: str = RELEASE) -> list[str]:
    """The commands the demo runs and prints after the burst, as a user would type them (with
    `shell_setup`'s two variables set). tests/docs/test_cluster_snippets.py runs this same list."""
    operator = f"deploy/{release}-civic-workers-operator"
    return [
        f"kubectl get cwp -n {namespace}",
        f"kubectl get pods -n {namespace} -o wide",
        f"kubectl get events -n {namespace} --field-selector reason=Scaled --sort-by=.lastTimestamp",
        f"kubectl logs -n {namespace} {operator} | grep '\"scaled\"' | tail -4",
        f"kubectl logs -n {namespace} -l {POOL_LABEL}=thumbnails --prefix --tail=200 --max-log-requests=8"
        " | grep '\"thumbnails made\"' | tail -3",
    ]


# What the demo leaves running, and how to stop it (printed at the end; not run by any test: they take
# down the control plane, node and database that other sessions share).
STOP_COMMANDS = ["scripts/k8s/real-node.sh down", "scripts/k8s/cluster.sh down", "python scripts/localdb.py stop"]


def shell_env(kubeconfig: Path, bin_dir: Path) -> dict[str, str]:
    """The environment `look_commands` run in: this control plane's kubectl first on PATH."""
    return {**os.environ, "KUBECONFIG": str(kubeconfig), "PATH": f"{bin_dir}:{os.environ.get('PATH', '')}"}


def shell_setup(kubeconfig: Path, bin_dir: Path) -> str:
    """The same, as a line to paste into a shell."""
    return f"export KUBECONFIG={kubeconfig} PATH={bin_dir}:$PATH"


def run_command(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """One of `look_commands` in bash, as a user's shell runs it (a pipeline fails when any part does)."""
    return subprocess.run(
        ["bash", "-o", "pipefail", "-c", command], env=env, cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def look_around(cluster: LocalCluster, namespace: str = NAMESPACE, release: str = RELEASE) -> None:
    """What the commands a user would type say now: every line comes from the real pods."""
    env = shell_env(cluster.kubeconfig, cluster.cp.bin_dir)
    say(f"in a shell:  {shell_setup(cluster.kubeconfig, cluster.cp.bin_dir)}")
    for command in look_commands(namespace, release):
        r = run_command(command, env)
        show(command, r.stdout if r.returncode == 0 else r.stdout + r.stderr)


def riverui_url(cluster: LocalCluster) -> str:
    """River UI's pod address: pods' addresses on the real node's bridge are reachable from this host."""
    pods = json.loads(
        cluster.kubectl("get", "pods", "-n", NAMESPACE, "-l", "app.kubernetes.io/name=riverui", "-o", "json")
    )["items"]
    ip = next((p["status"].get("podIP") for p in pods if p["status"].get("podIP")), None)
    return f"http://{ip}:8080/" if ip else "(no River UI pod yet)"


def migrated(cluster: LocalCluster) -> str:
    """What the hook's `civic-runner migrate` reported (its log: one JSON document)."""
    log = "\n" + cluster.kubectl("logs", "-n", NAMESPACE, f"job/{RELEASE}-civic-workers-migrate", check=False)
    try:
        report = json.loads(log[log.rindex("\n{") :])  # after its log lines, the indented report
    except ValueError:
        return f"log: {log.strip()[-300:]!r}"
    return f"{len(report.get('applied', []))} migrations applied, River schema at {report.get('main')}"


def uninstall(cluster: LocalCluster) -> None:
    """helm uninstall; the pools' Deployments go with their CivicWorkerPools, the kubelet stops the pods."""
    try:
        cluster.helm("uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout", "120s")
    except RuntimeError as exc:
        if "not found" not in str(exc):
            raise
    # helm leaves hook objects behind: the migration Job (and its Completed pod) goes too.
    cluster.kubectl("delete", "job", f"{RELEASE}-civic-workers-migrate", "-n", NAMESPACE, "--ignore-not-found")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and cluster.kubectl("get", "pods", "-n", NAMESPACE, "-o", "name", check=False):
        time.sleep(1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--uploads", type=int, default=60)
    ap.add_argument("--keep-running", action="store_true", help="stay up after the burst until Ctrl-C")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="civic-demo-"))
    s3: SeaweedS3 | None = None
    cluster: LocalCluster | None = None
    installed = False
    try:
        say("images civic-runner:dev and civic-operator:dev from this tree (Docker engine and base image first) ...")
        build_images()
        build_riverui_image()
        say(f"  {RIVERUI_IMAGE}: River UI v0.22.0 from its Go module (scripts/riverui/build-image.sh)")
        say("Kubernetes control plane and its real node (first run builds them from Go modules: ~11 min) ...")
        cluster = LocalCluster()
        cluster.up(test_image=False)
        cluster.load_image(RIVERUI_IMAGE)
        say(f"  node {REAL_NODE} Ready: kubelet + containerd on bridge civicbr0 {REAL_NODE_IP}/24, images loaded")
        say(f"PostgreSQL (local, persistent; pods reach it at {REAL_NODE_IP}) ...")
        db, db_for_pods = database()
        say(f"S3 server (SeaweedFS; pods reach its S3 API at {REAL_NODE_IP}) ...")
        (work / "s3").mkdir()
        s3 = SeaweedS3(root=work / "s3", s3_ip=REAL_NODE_IP).start()
        for crd in ("crds/civicworkerpool.yaml", "charts/civic-workers/crds/kopf-peerings.yaml"):
            cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(ROOT / crd))
        cluster.kubectl("create", "namespace", NAMESPACE, check=False)
        cluster.create_secret(NAMESPACE, "civic-db", {"DATABASE_URL": db_for_pods})
        cluster.create_secret(NAMESPACE, "civic-s3", s3.env)
        ui_password = secrets.token_urlsafe(12)
        cluster.create_secret(
            NAMESPACE,
            "civic-riverui-login",
            {"RIVER_BASIC_AUTH_USER": RIVERUI_USER, "RIVER_BASIC_AUTH_PASS": ui_password},
        )
        say("helm upgrade --install: migration hook Job, operator Deployment, pools s3-signer and thumbnails ...")
        installed = True
        cluster.helm(
            "upgrade", "--install", RELEASE, str(CHART), "-n", NAMESPACE, "-f", str(chart_values(work)),
            "--wait", "--timeout", "180s",
        )  # fmt: skip
        say(f"  migration hook Job (a pod on {REAL_NODE}): {migrated(cluster)}")
        ui_login = f"River UI: {riverui_url(cluster)}  (login {RIVERUI_USER} / {ui_password})"
        say(f"  {ui_login}")
        say("  waiting for the operator pod to make the pools' Deployments ...")
        deadline = time.monotonic() + 120
        wanted = {"deployment.apps/s3-signer-runner", "deployment.apps/thumbnails-runner"}
        while time.monotonic() < deadline:
            if wanted <= set(cluster.kubectl("get", "deploy", "-n", NAMESPACE, "-o", "name").split()):
                break
            time.sleep(0.5)
        say(progress(cluster, db))
        say(f"burst: {args.uploads} uploads (photos, screenshots, PDFs) from 8 concurrent users ...")
        burst = time.monotonic()
        kinds = ["jpg", "jpg", "png", "pdf"]
        with concurrent.futures.ThreadPoolExecutor(8) as users:
            futures = [users.submit(upload, db, i, kinds[i % len(kinds)]) for i in range(args.uploads)]
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
        say(f"burst done in {time.monotonic() - burst:.1f} s. What the cluster says (all of it from real pods):")
        look_around(cluster)
        if args.keep_running:
            say(f"running until Ctrl-C; look around yourself, e.g.  kubectl get cwp,pods -n {NAMESPACE}")
            say(ui_login)
            while True:
                time.sleep(5)
                say(progress(cluster, db))
        else:
            say(f"(python scripts/demo.py --keep-running stays up to look around with those commands, and {ui_login})")
    except KeyboardInterrupt:
        say("Ctrl-C: cleaning up")
    finally:
        if cluster is not None and installed:
            say("helm uninstall (the kubelet stops the pods with SIGTERM) ...")
            uninstall(cluster)
        if s3 is not None:
            s3.destroy()
        say(
            f"done in {time.monotonic() - T0:.0f} s. The control plane, the real node and PostgreSQL stay up "
            f"({', '.join(STOP_COMMANDS)})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
