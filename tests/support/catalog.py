"""Reads a schema's River objects into the shape of shared/reference/river-schema-v*.catalog.json."""

from __future__ import annotations

import re
from typing import Any

import psycopg


def _templated(text: str | None, schema: str) -> str | None:
    if text is None:
        return None
    for form in (f'"{schema}".', f"{schema}."):
        text = re.sub(r"(?<![\w\"])" + re.escape(form), "{schema}.", text)
    return text


def _plain_not_null(contype: str, definition: str, column: str | None, not_null: set[str]) -> bool:
    """A NOT NULL constraint that PostgreSQL 18+ also records in pg_constraint (contype 'n', named like
    <table>_<col>_not_null) for a column the columns list already marks not_null. Before 18 it lived only in
    pg_attribute.attnotnull, and the reference catalogs have it only there. Only the plain form is dropped:
    a NOT VALID or NO INHERIT one (which attnotnull alone does not show) stays and fails the comparison."""
    return contype == "n" and column in not_null and definition in (f"NOT NULL {column}", f'NOT NULL "{column}"')


def read_catalog(conn: psycopg.Connection[Any], schema: str, prefix: str = "river") -> dict[str, Any]:
    t = lambda s: _templated(s, schema)  # noqa: E731
    like = prefix + "%"
    enums: dict[str, list[str]] = {}
    for name, label in conn.execute(
        """SELECT t.typname, e.enumlabel FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid
           JOIN pg_namespace n ON n.oid = t.typnamespace
           WHERE n.nspname = %s AND t.typname LIKE %s ORDER BY t.typname, e.enumsortorder""",
        (schema, like),
    ):
        enums.setdefault(name, []).append(label)
    tables: dict[str, Any] = {}
    for oid, name, persistence in conn.execute(
        """SELECT c.oid, c.relname, c.relpersistence FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = %s AND c.relkind = 'r' AND c.relname LIKE %s ORDER BY c.relname""",
        (schema, like),
    ).fetchall():
        cols = [
            {"name": r[0], "type": t(r[1]), "default": t(r[2]), "not_null": r[3]}
            for r in conn.execute(
                """SELECT a.attname, format_type(a.atttypid, a.atttypmod), pg_get_expr(d.adbin, d.adrelid), a.attnotnull
                   FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
                   WHERE a.attrelid = %s AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum""",
                (oid,),
            )
        ]
        indexes = {
            r[0]: t(r[1])
            for r in conn.execute(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s AND tablename = %s", (schema, name)
            )
        }
        triggers = {
            r[0]: t(r[1])
            for r in conn.execute(
                "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = %s AND NOT tgisinternal", (oid,)
            )
        }
        not_null = {c["name"] for c in cols if c["not_null"]}
        constraints = {
            r[0]: t(r[1])
            for r in conn.execute(
                """SELECT c.conname, pg_get_constraintdef(c.oid), c.contype::text, a.attname FROM pg_constraint c
                   LEFT JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
                   WHERE c.conrelid = %s""",
                (oid,),
            )
            if not _plain_not_null(r[2], r[1], r[3], not_null)
        }
        tables[name] = {
            "columns": cols,
            "indexes": indexes,
            "triggers": triggers,
            "unlogged": persistence == "u",
            "constraints": constraints,
        }
    functions = {
        f"{r[0]}({t(r[1])})": {"returns": t(r[2]), "language": r[3], "volatility": r[4]}
        for r in conn.execute(
            """SELECT p.proname, pg_get_function_identity_arguments(p.oid), format_type(p.prorettype, NULL),
                      l.lanname, p.provolatile::text
               FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace JOIN pg_language l ON l.oid = p.prolang
               WHERE n.nspname = %s AND p.proname LIKE %s""",
            (schema, like),
        )
    }
    return {"enums": enums, "tables": tables, "functions": functions}
