"""export / import / move: tracks and fingerprints carried between shards of every type, then recognised
there; reruns are idempotent; bad files are refused with a message."""

import json
import uuid
import zipfile

import pytest

from services.matcher.shards import open_shard
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
from tunescout.cli.main import main
from tunescout.common.config import parse_config
from tunescout.engine import verify
from tunescout.engine.fingerprint import fingerprint_audio
from tunescout.engine.match import match_peaks, shard_track_sizes
from tunescout.engine.params import DEFAULT_PARAMS, FINGERPRINT_VERSION
from tunescout.engine.peaks import Role
from tunescout.store.embedded import EmbeddedShard
from tunescout.store.shard import TrackMeta


@pytest.fixture
def three_types(tmp_path):
    require_mysql()
    require_clickhouse()
    suffix = uuid.uuid4().hex[:8]
    raw = {
        "instances": [
            {"name": "local", "database_type": "embedded"},
            {
                "name": "maria",
                "database_type": "mysql",
                "database": {
                    "host": MYSQL_HOST,
                    "port": MYSQL_PORT,
                    "user": MYSQL_USER,
                    "database": f"ts_mv_{suffix}",
                },
            },
            {
                "name": "ch",
                "database_type": "clickhouse",
                "database": {
                    "host": CLICKHOUSE_HOST,
                    "port": CLICKHOUSE_HTTP_PORT,
                    "database": f"ts_mv_{suffix}",
                },
            },
        ]
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(raw))
    yield path, parse_config(raw)
    drop_mysql_database(f"ts_mv_{suffix}")
    drop_clickhouse_database(f"ts_mv_{suffix}")


def _open(config, name, data_dir):
    return open_shard(next(s for s in config.instances if s.name == name), data_dir)


def _recognised(shard, name) -> str | None:
    peaks = fingerprint_audio(DATA / f"{name}.opus", role=Role.QUERY, start_s=5.0, duration_s=8.0).peaks
    found = match_peaks(peaks, shard.lookup, shard_track_sizes(shard))
    return shard.get_tracks([found[0].track_id])[found[0].track_id].title if found else None


def _peaks_by_title(shard) -> dict[str, bytes]:
    tracks = shard.list_tracks()
    blobs = shard.track_peaks([t.track_id for t in tracks])
    return {t.title: blobs[t.track_id] for t in tracks if t.track_id in blobs}


def test_export_import_and_move_across_types(three_types, tmp_path, capsys):
    path, config = three_types
    data_dir = tmp_path / "data"
    local = _open(config, "local", data_dir)
    for name in NAMES[:3]:
        fp = reference(name)
        local.ingest(
            TrackMeta(fp.file_sha1, name, artist="Wesnoth"),
            fp.fingerprint.hashes,
            fp.fingerprint.offsets,
            verify.encode(fp.peaks, DEFAULT_PARAMS) if name != NAMES[2] else b"",  # one without peaks
        )
    peaks = _peaks_by_title(local)
    assert set(peaks) == set(NAMES[:2])
    local.close()
    export = tmp_path / "local.zip"
    common = ["--config", str(path), "--data-dir", str(data_dir)]
    assert main(["export", str(export), "--shard", "local", *common]) == 0
    assert "exported 3 tracks" in capsys.readouterr().out

    # embedded -> MySQL: refused while the tracks are still in the config's embedded shard ...
    assert main(["import", str(export), "--shard", "maria", *common]) == 0
    assert "0 stored, 3 already there" in capsys.readouterr().out
    # ... moved instead: stored in MySQL, gone from the embedded shard
    assert main(["move", "--from", "local", "--to", "maria", *common]) == 0
    assert "moved 3 tracks" in capsys.readouterr().out
    maria = _open(config, "maria", data_dir)
    assert [_recognised(maria, n) for n in NAMES[:3]] == NAMES[:3]
    assert maria.find_by_sha1(reference(NAMES[0]).file_sha1).artist == "Wesnoth"
    assert _peaks_by_title(maria) == peaks
    maria.close()
    local = _open(config, "local", data_dir)
    assert local.list_tracks() == []
    local.close()

    # MySQL -> ClickHouse, two at a time, then the rest
    assert main(["move", "--from", "maria", "--to", "ch", "--limit", "2", *common]) == 0
    assert main(["move", "--from", "maria", "--to", "ch", *common]) == 0
    ch = _open(config, "ch", data_dir)
    assert [_recognised(ch, n) for n in NAMES[:3]] == NAMES[:3]
    assert _peaks_by_title(ch) == peaks
    ch.close()

    # the export file into an empty config's embedded shard (a migration back), twice: idempotent
    other = tmp_path / "other"
    assert main(["import", str(export), "--shard", "shard0", "--data-dir", str(other)]) == 0
    assert "3 stored, 0 already there" in capsys.readouterr().out
    imported = EmbeddedShard(other / "shards" / "shard0", fingerprint_version=FINGERPRINT_VERSION)
    assert _peaks_by_title(imported) == peaks
    imported.close()
    assert main(["import", str(export), "--shard", "shard0", "--data-dir", str(other)]) == 0
    assert "0 stored, 3 already there" in capsys.readouterr().out


def test_bad_export_files_and_names_are_refused(tmp_path, capsys):
    bogus = tmp_path / "bogus.zip"
    bogus.write_bytes(b"not a zip")
    assert main(["import", str(bogus), "--shard", "shard0", "--data-dir", str(tmp_path)]) == 2
    assert "tunescout import:" in capsys.readouterr().err
    future = tmp_path / "future.zip"
    with zipfile.ZipFile(future, "w") as archive:
        archive.writestr("manifest.json", json.dumps({"format_version": 99, "tracks": []}))
    assert main(["import", str(future), "--shard", "shard0", "--data-dir", str(tmp_path)]) == 2
    assert "export format 99" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "x.zip"), "--shard", "nope", "--data-dir", str(tmp_path)]) == 2
    assert "no instance named 'nope'" in capsys.readouterr().err
