"""The ClickHouse backends' SQLClient on chDB (a current ClickHouse engine, in process), so the tests run
the same SQL on today's ClickHouse as on the 18.16 server Debian ships."""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from typing import Any

from clickhouse_connect.driver.binding import finalize_query


class ChDBClient:
    def __init__(self, path: str) -> None:
        from chdb import session

        self._session = session.Session(path)
        self._lock = threading.Lock()

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        self._session.query(finalize_query(sql, parameters or {}))

    def rows(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple]:
        out = self._session.query(finalize_query(sql, parameters or {}), "JSONCompact")
        text = out.bytes().decode() if hasattr(out, "bytes") else str(out)
        if not text.strip():
            return []
        data = json.loads(text)["data"]
        return [tuple(row) for row in data]  # 64-bit integers come quoted; the backends int() them

    def insert(
        self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str], types: Sequence[str]
    ) -> None:
        values = ", ".join(finalize_query("%(row)s", {"row": tuple(row)}) for row in rows)
        self._session.query(f"INSERT INTO {table} ({', '.join(columns)}) VALUES {values}")

    def rows_joined(self, sql: str, table: str, column: str, values: Sequence[int]) -> list[tuple]:
        """chDB has no external tables: the values go to a Memory table of that name for the query."""
        with self._lock:
            self._session.query(f"CREATE TABLE {table} ({column} UInt32) ENGINE = Memory")
            try:
                for i in range(0, len(values), 50_000):
                    rows = ", ".join(f"({int(v)})" for v in values[i : i + 50_000])
                    self._session.query(f"INSERT INTO {table} VALUES {rows}")
                return self.rows(sql)
            finally:
                self._session.query(f"DROP TABLE {table}")

    def close(self) -> None:
        self._session.close()
