"""River UI v0.22.0 (River's web UI) in a real browser, on a database our runners work.

Debian's chromium, headless, driven by Playwright for Python (launched by executable path: Playwright downloads
no browser here). River UI is the binary built from its Go module (scripts/riverui/install.sh), run as a
process with basic auth and `-schema metadata`, connected as the role that docs/helm.md's `riverui-role`
block creates (run verbatim but for the role's name), so the documented grants are the ones proven enough.
Our runners are civic-runner in-process (tests/support/harness.py). What is checked is what a user sees and
what the runner does about what they click:

- the job list shows completed and discarded jobs, and a discarded job's page its error;
- Pause on a queue's page pauses our runner's queue within 1 s (the `pause` control notification), and a
  runner that lost that notification pauses at its next control poll (default interval, about a minute);
  Resume lets the queue's waiting job run;
- Cancel on a running job's page stops it (`cancelled`), Retry on a discarded job's page runs it again;
- a role with SELECT only sees everything and changes nothing.

Screenshots go to test-artifacts/riverui/<test>/ (CIVIC_TEST_ARTIFACTS overrides; the path is printed).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from civic_runner import Job, JobContext, Registry
from civic_runner.config import RunnerConfig
from civic_runner.producer import control_poll_interval
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.docs.markdown import fenced_block
from tests.support import riverui
from tests.support.harness import InProcessRunner, insert, job, migrate, query, wait_for

pytestmark = pytest.mark.compat

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("CIVIC_CHROMIUM", "/usr/bin/chromium")

registry = Registry()


@registry.kind("noop")
async def noop(job: Job, ctx: JobContext) -> None:
    return None


@registry.kind("fail")
def fail(job: Job, ctx: JobContext) -> None:
    raise ValueError("boom")


@registry.kind("fail_first")
def fail_first(job: Job, ctx: JobContext) -> None:
    """Fails its first attempt only: once retried, it completes."""
    if job.attempt <= 1:
        raise ValueError("first attempt fails")


@registry.kind("sleep")
def sleep(job: Job, ctx: JobContext) -> None:
    """Sleeps cooperatively: a cancel request ends it at once."""
    if ctx.wait_cancelled(float(job.args_object().get("seconds", 1))):
        ctx.raise_if_cancelled()


_roles = iter(range(10_000))


def create_role(url: str, grants_block: str = "riverui-role", select_only: bool = False) -> str:
    """docs/helm.md's block, as written but for the role's name (roles are per server, tests per database);
    the URL River UI connects with (the servers trust loopback, so no password)."""
    name = f"civic_riverui_{os.getpid()}_{next(_roles)}"
    sql = fenced_block((ROOT / "docs" / "helm.md").read_text(), grants_block).replace("civic_riverui", name)
    if select_only:
        sql = "\n".join(line for line in sql.splitlines() if not re.match(r"GRANT (UPDATE|DELETE)", line))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql)
    return url.replace("postgresql://postgres@", f"postgresql://{name}@")


@pytest.fixture(scope="session")
def riverui_exe() -> str:
    return riverui.binary()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} missing: `make deps` installs Debian's chromium"
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield b
        b.close()


@pytest.fixture
def url(db_url: str) -> str:
    migrate(db_url)
    return db_url


@pytest.fixture
def ui(url: str, riverui_exe: str, tmp_path: Path) -> Iterator[riverui.RiverUIProcess]:
    with riverui.RiverUIProcess(riverui_exe, create_role(url), log_path=tmp_path / "riverui.log") as proc:
        yield proc


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Callable[[Page, str], Path]:
    where = riverui.artifacts_dir(request.node.name)
    print(f"\nscreenshots of {request.node.name}: {where}")  # noqa: T201 - where to look, with -s or on failure

    def take(page: Page, name: str) -> Path:
        path = where / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take


@pytest.fixture
def page(browser: Browser, ui: riverui.RiverUIProcess) -> Iterator[Page]:
    context = browser.new_context(
        base_url=ui.url,
        http_credentials={"username": riverui.LOGIN[0], "password": riverui.LOGIN[1]},
        viewport={"width": 1280, "height": 800},
    )
    p = context.new_page()
    p.set_default_timeout(15_000)
    yield p
    context.close()


def button(page: Page, name: str) -> Any:
    # exact: "Pause" would also match the header's "Pause live updates".
    return page.get_by_role("button", name=name, exact=True)


def state(url: str, job_id: int) -> str:
    return str(job(url, job_id)["state"])


def wait_state(url: str, job_id: int, want: str, timeout: float) -> float:
    t0 = time.monotonic()
    wait_for(lambda: state(url, job_id) == want, timeout, interval=0.01, what=f"job {job_id} {want}")
    return time.monotonic() - t0


def test_login_is_required(ui: riverui.RiverUIProcess, browser: Browser) -> None:
    context = browser.new_context(base_url=ui.url)
    try:
        r = context.request.get("/api/jobs?state=completed")
        assert r.status == 401, "River UI must ask for the login"
        assert context.request.get("/api/health-checks/minimal").status == 200, "health checks stay open"
    finally:
        context.close()


def test_job_list_shows_completed_and_discarded_jobs_with_errors(
    url: str, page: Page, shots: Callable[[Page, str], Path]
) -> None:
    done = insert(url, "noop", {"upload": "report.pdf"}, count=3)
    (failed,) = insert(url, "fail", {"upload": "broken.heic"}, max_attempts=1)
    with InProcessRunner(url, registry):
        for job_id in done:
            wait_state(url, job_id, "completed", 10)
        wait_state(url, failed, "discarded", 10)

    page.goto("/jobs?state=completed")
    rows = page.locator("li", has_text="noop")
    expect(rows).to_have_count(3)
    expect(rows.first).to_contain_text('{"upload":"report.pdf"}')
    expect(page.get_by_role("link", name=re.compile(r"^Completed\s*3$"))).to_be_visible()
    shots(page, "jobs-completed")

    page.goto("/jobs?state=discarded")
    expect(page.locator("li", has_text="fail")).to_have_count(1)
    shots(page, "jobs-discarded")

    page.locator("li", has_text="fail").get_by_role("link").first.click()
    expect(page).to_have_url(re.compile(rf"/jobs/{failed}$"))
    expect(page.get_by_text("ValueError: boom", exact=True)).to_be_visible()
    expect(page.get_by_text("Discarded", exact=True).first).to_be_visible()
    shots(page, "job-discarded-error")
    errors = job(url, failed)["errors"]
    assert [e["error"] for e in errors] == ["ValueError: boom"], "the UI shows what the runner wrote"


@pytest.mark.slow
def test_pause_in_the_ui_pauses_our_runners(url: str, page: Page, shots: Callable[[Page, str], Path]) -> None:
    """Runner `listening` hears River UI's `pause` notification; runner `deaf` stands for one whose listener
    was reconnecting when it was sent (its pause/resume notifications are dropped), so only its control
    poll, at the default interval, can find the queue paused in river_queue."""
    listening = InProcessRunner(url, registry, queues="default=2,uploads=2").start()
    deaf = InProcessRunner(url, registry, queues="uploads=2")
    heard = deaf.runner._on_control

    def lose_pause_and_resume(payload: dict[str, Any]) -> None:
        if payload.get("action") not in ("pause", "resume"):
            heard(payload)

    deaf.runner._on_control = lose_pause_and_resume
    deaf.start()
    try:
        default_poll = control_poll_interval(RunnerConfig.from_values({"database_url": url}))
        assert 0 < default_poll <= 60, "River's producers poll about once a minute"
        page.goto("/queues/uploads")
        clicked = time.monotonic()
        with page.expect_response(re.compile(r"/api/queues/uploads/pause$")) as sent:
            button(page, "Pause").click()
        assert sent.value.ok, sent.value.status
        answered = time.monotonic()
        wait_for(lambda: listening.runner.producers["uploads"].paused, 1.0, interval=0.005, what="paused by notify")
        by_notification = time.monotonic() - answered  # from River UI's answer: its pause is committed
        from_click = time.monotonic() - clicked
        expect(button(page, "Resume")).to_be_visible()
        assert query(url, "SELECT paused_at IS NOT NULL FROM metadata.river_queue WHERE name = 'uploads'") == [(True,)]
        assert not listening.runner.producers["default"].paused, "only the queue paused in the UI"
        shots(page, "queue-paused")

        # Each poll comes 80-100 % of the interval after the last (control_poll_delay): at most 60 s.
        wait_for(lambda: deaf.runner.producers["uploads"].paused, default_poll + 1, interval=0.05, what="by poll")
        by_poll = time.monotonic() - clicked
        assert by_poll <= default_poll + 0.5, f"paused by the poll {by_poll:.1f} s after the click"
        (waiting,) = insert(url, "noop", queue="uploads")
        time.sleep(2.5)  # two fetch polls of each runner (1 s)
        assert state(url, waiting) == "available", "a paused queue is not worked"
        page.reload()
        expect(page.get_by_text("Paused", exact=True).first).to_be_visible()
        shots(page, "queue-paused-job-waiting")

        with page.expect_response(re.compile(r"/api/queues/uploads/resume$")) as sent:
            button(page, "Resume").click()
        answered = time.monotonic()
        wait_for(lambda: not listening.runner.producers["uploads"].paused, 1.0, interval=0.005, what="resumed")
        resumed = time.monotonic() - answered
        wait_state(url, waiting, "completed", 5)
        print(  # noqa: T201 - the figures, with -s
            f"\npause: by notification {by_notification * 1000:.0f} ms after River UI's answer "
            f"({from_click * 1000:.0f} ms after the click), by poll "
            f"{by_poll:.1f} s after the click (interval {default_poll:.0f} s); resume {resumed * 1000:.0f} ms"
        )
    finally:
        deaf.stop()
        listening.stop()


def test_cancel_in_the_ui_cancels_the_running_job(url: str, page: Page, shots: Callable[[Page, str], Path]) -> None:
    (long,) = insert(url, "sleep", {"seconds": 600})
    with InProcessRunner(url, registry) as r:
        wait_state(url, long, "running", 10)
        page.goto(f"/jobs/{long}")
        expect(page.get_by_text("Running", exact=True).first).to_be_visible()
        shots(page, "job-running")
        clicked = time.monotonic()
        with page.expect_response(re.compile(r"/api/jobs/cancel$")) as sent:
            button(page, "Cancel").click()
        assert sent.value.ok, sent.value.status
        answered = time.monotonic()
        wait_state(url, long, "cancelled", 2)
        took, after_answer = time.monotonic() - clicked, time.monotonic() - answered
        assert after_answer <= 1.0, f"cancelled {after_answer:.2f} s after River UI's cancel request"
        wait_for(lambda: not r.runner.producers["default"].running, 5, what="the job's executor gone")
    row = job(url, long)
    assert row["finalized_at"] is not None and row["attempt"] == 1
    page.reload()
    expect(page.get_by_text("Cancelled", exact=True).first).to_be_visible()
    shots(page, "job-cancelled")
    print(  # noqa: T201 - the figures, with -s
        f"\ncancel: {took * 1000:.0f} ms from the click to state cancelled, {after_answer * 1000:.0f} ms after "
        "River UI's request returned"
    )


def test_retry_in_the_ui_runs_a_discarded_job(url: str, page: Page, shots: Callable[[Page, str], Path]) -> None:
    (dead,) = insert(url, "fail_first", {"upload": "scan.pdf"}, max_attempts=1)
    with InProcessRunner(url, registry):
        wait_state(url, dead, "discarded", 10)
        page.goto(f"/jobs/{dead}")
        expect(page.get_by_text("ValueError: first attempt fails", exact=True)).to_be_visible()
        clicked = time.monotonic()
        button(page, "Retry").click()
        wait_state(url, dead, "completed", 5)
        took = time.monotonic() - clicked
    row = job(url, dead)
    assert row["attempt"] == 2, "the retry ran it once more"
    assert [e["error"] for e in row["errors"]] == ["ValueError: first attempt fails"], "its history is kept"
    page.reload()
    expect(page.get_by_text("Completed", exact=True).first).to_be_visible()
    shots(page, "job-retried-completed")
    print(f"\nretry: {took * 1000:.0f} ms from the click to completed")  # noqa: T201


def test_select_only_role_sees_everything_and_changes_nothing(
    url: str, riverui_exe: str, browser: Browser, tmp_path: Path
) -> None:
    (dead,) = insert(url, "fail", max_attempts=1)
    with InProcessRunner(url, registry):
        wait_state(url, dead, "discarded", 10)
    reader = create_role(url, select_only=True)
    with riverui.RiverUIProcess(riverui_exe, reader, log_path=tmp_path / "riverui.log") as proc:
        login = {"username": riverui.LOGIN[0], "password": riverui.LOGIN[1]}
        context = browser.new_context(base_url=proc.url, http_credentials=login)  # type: ignore[arg-type]
        try:
            api = context.request
            for path in ("/api/jobs?state=discarded", f"/api/jobs/{dead}", "/api/queues", "/api/states"):
                assert api.get(path).status == 200, path
            assert api.post("/api/jobs/retry", data={"ids": [str(dead)]}).status >= 400
            assert api.put("/api/queues/default/pause", data={}).status >= 400
            assert api.post("/api/jobs/delete", data={"ids": [str(dead)]}).status >= 400
        finally:
            context.close()
    assert state(url, dead) == "discarded"
    assert query(url, "SELECT paused_at FROM metadata.river_queue WHERE name = 'default'") == [(None,)]
    assert "permission denied" in (tmp_path / "riverui.log").read_text()
