"""ClickHouse backends (through clickhouse-connect, HTTP): a fingerprint shard and a result store.

Tables of a shard database (schema version `SCHEMA_VERSION` in `ts_meta`, another one is refused):
- `ts_fingerprints(hash, track_id, frame)`: MergeTree ORDER BY (hash, track_id, frame), so a lookup reads the
  granules of its hashes only; UInt32 columns, LZ4-compressed by ClickHouse;
- `ts_tracks`: one row per stored track, written LAST: it is the commit mark of a track;
- `ts_ids`: track ids handed out (never reused, also when an ingest dies half-way);
- `ts_deleted`: tombstones, applied by every lookup at once (ClickHouse deletes are asynchronous mutations,
  which then drop the rows for good).

ClickHouse has no transactions, so all-or-nothing is built from that order: claim an id, insert the postings,
insert the track row. A lookup only returns postings of tracks that have a row and no tombstone, so a track
whose ingest died before its row is invisible (its postings are removed by `purge_orphans`).

The same SQL runs on the ClickHouse 18.16 that Debian ships and on current servers (the tests run it on
chDB, ClickHouse in process). Parameters are bound client-side by clickhouse-connect, never formatted into
SQL by hand; the database name is checked as an identifier.
"""

from __future__ import annotations

import base64
import logging
import re
import threading
import time
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

import numpy as np

from tunescout.engine.errors import StoreError, StoreFormatError
from tunescout.store.checks import (
    check_meta,
    check_queries,
    decode_result,
    encode_result,
    postings_from_rows,
    sorted_postings,
)
from tunescout.store.shard import IngestOutcome, Postings, ShardStats, TrackMeta, TrackRecord

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
RESULTS_SCHEMA_VERSION = 1
_NAME_RE = re.compile(r"^[A-Za-z0-9_]{1,64}$")
NATIVE_TO_HTTP_PORT = {9000: 8123, 9440: 8443}  # the README's ports are the native protocol's
INSERT_BATCH_ROWS = 200_000

_TRACK_COLUMNS = (
    "track_id",
    "file_sha1",
    "title",
    "artist",
    "album",
    "year",
    "duration_s",
    "n_hashes",
    "created_at",
)
_TRACK_TYPES = ("UInt32", "String", "String", "String", "String", "UInt16", "Float64", "UInt32", "Float64")


class SQLClient(Protocol):
    """The few calls the backends make; `clickhouse_connect` clients and the tests' chDB adapter have them."""

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> Any: ...

    def rows(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple]: ...

    def insert(
        self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str], types: Sequence[str]
    ) -> None: ...

    def rows_joined(self, sql: str, table: str, column: str, values: Sequence[int]) -> list[tuple]:
        """Rows of `sql`, which reads the UInt32 `values` as table `table` (one column `column`)."""
        ...

    def close(self) -> None: ...


class HTTPClient:
    """clickhouse-connect over HTTP. Compression off and column types given: ClickHouse 18.16 knows no lz4
    request bodies and answers DESCRIBE with columns newer clients do not expect. No session, so that
    several threads may query at once (a session serialises them, and refuses concurrent queries)."""

    def __init__(
        self, host: str, port: int, user: str | None, password: str | None, timeout_s: float
    ) -> None:
        import clickhouse_connect
        from clickhouse_connect.driver.exceptions import ClickHouseError

        self._errors = ClickHouseError
        try:
            self._client = clickhouse_connect.get_client(
                host=host,
                port=port,
                username=user or "default",
                password=password or "",
                compress=False,
                autogenerate_session_id=False,  # no session: the shard's threads query concurrently
                connect_timeout=min(timeout_s, 5.0),
                send_receive_timeout=timeout_s,
            )
        except Exception as exc:  # clickhouse-connect raises its own and urllib3's errors
            raise StoreError(f"cannot reach ClickHouse at {host}:{port} (HTTP): {exc}") from exc

    def command(self, sql: str, parameters: dict[str, Any] | None = None) -> Any:
        return self._client.command(sql, parameters=parameters)

    def rows(self, sql: str, parameters: dict[str, Any] | None = None) -> list[tuple]:
        return self._client.query(sql, parameters=parameters).result_rows

    def insert(
        self, table: str, rows: Sequence[Sequence[Any]], columns: Sequence[str], types: Sequence[str]
    ) -> None:
        self._client.insert(table, rows, column_names=list(columns), column_type_names=list(types))

    def rows_joined(self, sql: str, table: str, column: str, values: Sequence[int]) -> list[tuple]:
        """The values travel as an external table in the same HTTP request: one query whatever their number
        (100,000 hashes as IN lists took 0.9 s in 10 statements; as external data, 54 ms)."""
        from clickhouse_connect.driver.external import ExternalData

        data = "\n".join(map(str, values)).encode()
        external = ExternalData(
            data=data, file_name=table, structure=[f"{column} UInt32"], fmt="TabSeparated"
        )
        return self._client.query(sql, external_data=external).result_rows

    def close(self) -> None:
        self._client.close()


def http_port(port: int | None) -> int:
    """config.json's `port` for ClickHouse: the HTTP port, except that the native protocol's well-known ports
    (9000, 9440, as the TuneScout README documents) mean the server's HTTP port beside them (8123, 8443)."""
    if port is None:
        return 8123
    return NATIVE_TO_HTTP_PORT.get(port, port)


class _Database:
    """Creates the database and tables, checks the versions in ts_meta."""

    def __init__(
        self,
        client: SQLClient,
        database: str | None,
        where: str,
        schema: Sequence[str],
        versions: dict[str, str],
    ) -> None:
        if not database or not _NAME_RE.match(database):
            raise ValueError(f"ClickHouse database name {database!r}: use letters, digits and underscores")
        self.client = client
        self.db = database
        self.where = f"{where}/{database}"
        try:
            client.command(f"CREATE DATABASE IF NOT EXISTS {database}")
            for statement in schema:
                client.command(statement.format(db=database))
            found = dict(client.rows(f"SELECT k, v FROM {database}.ts_meta"))
        except StoreError:
            raise
        except Exception as exc:
            raise StoreError(f"{self.where}: {exc}") from exc
        if not found:
            client.insert(f"{database}.ts_meta", list(versions.items()), ("k", "v"), ("String", "String"))
            logger.info("created %s (%s)", self.where, versions)
        elif (
            found.get("kind") != versions["kind"] or found.get("schema_version") != versions["schema_version"]
        ):
            raise StoreFormatError(
                f"{self.where} holds a {found.get('kind')} with schema version "
                f"{found.get('schema_version')}; "
                f"this tunescout reads a {versions['kind']} with schema version {versions['schema_version']} "
                "only. Use the release that wrote it, or another database."
            )
        elif found != versions:
            raise StoreFormatError(f"{self.where} was written with {found}; this tunescout writes {versions}")

    def call(self, what: str, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except (StoreError, ValueError):
            raise
        except Exception as exc:  # the driver's errors, connection errors
            raise StoreError(f"{self.where}: {what} failed: {exc}") from exc


_SHARD_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS {db}.ts_meta (k String, v String) ENGINE = MergeTree ORDER BY k",
    "CREATE TABLE IF NOT EXISTS {db}.ts_fingerprints (hash UInt32, track_id UInt32, frame UInt32) "
    "ENGINE = MergeTree ORDER BY (hash, track_id, frame)",
    "CREATE TABLE IF NOT EXISTS {db}.ts_tracks (track_id UInt32, file_sha1 String, title String, "
    "artist String, "
    "album String, year UInt16, duration_s Float64, n_hashes UInt32, created_at Float64) "
    "ENGINE = MergeTree ORDER BY track_id",
    "CREATE TABLE IF NOT EXISTS {db}.ts_ids (track_id UInt32) ENGINE = MergeTree ORDER BY track_id",
    "CREATE TABLE IF NOT EXISTS {db}.ts_deleted (track_id UInt32) ENGINE = MergeTree ORDER BY track_id",
    # a track's peak blob (engine.verify), base64: a String column would come back as (lossy) text
    "CREATE TABLE IF NOT EXISTS {db}.ts_peaks (track_id UInt32, data String) "
    "ENGINE = MergeTree ORDER BY track_id",
)


class ClickHouseShard:
    """A fingerprint shard in a ClickHouse database (see the module docstring)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        user: str | None = None,
        password: str | None = None,
        database: str | None = None,
        fingerprint_version: int,
        client: SQLClient | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        port = http_port(port)
        if client is None:
            client = HTTPClient(host, port, user, password, timeout_s)
        versions = {
            "kind": "fingerprint shard",
            "schema_version": str(SCHEMA_VERSION),
            "fingerprint_version": str(int(fingerprint_version)),
        }
        try:
            self._db = _Database(client, database, f"clickhouse://{host}:{port}", _SHARD_SCHEMA, versions)
        except BaseException:
            client.close()
            raise
        self.where = self._db.where
        self._c = client
        self._t = database
        self._ingest_lock = threading.Lock()  # ids are max + 1: one ingest at a time per process

    def _live(self) -> str:
        t = self._t
        return (
            f"track_id IN (SELECT track_id FROM {t}.ts_tracks) "
            f"AND track_id NOT IN (SELECT track_id FROM {t}.ts_deleted)"
        )

    def ingest(
        self, meta: TrackMeta, hashes: np.ndarray, offsets: np.ndarray, peaks: bytes = b""
    ) -> IngestOutcome:
        check_meta(meta)
        row_hashes, row_frames, _ = sorted_postings(hashes, offsets)
        with self._ingest_lock:
            existing = self.find_by_sha1(meta.file_sha1)
            if existing is not None:
                return IngestOutcome(existing, already_present=True)
            return self._db.call("ingest", self._ingest, meta, row_hashes, row_frames, peaks)

    def _ingest(self, meta: TrackMeta, hashes: np.ndarray, frames: np.ndarray, peaks: bytes) -> IngestOutcome:
        t = self._t
        (last,) = self._c.rows(f"SELECT max(track_id) FROM {t}.ts_ids")[0]
        track_id = int(last or 0) + 1
        self._c.insert(f"{t}.ts_ids", [(track_id,)], ("track_id",), ("UInt32",))
        ids = np.full(hashes.size, track_id, np.uint32)
        for i in range(0, hashes.size, INSERT_BATCH_ROWS):
            part = slice(i, i + INSERT_BATCH_ROWS)
            rows = list(zip(hashes[part].tolist(), ids[part].tolist(), frames[part].tolist(), strict=True))
            self._c.insert(f"{t}.ts_fingerprints", rows, ("hash", "track_id", "frame"), ("UInt32",) * 3)
        if peaks:
            encoded = base64.b64encode(peaks).decode("ascii")
            self._c.insert(f"{t}.ts_peaks", [(track_id, encoded)], ("track_id", "data"), ("UInt32", "String"))
        now = time.time()
        record = TrackRecord.stored(track_id, meta, int(hashes.size), now)
        row = (
            track_id,
            meta.file_sha1,
            meta.title,
            meta.artist,
            meta.album,
            meta.year or 0,
            float(meta.duration_s),
            int(hashes.size),
            now,
        )
        self._c.insert(f"{t}.ts_tracks", [row], _TRACK_COLUMNS, _TRACK_TYPES)  # the commit mark
        return IngestOutcome(record, already_present=False)

    def lookup(self, hashes: np.ndarray, max_postings_per_hash: int = 0) -> Postings:
        queries = check_queries(hashes)
        if queries.size == 0:
            return Postings.empty()
        sql = (
            f"SELECT hash, track_id, frame FROM {self._t}.ts_fingerprints "
            f"WHERE hash IN (SELECT hash FROM query_hashes) AND {self._live()}"
        )
        rows = self._db.call("lookup", self._c.rows_joined, sql, "query_hashes", "hash", queries.tolist())
        if not rows:
            return Postings.empty()
        found = np.array(rows, dtype=np.int64).reshape(-1, 3)
        return postings_from_rows(queries, found, max_postings_per_hash)

    def _tracks(self, where: str, parameters: dict[str, Any]) -> list[TrackRecord]:
        sql = (
            f"SELECT {', '.join(_TRACK_COLUMNS)} FROM {self._t}.ts_tracks WHERE {where} "
            f"AND track_id NOT IN (SELECT track_id FROM {self._t}.ts_deleted) ORDER BY track_id"
        )
        rows = self._db.call("reading tracks", self._c.rows, sql, parameters)
        return [
            TrackRecord(
                int(r[0]), r[1], r[2], r[3], r[4], int(r[5]) or None, float(r[6]), int(r[7]), float(r[8])
            )
            for r in rows
        ]

    def find_by_sha1(self, file_sha1: str) -> TrackRecord | None:
        found = self._tracks("file_sha1 = %(sha1)s", {"sha1": file_sha1})
        return found[0] if found else None  # the first stored, should a racing replica have stored it twice

    def get_tracks(self, track_ids: Iterable[int]) -> dict[int, TrackRecord]:
        wanted = tuple(sorted({int(t) for t in track_ids}))
        if not wanted:
            return {}
        return {t.track_id: t for t in self._tracks("track_id IN %(ids)s", {"ids": wanted})}

    def track_peaks(self, track_ids: Iterable[int]) -> dict[int, bytes]:
        wanted = tuple(sorted({int(t) for t in track_ids}))
        if not wanted:
            return {}
        rows = self._db.call(
            "reading peaks", self._c.rows,
            f"SELECT track_id, any(data) FROM {self._t}.ts_peaks "
            f"WHERE track_id IN %(ids)s AND {self._live()} GROUP BY track_id",
            {"ids": wanted},
        )  # fmt: skip
        return {int(r[0]): base64.b64decode(r[1]) for r in rows}

    def delete_track(self, track_id: int) -> bool:
        if not self.get_tracks([track_id]):
            return False
        t = self._t
        self._db.call(
            "delete", self._c.insert, f"{t}.ts_deleted", [(int(track_id),)], ("track_id",), ("UInt32",)
        )
        for table in (
            "ts_fingerprints",
            "ts_peaks",
            "ts_tracks",
        ):  # asynchronous; the tombstone hides them meanwhile
            self._db.call(
                "delete",
                self._c.command,
                f"ALTER TABLE {t}.{table} DELETE WHERE track_id = %(id)s",
                {"id": int(track_id)},
            )
        return True

    def list_tracks(self) -> list[TrackRecord]:
        return self._tracks("1 = 1", {})

    def track_postings(self, track_ids: Iterable[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        live = sorted(self.get_tracks(track_ids))
        if not live:
            return {}
        rows = self._db.call(
            "export", self._c.rows,
            f"SELECT track_id, hash, frame FROM {self._t}.ts_fingerprints WHERE track_id IN %(ids)s "
            "ORDER BY track_id, hash, frame",
            {"ids": tuple(live)},
        )  # fmt: skip
        found = np.array(rows, dtype=np.int64).reshape(-1, 3)
        out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for track_id in live:
            mine = found[found[:, 0] == track_id]
            out[track_id] = (mine[:, 1].astype(np.uint32), mine[:, 2].astype(np.int32))
        return out

    def purge_orphans(self) -> None:
        """Drop postings of ids that never got their track row (an ingest that died half-way)."""
        t = self._t
        self._db.call(
            "purge",
            self._c.command,
            f"ALTER TABLE {t}.ts_fingerprints DELETE "
            f"WHERE track_id NOT IN (SELECT track_id FROM {t}.ts_tracks)",
        )
        self._db.call(
            "purge",
            self._c.command,
            f"ALTER TABLE {t}.ts_peaks DELETE WHERE track_id NOT IN (SELECT track_id FROM {t}.ts_tracks)",
        )

    def stats(self) -> ShardStats:
        t = self._t
        n_tracks, n_hashes = self._db.call(
            "stats",
            self._c.rows,
            f"SELECT count(), sum(n_hashes) FROM {t}.ts_tracks "
            f"WHERE track_id NOT IN (SELECT track_id FROM {t}.ts_deleted)",
        )[0]
        (nbytes,) = self._db.call(
            "stats",
            self._c.rows,
            "SELECT sum(bytes) FROM system.parts WHERE database = %(db)s AND active",
            {"db": t},
        )[0]
        return ShardStats(int(n_tracks), int(n_hashes or 0), int(nbytes or 0))

    def close(self) -> None:
        self._c.close()


_RESULTS_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS {db}.ts_meta (k String, v String) ENGINE = MergeTree ORDER BY k",
    "CREATE TABLE IF NOT EXISTS {db}.ts_results (token String, created_at Float64, result_json String) "
    "ENGINE = MergeTree ORDER BY token",
)


class ClickHouseResultStore:
    """Recognition results by token in a ClickHouse database (JSON text, never pickle). ClickHouse has no
    unique keys, so `put` reads the token first to keep the contract (a token is written once); the
    service's tokens carry 192 random bits, so the read never finds one."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        user: str | None = None,
        password: str | None = None,
        database: str | None = None,
        client: SQLClient | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        port = http_port(port)
        if client is None:
            client = HTTPClient(host, port, user, password, timeout_s)
        versions = {"kind": "result store", "schema_version": str(RESULTS_SCHEMA_VERSION)}
        try:
            self._db = _Database(client, database, f"clickhouse://{host}:{port}", _RESULTS_SCHEMA, versions)
        except BaseException:
            client.close()
            raise
        self.path = self._db.where
        self._c = client
        self._t = database

    def put(self, token: str, result: dict[str, Any]) -> None:
        encoded = encode_result(token, result)
        if self.get(token) is not None:
            raise StoreError(f"result token {token!r} is already used")
        self._db.call(
            "put",
            self._c.insert,
            f"{self._t}.ts_results",
            [(token, time.time(), encoded)],
            ("token", "created_at", "result_json"),
            ("String", "Float64", "String"),
        )

    def get(self, token: str) -> dict[str, Any] | None:
        rows = self._db.call(
            "get",
            self._c.rows,
            f"SELECT result_json FROM {self._t}.ts_results WHERE token = %(token)s LIMIT 1",
            {"token": token},
        )
        if not rows:
            return None
        return decode_result(self.path, token, rows[0][0])

    def close(self) -> None:
        self._c.close()
