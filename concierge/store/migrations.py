"""Numbered SQL migrations per backend, shipped in the package and applied in order.

``migrations/<backend>/NNNN_name.sql`` files are applied once each and recorded in
``schema_migrations``; ``migrate`` (``concierge migrate``) applies the missing ones
and is idempotent. PostgreSQL applies them all in one transaction under an
advisory lock, so two concurrent runs cannot interleave and a failure leaves the
schema as it was.
"""

from __future__ import annotations

import re
import sqlite3
from importlib import resources

import attrs

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

SCHEMA_MIGRATIONS_SQLITE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    applied_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
)
"""

SCHEMA_MIGRATIONS_POSTGRES = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version     integer PRIMARY KEY,
    name        text NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
)
"""


@attrs.frozen(kw_only=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(backend: str) -> tuple[Migration, ...]:
    """The ``backend``'s migrations in version order; a gap or a bad name is a packaging bug."""
    if backend not in ("sqlite", "postgres"):
        raise ValueError(f"unknown store backend {backend!r}: expected sqlite or postgres")
    folder = resources.files("concierge.store").joinpath("migrations", backend)
    found: list[Migration] = []
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE.match(entry.name)
        if match is None:
            raise ValueError(f"migration file {entry.name!r} is not named NNNN_name.sql")
        found.append(Migration(version=int(match[1]), name=match[2], sql=entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise ValueError(f"{backend} migrations skip version {expected}")
    return tuple(found)


def latest_version(backend: str) -> int:
    migrations = load_migrations(backend)
    return migrations[-1].version if migrations else 0


def apply_sqlite(conn: sqlite3.Connection) -> list[int]:
    """Apply missing migrations on an autocommit connection, each in its own transaction."""
    conn.execute(SCHEMA_MIGRATIONS_SQLITE)
    applied = {int(r[0]) for r in conn.execute("SELECT version FROM schema_migrations")}
    done: list[int] = []
    for migration in load_migrations("sqlite"):
        if migration.version in applied:
            continue
        script = (
            "BEGIN IMMEDIATE;\n"
            f"{migration.sql}\n;\n"
            f"INSERT INTO schema_migrations (version, name) VALUES ({migration.version}, '{migration.name}');\n"
            "COMMIT;"
        )
        try:
            conn.executescript(script)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        done.append(migration.version)
    return done
