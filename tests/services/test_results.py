"""ResultsService on a real server: tokens are unguessable and URL-safe, results round-trip, unknown tokens
are NOT_FOUND, and a result is spread over several stores and read back from any."""

import json
import re

import grpc
import pytest

from services.results.server import binding
from services.results.servicer import ResultsServicer
from services.results.settings import ResultsSettings
from services.results.tokens import TOKEN_BYTES, home_index
from tests.services.harness import ServerThread
from tunescout.common.config import parse_config
from tunescout.common.grpc_errors import error_reason
from tunescout.results.v1 import results_pb2 as pb
from tunescout.results.v1 import results_pb2_grpc as pb_grpc


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    data = tmp_path_factory.mktemp("results")
    config = parse_config({"results": [{"database_type": "embedded"}, {"database_type": "embedded"}]})
    servicer = ResultsServicer(config, ResultsSettings("127.0.0.1", 0, None, data, 1.0))
    with ServerThread([binding(servicer)], servicer.start, servicer.close) as server:
        yield pb_grpc.ResultsServiceStub(server.channel())


def test_put_then_get_round_trips(results):
    body = {
        "status": "success",
        "results": [{"song_name": "Ünïcode ♪", "offset_seconds": 12.35}],
        "message": "m",
    }
    token = results.Put(pb.PutRequest(result_json=json.dumps(body)), timeout=10).token
    assert json.loads(results.Get(pb.GetRequest(token=token), timeout=10).result_json) == body


def test_tokens_are_url_safe_random_and_spread_over_the_stores(results):
    assert TOKEN_BYTES * 8 >= 128
    tokens = [results.Put(pb.PutRequest(result_json="{}"), timeout=10).token for _ in range(40)]
    assert len(set(tokens)) == 40
    assert all(re.fullmatch(r"[A-Za-z0-9_-]{32}", t) for t in tokens)
    assert {home_index(t, 2) for t in tokens} == {0, 1}
    assert all(results.Get(pb.GetRequest(token=t), timeout=10).result_json == "{}" for t in tokens)


@pytest.mark.parametrize("token", ["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "../../etc/passwd", ""])
def test_unknown_token_is_not_found(results, token):
    with pytest.raises(grpc.RpcError) as caught:
        results.Get(pb.GetRequest(token=token), timeout=10)
    assert (
        caught.value.code() == grpc.StatusCode.NOT_FOUND and error_reason(caught.value) == "TOKEN_NOT_FOUND"
    )


@pytest.mark.parametrize("payload", ["[1, 2]", "{not json", "NaN"])
def test_a_result_must_be_a_json_object(results, payload):
    with pytest.raises(grpc.RpcError) as caught:
        results.Put(pb.PutRequest(result_json=payload), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
