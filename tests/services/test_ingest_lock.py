"""Two matcher replicas (two ShardSets over the same MariaDB shards, listed in opposite orders so that each
picks a different "least-loaded" shard) racing to store the same audio store it once, thanks to the Redis
ingest lock; with Redis down, ingest still works (locked in process only)."""

import threading
import uuid

import redis

from services.matcher.ingest_lock import RedisIngestLocks
from services.matcher.shards import open_shard
from services.matcher.shardset import ShardHandle, ShardSet
from tests.servers import (
    MYSQL_HOST,
    MYSQL_PORT,
    MYSQL_USER,
    REDIS_HOST,
    REDIS_PORT,
    drop_mysql_database,
    require_mysql,
    require_redis,
)
from tests.services.clips import NAMES, reference
from tunescout.common.config import parse_config
from tunescout.store.shard import TrackMeta


def _replica(stores, order, locks, tmp_path):
    handles = [
        ShardHandle(i, stores[k], lambda c: open_shard(c, tmp_path), None) for i, k in enumerate(order)
    ]
    return ShardSet(handles, deadline_s=10.0, ingest_locks=locks)


def test_replicas_racing_on_one_file_store_it_once(tmp_path):
    require_mysql()
    client = require_redis(db=4)
    suffix = uuid.uuid4().hex[:8]
    server = {"host": MYSQL_HOST, "port": MYSQL_PORT, "user": MYSQL_USER}
    stores = parse_config(
        {
            "instances": [
                {
                    "name": n,
                    "database_type": "mysql",
                    "database": {**server, "database": f"ts_lock_{n}_{suffix}"},
                }
                for n in ("a", "b")
            ]
        }
    ).instances
    prefix = f"test-{suffix}"
    replicas = [
        _replica(
            stores,
            order,
            RedisIngestLocks(redis.Redis(host=REDIS_HOST, port=REDIS_PORT, db=4), prefix),
            tmp_path,
        )
        for order in ((0, 1), (1, 0))
    ]
    fp = reference(NAMES[0])
    meta = TrackMeta(fp.file_sha1, NAMES[0])
    outcomes = []
    barrier = threading.Barrier(6)

    def store(shardset):
        barrier.wait()
        outcomes.append(shardset.ingest(meta, fp.fingerprint.hashes, fp.fingerprint.offsets))

    try:
        threads = [threading.Thread(target=store, args=(replicas[i % 2],)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(already for _, already in outcomes) == [False] + [True] * 5
        assert len({(stored.shard, stored.track.track_id) for stored, _ in outcomes}) == 1
        counts = [s.stats().n_tracks for s in (open_shard(st, tmp_path) for st in stores)]
        assert sorted(counts) == [0, 1]
        assert not client.keys(f"{prefix}:*")  # released
    finally:
        for replica in replicas:
            replica.close()
        for store in stores:
            drop_mysql_database(store.database.database)


def test_redis_down_leaves_the_process_lock(tmp_path):
    stores = parse_config({"instances": [{"name": "a", "database_type": "embedded"}]}).instances
    from services.matcher.servicer import NO_RETRY

    locks = RedisIngestLocks(
        redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=NO_RETRY), "x"
    )
    shardset = ShardSet([ShardHandle(0, stores[0], lambda c: open_shard(c, tmp_path), None)], 5.0, locks)
    try:
        fp = reference(NAMES[1])
        stored, already = shardset.ingest(
            TrackMeta(fp.file_sha1, NAMES[1]), fp.fingerprint.hashes, fp.fingerprint.offsets
        )
        assert not already and stored.track.title == NAMES[1]
    finally:
        shardset.close()
