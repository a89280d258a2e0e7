"""ShardSet (unit): the fan-out waits for every shard at most its deadline, in parallel, and reports the
shards that were too slow or failed; real embedded shards, one wrapped to be slow or broken."""

import logging
import shutil
import time

import numpy as np
import pytest

from services.matcher.cache import MemoryLookupCache, decode_postings, encode_postings
from services.matcher.servicer import _match
from services.matcher.shardset import FanoutReport, ShardHandle, ShardSet
from tests.services.clips import NAMES, match_request, reference
from tunescout.common import wire
from tunescout.common.config import StoreConfig, parse_config
from tunescout.engine import verify
from tunescout.engine.errors import StoreError
from tunescout.engine.params import DEFAULT_PARAMS, FINGERPRINT_VERSION
from tunescout.engine.peaks import Peaks
from tunescout.store import EmbeddedShard, TrackMeta
from tunescout.store.shard import Postings, ShardStats


def _rows(postings):
    return sorted(
        zip(postings.hash_index.tolist(), postings.track_id.tolist(), postings.offset.tolist(), strict=True)
    )


class SlowShard:
    """A real shard whose lookups take `delay_s` (or fail when `broken`)."""

    def __init__(self, inner, delay_s=0.0, broken=False):
        self.inner, self.delay_s, self.broken = inner, delay_s, broken

    def lookup(self, hashes, cap=0):
        time.sleep(self.delay_s)
        if self.broken:
            raise ConnectionError("connection refused")
        return self.inner.lookup(hashes, cap)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.fixture
def shards(tmp_path):
    stores = parse_config({"instances": [{"name": n} for n in ("fast", "slow", "broken")]}).instances
    opened = []
    for i, store in enumerate(stores):
        shard = EmbeddedShard(tmp_path / store.name, fingerprint_version=FINGERPRINT_VERSION)
        fp = reference(NAMES[i])
        shard.ingest(TrackMeta(fp.file_sha1, NAMES[i]), fp.fingerprint.hashes, fp.fingerprint.offsets)
        opened.append(shard)
    wrapped = [SlowShard(opened[0], 0.3), SlowShard(opened[1], 3.0), SlowShard(opened[2], broken=True)]
    handles = [
        ShardHandle(i, s, lambda c, w=w: w, None)
        for i, (s, w) in enumerate(zip(stores, wrapped, strict=True))
    ]
    shardset = ShardSet(handles, deadline_s=1.0)
    yield shardset
    shardset.close()


def test_fan_out_is_parallel_and_reports_slow_and_broken_shards(shards):
    hashes = np.unique(np.concatenate([reference(n).fingerprint.hashes for n in NAMES[:3]]))
    report = FanoutReport()
    began = time.monotonic()
    postings = shards.lookup(hashes, 0, report)
    took = time.monotonic() - began
    assert took < 1.5  # the deadline, not the sum of the shards' times
    assert set(report.unavailable) == {"slow", "broken"}
    assert "deadline" in report.unavailable["slow"] and "connection refused" in report.unavailable["broken"]
    assert len(postings) > 0
    assert {shards.split_id(int(g))[0] for g in np.unique(postings.track_id)} == {0}  # only the fast shard


def test_global_ids_round_trip(shards):
    for index in range(3):
        for local in (1, 7, 12345):
            assert shards.split_id(shards.global_id(index, local)) == (index, local)


def test_cached_postings_round_trip_and_bad_bytes_are_refused():
    postings = Postings(
        np.array([0, 0, 3], np.int32), np.array([5, 9, 5], np.int64), np.array([1, 2, 3], np.int32)
    )
    back = decode_postings(encode_postings(postings))
    assert all(
        np.array_equal(getattr(back, f), getattr(postings, f)) for f in ("hash_index", "track_id", "offset")
    )
    with pytest.raises(ValueError):
        decode_postings(b"XXXX" + encode_postings(postings)[4:])
    with pytest.raises(ValueError):
        decode_postings(encode_postings(postings)[:-1])


def test_memory_cache_never_stores_an_answer_read_before_a_write():
    cache = MemoryLookupCache(1 << 20, ttl_s=60)
    postings = Postings.empty()
    cached, slot = cache.get("q")
    assert cached is None
    cache.invalidate()  # a write lands while the shard is being asked
    cache.put(slot, postings)
    assert cache.get("q")[0] is None
    cached, slot = cache.get("q")
    cache.put(slot, postings)
    assert cache.get("q")[0] is not None


def test_store_config_is_what_handles_are_named_after():
    store = StoreConfig("x", "embedded", parse_config({}).instances[0].database)
    assert ShardHandle(0, store, lambda c: None, None).name == "x"


def test_idle_shards_are_compacted_into_one_segment_and_answer_the_same(tmp_path):
    store = parse_config({}).instances[0]
    shard = EmbeddedShard(
        tmp_path / "s", fingerprint_version=FINGERPRINT_VERSION, level0_max_tracks=1, tier_fanout=8
    )
    shardset = ShardSet([ShardHandle(0, store, lambda c: shard, None)], deadline_s=5.0)
    try:
        for name in NAMES:
            fp = reference(name)
            shardset.ingest(TrackMeta(fp.file_sha1, name), fp.fingerprint.hashes, fp.fingerprint.offsets)
        summary = shard.segment_summary()
        assert summary.level0_segments + len(summary.file_rows) > 1
        hashes = np.unique(reference(NAMES[2]).fingerprint.hashes)
        before = shardset.lookup(hashes, 0, FanoutReport())
        handle = shardset.handles[0]
        assert not handle.compact_if_idle(idle_s=60.0)  # writes are too recent
        assert handle.compact_if_idle(idle_s=0.0)
        summary = shard.segment_summary()
        assert summary.level0_segments == 0 and len(summary.file_rows) == 1
        after = shardset.lookup(hashes, 0, FanoutReport())
        assert _rows(before) == _rows(after)
        assert not handle.compact_if_idle(idle_s=0.0)  # nothing written since
    finally:
        shardset.close()


def test_redis_cache_goes_away_and_is_used_again_when_it_returns(tmp_path, monkeypatch):
    import redis

    from services.matcher.cache import RedisLookupCache
    from tests.servers import PrivateRedis

    monkeypatch.setattr(RedisLookupCache, "RETRY_AFTER_S", 0.2)
    server = PrivateRedis(tmp_path)
    server.start()
    from services.matcher.servicer import NO_RETRY

    client = redis.Redis(
        host="127.0.0.1", port=server.port, socket_timeout=0.5, socket_connect_timeout=0.5, retry=NO_RETRY
    )
    cache = RedisLookupCache(client, "t", "a", ttl_s=60)
    store = parse_config({}).instances[0]
    shard = EmbeddedShard(tmp_path / "s", fingerprint_version=FINGERPRINT_VERSION)
    fp = reference(NAMES[0])
    shard.ingest(TrackMeta(fp.file_sha1, NAMES[0]), fp.fingerprint.hashes, fp.fingerprint.offsets)
    shardset = ShardSet([ShardHandle(0, store, lambda c: shard, cache)], deadline_s=5.0)
    hashes = np.unique(fp.fingerprint.hashes[:2000])
    try:
        want = _rows(shardset.lookup(hashes, 0, FanoutReport()))
        assert client.keys("t:lookup:*")  # cached
        server.stop()
        report = FanoutReport()
        assert _rows(shardset.lookup(hashes, 0, report)) == want and not report.unavailable  # bypassed
        shardset.handles[0].invalidate()  # a write while Redis is away: the bump waits for its return
        server.start()  # empty: a new server (a restarted one would keep the old generation)
        time.sleep(0.3)
        assert _rows(shardset.lookup(hashes, 0, FanoutReport())) == want
        assert client.keys("t:lookup:*"), "the cache is not used again"
        assert int(client.get("t:generation:v1:a")) >= 1  # the pending generation bump was applied first
    finally:
        shardset.close()
        server.stop()


def test_no_full_compaction_without_the_disk_space_for_it(tmp_path, monkeypatch, caplog):
    store = parse_config({}).instances[0]
    shard = EmbeddedShard(tmp_path / "s", fingerprint_version=FINGERPRINT_VERSION, level0_max_tracks=1)
    shardset = ShardSet([ShardHandle(0, store, lambda c: shard, None)], deadline_s=5.0)
    try:
        for name in NAMES[:3]:
            fp = reference(name)
            shardset.ingest(TrackMeta(fp.file_sha1, name), fp.fingerprint.hashes, fp.fingerprint.offsets)
        files_before = len(shard.segment_summary().file_rows)
        assert files_before > 1
        full = shutil.disk_usage(tmp_path)
        monkeypatch.setattr(shutil, "disk_usage", lambda p: full._replace(free=1000))
        with caplog.at_level(logging.WARNING):
            assert not shardset.handles[0].compact_if_idle(idle_s=0.0)
        assert "not compacted" in caplog.text
        assert len(shard.segment_summary().file_rows) == files_before
    finally:
        shardset.close()


def test_a_recognition_reads_the_track_records_once(tmp_path):
    """Scoring needs the candidates' sizes and the answer the winner's metadata: one read per shard."""

    class CountingShard(SlowShard):
        calls = 0

        def get_tracks(self, ids):
            CountingShard.calls += 1
            return self.inner.get_tracks(ids)

    store = parse_config({}).instances[0]
    shard = EmbeddedShard(tmp_path / "s", fingerprint_version=FINGERPRINT_VERSION)
    for name in NAMES:
        fp = reference(name)
        shard.ingest(TrackMeta(fp.file_sha1, name), fp.fingerprint.hashes, fp.fingerprint.offsets)
    counting = CountingShard(shard)
    shardset = ShardSet([ShardHandle(0, store, lambda c: counting, None)], deadline_s=5.0)
    try:
        request = match_request(NAMES[1], 5.0, 8.0)
        peaks = Peaks(
            t=wire.from_bytes(request.frames_i32le, wire.I32, "t").astype(np.int32),
            freq_hz=wire.from_bytes(request.freq_hz_f64le, wire.F64, "f").astype(np.float64),
            magnitude=wire.from_bytes(request.magnitude_f32le, np.dtype("<f4"), "m").astype(np.float32),
            n_frames=request.n_frames,
        )
        matches, tracks = _match(shardset, peaks, FanoutReport())
        assert matches and tracks[matches[0].track_id].track.title == NAMES[1]
        assert CountingShard.calls == 1
    finally:
        shardset.close()


class CountingShard:
    """Answers stats() with a settable hash count, or fails."""

    def __init__(self, n_hashes):
        self.n_hashes, self.broken, self.calls = n_hashes, False, 0

    def stats(self):
        self.calls += 1
        if self.broken:
            raise ConnectionError("connection refused")
        return ShardStats(n_tracks=1, n_hashes=self.n_hashes, bytes_on_disk=0)

    def close(self):
        pass


def test_stored_hashes_is_the_last_count_and_a_silent_shard_keeps_its_own():
    stores = parse_config({"instances": [{"name": n} for n in ("a", "b")]}).instances
    inner = [CountingShard(1000), CountingShard(500)]
    handles = [
        ShardHandle(i, s, lambda c, w=w: w, None) for i, (s, w) in enumerate(zip(stores, inner, strict=True))
    ]
    shardset = ShardSet(handles, deadline_s=1.0)
    try:
        assert shardset.stored_hashes() == 0  # not counted yet: confidences as for a small catalogue
        assert shardset.count_stored_hashes() == 1500
        inner[0].n_hashes = 4000
        assert shardset.stored_hashes() == 1500  # reading never asks the shards
        assert [s.calls for s in inner] == [1, 1]
        assert shardset.count_stored_hashes() == 4500
        inner[1].broken = True  # a shard that does not answer keeps its last count
        inner[0].n_hashes = 5000
        assert shardset.count_stored_hashes() == 5500
        assert shardset.stored_hashes() == 5500
    finally:
        shardset.close()


def test_peaks_are_read_by_global_id_and_a_failing_shard_is_reported(tmp_path):
    stores = parse_config({"instances": [{"name": "good"}, {"name": "bad"}]}).instances
    inner = [EmbeddedShard(tmp_path / s.name, fingerprint_version=FINGERPRINT_VERSION) for s in stores]
    blobs = []
    for shard, name in zip(inner, NAMES, strict=False):
        fp = reference(name)
        blobs.append(verify.encode(fp.peaks, DEFAULT_PARAMS))
        shard.ingest(TrackMeta(fp.file_sha1, name), fp.fingerprint.hashes, fp.fingerprint.offsets, blobs[-1])

    class BrokenPeaks(SlowShard):
        def track_peaks(self, ids):
            raise StoreError("connection refused")

    wrapped = [SlowShard(inner[0]), BrokenPeaks(inner[1])]
    shardset = ShardSet(
        [
            ShardHandle(i, s, lambda c, w=w: w, None)
            for i, (s, w) in enumerate(zip(stores, wrapped, strict=True))
        ],
        deadline_s=5.0,
    )
    try:
        good, bad = shardset.global_id(0, 1), shardset.global_id(1, 1)
        report = FanoutReport()
        assert shardset.peaks([good, bad], report) == {good: blobs[0]}
        assert "track peaks unavailable" in report.unavailable["bad"]
    finally:
        shardset.close()
