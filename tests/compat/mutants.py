"""Shows that the compat tests can fail: breaks one runner behaviour at a time (a textual edit of one
file), runs the compat test meant to catch it, and restores the file. Every line should end in a failure.

    .venv/bin/python tests/compat/mutants.py              # all (~4 min)
    .venv/bin/python tests/compat/mutants.py NOTIFY pause # those whose name contains a word

Not collected by pytest (it edits the tree while it runs, so never run it beside other tests).
"""

# ruff: noqa: E501 - each break is one exact line of the source, kept whole to be found

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

S = "job-runner/src/civic_runner/"
BREAKS = [
    (
        "claim ignores priority",
        S + "driver.py",
        "ORDER BY priority ASC, scheduled_at ASC, id ASC",
        "ORDER BY id ASC",
        "tests/compat/test_river_go.py::test_go_priorities_are_claimed_in_rivers_order",
    ),
    (
        "claim ignores scheduled_at",
        S + "driver.py",
        "WHERE state = 'available' AND queue = %(queue)s AND scheduled_at <= now()",
        "WHERE state = 'available' AND queue = %(queue)s",
        "tests/compat/test_river_go.py::test_go_scheduled_job_runs_at_its_time_not_before",
    ),
    (
        "completion replaces metadata",
        S + "driver.py",
        "THEN j.metadata || t.metadata_updates",
        "THEN t.metadata_updates",
        "tests/compat/test_river_go.py::test_go_tags_metadata_and_max_attempts_are_kept",
    ),
    (
        "completion clears unique_key",
        S + "driver.py",
        "finalized_at = CASE WHEN l.was_running THEN now() ELSE j.finalized_at END\n        FROM locked l",
        "finalized_at = CASE WHEN l.was_running THEN now() ELSE j.finalized_at END, unique_key = NULL\n        FROM locked l",
        "tests/compat/test_river_go.py::test_go_unique_by_args_is_one_job_worked_once",
    ),
    (
        "enqueue sends no NOTIFY",
        S + "admin.py",
        '"SELECT pg_notify(%s, %s)", (channel(self.schema, "river_insert"), json.dumps({"queue": queue}))',
        '"SELECT 1 WHERE %s::text IS NOT NULL AND %s::text IS NOT NULL", (channel(self.schema, "river_insert"), json.dumps({"queue": queue}))',
        "tests/compat/test_river_go.py::test_our_enqueues_wake_and_are_worked_by_a_river_go_worker",
    ),
    (
        "cancel notification ignored",
        S + "runner.py",
        'if action == "cancel" and',
        'if action == "cancel_ignored" and',
        "tests/compat/test_river_go.py::test_go_job_cancel_stops_our_running_job",
    ),
    (
        "pause notification ignored",
        S + "runner.py",
        'elif action in ("pause", "resume"):',
        'elif action in ("resume",):',
        "tests/compat/test_river_go.py::test_go_queue_pause_and_resume_are_obeyed",
    ),
    (
        "retry delay errors^4",
        S + "retry.py",
        "base = float((error_count + 1) ** 4)",
        "base = float(max(error_count, 1) ** 4)",
        "tests/compat/test_river_go.py::test_retry_schedule_we_write_is_rivers_when_read_from_go",
    ),
    (
        "expired leader never deleted",
        S + "driver.py",
        'f"DELETE FROM {self.s}.river_leader WHERE expires_at < now()"',
        'f"SELECT 1 FROM {self.s}.river_leader WHERE expires_at < now()"',
        "tests/compat/test_river_fleet.py::test_go_leader_killed_python_takes_over_and_rescues_its_jobs",
    ),
    (
        "leader cannot re-elect",
        S + "driver.py",
        "WHERE elected_at = %s AND expires_at >= now() AND leader_id = %s RETURNING 1",
        "WHERE elected_at = %s AND expires_at < now() AND leader_id = %s RETURNING 1",
        "tests/compat/test_river_fleet.py::test_python_leader_killed_go_takes_over_and_rescues_its_jobs",
    ),
]
BREAKS.append(
    (
        "jobs cancel sends no control notification",
        S + "admin.py",
        '"SELECT pg_notify(%s, %s)", (channel(self.schema, "river_control"), json.dumps(payload))',
        '"SELECT 1 WHERE %s::text IS NOT NULL AND %s::text IS NOT NULL", (channel(self.schema, "river_control"), json.dumps(payload))',
        "tests/compat/test_river_go.py::test_our_jobs_cancel_stops_a_job_a_river_go_worker_is_running",
    )
)
BREAKS.append(
    (
        "migrate does not record 008",
        S + "migrate.py",
        "        lined = self._has_line_column()\n        if up:",
        "        lined = self._has_line_column()\n        if up and m.version == 8:\n            return\n        if up:",
        "tests/compat/test_rivermigrate.py::test_river_0_51_accepts_civic_runner_migrate_target_8",
    )
)
BREAKS.append(
    (
        "migrate 007 misnames an index",
        "sql/river/007_notification_outbox_sqlite_jsonb_and_sql_cleanup.up.sql",
        "CREATE INDEX river_notification_topic_id_idx",
        "CREATE INDEX river_notification_topic_idx",
        "tests/compat/test_rivermigrate.py",
    )
)

BREAKS.append(
    (
        "rescue entry dated at the stuck run's start (the old code)",
        S + "maintenance.py",
        'entry = error_entry_at(now, row["attempt"], RESCUE_ERROR)',
        'entry = error_entry_at(row["attempted_at"] or now, row["attempt"], RESCUE_ERROR)',
        "tests/compat/test_river_fleet.py::test_go_leader_killed_python_takes_over_and_rescues_its_jobs",
    )
)


def main(words: list[str]) -> int:
    survived = []
    for name, rel, old, new, test in BREAKS:
        if words and not any(w in name for w in words):
            continue
        path = ROOT / rel
        src = path.read_text()
        assert src.count(old) == 1, f"{name}: the text to break is not found once in {rel}"
        path.write_text(src.replace(old, new))
        try:
            t0 = time.monotonic()
            r = subprocess.run(
                [sys.executable, "-m", "pytest", "-q", "-x", "-m", "compat", test],
                capture_output=True, text=True, cwd=ROOT,
            )  # fmt: skip
        finally:
            path.write_text(src)
        why = [x for x in r.stdout.splitlines() if x.startswith(("E ", "FAILED", "ERROR"))][:2]
        verdict = "caught" if r.returncode != 0 else "NOT CAUGHT"
        print(f"{verdict}: {name} ({time.monotonic() - t0:.0f} s)", *("   " + x for x in why), sep="\n", flush=True)
        if r.returncode == 0:
            survived.append(name)
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
