"""The request id in gRPC metadata is on the servicer's log records for that call."""

import logging

from services.matcher.server import binding
from services.matcher.servicer import MatcherServicer
from services.matcher.settings import MatcherSettings
from tests.services.clips import NAMES, ingest_request
from tests.services.harness import ServerThread
from tunescout.common.config import parse_config
from tunescout.common.logs import _record_with_request_id
from tunescout.matcher.v1 import matcher_pb2_grpc as pb_grpc


def test_metadata_request_id_reaches_the_servicer_logs(tmp_path, caplog):
    previous = logging.getLogRecordFactory()
    logging.setLogRecordFactory(_record_with_request_id)
    settings = MatcherSettings("127.0.0.1", 0, None, tmp_path, 5.0, 60.0, 8.0, 0.0, 1.0)
    servicer = MatcherServicer(parse_config({}), settings)
    try:
        with (
            ServerThread([binding(servicer)], servicer.start, servicer.close) as server,
            caplog.at_level(logging.INFO),
        ):
            stub = pb_grpc.MatcherServiceStub(server.channel())
            stub.Ingest(ingest_request(NAMES[0]), timeout=30, metadata=(("x-request-id", "req-7f3a"),))
        stored = [
            r for r in caplog.records if r.name == "services.matcher.servicer" and "stored" in r.getMessage()
        ]
        assert stored and stored[0].request_id == "req-7f3a"
    finally:
        logging.setLogRecordFactory(previous)
