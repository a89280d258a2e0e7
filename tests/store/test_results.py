"""EmbeddedResultStore: round trips, refusals and read-your-writes across threads."""

from __future__ import annotations

import math
import sqlite3
import threading
from pathlib import Path

import pytest

from tunescout.engine.errors import StoreError, StoreFormatError
from tunescout.store import EmbeddedResultStore

RESULT = {
    "status": "matched",
    "matches": [
        {"track_id": 12, "title": "Ça plane pour moi", "artist": "Plastic Bertrand", "confidence": 0.93}
    ],
    "query_offset_ms": 1500,
    "note": "日本語 — emoji 🎵",
}


def test_round_trip_and_unknown_token(tmp_path: Path) -> None:
    path = tmp_path / "results" / "results.sqlite"
    with EmbeddedResultStore(path) as store:
        store.put("tok-1", RESULT)
        assert store.get("tok-1") == RESULT
        assert store.get("tok-unknown") is None
    with EmbeddedResultStore(path) as store:
        assert store.get("tok-1") == RESULT


def test_duplicate_token_is_refused(tmp_path: Path) -> None:
    with EmbeddedResultStore(tmp_path / "r.sqlite") as store:
        store.put("tok", {"a": 1})
        with pytest.raises(StoreError, match="already used"):
            store.put("tok", {"a": 2})
        assert store.get("tok") == {"a": 1}


def test_non_json_results_are_refused(tmp_path: Path) -> None:
    with EmbeddedResultStore(tmp_path / "r.sqlite") as store:
        with pytest.raises(ValueError, match="not plain JSON"):
            store.put("nan", {"confidence": math.nan})
        with pytest.raises(ValueError, match="not plain JSON"):
            store.put("set", {"ids": {1, 2}})
        with pytest.raises(ValueError, match="must be a dict"):
            store.put("list", [1, 2])  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="non-empty"):
            store.put("", {})
        assert store.get("nan") is None


def test_unknown_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    EmbeddedResultStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '9' WHERE key = 'schema_version'")
    conn.close()
    with pytest.raises(StoreFormatError, match="schema version 9; this tunescout supports version 1"):
        EmbeddedResultStore(path)


def test_closed_store_raises(tmp_path: Path) -> None:
    store = EmbeddedResultStore(tmp_path / "r.sqlite")
    store.close()
    store.close()
    with pytest.raises(StoreError, match="closed"):
        store.get("x")


def test_results_are_readable_from_other_threads_once_put_returns(tmp_path: Path) -> None:
    errors: list[str] = []
    with EmbeddedResultStore(tmp_path / "r.sqlite") as store:

        def worker(n: int) -> None:
            for i in range(50):
                token = f"t{n}-{i}"
                store.put(token, {"n": n, "i": i})
                if store.get(token) != {"n": n, "i": i}:
                    errors.append(token)

        threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors
        assert all(store.get(f"t{n}-49") == {"n": n, "i": 49} for n in range(8))
