"""MySQL / MariaDB backends (through aiomysql): a fingerprint shard and a result store.

Layout of a shard database (schema version `SCHEMA_VERSION`, refused when it is another):
- `ts_meta(k, v)`: schema and fingerprint versions;
- `ts_tracks`: one row per track, `file_sha1` unique (CHAR(40): no bytes parameters, which aiomysql with
  PyMySQL >= 1.2.3 mishandles);
- `ts_fingerprints(hash, track_id, frame)`: the postings, clustered on (hash, track_id, frame) so a lookup
  reads contiguous rows, plus an index on track_id for deletes. Compact unsigned integer columns.

A track is stored in one transaction (its row and all its postings, inserted in batches), so it is there
whole or not at all; the unique key on file_sha1 makes a racing second upload of the same audio a no-op.
Every statement takes its values as parameters; the only names put into SQL text are the database name,
checked against `_NAME_RE`, and fixed table names.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import aiomysql
import numpy as np
import pymysql

from tunescout.engine.errors import StoreError, StoreFormatError
from tunescout.store.checks import (
    check_meta,
    check_queries,
    decode_result,
    encode_result,
    postings_from_rows,
    sorted_postings,
)
from tunescout.store.loop_thread import LoopThread
from tunescout.store.shard import IngestOutcome, Postings, ShardStats, TrackMeta, TrackRecord

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
RESULTS_SCHEMA_VERSION = 1
_NAME_RE = re.compile(r"^[A-Za-z0-9_]{1,64}$")
INSERT_BATCH_ROWS = 20_000
LOOKUP_BATCH_HASHES = 4_000
OPERATION_TIMEOUT_S = 120.0

_SHARD_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS ts_meta (k VARCHAR(64) NOT NULL PRIMARY KEY, v VARCHAR(255) NOT NULL) "
    "ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS ts_tracks ("
    " track_id INT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY,"
    " file_sha1 CHAR(40) CHARACTER SET ascii NOT NULL,"
    " title VARCHAR(512) NOT NULL, artist VARCHAR(512) NOT NULL, album VARCHAR(512) NOT NULL,"
    " year SMALLINT NULL, duration_s DOUBLE NOT NULL, n_hashes INT UNSIGNED NOT NULL,"
    " created_at DOUBLE NOT NULL,"
    " UNIQUE KEY uq_file_sha1 (file_sha1)"
    ") ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
    "CREATE TABLE IF NOT EXISTS ts_fingerprints ("
    " hash INT UNSIGNED NOT NULL, track_id INT UNSIGNED NOT NULL, frame MEDIUMINT UNSIGNED NOT NULL,"
    " PRIMARY KEY (hash, track_id, frame), KEY ix_track (track_id)"
    ") ENGINE=InnoDB",
    # a track's peak blob (engine.verify)
    "CREATE TABLE IF NOT EXISTS ts_peaks ("
    " track_id INT UNSIGNED NOT NULL PRIMARY KEY, data MEDIUMBLOB NOT NULL"
    ") ENGINE=InnoDB",
)
_RESULTS_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS ts_meta (k VARCHAR(64) NOT NULL PRIMARY KEY, v VARCHAR(255) NOT NULL) "
    "ENGINE=InnoDB",
    "CREATE TABLE IF NOT EXISTS ts_results (token VARCHAR(128) CHARACTER SET ascii NOT NULL PRIMARY KEY,"
    " created_at DOUBLE NOT NULL, result_json MEDIUMTEXT NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
)
_TRACK_COLUMNS = "track_id, file_sha1, title, artist, album, year, duration_s, n_hashes, created_at"


class _MySQL:
    """A connection pool to one database on its own loop thread; creates the database and tables."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        user: str | None,
        password: str | None,
        database: str | None,
        schema: tuple[str, ...],
        versions: dict[str, str],
        kind: str,
        pool_size: int = 4,
        connect_timeout_s: float = 5.0,
    ) -> None:
        if not database or not _NAME_RE.match(database):
            raise ValueError(f"MySQL database name {database!r}: use letters, digits and underscores")
        self.where = f"mysql://{host}:{port}/{database}"
        self._loop = LoopThread(f"mysql-{database}")
        self._args = {
            "host": host,
            "port": int(port),
            "user": user or "root",
            "password": password or "",
            "connect_timeout": connect_timeout_s,
            "charset": "utf8mb4",
        }
        self._database = database
        self._pool: aiomysql.Pool | None = None
        try:
            self._pool = self._loop.run(self._open(schema, versions, kind, pool_size), OPERATION_TIMEOUT_S)
        except BaseException:
            self._loop.stop()
            raise

    async def _open(
        self, schema: tuple[str, ...], versions: dict[str, str], kind: str, size: int
    ) -> aiomysql.Pool:
        try:
            conn = await aiomysql.connect(**self._args, autocommit=True)
            try:
                async with conn.cursor() as cur:
                    await cur.execute("SET SESSION sql_notes = 0")  # "already exists" is expected, not news
                    await cur.execute(
                        f"CREATE DATABASE IF NOT EXISTS `{self._database}` CHARACTER SET utf8mb4"
                    )
            finally:
                conn.close()
            pool = await aiomysql.create_pool(
                **self._args, db=self._database, autocommit=False, minsize=1, maxsize=size, pool_recycle=3600
            )
        except (pymysql.MySQLError, OSError) as exc:
            raise StoreError(f"cannot reach {self.where}: {exc}") from exc
        try:
            async with pool.acquire() as conn, conn.cursor() as cur:
                await cur.execute("SET SESSION sql_notes = 0")
                for statement in schema:
                    await cur.execute(statement)
                await cur.execute("SELECT k, v FROM ts_meta")
                found = dict(await cur.fetchall())
                if not found:
                    await cur.executemany(
                        "INSERT INTO ts_meta (k, v) VALUES (%s, %s)", list(versions.items())
                    )
                    await conn.commit()
                    logger.info("created %s %s (%s)", kind, self.where, versions)
                elif (
                    found.get("kind") != versions["kind"]
                    or found.get("schema_version") != versions["schema_version"]
                ):
                    raise StoreFormatError(
                        f"{self.where} holds a {found.get('kind')} with schema version "
                        f"{found.get('schema_version')}; this tunescout reads a {kind} with schema version "
                        f"{versions['schema_version']} only. "
                        "Use the release that wrote it, or another database."
                    )
                elif found != versions:
                    raise StoreFormatError(
                        f"{self.where} was written with {found}, this tunescout writes {versions}; "
                        "re-fingerprint into a new database"
                    )
        except BaseException:
            pool.close()
            await pool.wait_closed()
            raise
        return pool

    def run(self, coro: Any) -> Any:
        try:
            return self._loop.run(coro, OPERATION_TIMEOUT_S)
        except (pymysql.MySQLError, OSError) as exc:
            raise StoreError(f"{self.where}: {exc}") from exc

    def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:

            async def shut() -> None:
                pool.close()
                await pool.wait_closed()

            try:
                self._loop.run(shut(), 10)
            except Exception as exc:
                logger.warning("%s: closing the pool: %s", self.where, exc)
        self._loop.stop()

    @property
    def pool(self) -> aiomysql.Pool:
        if self._pool is None:
            raise StoreError(f"{self.where} is closed")
        return self._pool

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[aiomysql.Connection]:
        """A pooled connection; one that failed on the wire is closed, so the pool replaces it and the
        backend recovers by itself when the server comes back."""
        async with self.pool.acquire() as conn:
            try:
                yield conn
            except (pymysql.err.OperationalError, pymysql.err.InterfaceError, OSError):
                conn.close()
                raise


def _track(row: tuple) -> TrackRecord:
    tid, sha1, title, artist, album, year, duration_s, n_hashes, created_at = row
    return TrackRecord(
        int(tid),
        sha1,
        title,
        artist,
        album,
        None if year is None else int(year),
        float(duration_s),
        int(n_hashes),
        float(created_at),
    )


class MySQLShard:
    """A fingerprint shard in a MySQL or MariaDB database (see the module docstring)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 3306,
        user: str | None = None,
        password: str | None = None,
        database: str | None = None,
        fingerprint_version: int,
        pool_size: int = 4,
    ) -> None:
        versions = {
            "kind": "fingerprint shard",
            "schema_version": str(SCHEMA_VERSION),
            "fingerprint_version": str(int(fingerprint_version)),
        }
        self._db = _MySQL(
            host=host,
            port=port,
            user=user,
            password=password,
            database=database,
            schema=_SHARD_SCHEMA,
            versions=versions,
            kind="fingerprint shard",
            pool_size=pool_size,
        )
        self.where = self._db.where

    def ingest(
        self, meta: TrackMeta, hashes: np.ndarray, offsets: np.ndarray, peaks: bytes = b""
    ) -> IngestOutcome:
        check_meta(meta)
        row_hashes, row_frames, _ = sorted_postings(hashes, offsets)
        return self._db.run(self._ingest(meta, row_hashes, row_frames, peaks))

    async def _ingest(
        self, meta: TrackMeta, hashes: np.ndarray, frames: np.ndarray, peaks: bytes
    ) -> IngestOutcome:
        async with self._db.connection() as conn:
            try:
                async with conn.cursor() as cur:
                    existing = await self._select_sha1(cur, meta.file_sha1)
                    if existing is not None:
                        await conn.rollback()
                        return IngestOutcome(existing, already_present=True)
                    now = time.time()
                    await cur.execute(
                        f"INSERT INTO ts_tracks ({_TRACK_COLUMNS.split(', ', 1)[1]}) "
                        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                        (
                            meta.file_sha1,
                            meta.title,
                            meta.artist,
                            meta.album,
                            meta.year,
                            float(meta.duration_s),
                            int(hashes.size),
                            now,
                        ),
                    )
                    track_id = int(cur.lastrowid)
                    ids = np.full(hashes.size, track_id, np.int64)
                    for i in range(0, hashes.size, INSERT_BATCH_ROWS):
                        rows = list(
                            zip(
                                hashes[i : i + INSERT_BATCH_ROWS].tolist(),
                                ids[i : i + INSERT_BATCH_ROWS].tolist(),
                                frames[i : i + INSERT_BATCH_ROWS].tolist(),
                                strict=True,
                            )
                        )
                        await cur.executemany(
                            "INSERT INTO ts_fingerprints (hash, track_id, frame) VALUES (%s, %s, %s)", rows
                        )
                    if peaks:
                        # as hex: aiomysql's escaping of bytes fails with current PyMySQL (TypeError)
                        await cur.execute(
                            "INSERT INTO ts_peaks (track_id, data) VALUES (%s, UNHEX(%s))",
                            (track_id, peaks.hex()),
                        )
                await conn.commit()
            except pymysql.err.IntegrityError:  # the same audio was stored meanwhile by a racing upload
                await conn.rollback()
                async with conn.cursor() as cur:
                    existing = await self._select_sha1(cur, meta.file_sha1)
                if existing is None:
                    raise
                return IngestOutcome(existing, already_present=True)
            except BaseException:
                await conn.rollback()
                raise
        record = TrackRecord.stored(track_id, meta, int(hashes.size), now)
        return IngestOutcome(record, already_present=False)

    @staticmethod
    async def _select_sha1(cur: aiomysql.Cursor, file_sha1: str) -> TrackRecord | None:
        await cur.execute(f"SELECT {_TRACK_COLUMNS} FROM ts_tracks WHERE file_sha1 = %s", (file_sha1,))
        row = await cur.fetchone()
        return None if row is None else _track(row)

    def lookup(self, hashes: np.ndarray, max_postings_per_hash: int = 0) -> Postings:
        queries = check_queries(hashes)
        if queries.size == 0:
            return Postings.empty()
        found = self._db.run(self._lookup(queries.tolist()))
        if found.shape[0] == 0:
            return Postings.empty()
        return postings_from_rows(queries, found, max_postings_per_hash)

    async def _lookup(self, queries: list[int]) -> np.ndarray:
        """(n, 3) int64 rows (hash, track_id, frame). Each batch comes back as ONE text value built by
        GROUP_CONCAT and parsed by NumPy in C: PyMySQL's per-row parsing cost ~1 us per value."""
        parts: list[np.ndarray] = []
        async with self._db.connection() as conn, conn.cursor() as cur:
            await cur.execute("SET SESSION group_concat_max_len = %s", (1 << 30,))
            for i in range(0, len(queries), LOOKUP_BATCH_HASHES):
                part = queries[i : i + LOOKUP_BATCH_HASHES]
                marks = ", ".join(["%s"] * len(part))
                await cur.execute(
                    "SELECT GROUP_CONCAT(hash, ',', track_id, ',', frame SEPARATOR ',') "
                    f"FROM ts_fingerprints WHERE hash IN ({marks})",
                    part,
                )
                (text,) = await cur.fetchone()
                if text:
                    parts.append(np.fromstring(text, dtype=np.int64, sep=","))
            await conn.rollback()  # end the read snapshot so the next lookup sees new tracks
        if not parts:
            return np.empty((0, 3), np.int64)
        return np.concatenate(parts).reshape(-1, 3)

    def find_by_sha1(self, file_sha1: str) -> TrackRecord | None:
        async def find() -> TrackRecord | None:
            async with self._db.connection() as conn, conn.cursor() as cur:
                found = await self._select_sha1(cur, file_sha1)
                await conn.rollback()
                return found

        return self._db.run(find())

    def get_tracks(self, track_ids: Iterable[int]) -> dict[int, TrackRecord]:
        wanted = sorted({int(t) for t in track_ids})
        if not wanted:
            return {}

        async def get() -> list[tuple]:
            async with self._db.connection() as conn, conn.cursor() as cur:
                marks = ", ".join(["%s"] * len(wanted))
                await cur.execute(
                    f"SELECT {_TRACK_COLUMNS} FROM ts_tracks WHERE track_id IN ({marks})", wanted
                )
                rows = await cur.fetchall()
                await conn.rollback()
                return rows

        return {int(r[0]): _track(r) for r in self._db.run(get())}

    def track_peaks(self, track_ids: Iterable[int]) -> dict[int, bytes]:
        wanted = sorted({int(t) for t in track_ids})
        if not wanted:
            return {}

        async def get() -> list[tuple]:
            async with self._db.connection() as conn, conn.cursor() as cur:
                marks = ", ".join(["%s"] * len(wanted))
                await cur.execute(
                    "SELECT p.track_id, p.data FROM ts_peaks p JOIN ts_tracks t ON t.track_id = p.track_id "
                    f"WHERE p.track_id IN ({marks})",
                    wanted,
                )
                rows = await cur.fetchall()
                await conn.rollback()
                return rows

        return {int(r[0]): bytes(r[1]) for r in self._db.run(get())}

    def delete_track(self, track_id: int) -> bool:
        async def delete() -> bool:
            async with self._db.connection() as conn:
                try:
                    async with conn.cursor() as cur:
                        await cur.execute("DELETE FROM ts_tracks WHERE track_id = %s", (int(track_id),))
                        if cur.rowcount == 0:
                            await conn.rollback()
                            return False
                        await cur.execute("DELETE FROM ts_fingerprints WHERE track_id = %s", (int(track_id),))
                        await cur.execute("DELETE FROM ts_peaks WHERE track_id = %s", (int(track_id),))
                    await conn.commit()
                except BaseException:
                    await conn.rollback()
                    raise
                return True

        return self._db.run(delete())

    def stats(self) -> ShardStats:
        async def stats() -> tuple:
            async with self._db.connection() as conn, conn.cursor() as cur:
                await cur.execute("SELECT COUNT(*), COALESCE(SUM(n_hashes), 0) FROM ts_tracks")
                n_tracks, n_hashes = await cur.fetchone()
                await cur.execute(
                    "SELECT COALESCE(SUM(data_length + index_length), 0) FROM information_schema.tables "
                    "WHERE table_schema = DATABASE()"
                )
                (nbytes,) = await cur.fetchone()
                await conn.rollback()
                return int(n_tracks), int(n_hashes), int(nbytes)

        return ShardStats(*self._db.run(stats()))

    def list_tracks(self) -> list[TrackRecord]:
        async def tracks() -> list[tuple]:
            async with self._db.connection() as conn, conn.cursor() as cur:
                await cur.execute(f"SELECT {_TRACK_COLUMNS} FROM ts_tracks ORDER BY track_id")
                rows = await cur.fetchall()
                await conn.rollback()
                return rows

        return [_track(r) for r in self._db.run(tracks())]

    def track_postings(self, track_ids: Iterable[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        wanted = sorted({int(t) for t in track_ids})
        live = set(self.get_tracks(wanted))

        async def postings() -> dict[int, list[tuple]]:
            out: dict[int, list[tuple]] = {}
            async with self._db.connection() as conn, conn.cursor() as cur:
                for track_id in sorted(live):
                    await cur.execute(
                        "SELECT hash, frame FROM ts_fingerprints WHERE track_id = %s ORDER BY hash, frame",
                        (track_id,),
                    )
                    out[track_id] = list(await cur.fetchall())
                await conn.rollback()
            return out

        return {
            t: (np.array([r[0] for r in rows], np.uint32), np.array([r[1] for r in rows], np.int32))
            for t, rows in self._db.run(postings()).items()
        }

    def close(self) -> None:
        self._db.close()


class MySQLResultStore:
    """Recognition results by token in a MySQL or MariaDB database (JSON text, never pickle)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 3306,
        user: str | None = None,
        password: str | None = None,
        database: str | None = None,
    ) -> None:
        versions = {"kind": "result store", "schema_version": str(RESULTS_SCHEMA_VERSION)}
        self._db = _MySQL(
            host=host,
            port=port,
            user=user,
            password=password,
            database=database,
            schema=_RESULTS_SCHEMA,
            versions=versions,
            kind="result store",
            pool_size=2,
        )
        self.path = self._db.where  # named like EmbeddedResultStore's for messages

    def put(self, token: str, result: dict[str, Any]) -> None:
        encoded = encode_result(token, result)

        async def put() -> None:
            async with self._db.connection() as conn:
                try:
                    async with conn.cursor() as cur:
                        await cur.execute(
                            "INSERT INTO ts_results (token, created_at, result_json) VALUES (%s, %s, %s)",
                            (token, time.time(), encoded),
                        )
                    await conn.commit()
                except pymysql.err.IntegrityError as exc:
                    await conn.rollback()
                    raise StoreError(f"result token {token!r} is already used") from exc

        self._db.run(put())

    def get(self, token: str) -> dict[str, Any] | None:
        async def get() -> tuple | None:
            async with self._db.connection() as conn, conn.cursor() as cur:
                await cur.execute("SELECT result_json FROM ts_results WHERE token = %s", (token,))
                row = await cur.fetchone()
                await conn.rollback()
                return row

        row = self._db.run(get())
        if row is None:
            return None
        return decode_result(self.path, token, row[0])

    def close(self) -> None:
        self._db.close()
