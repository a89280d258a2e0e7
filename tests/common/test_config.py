"""config.json: the TuneScout README's example and its repository's layout load; defaults; clear errors."""
# ruff: noqa: E501

import json

import pytest

from tunescout.common.config import ConfigError, load_config, parse_config

# the example of the TuneScout API README, verbatim (long lines kept as written there)
README_EXAMPLE = """
{
  "fingerprinting": {"allow": true, "token": "12345"},
  "recognizing": {"max_duration": 10, "max_file_size_mb": 150},
  "redis": {"host": "127.0.0.1", "user": "dejavu", "password": "dejavu", "prefix": "dejavu", "port": 6379},
  "rate_limit": {
    "fetching_results": "50 per second", "recognizing": "10 per second", "fingerprinting": "10 per second",
    "redis_db_index": 0
  },
  "allowed_origin": ["https://example.com"],
  "instances": [
    {"database": {"host": "127.0.0.1", "user": "dejavu", "password": "dejavu", "database": "dejavu0", "port": 9000},
     "redis_db_index": 1, "database_type": "clickhouse"},
    {"database": {"host": "127.0.0.1", "user": "dejavu", "password": "dejavu", "database": "dejavu1", "port": 9000},
     "redis_db_index": 2, "database_type": "clickhouse"}
  ],
  "results": [
    {"database": {"host": "127.0.0.1", "user": "dejavu", "password": "dejavu", "database": "result0", "port": 9000},
     "database_type": "clickhouse"},
    {"database": {"host": "127.0.0.1", "user": "dejavu", "password": "dejavu", "database": "result1", "port": 9000},
     "database_type": "clickhouse"}
  ]
}
"""


def test_readme_example_loads(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(README_EXAMPLE)
    config = load_config(path)
    assert config.fingerprinting_allowed and config.fingerprint_token == "12345"
    assert config.max_duration_s == 10 and config.max_file_size_bytes == 150 * 1024 * 1024
    assert config.redis is not None and config.redis.prefix == "dejavu" and config.redis.user == "dejavu"
    assert config.redis.url(1) == "redis://dejavu:dejavu@127.0.0.1:6379/1"
    assert config.rate_limits.recognizing == "10 per second"
    assert config.allowed_origins == ("https://example.com",)
    assert [s.name for s in config.instances] == ["shard0", "shard1"]
    assert [s.redis_db_index for s in config.instances] == [1, 2]
    assert config.instances[1].database.database == "dejavu1" and config.instances[1].database.port == 9000
    assert [s.database_type for s in config.results] == ["clickhouse", "clickhouse"]


def test_per_section_rate_limits_of_the_tunescout_repository():
    config = parse_config(
        {
            "fingerprinting": {"allow": "true", "token": 12345, "rate_limit": "99 per minute"},
            "fetching_results": {"rate_limit": "7 per second"},
            "recognizing": {"max_duration": "10", "rate_limit": "3/second"},
            "instances": [{"database": {"host": "db", "database": "dejavu0"}, "database_type": "mysql"}],
        }
    )
    assert config.fingerprint_token == "12345"
    assert config.rate_limits.fingerprinting == "99 per minute"
    assert config.rate_limits.fetching_results == "7 per second"
    assert config.rate_limits.recognizing == "3/second"
    assert config.max_duration_s == 10.0
    assert config.instances[0].database.port == 3306  # MySQL's default


def test_no_config_is_the_embedded_default():
    config = load_config(None)
    assert [(s.name, s.database_type, s.database.path) for s in config.instances] == [
        ("shard0", "embedded", "shards/shard0")
    ]
    assert [(s.database_type, s.database.path) for s in config.results] == [
        ("embedded", "results/results0.sqlite")
    ]
    assert config.redis is None and config.fingerprint_token is None and config.fingerprinting_allowed
    assert config.max_duration_s is None and config.max_file_size_bytes is None
    assert config.rate_limits.recognizing == "10 per second"


def test_left_out_sections_get_the_embedded_default():
    config = parse_config({"fingerprinting": {"token": "t"}, "redis": {"port": 6380}})
    assert config.instances[0].database_type == "embedded" and config.results[0].database_type == "embedded"
    assert (
        config.redis is not None and config.redis.host == "localhost" and config.redis.prefix == "tunescout"
    )


def test_embedded_instances_with_paths():
    config = parse_config(
        {"instances": [{"database_type": "embedded", "database": {"path": "/srv/a"}, "name": "a"},
                       {"database_type": "embedded"}]}
    )  # fmt: skip
    assert [(s.name, s.database.path) for s in config.instances] == [
        ("a", "/srv/a"),
        ("shard1", "shards/shard1"),
    ]


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        ({"recognizing": {"max_duration": "ten"}}, "recognizing.max_duration"),
        ({"rate_limit": {"recognizing": "often"}}, "rate_limit.recognizing"),
        ({"instances": [{"database_type": "oracle"}]}, "instances[0].database_type"),
        (
            {"instances": [{"database": {"port": "x"}, "database_type": "mysql"}]},
            "instances[0].database.port",
        ),
        ({"allowed_origin": [1]}, "allowed_origin[0]"),
        ({"fingerprinting": {"allow": "maybe"}}, "fingerprinting.allow"),
        ({"instances": {"a": 1}}, "instances"),
        ({"instances": [{"name": "x"}, {"name": "x"}]}, "duplicate"),
    ],
)
def test_bad_values_name_their_key(raw, needle):
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        parse_config(raw)


def test_unreadable_files_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config(bad)
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps([1]))
    with pytest.raises(ConfigError, match="top level"):
        load_config(listed)


def test_variables_in_string_values_come_from_the_environment(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({
        "fingerprinting": {"token": "${TS_TOKEN}"},
        "instances": [{"database_type": "mysql", "database": {"host": "db", "password": "${DB_PASSWORD}"}}],
    }))  # fmt: skip
    config = load_config(path, {"TS_TOKEN": "s3cret", "DB_PASSWORD": "pw"})
    assert config.fingerprint_token == "s3cret" and config.instances[0].database.password == "pw"
    with pytest.raises(ConfigError, match=r"\$\{DB_PASSWORD\}, which is not set"):
        load_config(path, {"TS_TOKEN": "x"})
    assert load_config(path).fingerprint_token == "${TS_TOKEN}"  # without an environment: taken as written
