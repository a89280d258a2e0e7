"""Every result store backend keeps results by token the same way (MariaDB for the mysql backend)."""

import uuid

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
from tunescout.engine.errors import StoreError
from tunescout.store.clickhouse import ClickHouseResultStore
from tunescout.store.mysql import MySQLResultStore
from tunescout.store.results import EmbeddedResultStore


@pytest.fixture(params=["embedded", "mysql", "clickhouse-18.16", "clickhouse-current"])
def store(request, tmp_path):
    database = f"ts_test_{uuid.uuid4().hex[:10]}"
    if request.param == "embedded":
        opened = EmbeddedResultStore(tmp_path / "r.sqlite")
        yield opened
        opened.close()
    elif request.param == "mysql":
        require_mysql()
        opened = MySQLResultStore(host=MYSQL_HOST, port=MYSQL_PORT, user=MYSQL_USER, database=database)
        yield opened
        opened.close()
        drop_mysql_database(database)
    elif request.param == "clickhouse-18.16":
        require_clickhouse()
        opened = ClickHouseResultStore(host=CLICKHOUSE_HOST, port=CLICKHOUSE_HTTP_PORT, database=database)
        yield opened
        opened.close()
        drop_clickhouse_database(database)
    else:
        opened = ClickHouseResultStore(database=database, client=ChDBClient(str(tmp_path / "chdb")))
        yield opened
        opened.close()


def test_put_get_round_trip(store):
    result = {"status": "success", "results": [{"song_name": "Ünïcode ♪", "offset_seconds": 1.5}]}
    store.put("T" * 32, result)
    assert store.get("T" * 32) == result
    assert store.get("U" * 32) is None


def test_a_token_is_written_once(store):
    store.put("A" * 32, {"a": 1})
    with pytest.raises(StoreError):
        store.put("A" * 32, {"a": 2})
    assert store.get("A" * 32) == {"a": 1}


def test_only_plain_json_objects(store):
    with pytest.raises(ValueError):
        store.put("B" * 32, {"x": float("nan")})
    with pytest.raises(ValueError):
        store.put("C" * 32, [1, 2])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not plain JSON"):
        store.put("D" * 32, {"x": {1, 2}})  # a set: every backend says ValueError, not TypeError
    with pytest.raises(ValueError):
        store.put("", {"a": 1})
    assert store.get("D" * 32) is None
