"""A Civic OS v0.70 database (the fixture in tests/fixtures/civic_os_v070) and PostgREST-like access to it.

`install()` applies the fixture to a fresh database as superuser; `rpc()` and `select_files()` call it
the way the frontend does through PostgREST: connected as `authenticator`, switched to `web_anon` or
`authenticated` for one transaction with the JWT's claims in `request.jwt.claims`.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

FIXTURE = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "civic_os_v070"
VERIFY_SQL = FIXTURE / "verify_river.sql"

Role = Literal["authenticated", "web_anon"]

# Jobs of Civic OS's other workers, which share metadata.river_job: (kind, queue, priority, max_attempts, args).
OTHER_JOBS: tuple[tuple[str, str, int, int, dict[str, Any]], ...] = (
    ("send_notification", "notifications", 1, 5, {"notification_id": "7"}),
    ("send_email", "notifications", 2, 5, {"to": "someone@example.org", "subject": "Issue updated"}),
    ("expand_recurring_series", "recurring", 1, 3, {"series_id": 3}),
    ("scheduled_job_execute", "scheduled_jobs", 2, 3, {"scheduled_job_id": 1}),
    ("parse_all_source_code", "source_parsing", 3, 3, {}),
    ("assign_keycloak_role", "user_provisioning", 1, 5, {"user_id": str(uuid.UUID(int=1)), "role": "user"}),
    ("create_payment_intent", "default", 1, 5, {"payment_id": 11}),
)


def fixture_files() -> list[Path]:
    """The fixture's numbered SQL files, in the order install() applies them."""
    return sorted(FIXTURE.glob("[0-9][0-9]_*.sql"))


def as_user(url: str, user: str) -> str:
    """The same database, connecting as another role (trust auth: no password)."""
    params = conninfo_to_dict(url)
    params.pop("password", None)
    params["user"] = user
    return make_conninfo("", **params)


def install(url: str) -> None:
    """Apply the fixture to a fresh, empty database. `url` must connect as a superuser.

    Each file runs in its own transaction (02 commits the enum value that 03 uses).
    """
    with psycopg.connect(url, autocommit=True) as conn:
        for path in fixture_files():
            try:
                with conn.transaction():
                    conn.execute(path.read_text())
            except psycopg.Error as exc:
                raise RuntimeError(f"{path.name}: {exc}") from exc


def verify(url: str) -> None:
    """Civic OS's `sqitch verify` for its River change; AssertionError with the database's message if it fails."""
    with psycopg.connect(url) as conn:
        try:
            conn.execute(VERIFY_SQL.read_text())
        except psycopg.Error as exc:
            raise AssertionError(f"Civic OS verify (v0-10-0-add-river-queue) failed: {exc}") from exc
        finally:
            conn.rollback()


def claims_for(user_id: uuid.UUID | str, role: Role = "authenticated", **extra: Any) -> dict[str, Any]:
    """The claims of a JWT for a Civic OS user."""
    return {"sub": str(user_id), "role": role, **extra}


@contextmanager
def postgrest_session(
    url: str, *, role: Role = "authenticated", claims: Mapping[str, Any] | None = None
) -> Iterator[psycopg.Connection[dict[str, Any]]]:
    """One PostgREST request: a transaction as `authenticator` after `SET LOCAL ROLE <role>` with the claims set.

    The claims get `"role": role` unless they carry a role of their own. Commits on success.
    """
    effective = {"role": role, **(claims or {})}
    with psycopg.connect(as_user(url, "authenticator"), row_factory=dict_row) as conn, conn.transaction():
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
        conn.execute("SELECT set_config('request.jwt.claims', %s, true)", (json.dumps(effective),))
        if "sub" in effective:
            conn.execute("SELECT set_config('request.jwt.claim.sub', %s, true)", (str(effective["sub"]),))
        yield conn


def rpc(
    url: str,
    function: str,
    params: Mapping[str, Any],
    *,
    role: Role = "authenticated",
    claims: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """`POST /rpc/<function>`: `SELECT * FROM public.<function>(name => value, …)`, rows as dicts."""
    args = sql.SQL(", ").join(
        sql.SQL("{} => {}").format(sql.Identifier(name), sql.Placeholder(name)) for name in params
    )
    query = sql.SQL("SELECT * FROM public.{}({})").format(sql.Identifier(function), args)
    with postgrest_session(url, role=role, claims=claims) as conn:
        return conn.execute(query, dict(params)).fetchall()


def select_files(
    url: str,
    claims: Mapping[str, Any] | None = None,
    *,
    role: Role = "authenticated",
    columns: Sequence[str] = ("*",),
    **eq: Any,
) -> list[dict[str, Any]]:
    """`GET /files?<col>=eq.<value>&select=<columns>` through the public.files view (RLS of the caller).

    Example, the frontend's thumbnail poll: `select_files(url, claims, id=file_id, columns=["thumbnail_status"])`.
    """
    cols = sql.SQL("*") if list(columns) == ["*"] else sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    query = sql.SQL("SELECT {} FROM public.files").format(cols)
    if eq:
        query += sql.SQL(" WHERE ") + sql.SQL(" AND ").join(
            sql.SQL("{} = {}").format(sql.Identifier(k), sql.Placeholder(k)) for k in eq
        )
    with postgrest_session(url, role=role, claims=claims) as conn:
        return conn.execute(query, eq).fetchall()


# -- the users and permissions model (as superuser) --------------------------------------------------


def _role_id(conn: psycopg.Connection[Any], role: str) -> int:
    conn.execute("INSERT INTO metadata.roles (display_name) VALUES (%s) ON CONFLICT (display_name) DO NOTHING", (role,))
    row = conn.execute("SELECT id FROM metadata.roles WHERE display_name = %s", (role,)).fetchone()
    assert row is not None
    return int(row[0])


def create_user(url: str, *, roles: Sequence[str] = ("user",), display_name: str = "") -> uuid.UUID:
    """A Civic OS user with these roles (roles missing from metadata.roles are added); returns its id (the `sub`)."""
    user_id = uuid.uuid4()
    with psycopg.connect(url) as conn:
        conn.execute(
            "INSERT INTO metadata.civic_os_users (id, display_name) VALUES (%s, %s)",
            (user_id, display_name or f"user-{user_id.hex[:8]}"),
        )
        for role in roles:
            conn.execute(
                "INSERT INTO metadata.civic_os_user_roles (user_id, role_id) VALUES (%s, %s)",
                (user_id, _role_id(conn, role)),
            )
    return user_id


def grant(url: str, role: str, entity_type: str, permission: str) -> None:
    """Give a Civic OS role (`anonymous`, `user`, …) a permission (create/read/update/delete) on an entity type."""
    with psycopg.connect(url) as conn:
        role_id = _role_id(conn, role)
        conn.execute(
            """INSERT INTO metadata.permissions (table_name, permission) VALUES (%s, %s)
               ON CONFLICT (table_name, permission) DO NOTHING""",
            (entity_type, permission),
        )
        conn.execute(
            """INSERT INTO metadata.permission_roles (permission_id, role_id)
               SELECT id, %s FROM metadata.permissions WHERE table_name = %s AND permission = %s
               ON CONFLICT DO NOTHING""",
            (role_id, entity_type, permission),
        )


def allow_anonymous_read(url: str, entity_type: str) -> None:
    """Requests without a JWT (and roles without BYPASSRLS connecting directly) may read this entity type's files."""
    grant(url, "anonymous", entity_type, "read")


def insert_other_queue_jobs(url: str) -> list[int]:
    """One available job of each of Civic OS's other kinds (OTHER_JOBS), as its SQL or Go code inserts them."""
    ids: list[int] = []
    with psycopg.connect(url) as conn:
        for kind, queue, priority, max_attempts, args in OTHER_JOBS:
            row = conn.execute(
                """INSERT INTO metadata.river_job (kind, queue, priority, max_attempts, args)
                   VALUES (%s, %s, %s, %s, %s) RETURNING id""",
                (kind, queue, priority, max_attempts, Jsonb(args)),
            ).fetchone()
            assert row is not None
            ids.append(int(row[0]))
    return ids
