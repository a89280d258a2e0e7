"""MatcherService on a real server with real embedded shards: routing, idempotence across shards, matching,
deletes that never leave a stale cached answer, a shard that cannot be opened, and the Redis cache."""

import logging
import subprocess
import sys
import uuid
from pathlib import Path

import grpc
import numpy as np
import pytest

from services.matcher import servicer as servicer_module
from services.matcher import shardset
from services.matcher.server import binding
from services.matcher.servicer import MatcherServicer
from services.matcher.settings import MatcherSettings
from tests.servers import REDIS_HOST, REDIS_PORT, require_redis
from tests.services.clips import NAMES, ingest_request, match_request, reference
from tests.services.harness import ServerThread
from tunescout.common.config import parse_config
from tunescout.common.grpc_errors import error_reason
from tunescout.matcher.v1 import matcher_pb2 as pb
from tunescout.matcher.v1 import matcher_pb2_grpc as pb_grpc

REPO_ROOT = Path(__file__).resolve().parents[2]


def _settings(data_dir) -> MatcherSettings:
    return MatcherSettings(
        host="127.0.0.1", port=0, config_path=None, data_dir=data_dir, shard_deadline_s=5.0,
        cache_ttl_s=60.0, memory_cache_mb=8.0, compact_idle_s=0.5, grace_s=1.0,
    )  # fmt: skip


def _serve(raw_config, data_dir):
    servicer = MatcherServicer(parse_config(raw_config), _settings(data_dir))
    return ServerThread([binding(servicer)], servicer.start, servicer.close)


TWO_SHARDS = {
    "instances": [{"database_type": "embedded", "name": "a"}, {"database_type": "embedded", "name": "b"}]
}


@pytest.fixture(scope="module")
def matcher(tmp_path_factory):
    with _serve(TWO_SHARDS, tmp_path_factory.mktemp("matcher")) as server:
        yield pb_grpc.MatcherServiceStub(server.channel())


def test_ingest_routes_to_the_least_loaded_shard_and_is_idempotent_across_shards(matcher):
    first = matcher.Ingest(ingest_request(NAMES[0], artist="Wesnoth", year=2005), timeout=30)
    second = matcher.Ingest(ingest_request(NAMES[1]), timeout=30)
    assert not first.already_present and not second.already_present
    assert {first.track.shard, second.track.shard} == {"a", "b"}  # the empty shard takes the second track
    assert first.track.metadata.artist == "Wesnoth" and first.track.metadata.year == 2005
    again = matcher.Ingest(ingest_request(NAMES[0]), timeout=30)
    assert again.already_present
    assert (again.track.shard, again.track.track_id) == (first.track.shard, first.track.track_id)
    stats = matcher.Stats(pb.StatsRequest(), timeout=10)
    assert sorted(s.n_tracks for s in stats.shards) == [1, 1] and not stats.unavailable_shards


def test_match_names_track_shard_and_offset(matcher):
    matcher.Ingest(ingest_request(NAMES[2]), timeout=30)
    reply = matcher.Match(match_request(NAMES[2], 12.0, 8.0), timeout=30)
    assert reply.shards_asked == 2 and not reply.unavailable_shards
    best = reply.matches[0]
    assert best.track.metadata.title == NAMES[2] and best.track.shard in {"a", "b"}
    assert abs(best.offset_s - 12.0) < 0.1 and best.offset_frames == round(best.offset_s / 0.016)
    assert best.confidence > 0.9 and best.matched_hashes > 5
    assert 0 < best.query_hash_share <= 1 and 0 < best.track_hash_share <= 1


def test_a_track_not_stored_gives_no_match(matcher):
    assert list(matcher.Match(match_request(NAMES[3], 5.0, 10.0), timeout=30).matches) == []


def test_delete_leaves_no_stale_cached_answer(matcher):
    request = match_request(NAMES[1], 3.0, 6.0)
    for _ in range(2):  # the second answer comes from the lookup cache
        assert matcher.Match(request, timeout=30).matches[0].track.metadata.title == NAMES[1]
    deleted = matcher.DeleteTrack(pb.DeleteTrackRequest(file_sha1=reference(NAMES[1]).file_sha1), timeout=30)
    assert deleted.track.metadata.title == NAMES[1]
    assert list(matcher.Match(request, timeout=30).matches) == []
    with pytest.raises(grpc.RpcError) as caught:
        matcher.DeleteTrack(pb.DeleteTrackRequest(file_sha1=reference(NAMES[1]).file_sha1), timeout=30)
    assert (
        caught.value.code() == grpc.StatusCode.NOT_FOUND and error_reason(caught.value) == "TRACK_NOT_FOUND"
    )
    back = matcher.Ingest(ingest_request(NAMES[1]), timeout=30)  # and it can be stored again
    assert not back.already_present
    assert matcher.Match(request, timeout=30).matches[0].track.track_id == back.track.track_id


def test_bad_requests_are_refused_with_reasons(matcher):
    wrong_version = match_request(NAMES[0], 0.0, 5.0)
    wrong_version.fingerprint_version = 999
    with pytest.raises(grpc.RpcError) as caught:
        matcher.Match(wrong_version, timeout=10)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    for field, value in (
        ("freq_hz_f64le", b"\0" * 3),  # not whole float64s
        ("frames_i32le", np.array([-1, 0, 5], "<i4").tobytes()),  # a frame before the clip
        ("frames_i32le", np.array([0, 5, 2], "<i4").tobytes()),  # out of order
        ("freq_hz_f64le", np.array([100.0, np.nan, 300.0], "<f8").tobytes()),
    ):
        bad_peaks = match_request(NAMES[0], 0.0, 5.0)  # three good peaks, then one field spoilt
        bad_peaks.frames_i32le = np.array([0, 1, 2], "<i4").tobytes()
        bad_peaks.freq_hz_f64le = np.array([100.0, 200.0, 300.0], "<f8").tobytes()
        bad_peaks.magnitude_f32le = np.zeros(3, "<f4").tobytes()
        setattr(bad_peaks, field, value)
        with pytest.raises(grpc.RpcError) as caught:
            matcher.Match(bad_peaks, timeout=10)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert error_reason(caught.value) == "BAD_PEAKS"
    no_sha = ingest_request(NAMES[0])
    no_sha.metadata.file_sha1 = "abc"
    with pytest.raises(grpc.RpcError) as caught:
        matcher.Ingest(no_sha, timeout=10)
    assert error_reason(caught.value) == "BAD_METADATA"
    future_peaks = ingest_request(NAMES[0])
    future_peaks.metadata.file_sha1 = "f" * 40  # audio no test stores
    future_peaks.peaks = future_peaks.peaks[:4] + b"\x09" + future_peaks.peaks[5:]  # a later peaks format
    with pytest.raises(grpc.RpcError) as caught:
        matcher.Ingest(future_peaks, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error_reason(caught.value) == "BAD_FINGERPRINT" and "format 9" in caught.value.details()
    # nothing was stored: the same track with readable peaks is new
    future_peaks.peaks = ingest_request(NAMES[0]).peaks
    assert not matcher.Ingest(future_peaks, timeout=30).already_present
    matcher.DeleteTrack(pb.DeleteTrackRequest(file_sha1="f" * 40), timeout=10)


def test_a_shard_that_cannot_open_degrades_answers_and_rejoins(tmp_path, monkeypatch):
    monkeypatch.setattr(servicer_module, "STARTUP_WAIT_S", 0.2)
    monkeypatch.setattr(shardset, "REOPEN_INTERVAL_S", 0.2)
    blocker = tmp_path / "broken"
    blocker.write_text("a file where the shard directory should be")
    broken = {"database_type": "embedded", "name": "broken", "database": {"path": str(blocker / "x")}}
    config = {"instances": [{"database_type": "embedded", "name": "ok"}, broken]}
    with _serve(config, tmp_path) as server:
        stub = pb_grpc.MatcherServiceStub(server.channel())
        with pytest.raises(grpc.RpcError) as caught:  # cannot prove the track is not in the broken shard
            stub.Ingest(ingest_request(NAMES[0]), timeout=30)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        assert error_reason(caught.value) == "SHARD_UNAVAILABLE"
        reply = stub.Match(match_request(NAMES[0], 2.0, 5.0), timeout=30)
        assert [(f.shard, "cannot open" in f.reason) for f in reply.unavailable_shards] == [("broken", True)]
        blocker.unlink()  # the shard's storage comes back
        import time

        deadline = time.monotonic() + 10
        while stub.Match(match_request(NAMES[0], 2.0, 5.0), timeout=30).unavailable_shards:
            assert time.monotonic() < deadline, "the shard did not rejoin"
            time.sleep(0.2)
        assert not stub.Ingest(ingest_request(NAMES[0]), timeout=30).already_present
        assert (
            stub.Match(match_request(NAMES[0], 2.0, 5.0), timeout=30).matches[0].track.metadata.title
            == NAMES[0]
        )


def test_redis_cache_is_used_and_invalidated(tmp_path):
    client = require_redis(db=7)
    prefix = f"test-{uuid.uuid4().hex[:8]}"
    config = {"redis": {"host": REDIS_HOST, "port": REDIS_PORT, "prefix": prefix},
              "instances": [{"database_type": "embedded", "name": "a", "redis_db_index": 7}]}  # fmt: skip
    try:
        with _serve(config, tmp_path) as server:
            stub = pb_grpc.MatcherServiceStub(server.channel())
            stub.Ingest(ingest_request(NAMES[0]), timeout=30)
            request = match_request(NAMES[3], 4.0, 6.0)
            assert list(stub.Match(request, timeout=30).matches) == []
            cached = client.keys(f"{prefix}:lookup:v1:a:*")
            assert cached, "the lookup was not cached in Redis db 7"
            generation = int(client.get(f"{prefix}:generation:v1:a"))
            stub.Ingest(ingest_request(NAMES[3]), timeout=30)  # bumps the generation
            assert int(client.get(f"{prefix}:generation:v1:a")) == generation + 1
            reply = stub.Match(request, timeout=30)  # a fresh answer, not the cached "no match"
            assert reply.matches[0].track.metadata.title == NAMES[3]
    finally:
        for key in client.keys(f"{prefix}:*"):
            client.delete(key)


def test_redis_down_bypasses_the_cache(tmp_path):
    config = {"redis": {"host": "127.0.0.1", "port": 1}, "instances": [{"database_type": "embedded"}]}
    with _serve(config, tmp_path) as server:
        stub = pb_grpc.MatcherServiceStub(server.channel())
        stub.Ingest(ingest_request(NAMES[2]), timeout=30)
        for _ in range(2):
            assert (
                stub.Match(match_request(NAMES[2], 1.0, 5.0), timeout=30).matches[0].track.metadata.title
                == NAMES[2]
            )


@pytest.mark.parametrize(
    ("embedded", "modules"),
    [(False, "tunescout.engine.kernels"), (True, "tunescout.engine.kernels, tunescout.store.segments")],
)
def test_warm_up_loads_every_kernel_before_the_first_recognition_or_upload(
    embedded: bool, modules: str
) -> None:
    # in a fresh process: kernels loaded by earlier tests would hide one that warm_up leaves to the first
    # real recognition or upload (it compiles, or loads from numba's cache, while a user waits)
    code = f"""
from numba.core.registry import CPUDispatcher
from services.matcher.servicer import warm_up
import tunescout.engine.kernels, tunescout.store.segments
warm_up({embedded})
print(sorted(
    f"{{module.__name__}}.{{name}}" for module in ({modules},) for name, d in vars(module).items()
    if isinstance(d, CPUDispatcher) and d.targetoptions.get("inline") != "always" and not d.signatures
    # called by one kernel only (merge_runs, local_peaks): compiled into it, their own entries never used
    and name not in ("_merge_two", "_shifted_max")
))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300, check=True
    )
    assert done.stdout.strip() == "[]", f"kernels left for the first recognition or upload: {done.stdout}"


def test_a_failing_store_warm_up_does_not_stop_the_matcher(monkeypatch, caplog) -> None:
    # only a speed-up: a full or read-only temporary directory leaves the kernels to the first uploads
    def refuse(version: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(servicer_module.embedded_store, "warm_up", refuse)
    with caplog.at_level(logging.WARNING):
        servicer_module.warm_up(True)
    assert any("store warm-up failed" in r.getMessage() for r in caplog.records)
