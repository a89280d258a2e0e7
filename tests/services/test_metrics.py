"""Prometheus metrics: RPCs counted by method and status code, shard lookups timed, cache reads counted,
all served on the metrics port."""

import urllib.request

import grpc
import pytest
from prometheus_client import REGISTRY

from services.matcher.server import binding
from services.matcher.servicer import MatcherServicer
from services.matcher.settings import MatcherSettings
from tests.services.clips import NAMES, ingest_request, match_request
from tests.services.harness import ServerThread
from tunescout.cli.up import free_port
from tunescout.common.config import parse_config
from tunescout.common.metrics import start_metrics
from tunescout.matcher.v1 import matcher_pb2_grpc as pb_grpc


def _value(name: str, labels: dict) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_rpcs_shard_lookups_and_cache_reads_are_measured(tmp_path):
    settings = MatcherSettings("127.0.0.1", 0, None, tmp_path, 5.0, 60.0, 8.0, 0.0, 1.0)
    servicer = MatcherServicer(parse_config({"instances": [{"name": "m1"}]}), settings)
    method = "/tunescout.matcher.v1.MatcherService/Match"
    ok_before = _value("tunescout_grpc_requests_total", {"method": method, "code": "OK"})
    bad_before = _value("tunescout_grpc_requests_total", {"method": method, "code": "INVALID_ARGUMENT"})
    with ServerThread([binding(servicer)], servicer.start, servicer.close) as server:
        stub = pb_grpc.MatcherServiceStub(server.channel())
        stub.Ingest(ingest_request(NAMES[0]), timeout=30)
        for _ in range(2):  # the second is a cache hit
            stub.Match(match_request(NAMES[0], 3.0, 6.0), timeout=30)
        bad = match_request(NAMES[0], 3.0, 6.0)
        bad.freq_hz_f64le = b"\0"
        with pytest.raises(grpc.RpcError):
            stub.Match(bad, timeout=30)
    assert _value("tunescout_grpc_requests_total", {"method": method, "code": "OK"}) == ok_before + 2
    assert (
        _value("tunescout_grpc_requests_total", {"method": method, "code": "INVALID_ARGUMENT"})
        == bad_before + 1
    )
    assert _value("tunescout_shard_lookup_seconds_count", {"shard": "m1"}) >= 1
    assert _value("tunescout_lookup_cache_total", {"shard": "m1", "result": "hit"}) >= 1

    port = free_port()
    start_metrics(port)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    assert "tunescout_grpc_request_seconds_bucket" in text and 'shard="m1"' in text
