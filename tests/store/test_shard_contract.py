"""Every shard backend keeps the FingerprintShard contract, checked against the embedded shard's answers:
real servers (MariaDB) where the backend needs one."""

import threading
import uuid

import numpy as np
import pymysql
import pytest

from tests.chdb_client import ChDBClient
from tests.servers import (
    CLICKHOUSE_HOST,
    CLICKHOUSE_HTTP_PORT,
    MYSQL_HOST,
    MYSQL_PORT,
    MYSQL_USER,
    drop_clickhouse_database,
    drop_mysql_database,
    require_clickhouse,
    require_mysql,
)
from tests.services.clips import DATA, NAMES, reference
from tunescout.engine import arrays, verify
from tunescout.engine.errors import StoreFormatError
from tunescout.engine.fingerprint import fingerprint_audio
from tunescout.engine.params import DEFAULT_PARAMS, FINGERPRINT_VERSION
from tunescout.engine.peaks import Role
from tunescout.store import EmbeddedShard, TrackMeta
from tunescout.store.clickhouse import ClickHouseShard
from tunescout.store.mysql import MySQLShard


def _mysql(database: str, version: int = FINGERPRINT_VERSION) -> MySQLShard:
    return MySQLShard(
        host=MYSQL_HOST, port=MYSQL_PORT, user=MYSQL_USER, database=database, fingerprint_version=version
    )


@pytest.fixture(params=["embedded", "mysql", "clickhouse-18.16", "clickhouse-current"])
def backend(request, tmp_path):
    """Opens a shard (again) on the same storage; `version` is the fingerprint version it is opened with."""
    database = f"ts_test_{uuid.uuid4().hex[:10]}"
    if request.param == "embedded":
        yield lambda version=FINGERPRINT_VERSION: EmbeddedShard(tmp_path / "s", fingerprint_version=version)
    elif request.param == "mysql":
        require_mysql()
        yield lambda version=FINGERPRINT_VERSION: _mysql(database, version)
        drop_mysql_database(database)
    elif request.param == "clickhouse-18.16":  # the server .ci/clickhouse.sh starts (Debian's package)
        require_clickhouse()
        server = {"host": CLICKHOUSE_HOST, "port": CLICKHOUSE_HTTP_PORT}
        yield lambda version=FINGERPRINT_VERSION: ClickHouseShard(
            **server, database=database, fingerprint_version=version
        )
        drop_clickhouse_database(database)
    else:  # today's ClickHouse engine, in process (chDB)
        path = str(tmp_path / "chdb")
        yield lambda version=FINGERPRINT_VERSION: ClickHouseShard(
            database=database, fingerprint_version=version, client=ChDBClient(path)
        )


def _meta(name: str) -> TrackMeta:
    fp = reference(name)
    return TrackMeta(fp.file_sha1, name, artist="Wesnoth", year=2005, duration_s=fp.duration_s)


def _rows(postings):
    return sorted(
        zip(postings.hash_index.tolist(), postings.track_id.tolist(), postings.offset.tolist(), strict=True)
    )


@pytest.fixture(scope="module")
def query_hashes():
    peaks = fingerprint_audio(DATA / f"{NAMES[1]}.opus", role=Role.QUERY, start_s=4.0, duration_s=8.0)
    return arrays.unique(peaks.fingerprint.hashes)


def test_ingest_lookup_and_idempotence_match_the_embedded_shard(backend, tmp_path, query_hashes):
    shard = backend()
    truth = EmbeddedShard(tmp_path / "truth", fingerprint_version=FINGERPRINT_VERSION)
    try:
        stored = 0
        for name in NAMES[:3]:
            fp = reference(name)
            got = shard.ingest(_meta(name), fp.fingerprint.hashes, fp.fingerprint.offsets)
            want = truth.ingest(_meta(name), fp.fingerprint.hashes, fp.fingerprint.offsets)
            assert not got.already_present and got.track.n_hashes == want.track.n_hashes
            assert got.track.track_id == want.track.track_id  # both count tracks from 1
            stored += got.track.n_hashes
        again = shard.ingest(
            _meta(NAMES[0]), reference(NAMES[0]).fingerprint.hashes, reference(NAMES[0]).fingerprint.offsets
        )
        assert again.already_present and again.track.title == NAMES[0] and again.track.year == 2005
        assert _rows(shard.lookup(query_hashes)) == _rows(truth.lookup(query_hashes))
        assert _rows(shard.lookup(query_hashes, 1)) == _rows(truth.lookup(query_hashes, 1))  # the cap
        assert len(shard.lookup(query_hashes)) > 0
        stats = shard.stats()
        assert (stats.n_tracks, stats.n_hashes) == (3, stored) and stats.bytes_on_disk > 0
        assert shard.find_by_sha1(reference(NAMES[2]).file_sha1).title == NAMES[2]
        assert shard.find_by_sha1("0" * 40) is None
        assert set(shard.get_tracks([1, 2, 3, 99])) == {1, 2, 3}
    finally:
        shard.close()
        truth.close()


def test_delete_removes_postings_at_once(backend, query_hashes):
    shard = backend()
    try:
        fp = reference(NAMES[1])
        track = shard.ingest(_meta(NAMES[1]), fp.fingerprint.hashes, fp.fingerprint.offsets).track
        assert len(shard.lookup(query_hashes)) > 0
        assert shard.delete_track(track.track_id)
        assert len(shard.lookup(query_hashes)) == 0
        assert shard.find_by_sha1(fp.file_sha1) is None and shard.get_tracks([track.track_id]) == {}
        assert shard.stats().n_tracks == 0
        assert not shard.delete_track(track.track_id)
    finally:
        shard.close()


def test_peaks_stored_with_a_track_come_back_by_id_until_it_is_deleted(backend):
    shard = backend()
    try:
        with_peaks, without = reference(NAMES[0]), reference(NAMES[1])
        blob = verify.encode(with_peaks.peaks, DEFAULT_PARAMS)
        first = shard.ingest(
            _meta(NAMES[0]), with_peaks.fingerprint.hashes, with_peaks.fingerprint.offsets, blob
        )
        second = shard.ingest(_meta(NAMES[1]), without.fingerprint.hashes, without.fingerprint.offsets)
        a, b = first.track.track_id, second.track.track_id
        got = shard.track_peaks([a, b, 99])
        assert got == {a: blob}  # byte for byte; a track stored without peaks is left out
        assert len(verify.decode(got[a])) > 0
        assert shard.track_peaks([]) == {}
        assert shard.delete_track(a)
        assert shard.track_peaks([a]) == {}
    finally:
        shard.close()


def test_racing_ingests_of_the_same_audio_store_it_once(backend):
    shard = backend()
    fp = reference(NAMES[0])
    outcomes = []
    barrier = threading.Barrier(4)

    def upload():
        barrier.wait()
        outcomes.append(shard.ingest(_meta(NAMES[0]), fp.fingerprint.hashes, fp.fingerprint.offsets))

    try:
        threads = [threading.Thread(target=upload) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(o.already_present for o in outcomes) == [False, True, True, True]
        assert len({o.track.track_id for o in outcomes}) == 1
        assert shard.stats().n_tracks == 1
    finally:
        shard.close()


def test_another_fingerprint_version_is_refused(backend):
    backend().close()
    with pytest.raises(StoreFormatError):
        backend(version=FINGERPRINT_VERSION + 1)


def test_mysql_schema_of_another_version_is_refused():
    require_mysql()
    database = f"ts_test_{uuid.uuid4().hex[:10]}"
    try:
        _mysql(database).close()
        conn = pymysql.connect(
            host=MYSQL_HOST, port=MYSQL_PORT, user=MYSQL_USER, database=database, autocommit=True
        )
        with conn.cursor() as cur:
            cur.execute("UPDATE ts_meta SET v = %s WHERE k = %s", ("99", "schema_version"))
        conn.close()
        with pytest.raises(StoreFormatError, match="schema version 99"):
            _mysql(database)
    finally:
        drop_mysql_database(database)


def test_mysql_refuses_a_database_name_that_is_not_an_identifier():
    with pytest.raises(ValueError, match="database name"):
        _mysql("x`; DROP DATABASE mysql; --")


def test_mysql_server_down_is_a_store_error():
    from tunescout.engine.errors import StoreError

    with pytest.raises(StoreError, match="cannot reach"):
        MySQLShard(host="127.0.0.1", port=1, database="x", fingerprint_version=FINGERPRINT_VERSION)


def test_np_rows_are_identical_types(backend):
    shard = backend()
    try:
        fp = reference(NAMES[3])
        shard.ingest(_meta(NAMES[3]), fp.fingerprint.hashes, fp.fingerprint.offsets)
        postings = shard.lookup(arrays.unique(fp.fingerprint.hashes[:500]))
        assert postings.hash_index.dtype == np.int32 and postings.track_id.dtype == np.int64
        assert postings.offset.dtype == np.int32
        assert np.all(np.diff(postings.hash_index) >= 0)  # grouped by query hash
    finally:
        shard.close()


def test_a_lookup_of_many_hashes_is_answered_whole(backend):
    """Speed/tempo hypotheses look up some 100,000 hashes at once: more than one SQL statement may carry."""
    shard = backend()
    try:
        fp = reference(NAMES[2])
        shard.ingest(_meta(NAMES[2]), fp.fingerprint.hashes, fp.fingerprint.offsets)
        rng = np.random.default_rng(0)
        many = arrays.unique(
            np.concatenate([fp.fingerprint.hashes, rng.integers(0, 2**32, 120_000, dtype=np.uint32)])
        )
        postings = shard.lookup(many)
        assert len(postings) >= fp.fingerprint.hashes.size
        stored = set(fp.fingerprint.hashes.tolist())
        assert stored <= set(many[np.unique(postings.hash_index)].tolist())
    finally:
        shard.close()


def test_export_gives_back_what_was_ingested(backend):
    shard = backend()
    try:
        stored = {}
        for name in NAMES[:3]:
            fp = reference(name)
            track = shard.ingest(_meta(name), fp.fingerprint.hashes, fp.fingerprint.offsets).track
            stored[track.track_id] = fp
        shard.delete_track(min(stored))
        listed = shard.list_tracks()
        assert [t.track_id for t in listed] == sorted(stored)[1:]
        exported = shard.track_postings([t.track_id for t in listed] + [min(stored), 999])
        assert set(exported) == {t.track_id for t in listed}
        for track_id, (hashes, offsets) in exported.items():
            fp = stored[track_id].fingerprint
            order = np.lexsort((fp.offsets, fp.hashes))
            assert np.array_equal(hashes, fp.hashes[order]) and np.array_equal(offsets, fp.offsets[order])
    finally:
        shard.close()
