"""Migrations: River's `main` line (versions 1..8, object for object as River's own) and our
`civic_files` line (Civic OS's file tables and enqueue triggers).

Each step runs in its own transaction together with its river_migration row; a session advisory
lock serialises concurrent migrators. Versions already applied (by River, Civic OS or us) are
detected from river_migration and skipped.

Someone else's database is left as it is: without an explicit target, a River schema that
civic-runner did not create keeps its version (Civic OS vendors River 1..6 and its own
`sqitch verify` breaks once 007 drops `river_client`). A schema we created carries a comment on
river_migration (OWNER_MARK) and follows the latest version.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg

from civic_runner.access import MIN_SCHEMA_VERSION
from civic_runner.driver import channel, quote_ident

log = logging.getLogger("civic_runner.migrate")

MAIN = "main"
CIVIC = "civic_files"
LINE_DIRS = {MAIN: "river", CIVIC: "civic"}
# River 0.48..0.51.2 end at 8 (job_id_autoincrement, a no-op on PostgreSQL); River 0.40..0.47 at 7.
LATEST = {MAIN: 8, CIVIC: 2}
_FILE_RE = re.compile(r"^(\d{3})_(\w+)\.(up|down)\.sql$")


OWNER_MARK = "created by civic-runner migrate"


@dataclass(frozen=True)
class TargetDecision:
    target: int
    reason: str


def choose_target(current: int, ours: bool, requested: int | None, latest: int, origin: str) -> TargetDecision:
    """River's version to migrate to: what was asked for, else latest for a schema we create or
    created, else the version the schema already has (someone else's database is not ours to change)."""
    if requested is not None:
        if requested < current:
            return TargetDecision(
                current,
                f"--target {requested} is below the current {current}: nothing to do (`migrate --down` reverts)",
            )
        return TargetDecision(requested, f"--target {requested} given")
    if current == 0:
        return TargetDecision(latest, f"no River schema here: creating it at the latest version, {latest}")
    if ours:
        return TargetDecision(latest, f"River schema created by civic-runner: keeping it at the latest, {latest}")
    hint = "pass --target N to change it"
    if current < MIN_SCHEMA_VERSION:
        need = MIN_SCHEMA_VERSION
        hint = f"the runner needs {need} or later: pass --target {need} (or {latest}) to upgrade it"
    return TargetDecision(current, f"River schema at {current} was created by {origin}: left at {current}; {hint}")


@dataclass(frozen=True)
class Migration:
    line: str
    version: int
    name: str
    up: str
    down: str


def sql_dir() -> Path:
    return Path(str(resources.files("civic_runner") / "sql"))


def load_line(line: str) -> list[Migration]:
    folder = sql_dir() / LINE_DIRS[line]
    found: dict[int, dict[str, Any]] = {}
    for path in sorted(folder.iterdir()):
        m = _FILE_RE.match(path.name)
        if not m:
            continue
        entry = found.setdefault(int(m.group(1)), {"name": m.group(2)})
        entry[m.group(3)] = path.read_text()
    return [Migration(line, v, e["name"], e["up"], e["down"]) for v, e in sorted(found.items())]


def render(sql: str, schema: str) -> str:
    """Fill in the schema (quoted identifier) and River's insert channel (string literal)."""
    literal = "'" + channel(schema, "river_insert").replace("'", "''") + "'"
    return sql.replace("__SCHEMA__", quote_ident(schema)).replace("__CHANNEL__", literal)


def plan_up(current: int, target: int, available: list[Migration]) -> list[Migration]:
    return [m for m in available if current < m.version <= target]


def plan_down(current: int, target: int, available: list[Migration]) -> list[Migration]:
    return [m for m in reversed(available) if target < m.version <= current]


class Migrator:
    def __init__(self, conn: psycopg.Connection[Any], schema: str) -> None:
        if not conn.autocommit:
            raise ValueError("Migrator needs an autocommit connection (each step opens its own transaction)")
        self.conn = conn
        self.schema = schema
        self.s = quote_ident(schema)
        self.decision: TargetDecision | None = None
        self.detected: tuple[int, str | None] | None = None  # (River version, who made it) as `up` found them
        self.civic_note: str | None = None

    # -- reading state ----------------------------------------------------------------------------

    def _exists(self, name: str) -> bool:
        row = self.conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{self.s}.{name}",)).fetchone()
        return bool(row and row[0])

    def _schema_exists(self) -> bool:
        row = self.conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (self.schema,)).fetchone()
        return row is not None

    def _has_line_column(self) -> bool:
        row = self.conn.execute(
            """SELECT 1 FROM information_schema.columns
               WHERE table_schema = %s AND table_name = 'river_migration' AND column_name = 'line'""",
            (self.schema,),
        ).fetchone()
        return row is not None

    def current(self, line: str) -> int:
        if not self._exists("river_migration"):
            return 0
        if self._has_line_column():
            row = self.conn.execute(
                f"SELECT coalesce(max(version), 0) FROM {self.s}.river_migration WHERE line = %s", (line,)
            ).fetchone()
        elif line == MAIN:
            row = self.conn.execute(f"SELECT coalesce(max(version), 0) FROM {self.s}.river_migration").fetchone()
        else:
            return 0
        return int(row[0]) if row else 0

    def ours(self) -> bool:
        """river_migration carries our mark (a table comment: River's catalog has none)."""
        if not self._exists("river_migration"):
            return False
        row = self.conn.execute(
            "SELECT obj_description(to_regclass(%s), 'pg_class')", (f"{self.s}.river_migration",)
        ).fetchone()
        return bool(row and row[0] == OWNER_MARK)

    def origin(self) -> str:
        """Who made this River schema, as far as its shape tells."""
        if self.ours():
            return "civic-runner"
        row = self.conn.execute(
            """SELECT 1 FROM information_schema.columns
               WHERE table_schema = %s AND table_name = 'river_migration' AND column_name = 'id'""",
            (self.schema,),
        ).fetchone()
        if row:
            return "Civic OS (its hand-vendored River: river_migration has an id column)"
        return "River's migrator or another tool"

    def _mark_ours(self) -> None:
        if self._exists("river_migration"):
            self.conn.execute(f"COMMENT ON TABLE {self.s}.river_migration IS '{OWNER_MARK}'")

    def civic_tables_foreign(self) -> bool:
        """Civic OS's own file tables are present and were not created by us: leave them alone."""
        return self.current(CIVIC) == 0 and (self._exists("files") or self._exists("file_upload_requests"))

    # -- changing state ---------------------------------------------------------------------------

    def _lock(self) -> None:
        self.conn.execute("SELECT pg_advisory_lock(hashtext('civic-runner migrate'), hashtext(%s))", (self.schema,))

    def _unlock(self) -> None:
        self.conn.execute("SELECT pg_advisory_unlock(hashtext('civic-runner migrate'), hashtext(%s))", (self.schema,))

    def _record(self, m: Migration, up: bool) -> None:
        # Before main version 5 river_migration has no `line` column.
        lined = self._has_line_column()
        if up:
            if lined:
                self.conn.execute(
                    f"INSERT INTO {self.s}.river_migration (line, version) VALUES (%s, %s)", (m.line, m.version)
                )
            else:
                self.conn.execute(f"INSERT INTO {self.s}.river_migration (version) VALUES (%s)", (m.version,))
        elif self._exists("river_migration"):
            if lined:
                self.conn.execute(
                    f"DELETE FROM {self.s}.river_migration WHERE line = %s AND version = %s", (m.line, m.version)
                )
            else:
                self.conn.execute(f"DELETE FROM {self.s}.river_migration WHERE version = %s", (m.version,))

    def _apply(self, m: Migration, up: bool) -> None:
        sql = render(m.up if up else m.down, self.schema)
        with self.conn.transaction():
            self.conn.execute(sql)  # several statements: sent without parameters, in one round trip
            self._record(m, up)
        log.info(
            "applied migration" if up else "reverted migration",
            extra={"line": m.line, "version": m.version, "migration_name": m.name, "schema": self.schema},
        )

    def up(self, target_main: int | None = None, civic: bool = True) -> list[Migration]:
        """Apply what the target decision asks for; `self.decision` says what was decided and why."""
        if target_main is not None and not 1 <= target_main <= LATEST[MAIN]:
            raise ValueError(f"--target must be 1..{LATEST[MAIN]}")
        self._lock()
        try:
            # Only when missing: CREATE SCHEMA IF NOT EXISTS needs CREATE on the database even when the
            # schema exists, which a least-privilege role (Civic OS's worker) does not have.
            if not self._schema_exists():
                self.conn.execute(f"CREATE SCHEMA {self.s}")
            main_now = self.current(MAIN)
            origin = self.origin() if main_now else None
            self.detected = (main_now, origin)
            ours = main_now == 0 or origin == "civic-runner"
            self.decision = choose_target(main_now, ours, target_main, LATEST[MAIN], origin or "nobody")
            log.info(
                "migration target decided",
                extra={
                    "schema": self.schema,
                    "current": main_now,
                    "target": self.decision.target,
                    "reason": self.decision.reason,
                },
            )
            applied = []
            for m in plan_up(main_now, self.decision.target, load_line(MAIN)):
                self._apply(m, up=True)
                applied.append(m)
            if ours:
                self._mark_ours()  # again after each run: River's 005 recreates river_migration
            if civic:
                applied += self._civic_up()
            return applied
        finally:
            self._unlock()

    def _civic_up(self) -> list[Migration]:
        if self.current(MAIN) < 5:
            raise RuntimeError("the civic_files line needs River's schema at version 5 or later")
        if self.civic_tables_foreign():
            self.civic_note = "Civic OS's own files and file_upload_requests exist: left alone"
            log.info(
                "Civic OS file tables already exist and belong to Civic OS; leaving them alone",
                extra={"schema": self.schema},
            )
            return []
        applied = []
        for m in plan_up(self.current(CIVIC), LATEST[CIVIC], load_line(CIVIC)):
            self._apply(m, up=True)
            applied.append(m)
        return applied

    def down(self, line: str, target: int) -> list[Migration]:
        if line not in LINE_DIRS:
            raise ValueError(f"unknown migration line {line!r}")
        self._lock()
        try:
            if line == MAIN and target < 5 and self.current(CIVIC) > 0:
                raise RuntimeError("revert the civic_files line first (`migrate --down --line civic_files --target 0`)")
            done = []
            for m in plan_down(self.current(line), target, load_line(line)):
                self._apply(m, up=False)
                done.append(m)
            return done
        finally:
            self._unlock()
