"""JSON log lines carry the service, the severity and, while a request is served, its request id."""

import json
import logging

from tunescout.common.logs import JsonFormatter, TextFormatter, _record_with_request_id
from tunescout.common.request_id import REQUEST_ID, new_request_id


def _record(message: str) -> logging.LogRecord:
    return _record_with_request_id("tunescout.test", logging.WARNING, __file__, 1, message, (), None)


def test_json_lines_with_and_without_a_request_id():
    plain = json.loads(JsonFormatter("matcher").format(_record("shard a left out")))
    assert plain["service"] == "matcher" and plain["severity"] == "WARNING"
    assert (
        plain["message"] == "shard a left out"
        and "request_id" not in plain
        and plain["timestamp"].endswith("+00:00")
    )
    token = REQUEST_ID.set("req-42")
    try:
        record = _record("stored")
    finally:
        REQUEST_ID.reset(token)
    assert json.loads(JsonFormatter("matcher").format(record))["request_id"] == "req-42"
    assert TextFormatter("matcher").format(record).endswith("[req-42]")


def test_request_ids_from_clients_are_kept_only_when_sane():
    assert new_request_id("abc-123") == "abc-123"
    assert len(new_request_id(None)) == 32
    assert new_request_id("x" * 200) != "x" * 200
    assert new_request_id("bad id\nwith newline") != "bad id\nwith newline"
