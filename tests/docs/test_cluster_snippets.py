"""The Helm path as the docs give it, on the shared local control plane and its real node, and the commands
`make demo` prints after its burst.

The commands are read from the Markdown (README's ```sh cluster-quickstart, getting-started's gs-secrets,
gs-install and gs-look, helm.md's helm-secrets, helm-install, helm-upgrade and helm-uninstall) and from
scripts/demo.py's `look_commands`, and run in bash from the repository's root with this control plane's
kubectl and helm first on PATH. What changes from the text is the least that lets them run here, and only
through `in_namespace` and `substitute` calls written out below (a `substitute` that no longer applies fails):

- the namespace `civic` becomes this test's own (the control plane is shared with other sessions);
- the database URL and the S3 settings become the test's PostgreSQL and SeaweedFS (the text's are examples):
  README's Secret commands get them substituted; the Secret blocks of getting-started and helm.md run as
  written in namespaces of their own (their Secrets are checked, not used), and helm.md's install finds
  Secrets of the same names that the test made;
- pods are placed on the real node (its taint keeps everything else on kwok's fake nodes, where nothing
  runs): the chart gets `-f placement.yaml` (and the pools' placement for helm.md's), the example pool a
  copy with the same placement;
- `kubectl logs … -f` loses `-f` (it would follow for ever).

The demo's own install (`make demo`, 75 s with its burst) is not run: its `look_commands` run against this
install, which has what they look at (release `civic`, a `thumbnails` pool that has scaled and made
thumbnails, the operator's Scaled decisions).
"""

from __future__ import annotations

import json
import re
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
import yaml

from devenv import corpus
from devenv.clusters import REAL_NODE, REAL_NODE_IP, LocalCluster
from devenv.pg import PostgresServer
from devenv.s3 import SeaweedS3
from scripts import demo
from tests.docs.markdown import ROOT, fenced_block, shell_commands
from tests.support.harness import wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

DOC_NAMESPACE = "civic"  # the namespace every command of the docs uses
DOC_DB_URL = re.compile(r"DATABASE_URL='postgresql://[^']*'")


def block(page: str, label: str) -> list[str]:
    return shell_commands(fenced_block((ROOT / page).read_text(), label))


def substitute(command: str, pattern: str, replacement: str) -> str:
    """One visible change to a documented command; it must apply."""
    changed = re.sub(pattern, replacement, command)
    assert changed != command, f"{pattern!r} no longer matches {command!r}: update this test with the docs"
    return changed


def in_namespace(command: str, namespace: str) -> str:
    """`-n civic` / `namespace civic` -> this test's namespace, where the command names one (the release
    keeps its name `civic`)."""
    return re.sub(rf"(-n |namespace ){DOC_NAMESPACE}\b", rf"\g<1>{namespace}", command)


@dataclass
class Shell:
    """bash with this control plane's kubectl and helm, from the repository's root; every run recorded."""

    cluster: LocalCluster
    ran: list[tuple[str, subprocess.CompletedProcess[str]]] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        return demo.shell_env(self.cluster.kubeconfig, self.cluster.cp.bin_dir)

    def run(self, command: str, timeout: float = 300) -> str:
        r = subprocess.run(
            ["bash", "-o", "pipefail", "-c", command],
            cwd=ROOT, env=self.env(), capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        self.ran.append((command, r))
        if r.returncode != 0:
            pods = self.cluster.kubectl("get", "pods", "-A", "-o", "wide", check=False)
            raise AssertionError(
                f"`{command}` exited {r.returncode}:\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}\npods now:\n{pods}"
            )
        return r.stdout


@pytest.fixture(scope="module")
def local_cluster() -> LocalCluster:
    """The shared control plane and real node, brought up if they are not (never taken down here: other
    sessions use them)."""
    cluster = LocalCluster()
    cluster.up(test_image=False)
    return cluster


@pytest.fixture(scope="module")
def pods_pg() -> Iterator[PostgresServer]:
    """PostgreSQL on loopback and the real node's bridge, trusting the bridge's subnet only."""
    server = PostgresServer(settings={"listen_addresses": f"'127.0.0.1,{REAL_NODE_IP}'"})
    server.init()
    with open(server.data / "pg_hba.conf", "a") as f:
        f.write(f"host all all {REAL_NODE_IP}/24 trust\n")
    server.start()
    yield server
    server.destroy()


@pytest.fixture(scope="module")
def pods_s3() -> Iterator[SeaweedS3]:
    server = SeaweedS3(s3_ip=REAL_NODE_IP).start()
    yield server
    server.destroy()


@pytest.fixture
def namespaces(local_cluster: LocalCluster) -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    for ns in made:
        local_cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def placement_values(cluster: LocalCluster, path: Path) -> Path:
    placement = cluster.real_pod_placement()
    path.write_text(yaml.safe_dump({"operator": placement, "migrations": placement, "tests": placement}))
    return path


def example_pool_here(cluster: LocalCluster, name: str, namespace: str, tmp: Path) -> Path:
    """examples/<name> with this namespace and the real node's placement, nothing else changed."""
    pool = yaml.safe_load((ROOT / "examples" / name).read_text())
    assert pool["metadata"]["namespace"] == DOC_NAMESPACE
    pool["metadata"]["namespace"] = namespace
    pool["spec"].setdefault("template", {}).update(cluster.real_pod_placement())
    path = tmp / name
    path.write_text(yaml.safe_dump(pool))
    return path


def upload_photo(url: str, s3: SeaweedS3) -> str:
    """A JPEG in the bucket and its metadata.files row, as Civic OS records an upload: the row's trigger
    enqueues thumbnail_generate on queue `thumbnails`."""
    file_id = str(uuid.uuid4())
    key = f"issues/1/{file_id}/original.jpg"
    data = corpus.jpeg(1600, 1200, seed=7)
    s3.client().put_object(Bucket=s3.buckets[0], Key=key, Body=data, ContentType="image/jpeg")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            """INSERT INTO metadata.files (id, entity_type, entity_id, file_name, file_type, file_size,
                                           s3_bucket, s3_original_key, thumbnail_status)
               VALUES (%s, 'issues', '1', 'photo.jpg', 'image/jpeg', %s, %s, %s, 'pending')""",
            (file_id, len(data), s3.buckets[0], key),
        )
    return file_id


def thumbnail_status(url: str, file_id: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT thumbnail_status FROM metadata.files WHERE id = %s", (file_id,)).fetchone()
    return str(row[0]) if row else ""


def pool_row(get_cwp: str, pool: str) -> dict[str, str]:
    """One row of `kubectl get cwp` by its header (columns are separated by 2+ spaces)."""
    lines = get_cwp.rstrip().splitlines()
    header = re.split(r"\s{2,}", lines[0].strip())
    for line in lines[1:]:
        cells = re.split(r"\s{2,}", line.strip())
        if cells[0] == pool:
            return dict(zip(header, cells, strict=False))
    raise AssertionError(f"no pool {pool} in:\n{get_cwp}")


def json_lines(log: str) -> list[dict[str, object]]:
    """Every line must be one JSON object (the docs: "JSON lines, one event each")."""
    events = []
    for line in log.splitlines():
        body = line.split(" ", 1)[1] if line.startswith("[pod/") else line  # --prefix
        events.append(json.loads(body))
    return events


def test_readme_and_getting_started_cluster_path(
    local_cluster: LocalCluster,
    pods_pg: PostgresServer,
    pods_s3: SeaweedS3,
    namespaces: list[str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ns = f"docs-{uuid.uuid4().hex[:8]}"
    namespaces.append(ns)
    sh = Shell(local_cluster)
    url = pods_pg.create_database(ns.replace("-", "_"))
    (tmp_path / "s3.env").write_text("".join(f"{k}={v}\n" for k, v in pods_s3.env.items()))
    placement = placement_values(local_cluster, tmp_path / "placement.yaml")
    pool_file = example_pool_here(local_cluster, "pool-thumbnails.yaml", ns, tmp_path)

    # README's ```sh cluster-quickstart, command by command.
    quick = block("README.md", "cluster-quickstart")
    assert [c.split()[:3] for c in quick] == [
        ["kubectl", "create", "namespace"],
        ["kubectl", "-n", "civic"],
        ["kubectl", "-n", "civic"],
        ["helm", "install", "civic"],
        ["kubectl", "apply", "-f"],
        ["kubectl", "-n", "civic"],
        ["kubectl", "-n", "civic"],
    ], quick
    create_ns, db_secret, s3_secret, install, apply, get_cwp, logs = (in_namespace(c, ns) for c in quick)
    db_secret = substitute(db_secret, DOC_DB_URL.pattern, f"DATABASE_URL='{local_cluster.database_url_for_pods(url)}'")
    s3_secret = substitute(s3_secret, r"--from-env-file=s3\.env", f"--from-env-file={tmp_path / 's3.env'}")
    install = substitute(install, r"^helm install civic charts/civic-workers", rf"\g<0> -f {placement}")
    apply = substitute(apply, r"examples/pool-thumbnails\.yaml", str(pool_file))
    logs = substitute(logs, r" -f(?=\s+#|\s*$)", "")

    sh.run(create_ns)
    sh.run(db_secret)
    sh.run(s3_secret)
    out = sh.run(install)
    assert "STATUS: deployed" in out, out
    # "helm install runs civic-runner migrate first (River's tables ...)"
    with psycopg.connect(url) as conn:
        lines = dict(conn.execute("SELECT line, max(version) FROM metadata.river_migration GROUP BY 1").fetchall())
    assert lines.get("main", 0) >= 6 and lines.get("civic_files") == 2, lines
    assert "created" in sh.run(apply)
    header = sh.run(get_cwp).splitlines()[0].split()
    assert header[:6] == ["NAME", "QUEUES", "MODE", "DEPTH", "DESIRED", "READY"], header  # the comment's columns
    sh.run(logs)  # no pod yet: nothing, and no error

    # getting-started's ```sh gs-install: the same helm install, then the rollout and `helm test`.
    gs_install = block("docs/getting-started.md", "gs-install")
    assert gs_install[0] == quick[3], "getting-started's helm install differs from README's"
    sh.run(in_namespace(gs_install[1], ns), timeout=240)
    out = sh.run(in_namespace(gs_install[2], ns), timeout=240)
    assert "Phase:" in out and "Succeeded" in out, out

    # Inline commands of the same pages: the hook's log ("tells why" a migration failed: here, what it did),
    # `kubectl explain cwp.spec`, and the other two examples ("also: pool-s3-signer.yaml, pool-jobs.yaml"),
    # which the API server must accept (server-side dry run: their pods are not wanted here).
    hook_log = sh.run(f"kubectl -n {ns} logs job/civic-civic-workers-migrate")  # `<release>` = civic
    assert '"applied"' in hook_log and '"main"' in hook_log, hook_log
    assert "queues" in sh.run("kubectl explain cwp.spec")
    for example in ("pool-s3-signer.yaml", "pool-jobs.yaml"):
        copy = example_pool_here(local_cluster, example, ns, tmp_path)
        assert "created (server dry run)" in sh.run(f"kubectl apply --dry-run=server -f {copy}")

    # "The pool starts at zero pods; inserts on its queue scale it up."
    wait_for(lambda: pool_row(sh.run(get_cwp), "thumbnails").get("DESIRED") == "0", 60, what="DESIRED 0")
    file_id = upload_photo(url, pods_s3)
    wait_for(lambda: thumbnail_status(url, file_id) == "completed", 240, interval=1, what="the thumbnails made")

    # getting-started's ```sh gs-look: what the text says each shows.
    look = [in_namespace(c, ns) for c in block("docs/getting-started.md", "gs-look")]
    assert len(look) == 3, look
    row = pool_row(sh.run(look[0]), "thumbnails")
    assert row["QUEUES"] == '["thumbnails"]' and row["MODE"] == "Deployment" and "AGE" in row, row
    described = sh.run(look[1])
    assert "Status:" in described and "Conditions:" in described, described
    assert re.search(r"Scaled\s+.*0 → 1: depth", described), described  # "a Scaled event per change"
    events = json_lines(sh.run(substitute(look[2], r" -f(?=\s+#|\s*$)", "")))
    assert any(e.get("event") == "thumbnails made" for e in events), events[-5:]

    # The commands `make demo` prints after its burst (scripts/demo.py look_commands), on this install.
    shown = {c: sh.run(c, timeout=60) for c in demo.look_commands(namespace=ns, release="civic")}
    get, pods, scaled_events, operator_scaled, runner_made = shown.values()
    assert pool_row(get, "thumbnails")["QUEUES"] == '["thumbnails"]', get
    assert REAL_NODE in pods and "civic-civic-workers-operator" in pods, pods
    assert "Scaled" in scaled_events and "0 → 1" in scaled_events, scaled_events
    assert any(e.get("event") == "scaled" for e in json_lines(operator_scaled)), operator_scaled
    assert any(e.get("event") == "thumbnails made" for e in json_lines(runner_made)), runner_made
    # What the demo prints: the shell line to paste first (it must work in a shell that has neither
    # variable), then each command with its output.
    demo.look_around(local_cluster, namespace=ns, release="civic")
    printed = capsys.readouterr().out
    setup = next(ln.split("in a shell:", 1)[1].strip() for ln in printed.splitlines() if "in a shell:" in ln)
    assert setup == demo.shell_setup(local_cluster.kubeconfig, local_cluster.cp.bin_dir)
    bare = {"PATH": "/usr/bin:/bin", "HOME": str(Path.home())}
    pasted = subprocess.run(
        ["bash", "-c", f"{setup}; {demo.look_commands(ns)[0]}"], env=bare, capture_output=True, text=True, timeout=60
    )
    assert pasted.returncode == 0 and "thumbnails" in pasted.stdout, pasted.stderr
    lines = printed.splitlines()
    for command in shown:  # live state moves on: each printed with some output, not "(nothing)"
        at = next(i for i, ln in enumerate(lines) if ln.endswith(f"] {command}"))
        assert lines[at + 1].startswith("      ") and lines[at + 1].strip() != "(nothing)", printed

    # helm.md's ```sh helm-upgrade: the CRDs, then the release (--reuse-values keeps the placement).
    upgrade = block("docs/helm.md", "helm-upgrade")
    for command in upgrade[:-1]:
        sh.run(command)  # cluster-scoped CRDs: the same files the shared cluster already has
    out = sh.run(in_namespace(upgrade[-1], ns))
    assert "STATUS: deployed" in out and "REVISION: 2" in out, out

    # helm.md's ```sh helm-uninstall: the operator goes; the pool created with kubectl stays.
    (uninstall,) = block("docs/helm.md", "helm-uninstall")
    sh.run(in_namespace(uninstall, ns))
    left = sh.run(f"kubectl -n {ns} get deploy,cwp -o name")
    assert "civic-civic-workers-operator" not in left and "civicworkerpool.workers.civic-os.org/thumbnails" in left


def test_helm_md_install_and_the_secrets_blocks(
    local_cluster: LocalCluster, pods_pg: PostgresServer, pods_s3: SeaweedS3, namespaces: list[str], tmp_path: Path
) -> None:
    """helm.md's install with the chart's two pools, and both pages' Secret blocks as written."""
    sh = Shell(local_cluster)
    # The two Secret blocks, verbatim but for the namespace: the Secrets they make have the keys the text says.
    for page, label in (("docs/getting-started.md", "gs-secrets"), ("docs/helm.md", "helm-secrets")):
        ns = f"docs-{uuid.uuid4().hex[:8]}"
        namespaces.append(ns)
        for command in block(page, label):
            sh.run(in_namespace(command, ns))
        keys = {
            name: set(json.loads(sh.run(f"kubectl -n {ns} get secret {name} -o json"))["data"])
            for name in ("civic-db", "civic-s3")
        }
        assert keys == {
            "civic-db": {"DATABASE_URL"},
            "civic-s3": {"S3_BUCKET", "S3_ENDPOINT", "S3_ACCESS_KEY_ID", "S3_SECRET_ACCESS_KEY", "S3_REGION"},
        }, (label, keys)

    # helm.md's ```sh helm-install, with this test's database and S3 in the Secrets it names.
    ns = f"docs-{uuid.uuid4().hex[:8]}"
    namespaces.append(ns)
    url = pods_pg.create_database(ns.replace("-", "_"))
    sh.run(f"kubectl create namespace {ns}")
    local_cluster.create_secret(ns, "civic-db", {"DATABASE_URL": local_cluster.database_url_for_pods(url)})
    local_cluster.create_secret(ns, "civic-s3", pods_s3.env)
    placement = placement_values(local_cluster, tmp_path / "placement.yaml")
    pools = tmp_path / "pools-placement.yaml"
    where = local_cluster.real_pod_placement()
    pools.write_text(yaml.safe_dump({"pools": {"s3Signer": where, "thumbnails": where}}))
    install, rollout, get_cwp, helm_test = (in_namespace(c, ns) for c in block("docs/helm.md", "helm-install"))
    install = substitute(install, r"^helm install civic charts/civic-workers", rf"\g<0> -f {placement} -f {pools}")
    assert "STATUS: deployed" in sh.run(install)
    sh.run(rollout, timeout=240)
    out = sh.run(get_cwp)
    rows = {p: pool_row(out, p) for p in ("s3-signer", "thumbnails")}
    assert rows["s3-signer"]["QUEUES"] == '["s3_signer"]' and rows["thumbnails"]["QUEUES"] == '["thumbnails"]', rows
    out = sh.run(helm_test, timeout=240)
    assert "Succeeded" in out, out
    sh.run(f"helm uninstall civic -n {ns} --wait --timeout 120s")
