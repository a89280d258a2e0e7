"""Scale-out end to end: three shards of three types (embedded, ClickHouse, MariaDB) and two result stores
behind the REST API; one shard's server goes away (the answer degrades and says so) and comes back (the
service recovers without a restart)."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest

from tests.e2e.conftest import FINGERPRINT_TOKEN, Stack
from tests.e2e.test_api import AUTH, clip, recognize
from tests.servers import (
    CLICKHOUSE_HOST,
    CLICKHOUSE_HTTP_PORT,
    PrivateMariaDB,
    drop_clickhouse_database,
    require_clickhouse,
)

NAMES = ["battle-epic", "breaking_the_chains", "elvish-theme"]


@pytest.fixture
def mariadb(tmp_path):
    server = PrivateMariaDB(tmp_path / "mariadb")
    server.start()
    yield server
    server.stop()


def test_mixed_shards_degrade_and_recover(tmp_path, mariadb):
    require_clickhouse()
    suffix = uuid.uuid4().hex[:8]
    clickhouse = {"host": CLICKHOUSE_HOST, "port": CLICKHOUSE_HTTP_PORT}
    mysql = {"host": "127.0.0.1", "port": mariadb.port, "user": "root"}
    stores = {
        "instances": [
            {"name": "local", "database_type": "embedded"},
            {
                "name": "ch",
                "database_type": "clickhouse",
                "database": {**clickhouse, "database": f"ts_e2e_{suffix}"},
            },
            {
                "name": "maria",
                "database_type": "mysql",
                "database": {**mysql, "database": f"ts_e2e_{suffix}"},
            },
        ],
        "results": [
            {"database_type": "embedded"},
            {
                "database_type": "clickhouse",
                "database": {**clickhouse, "database": f"ts_e2e_results_{suffix}"},
            },
        ],
    }
    stack = Stack(tmp_path / "stack", stores)
    try:
        stack.start()
        limits = {"recognizing": "1000 per second", "fingerprinting": "1000 per second"}
        gateway = {"fingerprinting": {"token": FINGERPRINT_TOKEN}, "rate_limit": limits}
        with httpx.Client(base_url=stack.gateway(gateway), timeout=120) as api:
            placed = {}
            for name in NAMES:
                r = api.post("/api/fingerprint", headers=AUTH, files={"file": (f"{name}.opus", clip(name))})
                assert r.status_code == 200, r.text
                placed[r.json()["shard"]] = name
            assert set(placed) == {"local", "ch", "maria"}  # the least-loaded shard takes each new track

            for name in NAMES:
                r = recognize(api, clip(name), start=6, duration=8)
                body = r.json()
                assert r.status_code == 200 and body["results"][0]["song_name"] == name
                assert "unavailable_shards" not in body
                assert api.get(f"/api/fetch/{body['token']}").json()["results"] == body["results"]

            mariadb.stop()  # (new clip ranges below: the lookup cache may answer for a shard it has seen)
            on_local = recognize(api, clip(placed["local"]), start=12, duration=8)
            assert on_local.status_code == 200
            body = on_local.json()
            assert body["results"][0]["song_name"] == placed["local"]
            assert [s["shard"] for s in body["unavailable_shards"]] == ["maria"]
            assert "maria" in body["message"] and body["token"]
            on_maria = recognize(api, clip(placed["maria"]), start=12, duration=8)
            assert (
                on_maria.status_code == 200 and on_maria.json()["unavailable_shards"][0]["shard"] == "maria"
            )
            assert on_maria.json()["results"] == []
            refused = api.post("/api/fingerprint", headers=AUTH, files={"file": ("k.opus", clip("knolls"))})
            assert refused.status_code == 503  # it could be a duplicate of a track on the missing shard

            mariadb.start()
            deadline = time.monotonic() + 60
            while True:
                body = recognize(api, clip(placed["maria"]), start=6, duration=8).json()
                if body["results"] and "unavailable_shards" not in body:
                    break
                assert time.monotonic() < deadline, f"the shard did not come back: {body}"
                time.sleep(0.5)
            assert body["results"][0]["song_name"] == placed["maria"]

            stack.internal[2].stop()  # the results service itself goes away
            stack.internal[2].wait(30)
            unsaved = recognize(api, clip(placed["ch"]), start=3, duration=8)
            assert unsaved.status_code == 200
            body = unsaved.json()
            assert body["results"][0]["song_name"] == placed["ch"] and body["token"] is None
            assert "could not be saved" in body["message"]
    finally:
        stack.stop()
        for key in ("instances", "results"):
            for store in stores[key]:
                if store["database_type"] == "clickhouse":
                    drop_clickhouse_database(store["database"]["database"])
