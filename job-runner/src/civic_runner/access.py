"""Is the database usable by this role? Checked at start-up, before any claim, so that a missing
schema, an unmigrated River or a missing grant is one sentence in /readyz and the log (with the GRANT
that fixes it) instead of a stream of failing claims.

`diagnose` is the decision (pure); `probe` reads the facts in two round trips.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from psycopg import AsyncConnection

from civic_runner.driver import quote_ident

MIN_SCHEMA_VERSION = 6  # what Civic OS ships; River's latest is 8 (no newer version is refused)


@dataclass(frozen=True)
class Need:
    table: str
    privileges: tuple[str, ...]


def river_needs(maintenance: bool) -> list[Need]:
    """What the runner itself does to River's tables (jobs are inserted by others, not by `run`)."""
    needs = [
        Need("river_migration", ("SELECT",)),
        Need("river_job", ("SELECT", "UPDATE")),
        Need("river_queue", ("SELECT", "INSERT", "UPDATE")),
    ]
    if maintenance:  # any process may be elected: leader row, cleaner and queue cleaner
        needs += [
            Need("river_leader", ("SELECT", "INSERT", "UPDATE", "DELETE")),
            Need("river_job", ("DELETE",)),
            Need("river_queue", ("DELETE",)),
        ]
    return needs


@dataclass(frozen=True)
class Facts:
    role: str
    schema_exists: bool
    schema_usage: bool
    river_version: int  # 0: no river_migration
    # (table, privilege) -> None when the table is missing, else whether the role has the privilege
    privileges: dict[tuple[str, str], bool | None]


def _grant_hint(role: str, schema: str, missing: dict[str, list[str]]) -> str:
    r = quote_ident(role)
    return " ".join(
        f"GRANT {', '.join(privs)} ON {quote_ident(schema)}.{quote_ident(t)} TO {r};" for t, privs in missing.items()
    )


def diagnose(facts: Facts, schema: str) -> str | None:
    """None when the runner can work; else what is wrong and what fixes it, in one sentence."""
    s = quote_ident(schema)
    if not facts.schema_exists:
        return f"schema {s} does not exist: run `civic-runner migrate` or set RIVER_SCHEMA"
    if not facts.schema_usage:
        return (
            f"permission denied for schema {s}: role {quote_ident(facts.role)} needs "
            f"GRANT USAGE ON SCHEMA {s} TO {quote_ident(facts.role)}"
        )
    if facts.river_version < MIN_SCHEMA_VERSION:
        found = f"at version {facts.river_version}" if facts.river_version else "missing"
        return (
            f"River's schema in {s} is {found}, the runner needs {MIN_SCHEMA_VERSION} or later: "
            f"run `civic-runner migrate` (on a database it did not create: `--target {MIN_SCHEMA_VERSION}`)"
        )
    absent = sorted({t for (t, _), ok in facts.privileges.items() if ok is None})
    if absent:
        return f"table(s) {', '.join(f'{s}.{quote_ident(t)}' for t in absent)} do not exist: run `civic-runner migrate`"
    missing: dict[str, list[str]] = {}
    for (table, priv), ok in sorted(facts.privileges.items()):
        if not ok:
            missing.setdefault(table, []).append(priv)
    if missing:
        what = "; ".join(f"{', '.join(p)} on {s}.{quote_ident(t)}" for t, p in missing.items())
        return f"role {quote_ident(facts.role)} lacks {what}: {_grant_hint(facts.role, schema, missing)}"
    return None


async def probe(conn: AsyncConnection[Any], schema: str, needs: list[Need]) -> Facts:
    cur = await conn.execute(
        """SELECT current_user::text, n.oid IS NOT NULL,
                  n.oid IS NOT NULL AND has_schema_privilege(n.oid, 'USAGE')
           FROM (SELECT 1) AS one LEFT JOIN pg_namespace n ON n.nspname = %s""",
        (schema,),
    )
    row = await cur.fetchone()
    assert row is not None
    role, exists, usage = str(row[0]), bool(row[1]), bool(row[2])
    if not (exists and usage):
        return Facts(role, exists, usage, 0, {})
    pairs = [(n.table, p) for n in needs for p in n.privileges]
    s = quote_ident(schema)
    cur = await conn.execute(
        """SELECT t, p, CASE WHEN to_regclass(q) IS NULL THEN NULL ELSE has_table_privilege(to_regclass(q), p) END
           FROM unnest(%s::text[], %s::text[]) AS x(t, p), LATERAL (SELECT %s || '.' || quote_ident(t)) AS y(q)""",
        ([t for t, _ in pairs], [p for _, p in pairs], s),
    )
    privileges = {(str(t), str(p)): ok for t, p, ok in await cur.fetchall()}
    version = 0
    if privileges.get(("river_migration", "SELECT")):
        cur = await conn.execute(f"SELECT coalesce(max(version), 0) FROM {s}.river_migration WHERE line = 'main'")
        vrow = await cur.fetchone()
        version = int(vrow[0]) if vrow else 0
    elif privileges.get(("river_migration", "SELECT")) is False:
        version = MIN_SCHEMA_VERSION  # unknown: the missing grant is what gets reported
    return Facts(role, exists, usage, version, privileges)
