"""The Civic OS v0.70 fixture (tests/fixtures/civic_os_v070) behaves as civic-os-database.md says."""

from __future__ import annotations

import copy
import json
import uuid
from typing import Any

import psycopg
import pytest
from civic_runner.migrate import Migrator

from devenv import civic_os
from devenv.pg import PostgresServer
from tests.conftest import REFERENCE
from tests.support.catalog import read_catalog

pytestmark = pytest.mark.integration

PROBE = "fixture_probe"  # a worker-like role: LOGIN, no BYPASSRLS, no JWT


@pytest.fixture
def civic(db_url: str) -> str:
    civic_os.install(db_url)
    return db_url


def one(url: str, query: str, params: Any = None) -> Any:
    with psycopg.connect(url) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def rows(url: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query, params).fetchall()


def file_params(file_id: uuid.UUID, thumbnail_status: str, entity_type: str = "issues") -> dict[str, Any]:
    return {
        "p_id": file_id,
        "p_entity_type": entity_type,
        "p_entity_id": "42",
        "p_file_name": "photo.jpg",
        "p_file_type": "image/jpeg",
        "p_file_size": 1234,
        "p_s3_bucket": "civic-os-files",
        "p_s3_original_key": f"{entity_type}/42/{file_id}/original.jpg",
        "p_thumbnail_status": thumbnail_status,
    }


def uploader(url: str, entity_type: str = "issues") -> uuid.UUID:
    """A signed-in user whose role may attach files to `entity_type` (but not read them as anonymous)."""
    user_id = civic_os.create_user(url, roles=("user",))
    civic_os.grant(url, "user", entity_type, "create")
    return user_id


def add_file(url: str, user_id: uuid.UUID, thumbnail_status: str = "pending", entity_type: str = "issues") -> uuid.UUID:
    file_id = uuid.UUID(one(url, "SELECT public.uuid_generate_v7()::text"))
    result = civic_os.rpc(
        url,
        "create_file_record",
        file_params(file_id, thumbnail_status, entity_type),
        claims=civic_os.claims_for(user_id),
    )
    assert result == [{"create_file_record": file_id}]
    return file_id


def probe_url(url: str) -> str:
    """Connect as PROBE (created once per server; its grants are per database)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            f"""DO $$ BEGIN
                  CREATE ROLE {PROBE} LOGIN;
                EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
                END $$"""
        )
        conn.execute(f"GRANT USAGE ON SCHEMA metadata TO {PROBE}")
        conn.execute(f"GRANT SELECT, UPDATE ON metadata.files TO {PROBE}")
    return civic_os.as_user(url, PROBE)


def jobs(url: str) -> list[tuple[Any, ...]]:
    return rows(
        url,
        "SELECT kind, queue, args, priority, max_attempts, state::text FROM metadata.river_job ORDER BY id",
    )


# -- River as Civic OS vendors it -----------------------------------------------------------------


def test_verify_passes_and_fails_with_division_by_zero_without_river_client(civic: str) -> None:
    civic_os.verify(civic)
    with psycopg.connect(civic, autocommit=True) as conn:
        conn.execute("DROP TABLE metadata.river_client CASCADE")
    with pytest.raises(AssertionError, match="division by zero"):
        civic_os.verify(civic)


def test_verify_fails_after_river_7_drops_its_client_tables(civic: str) -> None:
    """River 007's drops, exactly: river_client_queue then river_client."""
    with psycopg.connect(civic, autocommit=True) as conn:
        conn.execute("DROP TABLE metadata.river_client_queue")
        conn.execute("DROP TABLE metadata.river_client")
    with pytest.raises(AssertionError, match="division by zero"):
        civic_os.verify(civic)


def test_river_migration_rows_and_quirky_shape(civic: str) -> None:
    assert rows(civic, "SELECT line, version FROM metadata.river_migration ORDER BY version") == [
        ("main", v) for v in range(1, 7)
    ]
    columns = dict(
        rows(
            civic,
            """SELECT column_name, column_default FROM information_schema.columns
               WHERE table_schema = 'metadata' AND table_name = 'river_migration'""",
        )
    )
    assert set(columns) == {"id", "line", "version", "created_at"}
    assert columns["line"] == "'main'::text"
    assert "nextval" in columns["id"]
    constraints = dict(
        rows(
            civic,
            "SELECT conname, contype::text FROM pg_constraint WHERE conrelid = 'metadata.river_migration'::regclass",
        )
    )
    assert constraints == {"river_migration_pkey": "p", "version": "c"}  # no version_gte_1, no line_length
    # A row inserted without a line is on the main line.
    with psycopg.connect(civic) as conn:
        conn.execute("INSERT INTO metadata.river_migration (version) VALUES (99)")
        assert conn.execute("SELECT line FROM metadata.river_migration WHERE version = 99").fetchone() == ("main",)
        conn.rollback()


def test_river_catalog_is_river_6_with_exactly_civic_os_quirks(civic: str) -> None:
    expected = copy.deepcopy(json.loads((REFERENCE / "river-schema-v6.catalog.json").read_text()))
    tables = expected["tables"]
    tables["river_migration"] = {
        "columns": [
            {
                "name": "id",
                "type": "bigint",
                "default": "nextval('{schema}.river_migration_id_seq'::regclass)",
                "not_null": True,
            },
            {"name": "created_at", "type": "timestamp with time zone", "default": "now()", "not_null": True},
            {"name": "version", "type": "bigint", "default": None, "not_null": True},
            {"name": "line", "type": "text", "default": "'main'::text", "not_null": True},
        ],
        "indexes": {
            "river_migration_pkey": "CREATE UNIQUE INDEX river_migration_pkey ON {schema}.river_migration "
            "USING btree (id)"
        },
        "triggers": {},
        "unlogged": False,
        "constraints": {"river_migration_pkey": "PRIMARY KEY (id)", "version": "CHECK ((version >= 1))"},
    }
    tables["river_job"]["indexes"]["river_job_kind_unique_key_idx"] = (
        "CREATE UNIQUE INDEX river_job_kind_unique_key_idx ON {schema}.river_job USING btree (kind, unique_key) "
        "WHERE (unique_key IS NOT NULL)"
    )
    del tables["river_client"]["constraints"]["name_length"]
    queue = tables["river_client_queue"]
    for name in ("name_length", "num_jobs_running_zero_or_positive", "num_jobs_completed_zero_or_positive"):
        del queue["constraints"][name]
    next(c for c in queue["columns"] if c["name"] == "max_workers")["default"] = None
    queue["columns"].insert(
        [c["name"] for c in queue["columns"]].index("updated_at"),
        {"name": "paused_at", "type": "timestamp with time zone", "default": None, "not_null": False},
    )
    with psycopg.connect(civic) as conn:
        conn.execute('SET search_path = "$user", public')  # as the reference was read: schema names shown
        assert read_catalog(conn, "metadata") == expected


def test_river_job_storage_grants_and_no_trigger(civic: str) -> None:
    assert sorted(one(civic, "SELECT reloptions FROM pg_class WHERE oid = 'metadata.river_job'::regclass")) == [
        "autovacuum_vacuum_cost_delay=1",
        "autovacuum_vacuum_scale_factor=0.01",
    ]
    assert one(civic, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'metadata.river_job'::regclass") == 0
    granted = rows(
        civic,
        """SELECT table_name FROM information_schema.role_table_grants
           WHERE grantee = 'authenticated' AND table_schema = 'metadata' AND table_name LIKE 'river%%'
             AND privilege_type = 'SELECT' ORDER BY 1""",
    )
    assert granted == [("river_job",), ("river_migration",), ("river_queue",)]
    assert not one(civic, "SELECT relrowsecurity FROM pg_class WHERE oid = 'metadata.river_job'::regclass")
    with psycopg.connect(civic) as conn, pytest.raises(psycopg.errors.NotNullViolation, match="max_attempts"):
        conn.execute("INSERT INTO metadata.river_job (kind, args) VALUES ('k', '{}')")


def test_migrator_reads_version_6_and_leaves_the_schema_alone(civic: str) -> None:
    with psycopg.connect(civic, autocommit=True) as conn:
        assert Migrator(conn, "metadata").current("main") == 6
    assert one(civic, "SELECT count(*) FROM metadata.river_migration") == 6


# -- database settings, roles, uuid_generate_v7 ---------------------------------------------------


def test_search_path_of_database_and_postgrest_roles(civic: str) -> None:
    path = "public, metadata, plugins, postgis"
    assert one(civic, "SHOW search_path") == path
    settings = rows(
        civic,
        """SELECT r.rolname, s.setconfig FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole
           WHERE s.setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database()) ORDER BY 1""",
    )
    assert settings == [(name, [f"search_path={path}"]) for name in ("authenticated", "authenticator", "web_anon")]
    assert one(civic_os.as_user(civic, "authenticator"), "SHOW search_path") == path
    extensions = dict(
        rows(civic, "SELECT e.extname, n.nspname FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace")
    )
    assert extensions == {"plpgsql": "pg_catalog", "pgcrypto": "plugins", "btree_gist": "plugins", "pg_trgm": "public"}


def test_roles_and_authenticator_has_no_grants_of_its_own(civic: str) -> None:
    attrs = dict(
        (r[0], r[1:])
        for r in rows(
            civic,
            """SELECT rolname, rolcanlogin, rolinherit FROM pg_roles
               WHERE rolname IN ('authenticator', 'web_anon', 'authenticated')""",
        )
    )
    assert attrs == {"authenticator": (True, False), "web_anon": (False, True), "authenticated": (False, True)}
    with (
        psycopg.connect(civic_os.as_user(civic, "authenticator")) as conn,
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="permission denied for schema metadata"),
    ):
        conn.execute("SELECT 1 FROM metadata.files")


def test_uuid_generate_v7_needs_plugins_on_the_search_path(civic: str) -> None:
    value = one(civic, "SELECT uuid_generate_v7()")  # unqualified, with the database's search_path
    assert isinstance(value, uuid.UUID) and value.version == 7
    with psycopg.connect(civic) as conn:
        conn.execute("SET search_path = public, metadata")
        with pytest.raises(psycopg.errors.UndefinedFunction, match="gen_random_bytes"):
            conn.execute("SELECT public.uuid_generate_v7()")


def test_installs_on_several_databases_of_one_server(civic: str, pg_server: PostgresServer) -> None:
    other = pg_server.create_database(f"{one(civic, 'SELECT current_database()')}_again")
    civic_os.install(other)
    civic_os.verify(other)


# -- the upload flow: RPCs and enqueue triggers ---------------------------------------------------


def test_request_upload_url_enqueues_presign_and_notifies_only_the_leftover_channel(civic: str) -> None:
    user_id = uploader(civic)
    with psycopg.connect(civic, autocommit=True) as listener:
        for channel in ("metadata.river_insert", "river_insert", "upload_url_request"):
            listener.execute(f'LISTEN "{channel}"')
        result = civic_os.rpc(
            civic,
            "request_upload_url",
            {"p_entity_type": "issues", "p_entity_id": "42", "p_file_name": "a b.png", "p_file_type": "image/png"},
            claims=civic_os.claims_for(user_id),
        )
        heard = list(listener.notifies(timeout=0.3))
    request_id = result[0]["request_upload_url"]
    assert isinstance(request_id, uuid.UUID)
    assert [n.channel for n in heard] == ["upload_url_request"]
    assert json.loads(heard[0].payload)["request_id"] == str(request_id)
    args = {
        "request_id": str(request_id),
        "file_name": "a b.png",
        "file_type": "image/png",
        "entity_type": "issues",
        "entity_id": "42",
    }
    assert jobs(civic) == [("s3_presign", "s3_signer", args, 1, 25, "available")]
    status = civic_os.rpc(civic, "get_upload_url", {"p_request_id": request_id}, claims=civic_os.claims_for(user_id))
    assert status == [{"status": "pending", "url": None, "file_id": None, "error": None}]


@pytest.mark.parametrize("thumbnail_status", ["pending", "not_applicable"])
def test_create_file_record_enqueues_thumbnail_only_when_pending(civic: str, thumbnail_status: str) -> None:
    user_id = uploader(civic)
    file_id = add_file(civic, user_id, thumbnail_status)
    expected = [("thumbnail_generate", "thumbnails", {"file_id": str(file_id)}, 1, 25, "available")]
    assert jobs(civic) == (expected if thumbnail_status == "pending" else [])
    row = rows(
        civic, "SELECT created_by, s3_key_prefix, thumbnail_status FROM metadata.files WHERE id = %s", (file_id,)
    )
    assert row == [(user_id, f"issues/42/{file_id}", thumbnail_status)]


def test_create_file_record_needs_create_permission(civic: str) -> None:
    user_id = civic_os.create_user(civic)
    file_id = uuid.uuid4()
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="issues"):
        civic_os.rpc(civic, "create_file_record", file_params(file_id, "pending"), claims=civic_os.claims_for(user_id))
    assert jobs(civic) == []


def test_created_by_comes_from_the_jwt_not_the_insert(civic: str) -> None:
    user_id = uploader(civic)
    someone_else = civic_os.create_user(civic)
    with civic_os.postgrest_session(civic, claims=civic_os.claims_for(user_id)) as conn:
        conn.execute(
            """INSERT INTO metadata.files (entity_type, entity_id, file_name, file_type, file_size, s3_original_key,
                                           created_by, thumbnail_status)
               VALUES ('issues', '1', 'x.txt', 'text/plain', 1, 'issues/1/x', %s, 'not_applicable')""",
            (someone_else,),
        )
    assert rows(civic, "SELECT created_by FROM metadata.files") == [(user_id,)]


def test_other_queues_share_river_job(civic: str) -> None:
    ids = civic_os.insert_other_queue_jobs(civic)
    assert len(ids) == len(civic_os.OTHER_JOBS)
    queues = {r[1] for r in jobs(civic)}
    assert {"notifications", "user_provisioning", "default"} <= queues
    assert not queues & {"s3_signer", "thumbnails"}


# -- row-level security on metadata.files ---------------------------------------------------------


def test_select_policy_hides_files_from_a_role_without_jwt_until_anonymous_may_read(civic: str) -> None:
    file_id = add_file(civic, uploader(civic))
    probe = probe_url(civic)
    assert one(civic, "SELECT count(*) FROM metadata.files") == 1  # the superuser bypasses RLS
    assert rows(probe, "SELECT id FROM metadata.files WHERE id = %s", (file_id,)) == []
    assert civic_os.select_files(civic, None, role="web_anon", id=file_id) == []

    civic_os.allow_anonymous_read(civic, "issues")
    assert rows(probe, "SELECT id FROM metadata.files WHERE id = %s", (file_id,)) == [(file_id,)]
    polled = civic_os.select_files(civic, None, role="web_anon", id=file_id, columns=["thumbnail_status"])
    assert polled == [{"thumbnail_status": "pending"}]


def test_select_policy_owner_and_admin_see_files_others_do_not(civic: str) -> None:
    owner = uploader(civic)
    file_id = add_file(civic, owner)
    stranger = civic_os.create_user(civic)
    admin = civic_os.create_user(civic, roles=("admin",))
    for user, visible in ((owner, True), (stranger, False), (admin, True)):
        seen = civic_os.select_files(civic, civic_os.claims_for(user), id=file_id, columns=["id"])
        assert seen == ([{"id": file_id}] if visible else []), user


def test_update_policy_lets_a_role_without_bypassrls_change_young_rows_only(civic: str) -> None:
    user_id = uploader(civic)
    young, old = add_file(civic, user_id), add_file(civic, user_id)
    civic_os.allow_anonymous_read(civic, "issues")  # both visible to the probe: only the UPDATE policy differs
    with psycopg.connect(civic) as conn:
        conn.execute("UPDATE metadata.files SET created_at = now() - interval '6 minutes' WHERE id = %s", (old,))
    probe = probe_url(civic)
    assert len(rows(probe, "SELECT id FROM metadata.files")) == 2
    with psycopg.connect(probe) as conn:
        update = "UPDATE metadata.files SET thumbnail_status = 'completed', updated_at = now() WHERE id = %s"
        assert conn.execute(update, (young,)).rowcount == 1
        assert conn.execute(update, (old,)).rowcount == 0
    assert dict(rows(civic, "SELECT id, thumbnail_status FROM metadata.files")) == {young: "completed", old: "pending"}


def test_insert_policy_checks_the_jwt_role_claim(civic: str) -> None:
    insert = """INSERT INTO metadata.files (entity_type, entity_id, file_name, file_type, file_size, s3_original_key)
                VALUES ('issues', '1', 'x', 'text/plain', 1, 'k')"""
    with (
        pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"),
        civic_os.postgrest_session(civic, claims={"role": "someone"}) as conn,
    ):
        conn.execute(insert)
    with civic_os.postgrest_session(civic) as conn:  # {"role": "authenticated"}, no sub
        conn.execute(insert)
    assert rows(civic, "SELECT created_by FROM metadata.files") == [(None,)]
