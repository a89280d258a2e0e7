"""EmbeddedResultStore: recognition results kept by result token in one local SQLite file (WAL).

A result is a JSON object (never pickle: a stored value must not be able to run code when read back).
Tokens are generated elsewhere; a token is written once. One connection guarded by a lock serves every
thread, so a result is readable by any thread as soon as `put` returns.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from tunescout.engine.errors import StoreError, StoreFormatError
from tunescout.store.checks import check_token, decode_result, encode_result

logger = logging.getLogger(__name__)

RESULTS_SCHEMA_VERSION = 1  # bump on any schema change; a reader refuses versions it does not know

_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE results (token TEXT PRIMARY KEY, created_at REAL NOT NULL, result_json TEXT NOT NULL)",
)


class EmbeddedResultStore:
    """Results by token in the SQLite file `path` (created with its parent directory if missing)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open result store {self.path}: {exc}") from exc
        self._conn: sqlite3.Connection | None = conn
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreError(f"{self.path}: SQLite refused WAL mode (got {mode}); use a local filesystem")
            # NORMAL: WAL stays consistent on power loss and may lose only the last results, which a client
            # recovers by recognising again; it saves an fsync per recognition
            conn.execute("PRAGMA synchronous = NORMAL")
            self._init_or_check_schema(conn)
        except BaseException:
            conn.close()
            self._conn = None
            raise

    def _init_or_check_schema(self, conn: sqlite3.Connection) -> None:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if "meta" not in tables:
            if tables:
                raise StoreFormatError(
                    f"{self.path} is not a tunescout result store (tables {sorted(tables)})"
                )
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?)",
                    (str(RESULTS_SCHEMA_VERSION),),
                )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            logger.info("created result store %s (schema %d)", self.path, RESULTS_SCHEMA_VERSION)
            return
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        found = None if row is None else row[0]
        if found != str(RESULTS_SCHEMA_VERSION):
            raise StoreFormatError(
                f"result store {self.path} has schema version {found}; this tunescout supports version "
                f"{RESULTS_SCHEMA_VERSION} only. Use the tunescout release that wrote it, or start a new "
                "file (stored results are only kept for clients to fetch)."
            )

    def put(self, token: str, result: dict[str, Any]) -> None:
        """Store `result` (a JSON-serialisable dict) under `token`.

        Raises StoreError if the token is already used, ValueError if the result is not plain JSON
        (NaN and infinities are refused: JSON has no such numbers).
        """
        encoded = encode_result(token, result)
        with self._lock:
            conn = self._connection()
            try:
                conn.execute(
                    "INSERT INTO results (token, created_at, result_json) VALUES (?, ?, ?)",
                    (token, time.time(), encoded),
                )
            except sqlite3.IntegrityError as exc:
                raise StoreError(f"result token {token!r} is already used; tokens must be unique") from exc
            except sqlite3.Error as exc:
                raise StoreError(f"result store {self.path}: SQLite failed: {exc}") from exc

    def get(self, token: str) -> dict[str, Any] | None:
        """The result stored under `token`, or None if there is none."""
        check_token(token)
        with self._lock:
            try:
                row = (
                    self._connection()
                    .execute("SELECT result_json FROM results WHERE token = ?", (token,))
                    .fetchone()
                )
            except sqlite3.Error as exc:
                raise StoreError(f"result store {self.path}: SQLite failed: {exc}") from exc
        if row is None:
            return None
        return decode_result(f"result store {self.path}", token, row[0])

    def close(self) -> None:
        """Close the connection. Idempotent."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> EmbeddedResultStore:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.close()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"result store {self.path} is closed")
        return self._conn
